//! The retention policy: how long each event is kept, by kind (every kind
//! registers its default in [`KIND_DEFAULTS`]), with overrides by agent
//! group, tag and outcome; `forever` allowed. Loaded from the policy file
//! named in the collector config (`[retention] policy`) and reloaded when
//! it changes (`retention/file.rs`).
//!
//! The file (TOML; every key optional, absent keys take the defaults):
//!
//! ```toml
//! grace = "1d"            # marked → purged (undo possible meanwhile)
//! shorten_delay = "7d"    # a change that shortens waits this long
//! undo_exempt = "30d"     # after `kiroku purge undo`, not marked again for
//!
//! [kind]                  # default period per event kind
//! email = "7y"
//! file = "7y"
//!
//! [[override]]            # all conditions given must hold
//! group = "sales"         # the agent's group (from its certificate)
//! period = "3y"
//!
//! [[override]]
//! tag = "alert:*"         # glob: `*` any run, `?` one character
//! period = "10y"
//!
//! [[override]]
//! kind = "email"
//! outcome = "rejected"    # delivered, rejected, aborted, unknown, captured
//! period = "1y"
//! ```
//!
//! Periods: `forever`, or a whole number with a unit `h`, `d`, `w`, `y`
//! (`90d`, `5y`). A year counts as 366 days, so `7y` never ends before
//! seven calendar years.
//!
//! **Which rule decides.** When overrides match an event, the longest
//! period among them decides (a tie: the first in the file), so adding a
//! rule that keeps something longer can never shorten anything else; the
//! kind's default decides only when no override matches. An override may
//! be shorter than its kind's default (rejected mail kept one year).
//!
//! **Expiry** = the later of the event's corrected time and its receipt
//! time, plus the period, and never before receipt + `grace`: a host with a
//! wrong clock (years behind) does not get its events purged on arrival.
//!
//! **Shortening.** A policy that shortens any rule relative to the one in
//! force takes effect only after `shorten_delay` (the longer of the old and
//! the new file's): until then [`Policy`] carries both, and each event
//! keeps the later of its two expiries.
//!
//! The audit log is never purged by retention: it is kept at least as
//! long as the longest retention (in practice, for the store's life).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use kiroku_proto::{Event, event::Kind};
use serde::Deserialize;

/// How long a rule keeps what it decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    Forever,
    Ms(i64),
}

const HOUR_MS: i64 = 3600 * 1000;
const DAY_MS: i64 = 24 * HOUR_MS;
const WEEK_MS: i64 = 7 * DAY_MS;
/// A year counts as 366 days: a period in years never ends early.
const YEAR_MS: i64 = 366 * DAY_MS;

impl Period {
    /// Parses `forever`, `90d`, `5y`, `12h`, `2w`.
    pub fn parse(s: &str) -> Result<Period, String> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("forever") {
            return Ok(Period::Forever);
        }
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: i64 = num.parse().map_err(|_| {
            format!("{s:?} is not a period: write `forever` or a number with a unit h, d, w or y (`90d`, `5y`)")
        })?;
        let unit_ms = match unit {
            "h" => HOUR_MS,
            "d" => DAY_MS,
            "w" => WEEK_MS,
            "y" => YEAR_MS,
            _ => {
                return Err(format!(
                    "{s:?}: unknown unit {unit:?}; use h, d, w or y (`90d`, `5y`) or `forever`"
                ));
            }
        };
        n.checked_mul(unit_ms)
            .map(Period::Ms)
            .ok_or_else(|| format!("{s:?} is too long; write `forever`"))
    }

    /// Whether `self` keeps for less time than `other`.
    pub fn shorter_than(self, other: Period) -> bool {
        match (self, other) {
            (Period::Forever, _) => false,
            (Period::Ms(_), Period::Forever) => true,
            (Period::Ms(a), Period::Ms(b)) => a < b,
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Period::Forever => write!(f, "forever"),
            Period::Ms(ms) => {
                for (unit, len) in [
                    ("y", YEAR_MS),
                    ("w", WEEK_MS),
                    ("d", DAY_MS),
                    ("h", HOUR_MS),
                ] {
                    if ms != 0 && ms % len == 0 {
                        return write!(f, "{}{unit}", ms / len);
                    }
                }
                if ms % 1000 == 0 {
                    write!(f, "{}s", ms / 1000)
                } else {
                    write!(f, "{ms}ms")
                }
            }
        }
    }
}

/// What the policy says about one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// When it expires (ms since the epoch); None = kept forever.
    pub expires_at_ms: Option<i64>,
    /// The rule that decided, for people: "kind email 7y", "tag alert:* 10y".
    pub rule: String,
    /// That rule's period.
    pub period: Period,
}

impl Decision {
    /// Whether the event has expired at `now_ms`.
    pub fn expired(&self, now_ms: i64) -> bool {
        self.expires_at_ms.is_some_and(|at| at <= now_ms)
    }
}

/// The default period of every event kind (`event::Kind` names as in
/// `kiroku search --kind`); a new kind adds its line here (a test fails
/// for a kind of the index without one). Conservative: mail and file
/// operations seven years (the longest common statutory period for
/// business correspondence and books), the records of the system itself
/// (host changes, gaps, integrity findings) ten years.
pub const KIND_DEFAULTS: &[(&str, Period)] = &[
    ("email", Period::Ms(7 * YEAR_MS)),
    ("file", Period::Ms(7 * YEAR_MS)),
    ("host_change", Period::Ms(10 * YEAR_MS)),
    ("gap", Period::Ms(10 * YEAR_MS)),
    ("integrity", Period::Ms(10 * YEAR_MS)),
    // Issue 20: relay incidents and AUTH attempts are evidence of who
    // tried what, as long as the mail; the MTA's log joins each mail's fate.
    ("incident", Period::Ms(7 * YEAR_MS)),
    ("auth", Period::Ms(7 * YEAR_MS)),
    ("mta_log", Period::Ms(7 * YEAR_MS)),
    // Issue 21: flow records are many and their worth fades (a year, as
    // firewall logs are commonly kept); a P2P detection is the evidence
    // of an incident and names its flows' peers and volumes itself.
    ("network", Period::Ms(YEAR_MS)),
    ("p2p", Period::Ms(7 * YEAR_MS)),
];

/// Defaults of the file's top-level keys.
pub const DEFAULT_GRACE: Period = Period::Ms(DAY_MS);
pub const DEFAULT_SHORTEN_DELAY: Period = Period::Ms(7 * DAY_MS);
pub const DEFAULT_UNDO_EXEMPT: Period = Period::Ms(30 * DAY_MS);

/// Outcome names an override may name (`kiroku_common::mail::outcome_name`).
const OUTCOMES: &[&str] = &["delivered", "rejected", "aborted", "unknown", "captured"];

/// The kind of `e` as `kiroku search --kind` names it; "" without one.
pub fn kind_name(e: &Event) -> &'static str {
    match &e.kind {
        Some(Kind::Email(_)) => "email",
        Some(Kind::File(_)) => "file",
        Some(Kind::HostChange(_)) => "host_change",
        Some(Kind::Gap(_)) => "gap",
        Some(Kind::Integrity(_)) => "integrity",
        Some(Kind::Incident(_)) => "incident",
        Some(Kind::Auth(_)) => "auth",
        Some(Kind::MtaLog(_)) => "mta_log",
        Some(Kind::Network(_)) => "network",
        Some(Kind::P2p(_)) => "p2p",
        None => "",
    }
}

/// The policy file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    grace: Option<String>,
    shorten_delay: Option<String>,
    undo_exempt: Option<String>,
    #[serde(default)]
    kind: BTreeMap<String, String>,
    #[serde(default, rename = "override")]
    overrides: Vec<OverrideFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideFile {
    kind: Option<String>,
    group: Option<String>,
    tag: Option<String>,
    outcome: Option<String>,
    period: String,
}

/// One override: all its conditions must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Override {
    pub kind: Option<String>,
    pub group: Option<String>,
    pub tag: Option<String>,
    pub outcome: Option<String>,
    pub period: Period,
}

impl Override {
    /// Its conditions, e.g. `group sales, tag alert:*`: the rule's name,
    /// and its identity when two policies are compared.
    pub fn conditions(&self) -> String {
        let mut c = Vec::new();
        for (k, v) in [
            ("group", &self.group),
            ("tag", &self.tag),
            ("outcome", &self.outcome),
            ("kind", &self.kind),
        ] {
            if let Some(v) = v {
                c.push(format!("{k} {v}"));
            }
        }
        c.join(", ")
    }

    fn matches(&self, e: &Event, kind: &str) -> bool {
        if self.kind.as_deref().is_some_and(|k| k != kind) {
            return false;
        }
        if self.group.as_deref().is_some_and(|g| g != e.agent_group) {
            return false;
        }
        if let Some(t) = &self.tag
            && !e.tags.iter().any(|have| glob_match(t, have))
        {
            return false;
        }
        if let Some(o) = &self.outcome {
            let Some(Kind::Email(m)) = &e.kind else {
                return false;
            };
            if kiroku_common::mail::outcome_name(m.outcome) != o {
                return false;
            }
        }
        true
    }
}

/// `*` matches any run of characters (also none), `?` one character.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matcher with one backtrack point (the last `*`).
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// One policy file, parsed and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    /// Every kind of [`KIND_DEFAULTS`], with the file's periods over them.
    pub kinds: BTreeMap<String, Period>,
    pub overrides: Vec<Override>,
    pub grace: Period,
    pub shorten_delay: Period,
    pub undo_exempt: Period,
}

impl Default for Rules {
    fn default() -> Rules {
        Rules {
            kinds: KIND_DEFAULTS
                .iter()
                .map(|(k, p)| ((*k).to_owned(), *p))
                .collect(),
            overrides: Vec::new(),
            grace: DEFAULT_GRACE,
            shorten_delay: DEFAULT_SHORTEN_DELAY,
            undo_exempt: DEFAULT_UNDO_EXEMPT,
        }
    }
}

fn finite(name: &str, s: &Option<String>, default: Period) -> Result<Period, String> {
    let Some(s) = s else {
        return Ok(default);
    };
    match Period::parse(s).map_err(|m| format!("`{name}`: {m}"))? {
        Period::Forever => Err(format!("`{name}` cannot be `forever`")),
        p => Ok(p),
    }
}

impl Rules {
    /// Parses a policy file's text; the error names the key at fault
    /// (TOML errors name line and column).
    pub fn parse(text: &str) -> Result<Rules, String> {
        let f: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut r = Rules {
            grace: finite("grace", &f.grace, DEFAULT_GRACE)?,
            shorten_delay: finite("shorten_delay", &f.shorten_delay, DEFAULT_SHORTEN_DELAY)?,
            undo_exempt: finite("undo_exempt", &f.undo_exempt, DEFAULT_UNDO_EXEMPT)?,
            ..Rules::default()
        };
        for (k, v) in &f.kind {
            let known = KIND_DEFAULTS.iter().any(|(name, _)| name == k);
            if !known {
                return Err(format!(
                    "[kind] {k}: unknown kind; kinds are {}",
                    kind_list()
                ));
            }
            let p = Period::parse(v).map_err(|m| format!("[kind] {k}: {m}"))?;
            r.kinds.insert(k.clone(), p);
        }
        for (i, o) in f.overrides.into_iter().enumerate() {
            let at = |m: String| format!("[[override]] number {}: {m}", i + 1);
            if o.group.is_none() && o.tag.is_none() && o.outcome.is_none() {
                return Err(at(
                    "name a `group`, `tag` or `outcome` (a kind alone is set in [kind])".into(),
                ));
            }
            if let Some(k) = &o.kind
                && !KIND_DEFAULTS.iter().any(|(name, _)| name == k)
            {
                return Err(at(format!("unknown kind {k:?}; kinds are {}", kind_list())));
            }
            if let Some(out) = &o.outcome
                && !OUTCOMES.contains(&out.as_str())
            {
                return Err(at(format!(
                    "unknown outcome {out:?}; outcomes are {}",
                    OUTCOMES.join(", ")
                )));
            }
            if o.outcome.is_some() && o.kind.as_deref().is_some_and(|k| k != "email") {
                return Err(at("only mail has an outcome: `kind` must be email".into()));
            }
            for (name, v) in [("group", &o.group), ("tag", &o.tag)] {
                if v.as_deref().is_some_and(|v| v.trim().is_empty()) {
                    return Err(at(format!("`{name}` is empty")));
                }
            }
            let period = Period::parse(&o.period).map_err(|m| at(format!("`period`: {m}")))?;
            r.overrides.push(Override {
                kind: o.kind,
                group: o.group,
                tag: o.tag,
                outcome: o.outcome,
                period,
            });
        }
        Ok(r)
    }

    /// The rule deciding `e` and its period.
    pub fn rule_for(&self, e: &Event) -> (String, Period) {
        let kind = kind_name(e);
        let mut best: Option<&Override> = None;
        for o in self.overrides.iter().filter(|o| o.matches(e, kind)) {
            if best.is_none_or(|b| b.period.shorter_than(o.period)) {
                best = Some(o);
            }
        }
        if let Some(o) = best {
            return (format!("{} {}", o.conditions(), o.period), o.period);
        }
        match self.kinds.get(kind) {
            Some(p) => (format!("kind {kind} {p}"), *p),
            // An event without a kind (from a newer agent): kept.
            None => ("no kind: kept forever".into(), Period::Forever),
        }
    }

    /// What these rules alone say about `e`.
    pub fn decide(&self, e: &Event) -> Decision {
        let (rule, period) = self.rule_for(e);
        let expires_at_ms = match period {
            Period::Forever => None,
            Period::Ms(p) => {
                let received = e.received_at_ms;
                let from = kiroku_common::mail::corrected_ms(e).max(received);
                let grace = match self.grace {
                    Period::Ms(g) => g,
                    Period::Forever => 0,
                };
                Some(from.saturating_add(p).max(received.saturating_add(grace)))
            }
        };
        Decision {
            expires_at_ms,
            rule,
            period,
        }
    }

    /// Every rule of `self` that `next` shortens, for people ("kind email
    /// 7y → 1y"). Empty: `next` keeps everything at least as long.
    /// Conservative: a removed override and an added override shorter than
    /// what would otherwise decide count as shortenings.
    pub fn shortened_by(&self, next: &Rules) -> Vec<String> {
        let mut out = Vec::new();
        for (k, p) in &self.kinds {
            let q = next.kinds.get(k).copied().unwrap_or(Period::Forever);
            if q.shorter_than(*p) {
                out.push(format!("kind {k} {p} → {q}"));
            }
        }
        for o in &self.overrides {
            let same = next
                .overrides
                .iter()
                .filter(|n| n.conditions() == o.conditions())
                .map(|n| n.period)
                .fold(None::<Period>, |acc, p| match acc {
                    Some(a) if !a.shorter_than(p) => Some(a),
                    _ => Some(p),
                });
            match same {
                None => out.push(format!("{} {} removed", o.conditions(), o.period)),
                Some(q) if q.shorter_than(o.period) => {
                    out.push(format!("{} {} → {q}", o.conditions(), o.period))
                }
                Some(_) => {}
            }
        }
        for n in &next.overrides {
            if self
                .overrides
                .iter()
                .any(|o| o.conditions() == n.conditions())
            {
                continue;
            }
            // The longest this override could have applied to before.
            let before = self
                .kinds
                .iter()
                .filter(|(k, _)| n.kind.as_deref().is_none_or(|nk| nk == k.as_str()))
                .map(|(_, p)| *p)
                .chain(self.overrides.iter().map(|o| o.period))
                .fold(Period::Ms(0), |a, p| if a.shorter_than(p) { p } else { a });
            if n.period.shorter_than(before) {
                out.push(format!(
                    "{} {} added (shorter than {before})",
                    n.conditions(),
                    n.period
                ));
            }
        }
        for (name, a, b) in [
            ("grace", self.grace, next.grace),
            ("shorten_delay", self.shorten_delay, next.shorten_delay),
        ] {
            if b.shorter_than(a) {
                out.push(format!("{name} {a} → {b}"));
            }
        }
        out
    }

    /// The longest period of any rule (for the audit log's promise).
    pub fn longest(&self) -> Period {
        self.kinds
            .values()
            .copied()
            .chain(self.overrides.iter().map(|o| o.period))
            .fold(Period::Ms(0), |a, p| if a.shorter_than(p) { p } else { a })
    }

    /// Every rule, for the plan: (name, period).
    pub fn rule_names(&self) -> Vec<(String, Period)> {
        self.overrides
            .iter()
            .map(|o| (format!("{} {}", o.conditions(), o.period), o.period))
            .chain(
                self.kinds
                    .iter()
                    .map(|(k, p)| (format!("kind {k} {p}"), *p)),
            )
            .collect()
    }
}

fn kind_list() -> String {
    KIND_DEFAULTS
        .iter()
        .map(|(k, _)| *k)
        .collect::<Vec<_>>()
        .join(", ")
}

fn ms(p: Period) -> i64 {
    match p {
        Period::Ms(ms) => ms,
        Period::Forever => i64::MAX,
    }
}

/// The policy in force: the newest rules, and while a shortening waits
/// for its delay the rules it replaces (each event keeps the later expiry).
#[derive(Clone, Debug, Default)]
pub struct Policy {
    rules: Arc<Rules>,
    /// (the rules before a shortening, when the shortening takes effect).
    previous: Option<(Arc<Rules>, i64)>,
}

impl Policy {
    pub fn new(rules: Rules) -> Policy {
        Policy {
            rules: Arc::new(rules),
            previous: None,
        }
    }

    /// `rules` shortening `previous`, in effect from `effective_at_ms`.
    pub fn shortening(rules: Rules, previous: Rules, effective_at_ms: i64) -> Policy {
        Policy {
            rules: Arc::new(rules),
            previous: Some((Arc::new(previous), effective_at_ms)),
        }
    }

    /// The newest rules (a shortening's included).
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The rules a pending shortening replaces and when it takes effect.
    pub fn pending_since(&self) -> Option<(&Rules, i64)> {
        self.previous.as_ref().map(|(r, at)| (r.as_ref(), *at))
    }

    /// What the policy says about `e` (the merged view: `agent_group`,
    /// tags, outcome, corrected time and receipt time are the collector's).
    pub fn decide(&self, e: &Event) -> Decision {
        self.decide_at(e, crate::clock::now_ms())
    }

    /// [`Policy::decide`] at `now_ms` (before a shortening takes effect,
    /// the later of the two expiries).
    pub fn decide_at(&self, e: &Event, now_ms: i64) -> Decision {
        let new = self.rules.decide(e);
        let Some((prev, at)) = &self.previous else {
            return new;
        };
        if now_ms >= *at {
            return new;
        }
        let old = prev.decide(e);
        let later = |d: &Decision| d.expires_at_ms.unwrap_or(i64::MAX);
        if later(&old) > later(&new) {
            Decision {
                rule: format!(
                    "{} (previous policy, until a shortening takes effect at {})",
                    old.rule,
                    crate::retention::fmt_ms(*at)
                ),
                ..old
            }
        } else {
            new
        }
    }

    /// The grace period between marking and purging (default 1 day; while
    /// a shortening waits, the longer of both).
    pub fn grace_ms(&self) -> i64 {
        self.grace_at(crate::clock::now_ms())
    }

    pub fn grace_at(&self, now_ms: i64) -> i64 {
        let g = ms(self.rules.grace);
        match &self.previous {
            Some((prev, at)) if now_ms < *at => g.max(ms(prev.grace)),
            _ => g,
        }
    }

    /// How long an event restored by `kiroku purge undo` is not marked again.
    pub fn undo_exempt_ms(&self) -> i64 {
        ms(self.rules.undo_exempt)
    }
}

#[cfg(test)]
mod tests;
