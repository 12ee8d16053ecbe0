//! Retention (issue 19): how long each event is kept (`policy`), marking
//! expired events for their grace period and undo (`marks`), the plan
//! preview and erasure on request (`rpc`). Purging itself is the store's
//! (`store/purge.rs`): tombstones, journal stubs, index and blobs.

pub mod marks;
pub mod policy;
pub mod rpc;
pub mod step;

use std::sync::Arc;

/// The retention policy in force (shortenings only after their delay),
/// reloaded from its file; shared by maintenance and the Admin calls.
pub struct Retention {
    policy: std::sync::RwLock<Arc<policy::Policy>>,
}

impl Retention {
    pub fn new(policy: policy::Policy) -> Arc<Retention> {
        Arc::new(Retention {
            policy: std::sync::RwLock::new(Arc::new(policy)),
        })
    }

    /// The policy in force now.
    pub fn policy(&self) -> Arc<policy::Policy> {
        self.policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A time for people in messages and reasons (UTC, RFC 3339).
pub fn fmt_ms(ms: i64) -> String {
    kiroku_common::rfc3339_ms(ms)
}
