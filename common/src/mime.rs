//! The MIME walker shared by the agent (the mail record) and the
//! collector (reading attachment bytes out of stored raw messages): one
//! pass over a message from any [`BufRead`], bounded memory whatever the
//! message size, every leaf part reported with its headers, content type,
//! disposition, name candidates and its DECODED body, streamed.
//!
//! It reads mail the way mail clients (and Python's `email` package) do,
//! not the way RFC 2045 wants it written, so that damaging a message
//! slightly cannot hide an attachment from the record:
//! - base64 skips characters outside its alphabet and decodes a last group
//!   without padding ([`decode`]);
//! - RFC 2231 parameters with an empty or unknown charset, continuations,
//!   a boundary given as `boundary*=''XX` or followed by a comment
//!   ([`params`]);
//! - RFC 2047 encoded words holding raw 8-bit octets ([`words`]);
//! - a header line that is not a field is skipped when fields follow it, so
//!   it affects its own part only, at the top level too ([`headers`]);
//! - uuencode: `x-uuencode` parts, and `begin 644 name` blocks inside
//!   text/plain bodies, reported as parts of their own;
//! - address lists with empty elements and comments ([`address`]).
//!
//! Every repair is reported in [`Walk::warnings`], naming the part.
//!
//! Why not a crate: mailparse (used before) and Stalwart's `mail-parser`
//! both parse a message held whole in memory (`parse_mail(&[u8])`,
//! `MessageParser::parse(&[u8])`), which the agent cannot do for a 50 MB
//! message within its memory budget; mailparse also fails a whole message
//! on one bad header line and a whole part on one stray base64 character.
//! The pieces that are not MIME structure come from crates: charsets
//! (`charset`/encoding_rs), quoted-printable, mailparse's header value and
//! address parsing.
//!
//! # Using it
//! Implement [`Visitor`] and call [`walk`]; or, to get the decoded bytes of
//! chosen leaves, call [`extract_leaf`]:
//! ```
//! use kiroku_common::mime;
//! let raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
//! Content-Type: application/zip\r\nContent-Disposition: attachment; filename=a.zip\r\n\
//! Content-Transfer-Encoding: base64\r\n\r\nUEsD!BA\r\n--b--\r\n";
//! let mut bytes = Vec::new();
//! let walk = mime::extract_leaf(
//!     &raw[..],
//!     |p: &mime::PartInfo| p.filename.as_deref() == Some("a.zip"),
//!     |_p: &mime::PartInfo, chunk: &[u8]| bytes.extend_from_slice(chunk),
//! )
//! .expect("reading from memory");
//! assert_eq!(bytes, b"PK\x03\x04");
//! assert_eq!(walk.parts.len(), 1);
//! assert!(!walk.warnings.is_empty()); // the stray `!` and the padding
//! ```
//!
//! To read every file of a stored message, want `|p| p.is_attachment`
//! and keep the pieces by `p.index`; the returned [`Walk::parts`] gives
//! each one's SHA-256 (the record's `Attachment.sha256`) to match them
//! with. The agent's record lists attachments in the same order
//! (`parts` filtered by `is_attachment`).
//!
//! The API (`walk`, `walk_with`, `extract_leaf`, `Visitor`, `PartInfo`,
//! `PartEnd`, `Walk`, `Limits`, `Disposition`, `Header`) is stable: the
//! collector's analysis depends on it.

use std::io::BufRead;

pub mod address;
pub mod decode;
pub mod headers;
pub mod params;
mod walk;
pub mod words;

pub use headers::Header;

/// How a part was disposed (Content-Disposition).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Disposition {
    /// No Content-Disposition field.
    #[default]
    None,
    Inline,
    Attachment,
    /// Another value (treated as attachment by clients when named).
    Other,
}

/// What a leaf part is, known when its body starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartInfo {
    /// Leaves in order, from 0.
    pub index: usize,
    /// Where it sits, IMAP-style: "1" for a single-part message, "2.1" for
    /// the first part of the second part; a uuencoded block found inside a
    /// text part adds ".uN" (the Nth block): "1.u1".
    pub path: String,
    /// Nesting depth (0: the message itself).
    pub depth: usize,
    /// The part's header fields as written (empty for a uuencoded block).
    pub headers: Vec<Header>,
    /// The MIME type, lower case ("text/plain" when absent or invalid;
    /// "message/rfc822" by default inside multipart/digest).
    pub content_type: String,
    /// The charset parameter ("" when absent).
    pub charset: String,
    pub disposition: Disposition,
    /// The name a mail client shows: Content-Disposition `filename*`
    /// (RFC 2231), then `filename`, then Content-Type `name*`, then `name`,
    /// then a uuencode `begin` line, else a made-up `part-1.2.zip` for a
    /// file (see `is_attachment`). Python's `email` takes whichever of
    /// `filename*` and `filename` comes first in the field; Thunderbird
    /// (Mozilla's MIME parameter parser, netwerk/mime; its tests for bug
    /// 588781) takes the RFC 2231 form whatever the order, then joined
    /// `filename*0`, `filename*1` sections (stopping at a gap), then the
    /// first plain value; so does this walker.
    pub filename: Option<String>,
    /// Every distinct name the part was given, in the order above,
    /// RFC 2047/2231 decoded and trimmed.
    pub name_candidates: Vec<String>,
    /// The Content-Transfer-Encoding the body is decoded from, lower case:
    /// "base64", "quoted-printable", "uuencode" (any of its spellings, and
    /// blocks found in text), "7bit" when absent, else as written.
    pub transfer_encoding: String,
    /// A file: disposition attachment (or an unknown one such as
    /// `attachmnt`, RFC 2183), or a name, or any leaf that is not the
    /// body's first text/plain or first text/html part (an unnamed zip,
    /// an inline PDF). A file without a name has `filename`
    /// `part-<path><.ext from the type>` (`part-1.2.zip`, as Thunderbird
    /// shows "Part 1.2") and no `name_candidates`.
    pub is_attachment: bool,
    /// A uuencoded block found inside a text part (reported while that
    /// text part is open: its `part_start` .. `part_end` nest inside).
    pub embedded: bool,
}

/// What a leaf's body came to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartEnd {
    /// The body was decoded (the visitor wanted it, or it is text/plain,
    /// which is always scanned for uuencoded blocks).
    pub decoded: bool,
    /// Size and lower-case hex SHA-256 of the decoded body (0 and "" when
    /// not decoded).
    pub size: u64,
    pub sha256: String,
}

/// Receives the parts of a message, in order.
pub trait Visitor {
    /// The message's own header fields (before any part).
    fn top_headers(&mut self, _headers: &[Header]) {}
    /// A leaf starts. Return true to receive its decoded body.
    fn part_start(&mut self, part: &PartInfo) -> bool;
    /// A piece of the decoded body of a part whose `part_start` returned
    /// true; pieces are at most a few hundred KiB.
    fn body(&mut self, part: &PartInfo, decoded: &[u8]);
    /// The leaf ended.
    fn part_end(&mut self, part: &PartInfo, end: &PartEnd);
}

/// The result of a walk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Walk {
    /// The message's header fields.
    pub top_headers: Vec<Header>,
    /// Every leaf met, in the order they started (by `index`), with its
    /// end.
    pub parts: Vec<(PartInfo, PartEnd)>,
    /// Every repair made and every oddity tolerated, naming the part:
    /// "part 2 (report.zip): base64: 1 character(s) outside the alphabet
    /// skipped".
    pub warnings: Vec<String>,
}

/// Limits that bound memory and work.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest header block read for one part; the rest is body.
    pub max_header_block: usize,
    /// Multipart nesting beyond this is read as a leaf.
    pub max_depth: usize,
    /// Leaves reported at most; the rest of the message is skipped (with
    /// a warning), so a message of a million tiny parts cannot grow the
    /// walk's result without bound.
    pub max_parts: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_block: 1024 * 1024,
            max_depth: 64,
            max_parts: 10_000,
        }
    }
}

/// Walks a whole message, calling `v` for every leaf. Fails only when
/// reading fails.
pub fn walk<R: BufRead, V: Visitor>(r: R, v: &mut V) -> std::io::Result<Walk> {
    walk_with(r, v, Limits::default())
}

/// [`walk`] with explicit limits.
pub fn walk_with<R: BufRead, V: Visitor>(r: R, v: &mut V, limits: Limits) -> std::io::Result<Walk> {
    walk::run(r, v, limits)
}

/// Streams the decoded bodies of the leaves `want` accepts into `sink`,
/// piece by piece; returns the walk (every leaf, wanted or not, with the
/// size and SHA-256 of the wanted ones).
pub fn extract_leaf<R, W, S>(raw: R, want: W, sink: S) -> std::io::Result<Walk>
where
    R: BufRead,
    W: FnMut(&PartInfo) -> bool,
    S: FnMut(&PartInfo, &[u8]),
{
    struct Extract<W, S> {
        want: W,
        sink: S,
    }
    impl<W: FnMut(&PartInfo) -> bool, S: FnMut(&PartInfo, &[u8])> Visitor for Extract<W, S> {
        fn part_start(&mut self, part: &PartInfo) -> bool {
            (self.want)(part)
        }
        fn body(&mut self, part: &PartInfo, decoded: &[u8]) {
            (self.sink)(part, decoded)
        }
        fn part_end(&mut self, _part: &PartInfo, _end: &PartEnd) {}
    }
    walk(raw, &mut Extract { want, sink })
}

#[cfg(test)]
mod tests;
