//! Expired events in their grace period (meta tree `retention_marks`):
//! marked by a maintenance run, purged by a later one once
//! `purge_after_ms` has passed, restored by `kiroku purge undo`.

/// One marked event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    pub event_id: String,
    pub marked_at_ms: i64,
    pub purge_after_ms: i64,
    /// The rule that expired it (goes into the tombstone's reason).
    pub rule: String,
}
