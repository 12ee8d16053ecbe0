//! A budget for what unauthenticated peers make the collector write: at
//! most `max` entries (log lines, audit entries) one by one per window,
//! all peers together; the rest are counted, and the count is handed out
//! once, with the first entry of a later window (or by
//! [`HandshakeRefusals::log_overdue`] when no entry comes), so it can be written as one summary. Anyone who can reach a listener can fail a TLS handshake
//! or an enrollment as often as they like; without a budget each failure
//! would be a line on the collector's disk.
//!
//! Written here rather than taken from a crate: `governor` and the like
//! limit rates, but do not count what they refuse, and the count is what
//! an investigator needs to see ("12,408 more refusals").

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Budget {
    window: Duration,
    max: u32,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    start: Option<Instant>,
    count: u32,
    suppressed: u64,
}

/// What to write for an event happening now.
#[derive(Debug, PartialEq, Eq)]
pub struct Allowance {
    /// Write this event one by one.
    pub this: bool,
    /// Events of earlier windows not written one by one: write a summary
    /// of them first (0: none).
    pub summary: u64,
}

impl Budget {
    pub const fn new(window: Duration, max: u32) -> Budget {
        Budget {
            window,
            max,
            state: Mutex::new(State {
                start: None,
                count: 0,
                suppressed: 0,
            }),
        }
    }

    /// Takes one event happening `now` from the budget.
    pub fn take(&self, now: Instant) -> Allowance {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut summary = 0;
        if s.start.is_none_or(|t| now.duration_since(t) >= self.window) {
            summary = std::mem::take(&mut s.suppressed);
            s.start = Some(now);
            s.count = 0;
        }
        let this = s.count < self.max;
        if this {
            s.count += 1;
        } else {
            s.suppressed += 1;
        }
        Allowance { this, summary }
    }

    /// Events not written one by one in a window that has ended, taken
    /// out so they are summarised now (0: none), not only when the next
    /// event comes (which may be never).
    pub fn overdue(&self, now: Instant) -> u64 {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match s.start {
            Some(t) if now.duration_since(t) >= self.window && s.suppressed > 0 => {
                s.start = None;
                s.count = 0;
                std::mem::take(&mut s.suppressed)
            }
            _ => 0,
        }
    }
}

/// Failed TLS handshakes logged one by one per window (per listener), the
/// rest counted into one summary line: anyone who reaches the port can
/// fail a handshake.
pub const REFUSALS_WINDOW: Duration = Duration::from_secs(60);
pub const REFUSALS_LOGGED: u32 = 1_000;

/// One listener's log of refused TLS handshakes, within its budget.
pub struct HandshakeRefusals {
    /// The listener, as its log lines name it.
    listener: &'static str,
    budget: Budget,
}

impl HandshakeRefusals {
    pub fn new(listener: &'static str) -> HandshakeRefusals {
        HandshakeRefusals {
            listener,
            budget: Budget::new(REFUSALS_WINDOW, REFUSALS_LOGGED),
        }
    }

    /// Logs a failed handshake of `peer`: one line per refusal up to the
    /// budget, then a summary line with the next refusal after the window.
    pub fn refused(&self, peer: &str, reason: &dyn std::fmt::Display) {
        let a = self.budget.take(Instant::now());
        if a.summary > 0 {
            self.summary(a.summary);
        }
        if a.this {
            let listener = self.listener;
            tracing::warn!(peer = %peer, error = %reason, "{listener}: refused at TLS handshake");
        }
    }

    /// Logs the summary of a window that ended without a later refusal to
    /// carry it; for the listener's accept loop to call every window.
    pub fn log_overdue(&self) {
        let n = self.budget.overdue(Instant::now());
        if n > 0 {
            self.summary(n);
        }
    }

    fn summary(&self, n: u64) {
        let listener = self.listener;
        tracing::warn!(
            listener,
            not_logged = n,
            "{listener}: {n} more TLS handshakes were refused (more than {} in {} s: not logged one by one)",
            self.budget.max,
            self.budget.window.as_secs()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_budget_events_are_counted_and_summarised_once_in_the_next_window() {
        let b = Budget::new(Duration::from_secs(60), 2);
        let t0 = Instant::now();
        let took: Vec<Allowance> = (0..5).map(|_| b.take(t0)).collect();
        assert_eq!(
            took.iter().map(|a| a.this).collect::<Vec<_>>(),
            [true, true, false, false, false]
        );
        assert!(took.iter().all(|a| a.summary == 0));
        let later = t0 + Duration::from_secs(60);
        assert_eq!(
            b.take(later),
            Allowance {
                this: true,
                summary: 3
            }
        );
        assert_eq!(
            b.take(later),
            Allowance {
                this: true,
                summary: 0
            },
            "the summary is handed out once"
        );
        for _ in 0..3 {
            b.take(later);
        }
        assert_eq!(b.overdue(later), 0, "the window is still open");
        let ended = later + Duration::from_secs(60);
        assert_eq!(
            b.overdue(ended),
            3,
            "a window's count without a later event"
        );
        assert_eq!(b.overdue(ended), 0);
        assert_eq!(
            b.take(ended),
            Allowance {
                this: true,
                summary: 0
            },
            "never counted twice"
        );
    }
}
