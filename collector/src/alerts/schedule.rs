//! Working hours for the `off_hours` rule: `schedule = ["Mon-Fri
//! 08:00-19:00", "Sat 09:00-12:00"]` in a `time_zone` (IANA name,
//! daylight-saving aware). A time is *inside* when its local weekday and
//! time of day fall in any entry; an entry's end is exclusive and may be
//! `24:00`. An entry over midnight (`22:00-06:00`) is refused: write two.
//! Pure: parsing and the inside test, table-tested below.

use jiff::Timestamp;
use kiroku_common::zone::{self, TimeZone};

const DAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// One entry: on these weekdays (bit 0 = Monday), from `start` to `end`
/// minutes after local midnight.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Span {
    days: u8,
    start: u16,
    end: u16,
}

/// A parsed schedule and its zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    spans: Vec<Span>,
    tz: TimeZone,
    /// As written, for summaries.
    pub text: String,
}

impl Schedule {
    /// Parses `entries` in zone `time_zone`; an error names the bad entry
    /// and the field (`schedule` or `time_zone`).
    pub fn parse(entries: &[String], time_zone: &str) -> Result<Schedule, (&'static str, String)> {
        if entries.is_empty() {
            return Err((
                "schedule",
                "name at least one span, e.g. \"Mon-Fri 08:00-19:00\"".into(),
            ));
        }
        let tz = zone::lookup(time_zone).map_err(|e| ("time_zone", e.to_string()))?;
        let spans = entries
            .iter()
            .map(|e| span(e).map_err(|m| ("schedule", format!("{e:?}: {m}"))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Schedule {
            spans,
            tz,
            text: format!("{} ({})", entries.join(", "), time_zone.trim()),
        })
    }

    /// Whether `ms` (Unix milliseconds) is within working hours.
    pub fn inside(&self, ms: i64) -> bool {
        let Ok(ts) = Timestamp::from_millisecond(ms) else {
            return true;
        };
        let local = ts.to_zoned(self.tz.clone());
        let day = local.weekday().to_monday_zero_offset() as u8;
        let minute = local.hour() as u16 * 60 + local.minute() as u16;
        self.spans
            .iter()
            .any(|s| s.days & (1 << day) != 0 && s.start <= minute && minute < s.end)
    }

    /// `ms` as local time in the schedule's zone, for summaries.
    pub fn local(&self, ms: i64) -> String {
        zone::format_ms(ms, &self.tz)
    }
}

/// A weekday, its name or the name's first three letters or more
/// (Mon, Tues, Wednesday); 0 = Monday.
fn day(s: &str) -> Result<u8, String> {
    let l = s.trim().to_ascii_lowercase();
    DAYS.iter()
        .position(|n| l.len() >= 3 && n.starts_with(&l))
        .map(|i| i as u8)
        .ok_or_else(|| format!("{s:?} is not a weekday (Mon, Tue, Wed, Thu, Fri, Sat, Sun)"))
}

fn minutes(s: &str) -> Result<u16, String> {
    let (h, m) = s
        .trim()
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not a time (HH:MM)"))?;
    let (h, m): (u16, u16) = (
        h.parse()
            .map_err(|_| format!("{s:?} is not a time (HH:MM)"))?,
        m.parse()
            .map_err(|_| format!("{s:?} is not a time (HH:MM)"))?,
    );
    if m > 59 || h > 24 || (h == 24 && m > 0) {
        return Err(format!("{s:?} is not a time of day (00:00 to 24:00)"));
    }
    Ok(h * 60 + m)
}

/// `Mon-Fri 08:00-19:00`, `Sat,Sun 10:00-12:00`, `Wed 13:00-24:00`.
fn span(entry: &str) -> Result<Span, String> {
    let (days_part, times) = entry
        .trim()
        .split_once(char::is_whitespace)
        .ok_or("write days then hours, e.g. \"Mon-Fri 08:00-19:00\"")?;
    let mut days = 0u8;
    for part in days_part.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (day(a)?, day(b)?);
                if b < a {
                    return Err(format!("{part:?}: the days run Mon to Sun"));
                }
                for d in a..=b {
                    days |= 1 << d;
                }
            }
            None => days |= 1 << day(part)?,
        }
    }
    let (start, end) = times
        .trim()
        .split_once('-')
        .ok_or("write hours as HH:MM-HH:MM")?;
    let (start, end) = (minutes(start)?, minutes(end)?);
    if end <= start {
        return Err("the end must be after the start (a span over midnight is two spans: \"Mon 22:00-24:00\", \"Tue 00:00-06:00\")".into());
    }
    Ok(Span { days, start, end })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(rfc: &str) -> i64 {
        rfc.parse::<Timestamp>().expect("time").as_millisecond()
    }

    #[test]
    fn inside_and_outside_working_hours_in_a_zone() {
        let s = Schedule::parse(
            &["Mon-Fri 08:00-19:00".into(), "Sat 09:00-12:00".into()],
            "Asia/Tokyo",
        )
        .expect("schedule");
        let cases = [
            // 2026-12-07 is a Monday; Tokyo is UTC+9.
            ("2026-12-07T00:00:00Z", true),  // Mon 09:00 JST
            ("2026-12-06T22:59:59Z", false), // Mon 07:59 JST
            ("2026-12-06T23:00:00Z", true),  // Mon 08:00 JST
            ("2026-12-07T10:00:00Z", false), // Mon 19:00 JST: end exclusive
            ("2026-12-11T09:59:00Z", true),  // Fri 18:59 JST
            ("2026-12-12T00:30:00Z", true),  // Sat 09:30 JST
            ("2026-12-12T03:00:00Z", false), // Sat 12:00 JST
            ("2026-12-13T01:00:00Z", false), // Sun 10:00 JST
        ];
        for (t, want) in cases {
            assert_eq!(s.inside(ms(t)), want, "{t}");
        }
        // Daylight saving: 08:00 in New York is 13:00 UTC in winter, 12:00
        // in summer.
        let ny =
            Schedule::parse(&["Mon-Fri 08:00-17:00".into()], "America/New_York").expect("schedule");
        assert!(ny.inside(ms("2026-12-07T13:00:00Z")));
        assert!(!ny.inside(ms("2026-12-07T12:30:00Z")));
        assert!(ny.inside(ms("2026-07-06T12:30:00Z")));
    }

    #[test]
    fn bad_schedules_say_what_is_wrong() {
        let cases: &[(&[&str], &str, &str, &str)] = &[
            (&[], "UTC", "schedule", "at least one"),
            (&["Mon-Fri"], "UTC", "schedule", "days then hours"),
            (&["Mon-Fry 08:00-19:00"], "UTC", "schedule", "not a weekday"),
            (&["Fri-Mon 08:00-19:00"], "UTC", "schedule", "Mon to Sun"),
            (&["Mon 8-19"], "UTC", "schedule", "HH:MM"),
            (&["Mon 22:00-06:00"], "UTC", "schedule", "over midnight"),
            (&["Mon 08:00-25:00"], "UTC", "schedule", "time of day"),
            (
                &["Mon 08:00-19:00"],
                "Asia/Tokio",
                "time_zone",
                "unknown time zone",
            ),
        ];
        for (entries, tz, field, want) in cases {
            let entries: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
            let (f, m) = Schedule::parse(&entries, tz).expect_err(want);
            assert_eq!(f, *field, "{entries:?}");
            assert!(m.contains(want), "{entries:?}: {m}");
        }
        assert!(Schedule::parse(&["sat,sun 00:00-24:00".into()], "UTC").is_ok());
        assert!(Schedule::parse(&["Monday-Friday 09:00-17:00".into()], "UTC").is_ok());
    }
}
