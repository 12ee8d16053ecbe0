//! Where each exported event is in the journal, and its inclusion proof:
//! one pass over the journal up to its head (taken when the export
//! starts), so the cost does not depend on how many events a case holds.
//! The leaves of each checkpoint's range are hashed as they pass; when a
//! range that holds an exported event ends, the proofs of its events are
//! cut from those hashes and the hashes dropped, so memory is one range's
//! leaves (32 bytes each) at most.
//!
//! The journal may hold an event twice (a batch stored again after a lost
//! ack); the last copy is taken, as the index serves it.

use std::collections::HashMap;
use std::path::Path;

use kiroku_proto::journal_entry::Entry;
use kiroku_proto::{Checkpoint, Event, SignedCheckpoint};
use prost::Message;

use super::ExportError;
use crate::integrity::merkle;
use crate::store::Store;
use crate::store::journal::{self, EntryRead, Position};

/// Records read from the journal at a time.
const BATCH: usize = 4096;

/// One signed checkpoint as stored (`checkpoints/<n>.ckp`), decoded.
#[derive(Debug, Clone)]
pub struct StoredCheckpoint {
    pub signed: SignedCheckpoint,
    pub content: Checkpoint,
}

/// Where an exported event's journal entry is, and its proof.
#[derive(Debug, Clone, Default)]
pub struct Found {
    pub at: Position,
    /// None: a `KRJ1` record, outside the chain.
    pub leaf: Option<u64>,
    /// The checkpoint covering the leaf and the audit path in its tree.
    pub proof: Option<(u64, Vec<merkle::Hash>)>,
}

/// The signed checkpoints of a data directory, by first leaf. A file that
/// does not decode is skipped with an error in the log (`kiroku verify`
/// reports it); the events it covered go without proof.
pub fn checkpoints(data_dir: &Path) -> Result<Vec<StoredCheckpoint>, ExportError> {
    let dir = data_dir.join("checkpoints");
    let read_err = |e: std::io::Error| ExportError::Read {
        what: dir.display().to_string(),
        error: e.to_string(),
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(read_err(e)),
    };
    let mut out = Vec::new();
    for ent in entries {
        let path = ent.map_err(read_err)?.path();
        if path.extension().is_none_or(|x| x != "ckp") {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(read_err)?;
        let decoded = SignedCheckpoint::decode(bytes.as_slice()).and_then(|signed| {
            Checkpoint::decode(signed.checkpoint.as_slice()).map(|content| (signed, content))
        });
        match decoded {
            Ok((signed, content)) => out.push(StoredCheckpoint { signed, content }),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "a checkpoint file does not decode; the events it covers are exported without proof (run kiroku verify)");
            }
        }
    }
    out.sort_by_key(|c| c.content.first_leaf);
    Ok(out)
}

/// The leaves being hashed: one checkpoint's range.
struct Range {
    checkpoint: usize,
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
    checkpoints: &[StoredCheckpoint],
    end: Position,
    mut progress: impl FnMut(u64) -> Result<(), ExportError>,
) -> Result<Vec<Option<Found>>, ExportError> {
    let dir = store.journal.dir();
    let mut found: Vec<Option<Found>> = vec![None; wanted.len()];
    let mut range: Option<Range> = None;
    let mut at = Position::default();
    let mut records = 0u64;
    loop {
        let (batch, next) =
            journal::read_entries(dir, at, end, BATCH).map_err(|e| ExportError::Read {
                what: "the event journal".into(),
                error: e.to_string(),
            })?;
        if batch.is_empty() {
            break;
        }
        for r in &batch {
            let idx = event_id(r).and_then(|id| wanted.get(&id).copied());
            if let Some(leaf) = r.leaf {
                step_range(&mut range, leaf, checkpoints, &mut found);
                if let Some(rg) = range.as_mut() {
                    rg.hashes.push(merkle::leaf_hash(&r.bytes));
                    if let Some(i) = idx {
                        rg.wanted.push((i, leaf));
                    }
                }
            }
            if let Some(i) = idx {
                found[i] = Some(Found {
                    at: r.at,
                    leaf: r.leaf,
                    proof: None,
                });
            }
        }
        records += batch.len() as u64;
        progress(records)?;
        at = next;
    }
    if let Some(rg) = range.take() {
        finish_range(rg, checkpoints, &mut found);
    }
    Ok(found)
}

/// Moves the range being hashed to the one covering `leaf` (None when no
/// checkpoint covers it yet), finishing the one it leaves.
fn step_range(
    range: &mut Option<Range>,
    leaf: u64,
    checkpoints: &[StoredCheckpoint],
    found: &mut [Option<Found>],
) {
    let covers = |c: &StoredCheckpoint| {
        leaf >= c.content.first_leaf && leaf - c.content.first_leaf < c.content.leaves
    };
    if range
        .as_ref()
        .is_some_and(|rg| covers(&checkpoints[rg.checkpoint]))
    {
        return;
    }
    if let Some(rg) = range.take() {
        finish_range(rg, checkpoints, found);
    }
    let i = checkpoints.partition_point(|c| c.content.first_leaf + c.content.leaves <= leaf);
    if checkpoints.get(i).is_some_and(covers) {
        *range = Some(Range {
            checkpoint: i,
            hashes: Vec::new(),
            wanted: Vec::new(),
        });
    }
}

/// The proofs of the range's exported events, when the journal held the
/// whole range (a damaged stretch leaves them without).
fn finish_range(rg: Range, checkpoints: &[StoredCheckpoint], found: &mut [Option<Found>]) {
    let c = &checkpoints[rg.checkpoint].content;
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

/// The record at `at` (read again for its files).
pub fn read_at(store: &Store, at: Position, end: Position) -> Result<EntryRead, ExportError> {
    let err = |error: String| ExportError::Read {
        what: format!(
            "the journal record at segment {} offset {}",
            at.segment, at.offset
        ),
        error,
    };
    let (mut batch, _) =
        journal::read_entries(store.journal.dir(), at, end, 1).map_err(|e| err(e.to_string()))?;
    match batch.pop() {
        Some(r) if r.at == at => Ok(r),
        _ => Err(err(
            "it is no longer there (damaged since the export began?)".into(),
        )),
    }
}
