//! Streaming MIME scan, for messages too large to parse in memory: one
//! pass over the spooled file with bounded memory, yielding the top-level
//! header block and, for every leaf part, its header block, the size and
//! SHA-256 of its decoded body, and (for text parts) the start of the
//! decoded body.
//!
//! It follows mailparse's rules, so the record of a large message matches
//! what the in-memory path (`record::build`) would give: a boundary is a
//! line *starting* with `--boundary` (the rest of that line is ignored), an
//! outer boundary ends every inner part, the line break before a boundary
//! belongs to the boundary, bodies are decoded per Content-Transfer-Encoding
//! (base64 with ASCII whitespace removed, quoted-printable in robust mode,
//! anything else as is). Known difference: malformed base64 is judged per
//! 64 KiB block instead of as a whole.

use std::io::BufRead;

use mailparse::{MailHeaderMap, ParsedContentType};
use sha2::{Digest, Sha256};

/// Longest header block kept for one part; the rest is not parsed.
const MAX_HEADER_BLOCK: usize = 1024 * 1024;
/// Read segment: lines longer than this are handled in pieces.
const SEGMENT: usize = 64 * 1024;
/// Nesting limit, as mailparse's recursion limit.
const MAX_DEPTH: usize = 100;

/// One leaf part.
#[derive(Debug, Default)]
pub struct Leaf {
    /// The part's header block as written (possibly empty).
    pub headers: Vec<u8>,
    /// Content type as mailparse would see it (a default when absent).
    pub ctype: ParsedContentType,
    /// Size and SHA-256 (hex) of the decoded body.
    pub size: u64,
    pub sha256: String,
    /// Start of the decoded body, kept for text parts only.
    pub text: Option<Vec<u8>>,
    /// Why the body could not be decoded, if it could not.
    pub error: Option<String>,
}

#[derive(Debug, Default)]
pub struct Scan {
    pub top_headers: Vec<u8>,
    pub leaves: Vec<Leaf>,
}

/// Scans a whole message. `keep_text`: how many decoded bytes of each
/// text part to keep.
pub fn scan(r: &mut impl BufRead, keep_text: usize) -> std::io::Result<Scan> {
    let mut lines = Lines::new(r);
    let mut out = Scan::default();
    let (top, rest) = read_headers(&mut lines, &[])?;
    out.top_headers = top.clone();
    // Boundaries of the open multiparts, outermost first.
    let mut stack: Vec<Frame> = Vec::new();
    let mut leaf = start_part(top, rest, false, &mut stack, keep_text);
    // After a boundary line: skip the rest of it.
    let mut skipping = false;
    while let Some(seg) = lines.next()? {
        if seg.line_start {
            skipping = false;
        }
        if skipping {
            continue;
        }
        if seg.line_start
            && seg.bytes.starts_with(b"--")
            && let Some(level) = stack
                .iter()
                .position(|f| seg.bytes.starts_with(f.delimiter.as_bytes()))
        {
            if let Some(l) = leaf.take() {
                out.leaves.push(l.finish(false));
            }
            let after = seg.bytes[stack[level].delimiter.len()..].to_vec();
            let digest = stack[level].digest;
            let first = !stack[level].opened;
            stack[level].opened = true;
            // mailparse works on the multipart's own slice, which ends at
            // the next outer boundary, less the line break before it. What
            // is left of that slice after this delimiter decides: fewer
            // than two bytes (or "--") closes the multipart, and a part
            // follows only if a line break does.
            let next = lines.peek_kind(&stack[..level])?;
            let eol = if after.ends_with(b"\r\n") {
                2
            } else {
                usize::from(after.ends_with(b"\n"))
            };
            let (left, newline) = match next {
                Next::OuterBoundary => (after.len() - eol, false),
                Next::Eof => (after.len(), seg.line_end),
                Next::Other => (usize::MAX, true),
            };
            let close = !first && (after.starts_with(b"--") || left < 2);
            skipping = !seg.line_end;
            if close {
                // Close delimiter: that multipart is over; what follows is
                // its epilogue, ignored until an outer boundary.
                close_frames(&mut stack, level, &mut out);
                continue;
            }
            close_frames(&mut stack, level + 1, &mut out);
            if !newline {
                continue;
            }
            if !seg.line_end {
                // Skip the rest of the boundary line first.
                while let Some(s) = lines.next()? {
                    if s.line_end {
                        break;
                    }
                }
                skipping = false;
            }
            let (headers, rest) = read_headers(&mut lines, &stack)?;
            leaf = start_part(headers, rest, digest, &mut stack, keep_text);
            continue;
        }
        if let Some(l) = leaf.as_mut() {
            l.feed(&seg);
        }
    }
    if let Some(l) = leaf.take() {
        // No closing boundary: the part runs to the end, line break and all.
        out.leaves.push(l.finish(true));
    }
    close_frames(&mut stack, 0, &mut out);
    Ok(out)
}

struct Frame {
    delimiter: String,
    digest: bool,
    /// Its first delimiter was seen (mailparse takes the first one as an
    /// opening delimiter even when it ends in "--").
    opened: bool,
    /// The leaf it becomes if it ends unopened.
    empty: Option<Leaf>,
}

/// Ends the multiparts above `keep` levels; one that never saw its
/// boundary becomes an empty leaf, as in mailparse.
fn close_frames(stack: &mut Vec<Frame>, keep: usize, out: &mut Scan) {
    while stack.len() > keep {
        if let Some(f) = stack.pop()
            && !f.opened
            && let Some(l) = f.empty
        {
            out.leaves.push(l);
        }
    }
}

/// What follows the current segment.
enum Next {
    Eof,
    /// A line starting with the delimiter of an enclosing multipart.
    OuterBoundary,
    Other,
}

/// A piece of one line: at most [`SEGMENT`] bytes.
struct Seg {
    bytes: Vec<u8>,
    line_start: bool,
    line_end: bool,
}

struct Lines<'a, R: BufRead> {
    r: &'a mut R,
    at_start: bool,
    /// Segments pushed back (header reading looks one line ahead).
    back: Vec<Seg>,
}

impl<'a, R: BufRead> Lines<'a, R> {
    fn new(r: &'a mut R) -> Self {
        Lines {
            r,
            at_start: true,
            back: Vec::new(),
        }
    }

    /// Looks at the next segment without taking it.
    fn peek_kind(&mut self, outer: &[Frame]) -> std::io::Result<Next> {
        let Some(seg) = self.next()? else {
            return Ok(Next::Eof);
        };
        let kind = if seg.line_start
            && outer
                .iter()
                .any(|f| seg.bytes.starts_with(f.delimiter.as_bytes()))
        {
            Next::OuterBoundary
        } else {
            Next::Other
        };
        self.back.push(seg);
        Ok(kind)
    }

    fn next(&mut self) -> std::io::Result<Option<Seg>> {
        if let Some(s) = self.back.pop() {
            return Ok(Some(s));
        }
        let buf = self.r.fill_buf()?;
        if buf.is_empty() {
            return Ok(None);
        }
        let take = buf.len().min(SEGMENT);
        let (n, line_end) = match buf[..take].iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (take, false),
        };
        let seg = Seg {
            bytes: buf[..n].to_vec(),
            line_start: self.at_start,
            line_end,
        };
        self.r.consume(n);
        self.at_start = line_end;
        Ok(Some(seg))
    }
}

/// Reads a header block up to and including the empty line. Returns the
/// block and the segments that follow it but that mailparse would not take
/// as headers (to be fed to the body).
fn read_headers<R: BufRead>(
    lines: &mut Lines<'_, R>,
    stack: &[Frame],
) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut block = Vec::new();
    while let Some(seg) = lines.next()? {
        // A boundary ends the part, headers and all (mailparse cuts the
        // part out first, then parses its headers).
        if seg.line_start
            && stack
                .iter()
                .any(|f| seg.bytes.starts_with(f.delimiter.as_bytes()))
        {
            lines.back.push(seg);
            break;
        }
        let blank = seg.line_start && seg.line_end && (seg.bytes == b"\r\n" || seg.bytes == b"\n");
        if blank {
            block.extend_from_slice(&seg.bytes);
            break;
        }
        if block.len() + seg.bytes.len() > MAX_HEADER_BLOCK {
            lines.back.push(seg);
            break;
        }
        block.extend_from_slice(&seg.bytes);
    }
    // mailparse decides where the headers really end (a line that is not
    // a header ends them early); the rest is body. A block it cannot parse
    // fails the whole message, as it does for mailparse.
    let end = match mailparse::parse_headers(&block) {
        Ok((_, ix)) => ix.min(block.len()),
        Err(e) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                e.to_string(),
            ));
        }
    };
    let rest = block.split_off(end);
    Ok((block, rest))
}

/// Opens a part: pushes its boundary when it is a multipart, or returns the
/// leaf that will take its body.
fn start_part(
    headers: Vec<u8>,
    rest: Vec<u8>,
    in_digest: bool,
    stack: &mut Vec<Frame>,
    keep_text: usize,
) -> Option<LeafState> {
    let parsed = mailparse::parse_headers(&headers)
        .map(|(h, _)| {
            let ctype = h.get_first_value("Content-Type");
            let cte = h
                .get_first_value("Content-Transfer-Encoding")
                .map(|s| s.to_lowercase());
            (ctype, cte)
        })
        .unwrap_or_default();
    let ctype = match parsed.0 {
        Some(v) => mailparse::parse_content_type(&v),
        None => {
            let mut d = ParsedContentType::default();
            if in_digest {
                d.mimetype = "message/rfc822".into();
            }
            d
        }
    };
    if ctype.mimetype.starts_with("multipart")
        && let Some(b) = ctype.params.get("boundary")
        && stack.len() < MAX_DEPTH
    {
        // Should its boundary never appear, mailparse takes the multipart
        // as a leaf with an empty body.
        let empty = Leaf {
            headers: headers.clone(),
            ctype: ParsedContentType {
                mimetype: ctype.mimetype.clone(),
                charset: ctype.charset.clone(),
                params: ctype.params.clone(),
            },
            sha256: hex::encode(Sha256::digest(b"")),
            text: None,
            ..Default::default()
        };
        stack.push(Frame {
            delimiter: format!("--{b}"),
            digest: ctype.mimetype == "multipart/digest",
            opened: false,
            empty: Some(empty),
        });
        // The preamble (and `rest`) before the first boundary is not a part.
        return None;
    }
    let keep = (ctype.mimetype.starts_with("text/") && keep_text > 0).then_some(keep_text);
    let mut leaf = LeafState {
        leaf: Leaf {
            headers,
            ctype,
            ..Default::default()
        },
        decoder: Decoder::new(parsed.1.as_deref()),
        hasher: Sha256::new(),
        keep,
        pending_eol: Vec::new(),
    };
    if !rest.is_empty() {
        for line in rest.split_inclusive(|&b| b == b'\n') {
            leaf.feed(&Seg {
                bytes: line.to_vec(),
                line_start: true,
                line_end: line.ends_with(b"\n"),
            });
        }
    }
    Some(leaf)
}

struct LeafState {
    leaf: Leaf,
    decoder: Decoder,
    hasher: Sha256,
    keep: Option<usize>,
    /// The line break of the last line, held back: before a boundary it
    /// belongs to the boundary.
    pending_eol: Vec<u8>,
}

impl LeafState {
    fn feed(&mut self, seg: &Seg) {
        let mut bytes = seg.bytes.as_slice();
        let eol: &[u8] = if seg.line_end {
            if bytes.ends_with(b"\r\n") {
                b"\r\n"
            } else {
                b"\n"
            }
        } else {
            b""
        };
        bytes = &bytes[..bytes.len() - eol.len()];
        if bytes.is_empty() && eol.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending_eol);
        self.push_raw(&pending);
        self.push_raw(bytes);
        self.pending_eol = eol.to_vec();
    }

    fn push_raw(&mut self, raw: &[u8]) {
        if raw.is_empty() || self.leaf.error.is_some() {
            return;
        }
        match self.decoder.decode(raw) {
            Ok(out) => self.take(&out),
            Err(e) => self.leaf.error = Some(e),
        }
    }

    fn take(&mut self, decoded: &[u8]) {
        self.hasher.update(decoded);
        self.leaf.size += decoded.len() as u64;
        if let Some(cap) = self.keep {
            let text = self.leaf.text.get_or_insert_with(Vec::new);
            let room = cap.saturating_sub(text.len());
            text.extend_from_slice(&decoded[..room.min(decoded.len())]);
        }
    }

    fn finish(mut self, to_end: bool) -> Leaf {
        if to_end {
            let pending = std::mem::take(&mut self.pending_eol);
            self.push_raw(&pending);
        }
        if self.leaf.error.is_none() {
            match self.decoder.flush() {
                Ok(out) => self.take(&out),
                Err(e) => self.leaf.error = Some(e),
            }
        }
        if self.keep.is_some() {
            self.leaf.text.get_or_insert_with(Vec::new);
        }
        self.leaf.sha256 = hex::encode(self.hasher.finalize());
        self.leaf
    }
}

enum Decoder {
    Identity,
    Base64(Base64),
    /// Quoted-printable input not yet decoded (up to a line end).
    QuotedPrintable(Vec<u8>),
}

impl Decoder {
    fn new(cte: Option<&str>) -> Decoder {
        match cte {
            Some("base64") => Decoder::Base64(Base64::default()),
            Some("quoted-printable") => Decoder::QuotedPrintable(Vec::new()),
            _ => Decoder::Identity,
        }
    }

    fn decode(&mut self, raw: &[u8]) -> Result<Vec<u8>, String> {
        match self {
            Decoder::Identity => Ok(raw.to_vec()),
            Decoder::Base64(b) => Ok(b.decode(raw)),
            Decoder::QuotedPrintable(held) => {
                held.extend_from_slice(raw);
                // Decode whole lines only: a soft break (`=` at the end of a
                // line) must be seen with its line end.
                let end = match held.iter().rposition(|&b| b == b'\n') {
                    Some(end) => end,
                    // A "line" this long is not quoted-printable as sent by
                    // anyone honest; decode it as it is to bound memory.
                    None if held.len() > 4 * SEGMENT => held.len() - 1,
                    None => return Ok(Vec::new()),
                };
                let lines: Vec<u8> = held.drain(..=end).collect();
                quoted_printable::decode(&lines, quoted_printable::ParseMode::Robust)
                    .map_err(|e| mailparse::MailParseError::from(e).to_string())
            }
        }
    }

    fn flush(&mut self) -> Result<Vec<u8>, String> {
        match self {
            Decoder::Identity => Ok(Vec::new()),
            Decoder::Base64(b) => b.flush(),
            Decoder::QuotedPrintable(held) => {
                quoted_printable::decode(std::mem::take(held), quoted_printable::ParseMode::Robust)
                    .map_err(|e| mailparse::MailParseError::from(e).to_string())
            }
        }
    }
}

/// Streaming base64 exactly as mailparse decodes a whole body: ASCII
/// whitespace removed, then `BASE64_MIME_PERMISSIVE`. Decoded in blocks of
/// whole 4-character groups; errors are reported at the end as the
/// whole-body decode would: a bad total length first, else the first bad
/// symbol, at its position in the whole body.
#[derive(Default)]
struct Base64 {
    /// Characters not yet decoded (less than a block).
    held: Vec<u8>,
    /// Characters decoded (or skipped after an error) so far.
    done: usize,
    error: Option<data_encoding::DecodeError>,
}

impl Base64 {
    fn decode(&mut self, raw: &[u8]) -> Vec<u8> {
        self.held
            .extend(raw.iter().copied().filter(|b| !b.is_ascii_whitespace()));
        if self.held.len() < SEGMENT {
            return Vec::new();
        }
        let n = self.held.len() / 4 * 4;
        let block: Vec<u8> = self.held.drain(..n).collect();
        self.block(&block)
    }

    fn block(&mut self, block: &[u8]) -> Vec<u8> {
        let offset = self.done;
        self.done += block.len();
        if self.error.is_some() {
            return Vec::new();
        }
        match data_encoding::BASE64_MIME_PERMISSIVE.decode(block) {
            Ok(v) => v,
            Err(mut e) => {
                e.position += offset;
                self.error = Some(e);
                Vec::new()
            }
        }
    }

    fn flush(&mut self) -> Result<Vec<u8>, String> {
        let total = self.done + self.held.len();
        let fail = |e: data_encoding::DecodeError| mailparse::MailParseError::from(e).to_string();
        data_encoding::BASE64_MIME_PERMISSIVE
            .decode_len(total)
            .map_err(fail)?;
        let rest = std::mem::take(&mut self.held);
        let out = self.block(&rest);
        match self.error.take() {
            Some(e) => Err(fail(e)),
            None => Ok(out),
        }
    }
}
