//! Sliding-window counters of the counting rules (`auth_failures`,
//! `delivery_failures`): per (rule, key) the events of the last window,
//! and whether the count is above the limit. A rule fires when one more
//! event takes the count from `max` to above it; not again until an event
//! finds the count back at or below `max` (the window slid past the older
//! ones) and a later one crosses again: exactly once per crossing.
//!
//! In memory: a collector restart forgets the windows (a crossing in
//! progress may then fire once more). An event id counted once is never
//! counted again (a group re-evaluated after a failed commit), except that
//! the crossing event is the crossing again: its first alert was discarded
//! with the failed group.

use std::collections::{HashMap, VecDeque};

#[derive(Default)]
struct Window {
    /// (event time, event id), oldest first.
    items: VecDeque<(i64, String)>,
    above: bool,
    /// The event that made the crossing: counted again (its group was
    /// re-evaluated after a failed commit, whose alert was discarded), it
    /// is the crossing again, so the alert is not lost.
    crossed_by: Option<String>,
}

/// The windows of every counting rule.
#[derive(Default)]
pub struct Windows {
    map: HashMap<(String, String), Window>,
    /// Calls since the last sweep of idle windows.
    calls: usize,
}

/// Windows swept (emptied ones dropped) every this many counts.
const SWEEP_EVERY: usize = 4096;

impl Windows {
    /// Counts event `id` at `at` for (`rule`, `key`); Some(count) when it
    /// is the crossing.
    pub fn count(
        &mut self,
        rule: &str,
        key: &str,
        at: i64,
        id: &str,
        window_ms: i64,
        max: u32,
    ) -> Option<usize> {
        self.calls += 1;
        if self.calls >= SWEEP_EVERY {
            self.calls = 0;
            self.sweep(at);
        }
        let w = self
            .map
            .entry((rule.to_owned(), key.to_owned()))
            .or_default();
        if w.items.iter().any(|(_, i)| i == id) {
            return (w.above && w.crossed_by.as_deref() == Some(id)).then_some(w.items.len());
        }
        let pos = w.items.partition_point(|(t, _)| *t <= at);
        w.items.insert(pos, (at, id.to_owned()));
        let newest = w.items.back().map_or(at, |(t, _)| *t);
        while w
            .items
            .front()
            .is_some_and(|(t, _)| *t <= newest - window_ms)
        {
            w.items.pop_front();
        }
        let n = w.items.len();
        if n <= max as usize {
            w.above = false;
            w.crossed_by = None;
            return None;
        }
        if w.above {
            return None;
        }
        w.above = true;
        w.crossed_by = Some(id.to_owned());
        Some(n)
    }

    /// Drops windows whose newest event is more than a week before `now`
    /// (no window is longer): their count is back at zero.
    fn sweep(&mut self, now: i64) {
        const WEEK: i64 = 7 * 86_400_000;
        self.map
            .retain(|_, w| w.items.back().is_some_and(|(t, _)| *t > now - WEEK));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_once_per_crossing() {
        let mut w = Windows::default();
        let min = 60_000;
        // max 3 in 10 minutes: (time in minutes, fires?)
        let seq: &[(i64, Option<usize>)] = &[
            (0, None),
            (1, None),
            (2, None),
            (3, Some(4)), // the crossing
            (4, None),    // still above: silent
            (5, None),
            (20, None), // the window slid: 1, back below
            (21, None),
            (22, None),
            (23, Some(4)), // crosses again
        ];
        for (i, (m, want)) in seq.iter().enumerate() {
            let got = w.count("r", "10.0.0.1", m * min, &format!("e{i}"), 10 * min, 3);
            assert_eq!(got, *want, "event {i} at minute {m}");
        }
        // Another key has its own window; the same id is counted once.
        assert_eq!(w.count("r", "10.0.0.2", 0, "x", 10 * min, 1), None);
        assert_eq!(w.count("r", "10.0.0.2", 1, "x", 10 * min, 1), None);
        assert_eq!(w.count("r", "10.0.0.2", 2, "y", 10 * min, 1), Some(2));
        // Events out of order count by their own time.
        let mut w = Windows::default();
        assert_eq!(w.count("r", "k", 50 * min, "a", 10 * min, 1), None);
        assert_eq!(w.count("r", "k", 10 * min, "b", 10 * min, 1), None);
        assert_eq!(w.count("r", "k", 49 * min, "c", 10 * min, 1), Some(2));
        // The crossing event evaluated again (its group failed to commit
        // and its alert was discarded) is the crossing again; another
        // event already counted is not.
        assert_eq!(w.count("r", "k", 49 * min, "c", 10 * min, 1), Some(2));
        assert_eq!(w.count("r", "k", 50 * min, "a", 10 * min, 1), None);
    }
}
