//! Reading a file's bytes for analysis, with bounded memory.
//!
//! - An attachment of 64 KiB or more in canonical base64 is a blob of its
//!   own (`store/blobs/parts.rs`): `blobs.reader(sha256)` gives its decoded
//!   content, verified against the hash.
//! - Anything else is found by walking the raw message (or an attached
//!   message) with `kiroku_common::mime`, the one lenient streaming walker
//!   of agent and collector (so the collector finds what the agent
//!   recorded, damaged base64 and uuencode included), and taking the leaf
//!   whose decoded SHA-256 is the file's.
//!
//! Memory: a file is read into memory up to `Limits::max_file_bytes`
//! (default 64 MiB) — the hooks (`archive::list`, `text::extract`) take a
//! slice — and of a larger one only its first [`HEAD`] bytes (type
//! detection), its analysis saying it was too large. With the worker pool
//! bounded (`analysis.workers`), that is the most the analysis holds.

use std::io::{BufRead, Read};

use kiroku_common::mime;

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
    /// `data` whole when it is at most `max` bytes, else its size and head.
    pub fn of(data: Vec<u8>, max: u64) -> Content {
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
    /// The leaves kept (see [`walk`]), in order.
    pub leaves: Vec<Leaf>,
}

/// Leaves whose bytes the analysis always needs: attached mail, and the
/// S/MIME and PGP parts (for the tags and the signer).
fn always_kept(content_type: &str) -> bool {
    content_type == super::types::MESSAGE
        || content_type.contains("pkcs7")
        || content_type.starts_with("application/pgp")
}

/// Collects the kept leaves of a walk (`kiroku_common::mime`, the one
/// lenient streaming walker of agent and collector).
struct Collect<K> {
    max: u64,
    /// Whether any attachment may be kept at all (else their bodies are
    /// not even decoded).
    attachments: bool,
    keep: K,
    walked: Walked,
    /// The leaf being read: its bytes so far (the first [`HEAD`] only once
    /// it is over `max`) and whether it is over.
    buf: Vec<u8>,
    over: bool,
}

impl<K: Fn(&str) -> bool> mime::Visitor for Collect<K> {
    fn top_headers(&mut self, headers: &[mime::Header]) {
        if let Some(h) = mime::headers::first(headers, "Content-Type") {
            let ct = mime::params::parse(&h.unfolded());
            self.walked.content_type = ct.value.clone();
            self.walked.protocol = ct.param("protocol").unwrap_or("").to_ascii_lowercase();
            self.walked.smime_type = ct.param("smime-type").unwrap_or("").to_ascii_lowercase();
        }
        if let Some(h) = mime::headers::first(headers, "Subject") {
            self.walked.subject = h.text();
        }
    }

    fn part_start(&mut self, part: &mime::PartInfo) -> bool {
        self.buf.clear();
        self.over = false;
        (self.attachments && part.is_attachment) || always_kept(&part.content_type)
    }

    fn body(&mut self, _part: &mime::PartInfo, decoded: &[u8]) {
        if !self.over && (self.buf.len() + decoded.len()) as u64 > self.max {
            self.over = true;
            self.buf.truncate(HEAD);
        }
        if self.over {
            let room = HEAD.saturating_sub(self.buf.len());
            self.buf
                .extend_from_slice(&decoded[..room.min(decoded.len())]);
        } else {
            self.buf.extend_from_slice(decoded);
        }
    }

    fn part_end(&mut self, part: &mime::PartInfo, end: &mime::PartEnd) {
        if !end.decoded
            || !(always_kept(&part.content_type)
                || (part.is_attachment && (self.keep)(&end.sha256)))
        {
            return;
        }
        let bytes = std::mem::take(&mut self.buf);
        let content = if self.over {
            Content::TooLarge {
                size: end.size,
                head: bytes,
            }
        } else {
            Content::Whole(bytes)
        };
        let smime_type = mime::headers::first(&part.headers, "Content-Type")
            .map(|h| mime::params::parse(&h.unfolded()))
            .and_then(|ct| ct.param("smime-type").map(str::to_ascii_lowercase))
            .unwrap_or_default();
        self.walked.leaves.push(Leaf {
            content_type: part.content_type.clone(),
            smime_type,
            name: part.filename.clone().unwrap_or_default(),
            attachment: part.is_attachment,
            sha256: end.sha256.clone(),
            content,
        });
    }
}

/// Walks a message streamed from `raw`: the attachments whose decoded
/// SHA-256 `keep` accepts (none, not even decoded, when `attachments` is
/// false), and every attached mail and S/MIME or PGP part, each held whole
/// up to `max` bytes (else its size and first [`HEAD`] bytes). Memory: the
/// kept leaves plus the one being read.
pub fn walk(
    raw: impl BufRead,
    max: u64,
    attachments: bool,
    keep: impl Fn(&str) -> bool,
) -> std::io::Result<Walked> {
    let mut c = Collect {
        max,
        attachments,
        keep,
        walked: Walked::default(),
        buf: Vec::new(),
        over: false,
    };
    mime::walk(raw, &mut c)?;
    Ok(c.walked)
}

/// Walks a message held in memory, keeping every attachment.
pub fn walk_all(raw: &[u8], max: u64) -> Walked {
    // Reading from memory cannot fail.
    walk(raw, max, true, |_| true).unwrap_or_default()
}

/// The decoded Subject of a message ("" without one).
pub fn subject(raw: &[u8]) -> String {
    struct Top(String);
    impl mime::Visitor for Top {
        fn top_headers(&mut self, headers: &[mime::Header]) {
            if let Some(h) = mime::headers::first(headers, "Subject") {
                self.0 = h.text();
            }
        }
        fn part_start(&mut self, _: &mime::PartInfo) -> bool {
            false
        }
        fn body(&mut self, _: &mime::PartInfo, _: &[u8]) {}
        fn part_end(&mut self, _: &mime::PartInfo, _: &mime::PartEnd) {}
    }
    let mut t = Top(String::new());
    let _ = mime::walk(raw, &mut t);
    t.0
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
    fn walks_the_attachments_with_their_hashes_leniently_and_bounded() {
        // The second attachment's base64 has a stray character and no
        // padding: a mail client shows it, so the walk finds it.
        let raw = b"From: a@b.example\r\nSubject: Fwd: plan\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\nhello\r\n--XX\r\nContent-Type: application/pdf; name=\"a.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--XX\r\nContent-Type: application/zip\r\nContent-Disposition: attachment; filename=b.zip\r\nContent-Transfer-Encoding: base64\r\n\r\nUEsD!BA\r\n--XX--\r\n";
        let w = walk_all(raw, 1 << 20);
        assert_eq!(w.content_type, "multipart/mixed");
        assert_eq!(w.subject, "Fwd: plan");
        let got: Vec<(&str, &Content, &str)> = w
            .leaves
            .iter()
            .map(|l| (l.name.as_str(), &l.content, l.sha256.as_str()))
            .collect();
        let (pdf, zip) = (b"%PDF-1.4\n".to_vec(), b"PK\x03\x04".to_vec());
        let (pdf_sha, zip_sha) = (
            kiroku_common::sha256_hex(&pdf),
            kiroku_common::sha256_hex(&zip),
        );
        assert_eq!(
            got,
            vec![
                ("a.pdf", &Content::Whole(pdf), pdf_sha.as_str()),
                ("b.zip", &Content::Whole(zip), zip_sha.as_str()),
            ]
        );
        // Only the leaves asked for are kept; over the limit, the head.
        let w = walk(&raw[..], 4, true, |sha| sha == zip_sha).expect("walk");
        assert_eq!(w.leaves.len(), 1);
        assert_eq!(w.leaves[0].content.size(), 4);
        let w = walk(&raw[..], 3, true, |sha| sha == zip_sha).expect("walk");
        assert!(matches!(
            w.leaves[0].content,
            Content::TooLarge { size: 4, .. }
        ));
        let w = walk(&raw[..], 1 << 20, false, |_| true).expect("walk");
        assert!(w.leaves.is_empty(), "no attachment wanted");
        let w = walk(&raw[..], 3, true, |sha| sha == zip_sha).expect("walk");
        assert!(matches!(
            w.leaves[0].content,
            Content::TooLarge { size: 4, .. }
        ));
    }
}
