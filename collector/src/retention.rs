//! Retention (issue 19): how long each event is kept (`policy`), marking
//! expired events for their grace period and undo (`marks`), the plan
//! preview and erasure on request (`rpc`). Purging itself is the store's
//! (`store/purge.rs`): tombstones, journal stubs, index and blobs.

pub mod rpc;
