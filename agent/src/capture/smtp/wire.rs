//! SMTP framing, strict in both directions so the relay can never be used
//! for SMTP smuggling: command lines must end in CRLF and contain no other
//! CR and no NUL;
//! message data ends only at `CRLF.CRLF`; bare CR, bare LF and NUL inside
//! data are detected (and, in the opt-in normalising mode, bare CR and bare
//! LF become CRLF in the content); dot-stuffing is removed on the way in
//! and applied again on the way out, so the upstream only ever sees clean
//! CRLF lines.

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

pub use crate::config::BareLineEndings;

/// Longest command line accepted (RFC 5321 says 512; extensions need more).
pub const MAX_COMMAND_LINE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection closed")]
    Closed,
    #[error("line longer than {0} bytes")]
    TooLong(usize),
    #[error("line not terminated by CRLF (bare LF)")]
    BareLf,
    #[error("bare CR inside a line")]
    BareCr,
    #[error("NUL byte in command")]
    Nul,
    #[error("malformed reply from upstream: {0:?}")]
    BadReply(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Reads one CRLF-terminated line, without the CRLF. A line holding
/// another CR is consumed to its CRLF and refused (`BareCr`): some
/// servers take a bare CR as a line end, so passing it on would let one
/// line smuggle a second command past the relay.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Vec<u8>, WireError> {
    let mut line = Vec::with_capacity(128);
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Err(WireError::Closed);
        }
        let (chunk, found) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        if line.len() + chunk.len() > max + 2 {
            let n = chunk.len();
            r.consume(n);
            return Err(WireError::TooLong(max));
        }
        line.extend_from_slice(chunk);
        let n = chunk.len();
        r.consume(n);
        if found {
            break;
        }
    }
    line.pop(); // '\n'
    if line.pop() != Some(b'\r') {
        return Err(WireError::BareLf);
    }
    if line.contains(&0) {
        return Err(WireError::Nul);
    }
    if line.contains(&b'\r') {
        return Err(WireError::BareCr);
    }
    Ok(line)
}

/// A complete (possibly multi-line) SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// Each line without CRLF, including the code and separator.
    pub lines: Vec<String>,
}

impl Reply {
    pub fn new(code: u16, text: &str) -> Reply {
        Reply {
            code,
            lines: vec![format!("{code} {text}")],
        }
    }

    /// A multi-line reply from its texts (without codes).
    pub fn multi(code: u16, texts: &[String]) -> Reply {
        let n = texts.len();
        Reply {
            code,
            lines: texts
                .iter()
                .enumerate()
                .map(|(i, t)| format!("{code}{}{t}", if i + 1 == n { ' ' } else { '-' }))
                .collect(),
        }
    }

    /// The reply as sent on the wire.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for l in &self.lines {
            out.extend_from_slice(l.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// All lines joined by newlines, for the record.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }
}

/// Reads one reply from the upstream.
pub async fn read_reply<R: AsyncBufRead + Unpin>(r: &mut R) -> Result<Reply, WireError> {
    let mut lines: Vec<String> = Vec::new();
    loop {
        let raw = read_line(r, MAX_COMMAND_LINE).await?;
        let line = String::from_utf8_lossy(&raw).into_owned();
        let b = line.as_bytes();
        if b.len() < 3 || !b[..3].iter().all(u8::is_ascii_digit) {
            return Err(WireError::BadReply(line));
        }
        let code: u16 = line[..3]
            .parse()
            .map_err(|_| WireError::BadReply(line.clone()))?;
        let last = match b.get(3) {
            None | Some(b' ') => true,
            Some(b'-') => false,
            Some(_) => return Err(WireError::BadReply(line)),
        };
        if let Some(first) = lines.first()
            && !line.starts_with(first_code(first).as_str())
        {
            return Err(WireError::BadReply(line));
        }
        lines.push(line);
        if last {
            return Ok(Reply { code, lines });
        }
        if lines.len() > 100 {
            return Err(WireError::BadReply("more than 100 reply lines".into()));
        }
    }
}

fn first_code(line: &str) -> String {
    line.chars().take(3).collect()
}

/// What was wrong with message data, if anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DataFlaws {
    pub bare_cr: bool,
    pub bare_lf: bool,
    pub nul: bool,
}

impl DataFlaws {
    pub fn any(&self) -> bool {
        self.bare_cr || self.bare_lf || self.nul
    }

    /// Whether the message must be refused under `mode`: NUL always, bare
    /// CR / bare LF unless they were normalised.
    pub fn refused(&self, mode: BareLineEndings) -> bool {
        match mode {
            BareLineEndings::Reject => self.any(),
            BareLineEndings::Normalise => self.nul,
        }
    }

    /// What was converted to CRLF under `mode` ("bare CR", "bare LF",
    /// "bare CR, bare LF"), empty when the content is the client's own.
    pub fn normalised(&self, mode: BareLineEndings) -> String {
        if mode == BareLineEndings::Reject {
            return String::new();
        }
        let kinds = [(self.bare_cr, "bare CR"), (self.bare_lf, "bare LF")];
        kinds
            .iter()
            .filter(|(seen, _)| *seen)
            .map(|(_, name)| *name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Message data read up to `CRLF.CRLF`, with dot-stuffing removed.
#[derive(Debug)]
pub struct Data {
    pub bytes: Vec<u8>,
    /// Total size of the message, also when more than the limit was sent.
    pub size: u64,
    pub too_big: bool,
    pub flaws: DataFlaws,
}

#[derive(Clone, Copy)]
enum St {
    LineStart,
    Normal,
    Cr,
    Dot,
    DotCr,
}

/// Incremental DATA reader: hands out the content in chunks as it arrives
/// (dot-unstuffed, at most one read buffer each), so a message of any size
/// passes with bounded memory. Only `CRLF.CRLF` ends the data; bare CR,
/// bare LF and NUL are flagged, never taken as line ends.
///
/// With [`BareLineEndings::Normalise`] a bare CR or bare LF is handed out
/// as CRLF, and nothing else changes: the framing (where the data ends,
/// which dots are stuffing) is the same in both modes, decided on the
/// client's bytes. So a "line" that began after a bare line ending is not
/// a line start for SMTP: its leading dot is content (`a\n.\nb` becomes
/// `a\r\n.\r\nb`, whose "." line the [`Stuffer`] sends on as ".."),
/// and it can never end the data.
pub struct DataReader {
    st: St,
    size: u64,
    limit: u64,
    mode: BareLineEndings,
    flaws: DataFlaws,
    done: bool,
}

impl DataReader {
    /// `limit`: bytes past it are counted but not handed out.
    pub fn new(limit: u64, mode: BareLineEndings) -> DataReader {
        DataReader {
            st: St::LineStart,
            size: 0,
            limit,
            mode,
            flaws: DataFlaws::default(),
            done: false,
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn too_big(&self) -> bool {
        self.size > self.limit
    }

    pub fn flaws(&self) -> DataFlaws {
        self.flaws
    }

    /// Whether what was read so far means the message must be refused
    /// (and nothing more of it forwarded).
    pub fn refused(&self) -> bool {
        self.flaws.refused(self.mode)
    }

    /// What was converted to CRLF so far; empty when nothing was.
    pub fn normalised(&self) -> String {
        self.flaws.normalised(self.mode)
    }

    /// The next chunk of content (possibly empty), or `None` once the
    /// terminating `CRLF.CRLF` has been read. Bytes after the terminator
    /// stay in `r` (pipelined commands).
    pub async fn next<R: AsyncBufRead + Unpin>(
        &mut self,
        r: &mut R,
    ) -> Result<Option<Vec<u8>>, WireError> {
        if self.done {
            return Ok(None);
        }
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Err(WireError::Closed);
        }
        let mut out = Vec::with_capacity(buf.len() + 2);
        let mut i = 0;
        while i < buf.len() {
            // Fast path: inside a line, copy everything up to the next byte
            // that matters (CR, LF, NUL) in one go.
            if matches!(self.st, St::Normal) {
                let end = memchr::memchr3(b'\r', b'\n', 0, &buf[i..]).map_or(buf.len(), |k| i + k);
                if end > i {
                    self.push(&mut out, &buf[i..end]);
                    i = end;
                    continue;
                }
            }
            let b = buf[i];
            i += 1;
            if b == 0 {
                self.flaws.nul = true;
            }
            self.st = match (self.st, b) {
                (St::LineStart, b'.') => St::Dot,
                (St::Dot, b'\r') => St::DotCr,
                (St::DotCr, b'\n') => {
                    self.done = true;
                    break;
                }
                (St::DotCr, _) => {
                    // ".\r" followed by something else: a bare CR after a
                    // stuffed dot. Keep the CR as content and go on.
                    self.bare_cr(&mut out);
                    self.normal(b, &mut out)
                }
                (St::Cr, b'\n') => {
                    self.push(&mut out, b"\r\n");
                    St::LineStart
                }
                (St::Cr, _) => {
                    self.bare_cr(&mut out);
                    self.normal(b, &mut out)
                }
                // A leading dot is removed (dot-unstuffing); the byte after
                // it is content.
                (St::Dot, _) | (St::LineStart, _) | (St::Normal, _) => self.normal(b, &mut out),
            };
        }
        let consumed = i;
        r.consume(consumed);
        if self.done && out.is_empty() {
            return Ok(None);
        }
        Ok(Some(out))
    }

    fn push(&mut self, out: &mut Vec<u8>, b: &[u8]) {
        // Content up to the limit is handed out; past it, only counted
        // (the message is refused, so a partial tail does not matter).
        let room = self.limit.saturating_sub(self.size);
        let keep = (b.len() as u64).min(room) as usize;
        out.extend_from_slice(&b[..keep]);
        self.size += b.len() as u64;
    }

    /// A CR not followed by LF: flagged, and content as itself or (when
    /// normalising) as CRLF.
    fn bare_cr(&mut self, out: &mut Vec<u8>) {
        self.flaws.bare_cr = true;
        self.push_line_end(out, b"\r");
    }

    fn push_line_end(&mut self, out: &mut Vec<u8>, bare: &[u8]) {
        match self.mode {
            BareLineEndings::Reject => self.push(out, bare),
            BareLineEndings::Normalise => self.push(out, b"\r\n"),
        }
    }

    fn normal(&mut self, b: u8, out: &mut Vec<u8>) -> St {
        match b {
            b'\r' => St::Cr,
            b'\n' => {
                // A bare LF does not start a line: only CRLF does, so
                // "\n.\r\n" can never end the data, also when the LF is
                // handed out as CRLF.
                self.flaws.bare_lf = true;
                self.push_line_end(out, b"\n");
                St::Normal
            }
            _ => {
                self.push(out, &[b]);
                St::Normal
            }
        }
    }
}

/// Reads DATA content until the only valid terminator, `CRLF.CRLF`, into
/// memory. Bytes past `limit` are counted but not kept.
pub async fn read_data<R: AsyncBufRead + Unpin>(
    r: &mut R,
    limit: u64,
    mode: BareLineEndings,
) -> Result<Data, WireError> {
    let mut d = DataReader::new(limit, mode);
    let mut bytes = Vec::new();
    while let Some(chunk) = d.next(r).await? {
        bytes.extend_from_slice(&chunk);
    }
    Ok(Data {
        too_big: d.too_big(),
        bytes,
        size: d.size(),
        flaws: d.flaws(),
    })
}

/// Incremental writer of DATA content: dot-stuffs clean CRLF lines chunk by
/// chunk, then ends with `CRLF.CRLF`.
#[derive(Debug)]
pub struct Stuffer {
    at_line_start: bool,
    /// Last two bytes written, to know whether the content ended in CRLF.
    tail: [u8; 2],
    empty: bool,
}

impl Default for Stuffer {
    fn default() -> Self {
        Stuffer {
            at_line_start: true,
            tail: [0; 2],
            empty: true,
        }
    }
}

impl Stuffer {
    pub async fn write<W: AsyncWrite + Unpin>(
        &mut self,
        w: &mut W,
        data: &[u8],
    ) -> std::io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let mut start = 0;
        // Write in runs, inserting an extra '.' before every line that
        // starts with one. Line starts are found with memchr.
        let mut line_start = if self.at_line_start { Some(0) } else { None };
        let mut search = 0;
        loop {
            if let Some(ls) = line_start
                && data.get(ls) == Some(&b'.')
            {
                w.write_all(&data[start..ls]).await?;
                w.write_all(b".").await?;
                start = ls;
            }
            match memchr::memchr(b'\n', &data[search..]) {
                Some(k) => {
                    line_start = Some(search + k + 1);
                    search += k + 1;
                }
                None => break,
            }
        }
        self.at_line_start = data.last() == Some(&b'\n');
        w.write_all(&data[start..]).await?;
        self.empty = false;
        match data {
            [.., a, b] => self.tail = [*a, *b],
            [b] => self.tail = [self.tail[1], *b],
            [] => {}
        }
        Ok(())
    }

    /// Ends the content (adding a final CRLF if it lacked one) with `.`.
    pub async fn finish<W: AsyncWrite + Unpin>(&mut self, w: &mut W) -> std::io::Result<()> {
        if !self.empty && self.tail != *b"\r\n" {
            w.write_all(b"\r\n").await?;
        }
        w.write_all(b".\r\n").await?;
        w.flush().await
    }
}

/// Writes `data` (clean CRLF lines) as SMTP DATA content: dot-stuffed and
/// terminated with `CRLF.CRLF`.
pub async fn write_data<W: AsyncWrite + Unpin>(w: &mut W, data: &[u8]) -> std::io::Result<()> {
    let mut s = Stuffer::default();
    s.write(w, data).await?;
    s.finish(w).await
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::AsyncReadExt;

    const REJECT: BareLineEndings = BareLineEndings::Reject;
    const NORMALISE: BareLineEndings = BareLineEndings::Normalise;

    async fn data(input: &[u8]) -> Result<Data, WireError> {
        let mut r = tokio::io::BufReader::with_capacity(3, input);
        read_data(&mut r, 1 << 20, REJECT).await
    }

    #[tokio::test]
    async fn clean_data_and_unstuffing() {
        let d = data(b"Subject: a\r\n\r\n..dot\r\n.x\r\nend\r\n.\r\nMAIL FROM:<x>\r\n")
            .await
            .expect("data");
        assert_eq!(d.bytes, b"Subject: a\r\n\r\n.dot\r\nx\r\nend\r\n");
        assert!(!d.flaws.any());
        assert_eq!(data(b".\r\n").await.expect("empty").bytes, b"");
    }

    /// The published end-of-data variants of SMTP smuggling.
    const VARIANTS: &[&[u8]] = &[
        b"\n.\n",
        b"\r.\r",
        b"\r.\n",
        b"\n.\r",
        b"\n.\r\n",
        b"\r\n.\n",
        b"\r.\r\n",
        b"\r\n.\r",
        b"\r\n\x00.\r\n",
        b"\r\r\n",
    ];

    #[tokio::test]
    async fn smuggling_variants_never_end_data() {
        // Each of these must be read as content (flagged), with the message
        // ending only at the final CRLF.CRLF, so the "smuggled" command is
        // never seen as a command.
        for v in VARIANTS {
            let mut input = b"a".to_vec();
            input.extend_from_slice(v);
            input.extend_from_slice(b"MAIL FROM:<evil>\r\n\r\n.\r\n");
            let d = data(&input).await.expect("data");
            assert!(d.flaws.any(), "{v:?} not flagged");
            assert!(
                d.bytes.windows(9).any(|w| w == b"MAIL FROM"),
                "{v:?}: smuggled command must stay inside the data"
            );
        }
    }

    #[tokio::test]
    async fn stuffing_round_trip() {
        for body in [
            &b""[..],
            b"x\r\n",
            b".\r\n",
            b"..\r\n.a\r\nb.\r\n",
            b"no newline",
        ] {
            let mut wire = Vec::new();
            write_data(&mut wire, body).await.expect("write");
            let back = data(&wire).await.expect("read");
            let mut want = body.to_vec();
            if !want.is_empty() && !want.ends_with(b"\r\n") {
                want.extend_from_slice(b"\r\n");
            }
            assert_eq!(back.bytes, want, "{body:?}");
        }
    }

    /// Position just after the first end-of-data in `wire` (its start
    /// counts as a line start), if any.
    fn first_end(wire: &[u8]) -> Option<usize> {
        if wire.starts_with(b".\r\n") {
            return Some(3);
        }
        wire.windows(5)
            .position(|w| w == b"\r\n.\r\n")
            .map(|i| i + 5)
    }

    /// No NUL; CR and LF only as CRLF.
    fn crlf_only(b: &[u8]) -> bool {
        !b.contains(&0)
            && b.iter().enumerate().all(|(i, &c)| match c {
                b'\r' => b.get(i + 1) == Some(&b'\n'),
                b'\n' => i > 0 && b[i - 1] == b'\r',
                _ => true,
            })
    }

    /// What one read of `input` in `mode` gave, read as the session does:
    /// content, flaws, what the relay forwarded (chunks through a
    /// `Stuffer` while the message is not refused, then `finish`) and the
    /// bytes left after the end-of-data.
    #[derive(Debug, PartialEq)]
    struct Relayed {
        content: Vec<u8>,
        refused: bool,
        normalised: String,
        forwarded: Vec<u8>,
        rest: Vec<u8>,
    }

    async fn relay<R: AsyncBufRead + Unpin>(mut r: R, mode: BareLineEndings) -> Relayed {
        let mut d = DataReader::new(1 << 20, mode);
        let (mut content, mut forwarded) = (Vec::new(), Vec::new());
        let mut stuffer = Stuffer::default();
        while let Some(chunk) = d.next(&mut r).await.expect("data") {
            content.extend_from_slice(&chunk);
            if !d.refused() {
                stuffer.write(&mut forwarded, &chunk).await.expect("write");
            }
        }
        if !d.refused() {
            stuffer.finish(&mut forwarded).await.expect("finish");
        }
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).await.expect("rest");
        Relayed {
            content,
            refused: d.refused(),
            normalised: d.normalised(),
            forwarded,
            rest,
        }
    }

    #[tokio::test]
    async fn normalising_keeps_every_variant_inside_one_message() {
        // (variant, content, what was normalised). Dots are unstuffed only
        // at a line begun by a real CRLF, as in reject mode; a dot after a
        // bare line ending is content, so a "." line appears that the
        // writer must stuff.
        let evil = "MAIL FROM:<evil>\r\n";
        let dot_line = format!("a\r\n.\r\n{evil}");
        let empty_line = format!("a\r\n\r\n{evil}");
        let cases: Vec<(&[u8], String, &str)> = vec![
            (b"\n.\n", dot_line.clone(), "bare LF"),
            (b"\r.\r", dot_line.clone(), "bare CR"),
            (b"\r.\n", dot_line.clone(), "bare CR, bare LF"),
            (b"\n.\r", dot_line.clone(), "bare CR, bare LF"),
            (b"\n.\r\n", dot_line.clone(), "bare LF"),
            (b"\r\n.\n", empty_line.clone(), "bare LF"),
            (b"\r.\r\n", dot_line.clone(), "bare CR"),
            (b"\r\n.\r", empty_line.clone(), "bare CR"),
            (b"\r\r\n", empty_line.clone(), "bare CR"),
        ];
        assert_eq!(cases.len() + 1, VARIANTS.len(), "all but the NUL one");
        for (v, content, what) in &cases {
            let mut input = b"a".to_vec();
            input.extend_from_slice(v);
            input.extend_from_slice(b"MAIL FROM:<evil>\r\n.\r\nQUIT\r\n");
            let want_content = content.as_bytes();
            let mut want_wire = Vec::new();
            write_data(&mut want_wire, want_content)
                .await
                .expect("write");
            // Every two-chunk split, and every read size from one byte.
            let mut runs = Vec::new();
            for at in 0..=input.len() {
                runs.push(relay((&input[..at]).chain(&input[at..]), NORMALISE).await);
            }
            for cap in [1, 2, 3, 4096] {
                let r = tokio::io::BufReader::with_capacity(cap, input.as_slice());
                runs.push(relay(r, NORMALISE).await);
            }
            for (i, got) in runs.iter().enumerate() {
                let at = format!("{v:?}, run {i}");
                assert_eq!(got.content, want_content, "{at}");
                assert!(!got.refused, "{at}");
                assert_eq!(got.normalised, *what, "{at}");
                assert_eq!(
                    got.rest, b"QUIT\r\n",
                    "{at}: ends at the real CRLF.CRLF only"
                );
                // The upstream gets clean CRLF lines, the "." line stuffed,
                // and exactly one end-of-data: the last line.
                assert_eq!(got.forwarded, want_wire, "{at}");
                assert!(crlf_only(&got.forwarded), "{at}");
                assert_eq!(first_end(&got.forwarded), Some(got.forwarded.len()), "{at}");
                if content == &dot_line {
                    assert!(
                        got.forwarded.windows(6).any(|w| w == b"\r\n..\r\n"),
                        "{at}: the normalised \".\" line must go out stuffed"
                    );
                }
            }
            // Read back by a strict reader (the upstream's view): one
            // flawless message with the smuggled command inside.
            let mut up = want_wire.as_slice();
            let back = read_data(&mut up, 1 << 20, REJECT)
                .await
                .expect("read back");
            assert!(!back.flaws.any() && up.is_empty(), "{v:?}");
            assert_eq!(back.bytes, want_content, "{v:?}");
        }
    }

    #[tokio::test]
    async fn nul_is_refused_when_normalising_too() {
        let input = b"a\r\n\x00.\r\nb\nc\r\n.\r\nQUIT\r\n";
        for at in 0..=input.len() {
            let got = relay((&input[..at]).chain(&input[at..]), NORMALISE).await;
            assert!(got.refused, "split {at}");
            assert_eq!(got.rest, b"QUIT\r\n", "split {at}");
            // Forwarding stops at the chunk that showed the NUL, and what
            // went out never ends the data.
            assert_eq!(first_end(&got.forwarded), None, "split {at}");
            assert!(crlf_only(&got.forwarded), "split {at}");
        }
        // In reject mode every variant is refused, and nothing after the
        // flaw is forwarded.
        for v in VARIANTS {
            let mut input = b"a".to_vec();
            input.extend_from_slice(v);
            input.extend_from_slice(b"x\r\n.\r\n");
            let got = relay(input.as_slice(), REJECT).await;
            assert!(got.refused && got.normalised.is_empty(), "{v:?}");
            assert_eq!(first_end(&got.forwarded), None, "{v:?}");
        }
    }

    #[tokio::test]
    async fn clean_data_is_the_same_in_both_modes() {
        let input = b"Subject: a\r\n\r\n..dot\r\n.x\r\nend\r\n.\r\nMAIL FROM:<x>\r\n";
        let (a, b) = (
            relay(&input[..], REJECT).await,
            relay(&input[..], NORMALISE).await,
        );
        assert_eq!(a, b);
        assert!(a.normalised.is_empty() && !a.refused);
    }

    /// The plain byte-at-a-time reading of RFC 5321 DATA the fast path
    /// must agree with: (content, flaws) or None when no terminator. A
    /// bare CR or LF is content as itself, or as CRLF when normalising.
    fn reference(input: &[u8], mode: BareLineEndings) -> Option<(Vec<u8>, bool)> {
        let (mut out, mut flawed, mut at_start) = (Vec::new(), false, true);
        let mut i = 0;
        while i < input.len() {
            if at_start && input[i..].starts_with(b".\r\n") {
                return Some((out, flawed));
            }
            if at_start && input[i] == b'.' {
                i += 1;
                at_start = false;
                continue;
            }
            let b = input[i];
            if b == b'\r' && input.get(i + 1) == Some(&b'\n') {
                out.extend_from_slice(b"\r\n");
                i += 2;
                at_start = true;
                continue;
            }
            if b == b'\r' && i + 1 == input.len() {
                return None;
            }
            flawed |= b == 0 || b == b'\r' || b == b'\n';
            match (b, mode) {
                (b'\r' | b'\n', BareLineEndings::Normalise) => out.extend_from_slice(b"\r\n"),
                _ => out.push(b),
            }
            at_start = false;
            i += 1;
        }
        None
    }

    #[tokio::test]
    async fn fast_path_agrees_with_the_plain_reading() {
        let alphabet = [b'a', b'.', b'\r', b'\n', 0];
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            let mut input = Vec::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 24) as usize;
            let mut x = seed;
            for _ in 0..len {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                input.push(alphabet[(x >> 33) as usize % alphabet.len()]);
            }
            input.extend_from_slice(b"\r\n.\r\n");
            for mode in [REJECT, NORMALISE] {
                let want = reference(&input, mode);
                for cap in [1, 2, 3, 64] {
                    let mut r = tokio::io::BufReader::with_capacity(cap, input.as_slice());
                    let got = read_data(&mut r, 1 << 20, mode)
                        .await
                        .ok()
                        .map(|d| (d.bytes, d.flaws.any()));
                    assert_eq!(got, want, "{input:?} cap {cap} {mode:?}");
                }
            }
        }
    }

    #[tokio::test]
    async fn chunked_stuffing_matches_whole() {
        let body = b"a\r\n.b\r\n..\r\n.\r\nlast".to_vec();
        let mut whole = Vec::new();
        write_data(&mut whole, &body).await.expect("write");
        for split in 0..body.len() {
            let mut out = Vec::new();
            let mut s = Stuffer::default();
            s.write(&mut out, &body[..split]).await.expect("write");
            s.write(&mut out, &body[split..]).await.expect("write");
            s.finish(&mut out).await.expect("finish");
            assert_eq!(out, whole, "split at {split}");
        }
    }

    #[tokio::test]
    async fn replies_and_lines() {
        let mut r: &[u8] = b"250-a.example\r\n250-SIZE 100\r\n250 8BITMIME\r\n550 nope\r\n";
        let rep = read_reply(&mut r).await.expect("reply");
        assert_eq!(rep.code, 250);
        assert_eq!(rep.lines.len(), 3);
        assert_eq!(read_reply(&mut r).await.expect("reply").code, 550);
        let mut bad: &[u8] = b"HELO x\n";
        assert!(matches!(
            read_line(&mut bad, 100).await,
            Err(WireError::BareLf)
        ));
        let mut nul: &[u8] = b"HE\0LO\r\n";
        assert!(matches!(
            read_line(&mut nul, 100).await,
            Err(WireError::Nul)
        ));
        // A bare CR inside a line is refused, and the line is consumed up to
        // its CRLF so the next one reads cleanly.
        for bad in [
            b"RCPT TO:<a@x>\rRCPT TO:<b@y>\r\nNOOP\r\n".as_slice(),
            b"NOOP\r\r\nNOOP\r\n",
            b"\rNOOP\r\nNOOP\r\n",
        ] {
            let mut r = bad;
            assert!(
                matches!(read_line(&mut r, 100).await, Err(WireError::BareCr)),
                "{bad:?}"
            );
            assert_eq!(read_line(&mut r, 100).await.expect("next line"), b"NOOP");
        }
    }
}
