//! Purged entries (issue 19, ARCHITECTURE.md "Tombstones"): a `KRJS` stub
//! is explained — reported as `purged`, not an alteration — when a
//! tombstone names its leaf with the same entry SHA-256 and an admin audit
//! entry (`Retention` or `Erasure`) covers that tombstone's leaf
//! (`tombstones at leaves A-B` in its detail). A stub without a
//! tombstone, a tombstone whose hash differs from the stub's, or one no
//! audit entry covers is an alteration. A tombstone whose entry is still
//! whole is a purge not finished yet (explained).

use std::collections::HashMap;

use kiroku_proto::Tombstone;

use super::{Findings, hex8, where_at};
use crate::store::Store;
use crate::store::audit::{KIND_ADMIN, admin_call};
use crate::store::journal::Position;
use crate::store::purge::tombstone_range;

struct Tomb {
    own_leaf: u64,
    entry_sha256: Vec<u8>,
    event_id: String,
    by: String,
    reason: String,
    at_ms: i64,
    at: Position,
}

#[derive(Default)]
pub struct Purged {
    /// Stubs: leaf → (entry SHA-256 kept, where).
    stubs: HashMap<u64, ([u8; 32], Position)>,
    /// Tombstones by the leaf they purge.
    tombs: HashMap<u64, Tomb>,
}

impl Purged {
    pub fn stub(&mut self, leaf: u64, entry_sha256: [u8; 32], at: Position) {
        self.stubs.insert(leaf, (entry_sha256, at));
    }

    pub fn tombstone(&mut self, t: &Tombstone, own_leaf: u64, at: Position) {
        self.tombs.insert(
            t.leaf,
            Tomb {
                own_leaf,
                entry_sha256: t.entry_sha256.clone(),
                event_id: t.event_id.clone(),
                by: t.by.clone(),
                reason: t.reason.clone(),
                at_ms: t.at_ms,
                at,
            },
        );
    }

    /// The events a tombstone names: the journal and the index may both
    /// lack them, or either still hold them (a purge not finished yet),
    /// and the blobs they named may be gone.
    pub fn tombstoned_ids(&self) -> impl Iterator<Item = &str> {
        self.tombs.values().map(|t| t.event_id.as_str())
    }

    /// The audit entries' tombstone ranges, sorted.
    fn audited(store: &Store) -> anyhow::Result<Vec<(u64, u64)>> {
        let (seq, _) = store.audit.head();
        let mut out = Vec::new();
        if seq == 0 {
            return Ok(out);
        }
        store.audit.each_line_until(seq, |_, e| {
            if e.kind == KIND_ADMIN
                && (e.call == admin_call::RETENTION || e.call == admin_call::ERASURE)
                && let Some(r) = tombstone_range(&e.detail)
            {
                out.push(r);
            }
        })?;
        out.sort_unstable();
        Ok(out)
    }

    /// Reports every stub and tombstone (see the module documentation).
    pub fn finish(self, store: &Store, f: &mut Findings) -> anyhow::Result<()> {
        if self.stubs.is_empty() && self.tombs.is_empty() {
            return Ok(());
        }
        let audited = Self::audited(store)?;
        let covered = |leaf: u64| {
            let i = audited.partition_point(|(a, _)| *a <= leaf);
            audited[..i]
                .iter()
                .rev()
                .take(64)
                .any(|(a, b)| *a <= leaf && leaf <= *b)
        };
        let mut stubs: Vec<_> = self.stubs.iter().collect();
        stubs.sort_unstable_by_key(|(l, _)| **l);
        for (leaf, (sha, at)) in stubs {
            let Some(t) = self.tombs.get(leaf) else {
                f.add(
                    "altered",
                    where_at(*at),
                    "",
                    format!("leaf {leaf} is a purged entry's stub, but no tombstone names it: the entry was removed without a purge"),
                    true,
                );
                f.flagged.insert(*leaf);
                continue;
            };
            if t.entry_sha256.as_slice() != sha {
                f.add(
                    "altered",
                    where_at(*at),
                    &t.event_id,
                    format!(
                        "leaf {leaf} is a stub of an entry hashing to {}…, but its tombstone (leaf {}, {}) names {}…",
                        hex8(sha),
                        t.own_leaf,
                        where_at(t.at),
                        hex8(&t.entry_sha256)
                    ),
                    true,
                );
                f.flagged.insert(*leaf);
                continue;
            }
            if !covered(t.own_leaf) {
                f.add(
                    "altered",
                    where_at(t.at),
                    &t.event_id,
                    format!(
                        "the tombstone of leaf {leaf} (leaf {}) has no Retention or Erasure entry in the audit log: the purge was not recorded",
                        t.own_leaf
                    ),
                    true,
                );
                continue;
            }
            f.add(
                "purged",
                where_at(*at),
                &t.event_id,
                format!(
                    "leaf {leaf} purged by {} at {}: {} (tombstone leaf {})",
                    t.by,
                    kiroku_common::rfc3339_ms(t.at_ms),
                    t.reason,
                    t.own_leaf
                ),
                false,
            );
        }
        let mut pending: Vec<_> = self
            .tombs
            .iter()
            .filter(|(l, _)| !self.stubs.contains_key(l))
            .collect();
        pending.sort_unstable_by_key(|(l, _)| **l);
        for (leaf, t) in pending {
            f.add(
                "purge_pending",
                where_at(t.at),
                &t.event_id,
                format!(
                    "tombstone (leaf {}) of leaf {leaf}, whose entry is still whole: a purge not finished yet (the next purge or start finishes it)",
                    t.own_leaf
                ),
                false,
            );
        }
        Ok(())
    }
}
