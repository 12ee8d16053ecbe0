//! The daily maintenance window: `[maintenance] start`, `end` (local
//! `HH:MM`) and `time_zone` (IANA name; default the host's zone), and the
//! window a moment falls in or the next one. A window whose end is not
//! after its start runs over midnight (`22:00`–`02:00`). Days are cut in
//! the zone with its daylight-saving changes (jiff's "compatible" choice:
//! a start in a skipped hour moves to just after it). Pure.

use jiff::Timestamp;
use jiff::civil::{Date, Time};
use kiroku_common::zone::TimeZone;
use serde::{Deserialize, Serialize};

/// `[maintenance]` in the collector config.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceConfig {
    /// Local start time of the daily window, `HH:MM` (default 03:00).
    #[serde(default = "default_start")]
    pub start: String,
    /// Local end time, `HH:MM` (default 06:00); not after `start`: the
    /// window ends the next day.
    #[serde(default = "default_end")]
    pub end: String,
    /// IANA zone the times are in (`Asia/Tokyo`); default the host's zone
    /// (UTC when it cannot be told).
    #[serde(default)]
    pub time_zone: Option<String>,
}

fn default_start() -> String {
    "03:00".into()
}
fn default_end() -> String {
    "06:00".into()
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        MaintenanceConfig {
            start: default_start(),
            end: default_end(),
            time_zone: None,
        }
    }
}

/// One window: the local date it starts on (day number since 1970-01-01,
/// its identity: one automatic run per window) and its bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub day: i64,
    pub start_ms: i64,
    pub end_ms: i64,
}

/// The configured schedule.
#[derive(Clone, Debug)]
pub struct Schedule {
    start: Time,
    end: Time,
    tz: TimeZone,
}

fn parse_hhmm(field: &str, v: &str) -> Result<Time, String> {
    let bad = || {
        format!(
            "[maintenance] {field} = {v:?}: expected a local time HH:MM such as \"03:00\" (00:00 to 23:59)"
        )
    };
    let (h, m) = v.trim().split_once(':').ok_or_else(bad)?;
    let (h, m): (i8, i8) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if !(0..24).contains(&h) || !(0..60).contains(&m) || v.trim().len() != 5 {
        return Err(bad());
    }
    Time::new(h, m, 0, 0).map_err(|_| bad())
}

impl Schedule {
    pub fn from_config(c: &MaintenanceConfig) -> Result<Schedule, String> {
        let tz = match &c.time_zone {
            Some(name) => kiroku_common::zone::lookup(name)
                .map_err(|e| format!("[maintenance] time_zone: {e}"))?,
            None => TimeZone::try_system().unwrap_or(TimeZone::UTC),
        };
        let (start, end) = (parse_hhmm("start", &c.start)?, parse_hhmm("end", &c.end)?);
        if start == end {
            return Err(format!(
                "[maintenance] start and end are both {}: give the window a length (end = \"06:00\")",
                c.start
            ));
        }
        Ok(Schedule { start, end, tz })
    }

    /// The zone, for people (`Asia/Tokyo`).
    pub fn zone_name(&self) -> String {
        kiroku_common::zone::describe(&self.tz)
    }

    pub fn zone(&self) -> &TimeZone {
        &self.tz
    }

    fn at(&self, date: Date, t: Time) -> Option<i64> {
        let z = date.to_datetime(t).to_zoned(self.tz.clone()).ok()?;
        Some(z.timestamp().as_millisecond())
    }

    /// The window starting on local date `date`.
    fn window_of(&self, date: Date) -> Option<Window> {
        let start_ms = self.at(date, self.start)?;
        let end_date = if self.end > self.start {
            date
        } else {
            date.tomorrow().ok()?
        };
        let end_ms = self.at(end_date, self.end)?;
        Some(Window {
            day: kiroku_common::zone::day_number(date),
            start_ms,
            end_ms,
        })
    }

    fn local_date(&self, ms: i64) -> Option<Date> {
        Some(
            Timestamp::from_millisecond(ms)
                .ok()?
                .to_zoned(self.tz.clone())
                .date(),
        )
    }

    /// The window `now_ms` is in, if any.
    pub fn window_at(&self, now_ms: i64) -> Option<Window> {
        let today = self.local_date(now_ms)?;
        [today.yesterday().ok(), Some(today)]
            .into_iter()
            .flatten()
            .filter_map(|d| self.window_of(d))
            .find(|w| w.start_ms <= now_ms && now_ms < w.end_ms)
    }

    /// The first window that starts after `now_ms`.
    pub fn next_after(&self, now_ms: i64) -> Option<Window> {
        let mut d = self.local_date(now_ms)?.yesterday().ok()?;
        for _ in 0..4 {
            if let Some(w) = self.window_of(d)
                && w.start_ms > now_ms
            {
                return Some(w);
            }
            d = d.tomorrow().ok()?;
        }
        None
    }

    /// `2026-12-06 03:00:00.000 +09:00` in the schedule's zone.
    pub fn show(&self, ms: i64) -> String {
        kiroku_common::zone::format_ms(ms, &self.tz)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(start: &str, end: &str, tz: &str) -> Schedule {
        Schedule::from_config(&MaintenanceConfig {
            start: start.into(),
            end: end.into(),
            time_zone: Some(tz.into()),
        })
        .expect("valid schedule")
    }

    fn ms(rfc3339: &str) -> i64 {
        rfc3339
            .parse::<Timestamp>()
            .expect("timestamp")
            .as_millisecond()
    }

    #[test]
    fn windows_in_a_zone() {
        let s = sched("03:00", "06:00", "Asia/Tokyo");
        // 03:00 JST = 18:00 UTC the day before.
        type Case<'a> = (&'a str, Option<(&'a str, &'a str)>, &'a str);
        let cases: &[Case] = &[
            ("2026-12-05T17:59:59Z", None, "2026-12-05T18:00:00Z"),
            (
                "2026-12-05T18:00:00Z",
                Some(("2026-12-05T18:00:00Z", "2026-12-05T21:00:00Z")),
                "2026-12-06T18:00:00Z",
            ),
            (
                "2026-12-05T20:59:59Z",
                Some(("2026-12-05T18:00:00Z", "2026-12-05T21:00:00Z")),
                "2026-12-06T18:00:00Z",
            ),
            ("2026-12-05T21:00:00Z", None, "2026-12-06T18:00:00Z"),
        ];
        for (now, inside, next) in cases {
            let w = s.window_at(ms(now));
            assert_eq!(
                w.map(|w| (w.start_ms, w.end_ms)),
                inside.map(|(a, b)| (ms(a), ms(b))),
                "window at {now}"
            );
            assert_eq!(
                s.next_after(ms(now)).map(|w| w.start_ms),
                Some(ms(next)),
                "next after {now}"
            );
        }
    }

    #[test]
    fn window_over_midnight_belongs_to_its_start_date() {
        let s = sched("22:00", "02:00", "UTC");
        let a = s.window_at(ms("2026-12-05T23:00:00Z")).expect("inside");
        let b = s.window_at(ms("2026-12-06T01:59:00Z")).expect("inside");
        assert_eq!(a, b);
        assert_eq!(a.start_ms, ms("2026-12-05T22:00:00Z"));
        assert_eq!(a.end_ms, ms("2026-12-06T02:00:00Z"));
        assert!(s.window_at(ms("2026-12-06T02:00:00Z")).is_none());
        assert_ne!(
            s.window_at(ms("2026-12-06T22:30:00Z")).map(|w| w.day),
            Some(a.day)
        );
    }

    #[test]
    fn daylight_saving_days() {
        // New York springs forward on 2026-03-08 at 02:00: a 02:30 start
        // that day moves to 03:30 EDT; the window is still there.
        let s = sched("02:30", "04:00", "America/New_York");
        let w = s.next_after(ms("2026-03-08T05:00:00Z")).expect("a window");
        assert_eq!(w.start_ms, ms("2026-03-08T07:30:00Z"));
        assert_eq!(w.end_ms, ms("2026-03-08T08:00:00Z"));
    }

    #[test]
    fn bad_config_is_named() {
        for (start, end, tz, want) in [
            ("3:00", "06:00", "UTC", "start"),
            ("03:00", "24:00", "UTC", "end"),
            ("03:00", "03:00", "UTC", "give the window a length"),
            ("03:00", "06:00", "Mars/Olympus", "time_zone"),
        ] {
            let e = Schedule::from_config(&MaintenanceConfig {
                start: start.into(),
                end: end.into(),
                time_zone: Some(tz.into()),
            })
            .expect_err("refused");
            assert!(e.contains(want), "{e}");
        }
    }
}
