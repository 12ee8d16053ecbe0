//! The event journal: an append-only, hash-chained log of every event the
//! collector stored, in arrival order, written and synced before the index
//! commit. It is the collector's copy of record; the tantivy index is
//! derived from it and can be rebuilt from it (`kiroku-collector repair`).
//!
//! Layout: `journal/<20-digit segment number>.log`, each a sequence of
//! records `MAGIC (4) | length (u32 LE) | CRC-32 of the payload (u32 LE) |
//! payload` (`journal/record.rs`). From issue 18 on the magic is `KRJ2`
//! and the payload a prost-encoded `JournalEntry`: `prev` = SHA-256 of the
//! previous entry's payload (32 zero bytes before the first), `leaf` = the
//! entry's number from 0 (its Merkle leaf index; leaf hash =
//! SHA-256(0x00 || payload), RFC 6962), and one of a `StoredEvent` (the
//! agent's bytes untouched plus the collector's `Additions`, merged by
//! `journal/entry.rs`), a `Tombstone`, an `AnnotationMark` or a
//! `CheckpointMark`. `KRJ1` records of older collectors (a bare encoded
//! `Event`) stay readable and are outside the chain. The CRC stays for
//! torn writes; the chain is for alteration (`kiroku verify`).
//!
//! Segments roll over at [`SEGMENT_BYTES`]; the chain runs across them. A
//! torn record at the end of the newest segment (a crash during an append)
//! is cut off on open; damage anywhere else is found by [`scan`], which
//! resynchronises on the next valid record so one bad spot costs only the
//! records it covers.
//!
//! The journal may hold an event more than once (a batch whose ack was lost
//! is stored again); readers de-duplicate by `event_id`, as the index does.
//!
//! Damage is never rewritten away (the journal is the copy of record):
//! `repair` reports it, recovers what the index still holds, and notes the
//! stretches it dealt with in `journal/damage.reviewed` (`<segment>
//! <offset> <length>` per line), so a start after it logs them as known
//! instead of as a new error every time.

pub mod entry;
mod record;
pub mod rewrite;

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use kiroku_proto::journal_entry::Entry;
use kiroku_proto::{Event, StoredEvent};
use prost::Message;

pub use entry::{EntryError, Provenance, merged};
pub use record::{EntryRead, ScanReport, Stub, read_entries, scan_entries};
use record::{MAGIC_V2, encode_record, scan_buf};

/// A segment is closed once it grows past this.
pub const SEGMENT_BYTES: u64 = 128 * 1024 * 1024;
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
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

/// The end of the journal and of its chain: everything before `end` is
/// durable; the next entry is leaf `next_leaf` and names `last_hash` (the
/// SHA-256 of the last entry's payload; zeros before the first entry).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JournalHead {
    pub end: Position,
    pub next_leaf: u64,
    pub last_hash: [u8; 32],
}

struct Tail {
    file: File,
    path: PathBuf,
    number: u64,
    len: u64,
    next_leaf: u64,
    last_hash: [u8; 32],
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

/// The merged event a record holds, with its provenance: `None` for the
/// entries that are no event (marks, tombstones), `Some(Err)` for a
/// stored event that does not decode (damage the CRC did not catch, which
/// `verify` names).
pub fn event_of(read: &EntryRead) -> Option<Result<(Event, Provenance), EntryError>> {
    match &read.entry {
        None => Some(
            Event::decode(read.bytes.as_slice())
                .map(|e| {
                    let p = Provenance {
                        recorded_sha256: entry::sha256(&read.bytes),
                        leaf: None,
                        reencoded: true,
                    };
                    (e, p)
                })
                .map_err(|source| EntryError::Recorded { leaf: None, source }),
        ),
        Some(j) => match &j.entry {
            Some(Entry::Event(s)) => {
                Some(entry::merged_at(s, read.leaf).map(|e| (e, entry::provenance(s, read.leaf))))
            }
            _ => None,
        },
    }
}

/// Reads up to `max` events (merged views, with their provenance) from
/// `from`, never past `end`; returns them and the position after the last
/// record read. Entries that are no event are passed over; a stored event
/// that does not decode is skipped like damage. Returns no events only at
/// `end`.
pub fn read_events(
    dir: &Path,
    from: Position,
    end: Position,
    max: usize,
) -> Result<(Vec<(Event, Provenance)>, Position), JournalError> {
    let mut at = from;
    let mut events = Vec::new();
    while events.is_empty() && at < end {
        let (reads, next) = read_entries(dir, at, end, max)?;
        events.extend(reads.iter().filter_map(event_of).filter_map(Result::ok));
        at = next;
    }
    Ok((events, at))
}

/// [`read_events`] without the provenance.
pub fn read_from(
    dir: &Path,
    from: Position,
    end: Position,
    max: usize,
) -> Result<(Vec<Event>, Position), JournalError> {
    let (events, at) = read_events(dir, from, end, max)?;
    Ok((events.into_iter().map(|(e, _)| e).collect(), at))
}

/// Reads every segment in order, calling `f` for each event (merged view)
/// with its provenance; damage is skipped (resynchronising on the next
/// valid record) and reported, and so is a stored event that does not
/// decode.
pub fn scan_events(
    dir: &Path,
    mut f: impl FnMut(Event, Provenance),
) -> Result<ScanReport, JournalError> {
    let mut undecodable = Vec::new();
    let mut report = scan_entries(dir, |read| {
        match event_of(&read) {
            Some(Ok((e, p))) => f(e, p),
            Some(Err(_)) => {
                undecodable.push((segment_path(dir, read.at.segment), read.at.offset, read.len))
            }
            None => {}
        }
        Ok(())
    })?;
    report.damaged.extend(undecodable);
    Ok(report)
}

/// [`scan_events`] without the provenance.
pub fn scan(dir: &Path, mut f: impl FnMut(Event)) -> Result<ScanReport, JournalError> {
    scan_events(dir, |e, _| f(e))
}

impl Journal {
    /// Opens (or creates) the journal in `dir`. A torn record at the end of
    /// the newest segment is cut off (logged with its size).
    pub fn open(dir: &Path) -> Result<Journal, JournalError> {
        std::fs::create_dir_all(dir).map_err(|e| jerr(dir, e))?;
        let segs = segments(dir)?;
        let number = segs.last().copied().unwrap_or(1);
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
        let mut last: Option<(u64, [u8; 32])> = None;
        let (valid_end, damaged) = scan_buf(&buf, number, &path, &mut report, &mut |r| {
            if let Some(leaf) = r.leaf {
                last = Some((leaf, r.entry_hash()));
            }
            Ok(())
        })?;
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
        if valid_end == 0 && last.is_none() {
            // The newest segment is empty (a crash just after a roll-over):
            // the chain ends in an older one.
            last = chain_end_before(dir, &segs, number)?;
        }
        if segments(dir)?.len() == 1 && buf.is_empty() {
            sync_dir(dir)?;
        }
        let (next_leaf, last_hash) = last.map_or((0, [0; 32]), |(leaf, h)| (leaf + 1, h));
        Ok(Journal {
            dir: dir.to_owned(),
            tail: Mutex::new(Tail {
                file,
                path,
                number,
                len: valid_end as u64,
                next_leaf,
                last_hash,
            }),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn tail(&self) -> MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where the next record will be written: everything before it is
    /// durable.
    pub fn end(&self) -> Position {
        self.head().end
    }

    /// The end of the journal and of its chain (see [`JournalHead`]).
    pub fn head(&self) -> JournalHead {
        let t = self.tail();
        JournalHead {
            end: Position {
                segment: t.number,
                offset: t.len,
            },
            next_leaf: t.next_leaf,
            last_hash: t.last_hash,
        }
    }

    /// True when nothing was ever written.
    pub fn is_empty(&self) -> bool {
        let t = self.tail();
        t.number == 1 && t.len == 0
    }

    /// Holds the end of the journal: no other append happens until the
    /// writer is dropped, so its [`JournalWriter::next_leaf`] is the leaf
    /// of the first entry it appends (ingest indexes events with their
    /// leaves before appending them).
    pub fn writer(&self) -> JournalWriter<'_> {
        JournalWriter {
            dir: &self.dir,
            t: self.tail(),
        }
    }

    /// Closes the segment being appended to (when it holds anything) and
    /// starts the next one, so that a purge may rewrite it. Returns the
    /// number of the segment appended to from now on.
    pub fn roll(&self) -> Result<u64, JournalError> {
        let mut t = self.tail();
        if t.len > 0 {
            let number = t.number + 1;
            let path = segment_path(&self.dir, number);
            let file = OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(&path)
                .map_err(|e| jerr(&path, e))?;
            sync_dir(&self.dir)?;
            t.file = file;
            t.path = path;
            t.number = number;
            t.len = 0;
        }
        Ok(t.number)
    }

    /// Appends events the collector has only decoded (see
    /// [`entry::reencoded`]) and makes them durable.
    pub fn append(&self, events: &[Event]) -> Result<Vec<u64>, JournalError> {
        self.append_entries(
            events
                .iter()
                .map(|e| Entry::Event(entry::reencoded(e)))
                .collect(),
        )
    }

    /// Appends stored events and makes them durable; returns their leaves.
    pub fn append_stored(&self, events: Vec<StoredEvent>) -> Result<Vec<u64>, JournalError> {
        self.append_entries(events.into_iter().map(Entry::Event).collect())
    }

    /// Appends entries (events, or marks from the checkpoint writer and
    /// the analysis) and makes them durable (`fdatasync`) before
    /// returning; returns their leaves.
    pub fn append_entries(&self, entries: Vec<Entry>) -> Result<Vec<u64>, JournalError> {
        self.writer().append_entries(entries)
    }
}

/// The end of the chain in the segments before `number`: the leaf and
/// hash of the last entry of the newest segment that has records.
fn chain_end_before(
    dir: &Path,
    segs: &[u64],
    number: u64,
) -> Result<Option<(u64, [u8; 32])>, JournalError> {
    for n in segs.iter().rev().filter(|n| **n < number) {
        let path = segment_path(dir, *n);
        let buf = std::fs::read(&path).map_err(|e| jerr(&path, e))?;
        let mut last = None;
        let (end, _) = scan_buf(&buf, *n, &path, &mut ScanReport::default(), &mut |r| {
            if let Some(leaf) = r.leaf {
                last = Some((leaf, r.entry_hash()));
            }
            Ok(())
        })?;
        // Entries only ever follow `KRJ1` records (never the other way
        // round): a segment with records but no entry ends the search.
        if end > 0 {
            return Ok(last);
        }
    }
    Ok(None)
}

/// The journal held for appending (see [`Journal::writer`]).
pub struct JournalWriter<'a> {
    dir: &'a Path,
    t: MutexGuard<'a, Tail>,
}

impl JournalWriter<'_> {
    /// The leaf the next appended entry gets.
    pub fn next_leaf(&self) -> u64 {
        self.t.next_leaf
    }

    /// Appends stored events, chained and numbered, and makes them durable
    /// (`fdatasync`) before returning their leaves. On failure (a full
    /// disk, say) the segment is cut back to where it was and the chain's
    /// end is unchanged, so a later append continues cleanly.
    pub fn append_stored(&mut self, events: Vec<StoredEvent>) -> Result<Vec<u64>, JournalError> {
        self.append_entries(events.into_iter().map(Entry::Event).collect())
    }

    /// Appends `entries` (see [`JournalWriter::append_stored`]).
    pub fn append_entries(&mut self, entries: Vec<Entry>) -> Result<Vec<u64>, JournalError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let n = entries.len();
        let (mut leaf, mut prev) = (self.t.next_leaf, self.t.last_hash);
        let mut leaves = Vec::with_capacity(n);
        let mut buf = Vec::new();
        for e in entries {
            let payload = entry::encode_entry(&prev, leaf, e);
            prev = entry::sha256(&payload);
            encode_record(&mut buf, MAGIC_V2, &payload);
            leaves.push(leaf);
            leaf += 1;
        }
        self.write(&buf, n)?;
        self.t.next_leaf = leaf;
        self.t.last_hash = prev;
        Ok(leaves)
    }

    fn write(&mut self, buf: &[u8], n: usize) -> Result<(), JournalError> {
        let t = &mut *self.t;
        if t.len > 0 && t.len + buf.len() as u64 > SEGMENT_BYTES {
            let number = t.number + 1;
            let path = segment_path(self.dir, number);
            let file = OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(&path)
                .map_err(|e| jerr(&path, e))?;
            sync_dir(self.dir)?;
            t.file = file;
            t.path = path;
            t.number = number;
            t.len = 0;
        }
        let before = t.len;
        let r = t.file.write_all(buf).and_then(|_| t.file.sync_data());
        if let Err(e) = r {
            // Undo a partial append; if even that fails, the torn tail is
            // cut on the next open.
            let _ = t.file.set_len(before);
            let _ = t.file.seek(SeekFrom::End(0));
            return Err(jerr(&t.path, format!("appending {n} entries: {e}")));
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
mod tests;
