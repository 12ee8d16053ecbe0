//! Time zones: IANA names looked up once for every crate (the system's
//! time zone database, else the copy of it built into the binary, so the
//! CLI, the collector and the agent agree on a zone even on a host without
//! `/usr/share/zoneinfo`), local times for people, and days cut in a zone
//! with its daylight-saving changes (a day in `America/New_York` is 23 or
//! 25 hours twice a year, which no fixed UTC offset gets right).
//!
//! Times are Unix milliseconds everywhere else in Kiroku; this module is
//! where they meet the calendar.

use jiff::Timestamp;
use jiff::civil::Date;
pub use jiff::tz::TimeZone;

const DAY_MS: i64 = 86_400_000;

/// A time zone name that is not in the time zone database.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown time zone {}: use an IANA name such as Asia/Tokyo, Europe/Berlin or UTC ({reason})",
    crate::quote::quote(name)
)]
pub struct UnknownZone {
    pub name: String,
    pub reason: String,
}

/// The zone an IANA name (`Asia/Tokyo`, `UTC`) stands for.
pub fn lookup(name: &str) -> Result<TimeZone, UnknownZone> {
    let trimmed = name.trim();
    let fail = |reason: String| UnknownZone {
        name: name.to_owned(),
        reason,
    };
    if trimmed.is_empty() {
        return Err(fail("the name is empty".into()));
    }
    // jiff's own message repeats the name unescaped: say it in our words.
    TimeZone::get(trimmed).map_err(|_| fail("not in the time zone database".into()))
}

/// A zone for people to read: its IANA name, else (a fixed offset, a
/// POSIX `TZ` rule) jiff's description of it.
pub fn describe(tz: &TimeZone) -> String {
    match tz.iana_name() {
        Some(name) => name.to_owned(),
        None => {
            let off = tz.to_offset(Timestamp::now());
            format!("UTC{off}")
        }
    }
}

/// This host's zone as an IANA name (`Asia/Tokyo`) when it has one, else
/// its current offset (`UTC+09:00`); empty when it cannot be told. What
/// the agent records in the host identity.
pub fn system_zone_name() -> String {
    match TimeZone::try_system() {
        Ok(tz) => describe(&tz),
        Err(_) => String::new(),
    }
}

/// `2026-12-05 09:13:02.123 +09:00`: `ms` in `tz` with its offset, the
/// number itself when out of range.
pub fn format_ms(ms: i64, tz: &TimeZone) -> String {
    match Timestamp::from_millisecond(ms) {
        Ok(t) => t
            .to_zoned(tz.clone())
            .strftime("%Y-%m-%d %H:%M:%S%.3f %:z")
            .to_string(),
        Err(_) => ms.to_string(),
    }
}

/// The day number (days since 1970-01-01) of a calendar date.
pub fn day_number(date: Date) -> i64 {
    // Midnight UTC of a date is a whole number of days after the epoch.
    date.to_zoned(TimeZone::UTC)
        .map(|z| z.timestamp().as_millisecond().div_euclid(DAY_MS))
        .unwrap_or(0)
}

/// The calendar date of a day number; None out of jiff's range (±9999 years).
pub fn day_date(day: i64) -> Option<Date> {
    let ms = day.checked_mul(DAY_MS)?;
    let t = Timestamp::from_millisecond(ms).ok()?;
    Some(t.to_zoned(TimeZone::UTC).date())
}

/// `YYYY-MM-DD` of a day number, `?` out of range.
pub fn day_name(day: i64) -> String {
    day_date(day).map_or_else(|| "?".into(), |d| d.to_string())
}

/// The first instant of `date` in `tz` as Unix milliseconds: usually
/// midnight, 01:00 where a daylight-saving change skips midnight.
pub fn day_start_ms(date: Date, tz: &TimeZone) -> Option<i64> {
    // The "compatible" choice of jiff: a midnight that does not exist
    // becomes the first time after the gap, an ambiguous one the earlier.
    let z = date.to_zoned(tz.clone()).ok()?;
    Some(z.timestamp().as_millisecond())
}

/// Days cut in one zone. Remembers the last day's bounds: the instants a
/// report reads come roughly in time order, so most take no zone lookup.
#[derive(Clone, Debug)]
pub struct Days {
    tz: TimeZone,
    last: Option<(i64, i64, i64)>,
}

impl Days {
    pub fn new(tz: TimeZone) -> Days {
        Days { tz, last: None }
    }

    /// Days at a fixed offset from UTC, in minutes (east positive).
    pub fn fixed(offset_minutes: i32) -> Days {
        let tz = jiff::tz::Offset::from_seconds(offset_minutes.saturating_mul(60))
            .map(TimeZone::fixed)
            .unwrap_or(TimeZone::UTC);
        Days::new(tz)
    }

    pub fn zone(&self) -> &TimeZone {
        &self.tz
    }

    /// The day number in this zone of the instant `ms`.
    pub fn day(&mut self, ms: i64) -> i64 {
        if let Some((start, end, day)) = self.last
            && start <= ms
            && ms < end
        {
            return day;
        }
        let offset_ms = Timestamp::from_millisecond(ms)
            .map(|t| i64::from(self.tz.to_offset(t).seconds()) * 1000)
            .unwrap_or(0);
        let day = ms.saturating_add(offset_ms).div_euclid(DAY_MS);
        if let (Some(start), Some(end)) = (self.start(day), self.start(day.saturating_add(1)))
            && start <= ms
            && ms < end
        {
            self.last = Some((start, end, day));
        }
        day
    }

    /// The first instant of day number `day` in this zone.
    pub fn start(&self, day: i64) -> Option<i64> {
        day_start_ms(day_date(day)?, &self.tz)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ny() -> TimeZone {
        lookup("America/New_York").expect("the tzdb has America/New_York")
    }

    #[test]
    fn names_are_looked_up_and_bad_ones_explained() {
        assert_eq!(
            lookup("Asia/Tokyo").ok().as_ref().map(describe).as_deref(),
            Some("Asia/Tokyo")
        );
        assert_eq!(
            lookup(" UTC ").ok().map(|t| describe(&t)).as_deref(),
            Some("UTC")
        );
        for bad in ["", "Asia/Tokio", "JST+9\u{1b}[2J"] {
            let e = lookup(bad).expect_err(bad).to_string();
            assert!(e.starts_with("unknown time zone \""), "{e}");
            assert!(!e.contains('\u{1b}'), "{e}");
        }
        assert_eq!(describe(&TimeZone::fixed(jiff::tz::offset(9))), "UTC+09");
    }

    #[test]
    fn local_times_carry_their_offset() {
        // (ms, zone, printed)
        let tokyo = lookup("Asia/Tokyo").expect("tokyo");
        for (ms, tz, want) in [
            (0, TimeZone::UTC, "1970-01-01 00:00:00.000 +00:00"),
            (
                1_796_429_582_123,
                tokyo.clone(),
                "2026-12-05 09:13:02.123 +09:00",
            ),
            // New York in winter (EST) and in summer (EDT).
            (1_796_429_582_123, ny(), "2026-12-04 19:13:02.123 -05:00"),
            (1_783_000_000_000, ny(), "2026-07-02 09:46:40.000 -04:00"),
            (-1, TimeZone::UTC, "1969-12-31 23:59:59.999 +00:00"),
        ] {
            assert_eq!(format_ms(ms, &tz), want, "{ms}");
        }
        assert_eq!(format_ms(i64::MAX, &tokyo), i64::MAX.to_string());
    }

    #[test]
    fn days_follow_daylight_saving() {
        let mut days = Days::new(ny());
        let d = |y, m, dd| day_number(jiff::civil::date(y, m, dd));
        // 2026-03-08: clocks go from 02:00 EST to 03:00 EDT, a 23-hour day.
        let start = days.start(d(2026, 3, 8)).expect("start");
        let next = days.start(d(2026, 3, 9)).expect("next");
        assert_eq!(start, 1_772_946_000_000); // 05:00 UTC
        assert_eq!(next - start, 23 * 3_600_000);
        // 2026-11-01: back from 02:00 EDT to 01:00 EST, a 25-hour day.
        let start = days.start(d(2026, 11, 1)).expect("start");
        assert_eq!(
            days.start(d(2026, 11, 2)).expect("next") - start,
            25 * 3_600_000
        );
        // (instant, its day) in and around those days, in and out of order.
        for (ms, want) in [
            (1_772_946_000_000 - 1, d(2026, 3, 7)),
            (1_772_946_000_000, d(2026, 3, 8)),
            (1_772_946_000_000 + 23 * 3_600_000 - 1, d(2026, 3, 8)),
            (1_772_946_000_000 + 23 * 3_600_000, d(2026, 3, 9)),
            (start + 24 * 3_600_000 + 1, d(2026, 11, 1)),
            (start + 25 * 3_600_000, d(2026, 11, 2)),
            (start - 1, d(2026, 10, 31)),
        ] {
            assert_eq!(days.day(ms), want, "{ms}");
        }
        assert_eq!(day_name(d(2026, 3, 8)), "2026-03-08");
        assert_eq!(day_name(i64::MAX), "?");
    }

    #[test]
    fn fixed_offsets_cut_as_before() {
        // (offset minutes, instant, day)
        for (off, ms, want) in [
            (0, 0, 0),
            (540, 15 * 3_600_000, 1),
            (0, -1, -1),
            (-180, 2 * 3_600_000, -1),
            (-180, 3 * 3_600_000, 0),
        ] {
            assert_eq!(Days::fixed(off).day(ms), want, "{off} {ms}");
        }
    }
}
