//! Erasure on request (`kiroku purge --user … --reason …`) and undo
//! (`kiroku purge undo …`): the events a search filter matches, holds
//! checked, purged now with "erased on request: <reason>" in their
//! tombstones, or their retention marks removed.

use std::collections::HashSet;

use kiroku_proto::{PurgeResponse, SearchRequest};

use super::marks::Marks;
use crate::holds::HeldSet;
use crate::store::Store;
use crate::store::purge::Victim;

/// At most this many events per request (more: the response says so; run
/// it again, the purged ones no longer match).
pub const MAX_EVENTS: usize = 100_000;
/// Victims per `Store::purge` call (bounded memory and audit entries).
const CHUNK: usize = 10_000;

/// Whether `r` filters anything (paging and ordering aside): an erasure
/// of "everything" is refused.
pub fn names_a_filter(r: &SearchRequest) -> bool {
    let mut f = r.clone();
    f.page_size = 0;
    f.page_token.clear();
    f.ascending = false;
    f.corrected_time = false;
    f != SearchRequest::default()
}

/// The ids of the events `filter` matches (at most [`MAX_EVENTS`]) and
/// how many matched in all (ids only: no event is read).
pub fn matching(store: &Store, filter: &SearchRequest) -> anyhow::Result<(Vec<String>, u64)> {
    let mut ids = Vec::new();
    let total = store.index.each_matching_id(filter, |id| {
        if ids.len() < MAX_EVENTS {
            ids.push(id);
        }
    })?;
    ids.sort();
    ids.dedup();
    Ok((ids, total))
}

/// Purges the matched `ids` that no hold covers (or counts them when
/// `dry_run`). `by` is the admin identity.
pub fn erase(
    store: &Store,
    marks: &Marks,
    held: &HeldSet,
    ids: Vec<String>,
    reason: &str,
    by: &str,
    dry_run: bool,
) -> anyhow::Result<PurgeResponse> {
    let mut resp = PurgeResponse {
        matched: ids.len() as u64,
        ..Default::default()
    };
    let (held_ids, free): (Vec<String>, Vec<String>) =
        ids.into_iter().partition(|id| held.is_held(id));
    resp.held_back = held_ids.len() as u64;
    if !held_ids.is_empty() {
        resp.notes.push(format!(
            "{} under a legal hold, kept (holds win over erasure): first {}",
            held_ids.len(),
            held_ids
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if dry_run {
        resp.notes.push(format!(
            "dry run: {} would be purged, nothing changed",
            free.len()
        ));
        return Ok(resp);
    }
    let why = format!("erased on request: {reason}");
    let mut deferred = Vec::new();
    for chunk in free.chunks(CHUNK) {
        let victims: Vec<Victim> = chunk
            .iter()
            .map(|id| Victim {
                event_id: id.clone(),
                reason: why.clone(),
            })
            .collect();
        let p = store.purge(&victims, by)?;
        resp.purged += p.purged;
        resp.bytes_freed += p.journal_bytes_freed + p.blob_bytes_freed;
        let later: HashSet<&str> = p.deferred.iter().map(|(id, _)| id.as_str()).collect();
        for id in chunk.iter().filter(|id| !later.contains(id.as_str())) {
            marks.forget(id)?;
        }
        deferred.extend(p.deferred);
    }
    if !deferred.is_empty() {
        resp.notes.push(format!(
            "{} not purged now ({}): run the same request again later",
            deferred.len(),
            deferred
                .iter()
                .take(3)
                .map(|(id, why)| format!("{id}: {why}"))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    Ok(resp)
}

/// Removes the retention marks of the matched `ids` (events in their
/// grace period) and exempts them from marking until `exempt_until_ms`.
pub fn undo(
    marks: &Marks,
    ids: Vec<String>,
    exempt_until_ms: i64,
    dry_run: bool,
) -> anyhow::Result<PurgeResponse> {
    let mut resp = PurgeResponse {
        matched: ids.len() as u64,
        ..Default::default()
    };
    for id in &ids {
        let marked = if dry_run {
            marks.get(id)?.is_some()
        } else {
            marks.unmark(id)?.is_some()
        };
        if marked {
            resp.restored += 1;
            if !dry_run {
                marks.exempt(id, exempt_until_ms)?;
            }
        }
    }
    resp.notes.push(if dry_run {
        format!(
            "dry run: {} marked events would be restored, nothing changed",
            resp.restored
        )
    } else {
        format!(
            "{} restored; not marked again before {} (then the policy in force decides again)",
            resp.restored,
            super::fmt_ms(exempt_until_ms)
        )
    });
    Ok(resp)
}
