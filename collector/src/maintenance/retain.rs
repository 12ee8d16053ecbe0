//! Retention's part of a run: the events of a batch handed to the
//! retention engine (`retention::step`: held → held back and unmarked;
//! expired → marked for the grace period; marked and due → purged with a
//! tombstone), nothing marked or purged in protect mode.

use kiroku_proto::Event;

use crate::holds::HeldSet;
use crate::retention::Retention;
use crate::store::Store;

/// What retention did with one batch.
#[derive(Clone, Debug, Default)]
pub struct Retained {
    pub marked: u64,
    pub purged: u64,
    pub held_back: u64,
    pub bytes_freed: u64,
    pub problems: Vec<String>,
}

pub fn retain(
    store: &Store,
    retention: &Retention,
    held: &HeldSet,
    events: &[Event],
    now_ms: i64,
    protect: bool,
) -> anyhow::Result<Retained> {
    let marks = crate::retention::marks::Marks::open(&store.meta)?;
    let policy = retention.policy();
    let r = crate::retention::step::step(store, &policy, &marks, held, events, now_ms, protect);
    if !r.deferred.is_empty() {
        // Not a problem (an index rebuild in progress, say): the events
        // stay marked and the next run takes them.
        tracing::info!(
            deferred = r.deferred.len(),
            first = ?r.deferred.first(),
            "due events not purged in this run"
        );
    }
    Ok(Retained {
        marked: r.marked,
        purged: r.purged,
        held_back: r.held_back,
        bytes_freed: r.bytes_freed,
        problems: r.problems,
    })
}
