//! The journal's records on disk: framing (`MAGIC | length | CRC-32 |
//! payload`), finding the next record after damage, and reading records
//! back in order ([`read_entries`], [`scan_entries`]).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use kiroku_proto::JournalEntry;
use prost::Message;

use super::{JournalError, Position, jerr, segment_path, segments};

/// Records of older collectors: a bare prost-encoded `Event`, outside the
/// chain.
pub(super) const MAGIC_V1: [u8; 4] = *b"KRJ1";
/// Records from issue 18 on: a prost-encoded `JournalEntry`.
pub(super) const MAGIC_V2: [u8; 4] = *b"KRJ2";
/// A purged entry's stub (issue 19, ARCHITECTURE.md "Tombstones"): `leaf
/// (u64 LE) | prev (32) | SHA-256 of the entry's payload (32) | its Merkle
/// leaf hash (32)`, no content.
pub(super) const MAGIC_STUB: [u8; 4] = *b"KRJS";
/// The payload length of a stub record.
pub(super) const STUB_LEN: usize = 8 + 32 * 3;
/// What both magics start with (resynchronisation looks for it).
const MAGIC_PREFIX: &[u8] = b"KRJ";
pub(super) const HEADER: usize = 12;
/// No single record is larger than this (the gRPC message limit is 16 MiB).
pub(super) const MAX_RECORD: usize = 64 * 1024 * 1024;

/// One record read from the journal.
#[derive(Clone, Debug, PartialEq)]
pub struct EntryRead {
    /// Where the record starts.
    pub at: Position,
    /// The record's length on disk, header included (the next record
    /// starts at `at.offset + len`).
    pub len: u64,
    /// The entry's leaf number (`None`: a `KRJ1` record).
    pub leaf: Option<u64>,
    /// The payload: the encoded `JournalEntry` (what the chain and the
    /// Merkle leaf hash), or the bare encoded `Event` of a `KRJ1` record.
    pub bytes: Vec<u8>,
    /// The decoded entry (`None`: a `KRJ1` record). For a stub, an entry
    /// with its `prev` and `leaf` and no content (`entry: None`).
    pub entry: Option<JournalEntry>,
    /// Set when the record is the stub of a purged entry: `bytes` is then
    /// empty and the hashes come from the stub.
    pub stub: Option<Stub>,
}

/// What a purged entry's stub keeps: enough for the chain and every
/// Merkle tree over it to recompute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stub {
    /// SHA-256 of the purged entry's payload.
    pub entry_sha256: [u8; 32],
    /// Its Merkle leaf hash, SHA-256(0x00 || payload).
    pub leaf_hash: [u8; 32],
}

impl EntryRead {
    /// SHA-256 of the entry's payload (what the next entry's `prev`
    /// names); a stub's kept hash.
    pub fn entry_hash(&self) -> [u8; 32] {
        match &self.stub {
            Some(s) => s.entry_sha256,
            None => super::entry::sha256(&self.bytes),
        }
    }

    /// The entry's Merkle leaf hash (RFC 6962); a stub's kept hash.
    pub fn leaf_hash(&self) -> [u8; 32] {
        match &self.stub {
            Some(s) => s.leaf_hash,
            None => crate::integrity::merkle::leaf_hash(&self.bytes),
        }
    }

    /// True for a purged entry's stub.
    pub fn is_stub(&self) -> bool {
        self.stub.is_some()
    }

    /// True for a `KRJ1` record (an older collector's bare event, outside
    /// the chain).
    pub fn is_v1(&self) -> bool {
        self.entry.is_none()
    }
}

/// A stub's payload (see [`MAGIC_STUB`]).
pub(super) fn stub_payload(leaf: u64, prev: &[u8; 32], entry_payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(STUB_LEN);
    v.extend_from_slice(&leaf.to_le_bytes());
    v.extend_from_slice(prev);
    v.extend_from_slice(&super::entry::sha256(entry_payload));
    v.extend_from_slice(&crate::integrity::merkle::leaf_hash(entry_payload));
    v
}

/// A stub's payload decoded: the entry (prev and leaf, no content) and
/// the kept hashes.
fn decode_stub(p: &[u8]) -> Option<(JournalEntry, Stub)> {
    if p.len() != STUB_LEN {
        return None;
    }
    let leaf = u64::from_le_bytes(p[..8].try_into().ok()?);
    let entry = JournalEntry {
        prev: p[8..40].to_vec(),
        leaf,
        entry: None,
    };
    let stub = Stub {
        entry_sha256: p[40..72].try_into().ok()?,
        leaf_hash: p[72..104].try_into().ok()?,
    };
    Some((entry, stub))
}

pub(super) fn encode_record(out: &mut Vec<u8>, magic: [u8; 4], payload: &[u8]) {
    out.extend_from_slice(&magic);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// A record that checks out at `buf[at..]`: its magic, payload range and
/// the offset just past it.
pub(super) fn record_at(buf: &[u8], at: usize) -> Option<([u8; 4], std::ops::Range<usize>, usize)> {
    let h = buf.get(at..at + HEADER)?;
    let magic = [h[0], h[1], h[2], h[3]];
    if magic != MAGIC_V1 && magic != MAGIC_V2 && magic != MAGIC_STUB {
        return None;
    }
    let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
    let crc = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if len > MAX_RECORD {
        return None;
    }
    let start = at + HEADER;
    let payload = buf.get(start..start + len)?;
    (crc32fast::hash(payload) == crc).then_some((magic, start..start + len, start + len))
}

/// The record at `buf[at..]` decoded, if it checks out and its payload
/// decodes (a `KRJ2` payload must be a `JournalEntry`; a `KRJ1` one is
/// kept as bytes, decoded by whoever wants the event). `Err(next)`: a
/// record whose checksum holds but whose payload does not decode (damage
/// covering `at..next`). `Ok(None)`: no record here.
fn decoded_at(
    buf: &[u8],
    at: usize,
    segment: u64,
    base: u64,
) -> Result<Option<(EntryRead, usize)>, usize> {
    let Some((magic, payload, next)) = record_at(buf, at) else {
        return Ok(None);
    };
    let mut stub = None;
    let mut bytes = buf[payload].to_vec();
    let (entry, leaf) = if magic == MAGIC_STUB {
        let Some((e, s)) = decode_stub(&bytes) else {
            return Err(next);
        };
        stub = Some(s);
        bytes = Vec::new();
        let leaf = e.leaf;
        (Some(e), Some(leaf))
    } else if magic == MAGIC_V2 {
        match JournalEntry::decode(bytes.as_slice()) {
            Ok(e) => {
                let leaf = e.leaf;
                (Some(e), Some(leaf))
            }
            Err(_) => return Err(next),
        }
    } else {
        if kiroku_proto::Event::decode(bytes.as_slice()).is_err() {
            return Err(next);
        }
        (None, None)
    };
    let read = EntryRead {
        at: Position {
            segment,
            offset: base + at as u64,
        },
        len: (next - at) as u64,
        leaf,
        bytes,
        entry,
        stub,
    };
    Ok(Some((read, next)))
}

/// The next offset after `at` where a record checks out, if any.
pub(super) fn resync_at(buf: &[u8], at: usize) -> Option<usize> {
    resync(buf, at)
}

fn resync(buf: &[u8], at: usize) -> Option<usize> {
    memchr::memmem::find_iter(&buf[at + 1..], MAGIC_PREFIX)
        .map(|off| at + 1 + off)
        .find(|cand| record_at(buf, *cand).is_some())
}

/// Bytes read at a time by [`read_entries`] (more when one record is
/// larger); in unit tests a few records, so that reads cut records.
const READ_CHUNK: u64 = if cfg!(test) { 40 } else { 8 << 20 };

/// Reads up to `max` records from `from`, never past `end` (a position of
/// the journal taken earlier, up to which it is durable, e.g.
/// [`super::Journal::head`]); returns them and the position after the last
/// record read. Damage is skipped as by [`scan`](super::scan) (without a
/// report: `repair` and `verify` report it, from [`scan_entries`]).
/// Returns no records only at `end`.
pub fn read_entries(
    dir: &Path,
    from: Position,
    end: Position,
    max: usize,
) -> Result<(Vec<EntryRead>, Position), JournalError> {
    let mut at = from;
    let mut out = Vec::new();
    while at < end && out.len() < max {
        let path = segment_path(dir, at.segment);
        let limit = if at.segment == end.segment {
            end.offset
        } else {
            match std::fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
                Err(e) => return Err(jerr(&path, e)),
            }
        };
        if at.offset >= limit {
            // The end of this segment: on to the next one there is.
            at = match segments(dir)?.into_iter().find(|n| *n > at.segment) {
                Some(next) => Position {
                    segment: next,
                    offset: 0,
                },
                None => end,
            };
            continue;
        }
        let mut want = READ_CHUNK.min(limit - at.offset);
        loop {
            let buf = read_range(&path, at.offset, want)?;
            let whole = at.offset + want == limit;
            let (got, next) = records_in(&buf, whole, max - out.len(), at);
            if got.is_empty() && next == 0 && !whole {
                // A record larger than what was read: read more.
                want = (want * 2).min(limit - at.offset);
                continue;
            }
            out.extend(got);
            at.offset += next as u64;
            break;
        }
    }
    Ok((out, at))
}

fn read_range(path: &Path, offset: u64, len: u64) -> Result<Vec<u8>, JournalError> {
    let mut f = File::open(path).map_err(|e| jerr(path, e))?;
    f.seek(SeekFrom::Start(offset)).map_err(|e| jerr(path, e))?;
    let mut buf = Vec::with_capacity(len as usize);
    f.take(len)
        .read_to_end(&mut buf)
        .map_err(|e| jerr(path, e))?;
    Ok(buf)
}

/// Up to `max` records from the start of `buf` (read at `base`) and the
/// offset after the last record used. `whole`: `buf` runs to the end of
/// what may be read, so bytes that are no record are damage, skipped up
/// to the next record (or to the end); otherwise they may be a record cut
/// by the read and reading stops before them.
fn records_in(buf: &[u8], whole: bool, max: usize, base: Position) -> (Vec<EntryRead>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() && out.len() < max {
        match decoded_at(buf, at, base.segment, base.offset) {
            Ok(Some((read, next))) => {
                out.push(read);
                at = next;
                continue;
            }
            // A record whose payload does not decode is damage too.
            Err(next) => {
                at = next;
                continue;
            }
            Ok(None) => {}
        }
        if !whole && buf.len() - at < HEADER + MAX_RECORD {
            break;
        }
        at = resync(buf, at).unwrap_or(buf.len());
    }
    (out, at)
}

/// What reading a segment found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanReport {
    /// Records that decoded.
    pub records: u64,
    /// Damaged stretches skipped (bytes), by segment and offset.
    pub damaged: Vec<(PathBuf, u64, u64)>,
    /// Bytes of a torn last record (a crash during an append), if any.
    pub torn_tail: u64,
}

/// Reads every segment in order, calling `f` for each record; damage is
/// skipped (resynchronising on the next valid record) and reported.
pub fn scan_entries(
    dir: &Path,
    mut f: impl FnMut(EntryRead) -> Result<(), JournalError>,
) -> Result<ScanReport, JournalError> {
    let mut report = ScanReport::default();
    let segs = segments(dir)?;
    for (i, n) in segs.iter().enumerate() {
        let path = segment_path(dir, *n);
        let mut buf = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut buf))
            .map_err(|e| jerr(&path, e))?;
        let last = i + 1 == segs.len();
        let (valid_end, _) = scan_buf(&buf, *n, &path, &mut report, &mut f)?;
        if valid_end < buf.len() {
            // Trailing bytes that are no record: torn on the newest
            // segment, damage on an older one.
            let extra = (buf.len() - valid_end) as u64;
            if last {
                report.torn_tail = extra;
            } else {
                report.damaged.push((path.clone(), valid_end as u64, extra));
            }
        }
    }
    Ok(report)
}

/// Decodes the records of segment `segment` (read whole into `buf`);
/// returns the end of the last valid record and whether damage was found
/// before it.
pub(super) fn scan_buf(
    buf: &[u8],
    segment: u64,
    path: &Path,
    report: &mut ScanReport,
    f: &mut impl FnMut(EntryRead) -> Result<(), JournalError>,
) -> Result<(usize, bool), JournalError> {
    let mut at = 0;
    let mut valid_end = 0;
    let mut damaged = false;
    while at < buf.len() {
        match decoded_at(buf, at, segment, 0) {
            Ok(Some((read, next))) => {
                report.records += 1;
                f(read)?;
                at = next;
                valid_end = next;
                continue;
            }
            Err(next) => {
                report
                    .damaged
                    .push((path.to_owned(), at as u64, (next - at) as u64));
                damaged = true;
                at = next;
                valid_end = next;
                continue;
            }
            Ok(None) => {}
        }
        // Not a record here: find the next one that checks out.
        match resync(buf, at) {
            Some(cand) => {
                report
                    .damaged
                    .push((path.to_owned(), at as u64, (cand - at) as u64));
                damaged = true;
                at = cand;
            }
            None => break,
        }
    }
    Ok((valid_end, damaged))
}
