//! Turns one SMTP transaction (envelope + raw message) into an `EmailEvent`.
//! Parsing is best effort on untrusted input: whatever cannot be parsed is
//! noted in `parse_warnings`, a parser panic is caught, and the raw bytes
//! are kept regardless (the caller stores them as the blob).

use std::collections::HashSet;
use std::path::Path;

use kiroku_proto::{Attachment, EmailEvent, Recipient};
use mailparse::{DispositionType, MailAddr, MailHeaderMap, ParsedMail};

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
                Ok(LeafBody::Text(decode_text(t, &leaf.ctype)))
            }
            (None, _) => Ok(LeafBody::Digest(leaf.size, leaf.sha256.clone())),
        };
        classify(disp.as_ref(), &leaf.ctype, body, &mut p, &mut bodies);
    }
    bodies.into_text(&mut p);
    Ok(p)
}

/// Text of a decoded body in its declared charset, as mailparse does it
/// (US-ASCII when the charset is unknown), with [`charset_for`]'s names.
fn decode_text(bytes: &[u8], ctype: &mailparse::ParsedContentType) -> String {
    match charset_for(&ctype.charset) {
        Some(cs) => cs.decode(bytes).0.into_owned(),
        None => charset::decode_ascii(bytes).into_owned(),
    }
}

/// The encoding a charset label names: the WHATWG labels mailparse knows,
/// and the names Japanese and Microsoft software also write for the same
/// encodings (`CP932` for Windows Shift_JIS, `ISO-2022-JP-MS`, `eucJP-win`),
/// which Python's codecs know too. Python's `email` package writes its own
/// codec name as the label when a program names the charset that way
/// (`iso2022_jp`, `shift_jis_2004`, `euc_jisx0213`), so `_` is read as
/// `-`. The JIS X 0213 variants (`*-2004`, `*x0213`, `iso-2022-jp-3`) and
/// ISO-2022-JP-1/2 are decoded as their JIS X 0208 base, which holds
/// nearly every character written in them: the rest become U+FFFD rather
/// than the whole text being read as US-ASCII. An RFC 2231 language
/// (`*ja`) is ignored.
fn charset_for(label: &str) -> Option<charset::Charset> {
    let label = label.split('*').next().unwrap_or_default().trim();
    charset::Charset::for_label(label.as_bytes()).or_else(|| {
        let same = match label.to_ascii_lowercase().replace('_', "-").as_str() {
            "cp932" | "windows-932" | "x-ms-cp932" | "sjis-win" | "sjis-open" | "mskanji"
            | "shift-jis-2004" | "shift-jisx0213" | "sjis-2004" => "shift_jis",
            "iso2022-jp" | "iso-2022-jp-1" | "iso2022-jp-1" | "iso-2022-jp-2" | "iso2022-jp-2"
            | "iso-2022-jp-3" | "iso2022-jp-3" | "iso-2022-jp-2004" | "iso2022-jp-2004"
            | "iso-2022-jp-ext" | "iso2022-jp-ext" | "iso-2022-jp-ms" | "csiso2022jp2"
            | "cp50220" | "cp50221" | "cp50222" => "iso-2022-jp",
            "eucjp" | "euc-jp" | "eucjp-win" | "eucjp-ms" | "eucjp-open" | "cp51932" | "ujis"
            | "euc-jis-2004" | "euc-jisx0213" => "euc-jp",
            _ => return None,
        };
        charset::Charset::for_label(same.as_bytes())
    })
}

/// What a decoded header value still shows of failed decoding: undecoded
/// encoded-words and replacement characters.
fn flaws(s: &str) -> usize {
    s.matches('\u{fffd}').count() + s.matches("=?").count()
}

/// `strict` (mailparse's decoding of a header value or parameter) unless
/// [`decode_words_lenient`] of `raw` leaves fewer [`flaws`].
fn best_decoding(strict: String, raw: &[u8]) -> String {
    if flaws(&strict) == 0 {
        return strict;
    }
    let lenient = decode_words_lenient(raw);
    if flaws(&lenient) < flaws(&strict) {
        lenient
    } else {
        strict
    }
}

/// RFC 2047 decoding that forgives what real mailers write: adjacent
/// encoded-words in one charset are decoded together (a character cut
/// between two, which RFC 2047 5 forbids), a word need not stand apart
/// from the text around it, and charset names go through [`charset_for`].
/// Unfolds; words it cannot decode stay as written.
fn decode_words_lenient(raw: &[u8]) -> String {
    let value: String = match std::str::from_utf8(raw) {
        Ok(s) => s.to_owned(),
        Err(_) => raw.iter().map(|&b| char::from(b)).collect(),
    };
    let value = value.replace(['\r', '\n'], "");
    let mut out = String::with_capacity(value.len());
    // The run of adjacent words being collected: charset, octets, and the
    // white space seen after the last word (dropped if another follows).
    let mut run: Option<(String, Vec<u8>)> = None;
    let mut gap = String::new();
    let flush = |run: &mut Option<(String, Vec<u8>)>, out: &mut String| {
        if let Some((cs, bytes)) = run.take()
            && let Some(c) = charset_for(&cs)
        {
            out.push_str(&c.decode_without_bom_handling(&bytes).0);
        }
    };
    let mut rest = value.as_str();
    while !rest.is_empty() {
        if rest.starts_with("=?")
            && let Some((cs, bytes, len)) = encoded_word(rest)
        {
            match &mut run {
                Some((run_cs, run_bytes)) if run_cs.eq_ignore_ascii_case(&cs) => {
                    run_bytes.extend_from_slice(&bytes);
                }
                _ => {
                    flush(&mut run, &mut out);
                    run = Some((cs, bytes));
                }
            }
            gap.clear();
            rest = &rest[len..];
            continue;
        }
        let Some(c) = rest.chars().next() else { break };
        if run.is_some() && (c == ' ' || c == '\t') {
            gap.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push_str(&gap);
            gap.clear();
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    flush(&mut run, &mut out);
    out.push_str(&gap);
    out
}

/// The encoded-word `s` starts with, in a charset [`charset_for`] knows:
/// (charset, decoded octets, length in `s`).
fn encoded_word(s: &str) -> Option<(String, Vec<u8>, usize)> {
    let body = s.strip_prefix("=?")?;
    let q1 = body.find('?')?;
    let charset = &body[..q1];
    let after = &body[q1 + 1..];
    let coding = after.get(..2)?;
    let text = after.get(2..)?;
    let end = text.find("?=")?;
    let data = &text[..end];
    if charset.is_empty()
        || charset.contains(char::is_whitespace)
        || data.contains(char::is_whitespace)
        || charset_for(charset).is_none()
    {
        return None;
    }
    let bytes = match coding {
        "B?" | "b?" => data_encoding::BASE64_MIME_PERMISSIVE
            .decode(data.as_bytes())
            .ok()?,
        "Q?" | "q?" => q_decode(data.as_bytes()),
        _ => return None,
    };
    Some((charset.to_owned(), bytes, 2 + q1 + 1 + 2 + end + 2))
}

/// RFC 2047 4.2 "Q" decoding; a bad escape stays as written.
fn q_decode(data: &[u8]) -> Vec<u8> {
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        match data[i] {
            b'_' => out.push(b' '),
            b'=' => match (
                data.get(i + 1).and_then(|&b| hex(b)),
                data.get(i + 2).and_then(|&b| hex(b)),
            ) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'='),
            },
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// An RFC 2231 parameter mailparse left undecoded (`name*`, its charset
/// unknown to it), decoded with [`charset_for`].
fn rfc2231_param(
    params: &std::collections::BTreeMap<String, String>,
    name: &str,
) -> Option<String> {
    let value = params.get(&format!("{name}*"))?;
    let mut parts = value.splitn(3, '\'');
    let (cs, _lang, pct) = (parts.next()?, parts.next()?, parts.next()?);
    let cs = charset_for(cs)?;
    let bytes = pct.as_bytes();
    let mut octets = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: Option<&u8>| b.and_then(|&b| char::from(b).to_digit(16));
        match (bytes[i], hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
            (b'%', Some(h), Some(l)) => {
                octets.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                octets.push(b);
                i += 1;
            }
        }
    }
    Some(cs.decode_without_bom_handling(&octets).0.into_owned())
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
            .map(|b| LeafBody::Text(decode_text(&b, &part.ctype)))
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
mod tests {
    use super::*;

    fn env(rcpts: &[&str]) -> Envelope {
        Envelope {
            esmtp: true,
            mail_from: "alice@example.com".into(),
            rcpt: rcpts
                .iter()
                .map(|a| Recipient {
                    address: a.to_string(),
                    reply_code: 250,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    /// The streaming path gives the record the in-memory path gives.
    fn same_both_ways(raw: &[u8]) {
        let env = env(&["x@example.com"]);
        let want = build(&env, raw);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m");
        std::fs::write(&path, raw).expect("write");
        let got = build_streamed(&env, &path, raw.len() as u64, &want.raw_sha256);
        assert_eq!(
            got,
            want,
            "{}",
            String::from_utf8_lossy(&raw[..raw.len().min(300)])
        );
    }

    fn unhex(h: &str) -> Vec<u8> {
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).expect("hex"))
            .collect()
    }

    /// Japanese mail as real Japanese clients send it: ISO-2022-JP (the
    /// classic), Shift_JIS and EUC-JP, in encoded-word subjects, text
    /// bodies and an RFC 2231 file name; decoded into the record both ways.
    #[test]
    fn japanese_legacy_charsets_are_decoded() {
        let body = "本文です。機密資料を添付します。";
        let bodies = [
            (
                "iso-2022-jp",
                "1b24424b5c4a3824472439212335214c293b714e412472453a49552437245e243921231b2842",
            ),
            (
                "shift_jis",
                "967b95b682c582b781428b4096a78e9197bf82f09359957482b582dc82b78142",
            ),
            (
                "euc-jp",
                "cbdccab8a4c7a4b9a1a3b5a1cca9bbf1cec1a4f2c5bac9d5a4b7a4dea4b9a1a3",
            ),
        ];
        let subjects = [
            "=?ISO-2022-JP?B?GyRCR2Q+ZUpzOXAbKEI=?=",
            "=?Shift_JIS?B?lISP45XxjZA=?=",
            "=?EUC-JP?B?x+S+5crzufA=?=",
        ];
        for ((cs, hex), subject) in bodies.iter().zip(subjects) {
            let mut raw = format!(
                "From: =?ISO-2022-JP?B?GyRCR2Q+ZUpzOXAbKEI=?= <sales@example.jp>\r\nTo: boss@example.jp\r\n\
                 Subject: {subject}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"J\"\r\n\r\n\
                 --J\r\nContent-Type: text/plain; charset={cs}\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
            )
            .into_bytes();
            raw.extend_from_slice(&unhex(hex));
            raw.extend_from_slice(
                b"\r\n--J\r\nContent-Type: application/vnd.ms-excel\r\nContent-Transfer-Encoding: base64\r\n\
                  Content-Disposition: attachment; filename*=ISO-2022-JP''%1B%24BGd%3EeI%3D%1B%28B.xlsx\r\n\r\n\
                  UEsDBA==\r\n--J--\r\n",
            );
            let m = build(&env(&["boss@example.jp"]), &raw);
            assert_eq!(m.subject, "売上報告", "{cs}");
            assert_eq!(m.body_text.trim(), body, "{cs}");
            assert_eq!(m.from, ["sales@example.jp"]);
            assert_eq!(m.attachments.len(), 1, "{cs}: {:?}", m.parse_warnings);
            assert_eq!(m.attachments[0].filename, "売上表.xlsx", "{cs}");
            same_both_ways(&raw);
        }
    }

    /// Every label Japanese mailers, Windows and Python's `email` package
    /// write for the three Japanese encodings names one encoding_rs knows.
    #[test]
    fn japanese_charset_labels_and_aliases() {
        let sjis = unhex("94848fe3");
        let jis = unhex("1b244247643e651b2842");
        let euc = unhex("c7e4bee5");
        let table: [(&[&str], &[u8]); 3] = [
            (
                &[
                    "Shift_JIS",
                    "sjis",
                    "x-sjis",
                    "ms932",
                    "windows-31j",
                    "CP932",
                    "cp932",
                    "mskanji",
                    "shift_jis_2004",
                    "shift_jisx0213",
                    "SJIS-win",
                ],
                &sjis,
            ),
            (
                &[
                    "ISO-2022-JP",
                    "iso2022_jp",
                    "iso2022_jp_1",
                    "iso2022_jp_2",
                    "iso2022_jp_3",
                    "iso2022_jp_2004",
                    "iso2022_jp_ext",
                    "ISO-2022-JP-MS",
                    "cp50221",
                ],
                &jis,
            ),
            (
                &[
                    "EUC-JP",
                    "euc_jp",
                    "eucjp",
                    "eucJP-win",
                    "ujis",
                    "euc_jis_2004",
                    "euc_jisx0213",
                    "x-euc-jp",
                ],
                &euc,
            ),
        ];
        for (labels, bytes) in table {
            for label in labels {
                let cs = charset_for(label).unwrap_or_else(|| panic!("{label} unknown"));
                assert_eq!(cs.decode_without_bom_handling(bytes).0, "売上", "{label}");
            }
        }
        assert!(charset_for("x-no-such-charset").is_none());
    }

    #[test]
    fn streaming_scan_matches_in_memory_parse() {
        let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7919 % 251) as u8).collect();
        let b64 = {
            use base64::Engine;
            let s = base64::engine::general_purpose::STANDARD.encode(&big);
            s.as_bytes()
                .chunks(76)
                .map(|l| String::from_utf8_lossy(l).into_owned())
                .collect::<Vec<_>>()
                .join("\r\n")
        };
        let mixed = format!(
            "From: A <a@example.com>\r\nTo: b@example.com\r\nSubject: =?UTF-8?B?5aOy5LiK?=\r\n\
             Date: Mon, 23 Nov 2026 01:00:00 +0000\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"ab\"\r\n\r\npreamble\r\n\
             --ab\r\nContent-Type: multipart/alternative; boundary=\"abc\"\r\n\r\n\
             --abc\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
             caf=E9 soft=\r\nbreak\r\n.dot\r\n\
             --abc\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n--abc--\r\nepilogue\r\n\
             --ab\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\
             Content-Disposition: attachment; filename*=UTF-8''%E5%A3%B2%E4%B8%8A.bin\r\n\r\n{b64}\r\n\
             --ab\r\nContent-Type: text/csv; name=\"t.csv\"\r\n\r\na,b\r\n1,2\r\n\
             --ab\r\nContent-Type: text/plain\r\nContent-Disposition: inline; filename=\"i.txt\"\r\n\r\ninline\r\n\
             --ab--\r\n"
        );
        let cases: Vec<Vec<u8>> = vec![
            mixed.into_bytes(),
            b"Subject: plain\r\n\r\nbody\r\nno final newline".to_vec(),
            b"Subject: b64\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8g\r\nd29ybGQ=\r\n".to_vec(),
            b"Subject: unterminated\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nno close\r\n".to_vec(),
            b"Subject: digest\r\nContent-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nFrom: x@y\r\n\r\ninner\r\n--d--\r\n".to_vec(),
            b"no headers at all\r\n".to_vec(),
            b"".to_vec(),
            b"Subject: bad b64\r\nContent-Type: application/pdf; name=a.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!notbase64\r\n".to_vec(),
            // Found by fuzz/mime_record: a part whose header block is cut
            // by the next boundary (no blank line) must end there.
            b"Content-Type: multipart/mixed; boundary=\"ab\"\r\n\r\n--ab\r\nContent-Type: multipart/alt=\r\nbreak\r--a\nbc--\r\n--ab\r\nContent-Type: application/pdf; name=a.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--ab--\r\n".to_vec(),
            // Found by fuzz/mime_record: base64 with NUL bytes (not
            // whitespace to mailparse) and a bad length: same warning.
            b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi\x01\0\0\0\0\0\0\x000=\r\n--ab--\r\n".to_vec(),
            b"Content-Transfer-Encoding: base64\r\n\r\nQUJD\r\nRA\r\n".to_vec(),
            b"Content-Transfer-Encoding: base64\r\n\r\nQU*D\r\nRA\r\n".to_vec(),
            // Found by fuzz/mime_record: mailparse takes a multipart's first
            // delimiter as opening even when it ends in "--", and an inner
            // delimiter just before an outer boundary as closing.
            b"Content-Type: multipart/digest; boundary=d\r\n\r\npre\r\n--d--\r\nContent-Type: text/plain\r\n\r\nafter first close\r\n".to_vec(),
            b"Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\nContent-Type: multipart/mixed; boundary=i\r\n\r\n--i\r\n\r\none\r\n--i\r\n--o\r\nContent-Type: text/plain\r\n\r\ntwo\r\n--o--\r\n".to_vec(),
            b"Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\nContent-Type: multipart/mixed; boundary=i\r\n\r\n--i\r\n--o\r\n\r\nthree\r\n--o\n".to_vec(),
            // Found by fuzz/mime_record: a multipart whose boundary never
            // appears is, to mailparse, a leaf with an empty body.
            b"Content-Type: multipart/mixed; boundary=nowhere; name=a.pdf\r\n\r\nJVBERi0=\r\n--ab--\r\n".to_vec(),
            b"Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\nContent-Type: multipart/mixed; boundary=never; name=inner.bin\r\n\r\nbody\r\n--o\r\nContent-Disposition: attachment; filename=b\r\n\r\nB\r\n--o--\r\n".to_vec(),
            b"Subject: boundary with junk\r\nContent-Type: multipart/mixed; boundary=q\r\n\r\n--q trailing junk\r\nContent-Disposition: attachment; filename=a\r\n\r\nA\r\n--q--junk\r\n".to_vec(),
        ];
        // Bad symbols and bad lengths far into a body several blocks long.
        for (at, junk) in [(300_000, "*"), (200_000, "A")] {
            let mut bad = b64.clone();
            bad.insert_str(at, junk);
            let raw = format!(
                "Content-Type: application/zip; name=z.zip\r\nContent-Transfer-Encoding: base64\r\n\r\n{bad}\r\n"
            );
            same_both_ways(raw.as_bytes());
        }
        for c in &cases {
            same_both_ways(c);
        }
        // Every file of the CPython email test data (47 tricky messages and
        // some images and sounds as hostile non-mail input), when installed.
        if let Ok(dir) = std::fs::read_dir("/usr/lib/python3.11/test/test_email/data") {
            for e in dir.flatten() {
                if let Ok(raw) = std::fs::read(e.path()) {
                    same_both_ways(&raw);
                }
            }
        }
    }

    #[test]
    fn headers_bcc_and_attachments() {
        let raw = b"From: Alice <alice@example.com>\r\n\
To: bob@example.com\r\n\
Cc: Carol <carol@example.com>\r\n\
Subject: =?UTF-8?B?5aCx5ZGK5pu4?=\r\n\
Date: Tue, 1 Jul 2025 10:00:00 +0000\r\n\
Message-ID: <m1@example.com>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b\"\r\n\
\r\n\
--b\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Hello body\r\n\
--b\r\n\
Content-Type: application/pdf\r\n\
Content-Disposition: attachment; filename*=UTF-8''%E8%A6%8B%E7%A9%8D.pdf\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
aGVsbG8=\r\n\
--b--\r\n";
        let ev = build(
            &env(&["bob@example.com", "carol@example.com", "dave@example.com"]),
            raw,
        );
        assert_eq!(ev.from, vec!["alice@example.com"]);
        assert_eq!(ev.subject, "報告書");
        assert_eq!(ev.bcc, vec!["dave@example.com"]);
        assert_eq!(ev.recipient_count, 3);
        assert_eq!(ev.body_text.trim(), "Hello body");
        assert_eq!(ev.attachments.len(), 1);
        assert_eq!(ev.attachments[0].filename, "見積.pdf");
        assert_eq!(ev.attachments[0].size, 5);
        assert_eq!(
            ev.attachments[0].sha256,
            kiroku_common::sha256_hex(b"hello")
        );
        assert_eq!(ev.sent_at_ms, 1_751_364_000_000);
        assert!(ev.parse_warnings.is_empty(), "{:?}", ev.parse_warnings);
    }

    /// Japanese mail as Windows and some mailers write it, which
    /// mailparse alone leaves undecoded or broken: CP932 (and other
    /// Microsoft/Japanese names of the same encodings) as charset, a UTF-8
    /// character cut between two encoded-words.
    #[test]
    fn japanese_charset_aliases_and_split_encoded_words_are_decoded() {
        let mut raw = b"From: takahashi@example.jp\r\n\
Subject: =?CP932?B?h0CVXA==?= =?UTF-8?B?5pel5g==?=\r\n =?UTF-8?B?nKzoqp4=?= (=?eucJP-win?Q?=BB=EA=B5=DE?=)\r\n\
Content-Type: multipart/mixed; boundary=b\r\n\r\n\
--b\r\nContent-Type: text/plain; charset=CP932\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            .to_vec();
        raw.extend_from_slice(&unhex("eee08bb48740"));
        raw.extend_from_slice(
            b"\r\n--b\r\nContent-Type: application/pdf\r\n\
Content-Disposition: attachment; filename*=CP932''%87%40%8C%A9%90%CF.pdf\r\n\r\nA\r\n\
--b\r\nContent-Type: application/pdf; name=\"=?CP932?B?kL+LgY+Rh0EucGRm?=\"\r\n\r\nB\r\n\
--b\r\nContent-Type: application/pdf; name=\"=?ISO-2022-JP?B?GyRCOCtAURsoQg==?=.pdf\"\r\n\r\nC\r\n\
--b--\r\n",
        );
        let ev = build(&env(&["kimura@example.jp"]), &raw);
        assert_eq!(ev.subject, "①表日本語 (至急)");
        assert_eq!(ev.body_text.trim(), "髙橋①");
        let names: Vec<&str> = ev.attachments.iter().map(|a| a.filename.as_str()).collect();
        assert_eq!(names, ["①見積.pdf", "請求書②.pdf", "見積.pdf"]);
        assert_eq!(ev.attachment_count, 3);
        same_both_ways(&raw);

        // Only a better reading replaces mailparse's; nothing panics.
        for (subject, want) in [
            ("What is =? and ?= here", "What is =? and ?= here"),
            ("=?x-unknown?B?aGVsbG8=?=", "=?x-unknown?B?aGVsbG8=?="),
            ("=?UTF-8?B?5pel5g==?= tail", "日\u{fffd} tail"),
            ("=?", "=?"),
            ("=?UTF-8?Q?=E", "=?UTF-8?Q?=E"),
            ("=?UTF-8?Q?=E6=97=A5=?= =?utf-8?q?=", "日 =?utf-8?q?="),
            (
                "=?\u{e9}?B?x?= =?UTF-8?\u{e9}?x?=",
                "=?\u{e9}?B?x?= =?UTF-8?\u{e9}?x?=",
            ),
        ] {
            let raw = format!("Subject: {subject}\r\n\r\nbody\r\n");
            let ev = build(&env(&["x@example.com"]), raw.as_bytes());
            assert_eq!(ev.subject, want, "{subject:?}");
            same_both_ways(raw.as_bytes());
        }
    }

    /// A file with a name but no Content-Disposition (scanners, scripts,
    /// msg_44.txt of the CPython email test data) is an attachment, not
    /// an inline part: counted, so `has_attachment` finds the mail.
    #[test]
    fn named_part_without_disposition_is_an_attachment() {
        let raw = b"Subject: scan\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n\
--b\r\nContent-Type: application/pdf; name=\"=?ISO-2022-JP?B?GyRCOCtAUUpzOXAbKEIucGRm?=\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n\
--b\r\nContent-Type: image/png; name=logo.png\r\nContent-Disposition: inline\r\n\r\nPNG\r\n\
--b--\r\n";
        let ev = build(&env(&["x@example.com"]), raw);
        let atts: Vec<(&str, bool)> = ev
            .attachments
            .iter()
            .map(|a| (a.filename.as_str(), a.inline))
            .collect();
        assert_eq!(atts, [("見積報告.pdf", false), ("logo.png", true)]);
        assert_eq!(ev.attachment_count, 1);
        same_both_ways(raw);
    }

    /// mailparse refuses a whole address field for one entry without a
    /// domain; the record keeps every address (and the bare local part, as
    /// Python's `email` package does), so Bcc is not guessed wrong.
    #[test]
    fn address_field_with_a_bare_local_part_keeps_every_address() {
        let raw = b"From: root (Cron Daemon)\r\n\
To: Bob <bob@example.com>, postmaster, \"Doe, Jane\" <jane@example.com> (boss, really)\r\n\
Cc: team: carol@example.com, dave;\r\n\
Subject: local mail\r\n\r\nbody\r\n";
        let ev = build(
            &env(&["bob@example.com", "jane@example.com", "eve@example.com"]),
            raw,
        );
        assert_eq!(ev.from, ["root"]);
        assert_eq!(ev.to, ["bob@example.com", "postmaster", "jane@example.com"]);
        assert_eq!(ev.cc, ["carol@example.com", "dave"]);
        assert_eq!(ev.bcc, ["eve@example.com"]);
        assert!(
            ev.parse_warnings.iter().any(|w| w.starts_with("To header")),
            "{:?}",
            ev.parse_warnings
        );
        for hostile in [
            &b"To: <>, \"unterminated, (open <a@b\r\n\r\n"[..],
            b"To: \xff\xfe, \\, ((((, ;;;, :::, <<<>>>\r\n\r\n",
        ] {
            build(&env(&["x@example.com"]), hostile);
            same_both_ways(hostile);
        }
        same_both_ways(raw);
    }

    #[test]
    fn hostile_inputs_never_panic() {
        let cases: &[&[u8]] = &[
            b"",
            b"no headers at all, just text\r\n",
            b"From: \xff\xfe bad <x@\xff>\r\nSubject: \x80\x81\r\n\r\nbody\r\n",
            b"Content-Type: multipart/mixed; boundary=\"\"\r\n\r\n--\r\n--\r\n",
            b"Content-Type: multipart/mixed\r\n\r\nno boundary\r\n",
            b"Date: yesterday\r\nTo: ,,,<<>>\r\n\r\n\xe9t\xe9 8-bit body\r\n",
        ];
        for raw in cases {
            let ev = build(&env(&["x@example.com"]), raw);
            assert_eq!(ev.message_size, raw.len() as u64);
            assert_eq!(ev.raw_sha256, kiroku_common::sha256_hex(raw));
        }
    }

    #[test]
    fn html_only_body_becomes_text() {
        assert_eq!(
            html_to_text("<html><style>p{}</style><p>Hello&nbsp;<b>world</b> &amp; co</p></html>"),
            "Hello world & co"
        );
    }
}
