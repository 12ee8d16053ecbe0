//! The retention policy: how long each event is kept, by kind (every kind
//! registers its default in [`KIND_DEFAULTS`]), with overrides by agent
//! group, tag and outcome; `forever` allowed. Loaded from the policy file
//! named in the collector config and reloaded when it changes.

use kiroku_proto::Event;

/// How long a rule keeps what it decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    Forever,
    Ms(i64),
}

/// What the policy says about one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// When it expires (ms since the epoch); None = kept forever.
    pub expires_at_ms: Option<i64>,
    /// The rule that decided, for people: "kind email 5y", "tag alert:* 10y".
    pub rule: String,
}

/// The default period of every event kind (`event::Kind` names as in
/// `kiroku search --kind`); a new kind adds its line here.
pub const KIND_DEFAULTS: &[(&str, Period)] = &[];

#[derive(Clone, Debug, Default)]
pub struct Policy {}

impl Policy {
    /// What the policy says about `e` (the merged view: `agent_group`,
    /// tags, outcome, corrected time and receipt time are the collector's).
    pub fn decide(&self, e: &Event) -> Decision {
        let _ = e;
        Decision {
            expires_at_ms: None,
            rule: "not built yet: everything kept".into(),
        }
    }

    /// The grace period between marking and purging (default 1 day).
    pub fn grace_ms(&self) -> i64 {
        24 * 3600 * 1000
    }
}
