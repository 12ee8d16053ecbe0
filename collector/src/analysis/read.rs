//! Reading a file's bytes for analysis, with bounded memory.
//!
//! - An attachment of 64 KiB or more in canonical base64 is a blob of its
//!   own (`store/blobs/parts.rs`): `blobs.reader(sha256)` gives its decoded
//!   content, verified against the hash.
//! - Anything else is found by walking the raw message (or an attached
//!   message) and taking the leaf whose decoded SHA-256 is the file's.
//!
//! Memory: a file is read into memory up to `Limits::max_file_bytes`
//! (default 64 MiB) — the hooks (`archive::list`, `text::extract`) take a
//! slice — and of a larger one only its first [`HEAD`] bytes (type
//! detection), its analysis saying it was too large. With the worker pool
//! bounded (`analysis.workers`), that is the most the analysis holds.

use std::io::Read;

use sha2::{Digest, Sha256};

use crate::store::blobs::BlobStore;

/// Bytes read of a file too large to read whole.
pub const HEAD: usize = 64 * 1024;

/// A file's content as far as it was read.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// The whole content.
    Whole(Vec<u8>),
    /// Over the limit: its size and first bytes.
    TooLarge { size: u64, head: Vec<u8> },
}

impl Content {
    /// The bytes type detection looks at.
    pub fn head(&self) -> &[u8] {
        match self {
            Content::Whole(d) => d,
            Content::TooLarge { head, .. } => head,
        }
    }
    pub fn size(&self) -> u64 {
        match self {
            Content::Whole(d) => d.len() as u64,
            Content::TooLarge { size, .. } => *size,
        }
    }
    fn of(data: Vec<u8>, max: u64) -> Content {
        if data.len() as u64 <= max {
            Content::Whole(data)
        } else {
            let size = data.len() as u64;
            let mut head = data;
            head.truncate(HEAD);
            Content::TooLarge { size, head }
        }
    }
}

/// Reads `r` whole when it holds at most `max` bytes, else its size and
/// first bytes (the rest is read and dropped in chunks, so a verified
/// reader still checks its hash).
pub fn read_bounded(mut r: impl Read, max: u64) -> std::io::Result<Content> {
    let mut data = Vec::new();
    (&mut r).take(max + 1).read_to_end(&mut data)?;
    if data.len() as u64 <= max {
        return Ok(Content::Whole(data));
    }
    let mut size = data.len() as u64;
    data.truncate(HEAD);
    data.shrink_to_fit();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
    }
    Ok(Content::TooLarge { size, head: data })
}

/// The attachment `sha256` when it is stored as a blob of its own.
pub fn from_blob(blobs: &BlobStore, sha256: &str, max: u64) -> Option<std::io::Result<Content>> {
    if !blobs.has(sha256) {
        return None;
    }
    Some(
        blobs
            .reader(sha256)
            .map_err(std::io::Error::other)
            .and_then(|r| read_bounded(r, max)),
    )
}

/// One leaf part of a message, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Leaf {
    /// Lower-case MIME type ("application/pdf").
    pub content_type: String,
    /// `smime-type` of an `application/pkcs7-mime` part.
    pub smime_type: String,
    /// The file name a mail client shows; empty for a body part.
    pub name: String,
    pub attachment: bool,
    pub sha256: String,
    pub content: Content,
}

/// What walking a message gave.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Walked {
    /// The top-level Content-Type, lower case, and its `protocol` and
    /// `smime-type` parameters (S/MIME and PGP).
    pub content_type: String,
    pub protocol: String,
    pub smime_type: String,
    pub subject: String,
    pub leaves: Vec<Leaf>,
}

/// Walks a message held in memory: every leaf, decoded, each kept whole up
/// to `max` bytes.
pub fn walk(raw: &[u8], max: u64) -> Walked {
    let Ok(mail) = mailparse::parse_mail(raw) else {
        return Walked::default();
    };
    use mailparse::MailHeaderMap;
    let mut w = Walked {
        content_type: mail.ctype.mimetype.to_ascii_lowercase(),
        protocol: param(&mail.ctype.params, "protocol"),
        smime_type: param(&mail.ctype.params, "smime-type"),
        subject: mail.headers.get_first_value("Subject").unwrap_or_default(),
        leaves: Vec::new(),
    };
    let mut stack = vec![&mail];
    let mut order = Vec::new();
    while let Some(p) = stack.pop() {
        if p.ctype
            .mimetype
            .to_ascii_lowercase()
            .starts_with("multipart/")
        {
            stack.extend(p.subparts.iter().rev());
        } else {
            order.push(p);
        }
    }
    for p in order {
        let data = p.get_body_raw().unwrap_or_default();
        let disp = p.get_content_disposition();
        let name = disp
            .params
            .get("filename")
            .or_else(|| p.ctype.params.get("name"))
            .cloned()
            .unwrap_or_default();
        let attachment =
            !name.is_empty() || matches!(disp.disposition, mailparse::DispositionType::Attachment);
        w.leaves.push(Leaf {
            content_type: p.ctype.mimetype.to_ascii_lowercase(),
            smime_type: param(&p.ctype.params, "smime-type"),
            name,
            attachment,
            sha256: hex::encode(Sha256::digest(&data)),
            content: Content::of(data, max),
        });
    }
    w
}

/// The decoded Subject of a message ("" without one).
pub fn subject(raw: &[u8]) -> String {
    use mailparse::MailHeaderMap;
    mailparse::parse_headers(raw)
        .ok()
        .and_then(|(h, _)| h.get_first_value("Subject"))
        .unwrap_or_default()
}

fn param(params: &std::collections::BTreeMap<String, String>, name: &str) -> String {
    params
        .get(name)
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_reads() {
        let data = vec![7u8; 200_000];
        assert_eq!(
            read_bounded(&data[..], 200_000).expect("read"),
            Content::Whole(data.clone())
        );
        match read_bounded(&data[..], 100_000).expect("read") {
            Content::TooLarge { size, head } => {
                assert_eq!(size, 200_000);
                assert_eq!(head.len(), HEAD);
            }
            c => panic!("not cut: {:?}", c.size()),
        }
    }

    #[test]
    fn walks_leaves_with_their_hashes() {
        let raw = b"From: a@b.example\r\nSubject: Fwd: plan\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\nhello\r\n--XX\r\nContent-Type: application/pdf; name=\"a.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--XX--\r\n";
        let w = walk(raw, 1 << 20);
        assert_eq!(w.content_type, "multipart/mixed");
        assert_eq!(w.subject, "Fwd: plan");
        assert_eq!(w.leaves.len(), 2);
        let pdf = &w.leaves[1];
        assert_eq!(pdf.name, "a.pdf");
        assert!(pdf.attachment);
        assert_eq!(pdf.content, Content::Whole(b"%PDF-1.4\n".to_vec()));
        assert_eq!(pdf.sha256, kiroku_common::sha256_hex(b"%PDF-1.4\n"));
    }
}
