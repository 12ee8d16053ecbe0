//! The stream hash chain (issue 18): every queued event carries the
//! SHA-256 of the previous queued event's bytes (`Event.prev_hash`), set in
//! the one place a sequence number is assigned (`queue_in_tx`), in the same
//! sled transaction, so the bytes in `queue` are final the moment they are
//! durable and the shipper sends them untouched. The head (the newest
//! queued event's sequence number and hash) is kept in `meta` beside
//! `next_seq`; it is what `Status` reports, so a rewrite of an event the
//! collector has not received yet is caught when it arrives.
//!
//! A chain starts again (`Event.chain_restart`, `prev_hash` empty) only
//! when the buffer itself lost events: a damaged database moved aside, a
//! stale generation kept aside, or sled's log cut short at a damaged spot.
//! The reason waits in `meta` (`chain_restart`) until the next event takes
//! it, so a restart before that event keeps it.
//!
//! Also here: the signed checkpoints the collector sends back
//! (`Ack.checkpoint`), the last [`CHECKPOINTS_KEPT`] kept in the buffer so
//! a copy of the collector's heads exists outside the collector.

use std::sync::atomic::Ordering;

use kiroku_proto::{Checkpoint, SignedCheckpoint};
use prost::Message;
use sha2::{Digest, Sha256};
use sled::transaction::TransactionalTree;

use super::keyed::SledTx;
use super::store::Store;
use super::{Buffer, BufferError, read_u64};

/// `meta` key of the chain head: seq (u64 BE) followed by the SHA-256 of
/// that event's queued bytes (40 bytes).
pub(super) const CHAIN_HEAD: &[u8] = b"chain_head";
/// `meta` key of a pending chain restart: why the next event starts the
/// chain again (UTF-8).
pub(super) const CHAIN_RESTART: &[u8] = b"chain_restart";
/// The keyed tree holding the collector's signed checkpoints, by number.
const CHECKPOINT_TREE: &str = "checkpoints";
/// How many checkpoints the agent keeps (the newest).
pub const CHECKPOINTS_KEPT: usize = 100;

/// The newest event of the stream's chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: u64,
    /// SHA-256 of the event's bytes as queued (and shipped).
    pub sha256: [u8; 32],
}

impl ChainHead {
    fn encode(&self) -> [u8; 40] {
        let mut out = [0u8; 40];
        out[..8].copy_from_slice(&self.seq.to_be_bytes());
        out[8..].copy_from_slice(&self.sha256);
        out
    }

    fn decode(v: &[u8]) -> Option<ChainHead> {
        let v: &[u8; 40] = v.try_into().ok()?;
        Some(ChainHead {
            seq: read_u64(Some(&v[..8])),
            sha256: v[8..].try_into().ok()?,
        })
    }
}

/// What the event queued under `seq` links to: `(prev_hash, chain_restart)`.
/// Inside the queueing transaction.
pub(super) fn link_in_tx(meta: &TransactionalTree, seq: u64) -> SledTx<(Vec<u8>, String)> {
    let pending = meta
        .get(CHAIN_RESTART)?
        .map(|v| String::from_utf8_lossy(&v).into_owned());
    let head = meta.get(CHAIN_HEAD)?;
    let head = head.as_deref().map(ChainHead::decode);
    Ok(link(head, pending, seq))
}

/// The rule of [`link_in_tx`], apart from sled: `head` is `None` when no
/// head is stored, `Some(None)` when one is stored but unreadable.
fn link(head: Option<Option<ChainHead>>, pending: Option<String>, seq: u64) -> (Vec<u8>, String) {
    if let Some(why) = pending {
        return (Vec::new(), why);
    }
    match head {
        // The first event of a stream (or of a buffer written by a version
        // before the chain): nothing precedes it in a chain.
        None => (Vec::new(), String::new()),
        Some(Some(h)) if h.seq.checked_add(1) == Some(seq) => (h.sha256.to_vec(), String::new()),
        Some(Some(h)) => (
            Vec::new(),
            format!(
                "the agent's buffer lost its chain: the newest chained event is {} but this one is {seq}; events in between are not in the buffer",
                h.seq
            ),
        ),
        Some(None) => (
            Vec::new(),
            "the agent's buffer holds an unreadable chain head; the chain starts again here".into(),
        ),
    }
}

/// Makes the event just queued under `seq` (`bytes`, as queued) the head,
/// and clears a pending restart it took. Inside the queueing transaction.
pub(super) fn advance_in_tx(meta: &TransactionalTree, seq: u64, bytes: &[u8]) -> SledTx<()> {
    let head = ChainHead {
        seq,
        sha256: Sha256::digest(bytes).into(),
    };
    meta.insert(CHAIN_HEAD, &head.encode()[..])?;
    meta.remove(CHAIN_RESTART)?;
    Ok(())
}

impl Buffer {
    /// The head of the stream's chain as far as it is durable: the newest
    /// durable event's sequence number and hash, for `Status`. `None`
    /// before the first chained event (or while the buffer is closed).
    pub fn chain_head(&self) -> Option<ChainHead> {
        let durable = self.ledger.durable_seq.load(Ordering::SeqCst);
        self.with_store(|s| {
            let err = |e| self.sled_err(e);
            let head = s
                .meta
                .get(CHAIN_HEAD)
                .map_err(err)?
                .and_then(|v| ChainHead::decode(&v));
            match head {
                Some(h) if h.seq <= durable => Ok(Some(h)),
                // A newer event is committed but not flushed yet: report
                // the newest durable one, while it is still queued.
                Some(_) => {
                    Ok(s.queue
                        .get(durable.to_be_bytes())
                        .map_err(err)?
                        .map(|v| ChainHead {
                            seq: durable,
                            sha256: Sha256::digest(&v).into(),
                        }))
                }
                None => Ok(None),
            }
        })
        .ok()
        .flatten()
    }

    /// Makes the next queued event start the chain again, saying `why`
    /// (kept in `meta` until an event takes it). Called while a database is
    /// being made current, after the buffer found it lost events.
    pub(super) fn restart_chain(&self, store: &Store, why: &str) -> Result<(), BufferError> {
        let err = |source| BufferError::Sled {
            path: store.path.clone(),
            source,
        };
        store
            .meta
            .insert(CHAIN_RESTART, why.as_bytes())
            .map_err(err)?;
        store.db.flush().map_err(err)?;
        tracing::warn!(reason = %why, "the next event of this agent's stream starts its hash chain again");
        Ok(())
    }

    /// Keeps a signed checkpoint the collector sent (`Ack.checkpoint`), the
    /// newest [`CHECKPOINTS_KEPT`] by number, and logs what it covers.
    /// Returns its number. A checkpoint that does not decode is refused
    /// (logged by the caller), never kept.
    pub fn keep_checkpoint(&self, signed: &[u8]) -> Result<u64, BufferError> {
        let corrupt = |message: String| BufferError::Corrupt {
            path: self.dir.clone(),
            key: CHECKPOINT_TREE.into(),
            message,
        };
        let outer = SignedCheckpoint::decode(signed)
            .map_err(|e| corrupt(format!("the collector sent an unreadable checkpoint: {e}")))?;
        let ckp = Checkpoint::decode(outer.checkpoint.as_slice()).map_err(|e| {
            corrupt(format!(
                "the collector sent a checkpoint whose content does not decode: {e}"
            ))
        })?;
        let stream = self.stream_id();
        let ours = ckp.streams.iter().find(|h| h.stream_id == stream);
        self.with_store(|s| {
            let err = |e| self.sled_err(e);
            let tree = s.db.open_tree(CHECKPOINT_TREE).map_err(err)?;
            tree.insert(ckp.number.to_be_bytes(), signed).map_err(err)?;
            while tree.len() > CHECKPOINTS_KEPT {
                if tree.pop_min().map_err(err)?.is_none() {
                    break;
                }
            }
            Ok(())
        })?;
        tracing::info!(
            checkpoint = ckp.number,
            collector = %ckp.collector,
            leaves = ckp.leaves,
            merkle_root = %hex::encode(&ckp.merkle_root),
            signed = !outer.signature.is_empty(),
            time_stamped = !outer.timestamp_token.is_empty(),
            stream_seq = ours.map(|h| h.seq),
            stream_head = %ours.map(|h| hex::encode(&h.sha256)).unwrap_or_default(),
            "kept the collector's signed checkpoint"
        );
        Ok(ckp.number)
    }

    /// The kept checkpoints (encoded `SignedCheckpoint`s), oldest first.
    pub fn checkpoints(&self) -> Result<Vec<Vec<u8>>, BufferError> {
        self.with_store(|s| {
            let err = |e| self.sled_err(e);
            let tree = s.db.open_tree(CHECKPOINT_TREE).map_err(err)?;
            tree.iter()
                .values()
                .map(|v| v.map(|v| v.to_vec()).map_err(err))
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{ChainHead, link};

    #[test]
    fn link_rules() {
        let h = |seq| ChainHead {
            seq,
            sha256: [7; 32],
        };
        let why = || Some("moved aside".to_owned());
        // (head, pending restart, seq) → (prev_hash set, restart said)
        type Stored = Option<Option<ChainHead>>;
        let cases: Vec<(Stored, Option<String>, u64, bool, bool)> = vec![
            (None, None, 1, false, false),
            (None, None, 9, false, false),
            (Some(Some(h(4))), None, 5, true, false),
            (Some(Some(h(4))), None, 7, false, true),
            (Some(Some(h(4))), None, 4, false, true),
            (Some(Some(h(4))), why(), 5, false, true),
            (None, why(), 1, false, true),
            (Some(None), None, 5, false, true),
        ];
        for (head, pending, seq, prev, restart) in cases {
            let (p, r) = link(head, pending.clone(), seq);
            assert_eq!(
                (!p.is_empty(), !r.is_empty()),
                (prev, restart),
                "{head:?} {pending:?} {seq}"
            );
            if prev {
                assert_eq!(p, vec![7; 32]);
            }
        }
        assert_eq!(h(3), ChainHead::decode(&h(3).encode()).expect("decodes"));
        assert_eq!(ChainHead::decode(&[1, 2, 3]), None);
    }
}
