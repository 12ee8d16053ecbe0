//! The text of an HTML document: what a reader sees, without markup,
//! comments, scripts and styles; block elements end a line.
//!
//! Written here rather than taken from an HTML parser crate (html5ever and
//! its users): search needs the words, not a document tree, and one pass
//! over the characters reads hostile markup in linear time without the
//! tree's memory. Entities: the five of XML, `&nbsp;` and numeric ones;
//! any other is kept as written.

use super::sink::Sink;

/// Elements whose content is not text.
const SKIPPED: &[&str] = &["script", "style", "template", "noscript"];

/// Elements that start or end a line.
const BLOCKS: &[&str] = &[
    "p",
    "br",
    "div",
    "li",
    "tr",
    "td",
    "th",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "table",
    "ul",
    "ol",
    "title",
    "blockquote",
    "pre",
    "hr",
    "section",
    "article",
    "header",
    "footer",
    "dd",
    "dt",
];

pub(super) fn text(html: &str, out: &mut Sink) {
    let mut rest = html;
    while !rest.is_empty() && !out.full() {
        let Some(lt) = rest.find('<') else {
            push_text(rest, out);
            break;
        };
        push_text(&rest[..lt], out);
        rest = &rest[lt..];
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = after.find("-->").map_or("", |e| &after[e + 3..]);
            continue;
        }
        let end = rest.find('>').map_or(rest.len(), |e| e + 1);
        let tag = &rest[..end];
        rest = &rest[end..];
        let name: String = tag
            .trim_start_matches('<')
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        if SKIPPED.contains(&name.as_str()) && !tag.starts_with("</") && !tag.ends_with("/>") {
            // The content up to the closing tag (case-insensitive).
            let close = format!("</{name}");
            rest = find_ci(rest, &close).map_or("", |at| &rest[at..]);
        } else if BLOCKS.contains(&name.as_str()) {
            out.line_break();
        }
    }
}

/// Where `needle` (ASCII, lower case) starts in `hay`, ignoring ASCII case.
fn find_ci(hay: &str, needle: &str) -> Option<usize> {
    let h = hay.as_bytes();
    let n = needle.as_bytes();
    (0..h.len().saturating_sub(n.len() - 1)).find(|&i| h[i..i + n.len()].eq_ignore_ascii_case(n))
}

/// Text between tags, entities decoded.
fn push_text(mut s: &str, out: &mut Sink) {
    while let Some(amp) = s.find('&') {
        out.push(&s[..amp]);
        s = &s[amp..];
        // An entity name is short: look for its `;` in the next 12 bytes,
        // cut at a character boundary (`R&D部門` has a 3-byte character
        // across byte 12, and slicing a str inside one panics).
        let mut end = s.len().min(12);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        let semi = s[..end].find(';');
        let decoded = semi.and_then(|i| entity(&s[1..i]).map(|c| (c, i + 1)));
        match decoded {
            Some((c, len)) => {
                out.push_char(c);
                s = &s[len..];
            }
            None => {
                out.push("&");
                s = &s[1..];
            }
        }
    }
    out.push(s);
}

fn entity(name: &str) -> Option<char> {
    if let Some(num) = name.strip_prefix('#') {
        let code = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => num.parse().ok()?,
        };
        return char::from_u32(code).filter(|&c| c != '\0');
    }
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => ' ',
        _ => return None,
    })
}
