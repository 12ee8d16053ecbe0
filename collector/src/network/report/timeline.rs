//! The report's timeline: the range cut into buckets of a round length
//! (1 s … 12 h, days, weeks) chosen so that the range makes at most
//! [`MAX_AUTO`] of them (usually 40–60: a round length is at most 2.5
//! times the next smaller one), aligned on the requested zone's wall clock
//! (a 1 h bucket starts on the hour, a day at local midnight — the zone's
//! offset at the range's start; a daylight-saving change inside the range
//! shifts later boundaries by its hour, which a chart can bear).

use kiroku_common::zone::TimeZone;
use kiroku_proto::TrafficBucket;

const SECOND: i64 = 1000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// Most buckets a chosen length gives.
pub const MAX_AUTO: i64 = 60;
/// Most buckets a request may ask for with its own `bucket_ms`.
pub const MAX_BUCKETS: i64 = 1000;
/// Shortest bucket a request may ask for.
pub const MIN_BUCKET_MS: i64 = SECOND;

/// Bucket lengths the report picks from, shortest first.
const ROUND: [i64; 20] = [
    SECOND,
    2 * SECOND,
    5 * SECOND,
    10 * SECOND,
    15 * SECOND,
    30 * SECOND,
    MINUTE,
    2 * MINUTE,
    5 * MINUTE,
    10 * MINUTE,
    15 * MINUTE,
    30 * MINUTE,
    HOUR,
    2 * HOUR,
    3 * HOUR,
    6 * HOUR,
    12 * HOUR,
    DAY,
    2 * DAY,
    7 * DAY,
];

/// The shortest round length that cuts `range_ms` into at most
/// [`MAX_AUTO`] buckets (beyond 7 days: whole weeks).
pub fn choose(range_ms: i64) -> i64 {
    let range = range_ms.max(1);
    ROUND
        .iter()
        .copied()
        .find(|step| div_up(range, *step) <= MAX_AUTO)
        .unwrap_or_else(|| div_up(div_up(range, MAX_AUTO), 7 * DAY) * 7 * DAY)
}

/// `a / b` rounded up, for positive `a` and `b` (`i64::div_ceil` is not
/// stable).
fn div_up(a: i64, b: i64) -> i64 {
    a / b + i64::from(a % b != 0)
}

/// Buckets of one length from an aligned start; traffic is added by time.
#[derive(Debug)]
pub struct Timeline {
    start: i64,
    step: i64,
    buckets: Vec<TrafficBucket>,
}

impl Timeline {
    /// Buckets of `step` covering [from_ms, to_ms), the first one starting
    /// at or before `from_ms` on a boundary of the zone's wall clock.
    /// `step` and the range are checked by the caller (the count is at
    /// most `(to - from) / step + 2`).
    pub fn new(from_ms: i64, to_ms: i64, step: i64, tz: &TimeZone) -> Timeline {
        let offset = jiff::Timestamp::from_millisecond(from_ms)
            .map(|t| i64::from(tz.to_offset(t).seconds()) * SECOND)
            .unwrap_or(0);
        // Days and weeks start at local midnight; shorter buckets at a
        // multiple of their length after it.
        let modulus = step.min(DAY);
        let start = from_ms - (from_ms.saturating_add(offset)).rem_euclid(modulus);
        let n = div_up((to_ms - start).max(1), step);
        let buckets = (0..n)
            .map(|i| TrafficBucket {
                start_ms: start + i * step,
                ..Default::default()
            })
            .collect();
        Timeline {
            start,
            step,
            buckets,
        }
    }

    pub fn step(&self) -> i64 {
        self.step
    }

    /// The bucket holding `at_ms`; None outside the timeline.
    pub fn bucket(&mut self, at_ms: i64) -> Option<&mut TrafficBucket> {
        if at_ms < self.start {
            return None;
        }
        let i = usize::try_from((at_ms - self.start) / self.step).ok()?;
        self.buckets.get_mut(i)
    }

    pub fn into_buckets(self) -> Vec<TrafficBucket> {
        self.buckets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_chosen_from_the_range() {
        // (range, chosen length, buckets)
        for (range, want) in [
            (0, SECOND),
            (30 * SECOND, SECOND),
            (HOUR, MINUTE),
            (3 * HOUR + 40 * MINUTE, 5 * MINUTE),
            (DAY, 30 * MINUTE),
            (7 * DAY, 3 * HOUR),
            (30 * DAY, 12 * HOUR),
            (365 * DAY, 7 * DAY),
            (5 * 365 * DAY, 35 * DAY),
        ] {
            let step = choose(range);
            assert_eq!(step, want, "range {range}");
            assert!(div_up(range, step) <= MAX_AUTO, "range {range}");
        }
        // A day, a week, a month: between 40 and 60 buckets.
        for range in [DAY, 7 * DAY, 30 * DAY, 3 * HOUR + 40 * MINUTE] {
            let n = div_up(range, choose(range));
            assert!((40..=60).contains(&n), "range {range}: {n} buckets");
        }
    }

    #[test]
    fn buckets_start_on_the_zones_wall_clock() {
        let tokyo = kiroku_common::zone::lookup("Asia/Tokyo").expect("zone");
        // 2026-12-06 02:07 UTC = 11:07 in Tokyo; hours start on the hour,
        // days at Tokyo's midnight (15:00 UTC the day before).
        let from = 1_796_522_820_000; // 2026-12-06T02:07:00Z
        assert_eq!(from % HOUR, 7 * MINUTE);
        let t = Timeline::new(from, from + 5 * HOUR, HOUR, &tokyo);
        assert_eq!(t.start, from - 7 * MINUTE);
        assert_eq!(t.buckets.len(), 6);
        let d = Timeline::new(from, from + 3 * DAY, DAY, &tokyo);
        assert_eq!((d.start + 9 * HOUR) % DAY, 0);
        assert!(d.start <= from && from - d.start < DAY);
        let india = kiroku_common::zone::lookup("Asia/Kolkata").expect("zone");
        // +05:30: an hour starts at :30 UTC.
        let h = Timeline::new(from, from + HOUR, HOUR, &india);
        assert_eq!(h.start % HOUR, 30 * MINUTE);
    }

    #[test]
    fn times_fall_in_their_bucket() {
        let mut t = Timeline::new(1000, 10_000, 1000, &TimeZone::UTC);
        assert_eq!(t.buckets.len(), 9);
        assert!(t.bucket(999).is_none());
        assert_eq!(t.bucket(1000).map(|b| b.start_ms), Some(1000));
        assert_eq!(t.bucket(9_999).map(|b| b.start_ms), Some(9_000));
        assert!(t.bucket(10_000).is_none());
        let mut t = Timeline::new(1500, 2500, 1000, &TimeZone::UTC);
        assert_eq!(t.buckets.len(), 2);
        assert_eq!(t.bucket(1500).map(|b| b.start_ms), Some(1000));
    }
}
