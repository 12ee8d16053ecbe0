//! Purging events (issue 19), as ARCHITECTURE.md "Tombstones" designs it:
//! a `Tombstone` entry per journal record of the event and an admin audit
//! entry first, then the event dropped from the index (segments merged so
//! the space is freed), its journal records replaced by `KRJS` stubs (the
//! segment rewritten, the checkpoint positions that name it re-found by
//! leaf), and its blobs deleted once nothing live names them.
//!
//! Callers decide *what* to purge (retention past its grace period and not
//! held, or erasure on request, holds checked); this decides nothing.
//!
//! Order and crash safety: what is promised is written to the metadata
//! (`purge/state.rs`) before each step, so a purge cut short anywhere is
//! finished by the next call or at open: the records to stub (flushed
//! before the tombstones are appended), the tombstones (durable, then
//! noted), the audit entry, the index delete (idempotent), each segment's
//! rewrite (scratch file, anchors noted, rename, ledger re-anchored) and
//! the blobs (removed only when no indexed event names them and no agent
//! claimed them in the last [`BLOB_GRACE_MS`]).
//!
//! Deferred (said in [`PurgeReport::deferred`], taken by a later call):
//! everything while an index rebuild runs (`index.next/`: its resume
//! point is a journal position a rewrite would move), and events the
//! index does not know (already purged, or never indexed). A victim in
//! the segment being appended to is not deferred: the journal is rolled
//! over to a new segment first, so that one can be rewritten.

mod finish;
mod locate;
mod state;
mod sweep;
#[cfg(test)]
mod tests;

use crate::store::audit::{self, admin_call};
use kiroku_proto::Tombstone;
use kiroku_proto::journal_entry::Entry;

pub use state::Pending;

/// One event to purge and why (goes into its tombstone).
#[derive(Clone, Debug)]
pub struct Victim {
    pub event_id: String,
    /// e.g. "retention: email kept 5y (kind email)" or
    /// "erased on request: <reason>".
    pub reason: String,
}

/// What a purge did.
#[derive(Clone, Debug, Default)]
pub struct PurgeReport {
    pub purged: u64,
    pub tombstones: u64,
    pub journal_bytes_freed: u64,
    pub index_deleted: u64,
    pub blobs_removed: u64,
    pub blob_bytes_freed: u64,
    /// Events not purged now and why (e.g. in the journal segment being
    /// written, an index rebuild in progress); a later run takes them.
    pub deferred: Vec<(String, String)>,
    /// Index segments merged to free the purged documents' space.
    pub index_segments_merged: u64,
    /// Blobs no live event names that were spared because an agent
    /// claimed them recently (removed by a later purge).
    pub blobs_spared: u64,
    /// Purged records (tombstoned, out of the index) whose large segment
    /// is rewritten later: once a quarter of it is purged, or by
    /// [`Store::compact_purged`].
    pub stubs_pending: u64,
}

/// `by` for purges the retention policy decided (its audit entries are
/// the collector's, call [`admin_call::RETENTION`]); any other `by` is an
/// admin identity erasing on request ([`admin_call::ERASURE`]).
pub const RETENTION_BY: &str = "retention policy";

/// A blob an agent claimed (told it is held, or uploaded it) within this
/// long is never removed: the event naming it may not be shipped yet.
pub const BLOB_GRACE_MS: i64 = 24 * 3600 * 1000;

/// The events a purge has tombstoned whose journal records are not stubs
/// yet (meta tree `purge_pending`): whoever rebuilds the index from the
/// journal (`repair`) leaves them out.
pub fn pending_event_ids(
    meta: &crate::store::meta::MetaStore,
) -> anyhow::Result<std::collections::HashSet<String>> {
    Ok(state::State::open(meta)?
        .all()?
        .into_iter()
        .filter(|p| p.tombstone.is_some())
        .map(|p| p.event_id)
        .collect())
}

/// Meta tree of every event id a purge has tombstoned (kept for good):
/// a copy of it found whole elsewhere in the journal (a batch journalled
/// twice across a segment roll) is purged, not missing from the index.
pub const PURGED_TREE: &str = "purged_events";

/// Whether a purge has tombstoned `event_id` (see [`PURGED_TREE`]).
pub fn was_purged(meta: &crate::store::meta::MetaStore, event_id: &str) -> anyhow::Result<bool> {
    meta.tree(PURGED_TREE)?
        .contains_key(event_id.as_bytes())
        .map_err(|e| anyhow::anyhow!("meta tree {PURGED_TREE}: {e}"))
}

/// The part of an admin audit entry's detail naming the tombstones it
/// covers (`verify` finds a tombstone's entry by it).
pub fn tombstone_range(detail: &str) -> Option<(u64, u64)> {
    let rest = detail.split("tombstones at leaves ").nth(1)?;
    let range: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '-')
        .collect();
    let (a, b) = range.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

impl super::Store {
    /// Purges `victims` (see the module documentation); `by` is the policy
    /// ([`RETENTION_BY`]) or the admin identity. Crash-safe: a purge cut
    /// short is finished by the next call or at open.
    pub fn purge(&self, victims: &[Victim], by: &str) -> anyhow::Result<PurgeReport> {
        let _one = self.purging.lock().unwrap_or_else(|p| p.into_inner());
        let mut report = PurgeReport::default();
        self.finish_purges(&mut report, false)?;
        if victims.is_empty() {
            return Ok(report);
        }
        if let Some(why) = self.purge_blocked() {
            report
                .deferred
                .extend(victims.iter().map(|v| (v.event_id.clone(), why.clone())));
            return Ok(report);
        }
        self.promise(victims, by, &mut report)?;
        // 4.–6. Index, journal, blobs.
        self.finish_purges(&mut report, false)?;
        Ok(report)
    }

    /// Rewrites every journal segment that still holds purged records
    /// (those a purge left for later: [`PurgeReport::stubs_pending`]) and
    /// removes the blobs that frees. Maintenance calls it at the end of a
    /// run; idempotent.
    pub fn compact_purged(&self) -> anyhow::Result<PurgeReport> {
        let _one = self.purging.lock().unwrap_or_else(|p| p.into_inner());
        let mut report = PurgeReport::default();
        self.finish_purges(&mut report, true)?;
        Ok(report)
    }

    /// Steps 1–3: what will be stubbed (flushed), the tombstones (durable,
    /// noted), the audit entry due (written by [`Store::finish_purges`]).
    fn promise(
        &self,
        victims: &[Victim],
        by: &str,
        report: &mut PurgeReport,
    ) -> anyhow::Result<()> {
        let st = state::State::open(&self.meta)?;
        let found = locate::locate(self, &st, victims, by, report)?;
        if found.records.is_empty() {
            return Ok(());
        }
        // 1. The promise: what will be stubbed, where the tombstones go.
        st.set_intent_from(Some(self.journal.end()))?;
        for p in &found.records {
            st.put(p)?;
        }
        for sha in &found.blobs {
            st.add_blob(sha)?;
        }
        let purged = self.meta.tree(PURGED_TREE)?;
        for id in &found.events {
            purged
                .insert(id.as_bytes(), &crate::clock::now_ms().to_be_bytes())
                .map_err(|e| anyhow::anyhow!("meta tree {PURGED_TREE}: {e}"))?;
        }
        self.meta.flush()?;
        // 2. The tombstones, durable, then noted.
        let (first, last) = self.append_tombstones(&st, &found.records)?;
        // 3. The admin audit entry, due (a crash before it is written
        //    writes it at the next purge or start).
        let ids: Vec<String> = found.events.iter().cloned().collect();
        st.set_audit(Some(&audit_due(by, &found.records, &ids, first, last)))?;
        self.meta.flush()?;
        report.purged += ids.len() as u64;
        report.tombstones += found.records.len() as u64;
        Ok(())
    }

    /// Why no purge can start now, if so: an index rebuild in progress
    /// (its resume point is a journal position a rewrite would move).
    fn purge_blocked(&self) -> Option<String> {
        (self.index.rebuild_status().is_some() || self.dir.join("index.next").exists()).then(|| {
            "an index rebuild (index.next) is in progress; purging waits until it has finished"
                .to_owned()
        })
    }

    /// Appends a tombstone for each record still without one, durable, and
    /// notes their leaves; returns the first and last tombstone leaf.
    fn append_tombstones(
        &self,
        st: &state::State,
        records: &[Pending],
    ) -> anyhow::Result<(u64, u64)> {
        let now = crate::clock::now_ms();
        let entries = records
            .iter()
            .map(|p| {
                Entry::Tombstone(Tombstone {
                    event_id: p.event_id.clone(),
                    recorded_sha256: p.recorded_sha256.clone(),
                    leaf: p.leaf,
                    entry_sha256: p.entry_sha256.to_vec(),
                    reason: p.reason.clone(),
                    by: p.by.clone(),
                    at_ms: now,
                })
            })
            .collect();
        let leaves = self.journal.append_entries(entries)?;
        for (p, t) in records.iter().zip(&leaves) {
            st.put(&Pending {
                tombstone: Some(*t),
                ..p.clone()
            })?;
        }
        self.meta.flush()?;
        Ok((
            leaves.first().copied().unwrap_or_default(),
            leaves.last().copied().unwrap_or_default(),
        ))
    }
}

/// The admin audit entry of one purge call: who, which call, how many
/// events, the tombstones' leaves (what `verify` matches), the reasons and
/// the first event ids.
fn audit_due(
    by: &str,
    records: &[Pending],
    ids: &[String],
    first: u64,
    last: u64,
) -> state::AuditDue {
    let (identity, call) = if by == RETENTION_BY {
        (audit::COLLECTOR_IDENTITY.to_owned(), admin_call::RETENTION)
    } else {
        (by.to_owned(), admin_call::ERASURE)
    };
    let mut reasons: Vec<&str> = records.iter().map(|p| p.reason.as_str()).collect();
    reasons.sort_unstable();
    reasons.dedup();
    state::AuditDue {
        identity,
        call: call.to_owned(),
        detail: format!(
            "{} events purged by {by}, tombstones at leaves {first}-{last}; reason: {}; events: {}",
            ids.len(),
            reasons.join(" | "),
            crate::store::repair::blob_check::describe_ids(ids)
        ),
    }
}
