//! The investigator's time zone: which one the CLI uses, times printed in
//! it with their offset, and time arguments read in it.
//!
//! The zone is the first of: `--tz`, `timezone` in the CLI config file,
//! the `TZ` environment variable, the system's zone (`/etc/localtime`),
//! UTC. A zone named wrongly is an error that names where it came from,
//! never a silent fall back to another zone: a report cut at the wrong
//! midnight looks right and is not.
//!
//! `--json` and `--csv` output stays in UTC (Unix milliseconds, RFC 3339):
//! only what people read is local.

use anyhow::Context;
use jiff::civil::{Date, DateTime};
use kiroku_common::zone::{self as common_zone, TimeZone};

use crate::client::CliConfig;

/// The zone the CLI shows and reads times in.
#[derive(Clone, Debug)]
pub struct Zone {
    tz: TimeZone,
    /// Where it came from, for messages: `--tz`, `TZ`, ….
    source: &'static str,
}

impl Zone {
    pub fn utc() -> Zone {
        Zone {
            tz: TimeZone::UTC,
            source: "default",
        }
    }

    /// A fixed offset from UTC, in minutes (`--utc-offset`).
    pub fn fixed(offset_minutes: i32) -> Zone {
        Zone {
            tz: common_zone::Days::fixed(offset_minutes).zone().clone(),
            source: "--utc-offset",
        }
    }

    /// The zone's offset from UTC now, in minutes.
    pub fn offset_minutes_now(&self) -> i32 {
        self.tz.to_offset(jiff::Timestamp::now()).seconds() / 60
    }

    /// The IANA name (`Asia/Tokyo`) that requests which cut days carry;
    /// None for a zone without one (a POSIX `TZ` rule such as `JST-9`).
    pub fn iana_name(&self) -> Option<&str> {
        self.tz.iana_name()
    }

    /// The zone for people: `Asia/Tokyo`, or `UTC+09` without a name.
    pub fn describe(&self) -> String {
        common_zone::describe(&self.tz)
    }

    /// Where the zone came from: `--tz`, `timezone in the CLI config`,
    /// `TZ`, `the system`, `default`.
    pub fn source(&self) -> &'static str {
        self.source
    }
}

/// The investigator's zone: `--tz` (`cli_flag`), else `timezone` of the
/// CLI config, else `TZ`, else the system's zone, else UTC.
pub fn zone(cli_flag: Option<&str>, config: Option<&CliConfig>) -> anyhow::Result<Zone> {
    resolve(
        cli_flag,
        config.and_then(|c| c.timezone.as_deref()),
        std::env::var("TZ").ok().as_deref(),
        || TimeZone::try_system().ok(),
    )
}

/// [`zone`] with its inputs given, for tests.
fn resolve(
    cli_flag: Option<&str>,
    config: Option<&str>,
    tz_env: Option<&str>,
    system: impl FnOnce() -> Option<TimeZone>,
) -> anyhow::Result<Zone> {
    if let Some(name) = cli_flag {
        let tz = common_zone::lookup(name).context("--tz")?;
        return Ok(Zone { tz, source: "--tz" });
    }
    if let Some(name) = config {
        let tz = common_zone::lookup(name)
            .context("`timezone` in the CLI config file (--config, KIROKU_CLI_CONFIG)")?;
        return Ok(Zone {
            tz,
            source: "timezone in the CLI config",
        });
    }
    if let Some(value) = tz_env {
        return Ok(Zone {
            tz: from_tz_variable(value)?,
            source: "TZ",
        });
    }
    Ok(match system() {
        Some(tz) => Zone {
            tz,
            source: "the system",
        },
        None => Zone::utc(),
    })
}

/// The zone of a `TZ` value as the C library reads it: empty is UTC,
/// `:Asia/Tokyo` or `Asia/Tokyo` an IANA name, else a POSIX rule
/// (`JST-9`, `EST5EDT,M3.2.0,M11.1.0`).
fn from_tz_variable(value: &str) -> anyhow::Result<TimeZone> {
    let name = value.strip_prefix(':').unwrap_or(value).trim();
    if name.is_empty() {
        return Ok(TimeZone::UTC);
    }
    if let Ok(tz) = common_zone::lookup(name) {
        return Ok(tz);
    }
    TimeZone::posix(name).map_err(|_| {
        anyhow::anyhow!(
            "the TZ environment variable {} is neither an IANA time zone name (Asia/Tokyo) nor a POSIX rule (JST-9): correct it, unset it, or give --tz",
            kiroku_common::quote::quote(value)
        )
    })
}

/// `2026-12-05 09:13:02.123 +09:00`: `ms` in the zone with its offset;
/// `-` for 0 (no time).
pub fn format(ms: i64, zone: &Zone) -> String {
    if ms == 0 {
        return "-".into();
    }
    common_zone::format_ms(ms, &zone.tz)
}

/// A time argument as Unix milliseconds: relative (`30m`, `24h`, `7d`
/// before now), RFC 3339 with its offset or `Z` (the instant it names),
/// a local date and time without an offset (`2026-12-01 09:00`, in the
/// zone), or a date (`2026-12-01`: its midnight in the zone).
pub fn parse_time(s: &str, now_ms: i64, zone: &Zone) -> anyhow::Result<i64> {
    let s = s.trim();
    let units = [
        ("ms", 1i64),
        ("s", 1000),
        ("m", 60_000),
        ("h", 3_600_000),
        ("d", 86_400_000),
        ("w", 604_800_000),
    ];
    for (suffix, mult) in units.iter().rev() {
        if let Some(n) = s.strip_suffix(suffix).and_then(|n| n.parse::<i64>().ok()) {
            return Ok(now_ms.saturating_sub(n.saturating_mul(*mult)));
        }
    }
    // With an offset or `Z` (RFC 3339, or with a space for the `T`): the
    // instant it names, whatever the zone.
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t.as_millisecond());
    }
    let cannot = || {
        anyhow::anyhow!(
            "cannot read time {}: use a date (2026-11-22, midnight in {}), a local time (2026-11-22 09:30), RFC 3339 (2026-11-22T10:00:00Z, 2026-11-22T19:00:00+09:00) or a relative time (30m, 24h, 7d)",
            kiroku_common::quote::quote(s),
            zone.describe()
        )
    };
    // A date alone is its first instant in the zone (midnight, or the end
    // of a daylight-saving gap that skips midnight).
    if s.len() == 10
        && let Ok(d) = s.parse::<Date>()
    {
        return common_zone::day_start_ms(d, &zone.tz).ok_or_else(cannot);
    }
    if let Ok(dt) = s.parse::<DateTime>() {
        // A local time that a daylight-saving change skips or repeats is
        // read as jiff's "compatible" choice (as most calendars do).
        return dt
            .to_zoned(zone.tz.clone())
            .map(|z| z.timestamp().as_millisecond())
            .map_err(|_| cannot());
    }
    Err(cannot())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tz(name: &str) -> TimeZone {
        common_zone::lookup(name).expect("zone in the tzdb")
    }

    #[test]
    fn the_first_zone_given_wins() {
        let system = || Some(tz("Europe/Berlin"));
        // (flag, config, TZ, system, zone, source)
        type Case<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
            bool,
            &'a str,
            &'a str,
        );
        let cases: [Case; 9] = [
            (
                Some("Asia/Tokyo"),
                Some("Europe/Paris"),
                Some("UTC"),
                true,
                "Asia/Tokyo",
                "--tz",
            ),
            (
                None,
                Some("Europe/Paris"),
                Some("Asia/Tokyo"),
                true,
                "Europe/Paris",
                "timezone in the CLI config",
            ),
            (None, None, Some("Asia/Tokyo"), true, "Asia/Tokyo", "TZ"),
            (
                None,
                None,
                Some(":America/New_York"),
                true,
                "America/New_York",
                "TZ",
            ),
            // An empty TZ is UTC for the C library too.
            (None, None, Some(""), true, "UTC", "TZ"),
            (None, None, Some("JST-9"), true, "UTC+09", "TZ"),
            (None, None, None, true, "Europe/Berlin", "the system"),
            (None, None, None, false, "UTC", "default"),
            (Some("UTC"), None, None, true, "UTC", "--tz"),
        ];
        for (flag, config, env, has_system, want, source) in cases {
            let z = resolve(
                flag,
                config,
                env,
                || if has_system { system() } else { None },
            )
            .expect("zone");
            assert_eq!(
                (z.describe().as_str(), z.source()),
                (want, source),
                "{flag:?} {config:?} {env:?}"
            );
        }
        assert_eq!(
            resolve(None, None, Some("JST-9"), system)
                .expect("zone")
                .iana_name(),
            None
        );
    }

    #[test]
    fn a_bad_zone_names_where_it_came_from() {
        // (flag, config, TZ, the message starts with)
        for (flag, config, env, want) in [
            (
                Some("Asia/Tokio"),
                None,
                None,
                "--tz: unknown time zone \"Asia/Tokio\"",
            ),
            (
                None,
                Some("Mars/Olympus"),
                None,
                "`timezone` in the CLI config file",
            ),
            (
                None,
                None,
                Some("Not a zone!"),
                "the TZ environment variable \"Not a zone!\"",
            ),
            // A bad flag is an error even when a later source is fine.
            (
                Some(""),
                Some("Asia/Tokyo"),
                None,
                "--tz: unknown time zone \"\"",
            ),
        ] {
            let e = resolve(flag, config, env, || None).expect_err(want);
            let e = format!("{e:#}");
            assert!(e.starts_with(want), "{e}");
        }
    }

    #[test]
    fn times_print_in_the_zone_with_the_offset() {
        let z = |name: &str| Zone {
            tz: tz(name),
            source: "--tz",
        };
        // (ms, zone, printed)
        for (ms, zone, want) in [
            (
                1_796_429_582_123,
                z("Asia/Tokyo"),
                "2026-12-05 09:13:02.123 +09:00",
            ),
            (
                1_796_429_582_123,
                z("UTC"),
                "2026-12-05 00:13:02.123 +00:00",
            ),
            (
                1_796_429_582_123,
                z("America/New_York"),
                "2026-12-04 19:13:02.123 -05:00",
            ),
            (
                1_796_429_582_123,
                z("Asia/Kolkata"),
                "2026-12-05 05:43:02.123 +05:30",
            ),
            (0, z("Asia/Tokyo"), "-"),
        ] {
            assert_eq!(format(ms, &zone), want);
        }
    }

    #[test]
    fn time_arguments_are_read_in_the_zone() {
        let now = 1_000_000_000_000;
        let z = |name: &str| Zone {
            tz: tz(name),
            source: "--tz",
        };
        let (tokyo, ny, utc) = (z("Asia/Tokyo"), z("America/New_York"), Zone::utc());
        const H: i64 = 3_600_000;
        // 2026-03-08 and 2026-11-01 00:00 UTC.
        let (mar8, nov1) = (1_772_928_000_000, 1_793_491_200_000);
        // (argument, zone, ms)
        for (arg, zone, want) in [
            ("7d", &tokyo, now - 7 * 86_400_000),
            ("30m", &ny, now - 1_800_000),
            ("1970-01-02", &utc, 86_400_000),
            // Midnight in Tokyo is 15:00 UTC the day before.
            ("1970-01-02", &tokyo, 86_400_000 - 9 * H),
            // Explicit offsets keep their meaning in any zone.
            ("1970-01-01T00:00:01Z", &tokyo, 1000),
            ("1970-01-01T09:00:00+09:00", &ny, 0),
            ("1970-01-01 09:00:00+09:00", &ny, 0),
            ("1970-01-01T00:00:00.250Z", &ny, 250),
            // A local time without an offset is in the zone.
            ("1970-01-01 09:00", &tokyo, 0),
            ("1970-01-01T09:00:00", &tokyo, 0),
            // New York on the days clocks change: midnight is EST (-05:00)
            // on both; the day of 8 March lasts 23 hours, 1 November 25.
            ("2026-03-08", &ny, mar8 + 5 * H),
            ("2026-03-09", &ny, mar8 + 24 * H + 4 * H),
            ("2026-11-01", &ny, nov1 + 4 * H),
            ("2026-11-02", &ny, nov1 + 24 * H + 5 * H),
            // 02:30 on 8 March does not exist in New York: the time after
            // the gap (03:30 EDT).
            ("2026-03-08 02:30", &ny, mar8 + 7 * H + H / 2),
        ] {
            assert_eq!(
                parse_time(arg, now, zone).ok(),
                Some(want),
                "{arg} in {}",
                zone.describe()
            );
        }
        let e = parse_time("last tuesday", now, &tokyo).expect_err("nonsense");
        assert!(e.to_string().contains("midnight in Asia/Tokyo"), "{e}");
    }
}
