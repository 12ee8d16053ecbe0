//! Every rule's severity and route, and the settings of the issue-20 kinds
//! (auth_failures, incident_open, delivery_failures, delivery_delay,
//! agent_silent, clock_skew, ingest_paused, capture_gap, off_hours,
//! any_attachment, keyword), validated from a `[[rule]]` as written. An
//! error is the field and what to write instead; `rules.rs` adds the
//! file, the line and the rule.

use super::keyword::Keywords;
use super::rules::{RuleDef, RuleKind};
use super::schedule::Schedule;

/// The notifiers a route may name.
pub const NOTIFIERS: [&str; 3] = ["webhook", "mail", "stream"];

/// `auth_failures`: what the failures are counted per.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    ClientIp,
    User,
}

impl Per {
    pub fn name(self) -> &'static str {
        match self {
            Per::ClientIp => "client_ip",
            Per::User => "user",
        }
    }
}

/// The validated settings of the issue-20 kinds (unused ones stay at
/// their defaults).
#[derive(Debug, Clone)]
pub struct Params {
    /// "info", "warning" (default) or "critical".
    pub severity: &'static str,
    /// The notifiers; empty = every configured one.
    pub route: Vec<String>,
    /// auth_failures.
    pub per: Per,
    /// auth_failures, delivery_failures: the most that are fine in the
    /// window; one more fires.
    pub max: u32,
    /// auth_failures (default 10 min), delivery_failures (default 1 h).
    pub window_ms: i64,
    /// incident_open: the incident kinds (empty = every kind).
    pub kinds: Vec<String>,
    /// incident_open, agent_silent: how long, ms.
    pub after_ms: i64,
    /// delivery_delay: the longest fine delay, ms.
    pub max_delay_ms: u64,
    /// clock_skew: the largest fine offset either way, ms.
    pub max_offset_ms: i64,
    pub schedule: Option<Schedule>,
    pub keywords: Option<Keywords>,
    /// Issue 21, p2p: the reason codes that fire (empty = any).
    pub reasons: Vec<String>,
}

/// A duration such as `500ms`, `45s`, `10m`, `2h`, `1d` in milliseconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let t = s.trim();
    if let Some(n) = t.strip_suffix("ms") {
        return match n.trim().parse::<i64>() {
            Ok(ms) if ms > 0 => Ok(ms),
            _ => Err(format!(
                "{s:?}: expected a whole number above zero then a unit, e.g. 500ms"
            )),
        };
    }
    crate::agents::parse_span(t).map_err(|e| e.replace("(use s,", "(use ms, s,"))
}

type Bad = (&'static str, String);

fn minutes(field: &'static str, v: f64) -> Result<i64, Bad> {
    if !(0.05..=525_600.0).contains(&v) {
        return Err((field, "must be from 0.05 (3 s) to 525600 (a year)".into()));
    }
    Ok((v * 60_000.0) as i64)
}

/// The severity, the route and the new kinds' settings of `def`; a field
/// set on a kind that does not use it is refused.
pub fn params(def: &RuleDef) -> Result<Params, Bad> {
    use RuleKind as K;
    let k = def.kind;
    let unused = |field: &'static str| (field, format!("not used by kind {}: remove it", k.name()));
    let required = |field: &'static str, eg: &str| {
        (
            field,
            format!("required for kind {} (e.g. {field} = {eg})", k.name()),
        )
    };
    let severity = match def.severity.as_deref().map(str::trim) {
        None | Some("warning") => "warning",
        Some("info") => "info",
        Some("critical") => "critical",
        Some(s) => {
            return Err((
                "severity",
                format!("{s:?}: use \"info\", \"warning\" or \"critical\""),
            ));
        }
    };
    let mut route: Vec<String> = Vec::new();
    if let Some(r) = &def.route {
        if r.is_empty() {
            return Err((
                "route",
                "name at least one of \"webhook\", \"mail\", \"stream\" (or leave route out for all)"
                    .into(),
            ));
        }
        for n in r {
            let n = n.trim().to_ascii_lowercase();
            if !NOTIFIERS.contains(&n.as_str()) {
                return Err((
                    "route",
                    format!("{n:?} is no notifier: use \"webhook\", \"mail\" or \"stream\""),
                ));
            }
            if !route.contains(&n) {
                route.push(n);
            }
        }
    }
    let uses = |field: &'static str, given: bool, kinds: &[RuleKind]| -> Result<(), Bad> {
        if given && !kinds.contains(&k) {
            Err(unused(field))
        } else {
            Ok(())
        }
    };
    uses("per", def.per.is_some(), &[K::AuthFailures])?;
    uses(
        "max",
        def.max.is_some(),
        &[K::AuthFailures, K::DeliveryFailures],
    )?;
    uses(
        "window",
        def.window.is_some(),
        &[K::AuthFailures, K::DeliveryFailures],
    )?;
    uses("kinds", !def.kinds.is_empty(), &[K::IncidentOpen])?;
    uses(
        "minutes",
        def.minutes.is_some(),
        &[K::IncidentOpen, K::AgentSilent],
    )?;
    uses("max_delay", def.max_delay.is_some(), &[K::DeliveryDelay])?;
    uses("max_offset", def.max_offset.is_some(), &[K::ClockSkew])?;
    uses("schedule", !def.schedule.is_empty(), &[K::OffHours])?;
    uses("time_zone", def.time_zone.is_some(), &[K::OffHours])?;
    uses("keywords", !def.keywords.is_empty(), &[K::Keyword])?;
    uses("reasons", !def.reasons.is_empty(), &[K::P2p])?;

    let per = match def.per.as_deref().map(str::trim) {
        None if k == K::AuthFailures => return Err(required("per", "\"client_ip\"")),
        None | Some("client_ip") => Per::ClientIp,
        Some("user") => Per::User,
        Some(s) => return Err(("per", format!("{s:?}: use \"client_ip\" or \"user\""))),
    };
    let max = match def.max {
        None if matches!(k, K::AuthFailures | K::DeliveryFailures) => {
            return Err(required("max", "10"));
        }
        Some(0) => return Err(("max", "must be at least 1".into())),
        m => m.unwrap_or(0),
    };
    let window_ms = match &def.window {
        Some(w) => {
            let ms = parse_duration(w).map_err(|m| ("window", m))?;
            if !(1000..=7 * 86_400_000).contains(&ms) {
                return Err(("window", format!("{w:?}: from 1s to 7d")));
            }
            ms
        }
        None if k == K::DeliveryFailures => 3_600_000,
        None => 600_000,
    };
    use kiroku_common::vocabulary::INCIDENT_KINDS;
    for kind in &def.kinds {
        if !INCIDENT_KINDS.contains(&kind.as_str()) {
            return Err((
                "kinds",
                format!(
                    "{kind:?} is no incident kind: use {}",
                    INCIDENT_KINDS.join(", ")
                ),
            ));
        }
    }
    let after_ms = match def.minutes {
        Some(m) => minutes("minutes", m)?,
        None if matches!(k, K::IncidentOpen | K::AgentSilent) => {
            return Err(required("minutes", "15"));
        }
        None => 0,
    };
    let max_delay_ms = match &def.max_delay {
        Some(d) => parse_duration(d).map_err(|m| ("max_delay", m))? as u64,
        None if k == K::DeliveryDelay => return Err(required("max_delay", "\"30m\"")),
        None => 0,
    };
    let max_offset_ms = match &def.max_offset {
        Some(d) => parse_duration(d).map_err(|m| ("max_offset", m))?,
        None if k == K::ClockSkew => return Err(required("max_offset", "\"2s\"")),
        None => 0,
    };
    let schedule = match (k, &def.time_zone) {
        (K::OffHours, Some(tz)) => Some(Schedule::parse(&def.schedule, tz)?),
        (K::OffHours, None) => return Err(required("time_zone", "\"Asia/Tokyo\"")),
        _ => None,
    };
    let keywords = if k == K::Keyword {
        Some(Keywords::new(&def.keywords).map_err(|m| ("keywords", m))?)
    } else {
        None
    };
    let mut reasons = Vec::new();
    for r in &def.reasons {
        let code = kiroku_common::vocabulary::network::p2p_reason(r).map_err(|m| ("reasons", m))?;
        if !reasons.contains(&code) {
            reasons.push(code);
        }
    }
    Ok(Params {
        reasons,
        severity,
        route,
        per,
        max,
        window_ms,
        kinds: def.kinds.clone(),
        after_ms,
        max_delay_ms,
        max_offset_ms,
        schedule,
        keywords,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (s, want) in [
            ("500ms", Ok(500)),
            ("45s", Ok(45_000)),
            ("10m", Ok(600_000)),
            ("2h", Ok(7_200_000)),
            ("1d", Ok(86_400_000)),
            ("0ms", Err(())),
            ("5", Err(())),
            ("5x", Err(())),
            ("-1s", Err(())),
        ] {
            assert_eq!(parse_duration(s).map_err(|_| ()), want, "{s}");
        }
    }
}
