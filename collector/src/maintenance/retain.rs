//! Retention's part of a run: the events of a batch handed to the
//! retention engine (`retention::step`: held → held back and unmarked;
//! expired → marked for the grace period; marked and due → purged with a
//! tombstone), nothing marked or purged in protect mode.

use kiroku_proto::Event;

use crate::holds::HeldSet;
use crate::retention::Retention;
use crate::retention::marks::Marks;
use crate::store::Store;

/// What retention did with one batch.
#[derive(Clone, Debug, Default)]
pub struct Retained {
    pub marked: u64,
    pub would_mark: u64,
    pub purged: u64,
    pub deferred: u64,
    pub held_back: u64,
    pub bytes_freed: u64,
    pub problems: Vec<String>,
}

pub fn retain(
    store: &Store,
    retention: &Retention,
    marks: &Marks,
    held: &HeldSet,
    events: &[Event],
    now_ms: i64,
    protect: bool,
) -> anyhow::Result<Retained> {
    let policy = retention.policy();
    let r = crate::retention::step::step(store, &policy, marks, held, events, now_ms, protect);
    for (id, why) in &r.deferred {
        tracing::info!(event = %id, reason = %why, "purge deferred to a later maintenance run");
    }
    Ok(Retained {
        marked: r.marked,
        would_mark: r.would_mark,
        purged: r.purged,
        deferred: r.deferred.len() as u64,
        held_back: r.held_back,
        bytes_freed: r.bytes_freed,
        problems: r.problems,
    })
}
