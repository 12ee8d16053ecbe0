//! The per-event retention logic a maintenance run calls on each batch of
//! journal events it passes: decide, mark, purge what is due.
//!
//! For each event (the merged view):
//! - held by a legal hold → counted as held back (when expired or marked)
//!   and unmarked if it was marked: a hold created during the grace period
//!   saves the event;
//! - not expired (any more) but marked → unmarked (the policy was
//!   lengthened since);
//! - expired, not marked → marked, `purge_after` = now + grace, unless an
//!   undo exempted it;
//! - marked and due → purged: the event is read again from the index
//!   (which has the tags added since it was journalled, e.g. `alert:*`)
//!   and decided again; what is still expired and not held goes to one
//!   `Store::purge` call per step, with the rule in its tombstone.
//!
//! `protect` (protect mode): everything is decided and counted, nothing is
//! marked, unmarked or purged.

use std::collections::HashSet;

use kiroku_proto::Event;

use super::marks::{Mark, Marks};
use super::policy::Policy;
use crate::holds::HeldSet;
use crate::store::Store;
use crate::store::purge::Victim;

/// What one step saw and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepReport {
    /// Events decided (a journal duplicate counts once).
    pub seen: u64,
    /// Of those, expired now.
    pub expired: u64,
    /// Marked by this step.
    pub marked: u64,
    /// Expired and not marked because of protect mode.
    pub would_mark: u64,
    /// Marks removed: held, restored by a longer policy.
    pub unmarked: u64,
    /// Expired or marked, but under a legal hold.
    pub held_back: u64,
    /// Expired but restored by `kiroku purge undo` (exempt for a while).
    pub exempt: u64,
    /// Marked, in their grace period.
    pub in_grace: u64,
    /// Marked and past their grace period (purged unless protect or deferred).
    pub due: u64,
    pub purged: u64,
    pub bytes_freed: u64,
    /// Due events the store did not purge now, and why.
    pub deferred: Vec<(String, String)>,
    /// What went wrong (each with what to do); the step goes on.
    pub problems: Vec<String>,
}

impl StepReport {
    /// Adds `other`'s counts to `self` (a run sums its steps).
    pub fn add(&mut self, other: StepReport) {
        self.seen += other.seen;
        self.expired += other.expired;
        self.marked += other.marked;
        self.would_mark += other.would_mark;
        self.unmarked += other.unmarked;
        self.held_back += other.held_back;
        self.exempt += other.exempt;
        self.in_grace += other.in_grace;
        self.due += other.due;
        self.purged += other.purged;
        self.bytes_freed += other.bytes_freed;
        self.deferred.extend(other.deferred);
        self.problems.extend(other.problems);
    }
}

/// See the module documentation.
pub fn step(
    store: &Store,
    policy: &Policy,
    marks: &Marks,
    held: &HeldSet,
    events: &[Event],
    now_ms: i64,
    protect: bool,
) -> StepReport {
    let mut r = StepReport::default();
    let mut seen = HashSet::new();
    let mut victims = Vec::new();
    for e in events {
        if !seen.insert(e.event_id.as_str()) {
            continue;
        }
        r.seen += 1;
        if let Err(err) = one(
            policy,
            marks,
            held,
            e,
            now_ms,
            protect,
            &mut r,
            &mut victims,
        ) {
            r.problems.push(format!(
                "retention of event {}: {err:#} (the collector's meta store may be failing; see its log)",
                e.event_id
            ));
        }
    }
    if !protect && !victims.is_empty() {
        let victims = recheck(store, policy, marks, held, victims, now_ms, &mut r);
        purge(store, marks, &victims, &mut r);
    }
    r
}

/// Decides one event; a due one is pushed to `victims`.
#[allow(clippy::too_many_arguments)]
fn one(
    policy: &Policy,
    marks: &Marks,
    held: &HeldSet,
    e: &Event,
    now_ms: i64,
    protect: bool,
    r: &mut StepReport,
    victims: &mut Vec<Victim>,
) -> anyhow::Result<()> {
    let d = policy.decide_at(e, now_ms);
    let expired = d.expired(now_ms);
    let mark = marks.get(&e.event_id)?;
    if held.is_held(&e.event_id) {
        if expired || mark.is_some() {
            r.held_back += 1;
        }
        if mark.is_some() && !protect {
            marks.unmark(&e.event_id)?;
            r.unmarked += 1;
        }
        return Ok(());
    }
    if !expired {
        if mark.is_some() && !protect {
            marks.unmark(&e.event_id)?;
            r.unmarked += 1;
        }
        return Ok(());
    }
    r.expired += 1;
    match mark {
        None if marks.is_exempt(&e.event_id, now_ms)? => r.exempt += 1,
        None if protect => r.would_mark += 1,
        None => {
            marks.mark(&Mark {
                event_id: e.event_id.clone(),
                marked_at_ms: now_ms,
                purge_after_ms: now_ms.saturating_add(policy.grace_at(now_ms)),
                rule: d.rule,
            })?;
            r.marked += 1;
        }
        Some(m) if m.due(now_ms) => {
            r.due += 1;
            victims.push(Victim {
                event_id: e.event_id.clone(),
                reason: format!(
                    "retention: {} (marked {}, grace over {})",
                    d.rule,
                    super::fmt_ms(m.marked_at_ms),
                    super::fmt_ms(m.purge_after_ms)
                ),
            });
        }
        Some(_) => r.in_grace += 1,
    }
    Ok(())
}

/// The due events decided again on the index's copy (tags added since the
/// journal entry, e.g. by an alert rule or the analysis); those no longer
/// expired are unmarked and kept.
fn recheck(
    store: &Store,
    policy: &Policy,
    marks: &Marks,
    held: &HeldSet,
    victims: Vec<Victim>,
    now_ms: i64,
    r: &mut StepReport,
) -> Vec<Victim> {
    let mut keep = Vec::with_capacity(victims.len());
    for v in victims {
        // Still marked and due: an undo since the mark was read wins.
        match marks.get(&v.event_id) {
            Ok(Some(m)) if m.purge_after_ms <= now_ms => {}
            Ok(_) => {
                r.due -= 1;
                continue;
            }
            Err(err) => {
                r.deferred.push((
                    v.event_id.clone(),
                    format!("its mark could not be read ({err:#}); the next run tries again"),
                ));
                continue;
            }
        }
        let current = match store.index.get(&v.event_id) {
            Ok(e) => e,
            Err(err) => {
                r.deferred.push((
                    v.event_id.clone(),
                    format!("its index entry could not be read ({err}); the next run tries again"),
                ));
                continue;
            }
        };
        // Not in the index: nothing newer to decide on; the journal's
        // copy decided.
        let still = current
            .as_ref()
            .is_none_or(|e| policy.decide_at(e, now_ms).expired(now_ms));
        if still && !held.is_held(&v.event_id) {
            keep.push(v);
            continue;
        }
        r.due -= 1;
        if let Err(err) = marks.unmark(&v.event_id) {
            r.problems
                .push(format!("unmarking {}: {err:#}", v.event_id));
        }
        r.unmarked += 1;
    }
    keep
}

fn purge(store: &Store, marks: &Marks, victims: &[Victim], r: &mut StepReport) {
    if victims.is_empty() {
        return;
    }
    match store.purge(victims, crate::store::purge::RETENTION_BY) {
        Ok(p) => {
            r.purged += p.purged;
            r.bytes_freed += p.journal_bytes_freed + p.blob_bytes_freed;
            let deferred: HashSet<&str> = p.deferred.iter().map(|(id, _)| id.as_str()).collect();
            for v in victims.iter().filter(|v| !deferred.contains(v.event_id.as_str())) {
                if let Err(err) = marks.forget(&v.event_id) {
                    r.problems.push(format!("forgetting the mark of purged {}: {err:#}", v.event_id));
                }
            }
            r.deferred.extend(p.deferred);
        }
        Err(err) => r.problems.push(format!(
            "purging {} expired events failed: {err:#}; they stay marked and the next run tries again (check the collector's log and `kiroku verify`)",
            victims.len()
        )),
    }
}

#[cfg(test)]
mod tests;
