//! The walker's engine: lines in, parts out.
//!
//! Structure follows Python's `email.feedparser`: a boundary line is
//! `--boundary`, optionally `--`, then only white space; the innermost
//! multipart whose boundary a line matches takes it, and a boundary of an
//! enclosing multipart ends every part inside it; the line break before a
//! boundary belongs to the boundary; a part without a closing boundary
//! runs to the end of the input. Lines are cut into segments of at most
//! [`SEGMENT`] bytes at the same places whatever the reader's buffer size,
//! so the result never depends on how the input was chunked.

use std::io::BufRead;

use sha2::{Digest, Sha256};

use super::decode::{self, Decoder};
use super::headers::{self, Header};
use super::params::{self, Structured};
use super::words::decode_words_lenient;
use super::{Disposition, Limits, PartEnd, PartInfo, Visitor, Walk};

mod uuscan;
use uuscan::UuScan;

/// Longest piece of a line handled at once.
const SEGMENT: usize = 64 * 1024;
/// Body bytes gathered before they are decoded and delivered.
const RAW_BATCH: usize = 32 * 1024;
/// Distinct names kept per part (see [`PartInfo::name_candidates`]).
pub(super) const MAX_NAME_CANDIDATES: usize = 16;
/// Warnings kept per walk (see [`Ctx::warn`]).
pub(super) const MAX_WARNINGS: usize = 200;

pub(super) fn run<R: BufRead, V: Visitor>(
    mut r: R,
    v: &mut V,
    limits: Limits,
) -> std::io::Result<Walk> {
    let mut e = Engine {
        ctx: Ctx {
            v,
            out: Walk::default(),
            next_index: 0,
            max_parts: limits.max_parts,
            dropped_warnings: 0,
            plain_taken: false,
            html_taken: false,
        },
        limits,
        stack: Vec::new(),
        mode: Mode::Headers(Collect::new(String::new(), 0, false, true)),
    };
    let mut buf = Vec::with_capacity(4096);
    let mut at_start = true;
    loop {
        buf.clear();
        let mut line_end = false;
        loop {
            let avail = r.fill_buf()?;
            if avail.is_empty() {
                break;
            }
            let take = avail.len().min(SEGMENT - buf.len());
            match memchr::memchr(b'\n', &avail[..take]) {
                Some(i) => {
                    buf.extend_from_slice(&avail[..=i]);
                    r.consume(i + 1);
                    line_end = true;
                    break;
                }
                None => {
                    buf.extend_from_slice(&avail[..take]);
                    r.consume(take);
                    if buf.len() == SEGMENT {
                        break;
                    }
                }
            }
        }
        if buf.is_empty() {
            break;
        }
        // A last line without a line break is complete too (a closing
        // boundary at the very end of a message often has none).
        let complete = line_end || buf.len() < SEGMENT;
        e.segment(&buf, at_start, line_end, complete);
        at_start = line_end;
    }
    e.eof();
    if e.ctx.dropped_warnings > 0 {
        let more = e.ctx.dropped_warnings;
        e.ctx.out.warnings.push(format!("… and {more} more"));
    }
    // Leaves end in nesting order (a uuencoded block before its text
    // part); the result lists them in the order they started.
    e.ctx.out.parts.sort_by_key(|(p, _)| p.index);
    Ok(e.ctx.out)
}

struct Ctx<'v, V> {
    v: &'v mut V,
    out: Walk,
    next_index: usize,
    max_parts: usize,
    /// Warnings past [`MAX_WARNINGS`], counted only.
    dropped_warnings: usize,
    /// The body's text/plain and text/html leaves were met.
    plain_taken: bool,
    html_taken: bool,
}

impl<V> Ctx<'_, V> {
    /// Decides whether a leaf is the message's body text or a file: the
    /// first text/plain and the first text/html leaf that are not files
    /// by their headers are the body; every other leaf is a file (review
    /// finding 11: an unnamed `application/zip`, an inline zip without a
    /// name, a disposition `attachmnt` were recorded nowhere). A file
    /// without a name gets one made from its place and type,
    /// `part-1.2.zip`, the way Thunderbird shows "Part 1.2"; its
    /// `name_candidates` stay empty, which says no name was given.
    /// Returns whether the leaf is a file by its own header fields (a
    /// text part that is not, body or not, is scanned for uuencoded files
    /// as clients show them inline).
    fn file_or_body(&mut self, info: &mut PartInfo) -> bool {
        let by_headers = info.is_attachment;
        if info.transfer_encoding == "uuencode" {
            // Named by its `begin` line, when it has one (`Leaf::undefer`).
            info.is_attachment = true;
            return by_headers;
        }
        // A multipart read as a leaf (no boundary, or nested too deep) is
        // structure, not a file, unless its headers make it one.
        if !info.is_attachment && !info.content_type.starts_with("multipart/") {
            let taken = match info.content_type.as_str() {
                "text/plain" => Some(&mut self.plain_taken),
                "text/html" => Some(&mut self.html_taken),
                _ => None,
            };
            if let Some(taken) = taken
                && !*taken
            {
                *taken = true;
                return by_headers;
            }
            info.is_attachment = true;
        }
        if info.is_attachment && info.filename.is_none() {
            info.filename = Some(generated_name(&info.path, &info.content_type));
        }
        by_headers
    }

    /// Notes a repair or oddity, up to [`MAX_WARNINGS`]; past that only
    /// counts it (the count is reported at the end of the walk), so a
    /// message of many damaged parts cannot make its record larger than
    /// the collector accepts.
    pub(super) fn warn(&mut self, w: String) {
        if self.out.warnings.len() < MAX_WARNINGS {
            self.out.warnings.push(w);
        } else {
            self.dropped_warnings += 1;
        }
    }

    /// The index of a new leaf, or None past [`Limits::max_parts`] (the
    /// first refusal is noted).
    fn take_index(&mut self, who: &str) -> Option<usize> {
        if self.next_index > self.max_parts {
            return None;
        }
        let i = self.next_index;
        self.next_index += 1;
        if i == self.max_parts {
            let w = format!(
                "{who}: more than {} parts; the rest is not read",
                self.max_parts
            );
            self.warn(w);
            return None;
        }
        Some(i)
    }
}

struct Engine<'v, V> {
    ctx: Ctx<'v, V>,
    limits: Limits,
    stack: Vec<Frame>,
    mode: Mode,
}

/// An open multipart.
struct Frame {
    /// `--` and the boundary.
    delimiter: Vec<u8>,
    digest: bool,
    path: String,
    depth: usize,
    /// Parts opened so far.
    count: usize,
    /// The multipart as a leaf, should its boundary never appear.
    info: PartInfo,
}

enum Mode {
    Headers(Collect),
    Leaf(Box<Leaf>),
    /// A preamble or an epilogue: ignored.
    Skip,
}

/// A header block being collected.
struct Collect {
    lines: Vec<Vec<u8>>,
    size: usize,
    path: String,
    depth: usize,
    digest: bool,
    top: bool,
}

impl Collect {
    fn new(path: String, depth: usize, digest: bool, top: bool) -> Collect {
        Collect {
            lines: Vec::new(),
            size: 0,
            path,
            depth,
            digest,
            top,
        }
    }
}

/// `--b` / `--b--` with only white space after it: Some(closing).
fn boundary_match(line: &[u8], delimiter: &[u8]) -> Option<bool> {
    let rest = line.strip_prefix(delimiter)?;
    let (close, rest) = match rest.strip_prefix(b"--") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    rest.iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .then_some(close)
}

/// The display name of a file given none: `part-` and its path, and an
/// extension from its type where the type is a common one (a display name
/// only; a table of the types mail carries is enough, no crate needed).
fn generated_name(path: &str, content_type: &str) -> String {
    let ext = match content_type {
        "application/zip" | "application/x-zip-compressed" => ".zip",
        "application/pdf" => ".pdf",
        "application/x-7z-compressed" => ".7z",
        "application/gzip" | "application/x-gzip" => ".gz",
        "application/x-tar" => ".tar",
        "application/x-rar-compressed" | "application/vnd.rar" => ".rar",
        "application/ms-tnef" | "application/vnd.ms-tnef" => ".dat",
        "application/msword" => ".doc",
        "application/vnd.ms-excel" => ".xls",
        "application/vnd.ms-powerpoint" => ".ppt",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => ".docx",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" => ".xlsx",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation" => ".pptx",
        "application/octet-stream" => ".bin",
        "application/pkcs7-mime" | "application/x-pkcs7-mime" => ".p7m",
        "application/pkcs7-signature" | "application/x-pkcs7-signature" => ".p7s",
        "application/pgp-encrypted" | "application/pgp-signature" => ".asc",
        "message/rfc822" => ".eml",
        "text/plain" => ".txt",
        "text/html" => ".html",
        "text/calendar" => ".ics",
        "text/csv" => ".csv",
        "image/png" => ".png",
        "image/jpeg" => ".jpg",
        "image/gif" => ".gif",
        _ => "",
    };
    format!("part-{path}{ext}")
}

fn child_path(parent: &str, n: usize) -> String {
    if parent.is_empty() {
        n.to_string()
    } else {
        format!("{parent}.{n}")
    }
}

/// "part 2 (report.zip)" / "part 1 (text/plain)" / "message
/// (multipart/mixed)" (the message's own header block), for warnings.
fn label(info: &PartInfo) -> String {
    let what = match &info.filename {
        Some(n) => n,
        None => &info.content_type,
    };
    if info.path.is_empty() {
        format!("message ({what})")
    } else {
        format!("part {} ({what})", info.path)
    }
}

impl<V: Visitor> Engine<'_, V> {
    fn segment(&mut self, bytes: &[u8], start: bool, end: bool, complete: bool) {
        // Any length: a boundary longer than RFC 2046's 70 characters, or
        // followed by a thousand spaces, still splits the message for
        // Python's `email` (`[ \t]*$`) and Thunderbird, so it must here;
        // a line is compared in one segment ([`SEGMENT`] bytes).
        if start && complete && bytes.starts_with(b"--") {
            let hit = (0..self.stack.len())
                .rev()
                .find_map(|l| boundary_match(bytes, &self.stack[l].delimiter).map(|c| (l, c)));
            if let Some((level, close)) = hit {
                self.boundary(level, close);
                return;
            }
        }
        match &mut self.mode {
            Mode::Skip => {}
            Mode::Leaf(leaf) => leaf.feed(&mut self.ctx, bytes, end),
            Mode::Headers(c) => {
                let blank = start && end && (bytes == b"\r\n" || bytes == b"\n");
                if blank {
                    self.end_headers(Some(bytes));
                    return;
                }
                match (start, c.lines.last_mut()) {
                    (false, Some(last)) => last.extend_from_slice(bytes),
                    _ => c.lines.push(bytes.to_vec()),
                }
                c.size += bytes.len();
                if c.size > self.limits.max_header_block {
                    let path = c.path.clone();
                    self.ctx.warn(format!(
                        "{}: header block longer than {} bytes; the rest is read as body",
                        if path.is_empty() {
                            "message".to_owned()
                        } else {
                            format!("part {path}")
                        },
                        self.limits.max_header_block
                    ));
                    self.end_headers(None);
                }
            }
        }
    }

    /// Ends whatever is open at this level (a header block, a leaf).
    fn end_current(&mut self, to_end: bool) {
        if matches!(self.mode, Mode::Headers(_)) {
            self.end_headers(None);
        }
        if let Mode::Leaf(leaf) = std::mem::replace(&mut self.mode, Mode::Skip) {
            leaf.end(&mut self.ctx, to_end);
        }
        self.mode = Mode::Skip;
    }

    fn boundary(&mut self, level: usize, close: bool) {
        self.end_current(false);
        self.pop_to(level + 1);
        if close {
            if let Some(f) = self.stack.pop()
                && f.count == 0
            {
                self.ctx.warn(format!(
                    "{}: closing boundary before any part",
                    label(&f.info)
                ));
            }
            self.mode = Mode::Skip;
            return;
        }
        let f = &mut self.stack[level];
        f.count += 1;
        let path = child_path(&f.path, f.count);
        self.mode = Mode::Headers(Collect::new(path, f.depth + 1, f.digest, false));
    }

    /// Closes the multiparts above `keep` levels (ended by an outer
    /// boundary or by the end of input).
    fn pop_to(&mut self, keep: usize) {
        while self.stack.len() > keep {
            let Some(f) = self.stack.pop() else { break };
            if f.count == 0 {
                // Its boundary never appeared: Python's `email` makes it a
                // leaf of its body; its body was the preamble, not kept.
                self.ctx.warn(format!(
                    "{}: boundary {:?} never appears; read as an empty part",
                    label(&f.info),
                    String::from_utf8_lossy(&f.delimiter[2..])
                ));
                let Some(index) = self.ctx.take_index(&label(&f.info)) else {
                    continue;
                };
                let mut info = f.info;
                info.index = index;
                self.ctx.v.part_start(&info);
                let end = PartEnd::default();
                self.ctx.v.part_end(&info, &end);
                self.ctx.out.parts.push((info, end));
            } else {
                self.ctx
                    .warn(format!("{}: no closing boundary", label(&f.info)));
            }
        }
    }

    fn eof(&mut self) {
        self.end_current(true);
        self.pop_to(0);
    }

    /// The header block is complete (`blank`: the blank line that ended
    /// it, if one did): start the part it heads.
    fn end_headers(&mut self, blank: Option<&[u8]>) {
        let Mode::Headers(mut c) = std::mem::replace(&mut self.mode, Mode::Skip) else {
            return;
        };
        let block = headers::parse_block(&c.lines, blank.is_some(), c.top);
        let body_from = c.lines.len() - block.body_lines;
        // Headers that ended before the blank line: that line is body too.
        if block.body_lines > 0
            && let Some(b) = blank
        {
            c.lines.push(b.to_vec());
        }
        let (info, ctype, mut notes) = part_info(block.fields, &c, self.ctx.next_index);
        notes.splice(0..0, block.notes);
        let who = label(&info);
        for n in notes {
            self.ctx.warn(format!("{who}: {n}"));
        }
        if c.top {
            self.ctx.out.top_headers = info.headers.clone();
            self.ctx.v.top_headers(&info.headers);
        }
        if info.content_type.starts_with("multipart/") {
            // RFC 2046's boundary cannot end in white space (white space
            // after it on a delimiter line is transport padding); Python's
            // `email` strips it too, so a line without the trailing
            // spaces still delimits.
            let boundary = ctype
                .param("boundary")
                .unwrap_or_default()
                .trim_end_matches([' ', '\t'])
                .to_owned();
            if let Some(other) = ctype
                .values("boundary")
                .iter()
                .map(|v| v.value.trim_end_matches([' ', '\t']))
                .find(|v| *v != boundary)
            {
                // `boundary="A"; boundary*=''B`: Thunderbird follows the
                // RFC 2231 form (as here), Python's `email` the plain
                // one; a parser that follows the other sees other parts.
                self.ctx.warn(format!(
                    "{who}: conflicting boundary parameters: {boundary:?} followed, \
                     {other:?} ignored (other parsers follow it)"
                ));
            }
            if boundary.is_empty() {
                self.ctx.warn(format!(
                    "{who}: multipart without a boundary; read as one part"
                ));
            } else if c.depth >= self.limits.max_depth {
                self.ctx.warn(format!(
                    "{who}: nested deeper than {}; read as one part",
                    self.limits.max_depth
                ));
            } else {
                // The lines after a header block that ended early are the
                // preamble, ignored like the rest of it.
                self.stack.push(Frame {
                    delimiter: format!("--{boundary}").into_bytes(),
                    digest: info.content_type == "multipart/digest",
                    path: c.path.clone(),
                    depth: c.depth,
                    count: 0,
                    info,
                });
                self.mode = Mode::Skip;
                return;
            }
        }
        let Some(index) = self.ctx.take_index(&who) else {
            return;
        };
        let mut info = info;
        info.index = index;
        if info.path.is_empty() {
            info.path = "1".into();
        }
        // A part with nothing at all (a boundary line right after another)
        // is no file: nothing can hide in it.
        let empty = blank.is_none() && c.lines.is_empty();
        let file_by_headers = if empty {
            false
        } else {
            self.ctx.file_or_body(&mut info)
        };
        let mut leaf = Leaf::start(&mut self.ctx, info, file_by_headers);
        for line in &c.lines[body_from..] {
            let end = line.ends_with(b"\n");
            leaf.feed(&mut self.ctx, line, end);
        }
        self.mode = Mode::Leaf(Box::new(leaf));
    }
}

/// What a part's header fields say about it; notes for `decode_warnings`.
fn part_info(
    fields: Vec<Header>,
    c: &Collect,
    index: usize,
) -> (PartInfo, Structured, Vec<String>) {
    let mut notes = Vec::new();
    for name in [
        "Content-Type",
        "Content-Transfer-Encoding",
        "Content-Disposition",
    ] {
        let values: Vec<Vec<u8>> = headers::all(&fields, name).map(Header::unfolded).collect();
        if values.iter().skip(1).any(|v| *v != values[0]) {
            notes.push(format!(
                "{} conflicting {name} fields; the first is used",
                values.len()
            ));
        }
    }
    let parsed = |name: &str, notes: &mut Vec<String>| {
        headers::first(&fields, name).map(|h| {
            let s = params::parse(&h.unfolded());
            notes.extend(s.notes.iter().map(|n| format!("{name}: {n}")));
            s
        })
    };
    let ctype = parsed("Content-Type", &mut notes).unwrap_or_default();
    let disp = parsed("Content-Disposition", &mut notes);
    let default_type = if c.digest {
        "message/rfc822"
    } else {
        "text/plain"
    };
    let content_type = if ctype.value.contains('/') && !ctype.value.starts_with('/') {
        ctype.value.clone()
    } else {
        if !ctype.value.is_empty() {
            notes.push(format!(
                "Content-Type {:?} is not a MIME type; read as {default_type}",
                ctype.value
            ));
        }
        default_type.to_owned()
    };
    // Clients take the first token of the field (Python's `email` compares
    // the whole value, so `base64; x=y` or `base64 (c)` stay encoded there:
    // an easy way to hide a file from a parser that is not a client).
    let cte = headers::first(&fields, "Content-Transfer-Encoding")
        .map(|h| {
            let raw = String::from_utf8_lossy(&h.unfolded()).to_ascii_lowercase();
            let token: String = raw
                .split(|c: char| c == ';' || c == '(' || c.is_whitespace())
                .find(|t| !t.is_empty())
                .unwrap_or_default()
                .to_owned();
            if token != raw {
                notes.push(format!(
                    "Content-Transfer-Encoding {raw:?} read as {token:?}"
                ));
            }
            token
        })
        .unwrap_or_default();
    let transfer_encoding = match decode::kind(&cte) {
        decode::Kind::Uuencode => "uuencode".to_owned(),
        _ if cte.is_empty() => "7bit".to_owned(),
        _ => cte,
    };
    let disposition = match disp.as_ref().map(|d| d.value.as_str()) {
        None | Some("") => Disposition::None,
        Some("inline") => Disposition::Inline,
        Some("attachment") => Disposition::Attachment,
        Some(_) => Disposition::Other,
    };
    // RFC 2183: an unknown disposition (`attachmnt`) is read as attachment.
    let (candidates, named) = name_candidates(&fields, disp.as_ref(), &ctype);
    let info = PartInfo {
        index,
        path: c.path.clone(),
        depth: c.depth,
        headers: fields,
        content_type,
        charset: ctype.param("charset").unwrap_or_default().to_owned(),
        disposition,
        filename: candidates.first().cloned(),
        name_candidates: candidates,
        transfer_encoding,
        is_attachment: matches!(disposition, Disposition::Attachment | Disposition::Other) || named,
        embedded: false,
    };
    (info, ctype, notes)
}

/// Every name the part was given, in the order a client prefers them (see
/// [`PartInfo::filename`]), decoded, trimmed, without duplicates; and
/// whether any name parameter was there at all (even an empty one).
fn name_candidates(
    fields: &[Header],
    disp: Option<&Structured>,
    ctype: &Structured,
) -> (Vec<String>, bool) {
    // Names from the fields used first, then from conflicting duplicate
    // fields (a decoy a parser reading the last field would show).
    let later = |name: &str| -> Vec<Structured> {
        headers::all(fields, name)
            .skip(1)
            .map(|h| params::parse(&h.unfolded()))
            .collect()
    };
    let later_disp = later("Content-Disposition");
    let later_ctype = later("Content-Type");
    let sources: Vec<(&Structured, &str)> = disp
        .into_iter()
        .map(|d| (d, "filename"))
        .chain([(ctype, "name")])
        .chain(later_disp.iter().map(|d| (d, "filename")))
        .chain(later_ctype.iter().map(|c| (c, "name")))
        .collect();
    let mut candidates = Vec::new();
    let mut named = false;
    for (s, name) in sources {
        for pv in s.values(name) {
            named = true;
            let v = if pv.value.contains("=?") {
                decode_words_lenient(pv.value.as_bytes())
            } else {
                pv.value.clone()
            };
            let v = v.trim().to_owned();
            // Bounded: a field of thousands of `name=` parameters must not
            // cost a comparison with every earlier one for each.
            if !v.is_empty() && candidates.len() < MAX_NAME_CANDIDATES && !candidates.contains(&v) {
                candidates.push(v);
            }
        }
    }
    (candidates, named)
}

/// A leaf whose body is being read.
struct Leaf {
    info: PartInfo,
    want: bool,
    /// Decoded at all (wanted, or scanned for uuencode).
    decode: bool,
    decoder: Decoder,
    hasher: Sha256,
    size: u64,
    /// The line break of the last line, held back: before a boundary it
    /// belongs to the boundary.
    pending_eol: &'static [u8],
    scan: Option<UuScan>,
    /// Body bytes not yet decoded (less than [`RAW_BATCH`]).
    raw: Vec<u8>,
    buf: Vec<u8>,
    /// An `x-uuencode` part: `part_start` waits for its `begin` line,
    /// whose name is one of the part's names.
    deferred: bool,
}

impl Leaf {
    /// `info.index` is already taken ([`Ctx::take_index`]).
    /// `file_by_headers`: its header fields make it a file (see
    /// [`Ctx::file_or_body`]).
    fn start<V: Visitor>(ctx: &mut Ctx<'_, V>, info: PartInfo, file_by_headers: bool) -> Leaf {
        let kind = decode::kind(&info.transfer_encoding);
        let deferred = kind == decode::Kind::Uuencode;
        let want = !deferred && ctx.v.part_start(&info);
        // Plain text is scanned for uuencoded files (`begin 644 name`), as
        // clients such as Thunderbird show them as attachments.
        let scan = (info.content_type == "text/plain"
            && !file_by_headers
            && kind != decode::Kind::Uuencode)
            .then(|| UuScan::new(info.path.clone(), info.depth));
        Leaf {
            decode: want || deferred || scan.is_some(),
            deferred,
            want,
            decoder: Decoder::new(kind),
            hasher: Sha256::new(),
            size: 0,
            pending_eol: b"",
            scan,
            raw: Vec::new(),
            buf: Vec::new(),
            info,
        }
    }

    fn feed<V: Visitor>(&mut self, ctx: &mut Ctx<'_, V>, bytes: &[u8], line_end: bool) {
        if !self.decode {
            return;
        }
        let eol: &'static [u8] = if !line_end {
            b""
        } else if bytes.ends_with(b"\r\n") {
            b"\r\n"
        } else {
            b"\n"
        };
        let body = &bytes[..bytes.len() - eol.len()];
        if body.is_empty() && eol.is_empty() {
            return;
        }
        let pending = std::mem::replace(&mut self.pending_eol, eol);
        self.raw.extend_from_slice(pending);
        self.raw.extend_from_slice(body);
        if self.raw.len() >= RAW_BATCH {
            self.flush_raw(ctx);
        }
    }

    /// Decodes and delivers the body bytes gathered so far (lines are
    /// gathered into batches: one decoder call and one visitor call per
    /// batch instead of per line).
    fn flush_raw<V: Visitor>(&mut self, ctx: &mut Ctx<'_, V>) {
        self.buf.clear();
        self.decoder.decode(&self.raw, &mut self.buf);
        self.raw.clear();
        self.deliver(ctx);
    }

    /// Starts a deferred `x-uuencode` part once its `begin` line was read
    /// (or at its end without one).
    fn undefer<V: Visitor>(&mut self, ctx: &mut Ctx<'_, V>, at_end: bool) {
        let name = match &self.decoder {
            Decoder::Uuencode(u) => u.name.clone(),
            _ => None,
        };
        if !self.deferred || (name.is_none() && !at_end) {
            return;
        }
        self.deferred = false;
        if let Some(n) = name {
            let n = n.trim().to_owned();
            if !n.is_empty() && !self.info.name_candidates.contains(&n) {
                self.info.name_candidates.push(n.clone());
            }
            if self.info.filename.is_none() {
                self.info.filename = Some(n);
            }
            self.info.is_attachment = true;
        }
        if self.info.filename.is_none() {
            self.info.filename = Some(generated_name(&self.info.path, &self.info.content_type));
        }
        self.want = ctx.v.part_start(&self.info);
    }

    fn deliver<V: Visitor>(&mut self, ctx: &mut Ctx<'_, V>) {
        if self.deferred {
            self.undefer(ctx, false);
        }
        if self.buf.is_empty() {
            return;
        }
        self.hasher.update(&self.buf);
        self.size += self.buf.len() as u64;
        if self.want {
            ctx.v.body(&self.info, &self.buf);
        }
        if let Some(s) = self.scan.as_mut() {
            s.feed(ctx, &self.buf);
        }
    }

    fn end<V: Visitor>(mut self, ctx: &mut Ctx<'_, V>, to_end: bool) {
        let mut notes = Vec::new();
        if self.decode {
            if to_end {
                // No closing boundary: the part runs to the end, line
                // break and all.
                let pending = std::mem::take(&mut self.pending_eol);
                self.raw.extend_from_slice(pending);
            }
            self.flush_raw(ctx);
            self.buf.clear();
            self.decoder.finish(&mut self.buf, &mut notes);
            self.deliver(ctx);
            self.undefer(ctx, true);
            if let Some(s) = self.scan.take() {
                s.finish(ctx);
            }
        }
        let who = label(&self.info);
        for n in notes {
            ctx.warn(format!("{who}: {n}"));
        }
        let end = if self.decode {
            PartEnd {
                decoded: true,
                size: self.size,
                sha256: hex::encode(self.hasher.finalize()),
            }
        } else {
            PartEnd::default()
        };
        ctx.v.part_end(&self.info, &end);
        ctx.out.parts.push((self.info, end));
    }
}
