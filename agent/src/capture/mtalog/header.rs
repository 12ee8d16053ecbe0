//! The parts of a log line before the message: the syslog header Postfix
//! writes (to syslog or to its own `maillog_file`) and the timestamp rules
//! shared by both formats. Pure functions.

use jiff::civil::DateTime;
use jiff::tz::TimeZone;

/// What a parser needs besides the line: the time zone of timestamps that
/// carry none, and "now" to place a year-less syslog date in a year.
#[derive(Debug, Clone)]
pub struct Clock {
    pub tz: TimeZone,
    pub now_ms: i64,
}

impl Clock {
    /// The host's zone and the current time.
    pub fn system() -> Clock {
        Clock {
            tz: TimeZone::system(),
            now_ms: kiroku_common::now_ms(),
        }
    }
}

/// A syslog-format header: `Dec  6 07:14:50[.123456] host program[pid]: `
/// (BSD syslog, Postfix's `maillog_file`) or
/// `2026-12-06T07:14:50.123456+09:00 host program[pid]: ` (RFC 3339, the
/// default of rsyslog on current distributions).
#[derive(Debug, Default, PartialEq)]
pub struct Header<'a> {
    pub at_ms: i64,
    pub host: &'a str,
    pub program: &'a str,
    pub pid: u32,
    /// Everything after `program[pid]: `.
    pub message: &'a str,
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Splits off the first space-separated word (several spaces count as one).
pub fn word(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start_matches(' ');
    if s.is_empty() {
        return None;
    }
    Some(match s.find(' ') {
        Some(i) => (&s[..i], s[i + 1..].trim_start_matches(' ')),
        None => (s, ""),
    })
}

/// Parses a syslog-format header; None when the line does not start with one.
pub fn syslog<'a>(line: &'a str, clock: &Clock) -> Option<Header<'a>> {
    let (at_ms, rest) = if line.as_bytes().first()?.is_ascii_digit() {
        let (stamp, rest) = word(line)?;
        (rfc3339_ms(stamp, clock)?, rest)
    } else {
        let (month, rest) = word(line)?;
        let (day, rest) = word(rest)?;
        let (time, rest) = word(rest)?;
        (bsd_ms(month, day, time, clock)?, rest)
    };
    let (host, rest) = word(rest)?;
    let colon = rest
        .find(": ")
        .or_else(|| rest.strip_suffix(':').map(|r| r.len()))?;
    let tag = &rest[..colon];
    if tag.contains(' ') {
        return None;
    }
    let message = rest.get(colon + 2..).unwrap_or("");
    let (program, pid) = match tag.strip_suffix(']').and_then(|t| t.split_once('[')) {
        Some((p, pid)) => (p, pid.parse().ok()?),
        None => (tag, 0),
    };
    Some(Header {
        at_ms,
        host,
        program,
        pid,
        message,
    })
}

/// `Dec  6 07:14:50` or `Dec 06 07:14:50.123456` in `clock.tz`, in the year
/// that puts it at most a day after now (logs do not come from the future:
/// a December line read in January is from last year).
fn bsd_ms(month: &str, day: &str, time: &str, clock: &Clock) -> Option<i64> {
    let month = MONTHS.iter().position(|m| *m == month)? as i8 + 1;
    let day: i8 = day.parse().ok()?;
    let (h, m, s, ns) = clock_time(time)?;
    let now = jiff::Timestamp::from_millisecond(clock.now_ms).ok()?;
    let year = now.to_zoned(clock.tz.clone()).year();
    for y in [year, year - 1] {
        let Ok(dt) = DateTime::new(y, month, day, h, m, s, ns) else {
            continue; // Feb 29 in a year without one
        };
        let Ok(z) = dt.to_zoned(clock.tz.clone()) else {
            continue;
        };
        let ms = z.timestamp().as_millisecond();
        if ms <= clock.now_ms + 86_400_000 {
            return Some(ms);
        }
    }
    None
}

/// `HH:MM:SS` with an optional fraction.
fn clock_time(time: &str) -> Option<(i8, i8, i8, i32)> {
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut it = hms.split(':');
    let h = it.next()?.parse().ok()?;
    let m = it.next()?.parse().ok()?;
    let s = it.next()?.parse().ok()?;
    if it.next().is_some() {
        return None;
    }
    Some((h, m, s, fraction_ns(frac)?))
}

fn fraction_ns(frac: &str) -> Option<i32> {
    if frac.is_empty() {
        return Some(0);
    }
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i32 = frac.parse().ok()?;
    Some(n * 10i32.pow(9 - frac.len() as u32))
}

/// `2026-12-06T07:14:50.123+09:00` (or `Z`; without an offset: `clock.tz`).
pub fn rfc3339_ms(stamp: &str, clock: &Clock) -> Option<i64> {
    if let Ok(ts) = stamp.parse::<jiff::Timestamp>() {
        return Some(ts.as_millisecond());
    }
    let dt: DateTime = stamp.parse().ok()?;
    Some(
        dt.to_zoned(clock.tz.clone())
            .ok()?
            .timestamp()
            .as_millisecond(),
    )
}

/// Exim's `2026-12-06 07:14:50[.123][ +0900]`: date and time words, and
/// an offset word when `log_timezone` is set. Returns the time and how
/// many words it used.
pub fn date_time_ms(
    date: &str,
    time: &str,
    maybe_zone: Option<&str>,
    clock: &Clock,
) -> Option<(i64, bool)> {
    let mut d = date.split('-');
    let y: i16 = d.next()?.parse().ok()?;
    let mo: i8 = d.next()?.parse().ok()?;
    let day: i8 = d.next()?.parse().ok()?;
    if d.next().is_some() {
        return None;
    }
    let (h, m, s, ns) = clock_time(time)?;
    let dt = DateTime::new(y, mo, day, h, m, s, ns).ok()?;
    if let Some(off) = maybe_zone.and_then(zone_offset) {
        let ms = dt
            .to_zoned(TimeZone::fixed(off))
            .ok()?
            .timestamp()
            .as_millisecond();
        return Some((ms, true));
    }
    Some((
        dt.to_zoned(clock.tz.clone())
            .ok()?
            .timestamp()
            .as_millisecond(),
        false,
    ))
}

/// `+0900`, `-0530`.
fn zone_offset(z: &str) -> Option<jiff::tz::Offset> {
    let b = z.as_bytes();
    if b.len() != 5 || !(b[0] == b'+' || b[0] == b'-') || !b[1..].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let h: i32 = z[1..3].parse().ok()?;
    let m: i32 = z[3..5].parse().ok()?;
    let secs = (h * 3600 + m * 60) * if b[0] == b'-' { -1 } else { 1 };
    jiff::tz::Offset::from_seconds(secs).ok()
}

/// `host[ip]` or `host[ip]:port` → (host, ip).
pub fn host_ip(s: &str) -> Option<(&str, &str)> {
    let open = s.find('[')?;
    let close = open + s[open..].find(']')?;
    Some((&s[..open], &s[open + 1..close]))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn utc_clock() -> Clock {
        // 2026-12-06T07:14:50Z
        Clock {
            tz: TimeZone::UTC,
            now_ms: 1_796_541_290_000,
        }
    }

    #[test]
    fn headers() {
        let c = utc_clock();
        let h = syslog(
            "Dec  6 07:14:50 mx postfix/smtpd[123]: connect from a[1.2.3.4]",
            &c,
        )
        .expect("test");
        assert_eq!(h.at_ms, 1_796_541_290_000);
        assert_eq!(
            (h.host, h.program, h.pid, h.message),
            ("mx", "postfix/smtpd", 123, "connect from a[1.2.3.4]")
        );
        let h = syslog(
            "Dec 06 07:14:50.250000 mx postfix/qmgr[9]: 4ABC: removed",
            &c,
        )
        .expect("test");
        assert_eq!(h.at_ms, 1_796_541_290_250);
        // A December line read in early January is from last year.
        let jan = Clock {
            tz: TimeZone::UTC,
            now_ms: 1_798_761_600_000 + 3_600_000, // 2027-01-01T01:00Z
        };
        let h = syslog("Dec 31 23:00:00 mx postfix/qmgr[9]: x", &jan).expect("test");
        assert_eq!(h.at_ms, 1_798_761_600_000 - 3_600_000);
        let h = syslog(
            "2026-12-06T16:14:50.5+09:00 mx postfix/smtp[7]: 4ABC: to=<a@b>",
            &c,
        )
        .expect("test");
        assert_eq!(h.at_ms, 1_796_541_290_500);
        assert_eq!(h.message, "4ABC: to=<a@b>");
        let h = syslog("Dec  6 07:14:50 mx postfix/postlog: hello", &c).expect("test");
        assert_eq!((h.program, h.pid), ("postfix/postlog", 0));
        for bad in [
            "",
            "garbage",
            "Dec 6 25:00:00 mx p[1]: x",
            "Foo  6 07:14:50 mx p[1]: x",
            "Dec  6 07:14:50 mx p[x]: x",
            "Dec  6 07:14:50 mx",
        ] {
            assert_eq!(syslog(bad, &c), None, "{bad}");
        }
    }

    #[test]
    fn exim_times() {
        let c = utc_clock();
        assert_eq!(
            date_time_ms("2026-12-06", "07:14:50", None, &c),
            Some((1_796_541_290_000, false))
        );
        assert_eq!(
            date_time_ms("2026-12-06", "16:14:50.125", Some("+0900"), &c),
            Some((1_796_541_290_125, true))
        );
        assert_eq!(
            date_time_ms("2026-12-06", "07:14:50", Some("1tJ-x"), &c),
            Some((1_796_541_290_000, false))
        );
        assert_eq!(
            host_ip("mx.example.org[192.0.2.1]:25"),
            Some(("mx.example.org", "192.0.2.1"))
        );
    }
}
