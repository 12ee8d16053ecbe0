//! The journal pass's helpers: an event noted for the blob and index
//! checks, the journal's size up to the head (for progress), and damaged
//! bytes named by the entry they seem to hold.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use kiroku_proto::Event;
use kiroku_proto::journal_entry::Entry;
use prost::Message;

use super::{Damage, JournalPass, Keys, Options, content_key};
use crate::store::Store;
use crate::store::journal::{self, Position};
use crate::store::repair::blob_check;

/// Notes one event (merged view) for the blob and index checks.
#[allow(clippy::too_many_arguments)]
pub(super) fn note_event(
    e: &Event,
    opts: &Options,
    keys: &Keys,
    pass: &mut JournalPass,
    refs: &mut blob_check::References<'_>,
    store: &Store,
    damaged_users: &mut HashMap<String, Vec<String>>,
    damaged: &HashSet<String>,
) {
    pass.event_count += 1;
    if !opts.wants(e) {
        return;
    }
    if !opts.skip_blobs {
        refs.note(&store.blobs, e);
        if let Some(sha) = blob_check::referenced_blobs(e)
            && damaged.contains(&sha)
        {
            damaged_users
                .entry(sha)
                .or_default()
                .push(e.event_id.clone());
        }
    }
    if !opts.skip_index {
        let id = keys.key(e.event_id.as_bytes());
        pass.ordinal += 1;
        pass.events.insert(id, (content_key(keys, e), pass.ordinal));
        pass.names.entry(id).or_insert_with(|| e.event_id.clone());
    }
}

pub(super) fn segment_of(path: &Path) -> u64 {
    path.file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Journal bytes up to `end`.
pub(super) fn journal_bytes(dir: &Path, end: Position) -> u64 {
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
pub(super) fn damage_at(dir: &Path, at: Position, len: u64) -> Damage {
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
