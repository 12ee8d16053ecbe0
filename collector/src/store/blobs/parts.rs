//! Attachments stored once: a raw message that carries large base64 parts
//! is kept as a *manifest* — its bytes with each such part replaced by a
//! reference to the part's decoded content, stored as its own blob under
//! its SHA-256 (the hash the record already gives the attachment). The same
//! file mailed a hundred times is then one blob and a hundred small
//! manifests, and the raw message still comes back byte-identical.
//!
//! Only what re-encodes exactly is split: a run of CRLF-terminated lines of
//! one length `L` (a multiple of 4) of canonical base64, the last line
//! possibly shorter or padded. Re-encoding the decoded bytes in lines of
//! `L` reproduces the run bit for bit (`split` checks it, and `put` checks
//! the whole reconstruction against the message's hash before anything is
//! renamed into place); anything else stays literal. The scan knows nothing
//! of MIME structure, so it cannot be misled by a malformed one: a header
//! or boundary line is never base64 of the run's length (`-`, `:` and space
//! are not in the alphabet).
//!
//! Manifest format (then zstd-compressed as a whole):
//! `KRM1` then segments, each `0x01 | u64 len | bytes` (literal) or
//! `0x02 | sha256 (32) | u64 decoded length | u32 line length` (a part).

use std::io::Read;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

pub const MAGIC: &[u8; 4] = b"KRM1";
const LITERAL: u8 = 1;
const PART: u8 = 2;

/// Parts smaller than this (decoded) stay inside the message: a separate
/// file costs more than it could save.
pub const MIN_PART: usize = 64 * 1024;

/// One piece of a split message.
#[derive(Debug, PartialEq, Eq)]
pub enum Seg {
    /// `data[start..end]` kept as is.
    Literal { start: usize, end: usize },
    /// `data[start..end]` is base64 of `decoded` in lines of `line_len`
    /// characters, each followed by CRLF.
    Part {
        start: usize,
        end: usize,
        line_len: usize,
        decoded: Vec<u8>,
    },
}

/// The base64 alphabet (without `=`) as a table: the scan tests every
/// byte of every candidate line; as a chain of comparisons it was the
/// largest single cost of storing 1 MB mails (BENCHMARKS.md).
const B64: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric() || b == b'+' || b == b'/';
        i += 1;
    }
    t
};

fn b64_char(b: u8) -> bool {
    B64[b as usize]
}

/// A full line of a run: `len` alphabet characters, no padding.
fn full_line(line: &[u8]) -> bool {
    !line.is_empty() && line.len().is_multiple_of(4) && line.iter().all(|&b| b64_char(b))
}

/// A possible last line of a run of `line_len`: at most that long, a
/// multiple of 4, alphabet characters then at most two `=`.
fn last_line(line: &[u8], line_len: usize) -> bool {
    if line.is_empty() || line.len() > line_len || !line.len().is_multiple_of(4) {
        return false;
    }
    let body = line.len() - line.iter().rev().take_while(|&&b| b == b'=').count();
    line.len() - body <= 2 && line[..body].iter().all(|&b| b64_char(b))
}

/// The line starting at `pos`: its content end, the start of the next
/// line, and whether it ended in CRLF. None at the end of data.
fn line_at(data: &[u8], pos: usize) -> Option<(usize, usize, bool)> {
    let rest = data.get(pos..)?;
    let nl = memchr::memchr(b'\n', rest)? + pos;
    Some(if nl > pos && data[nl - 1] == b'\r' {
        (nl - 1, nl + 1, true)
    } else {
        (nl, nl + 1, false)
    })
}

/// Splits `data` into literal stretches and base64 runs whose decoded size
/// is at least `min_part`. Returns a single literal when nothing qualifies.
/// Each run is CRLF lines of canonical base64 of one length (the last
/// possibly shorter or padded), so encoding its decoded bytes again in
/// lines of that length gives the run back; `put` checks the whole
/// reconstruction against the message's hash all the same.
pub fn split(data: &[u8], min_part: usize) -> Vec<Seg> {
    let mut segs = Vec::new();
    let mut lit_start = 0;
    let mut pos = 0;
    // Base64 of `min_part` bytes is longer than this; smaller data holds
    // no part.
    if data.len() < min_part / 3 * 4 {
        return vec![Seg::Literal {
            start: 0,
            end: data.len(),
        }];
    }
    while let Some((end, next, crlf)) = line_at(data, pos) {
        if !crlf || !full_line(&data[pos..end]) {
            pos = next;
            continue;
        }
        // A run of CRLF lines of this length, perhaps a shorter last one.
        let line_len = end - pos;
        let start = pos;
        let mut run_end = next;
        while let Some((e, n, crlf)) = line_at(data, run_end) {
            let l = &data[run_end..e];
            if !crlf {
                break;
            }
            if l.len() == line_len && full_line(l) {
                run_end = n;
                continue;
            }
            if last_line(l, line_len) {
                run_end = n;
            }
            break;
        }
        if (run_end - start) / 4 * 3 >= min_part
            && let Some(decoded) = decode_run(&data[start..run_end])
            && decoded.len() >= min_part
        {
            if lit_start < start {
                segs.push(Seg::Literal {
                    start: lit_start,
                    end: start,
                });
            }
            segs.push(Seg::Part {
                start,
                end: run_end,
                line_len,
                decoded,
            });
            lit_start = run_end;
        }
        pos = run_end;
    }
    if lit_start < data.len() || segs.is_empty() {
        segs.push(Seg::Literal {
            start: lit_start,
            end: data.len(),
        });
    }
    segs
}

/// Decodes a run of CRLF-terminated base64 lines, line by line; the
/// standard engine accepts only canonical base64 (no stray trailing bits,
/// canonical padding), so each line re-encodes to itself.
fn decode_run(run: &[u8]) -> Option<Vec<u8>> {
    let mut decoded = Vec::with_capacity(run.len() / 4 * 3);
    for line in run.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        STANDARD.decode_vec(line, &mut decoded).ok()?;
    }
    Some(decoded)
}

/// Appends `data` base64-encoded in CRLF-terminated lines of `line_len`
/// characters (the last one shorter). `data` must hold whole lines' worth
/// of bytes except at the very end of a part.
pub fn encode_lines(data: &[u8], line_len: usize, out: &mut Vec<u8>) {
    let per_line = line_len / 4 * 3;
    for chunk in data.chunks(per_line.max(1)) {
        let at = out.len();
        out.resize(at + chunk.len().div_ceil(3) * 4, 0);
        let n = STANDARD
            .encode_slice(chunk, &mut out[at..])
            .unwrap_or_default();
        out.truncate(at + n);
        out.extend_from_slice(b"\r\n");
    }
}

/// Serialises a manifest of `segs` over `data`; `part_sha` gives each part's
/// SHA-256 (raw 32 bytes).
pub fn manifest(data: &[u8], segs: &[Seg], mut part_sha: impl FnMut(&[u8]) -> [u8; 32]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(MAGIC);
    for s in segs {
        match s {
            Seg::Literal { start, end } => {
                m.push(LITERAL);
                m.extend_from_slice(&((end - start) as u64).to_le_bytes());
                m.extend_from_slice(&data[*start..*end]);
            }
            Seg::Part {
                line_len, decoded, ..
            } => {
                m.push(PART);
                m.extend_from_slice(&part_sha(decoded));
                m.extend_from_slice(&(decoded.len() as u64).to_le_bytes());
                m.extend_from_slice(&(*line_len as u32).to_le_bytes());
            }
        }
    }
    m
}

/// The SHA-256 (hex) of every part a manifest names, in order, without
/// opening the parts.
pub fn part_shas(mut manifest: impl Read) -> std::io::Result<Vec<String>> {
    let mut magic = [0u8; 4];
    if read_full(&mut manifest, &mut magic)? != 4 || &magic != MAGIC {
        return Err(bad("not a Kiroku blob manifest (no KRM1)".into()));
    }
    let mut shas = Vec::new();
    let mut tag = [0u8; 1];
    while read_full(&mut manifest, &mut tag)? == 1 {
        match tag[0] {
            LITERAL => {
                let mut len = [0u8; 8];
                if read_full(&mut manifest, &mut len)? != 8 {
                    return Err(bad("manifest cut inside a literal".into()));
                }
                let len = u64::from_le_bytes(len);
                let skipped = std::io::copy(&mut (&mut manifest).take(len), &mut std::io::sink())?;
                if skipped != len {
                    return Err(bad("manifest cut inside a literal".into()));
                }
            }
            PART => {
                let mut head = [0u8; 44];
                if read_full(&mut manifest, &mut head)? != 44 {
                    return Err(bad("manifest cut inside a part".into()));
                }
                shas.push(hex::encode(&head[..32]));
            }
            t => return Err(bad(format!("manifest: unknown segment type {t}"))),
        }
    }
    Ok(shas)
}

/// Opens a part's decoded content by its SHA-256 (hex).
pub type OpenPart = Box<dyn Fn(&str) -> std::io::Result<Box<dyn Read + Send>> + Send>;

enum Cur {
    None,
    Literal(u64),
    Part {
        reader: Box<dyn Read + Send>,
        sha: String,
        left: u64,
        line_len: usize,
    },
}

/// Reads a manifest back as the original message bytes, streaming: memory
/// is one buffer of encoded lines whatever the message size.
pub struct ManifestReader<R> {
    manifest: R,
    open: OpenPart,
    cur: Cur,
    out: Vec<u8>,
    out_pos: usize,
    started: bool,
}

fn bad(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

/// Reads exactly `buf.len()` bytes, or reports how many came before EOF.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl<R: Read> ManifestReader<R> {
    pub fn new(manifest: R, open: OpenPart) -> Self {
        ManifestReader {
            manifest,
            open,
            cur: Cur::None,
            out: Vec::new(),
            out_pos: 0,
            started: false,
        }
    }

    /// Fills `out` with the next bytes; false at the end of the message.
    fn refill(&mut self) -> std::io::Result<bool> {
        if !self.started {
            let mut magic = [0u8; 4];
            if read_full(&mut self.manifest, &mut magic)? != 4 || &magic != MAGIC {
                return Err(bad("not a Kiroku blob manifest (no KRM1)".into()));
            }
            self.started = true;
        }
        self.out.clear();
        self.out_pos = 0;
        loop {
            match &mut self.cur {
                Cur::None => {
                    let mut tag = [0u8; 1];
                    if read_full(&mut self.manifest, &mut tag)? == 0 {
                        return Ok(false);
                    }
                    self.cur = match tag[0] {
                        LITERAL => {
                            let mut len = [0u8; 8];
                            if read_full(&mut self.manifest, &mut len)? != 8 {
                                return Err(bad("manifest cut inside a literal".into()));
                            }
                            Cur::Literal(u64::from_le_bytes(len))
                        }
                        PART => {
                            let mut head = [0u8; 44];
                            if read_full(&mut self.manifest, &mut head)? != 44 {
                                return Err(bad("manifest cut inside a part".into()));
                            }
                            let sha = hex::encode(&head[..32]);
                            let mut n8 = [0u8; 8];
                            n8.copy_from_slice(&head[32..40]);
                            let mut n4 = [0u8; 4];
                            n4.copy_from_slice(&head[40..44]);
                            let line_len = u32::from_le_bytes(n4) as usize;
                            if line_len == 0 || !line_len.is_multiple_of(4) {
                                return Err(bad(format!(
                                    "manifest part {sha}: bad line length {line_len}"
                                )));
                            }
                            Cur::Part {
                                reader: (self.open)(&sha)?,
                                sha,
                                left: u64::from_le_bytes(n8),
                                line_len,
                            }
                        }
                        t => return Err(bad(format!("manifest: unknown segment type {t}"))),
                    };
                }
                Cur::Literal(0) => self.cur = Cur::None,
                Cur::Literal(left) => {
                    let want = (*left).min(256 * 1024) as usize;
                    self.out.resize(want, 0);
                    let got = read_full(&mut self.manifest, &mut self.out)?;
                    if got != want {
                        return Err(bad("manifest cut inside a literal".into()));
                    }
                    *left -= want as u64;
                    return Ok(true);
                }
                Cur::Part {
                    reader,
                    sha,
                    left,
                    line_len,
                } => {
                    if *left == 0 {
                        let mut extra = [0u8; 1];
                        if read_full(reader, &mut extra)? != 0 {
                            return Err(bad(format!(
                                "part {sha} is longer than the manifest says"
                            )));
                        }
                        self.cur = Cur::None;
                        continue;
                    }
                    let per_line = *line_len / 4 * 3;
                    let want = (*left).min((per_line * 1024) as u64) as usize;
                    let mut chunk = vec![0u8; want];
                    if read_full(reader, &mut chunk)? != want {
                        return Err(bad(format!("part {sha} is shorter than the manifest says")));
                    }
                    *left -= want as u64;
                    encode_lines(&chunk, *line_len, &mut self.out);
                    return Ok(true);
                }
            }
        }
    }
}

impl<R: Read> Read for ManifestReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.out_pos == self.out.len() {
            if !self.refill()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.out.len() - self.out_pos);
        buf[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
        self.out_pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use std::collections::HashMap;
    use std::sync::Arc;

    fn mail(att: &[u8], line_len: usize, tail: &str) -> Vec<u8> {
        let mut m = b"From: a@b\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\nQUJD\r\n--b\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
        encode_lines(att, line_len, &mut m);
        m.extend_from_slice(tail.as_bytes());
        m.extend_from_slice(b"--b--\r\n");
        m
    }

    fn roundtrip(data: &[u8], min_part: usize) -> usize {
        let segs = split(data, min_part);
        let mut parts: HashMap<String, Vec<u8>> = HashMap::new();
        for s in &segs {
            if let Seg::Part { decoded, .. } = s {
                parts.insert(hex::encode(Sha256::digest(decoded)), decoded.clone());
            }
        }
        let m = manifest(data, &segs, |d| Sha256::digest(d).into());
        let parts = Arc::new(parts);
        let open: OpenPart = Box::new(move |sha| {
            let p = parts.get(sha).cloned().ok_or_else(|| bad(sha.into()))?;
            Ok(Box::new(std::io::Cursor::new(p)) as Box<dyn Read + Send>)
        });
        let mut back = Vec::new();
        ManifestReader::new(&m[..], open)
            .read_to_end(&mut back)
            .expect("read back");
        assert_eq!(back, data, "byte-identical");
        segs.iter()
            .filter(|s| matches!(s, Seg::Part { .. }))
            .count()
    }

    fn bytes(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[3] ^ seed)
            .collect()
    }

    #[test]
    fn a_base64_part_is_split_out_and_comes_back_identical() {
        for (len, line_len) in [(100_000, 76), (100_001, 76), (100_002, 72), (57 * 2000, 76)] {
            let att = bytes(len, 7);
            let m = mail(&att, line_len, "");
            assert_eq!(roundtrip(&m, 64 * 1024), 1, "len {len} line {line_len}");
            let segs = split(&m, 64 * 1024);
            let Some(Seg::Part { decoded, .. }) = segs.get(1) else {
                panic!("no part: {segs:?}")
            };
            assert_eq!(decoded, &att);
        }
    }

    #[test]
    fn what_would_not_re_encode_stays_literal() {
        let att = bytes(100_000, 3);
        // Lines of uneven length, a blank line inside, LF endings,
        // non-canonical trailing bits: all literal, all identical.
        let mut uneven = mail(&att, 76, "");
        let at = uneven.len() / 2;
        let nl = at + uneven[at..].iter().position(|&b| b == b'\n').expect("nl") + 1;
        uneven.insert(nl, b'A');
        roundtrip(&uneven, 64 * 1024);
        let lf: Vec<u8> = mail(&att, 76, "")
            .into_iter()
            .filter(|&b| b != b'\r')
            .collect();
        assert_eq!(roundtrip(&lf, 64 * 1024), 0);
        // Trailing bits set in the last quantum ("AB==" for "AA=="): not
        // canonical, so the whole run stays literal.
        let mut att = bytes(100_000, 1);
        if let Some(last) = att.last_mut() {
            *last = 0;
        }
        let mut odd = mail(&att, 76, "");
        let at = odd
            .windows(6)
            .rposition(|w| w == b"AA==\r\n")
            .expect("canonical tail");
        odd[at + 1] = b'B';
        assert_eq!(roundtrip(&odd, 64 * 1024), 0);
    }

    #[test]
    fn several_parts_small_parts_and_no_parts() {
        let a = bytes(70_000, 1);
        let b = bytes(200_000, 2);
        let mut m = mail(&a, 76, "");
        m.extend(mail(&b, 64, "\r\ntrailing text\r\n"));
        assert_eq!(roundtrip(&m, 64 * 1024), 2);
        assert_eq!(roundtrip(&mail(&bytes(1000, 1), 76, ""), 64 * 1024), 0);
        assert_eq!(roundtrip(b"", 64 * 1024), 0);
        assert_eq!(roundtrip(&vec![b'A'; 300_000], 64 * 1024), 0);
        // No CRLF at the very end.
        let mut cut = mail(&a, 76, "");
        cut.truncate(cut.len() - 2);
        roundtrip(&cut, 64 * 1024);
    }

    #[test]
    fn a_damaged_manifest_or_part_is_an_error_not_wrong_bytes() {
        let att = bytes(100_000, 9);
        let data = mail(&att, 76, "");
        let segs = split(&data, 64 * 1024);
        let m = manifest(&data, &segs, |d| Sha256::digest(d).into());
        let short = att[..att.len() - 1].to_vec();
        let open: OpenPart = Box::new(move |_| {
            Ok(Box::new(std::io::Cursor::new(short.clone())) as Box<dyn Read + Send>)
        });
        assert!(
            ManifestReader::new(&m[..], open)
                .read_to_end(&mut Vec::new())
                .is_err()
        );
        let open: OpenPart = Box::new(|sha| Err(bad(format!("no part {sha}"))));
        assert!(
            ManifestReader::new(&m[..m.len() - 3], open)
                .read_to_end(&mut Vec::new())
                .is_err()
        );
    }

    /// Mangled mails (bytes flipped, lines cut, CR/LF/`=` inserted) always
    /// come back byte-identical, split or not.
    #[test]
    fn mangled_mails_always_round_trip() {
        let base = mail(&bytes(90_000, 5), 76, "tail\r\n");
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..120 {
            let mut m = base.clone();
            for _ in 0..(next() % 4) {
                let at = (next() as usize) % m.len();
                match next() % 5 {
                    0 => m[at] ^= 1 << (next() % 8),
                    1 => m.insert(at, b'\r'),
                    2 => m.insert(at, b'\n'),
                    3 => m.insert(at, b'='),
                    _ => m.truncate(at.max(1)),
                }
            }
            roundtrip(&m, 16 * 1024);
        }
    }
}
