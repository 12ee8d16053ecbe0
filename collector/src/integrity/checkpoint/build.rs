//! Reading the journal leaves a checkpoint covers, and finding again what
//! a crash left half written. Blocking (file reads).

use std::path::Path;

use kiroku_proto::journal_entry::Entry;

use super::ledger::{Ledger, LedgerError, Record};
use crate::integrity::merkle::{self, TreeBuilder};
use crate::store::journal::{self, JournalError, Position};

/// Records read from the journal at a time.
const READ_BATCH: usize = 4096;

/// What the journal holds from one position on, as one Merkle tree.
#[derive(Debug, Clone)]
pub struct Range {
    pub first_leaf: u64,
    pub leaves: u64,
    pub root: merkle::Hash,
    /// SHA-256 of the last entry (the chain's head at `end`).
    pub last_hash: [u8; 32],
    pub start: Position,
    /// Just after the last leaf covered (or `until` when none follows).
    pub end: Position,
    /// Leaves the range should have begun with but that the journal does
    /// not hold (damage): `[expected, first_leaf)`.
    pub missing_before: Option<(u64, u64)>,
    /// The range stopped short at a hole in the leaf numbers: the next
    /// leaf present.
    pub stopped_at_gap: Option<u64>,
    /// The store's layout generation `start` and `end` were read under
    /// (`Store::layout_generation`; set by the caller).
    pub layout_generation: u64,
}

/// The leaves from `start` up to `until` (a durable journal end), expected
/// to begin with leaf `expected`. Leaves must be consecutive: at a hole
/// (damage, or an entry removed) the range ends before it, so that every
/// checkpoint is one well-formed tree and the hole shows between two
/// checkpoints. `KRJ1` records (no leaf) are passed over.
pub fn read_range(
    dir: &Path,
    start: Position,
    until: Position,
    expected: u64,
) -> Result<Range, JournalError> {
    let mut tree = TreeBuilder::default();
    let mut r = Range {
        first_leaf: expected,
        leaves: 0,
        root: merkle::empty_root(),
        last_hash: [0; 32],
        start,
        end: until,
        missing_before: None,
        stopped_at_gap: None,
        layout_generation: 0,
    };
    let mut at = start;
    let mut next = expected;
    'read: while at < until {
        let (reads, after) = journal::read_entries(dir, at, until, READ_BATCH)?;
        for read in reads {
            let Some(leaf) = read.leaf else {
                continue;
            };
            if tree.leaves() == 0 {
                if leaf != expected {
                    r.missing_before = Some((expected, leaf));
                }
                r.first_leaf = leaf;
            } else if leaf != next {
                r.end = read.at;
                r.stopped_at_gap = Some(leaf);
                break 'read;
            }
            tree.push(read.leaf_hash());
            r.last_hash = read.entry_hash();
            next = leaf + 1;
        }
        at = after;
    }
    r.leaves = tree.leaves();
    r.root = tree.root();
    Ok(r)
}

/// Leaf hashes of `record`'s leaves, and the payload of leaf `want` among
/// them (a proof's entry).
pub fn leaves_of(
    dir: &Path,
    record: &Record,
    want: u64,
) -> Result<(Vec<merkle::Hash>, Option<Vec<u8>>), JournalError> {
    let mut hashes = Vec::with_capacity(usize::try_from(record.leaves).unwrap_or(0));
    let mut entry = None;
    let mut at = record.start;
    while at < record.end {
        let (reads, after) = journal::read_entries(dir, at, record.end, READ_BATCH)?;
        for read in reads {
            let Some(leaf) = read.leaf.filter(|l| record.covers(*l)) else {
                continue;
            };
            hashes.push(read.leaf_hash());
            // A purged entry's stub proves nothing: its content is gone.
            if leaf == want && !read.is_stub() {
                entry = Some(read.bytes);
            }
        }
        at = after;
    }
    Ok((hashes, entry))
}

/// The position just after leaf `leaf`'s record, looked for from `from`
/// to `until` (a range's end found again after a purge moved offsets).
pub fn end_after_leaf(
    dir: &Path,
    from: Position,
    until: Position,
    leaf: u64,
) -> Result<Option<Position>, JournalError> {
    let mut at = from;
    while at < until {
        let (reads, after) = journal::read_entries(dir, at, until, READ_BATCH)?;
        for read in &reads {
            if read.leaf == Some(leaf) {
                return Ok(Some(Position {
                    segment: read.at.segment,
                    offset: read.at.offset + read.len,
                }));
            }
        }
        if reads.is_empty() {
            break;
        }
        at = after;
    }
    Ok(None)
}

/// The payload of leaf `want`, looked for from `from` to `until`.
pub fn entry_of(
    dir: &Path,
    from: Position,
    until: Position,
    want: u64,
) -> Result<Option<Vec<u8>>, JournalError> {
    let mut at = from;
    while at < until {
        let (reads, after) = journal::read_entries(dir, at, until, READ_BATCH)?;
        for read in reads {
            if read.leaf == Some(want) {
                return Ok((!read.is_stub()).then_some(read.bytes));
            }
        }
        at = after;
    }
    Ok(None)
}

/// What start-up found of a checkpoint whose writing a crash cut short.
#[derive(Debug)]
pub enum Unfinished {
    /// Its file and its journal mark exist: the record was written now.
    Completed(Record),
    /// Its file exists without a mark: moved aside, to be written again.
    SetAside(std::path::PathBuf),
}

/// Checkpoint files newer than the ledger's newest record. A checkpoint is
/// complete once its CheckpointMark is in the journal (the mark is
/// appended after the file is durable, the record after the mark).
pub fn recover(
    ledger: &Ledger,
    journal_dir: &Path,
    last: Option<&Record>,
    until: Position,
) -> Result<Vec<Unfinished>, RecoverError> {
    let mut out = Vec::new();
    let mut last = last.copied();
    let after = last.map_or(0, |r| r.number);
    for number in ledger.files_after(after)? {
        let expected = last.map_or(1, |r| r.number + 1);
        let found = if number == expected {
            complete(ledger, journal_dir, last.as_ref(), number, until)?
        } else {
            None
        };
        match found {
            Some(r) => {
                ledger.put(&r)?;
                last = Some(r);
                out.push(Unfinished::Completed(r));
            }
            None => out.push(Unfinished::SetAside(ledger.set_aside(number)?)),
        }
    }
    Ok(out)
}

#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// The record of checkpoint `number` (file present), if its mark is in
/// the journal after the previous checkpoint.
fn complete(
    ledger: &Ledger,
    journal_dir: &Path,
    prev: Option<&Record>,
    number: u64,
    until: Position,
) -> Result<Option<Record>, RecoverError> {
    use prost::Message;
    let Ok(signed) = ledger.read(number) else {
        return Ok(None);
    };
    let Ok(cp) = kiroku_proto::Checkpoint::decode(signed.checkpoint.as_slice()) else {
        return Ok(None);
    };
    let sha = crate::store::journal::entry::sha256(&signed.checkpoint);
    let start = prev.map_or(Position::default(), |r| r.end);
    let last_leaf = cp.first_leaf.saturating_add(cp.leaves).checked_sub(1);
    let mut end = start;
    let mut at = start;
    while at < until {
        let (reads, after) = journal::read_entries(journal_dir, at, until, READ_BATCH)?;
        for read in reads {
            if cp.leaves > 0 && read.leaf == last_leaf {
                end = Position {
                    segment: read.at.segment,
                    offset: read.at.offset + read.len,
                };
            }
            let mark = match read.entry.and_then(|e| e.entry) {
                Some(Entry::Checkpoint(m)) => m,
                _ => continue,
            };
            if mark.number == number && mark.checkpoint_sha256 == sha {
                return Ok(Some(Record {
                    number,
                    first_leaf: cp.first_leaf,
                    leaves: cp.leaves,
                    start,
                    end,
                    sha256: sha,
                    mark_leaf: read.leaf.unwrap_or_default(),
                }));
            }
        }
        at = after;
    }
    Ok(None)
}
