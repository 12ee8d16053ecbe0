//! Where each exported event is in the journal, and its inclusion proof:
//! one pass over the stretches of the journal that hold them, up to its
//! head taken when the export starts. When the index knows every event's
//! leaf (`Store::leaf_of`), those stretches are the checkpoint ranges
//! (`checkpoint/ledger.rs`) holding an exported event and the part after
//! the newest checkpoint; else (events stored before the journal was
//! chained) the whole journal. The leaves of each range are hashed as they
//! pass; when a range that holds an exported event ends, the proofs of its
//! events are cut from those hashes and the hashes dropped, so memory is
//! one range's leaves (32 bytes each) at most.
//!
//! The journal may hold an event twice (a batch stored again after a lost
//! ack); the last copy is taken, as the index serves it.

use std::collections::HashMap;

use kiroku_proto::Event;
use kiroku_proto::journal_entry::Entry;
use prost::Message;

use super::ExportError;
use crate::integrity::checkpoint::ledger::{Ledger, LedgerError, Record};
use crate::integrity::merkle;
use crate::store::Store;
use crate::store::journal::{self, EntryRead, Position};

/// Records read from the journal at a time.
const BATCH: usize = 4096;

/// Where an exported event's journal entry is, and its proof.
#[derive(Debug, Clone)]
pub struct Found {
    /// The record as read (kept: reading one record again costs a whole
    /// read-ahead chunk of the journal).
    pub read: EntryRead,
    /// None: a `KRJ1` record, outside the chain.
    pub leaf: Option<u64>,
    /// The checkpoint covering the leaf and the audit path in its tree.
    pub proof: Option<(u64, Vec<merkle::Hash>)>,
}

/// The checkpoints that exist (`checkpoint/ledger.rs`: a checkpoint exists
/// once its record does), oldest first.
pub fn checkpoints(store: &Store) -> Result<(Ledger, Vec<Record>), ExportError> {
    let err = |e: LedgerError| ExportError::Read {
        what: "the checkpoint records".into(),
        error: e.to_string(),
    };
    let ledger = Ledger::open(&store.dir, &store.meta).map_err(err)?;
    let records = ledger.all().map_err(err)?;
    Ok((ledger, records))
}

/// The stretches of the journal to read: when every event's leaf is known
/// (the index keeps it), only the checkpoint ranges holding one and the
/// part after the newest checkpoint if one lies there; else all of it.
fn spans(
    store: &Store,
    wanted: &HashMap<String, usize>,
    records: &[Record],
    end: Position,
) -> Vec<(Position, Position)> {
    let whole = vec![(Position::default(), end)];
    let mut leaves = Vec::with_capacity(wanted.len());
    for id in wanted.keys() {
        match store.leaf_of(id) {
            Ok(Some(l)) => leaves.push(l),
            _ => return whole,
        }
    }
    leaves.sort_unstable();
    let mut out: Vec<(Position, Position)> = Vec::new();
    let mut rest = leaves.as_slice();
    for r in records {
        let before = rest.partition_point(|l| *l < r.first_leaf);
        rest = &rest[before..];
        let inside = rest.partition_point(|l| *l < r.next_leaf());
        if inside > 0 {
            out.push((r.start, r.end));
        }
        rest = &rest[inside..];
    }
    if !rest.is_empty() {
        out.push((records.last().map(|r| r.end).unwrap_or_default(), end));
    }
    out
}

/// The leaves being hashed: one checkpoint's range.
struct Range {
    record: usize,
    hashes: Vec<merkle::Hash>,
    /// Exported events in it: (index into `wanted`'s values, leaf).
    wanted: Vec<(usize, u64)>,
}

/// Finds each wanted event (id → index into the result) in the journal up
/// to `end`, with its proof when a checkpoint covers it. `progress` gets
/// the records read so far.
pub fn find(
    store: &Store,
    wanted: &HashMap<String, usize>,
    records: &[Record],
    end: Position,
    mut progress: impl FnMut(u64) -> Result<(), ExportError>,
) -> Result<Vec<Option<Found>>, ExportError> {
    let dir = store.journal.dir();
    let mut found: Vec<Option<Found>> = vec![None; wanted.len()];
    let mut range: Option<Range> = None;
    let mut read = 0u64;
    for (from, until) in spans(store, wanted, records, end) {
        let mut at = from;
        while at < until {
            let (batch, next) =
                journal::read_entries(dir, at, until, BATCH).map_err(|e| ExportError::Read {
                    what: "the event journal".into(),
                    error: e.to_string(),
                })?;
            if batch.is_empty() {
                break;
            }
            for r in &batch {
                take(r, wanted, records, &mut range, &mut found);
            }
            read += batch.len() as u64;
            progress(read)?;
            at = next;
        }
    }
    if let Some(rg) = range.take() {
        finish_range(rg, records, &mut found);
    }
    Ok(found)
}

/// One journal record: hashed into its checkpoint's range, and noted when
/// it is a wanted event.
fn take(
    r: &EntryRead,
    wanted: &HashMap<String, usize>,
    records: &[Record],
    range: &mut Option<Range>,
    found: &mut [Option<Found>],
) {
    let idx = event_id(r).and_then(|id| wanted.get(&id).copied());
    if let Some(leaf) = r.leaf {
        step_range(range, leaf, records, found);
        if let Some(rg) = range.as_mut() {
            rg.hashes.push(r.leaf_hash());
            if let Some(i) = idx {
                rg.wanted.push((i, leaf));
            }
        }
    }
    if let Some(i) = idx {
        found[i] = Some(Found {
            read: r.clone(),
            leaf: r.leaf,
            proof: None,
        });
    }
}

/// Moves the range being hashed to the one covering `leaf` (None when no
/// checkpoint covers it yet), finishing the one it leaves.
fn step_range(
    range: &mut Option<Range>,
    leaf: u64,
    records: &[Record],
    found: &mut [Option<Found>],
) {
    if range
        .as_ref()
        .is_some_and(|rg| records[rg.record].covers(leaf))
    {
        return;
    }
    if let Some(rg) = range.take() {
        finish_range(rg, records, found);
    }
    let i = records.partition_point(|r| r.next_leaf() <= leaf);
    if records.get(i).is_some_and(|r| r.covers(leaf)) {
        *range = Some(Range {
            record: i,
            hashes: Vec::new(),
            wanted: Vec::new(),
        });
    }
}

/// The proofs of the range's exported events, when the journal held the
/// whole range (a damaged stretch leaves them without).
fn finish_range(rg: Range, records: &[Record], found: &mut [Option<Found>]) {
    let c = &records[rg.record];
    if rg.wanted.is_empty() {
        return;
    }
    if rg.hashes.len() as u64 != c.leaves {
        tracing::warn!(
            checkpoint = c.number,
            read = rg.hashes.len(),
            leaves = c.leaves,
            "the journal does not hold every leaf of a checkpoint (damage? run kiroku verify); its events are exported without proof"
        );
        return;
    }
    for (i, leaf) in rg.wanted {
        let path = merkle::inclusion_proof(&rg.hashes, (leaf - c.first_leaf) as usize);
        if let (Some(f), Some(path)) = (found[i].as_mut(), path)
            && f.leaf == Some(leaf)
        {
            f.proof = Some((c.number, path));
        }
    }
}

/// The id of the event a record holds (None: not an event).
fn event_id(r: &EntryRead) -> Option<String> {
    match &r.entry {
        Some(e) => match &e.entry {
            Some(Entry::Event(s)) => s.additions.as_ref().map(|a| a.event_id.clone()),
            _ => None,
        },
        None => Event::decode(r.bytes.as_slice()).ok().map(|e| e.event_id),
    }
}
