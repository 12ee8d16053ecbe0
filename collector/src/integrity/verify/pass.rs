//! The journal pass: every record up to the head read once, feeding the
//! chain check, the checkpoints, the agent stream chains, the purge check
//! and the notes of the blob and index checks; and its helpers: the
//! journal's size up to the head (for progress), damaged bytes named by
//! the entry they seem to hold.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Instant;

use kiroku_proto::journal_entry::Entry;
use kiroku_proto::{Event, VerifyResponse};
use prost::Message;

use super::checkpoints::Checkpoints;
use super::purged::Purged;
use super::streams::Streams;
use super::{
    ChainCheck, Damage, Findings, JournalPass, Keys, Link, Options, Progress, content_key, where_at,
};
use crate::store::Store;
use crate::store::journal::{self, EntryRead, Position};
use crate::store::repair::blob_check;

/// The journal pass in progress: what it reads with, the checks each
/// record feeds, and where the previous record ended.
pub(super) struct Pass<'a> {
    pub(super) store: &'a Store,
    pub(super) opts: &'a Options,
    pub(super) keys: &'a Keys,
    /// Blobs the blob scan found damaged (their events are named).
    pub(super) damaged_blobs: &'a HashSet<String>,
    pub(super) refs: blob_check::References<'a>,
    /// Damaged blob → the events naming it.
    pub(super) damaged_users: HashMap<String, Vec<String>>,
    pub(super) ckps: Checkpoints,
    pub(super) streams: Streams,
    pub(super) chain: ChainCheck,
    pub(super) purged: Purged,
    /// What the pass keeps for the later checks.
    pub(super) kept: JournalPass,
    /// Where the previous record ended.
    pub(super) next_at: Option<Position>,
    /// Whether a chained (`KRJ2`) entry was read yet.
    pub(super) chain_started: bool,
}

impl Pass<'_> {
    /// Reads the journal up to the head this run took (`kept.head_end`);
    /// bytes that are no record are damage in the chain.
    pub(super) fn read(
        &mut self,
        f: &mut Findings,
        out: &mut dyn FnMut(VerifyResponse),
    ) -> anyhow::Result<()> {
        let store = self.store;
        let jdir = store.journal.dir();
        let head_end = self.kept.head_end;
        let total = journal_bytes(jdir, head_end);
        let mut p = Progress {
            out,
            last: Instant::now(),
        };
        let report = journal::scan_entries(jdir, |read| {
            if read.at >= head_end {
                return Ok(());
            }
            self.record(&read, f, &mut p, total);
            Ok(())
        })?;
        // Trailing bytes of a segment that are no record (a torn write at
        // the head is the collector's to cut; before the head it is damage).
        for (path, at, len) in &report.damaged {
            let seg = segment_of(path);
            let pos = Position {
                segment: seg,
                offset: *at,
            };
            let already = self
                .next_at
                .is_some_and(|n| n.segment == seg && *at < n.offset);
            if pos < head_end && !already {
                self.chain.damage(damage_at(jdir, pos, *len));
            }
        }
        p.say("journal", self.kept.bytes, total, self.kept.bytes, true);
        Ok(())
    }

    /// One record below the head: bytes skipped before it are damage; a
    /// `KRJ1` record is an older collector's event before the chain began
    /// and an insertion after it; an entry is a link of the chain, and
    /// what it holds feeds the checkpoints, the streams, the purge check
    /// and the event notes.
    fn record(&mut self, read: &EntryRead, f: &mut Findings, p: &mut Progress<'_>, total: u64) {
        let jdir = self.store.journal.dir();
        // Bytes skipped since the previous record: damage, inline.
        let expected = match self.next_at {
            Some(n) if n.segment == read.at.segment => n,
            _ => Position {
                segment: read.at.segment,
                offset: 0,
            },
        };
        if read.at.offset > expected.offset {
            self.chain
                .damage(damage_at(jdir, expected, read.at.offset - expected.offset));
        }
        self.next_at = Some(Position {
            segment: read.at.segment,
            offset: read.at.offset + read.len,
        });
        self.kept.bytes += read.len;
        p.say("journal", self.kept.bytes, total, self.kept.bytes, false);
        let Some(entry) = &read.entry else {
            if self.chain_started {
                let name = Event::decode(read.bytes.as_slice())
                    .map(|e| e.event_id)
                    .unwrap_or_default();
                f.add(
                    "inserted",
                    where_at(read.at),
                    &name,
                    "a record of the old format (KRJ1, outside the chain) after the chain began: it was inserted".into(),
                    true,
                );
            } else if let Ok(e) = Event::decode(read.bytes.as_slice()) {
                self.note_event(&e);
            }
            return;
        };
        self.chain_started = true;
        self.kept.entries += 1;
        let hash = read.entry_hash();
        let mut link = Link {
            leaf: entry.leaf,
            hash,
            prev: <[u8; 32]>::try_from(entry.prev.as_slice()).unwrap_or([0xff; 32]),
            at: read.at,
            name: String::new(),
            inconsistent: false,
        };
        self.ckps.leaf(entry.leaf, read.leaf_hash(), hash);
        match &entry.entry {
            Some(Entry::Event(s)) => {
                let a = s.additions.clone().unwrap_or_default();
                link.name = a.event_id.clone();
                let recorded_sha = journal::entry::sha256(&s.recorded);
                link.inconsistent = a.recorded_sha256.as_slice() != recorded_sha;
                if let Ok(e) = journal::merged(s) {
                    self.streams.note(
                        &e,
                        recorded_sha,
                        a.reencoded,
                        entry.leaf,
                        read.at,
                        self.opts,
                    );
                    self.ckps.stream_event(&e, recorded_sha);
                    self.note_event(&e);
                }
            }
            Some(Entry::Checkpoint(m)) => {
                link.name = format!("checkpoint mark {}", m.number);
                self.ckps.mark(m, entry.leaf, read.at);
            }
            Some(Entry::Annotations(m)) => {
                link.name = format!("annotations of {}", m.event_id);
            }
            Some(Entry::Tombstone(t)) => {
                link.name = format!("tombstone of {}", t.event_id);
                self.purged.tombstone(t, entry.leaf, read.at);
                self.ckps.stream_purged(&t.recorded_sha256);
            }
            None if read.is_stub() => {
                link.name = format!("purged leaf {}", entry.leaf);
                self.purged.stub(entry.leaf, hash, read.at);
            }
            None => link.name = format!("leaf {}", entry.leaf),
        }
        self.chain.push(link);
    }

    /// Notes one event (merged view) for the blob and index checks.
    fn note_event(&mut self, e: &Event) {
        self.kept.event_count += 1;
        if !self.opts.wants(e) {
            return;
        }
        if !self.opts.skip_blobs {
            self.refs.note(&self.store.blobs, e);
            if let Some(sha) = blob_check::referenced_blobs(e)
                && self.damaged_blobs.contains(&sha)
            {
                self.damaged_users
                    .entry(sha)
                    .or_default()
                    .push(e.event_id.clone());
            }
        }
        if !self.opts.skip_index {
            let id = self.keys.key(e.event_id.as_bytes());
            self.kept.ordinal += 1;
            self.kept
                .events
                .insert(id, (content_key(self.keys, e), self.kept.ordinal));
            self.kept
                .names
                .entry(id)
                .or_insert_with(|| e.event_id.clone());
        }
    }
}

fn segment_of(path: &Path) -> u64 {
    path.file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Journal bytes up to `end`.
fn journal_bytes(dir: &Path, end: Position) -> u64 {
    journal::segments(dir)
        .unwrap_or_default()
        .iter()
        .filter(|n| **n <= end.segment)
        .map(|n| {
            if *n == end.segment {
                end.offset
            } else {
                std::fs::metadata(dir.join(format!("{n:020}.log"))).map_or(0, |m| m.len())
            }
        })
        .sum()
}

/// Damaged bytes at `at`, and the entry they seem to hold when read
/// ignoring the checksum (to name what was changed).
fn damage_at(dir: &Path, at: Position, len: u64) -> Damage {
    let holds = (|| {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(dir.join(format!("{:020}.log", at.segment))).ok()?;
        f.seek(SeekFrom::Start(at.offset)).ok()?;
        let mut buf = Vec::new();
        f.take(len.min(64 << 20)).read_to_end(&mut buf).ok()?;
        if buf.get(..4)? != b"KRJ2" {
            return None;
        }
        let n = u32::from_le_bytes(buf.get(4..8)?.try_into().ok()?) as usize;
        let entry = kiroku_proto::JournalEntry::decode(buf.get(12..12 + n)?).ok()?;
        let name = match &entry.entry {
            Some(Entry::Event(s)) => s
                .additions
                .as_ref()
                .map(|a| a.event_id.clone())
                .unwrap_or_default(),
            Some(Entry::Checkpoint(m)) => format!("checkpoint mark {}", m.number),
            _ => format!("leaf {}", entry.leaf),
        };
        Some((entry.leaf, name))
    })();
    Damage { at, len, holds }
}
