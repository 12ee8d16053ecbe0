//! Turns one SMTP transaction (envelope + raw message) into an `EmailEvent`.
//! Parsing is best effort on untrusted input: the message is read by the
//! lenient MIME walker of `kiroku_common::mime` (the same code for mail
//! read in memory and mail streamed from the spool file, so both give the
//! same record), every repair it made is listed in `decode_warnings`,
//! whatever still cannot be read is noted in `parse_warnings`, a panic is
//! caught, and the raw bytes are kept regardless (the caller stores them
//! as the blob).

use std::collections::HashSet;
use std::io::BufRead;
use std::path::Path;

use kiroku_common::vocabulary::{ATTACHMENT_NAME_MISMATCH, MIME_REPAIRED};
use kiroku_proto::{EmailEvent, Recipient};

mod bounds;
mod fields;
mod html;
mod visit;

pub use bounds::MAX_RECORD;
pub use html::html_to_text;

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

/// Builds the record of a message held in memory. Never panics, whatever
/// `raw` holds.
pub fn build(env: &Envelope, raw: &[u8]) -> EmailEvent {
    let ev = EmailEvent {
        message_size: raw.len() as u64,
        raw_sha256: kiroku_common::sha256_hex(raw),
        ..envelope_only(env)
    };
    let parsed = std::panic::catch_unwind(|| parse(raw));
    complete(env, ev, parsed)
}

/// Messages up to this size are read into memory; larger ones are walked
/// straight from the spool file (bounded memory, same record).
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
/// for the differential tests, which check both paths agree).
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
    let parsed =
        std::panic::catch_unwind(move || parse(std::io::BufReader::with_capacity(64 * 1024, file)));
    complete(env, ev, parsed)
}

/// The record's tags for what the content showed: `mime-repaired` when the
/// walker repaired anything, `attachment-name-mismatch` when a file was
/// given more than one name.
pub fn tags(m: &EmailEvent) -> Vec<&'static str> {
    let mut tags = Vec::new();
    if !m.decode_warnings.is_empty() {
        tags.push(MIME_REPAIRED);
    }
    if m.attachments.iter().any(|a| a.name_candidates.len() > 1) {
        tags.push(ATTACHMENT_NAME_MISMATCH);
    }
    tags
}

/// Reads the message: header fields, body text, attachments, warnings.
fn parse(r: impl BufRead) -> std::io::Result<visit::Parsed> {
    let mut v = visit::Record::default();
    let walk = kiroku_common::mime::walk(r, &mut v)?;
    let mut p = v.finish();
    p.decode_warnings = walk.warnings;
    fields::header_fields(&walk.top_headers, &mut p);
    Ok(p)
}

/// Fills the parsed fields into `ev`, then Bcc and counts.
fn complete<E: std::fmt::Display>(
    env: &Envelope,
    mut ev: EmailEvent,
    parsed: std::thread::Result<Result<visit::Parsed, E>>,
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
            ev.decode_warnings = p.decode_warnings;
        }
        Ok(Err(e)) => ev.parse_warnings.push(format!("MIME parse failed: {e}")),
        Err(_) => ev
            .parse_warnings
            .push("MIME parser panicked; only the envelope was recorded".into()),
    }
    // Inline images belong to an HTML body; every other file counts, an
    // inline zip or PDF too (an inline disposition must not hide a file
    // from `--has-attachment`).
    ev.attachment_count = ev
        .attachments
        .iter()
        .filter(|a| !a.inline || !a.content_type.starts_with("image/"))
        .count() as u32;
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
    bounds::bound(&mut ev);
    ev
}

#[cfg(test)]
mod tests;
