//! The record's visitor of the MIME walk: the first plain and HTML text
//! bodies become the body text, every other leaf is a file (the walker
//! decides: `PartInfo::is_attachment`, with a made-up name such as
//! `part-1.2.zip` when it has none) listed with its names, size and
//! SHA-256.

use kiroku_common::mime::words::decode_text;
use kiroku_common::mime::{Disposition, PartEnd, PartInfo, Visitor};
use kiroku_proto::Attachment;

use super::{MAX_BODY_TEXT, html_to_text};

/// Decoded text bytes kept per text part (charsets can take several bytes
/// per character).
const TEXT_KEEP: usize = 4 * MAX_BODY_TEXT;

/// What the content gives the record.
#[derive(Default)]
pub(super) struct Parsed {
    pub from: Vec<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub reply_to: Vec<String>,
    pub subject: String,
    pub date: String,
    pub sent_at_ms: i64,
    pub message_id: String,
    pub body_text: String,
    pub body_truncated: String,
    pub attachments: Vec<Attachment>,
    pub warnings: Vec<String>,
    pub decode_warnings: Vec<String>,
}

/// A text body: its start (up to [`TEXT_KEEP`] decoded bytes) and its
/// whole decoded size.
struct Text {
    kept: String,
    size: u64,
}

#[derive(Default)]
pub(super) struct Record {
    /// Start of the decoded bodies of the text parts being read, by leaf
    /// index (a uuencoded block nests inside its text part).
    open: Vec<(usize, Vec<u8>)>,
    plain: Option<Text>,
    html: Option<Text>,
    attachments: Vec<Attachment>,
}

/// A body part, not a file: text of the body when it is text.
fn is_body_text(part: &PartInfo) -> bool {
    !part.is_attachment && part.content_type.starts_with("text/")
}

impl Visitor for Record {
    fn part_start(&mut self, part: &PartInfo) -> bool {
        if is_body_text(part) {
            let taken = match part.content_type.as_str() {
                "text/html" => self.html.is_some(),
                _ => self.plain.is_some(),
            };
            if !taken {
                self.open.push((part.index, Vec::new()));
            }
            return !taken;
        }
        // Files are decoded for their size and hash.
        part.is_attachment
    }

    fn body(&mut self, part: &PartInfo, decoded: &[u8]) {
        if let Some((_, kept)) = self.open.iter_mut().find(|(i, _)| *i == part.index) {
            let room = TEXT_KEEP.saturating_sub(kept.len());
            kept.extend_from_slice(&decoded[..room.min(decoded.len())]);
        }
    }

    fn part_end(&mut self, part: &PartInfo, end: &PartEnd) {
        if is_body_text(part) {
            let Some(at) = self.open.iter().position(|(i, _)| *i == part.index) else {
                return;
            };
            let (_, kept) = self.open.remove(at);
            // Python's `email` and mailparse read a missing charset as
            // US-ASCII (which WHATWG labels as windows-1252).
            let charset = match part.charset.as_str() {
                "" => "us-ascii",
                cs => cs,
            };
            let text = Text {
                kept: decode_text(&kept, charset),
                size: end.size,
            };
            if part.content_type == "text/html" {
                self.html.get_or_insert(text);
            } else {
                self.plain.get_or_insert(text);
            }
            return;
        }
        if !part.is_attachment {
            return;
        }
        self.attachments.push(Attachment {
            filename: part.filename.clone().unwrap_or_default(),
            content_type: part.content_type.clone(),
            size: end.size,
            sha256: end.sha256.clone(),
            inline: part.disposition == Disposition::Inline,
            name_candidates: part.name_candidates.clone(),
            transfer_encoding: part.transfer_encoding.clone(),
        });
    }
}

impl Record {
    /// The body text (plain preferred over HTML) and the files.
    pub(super) fn finish(self) -> Parsed {
        let mut p = Parsed {
            attachments: self.attachments,
            ..Default::default()
        };
        // A text part longer than was kept: its decoded size says how
        // long the body was.
        let (body, whole) = match (self.plain, self.html) {
            (Some(t), _) => (t.kept, t.size),
            (None, Some(h)) => (html_to_text(&h.kept), h.size),
            (None, None) => (String::new(), 0),
        };
        let cut = whole > TEXT_KEEP as u64;
        if body.len() > MAX_BODY_TEXT || cut {
            let total = if cut { whole } else { body.len() as u64 };
            let mut end = body.len().min(MAX_BODY_TEXT);
            while !body.is_char_boundary(end) {
                end -= 1;
            }
            p.body_text = body[..end].to_owned();
            p.body_truncated = format!("body text cut at {MAX_BODY_TEXT} of {total} bytes");
        } else {
            p.body_text = body;
        }
        p
    }
}
