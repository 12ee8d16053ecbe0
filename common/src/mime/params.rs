//! Structured header values with parameters (`Content-Type`,
//! `Content-Disposition`), read the way mail clients read them rather than
//! the way RFC 2045 wants them written: comments anywhere outside quotes
//! are dropped (`boundary="XX" (comment)`), RFC 2231 parameters are joined
//! from their continuations (`filename*0*=`, `filename*1=`) and decoded
//! whatever their charset says (empty, unknown), and every value a
//! parameter was given is kept so that decoy names can be shown.
//!
//! mailparse's `parse_content_type` keeps comments in values, drops RFC
//! 2231 values in charsets it does not know and keeps one value per name,
//! which is how a boundary or a file name was hidden from the record.

use super::words::charset_for;

/// One value a parameter was given, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamValue {
    pub value: String,
    /// Given in RFC 2231 form (`name*=` or `name*0=`...).
    pub extended: bool,
}

/// A parsed structured header value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Structured {
    /// The value before the first `;`, lower-cased, comments and white
    /// space removed (`multipart/mixed`, `attachment`).
    pub value: String,
    /// Parameters by lower-case name, in order of first appearance; each
    /// with every value it was given, RFC 2231 forms first.
    pub params: Vec<(String, Vec<ParamValue>)>,
    /// What was repaired or unusual, for `decode_warnings`.
    pub notes: Vec<String>,
}

impl Structured {
    /// The value a client uses for `name`: the RFC 2231 form when there is
    /// one (Thunderbird prefers it, and RFC 2231 says it supersedes the
    /// plain form), else the first plain value.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.values(name).first().map(|v| v.value.as_str())
    }

    /// Every value `name` was given (RFC 2231 forms first).
    pub fn values(&self, name: &str) -> &[ParamValue] {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
            .unwrap_or_default()
    }
}

/// Raw `name[*section][*]=value` pieces before RFC 2231 assembly.
struct Piece {
    name: String,
    section: Option<u32>,
    extended: bool,
    value: Vec<u8>,
}

/// Parses an unfolded structured header value.
pub fn parse(raw: &[u8]) -> Structured {
    let mut out = Structured::default();
    let (text, had_comment) = without_comments(raw);
    if had_comment {
        out.notes.push("comment dropped".into());
    }
    let mut items = split_params(&text).into_iter();
    let first = items.next().unwrap_or_default();
    out.value = String::from_utf8_lossy(&first)
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    let mut pieces = Vec::new();
    for item in items {
        let Some(eq) = item.iter().position(|&b| b == b'=') else {
            if !item.iter().all(u8::is_ascii_whitespace) {
                out.notes.push(format!(
                    "parameter without value {:?} ignored",
                    lossy(&item)
                ));
            }
            continue;
        };
        let key = lossy(&item[..eq]).trim().to_ascii_lowercase();
        if key.is_empty() {
            continue;
        }
        let value = unquote(trim(&item[eq + 1..]));
        let (name, section, extended) = split_key(&key);
        pieces.push(Piece {
            name,
            section,
            extended,
            value,
        });
    }
    assemble(pieces, &mut out);
    super::headers::cap_notes(&mut out.notes, super::headers::MAX_BLOCK_NOTES);
    out
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end.max(start)]
}

/// `name`, `name*`, `name*3`, `name*3*` → (name, section, extended).
fn split_key(key: &str) -> (String, Option<u32>, bool) {
    let Some((name, rest)) = key.split_once('*') else {
        return (key.to_owned(), None, false);
    };
    if rest.is_empty() {
        return (name.to_owned(), None, true);
    }
    let (num, star) = match rest.strip_suffix('*') {
        Some(n) => (n, true),
        None => (rest, false),
    };
    match num.parse::<u32>() {
        Ok(n) => (name.to_owned(), Some(n), star),
        // `name*x=`: not RFC 2231; keep it under its own odd name.
        Err(_) => (key.to_owned(), None, false),
    }
}

/// A quoted string's content (backslash escapes undone), or the token.
fn unquote(v: &[u8]) -> Vec<u8> {
    let Some(inner) = v.strip_prefix(b"\"") else {
        return v.to_vec();
    };
    let mut out = Vec::with_capacity(inner.len());
    let mut escaped = false;
    for &b in inner {
        if escaped {
            out.push(b);
            escaped = false;
        } else if b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            break;
        } else {
            out.push(b);
        }
    }
    out
}

/// `raw` without comments (outside quoted strings); and whether it had one.
fn without_comments(raw: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::with_capacity(raw.len());
    let (mut quoted, mut escaped, mut depth, mut had) = (false, false, 0u32, false);
    for &b in raw {
        if escaped {
            escaped = false;
            if depth == 0 {
                out.push(b);
            }
            continue;
        }
        match b {
            b'\\' if quoted || depth > 0 => {
                escaped = true;
                if depth == 0 {
                    out.push(b);
                }
            }
            b'"' if depth == 0 => {
                quoted = !quoted;
                out.push(b);
            }
            b'(' if !quoted => {
                depth += 1;
                had = true;
            }
            b')' if !quoted && depth > 0 => depth -= 1,
            _ if depth > 0 => {}
            _ => out.push(b),
        }
    }
    (out, had)
}

/// Splits at `;` outside quoted strings.
fn split_params(text: &[u8]) -> Vec<Vec<u8>> {
    let mut items = Vec::new();
    let mut cur = Vec::new();
    let (mut quoted, mut escaped) = (false, false);
    for &b in text {
        if escaped {
            escaped = false;
            cur.push(b);
            continue;
        }
        match b {
            b'\\' if quoted => {
                escaped = true;
                cur.push(b);
            }
            b'"' => {
                quoted = !quoted;
                cur.push(b);
            }
            b';' if !quoted => items.push(std::mem::take(&mut cur)),
            _ => cur.push(b),
        }
    }
    items.push(cur);
    items
}

/// Joins RFC 2231 continuations and decodes every value.
fn assemble(pieces: Vec<Piece>, out: &mut Structured) {
    // Pieces grouped by name in one pass, names in order of appearance (a
    // field of a hundred thousand distinct parameters must not cost a
    // scan of all pieces per name).
    let mut groups: Vec<(String, Vec<&Piece>)> = Vec::new();
    let mut by_name: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for p in &pieces {
        let at = *by_name.entry(p.name.as_str()).or_insert_with(|| {
            groups.push((p.name.clone(), Vec::new()));
            groups.len() - 1
        });
        groups[at].1.push(p);
    }
    for (name, mine) in groups {
        let mut values: Vec<ParamValue> = Vec::new();
        // `name*=` values, then the sections `name*0`, `name*1`... joined.
        for p in mine.iter().filter(|p| p.extended && p.section.is_none()) {
            let v = decode_extended(&p.value, &name, &mut out.notes);
            push_value(&mut values, v, true);
        }
        let mut sections: Vec<&&Piece> = mine.iter().filter(|p| p.section.is_some()).collect();
        if !sections.is_empty() {
            sections.sort_by_key(|p| p.section);
            sections.dedup_by_key(|p| p.section);
            // Sections after a gap are dropped, as Python's `email` and
            // Mozilla's parser do (RFC 2231 numbers them from 0 without
            // gaps).
            let run = sections
                .iter()
                .enumerate()
                .take_while(|(i, p)| p.section == Some(*i as u32))
                .count();
            if run < sections.len() {
                out.notes.push(format!(
                    "parameter {name}: RFC 2231 sections not numbered 0, 1, ...; those after the gap dropped"
                ));
                sections.truncate(run);
            }
            let v = join_sections(&sections, &name, &mut out.notes);
            push_value(&mut values, v, true);
        }
        for p in mine.iter().filter(|p| !p.extended && p.section.is_none()) {
            push_value(&mut values, plain_text(&p.value), false);
        }
        if name == "boundary" && values.iter().any(|v| v.extended) {
            out.notes.push("boundary given in RFC 2231 form".into());
        }
        out.params.push((name, values));
    }
}

fn push_value(values: &mut Vec<ParamValue>, value: String, extended: bool) {
    values.push(ParamValue { value, extended });
}

/// A plain parameter value: UTF-8 when it is (raw UTF-8 names are common),
/// else Latin-1; RFC 2047 words inside it are decoded by the caller.
fn plain_text(v: &[u8]) -> String {
    match std::str::from_utf8(v) {
        Ok(s) => s.to_owned(),
        Err(_) => v.iter().map(|&b| char::from(b)).collect(),
    }
}

/// `charset'language'pct-encoded` → text.
fn decode_extended(v: &[u8], name: &str, notes: &mut Vec<String>) -> String {
    let mut parts = v.splitn(3, |&b| b == b'\'');
    let (a, b, c) = (parts.next(), parts.next(), parts.next());
    match (a, b, c) {
        (Some(cs), Some(_lang), Some(text)) => {
            let octets = pct_decode(text);
            decode_octets(&octets, &lossy(cs), name, notes)
        }
        // No charset'language' prefix: the value as written, decoded.
        _ => {
            notes.push(format!(
                "parameter {name}*: no charset'language' prefix; read as UTF-8"
            ));
            decode_octets(&pct_decode(v), "", name, notes)
        }
    }
}

/// Sections in order; section 0 may carry the charset when extended.
fn join_sections(sections: &[&&Piece], name: &str, notes: &mut Vec<String>) -> String {
    let mut charset = String::new();
    let mut octets = Vec::new();
    for (i, p) in sections.iter().enumerate() {
        if !p.extended {
            octets.extend_from_slice(&p.value);
            continue;
        }
        let mut text = p.value.as_slice();
        if i == 0 {
            let mut parts = p.value.splitn(3, |&b| b == b'\'');
            if let (Some(cs), Some(_), Some(rest)) = (parts.next(), parts.next(), parts.next()) {
                charset = lossy(cs);
                text = rest;
            }
        }
        octets.extend_from_slice(&pct_decode(text));
    }
    decode_octets(&octets, &charset, name, notes)
}

/// Octets in `charset`: known charsets as named; an empty or unknown one
/// as UTF-8 when the octets are UTF-8 (what mailers that leave it out
/// write), else Latin-1, with a note. Python's `email` reads an empty
/// charset as US-ASCII and turns other octets into U+FFFD; a client shows
/// the name, so the record does too.
fn decode_octets(octets: &[u8], charset: &str, name: &str, notes: &mut Vec<String>) -> String {
    if !charset.is_empty()
        && let Some(cs) = charset_for(charset)
    {
        return cs.decode_without_bom_handling(octets).0.into_owned();
    }
    if !charset.is_empty() {
        notes.push(format!(
            "parameter {name}*: unknown charset {charset:?}; read as UTF-8"
        ));
    } else if !octets.is_ascii() {
        notes.push(format!(
            "parameter {name}*: 8-bit value without a charset; read as UTF-8"
        ));
    }
    match std::str::from_utf8(octets) {
        Ok(s) => s.to_owned(),
        Err(_) => octets.iter().map(|&b| char::from(b)).collect(),
    }
}

/// `%XX` escapes undone; a bad escape stays as written.
fn pct_decode(b: &[u8]) -> Vec<u8> {
    let hex = |b: Option<&u8>| b.and_then(|&b| char::from(b).to_digit(16));
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], hex(b.get(i + 1)), hex(b.get(i + 2))) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}
