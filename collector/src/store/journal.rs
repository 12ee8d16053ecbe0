//! The event journal: an append-only log of every event the collector
//! stored, in arrival order, written and synced before the index commit.
//! It is the collector's copy of record; the tantivy index is derived from
//! it and can be rebuilt from it (`kiroku-collector repair`).
//!
//! Layout: `journal/<20-digit segment number>.log`, each a sequence of
//! records `MAGIC (4) | length (u32 LE) | CRC-32 of the payload (u32 LE) |
//! payload` where the payload is a prost-encoded `Event`. Segments roll
//! over at [`SEGMENT_BYTES`]. A torn record at the end of the newest
//! segment (a crash during an append) is cut off on open; damage anywhere
//! else is found by [`scan`], which resynchronises on the next valid record
//! so one bad spot costs only the records it covers.
//!
//! The journal may hold an event more than once (a batch whose ack was lost
//! is stored again); readers de-duplicate by `event_id`, as the index does.
//!
//! Damage is never rewritten away (the journal is the copy of record):
//! `repair` reports it, recovers what the index still holds, and notes the
//! stretches it dealt with in `journal/damage.reviewed` (`<segment>
//! <offset> <length>` per line), so a start after it logs them as known
//! instead of as a new error every time.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use kiroku_proto::Event;
use prost::Message;

const MAGIC: [u8; 4] = *b"KRJ1";
const HEADER: usize = 12;
/// A segment is closed once it grows past this.
pub const SEGMENT_BYTES: u64 = 128 * 1024 * 1024;
/// No single event is larger than this (the gRPC message limit is 16 MiB).
const MAX_RECORD: usize = 64 * 1024 * 1024;
/// Damaged stretches `repair` has reported and dealt with.
const REVIEWED: &str = "damage.reviewed";

#[derive(Debug, thiserror::Error)]
#[error("event journal {path}: {message}")]
pub struct JournalError {
    pub path: PathBuf,
    pub message: String,
}

fn jerr(path: &Path, message: impl std::fmt::Display) -> JournalError {
    JournalError {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

struct Tail {
    file: File,
    path: PathBuf,
    number: u64,
    len: u64,
}

pub struct Journal {
    dir: PathBuf,
    tail: Mutex<Tail>,
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:020}.log"))
}

/// Segment numbers present in `dir`, ascending.
pub fn segments(dir: &Path) -> Result<Vec<u64>, JournalError> {
    let mut v = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(v),
        Err(e) => return Err(jerr(dir, e)),
    };
    for entry in rd {
        let entry = entry.map_err(|e| jerr(dir, e))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".log")) else {
            continue;
        };
        if let Ok(n) = stem.parse::<u64>() {
            v.push(n);
        }
    }
    v.sort_unstable();
    Ok(v)
}

fn encode_record(out: &mut Vec<u8>, e: &Event) {
    let payload = e.encode_to_vec();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
}

/// A record that checks out at `buf[at..]`: its payload range and the
/// offset just past it.
fn record_at(buf: &[u8], at: usize) -> Option<(std::ops::Range<usize>, usize)> {
    let h = buf.get(at..at + HEADER)?;
    if h[0..4] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
    let crc = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if len > MAX_RECORD {
        return None;
    }
    let start = at + HEADER;
    let payload = buf.get(start..start + len)?;
    (crc32fast::hash(payload) == crc).then_some((start..start + len, start + len))
}

/// A place in the journal: a segment and a byte offset in it (the start
/// of a record, or the segment's end).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

/// Bytes read at a time by [`read_from`] (more when one record is larger);
/// in unit tests a few records, so that reads cut records.
const READ_CHUNK: u64 = if cfg!(test) { 40 } else { 8 << 20 };

/// Reads up to `max` events from `from`, never past `end` (a position of
/// the journal taken earlier, up to which it is durable); returns them and
/// the position after the last record read. Damage is skipped as by
/// [`scan`] (without a report: `repair` reports it). Returns no events
/// only at `end`.
pub fn read_from(
    dir: &Path,
    from: Position,
    end: Position,
    max: usize,
) -> Result<(Vec<Event>, Position), JournalError> {
    let mut at = from;
    let mut events = Vec::new();
    while at < end && events.len() < max {
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
            let (got, next) = records_in(&buf, whole, max - events.len());
            if got.is_empty() && next == 0 && !whole {
                // A record larger than what was read: read more.
                want = (want * 2).min(limit - at.offset);
                continue;
            }
            events.extend(got);
            at.offset += next as u64;
            break;
        }
    }
    Ok((events, at))
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

/// Up to `max` events from the start of `buf` and the offset after the
/// last record used. `whole`: `buf` runs to the end of what may be read,
/// so bytes that are no record are damage, skipped up to the next record
/// (or to the end); otherwise they may be a record cut by the read and
/// reading stops before them.
fn records_in(buf: &[u8], whole: bool, max: usize) -> (Vec<Event>, usize) {
    let mut events = Vec::new();
    let mut at = 0;
    while at < buf.len() && events.len() < max {
        if let Some((payload, next)) = record_at(buf, at) {
            // A record whose payload does not decode is damage too.
            if let Ok(e) = Event::decode(&buf[payload]) {
                events.push(e);
            }
            at = next;
            continue;
        }
        if !whole && buf.len() - at < HEADER + MAX_RECORD {
            break;
        }
        at = memchr::memmem::find_iter(&buf[at + 1..], &MAGIC)
            .map(|off| at + 1 + off)
            .find(|cand| record_at(buf, *cand).is_some())
            .unwrap_or(buf.len());
    }
    (events, at)
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

/// Reads every segment in order, calling `f` for each event; damage is
/// skipped (resynchronising on the next valid record) and reported.
pub fn scan(dir: &Path, mut f: impl FnMut(Event)) -> Result<ScanReport, JournalError> {
    let mut report = ScanReport::default();
    let segs = segments(dir)?;
    for (i, n) in segs.iter().enumerate() {
        let path = segment_path(dir, *n);
        let mut buf = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut buf))
            .map_err(|e| jerr(&path, e))?;
        let last = i + 1 == segs.len();
        let (valid_end, _) = scan_buf(&buf, &path, &mut report, &mut f);
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

/// Decodes the records of one segment; returns the end of the last valid
/// record and whether damage was found before it.
fn scan_buf(
    buf: &[u8],
    path: &Path,
    report: &mut ScanReport,
    f: &mut impl FnMut(Event),
) -> (usize, bool) {
    let mut at = 0;
    let mut valid_end = 0;
    let mut damaged = false;
    while at < buf.len() {
        if let Some((payload, next)) = record_at(buf, at) {
            match Event::decode(&buf[payload]) {
                Ok(e) => {
                    report.records += 1;
                    f(e);
                }
                Err(_) => {
                    report
                        .damaged
                        .push((path.to_owned(), at as u64, (next - at) as u64));
                    damaged = true;
                }
            }
            at = next;
            valid_end = next;
            continue;
        }
        // Not a record here: find the next one that checks out.
        let mut probe = at + 1;
        let resync = loop {
            match memchr::memmem::find(&buf[probe..], &MAGIC) {
                Some(off) => {
                    let cand = probe + off;
                    if record_at(buf, cand).is_some() {
                        break Some(cand);
                    }
                    probe = cand + 1;
                }
                None => break None,
            }
        };
        match resync {
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
    (valid_end, damaged)
}

impl Journal {
    /// Opens (or creates) the journal in `dir`. A torn record at the end of
    /// the newest segment is cut off (logged with its size).
    pub fn open(dir: &Path) -> Result<Journal, JournalError> {
        std::fs::create_dir_all(dir).map_err(|e| jerr(dir, e))?;
        let number = segments(dir)?.last().copied().unwrap_or(1);
        let path = segment_path(dir, number);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| jerr(&path, e))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf).map_err(|e| jerr(&path, e))?;
        let mut report = ScanReport::default();
        let (valid_end, damaged) = scan_buf(&buf, &path, &mut report, &mut |_| {});
        if damaged {
            let new = unreviewed(dir, &report.damaged);
            if new.is_empty() {
                tracing::info!(
                    journal = %path.display(), stretches = report.damaged.len(),
                    "the event journal has damaged stretches that `kiroku-collector repair` already reported and dealt with"
                );
            } else {
                tracing::error!(
                    journal = %path.display(), stretches = new.len(),
                    "the event journal has damaged records; run `kiroku-collector repair` to see what they cover"
                );
            }
        }
        if valid_end < buf.len() {
            tracing::warn!(
                journal = %path.display(), bytes = buf.len() - valid_end,
                "cutting off a torn record at the end of the event journal (a crash during an append; its batch was never acknowledged)"
            );
            file.set_len(valid_end as u64)
                .and_then(|_| file.sync_data())
                .map_err(|e| jerr(&path, e))?;
        }
        if segments(dir)?.len() == 1 && buf.is_empty() {
            sync_dir(dir)?;
        }
        Ok(Journal {
            dir: dir.to_owned(),
            tail: Mutex::new(Tail {
                file,
                path,
                number,
                len: valid_end as u64,
            }),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the next record will be written: everything before it is
    /// durable.
    pub fn end(&self) -> Position {
        let t = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        Position {
            segment: t.number,
            offset: t.len,
        }
    }

    /// True when nothing was ever written.
    pub fn is_empty(&self) -> bool {
        let t = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        t.number == 1 && t.len == 0
    }

    /// Appends `events` and makes them durable (`fdatasync`) before
    /// returning. On failure (a full disk, say) the segment is cut back to
    /// where it was, so a later append continues cleanly.
    pub fn append(&self, events: &[Event]) -> Result<(), JournalError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for e in events {
            encode_record(&mut buf, e);
        }
        let mut t = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        if t.len > 0 && t.len + buf.len() as u64 > SEGMENT_BYTES {
            let number = t.number + 1;
            let path = segment_path(&self.dir, number);
            let file = OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(&path)
                .map_err(|e| jerr(&path, e))?;
            sync_dir(&self.dir)?;
            *t = Tail {
                file,
                path,
                number,
                len: 0,
            };
        }
        let before = t.len;
        let r = t.file.write_all(&buf).and_then(|_| t.file.sync_data());
        if let Err(e) = r {
            let path = t.path.clone();
            // Undo a partial append; if even that fails, the torn tail is
            // cut on the next open.
            let _ = t.file.set_len(before);
            let _ = t.file.seek(SeekFrom::End(0));
            return Err(jerr(
                &path,
                format!("appending {} events: {e}", events.len()),
            ));
        }
        t.len = before + buf.len() as u64;
        Ok(())
    }
}

fn reviewed_key(path: &Path, at: u64, len: u64) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    format!("{} {at} {len}", name.unwrap_or_default())
}

/// The damaged stretches (segment, offset, length) not yet reviewed by
/// `repair`.
pub fn unreviewed<'a>(
    dir: &Path,
    damaged: &'a [(PathBuf, u64, u64)],
) -> Vec<&'a (PathBuf, u64, u64)> {
    let known = std::fs::read_to_string(dir.join(REVIEWED)).unwrap_or_default();
    let known: std::collections::HashSet<&str> = known.lines().collect();
    damaged
        .iter()
        .filter(|(p, at, len)| !known.contains(reviewed_key(p, *at, *len).as_str()))
        .collect()
}

/// Notes damaged stretches as reported and dealt with (by `repair`), so
/// the collector's start no longer reports them as new.
pub fn mark_reviewed(dir: &Path, damaged: &[(PathBuf, u64, u64)]) -> Result<(), JournalError> {
    let new = unreviewed(dir, damaged);
    if new.is_empty() {
        return Ok(());
    }
    let path = dir.join(REVIEWED);
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| jerr(&path, e))?;
    let text: String = new
        .iter()
        .map(|(p, at, len)| format!("{}\n", reviewed_key(p, *at, *len)))
        .collect();
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| jerr(&path, e))
}

fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| jerr(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str, seq: u64) -> Event {
        Event {
            event_id: id.into(),
            agent_id: "a".into(),
            stream_id: "s".into(),
            seq,
            ..Default::default()
        }
    }

    fn ids(dir: &Path) -> (Vec<String>, ScanReport) {
        let mut v = Vec::new();
        let r = scan(dir, |e| v.push(e.event_id)).expect("scan");
        (v, r)
    }

    #[test]
    fn appends_survive_reopen_and_a_torn_tail_is_cut() {
        let d = tempfile::tempdir().expect("tempdir");
        let j = Journal::open(d.path()).expect("open");
        assert!(j.is_empty());
        j.append(&[ev("e1", 1), ev("e2", 2)]).expect("append");
        j.append(&[ev("e3", 3)]).expect("append");
        drop(j);
        // A crash in the middle of an append: half a record at the end.
        let seg = segment_path(d.path(), 1);
        let mut half = Vec::new();
        encode_record(&mut half, &ev("e4", 4));
        half.truncate(half.len() / 2);
        OpenOptions::new()
            .append(true)
            .open(&seg)
            .and_then(|mut f| f.write_all(&half))
            .expect("tear");
        let (v, r) = ids(d.path());
        assert_eq!(v, ["e1", "e2", "e3"]);
        assert!(r.torn_tail > 0 && r.damaged.is_empty(), "{r:?}");
        let j = Journal::open(d.path()).expect("reopen");
        assert!(!j.is_empty());
        j.append(&[ev("e5", 5)]).expect("append after the cut");
        let (v, r) = ids(d.path());
        assert_eq!(v, ["e1", "e2", "e3", "e5"]);
        assert_eq!(
            r,
            ScanReport {
                records: 4,
                ..Default::default()
            }
        );
    }

    #[test]
    fn damage_in_the_middle_costs_only_the_records_it_covers() {
        let d = tempfile::tempdir().expect("tempdir");
        let j = Journal::open(d.path()).expect("open");
        for i in 0..10u64 {
            j.append(&[ev(&format!("e{i}"), i + 1)]).expect("append");
        }
        drop(j);
        let seg = segment_path(d.path(), 1);
        let mut bytes = std::fs::read(&seg).expect("read");
        let rec = bytes.len() / 10;
        // Flip bytes inside the 4th record's payload and the 7th's header.
        bytes[3 * rec + HEADER + 2] ^= 0xff;
        bytes[6 * rec + 1] ^= 0xff;
        std::fs::write(&seg, &bytes).expect("write");
        let (v, r) = ids(d.path());
        assert_eq!(v, ["e0", "e1", "e2", "e4", "e5", "e7", "e8", "e9"]);
        assert_eq!(r.damaged.len(), 2, "{r:?}");
        assert_eq!(r.torn_tail, 0);
        // Once repair has reported it, the damage is known, not new.
        assert_eq!(unreviewed(d.path(), &r.damaged).len(), 2);
        mark_reviewed(d.path(), &r.damaged[..1]).expect("mark");
        assert_eq!(unreviewed(d.path(), &r.damaged).len(), 1);
        mark_reviewed(d.path(), &r.damaged).expect("mark");
        assert!(unreviewed(d.path(), &r.damaged).is_empty());
        assert_eq!(segments(d.path()).expect("segments"), [1], "not a segment");
    }

    #[test]
    fn read_from_goes_in_batches_across_segments_past_damage_up_to_an_end() {
        let d = tempfile::tempdir().expect("tempdir");
        let j = Journal::open(d.path()).expect("open");
        for i in 0..6u64 {
            j.append(&[ev(&format!("e{i}"), i)]).expect("append");
        }
        j.tail.lock().expect("lock").len = SEGMENT_BYTES;
        for i in 6..10u64 {
            j.append(&[ev(&format!("e{i}"), i)]).expect("append");
        }
        let end = j.end();
        j.append(&[ev("after-the-end", 10)]).expect("append");
        drop(j);
        // Damage inside the third record of the first segment.
        let seg = segment_path(d.path(), 1);
        let mut bytes = std::fs::read(&seg).expect("read");
        let rec = bytes.len() / 6;
        bytes[2 * rec + HEADER + 1] ^= 0xff;
        std::fs::write(&seg, &bytes).expect("write");

        let read_all = |batch: usize| {
            let (mut at, mut seen, mut calls) = (Position::default(), Vec::new(), 0);
            loop {
                let (events, next) = read_from(d.path(), at, end, batch).expect("read");
                calls += 1;
                if events.is_empty() {
                    assert!(next >= end, "no events only at the end: {next:?}");
                    break;
                }
                assert!(events.len() <= batch && next > at);
                seen.extend(events.into_iter().map(|e| e.event_id));
                at = next;
            }
            (seen, calls)
        };
        let want = ["e0", "e1", "e3", "e4", "e5", "e6", "e7", "e8", "e9"];
        for (batch, calls) in [(1, 10), (4, 4), (100, 2)] {
            let (seen, n) = read_all(batch);
            assert_eq!(seen, want, "batches of {batch}");
            assert_eq!(n, calls, "batches of {batch}");
        }
        // From the middle of the second segment.
        let (from_e7, _) = {
            let (_, p) = read_from(d.path(), Position::default(), end, 6).expect("read");
            read_from(d.path(), p, end, 100).expect("read")
        };
        let ids: Vec<_> = from_e7.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids, ["e7", "e8", "e9"]);
    }

    #[test]
    fn segments_roll_over_and_are_read_in_order() {
        let d = tempfile::tempdir().expect("tempdir");
        let j = Journal::open(d.path()).expect("open");
        for i in 0..5u64 {
            j.append(&[ev(&format!("e{i}"), i)]).expect("append");
        }
        // Force a roll-over by pretending the segment is full.
        j.tail.lock().expect("lock").len = SEGMENT_BYTES;
        j.append(&[ev("e5", 5)]).expect("append");
        drop(j);
        assert_eq!(segments(d.path()).expect("segments"), [1, 2]);
        let (v, _) = ids(d.path());
        assert_eq!(v, ["e0", "e1", "e2", "e3", "e4", "e5"]);
    }
}
