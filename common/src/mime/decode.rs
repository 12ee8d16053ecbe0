//! Streaming body decoders, lenient the way mail clients are: base64 that
//! skips characters outside its alphabet and decodes a last group without
//! its `=` padding, quoted-printable in robust mode, uuencode. Each takes
//! input in pieces of any size and gives the same output as one call with
//! the whole body (the differential tests feed them in varied pieces).
//!
//! The base64 decoder reads like CPython's `binascii.a2b_base64` in
//! non-strict mode, which Python's `email` package falls back to for
//! damaged parts (`email._encoded_words.decode_b`): unknown characters are
//! skipped, a last group without padding is decoded. It departs from it
//! twice: when the line after a complete `=` padding is base64 again, it
//! is decoded too (Python stops at the padding, so a sender could hide a
//! second stream, a whole second file, behind one `=`; text that is not
//! base64, such as a signature, still ends the data), and where Python
//! gives up (one character left over) it
//! drops that character, as mail clients do, instead of returning the
//! encoded text. data-encoding, which mailparse uses, rejects the whole
//! part on one stray character; base64 0.22's decoders work on complete
//! input only.

/// Which decoding a part needs, from its Content-Transfer-Encoding.
pub fn kind(cte: &str) -> Kind {
    match cte {
        "base64" => Kind::Base64,
        "quoted-printable" => Kind::QuotedPrintable,
        "x-uuencode" | "uuencode" | "uue" | "x-uue" => Kind::Uuencode,
        _ => Kind::Identity,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Identity,
    Base64,
    QuotedPrintable,
    Uuencode,
}

/// A body decoder in progress.
pub enum Decoder {
    Identity,
    Base64(Base64),
    /// Quoted-printable input not yet decoded (up to a line end).
    QuotedPrintable(Vec<u8>),
    Uuencode(Uu),
}

/// Longest quoted-printable line held before it is decoded as it is.
const QP_HOLD: usize = 256 * 1024;

impl Decoder {
    pub fn new(kind: Kind) -> Decoder {
        match kind {
            Kind::Identity => Decoder::Identity,
            Kind::Base64 => Decoder::Base64(Base64::default()),
            Kind::QuotedPrintable => Decoder::QuotedPrintable(Vec::new()),
            Kind::Uuencode => Decoder::Uuencode(Uu::new(true)),
        }
    }

    /// Decodes a piece of the body into `out`.
    pub fn decode(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        match self {
            Decoder::Identity => out.extend_from_slice(raw),
            Decoder::Base64(b) => b.decode(raw, out),
            Decoder::QuotedPrintable(held) => {
                held.extend_from_slice(raw);
                // Decode whole lines only: a soft break (`=` at the end of
                // a line) must be seen with its line end.
                let end = match held.iter().rposition(|&b| b == b'\n') {
                    Some(end) => end,
                    // A "line" this long is not quoted-printable as anyone
                    // honest sends it; decode it as it is to bound memory.
                    None if held.len() > QP_HOLD => held.len() - 1,
                    None => return,
                };
                let lines: Vec<u8> = held.drain(..=end).collect();
                qp(&lines, out);
            }
            Decoder::Uuencode(u) => u.decode(raw, out),
        }
    }

    /// Ends the body: what is left, and the repairs made.
    pub fn finish(&mut self, out: &mut Vec<u8>, notes: &mut Vec<String>) {
        match self {
            Decoder::Identity => {}
            Decoder::Base64(b) => b.finish(out, notes),
            Decoder::QuotedPrintable(held) => qp(&std::mem::take(held), out),
            Decoder::Uuencode(u) => u.finish(out, notes),
        }
    }
}

fn qp(lines: &[u8], out: &mut Vec<u8>) {
    match quoted_printable::decode(lines, quoted_printable::ParseMode::Robust) {
        Ok(v) => out.extend_from_slice(&v),
        // Robust mode does not fail; should it, the text is kept as is.
        Err(_) => out.extend_from_slice(lines),
    }
}

/// Streaming lenient base64.
#[derive(Default)]
pub struct Base64 {
    quad: [u8; 4],
    quad_pos: usize,
    pads: usize,
    state: B64State,
    invalid: u64,
    /// Characters decoded after a complete padding.
    after_pad: u64,
    /// Characters ignored after the data ended.
    ignored: u64,
}

#[derive(Default)]
enum B64State {
    #[default]
    Data,
    /// After a complete padding: the line being read decides whether the
    /// data goes on (another base64 stream) or is over.
    Tail(Vec<u8>),
    Ended,
}

/// Longest line looked at after a padding before it is judged.
const B64_TAIL: usize = 1024;

/// The value of each base64 character; 0xFF for anything else.
const SEXTETS: [u8; 256] = {
    let mut t = [0xFFu8; 256];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut i = 0;
    while i < 64 {
        t[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    t
};

fn sextet(b: u8) -> Option<u8> {
    match SEXTETS[usize::from(b)] {
        0xFF => None,
        v => Some(v),
    }
}

fn is_white(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

impl Base64 {
    pub fn decode(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        out.reserve(raw.len() / 4 * 3 + 3);
        let mut i = 0;
        while i < raw.len() {
            // Fast path: whole groups of four alphabet characters.
            if matches!(self.state, B64State::Data) && self.quad_pos == 0 {
                while let Some(g) = raw.get(i..i + 4) {
                    let (a, b, c, d) = (
                        SEXTETS[usize::from(g[0])],
                        SEXTETS[usize::from(g[1])],
                        SEXTETS[usize::from(g[2])],
                        SEXTETS[usize::from(g[3])],
                    );
                    if (a | b | c | d) & 0x80 != 0 {
                        break;
                    }
                    out.extend_from_slice(&[
                        (a << 2) | (b >> 4),
                        (b << 4) | (c >> 2),
                        (c << 6) | d,
                    ]);
                    self.pads = 0;
                    i += 4;
                }
                if i >= raw.len() {
                    break;
                }
            }
            let b = raw[i];
            i += 1;
            match &mut self.state {
                B64State::Data => self.data_byte(b, out),
                B64State::Tail(line) => {
                    if b != b'\n' {
                        line.push(b);
                    }
                    if b == b'\n' || line.len() >= B64_TAIL {
                        let line = std::mem::take(line);
                        self.tail_line(&line, out);
                    }
                }
                B64State::Ended => {
                    if !is_white(b) {
                        self.ignored += 1;
                    }
                }
            }
        }
    }

    fn data_byte(&mut self, b: u8, out: &mut Vec<u8>) {
        if b == b'=' {
            if self.quad_pos >= 2 {
                self.pads += 1;
                if self.quad_pos + self.pads >= 4 {
                    self.partial(out);
                    self.pads = 0;
                    self.state = B64State::Tail(Vec::new());
                }
            }
            return;
        }
        let Some(v) = sextet(b) else {
            if !is_white(b) {
                self.invalid += 1;
            }
            return;
        };
        self.quad[self.quad_pos] = v;
        self.quad_pos += 1;
        if self.quad_pos == 4 {
            let q = self.quad;
            out.push((q[0] << 2) | (q[1] >> 4));
            out.push((q[1] << 4) | (q[2] >> 2));
            out.push((q[2] << 6) | q[3]);
            self.quad_pos = 0;
            self.pads = 0;
        }
    }

    /// A line after a complete padding: base64 again (only alphabet
    /// characters and `=`) resumes the data; anything else ends it.
    fn tail_line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        let text: Vec<u8> = line.iter().copied().filter(|&b| !is_white(b)).collect();
        if text.is_empty() {
            return;
        }
        if text.iter().all(|&b| b == b'=' || sextet(b).is_some()) {
            self.state = B64State::Data;
            self.after_pad += text.len() as u64;
            for &b in &text {
                self.data_byte(b, out);
            }
        } else {
            self.state = B64State::Ended;
            self.ignored += text.len() as u64;
        }
    }

    /// The bytes of an incomplete last group (2 or 3 characters).
    fn partial(&mut self, out: &mut Vec<u8>) {
        let q = self.quad;
        if self.quad_pos >= 2 {
            out.push((q[0] << 2) | (q[1] >> 4));
        }
        if self.quad_pos >= 3 {
            out.push((q[1] << 4) | (q[2] >> 2));
        }
        self.quad_pos = 0;
    }

    pub fn finish(&mut self, out: &mut Vec<u8>, notes: &mut Vec<String>) {
        if let B64State::Tail(line) = &mut self.state {
            let line = std::mem::take(line);
            self.tail_line(&line, out);
        }
        if self.invalid > 0 {
            notes.push(format!(
                "base64: {} character(s) outside the alphabet skipped",
                self.invalid
            ));
        }
        if self.after_pad > 0 {
            notes.push(format!(
                "base64: a second stream after an `=` padding decoded too ({} characters)",
                self.after_pad
            ));
        }
        if self.ignored > 0 {
            notes.push(format!(
                "base64: {} character(s) of text after the data ignored",
                self.ignored
            ));
        }
        match self.quad_pos {
            0 => {}
            1 => notes.push("base64: 1 dangling character at the end dropped".into()),
            _ => {
                notes.push("base64: `=` padding missing at the end; decoded without".into());
                self.partial(out);
            }
        }
    }
}

/// Streaming uudecoding: lines after `begin <mode> <name>` up to `end`.
pub struct Uu {
    /// Part of a line not yet complete.
    line: Vec<u8>,
    state: UuState,
    /// The name on the `begin` line.
    pub name: Option<String>,
    /// Lines that are not uuencode inside the data (skipped).
    bad: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UuState {
    BeforeBegin,
    Data,
    Ended,
}

/// Longest line kept while looking for a line end.
const UU_LINE: usize = 64 * 1024;

impl Uu {
    /// `look_for_begin`: a whole `x-uuencode` part (data starts after its
    /// `begin` line); false for a block whose `begin` line was already seen.
    pub fn new(look_for_begin: bool) -> Uu {
        Uu {
            line: Vec::new(),
            state: if look_for_begin {
                UuState::BeforeBegin
            } else {
                UuState::Data
            },
            name: None,
            bad: 0,
        }
    }

    /// True once the `end` line was seen.
    pub fn ended(&self) -> bool {
        self.state == UuState::Ended
    }

    pub fn decode(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        for &b in raw {
            if b == b'\n' {
                let line = std::mem::take(&mut self.line);
                self.line_done(&line, out);
            } else if self.line.len() < UU_LINE {
                self.line.push(b);
            }
        }
    }

    /// One line, without its line break. Returns false when the line is
    /// not uuencode data (the block is over).
    pub fn line_done(&mut self, line: &[u8], out: &mut Vec<u8>) -> bool {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match self.state {
            UuState::Ended => true,
            UuState::BeforeBegin => {
                if let Some(name) = begin_line(line) {
                    self.name = Some(name);
                    self.state = UuState::Data;
                }
                true
            }
            UuState::Data => {
                if trim_end(line) == b"end" {
                    self.state = UuState::Ended;
                    return true;
                }
                match uu_line(line) {
                    Some(bytes) => {
                        out.extend_from_slice(&bytes);
                        true
                    }
                    None => {
                        self.bad += 1;
                        false
                    }
                }
            }
        }
    }

    pub fn finish(&mut self, out: &mut Vec<u8>, notes: &mut Vec<String>) {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, out);
        }
        match self.state {
            UuState::BeforeBegin => notes.push("uuencode: no `begin` line; nothing decoded".into()),
            UuState::Data => notes.push("uuencode: no `end` line".into()),
            UuState::Ended => {}
        }
        if self.bad > 0 {
            notes.push(format!(
                "uuencode: {} line(s) that are not uuencode skipped",
                self.bad
            ));
        }
    }
}

fn trim_end(b: &[u8]) -> &[u8] {
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(0, |e| e + 1);
    &b[..end]
}

/// `begin <octal mode> <name>` → the name (as Python's `_decode_uu` takes
/// it: the mode must be octal).
pub fn begin_line(line: &[u8]) -> Option<String> {
    let rest = line.strip_prefix(b"begin ")?;
    let sp = rest.iter().position(|&b| b == b' ')?;
    let mode = &rest[..sp];
    if mode.is_empty() || mode.len() > 4 || !mode.iter().all(|b| (b'0'..=b'7').contains(b)) {
        return None;
    }
    let name = trim_end(&rest[sp + 1..]);
    if name.is_empty() {
        return None;
    }
    Some(match std::str::from_utf8(name) {
        Ok(s) => s.to_owned(),
        Err(_) => name.iter().map(|&b| char::from(b)).collect(),
    })
}

/// One uuencoded line → its bytes; None when it is not one (a character
/// outside the uuencode range, or far fewer characters than its length
/// says). Short lines are padded with zero bits as `binascii.a2b_uu` does.
fn uu_line(line: &[u8]) -> Option<Vec<u8>> {
    let line = trim_end(line);
    let Some((&first, data)) = line.split_first() else {
        // An empty line inside the data: no bytes (some encoders).
        return Some(Vec::new());
    };
    if !(32..=96).contains(&first) {
        return None;
    }
    let n = usize::from((first - 32) & 63);
    if n == 0 {
        return Some(Vec::new());
    }
    let need = n.div_ceil(3) * 4;
    if data.iter().any(|&c| !(32..=96).contains(&c)) || data.len() + 4 < need {
        return None;
    }
    let mut out = Vec::with_capacity(n);
    for g in 0..n.div_ceil(3) {
        let s = |i: usize| data.get(g * 4 + i).map_or(0, |&c| (c - 32) & 63);
        let (a, b, c, d) = (s(0), s(1), s(2), s(3));
        for byte in [(a << 2) | (b >> 4), (b << 4) | (c >> 2), (c << 6) | d] {
            if out.len() < n {
                out.push(byte);
            }
        }
    }
    Some(out)
}
