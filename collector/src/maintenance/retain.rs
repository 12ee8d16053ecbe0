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
    // Retention's `step` is wired here once it exists (i19-retention):
    // until then a run verifies and repairs only.
    let _ = (store, retention.policy(), held, events, now_ms, protect);
    Ok(Retained::default())
}
