//! Turns one SMTP transaction (envelope + raw message) into an `EmailEvent`.
//! Parsing is best effort on untrusted input: whatever cannot be parsed is
//! noted in `parse_warnings`, a parser panic is caught, and the raw bytes
//! are kept regardless (the caller stores them as the blob).

use std::collections::HashSet;

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

/// Builds the record of a message spooled to `path`.
pub fn build_from_file(env: &Envelope, path: &std::path::Path) -> EmailEvent {
    match std::fs::read(path) {
        Ok(raw) => build(env, &raw),
        Err(e) => EmailEvent {
            parse_warnings: vec![format!(
                "cannot read spooled message {}: {e}",
                path.display()
            )],
            ..envelope_only(env)
        },
    }
}

/// Builds the record. Never panics, whatever `raw` holds.
pub fn build(env: &Envelope, raw: &[u8]) -> EmailEvent {
    let mut ev = EmailEvent {
        message_size: raw.len() as u64,
        raw_sha256: kiroku_common::sha256_hex(raw),
        ..envelope_only(env)
    };
    let accepted: Vec<&str> = env
        .rcpt
        .iter()
        .filter(|r| (200..300).contains(&r.reply_code))
        .map(|r| r.address.as_str())
        .collect();

    let parsed = std::panic::catch_unwind(|| parse_into(raw));
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
    if mail.headers.is_empty() || !starts_with_header(raw) {
        p.warnings
            .push("message has no headers (does not start with a `Name: value` line)".into());
    }
    let h = &mail.headers;
    p.from = addresses(h, "From", &mut p.warnings);
    p.to = addresses(h, "To", &mut p.warnings);
    p.cc = addresses(h, "Cc", &mut p.warnings);
    p.reply_to = addresses(h, "Reply-To", &mut p.warnings);
    p.subject = h.get_first_value("Subject").unwrap_or_default();
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
    let mut plain = None;
    let mut html = None;
    walk(&mail, &mut p, &mut plain, &mut html);
    let body = match (plain, html) {
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
    Ok(p)
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
            Err(e) => warnings.push(format!("{name} header: {e}")),
        }
    }
    out
}

fn walk(
    part: &ParsedMail<'_>,
    p: &mut Parsed,
    plain: &mut Option<String>,
    html: &mut Option<String>,
) {
    if !part.subparts.is_empty() {
        for sub in &part.subparts {
            walk(sub, p, plain, html);
        }
        return;
    }
    let disp = part.get_content_disposition();
    let filename = disp
        .params
        .get("filename")
        .or_else(|| part.ctype.params.get("name"))
        .cloned();
    let mimetype = part.ctype.mimetype.to_lowercase();
    let is_attachment = disp.disposition == DispositionType::Attachment || filename.is_some();
    if !is_attachment && mimetype.starts_with("text/") {
        let text = match part.get_body() {
            Ok(t) => t,
            Err(e) => {
                p.warnings.push(format!("{mimetype} body: {e}"));
                return;
            }
        };
        if mimetype == "text/html" {
            html.get_or_insert(text);
        } else {
            plain.get_or_insert(text);
        }
        return;
    }
    if !is_attachment && mimetype == "message/rfc822" {
        return;
    }
    if !is_attachment {
        return;
    }
    let data = match part.get_body_raw() {
        Ok(d) => d,
        Err(e) => {
            p.warnings.push(format!("attachment {filename:?}: {e}"));
            return;
        }
    };
    p.attachments.push(Attachment {
        filename: filename.unwrap_or_default(),
        content_type: mimetype,
        size: data.len() as u64,
        sha256: kiroku_common::sha256_hex(&data),
        inline: disp.disposition == DispositionType::Inline,
    });
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
