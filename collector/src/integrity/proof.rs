//! Inclusion proofs of stored events: event → its journal leaf
//! (`Store::leaf_of`) → the checkpoint covering it (`ledger.rs`, a binary
//! search) → that checkpoint's journal range read once → RFC 6962 PATH.
//! Blocking (journal reads); the `GetProof` rpc and case export use it.

use kiroku_proto::{InclusionProof, SignedCheckpoint};

use super::checkpoint::build;
use super::checkpoint::ledger::{Ledger, LedgerError};
use super::merkle;
use crate::store::Store;
use crate::store::journal::JournalError;

#[derive(Debug, thiserror::Error)]
pub enum ProveError {
    #[error("no event {0} with a journal leaf (unknown, or stored before journal chaining)")]
    NoLeaf(String),
    #[error(
        "journal leaf {0} is not in the journal (damaged or removed; `kiroku verify` names it)"
    )]
    NoEntry(u64),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("{0}")]
    Store(String),
}

impl From<ProveError> for tonic::Status {
    fn from(e: ProveError) -> tonic::Status {
        match e {
            ProveError::NoLeaf(_) | ProveError::NoEntry(_) => {
                tonic::Status::not_found(e.to_string())
            }
            other => tonic::Status::internal(other.to_string()),
        }
    }
}

/// A proof and the signed checkpoint it leads to (`None`: no checkpoint
/// covers the leaf yet; the proof then has the entry and an empty path).
pub struct Proven {
    pub proof: InclusionProof,
    pub checkpoint: Option<SignedCheckpoint>,
}

/// The proof of event `event_id` in the newest checkpoint covering it.
pub fn prove_event(store: &Store, event_id: &str) -> Result<Proven, ProveError> {
    let leaf = store
        .leaf_of(event_id)
        .map_err(|e| ProveError::Store(format!("{e:#}")))?
        .ok_or_else(|| ProveError::NoLeaf(event_id.to_owned()))?;
    let mut p = prove_leaf(store, leaf)?;
    p.proof.event_id = event_id.to_owned();
    Ok(p)
}

/// The proof of journal leaf `leaf`.
pub fn prove_leaf(store: &Store, leaf: u64) -> Result<Proven, ProveError> {
    // The ledger's positions are read, then the journal at them.
    let _layout = store.layout_read();
    let ledger = Ledger::open(&store.dir, &store.meta)?;
    let dir = store.journal.dir();
    let Some(record) = ledger.covering(leaf)? else {
        // Not covered yet: the entry lies after the newest checkpoint.
        let from = ledger.last()?.map(|r| r.end).unwrap_or_default();
        let entry = build::entry_of(dir, from, store.journal.head().end, leaf)?
            .ok_or(ProveError::NoEntry(leaf))?;
        return Ok(Proven {
            proof: InclusionProof {
                leaf,
                entry,
                ..Default::default()
            },
            checkpoint: None,
        });
    };
    let (hashes, entry) = build::leaves_of(dir, &record, leaf)?;
    let entry = entry.ok_or(ProveError::NoEntry(leaf))?;
    let index = usize::try_from(leaf - record.first_leaf).unwrap_or(usize::MAX);
    let path = merkle::inclusion_proof(&hashes, index).ok_or(ProveError::NoEntry(leaf))?;
    Ok(Proven {
        proof: InclusionProof {
            event_id: String::new(),
            checkpoint: record.number,
            leaf,
            entry,
            path: path.into_iter().map(|h| h.to_vec()).collect(),
        },
        checkpoint: Some(ledger.read(record.number)?),
    })
}
