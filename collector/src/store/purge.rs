//! Purging events (issue 19), as ARCHITECTURE.md "Tombstones" designs it:
//! a `Tombstone` entry and an admin audit entry first, then the event's
//! journal records replaced by `KRJS` stubs (the segment rewritten, the
//! positions that name it remapped), the event dropped from the index,
//! and its blobs deleted once nothing live names them.
//!
//! Callers decide *what* to purge (retention past its grace period and not
//! held, or erasure on request, holds checked); this decides nothing.

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
}

impl super::Store {
    /// Purges `victims` (see the module documentation); `by` is the policy
    /// ("retention policy") or the admin identity. Crash-safe: a purge cut
    /// short is finished by the next call or at open.
    pub fn purge(&self, victims: &[Victim], by: &str) -> anyhow::Result<PurgeReport> {
        let _ = (victims, by);
        anyhow::bail!("purging is not built yet")
    }
}
