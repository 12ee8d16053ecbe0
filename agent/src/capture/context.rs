//! What every capture source stamps on its events: the agent's identity,
//! the host's current identity (replaced when it changes), the agent's
//! clock and its measured offset to the collector, operator-defined
//! `custom` fields.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use kiroku_proto::{Event, HostIdentity, event::Kind};

/// The agent's clock and its last measured offset to the collector.
#[derive(Debug, Default)]
pub struct Clock {
    skew_ms: i64,
    offset_ms: AtomicI64,
    known: AtomicBool,
}

impl Clock {
    /// The system clock (shifted by a test hook in test builds only, see
    /// `test_hooks`).
    pub fn from_env() -> Clock {
        let skew_ms = crate::test_hooks::clock_skew_ms();
        Clock {
            skew_ms,
            ..Default::default()
        }
    }

    /// Agent time, milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        kiroku_common::now_ms() + self.skew_ms
    }

    /// Agent time, microseconds since the Unix epoch.
    pub fn now_us(&self) -> i64 {
        let us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        us + self.skew_ms * 1000
    }

    /// Records a measurement: agent − collector.
    pub fn set_offset_ms(&self, offset_ms: i64) {
        self.offset_ms.store(offset_ms, Ordering::Relaxed);
        self.known.store(true, Ordering::Release);
    }

    /// agent − collector, if measured since start.
    pub fn offset_ms(&self) -> Option<i64> {
        self.known
            .load(Ordering::Acquire)
            .then(|| self.offset_ms.load(Ordering::Relaxed))
    }
}

/// Shared by every capture source (cheap to clone through the `Arc`).
#[derive(Debug)]
pub struct CaptureContext {
    pub agent_id: String,
    /// The user the agent runs as, for events with no better attribution.
    pub agent_user: String,
    /// `custom` from the config; a reload replaces it.
    custom: RwLock<Arc<BTreeMap<String, String>>>,
    pub clock: Clock,
    host: RwLock<Arc<HostIdentity>>,
}

impl CaptureContext {
    pub fn new(
        agent_id: String,
        host: HostIdentity,
        agent_user: String,
        custom: BTreeMap<String, String>,
        clock: Clock,
    ) -> Arc<CaptureContext> {
        Arc::new(CaptureContext {
            agent_id,
            agent_user,
            custom: RwLock::new(Arc::new(custom)),
            clock,
            host: RwLock::new(Arc::new(host)),
        })
    }

    /// The host identity as last observed.
    pub fn host(&self) -> Arc<HostIdentity> {
        match self.host.read() {
            Ok(h) => h.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn set_host(&self, host: HostIdentity) {
        let host = Arc::new(host);
        match self.host.write() {
            Ok(mut h) => *h = host,
            Err(poisoned) => *poisoned.into_inner() = host,
        }
    }

    /// The custom fields stamped on events from now on.
    pub fn custom(&self) -> Arc<BTreeMap<String, String>> {
        match self.custom.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Events stamped from now on carry `custom` (a configuration reload).
    pub fn set_custom(&self, custom: BTreeMap<String, String>) {
        let custom = Arc::new(custom);
        match self.custom.write() {
            Ok(mut c) => *c = custom,
            Err(poisoned) => *poisoned.into_inner() = custom,
        }
    }

    /// A new event of `kind` observed now, by `user` (empty: the agent's
    /// own user), stamped with host, clock offset and custom fields. The
    /// buffer assigns stream and sequence; the collector the event id.
    pub fn event(&self, user: String, kind: Kind) -> Event {
        let mut event = self.bare_event(user, kind);
        self.stamp(&mut event);
        event
    }

    /// Like [`CaptureContext::event`], but by exactly `user`: empty stays
    /// empty (a record whose user is not known, and says why elsewhere).
    pub fn event_as(&self, user: String, kind: Kind) -> Event {
        let mut event = self.event(String::new(), kind);
        event.user = user;
        event
    }

    /// Like [`CaptureContext::event`] without the host identity and the
    /// custom fields, which [`CaptureContext::stamp`] adds later: for
    /// records that may wait in a long queue (a burst of file events), so
    /// that thousands of copies of the host identity are never held at once.
    pub fn bare_event(&self, user: String, kind: Kind) -> Event {
        let offset = self.clock.offset_ms();
        Event {
            agent_id: self.agent_id.clone(),
            observed_at_ms: self.clock.now_ms(),
            clock_offset_ms: offset.unwrap_or(0),
            clock_offset_known: offset.is_some(),
            user: if user.is_empty() {
                self.agent_user.clone()
            } else {
                user
            },
            kind: Some(kind),
            ..Default::default()
        }
    }

    /// Adds the host identity and the custom fields to a bare event.
    pub fn stamp(&self, event: &mut Event) {
        event.host = Some((*self.host()).clone());
        event.custom = self
            .custom()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_the_offset_once_measured() {
        let ctx = CaptureContext::new(
            "a".into(),
            HostIdentity::default(),
            "me".into(),
            BTreeMap::new(),
            Clock::default(),
        );
        let kind = || Kind::HostChange(Default::default());
        let e = ctx.event(String::new(), kind());
        assert!(!e.clock_offset_known);
        assert_eq!(e.user, "me");
        ctx.clock.set_offset_ms(-1500);
        let e = ctx.event("alice".into(), kind());
        assert!(e.clock_offset_known);
        assert_eq!(e.clock_offset_ms, -1500);
        assert_eq!(e.user, "alice");
    }
}
