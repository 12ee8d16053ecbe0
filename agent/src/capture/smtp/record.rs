//! Turns one SMTP transaction (envelope + raw message) into an `EmailEvent`.
//! Parsing is best effort on untrusted input: whatever cannot be parsed is
//! noted in `parse_warnings`, a parser panic is caught, and the raw bytes
//! are kept regardless (the caller stores them as the blob).

use std::collections::HashSet;
use std::path::Path;

use kiroku_proto::{Attachment, EmailEvent, Recipient};
use mailparse::{DispositionType, MailAddr, MailHeaderMap, ParsedMail};

use kiroku_common::mime::words::{best_decoding, decode_text, rfc2231_param};

/// Body text kept in the record (and the index); the raw blob has it all.
pub const MAX_BODY_TEXT: usize = 256 * 1024;

/// The SMTP envelope and connection facts of one transaction.
#[derive(Debug, Clone, Default)]
pub struct Envelope {
    pub helo: String,
    pub esmtp: bool,
    pub mail_from: String,
    pub mail_params: String,
    /// Every RCPT TO with its reply, accepted or not.
    pub rcpt: Vec<Recipient>,
    pub client_ip: String,
    pub client_port: u32,
    /// Reverse DNS name of a remote client.
    pub client_host: String,
    pub client_tls: String,
    pub upstream: String,
    pub upstream_tls: String,
    pub auth_user: String,
    pub auth_mechanism: String,
}

/// The record of a transaction from its envelope alone: for transactions
/// that ended before any content (refused or abandoned), and the base of
/// [`build`].
pub fn envelope_only(env: &Envelope) -> EmailEvent {
    EmailEvent {
        operation: "send".into(),
        direction: "outbound".into(),
        protocol: if env.esmtp { "ESMTP" } else { "SMTP" }.into(),
        helo: env.helo.clone(),
        mail_from: env.mail_from.clone(),
        mail_params: env.mail_params.clone(),
        rcpt_to: env.rcpt.clone(),
        recipient_count: env
            .rcpt
            .iter()
            .filter(|r| (200..300).contains(&r.reply_code))
            .count() as u32,
        client_ip: env.client_ip.clone(),
        client_port: env.client_port,
        client_host: env.client_host.clone(),
        client_tls: env.client_tls.clone(),
        upstream: env.upstream.clone(),
        upstream_tls: env.upstream_tls.clone(),
        auth_user: env.auth_user.clone(),
        auth_mechanism: env.auth_mechanism.clone(),
        ..Default::default()
    }
}

/// Builds the record. Never panics, whatever `raw` holds.
pub fn build(env: &Envelope, raw: &[u8]) -> EmailEvent {
    let ev = EmailEvent {
        message_size: raw.len() as u64,
        raw_sha256: kiroku_common::sha256_hex(raw),
        ..envelope_only(env)
    };
    let parsed = std::panic::catch_unwind(|| parse_into(raw));
    complete(env, ev, parsed)
}

/// Messages up to this size are parsed in memory; larger ones in one
/// streaming pass over the file (bounded memory, same record).
pub const IN_MEMORY_PARSE: u64 = 8 * 1024 * 1024;

/// Builds the record of a message spooled to `path` (`size` bytes with
/// SHA-256 `sha256`).
pub fn build_from_file(env: &Envelope, path: &Path, size: u64, sha256: &str) -> EmailEvent {
    if size <= IN_MEMORY_PARSE {
        return match std::fs::read(path) {
            Ok(raw) => build(env, &raw),
            Err(e) => unreadable(env, path, size, sha256, &e),
        };
    }
    build_streamed(env, path, size, sha256)
}

/// The record when the spooled content cannot be read back: the envelope,
/// what is known of the content, and why.
fn unreadable(
    env: &Envelope,
    path: &Path,
    size: u64,
    sha256: &str,
    e: &std::io::Error,
) -> EmailEvent {
    EmailEvent {
        message_size: size,
        raw_sha256: sha256.to_owned(),
        parse_warnings: vec![format!(
            "cannot read spooled message {}: {e}",
            path.display()
        )],
        ..envelope_only(env)
    }
}

/// The streaming path of [`build_from_file`], whatever the size (public
/// for the differential fuzz target, which checks both paths agree).
pub fn build_streamed(env: &Envelope, path: &Path, size: u64, sha256: &str) -> EmailEvent {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return unreadable(env, path, size, sha256, &e),
    };
    let ev = EmailEvent {
        message_size: size,
        raw_sha256: sha256.to_owned(),
        ..envelope_only(env)
    };
    let parsed = std::panic::catch_unwind(move || {
        let mut r = std::io::BufReader::with_capacity(64 * 1024, file);
        let scan = super::mime::scan(&mut r, TEXT_KEEP).map_err(|e| e.to_string())?;
        parse_scan(&scan).map_err(|e| e.to_string())
    });
    complete(env, ev, parsed)
}

/// Decoded text bytes kept per text part in the streaming path (charsets
/// can take several bytes per character).
const TEXT_KEEP: usize = 4 * MAX_BODY_TEXT;

/// Fills the parsed fields into `ev`, then Bcc and counts.
fn complete<E: std::fmt::Display>(
    env: &Envelope,
    mut ev: EmailEvent,
    parsed: std::thread::Result<Result<Parsed, E>>,
) -> EmailEvent {
    let accepted: Vec<&str> = env
        .rcpt
        .iter()
        .filter(|r| (200..300).contains(&r.reply_code))
        .map(|r| r.address.as_str())
        .collect();
    match parsed {
        Ok(Ok(p)) => {
            ev.from = p.from;
            ev.to = p.to;
            ev.cc = p.cc;
            ev.reply_to = p.reply_to;
            ev.subject = p.subject;
            ev.date = p.date;
            ev.sent_at_ms = p.sent_at_ms;
            ev.message_id = p.message_id;
            ev.body_text = p.body_text;
            ev.body_truncated = p.body_truncated;
            ev.attachments = p.attachments;
            ev.parse_warnings = p.warnings;
        }
        Ok(Err(e)) => ev.parse_warnings.push(format!("MIME parse failed: {e}")),
        Err(_) => ev
            .parse_warnings
            .push("MIME parser panicked; only the envelope was recorded".into()),
    }
    ev.attachment_count = ev.attachments.iter().filter(|a| !a.inline).count() as u32;
    // Bcc: envelope recipients the headers do not show.
    let shown: HashSet<String> = ev
        .to
        .iter()
        .chain(&ev.cc)
        .map(|a| a.to_lowercase())
        .collect();
    ev.bcc = accepted
        .iter()
        .filter(|a| !shown.contains(&a.to_lowercase()))
        .map(|a| a.to_string())
        .collect();
    ev
}

#[derive(Default)]
struct Parsed {
    from: Vec<String>,
    to: Vec<String>,
    cc: Vec<String>,
    reply_to: Vec<String>,
    subject: String,
    date: String,
    sent_at_ms: i64,
    message_id: String,
    body_text: String,
    body_truncated: String,
    attachments: Vec<Attachment>,
    warnings: Vec<String>,
}

fn parse_into(raw: &[u8]) -> Result<Parsed, mailparse::MailParseError> {
    let mail = mailparse::parse_mail(raw)?;
    let mut p = Parsed::default();
    header_fields(&mail.headers, raw, &mut p);
    let mut bodies = Bodies::default();
    walk(&mail, &mut p, &mut bodies);
    bodies.into_text(&mut p);
    Ok(p)
}

/// The streaming path: the same fields from a [`super::mime::Scan`].
fn parse_scan(scan: &super::mime::Scan) -> Result<Parsed, mailparse::MailParseError> {
    let (headers, _) = mailparse::parse_headers(&scan.top_headers)?;
    let mut p = Parsed::default();
    header_fields(&headers, &scan.top_headers, &mut p);
    let mut bodies = Bodies::default();
    for leaf in &scan.leaves {
        let (h, _) = mailparse::parse_headers(&leaf.headers)?;
        let disp = h
            .get_first_value("Content-Disposition")
            .map(|v| mailparse::parse_content_disposition(&v));
        let body = match (&leaf.error, &leaf.text) {
            (Some(e), _) => Err(e.clone()),
            (None, Some(t)) if !is_attachment(disp.as_ref(), &leaf.ctype) => {
                Ok(LeafBody::Text(decode_text(t, &leaf.ctype.charset)))
            }
            (None, _) => Ok(LeafBody::Digest(leaf.size, leaf.sha256.clone())),
        };
        classify(disp.as_ref(), &leaf.ctype, body, &mut p, &mut bodies);
    }
    bodies.into_text(&mut p);
    Ok(p)
}

fn header_fields(h: &[mailparse::MailHeader<'_>], raw: &[u8], p: &mut Parsed) {
    if h.is_empty() || !starts_with_header(raw) {
        p.warnings
            .push("message has no headers (does not start with a `Name: value` line)".into());
    }
    p.from = addresses(h, "From", &mut p.warnings);
    p.to = addresses(h, "To", &mut p.warnings);
    p.cc = addresses(h, "Cc", &mut p.warnings);
    p.reply_to = addresses(h, "Reply-To", &mut p.warnings);
    p.subject = h
        .get_first_header("Subject")
        .map(|s| best_decoding(s.get_value(), s.get_value_raw()))
        .unwrap_or_default();
    p.message_id = h
        .get_first_value("Message-ID")
        .map(|m| m.trim().to_owned())
        .unwrap_or_default();
    if let Some(date) = h.get_first_value("Date") {
        match mailparse::dateparse(&date) {
            Ok(secs) => p.sent_at_ms = secs.saturating_mul(1000),
            Err(e) => p.warnings.push(format!("Date header {date:?}: {e}")),
        }
        p.date = date;
    }
}

/// The first plain and HTML text bodies met.
#[derive(Default)]
struct Bodies {
    plain: Option<String>,
    html: Option<String>,
}

impl Bodies {
    fn into_text(self, p: &mut Parsed) {
        let body = match (self.plain, self.html) {
            (Some(t), _) => t,
            (None, Some(h)) => html_to_text(&h),
            (None, None) => String::new(),
        };
        if body.len() > MAX_BODY_TEXT {
            let mut cut = MAX_BODY_TEXT;
            while !body.is_char_boundary(cut) {
                cut -= 1;
            }
            p.body_text = body[..cut].to_owned();
            p.body_truncated = format!("body text cut at {MAX_BODY_TEXT} of {} bytes", body.len());
        } else {
            p.body_text = body;
        }
    }
}

/// True when the first line is a header field: a name of printable ASCII
/// without spaces, then a colon.
fn starts_with_header(raw: &[u8]) -> bool {
    let first = raw.split(|&b| b == b'\n').next().unwrap_or_default();
    match first.iter().position(|&b| b == b':') {
        Some(0) | None => false,
        Some(i) => first[..i].iter().all(|&b| (33..=126).contains(&b)),
    }
}

fn addresses(
    h: &[mailparse::MailHeader<'_>],
    name: &str,
    warnings: &mut Vec<String>,
) -> Vec<String> {
    let mut out = Vec::new();
    for header in h.get_all_headers(name) {
        match mailparse::addrparse_header(header) {
            Ok(list) => {
                for a in list.iter() {
                    match a {
                        MailAddr::Single(s) => out.push(s.addr.clone()),
                        MailAddr::Group(g) => out.extend(g.addrs.iter().map(|s| s.addr.clone())),
                    }
                }
            }
            Err(e) => {
                // mailparse refuses the whole field for one bad entry (a
                // bare local part such as `root`, common in local mail):
                // keep every address that is there, entry by entry.
                warnings.push(format!("{name} header: {e}"));
                out.extend(lenient_addresses(header.get_value_raw()));
            }
        }
    }
    out
}

/// The addresses of a field mailparse cannot parse as a whole: the field
/// split at top-level commas, each entry parsed on its own; an entry that
/// still fails gives its `<...>` content or, without angle brackets, its
/// text without comments, when that is one word (a local part without a
/// domain, as Python's `email` package reads it too).
fn lenient_addresses(raw: &[u8]) -> Vec<String> {
    let value = match std::str::from_utf8(raw) {
        Ok(s) => s.to_owned(),
        Err(_) => raw.iter().map(|&b| char::from(b)).collect(),
    };
    let mut out = Vec::new();
    for entry in top_level_entries(&value) {
        // A group's name and end (`name: a, b;`) are not addresses.
        let entry = entry.trim().trim_end_matches(';');
        let entry = match entry.split_once(':') {
            Some((name, rest)) if !name.contains(['<', '"', '(']) => rest,
            _ => entry,
        };
        if let Ok(list) = mailparse::addrparse(entry) {
            for a in list.iter() {
                match a {
                    MailAddr::Single(s) => out.push(s.addr.clone()),
                    MailAddr::Group(g) => out.extend(g.addrs.iter().map(|s| s.addr.clone())),
                }
            }
            continue;
        }
        let bare = without_comments(entry);
        let addr = match (bare.rfind('<'), bare.rfind('>')) {
            (Some(open), Some(close)) if open < close => bare[open + 1..close].trim().to_owned(),
            _ => bare.trim().to_owned(),
        };
        if !addr.is_empty() && !addr.contains(|c: char| c.is_whitespace() || "<>\",;:".contains(c))
        {
            out.push(addr);
        }
    }
    out
}

/// `value` split at the commas outside quoted strings, comments and angle
/// brackets.
fn top_level_entries(value: &str) -> Vec<&str> {
    let (mut entries, mut start) = (Vec::new(), 0);
    let (mut quoted, mut escaped, mut comment, mut angle) = (false, false, 0u32, false);
    for (i, c) in value.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted || comment > 0 => escaped = true,
            '"' if comment == 0 => quoted = !quoted,
            '(' if !quoted => comment += 1,
            ')' if !quoted => comment = comment.saturating_sub(1),
            '<' if !quoted && comment == 0 => angle = true,
            '>' if !quoted && comment == 0 => angle = false,
            ',' if !quoted && comment == 0 && !angle => {
                entries.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    entries.push(&value[start..]);
    entries
}

/// `entry` without its comments (outside quoted strings).
fn without_comments(entry: &str) -> String {
    let mut out = String::with_capacity(entry.len());
    let (mut quoted, mut escaped, mut comment) = (false, false, 0u32);
    for c in entry.chars() {
        if escaped {
            escaped = false;
            if comment == 0 {
                out.push(c);
            }
            continue;
        }
        match c {
            '\\' if quoted || comment > 0 => escaped = true,
            '(' if !quoted => comment += 1,
            ')' if !quoted && comment > 0 => comment -= 1,
            _ if comment > 0 => {}
            '"' => {
                quoted = !quoted;
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

fn walk(part: &ParsedMail<'_>, p: &mut Parsed, bodies: &mut Bodies) {
    if !part.subparts.is_empty() {
        for sub in &part.subparts {
            walk(sub, p, bodies);
        }
        return;
    }
    // Absent, not mailparse's default (inline): a part with a file name
    // and no Content-Disposition is an attachment, not an inline one.
    let disp = part
        .headers
        .get_first_value("Content-Disposition")
        .map(|v| mailparse::parse_content_disposition(&v));
    let mimetype = part.ctype.mimetype.to_lowercase();
    let attachment = is_attachment(disp.as_ref(), &part.ctype);
    // Decode only what the record uses.
    let body = if !attachment && mimetype.starts_with("text/") {
        part.get_body_raw()
            .map(|b| LeafBody::Text(decode_text(&b, &part.ctype.charset)))
            .map_err(|e| e.to_string())
    } else if attachment {
        part.get_body_raw()
            .map(|d| LeafBody::Digest(d.len() as u64, kiroku_common::sha256_hex(&d)))
            .map_err(|e| e.to_string())
    } else {
        Ok(LeafBody::Digest(0, String::new()))
    };
    classify(disp.as_ref(), &part.ctype, body, p, bodies);
}

/// A leaf's decoded body as the record needs it.
enum LeafBody {
    Text(String),
    /// Size and SHA-256 of the decoded bytes.
    Digest(u64, String),
}

fn is_attachment(
    disp: Option<&mailparse::ParsedContentDisposition>,
    ctype: &mailparse::ParsedContentType,
) -> bool {
    disp.is_some_and(|d| {
        d.disposition == DispositionType::Attachment || has_param(&d.params, "filename")
    }) || has_param(&ctype.params, "name")
}

/// `name` is among `params`, decoded or (RFC 2231, a charset mailparse
/// does not know) not.
fn has_param(params: &std::collections::BTreeMap<String, String>, name: &str) -> bool {
    params.keys().any(|k| {
        k.strip_prefix(name)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('*'))
    })
}

/// One leaf into the record: the first plain/HTML text becomes the body,
/// attachments (a disposition of attachment, or a file name) are listed
/// with size and hash; other parts are skipped.
fn classify(
    disp: Option<&mailparse::ParsedContentDisposition>,
    ctype: &mailparse::ParsedContentType,
    body: Result<LeafBody, String>,
    p: &mut Parsed,
    bodies: &mut Bodies,
) {
    let param = |params: &std::collections::BTreeMap<String, String>, name: &str| {
        params
            .get(name)
            .cloned()
            .or_else(|| rfc2231_param(params, name))
    };
    let filename = disp
        .and_then(|d| param(&d.params, "filename"))
        .or_else(|| param(&ctype.params, "name"))
        .map(|f| {
            let raw = f.clone().into_bytes();
            best_decoding(f, &raw)
        });
    let mimetype = ctype.mimetype.to_lowercase();
    let attachment = is_attachment(disp, ctype);
    if !attachment && mimetype.starts_with("text/") {
        match body {
            Ok(LeafBody::Text(text)) => {
                if mimetype == "text/html" {
                    bodies.html.get_or_insert(text);
                } else {
                    bodies.plain.get_or_insert(text);
                }
            }
            Ok(LeafBody::Digest(..)) => {}
            Err(e) => p.warnings.push(format!("{mimetype} body: {e}")),
        }
        return;
    }
    if !attachment {
        return;
    }
    match body {
        Ok(LeafBody::Digest(size, sha256)) => p.attachments.push(Attachment {
            filename: filename.unwrap_or_default(),
            content_type: mimetype,
            size,
            sha256,
            inline: disp.is_some_and(|d| d.disposition == DispositionType::Inline),
            ..Default::default()
        }),
        Ok(LeafBody::Text(_)) => {}
        Err(e) => p.warnings.push(format!("attachment {filename:?}: {e}")),
    }
}

/// Text of an HTML body: tags dropped, entities for the common characters
/// decoded, whitespace folded. Good enough for search and display; the raw
/// message keeps the original.
pub fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let mut in_tag = false;
    let mut skip: Option<&str> = None;
    let lower = html.to_ascii_lowercase();
    let mut i = 0;
    let bytes = html.as_bytes();
    while i < bytes.len() {
        if let Some(end) = skip {
            match lower[i..].find(end) {
                Some(off) => {
                    i += off + end.len();
                    skip = None;
                }
                None => break,
            }
            continue;
        }
        let c = bytes[i];
        if in_tag {
            if c == b'>' {
                in_tag = false;
                out.push(' ');
            }
            i += 1;
            continue;
        }
        if c == b'<' {
            if lower[i..].starts_with("<script") {
                skip = Some("</script>");
            } else if lower[i..].starts_with("<style") {
                skip = Some("</style>");
            } else {
                in_tag = true;
            }
            i += 1;
            continue;
        }
        let ch_len = utf8_len(c);
        out.push_str(&html[i..(i + ch_len).min(html.len())]);
        i += ch_len;
    }
    let decoded = out
        .replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    decoded.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xF7 => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests;
