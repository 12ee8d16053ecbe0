//! Where the policy comes from: the file named by `[retention] policy`,
//! the policy in force and a waiting shortening kept in the meta tree
//! `retention_policy` (so a restart neither skips nor restarts a
//! shortening's delay), and the rule that turns a new file into the
//! [`Policy`] in force.
//!
//! Keys: `in_force` (the text of the policy fully in force; absent: the
//! built-in defaults), `pending` (the text of a shortening that waits) and
//! `pending_at` (i64 BE: when it takes effect).

use anyhow::Context;
use serde::Deserialize;
use std::path::{Path, PathBuf};

use super::policy::{Period, Policy, Rules};

/// `[retention]` in the collector config.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// The policy file (TOML, see `retention/policy.rs`), relative to the
    /// collector config. Absent: the built-in defaults (every kind kept
    /// for years: `policy::KIND_DEFAULTS`).
    #[serde(default)]
    pub policy: Option<PathBuf>,
    /// How often the file is checked for changes, seconds.
    #[serde(default = "default_reload_secs")]
    pub reload_secs: u64,
}

fn default_reload_secs() -> u64 {
    5
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            policy: None,
            reload_secs: default_reload_secs(),
        }
    }
}

impl RetentionConfig {
    pub fn resolve(&mut self, config_path: &Path) {
        if let Some(p) = &self.policy {
            self.policy = Some(kiroku_common::config::resolve_relative(config_path, p));
        }
    }
}

pub const TREE: &str = "retention_policy";
const IN_FORCE: &[u8] = b"in_force";
const PENDING: &[u8] = b"pending";
const PENDING_AT: &[u8] = b"pending_at";

/// What applying a policy text did (for the audit entry and the log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// In force now (nothing shortened, or the same as before).
    InForce { changed: bool },
    /// Shortens these rules: waits until `at_ms`, meanwhile each event
    /// keeps the longer of both.
    Pending { shortened: Vec<String>, at_ms: i64 },
}

/// The persisted state.
pub struct Source {
    tree: sled::Tree,
}

fn text_of(v: Option<sled::IVec>) -> Option<String> {
    v.map(|v| String::from_utf8_lossy(&v).into_owned())
}

fn delay_ms(p: Period) -> i64 {
    match p {
        Period::Ms(ms) => ms,
        Period::Forever => i64::MAX,
    }
}

impl Source {
    pub fn open(meta: &crate::store::meta::MetaStore) -> anyhow::Result<Source> {
        Ok(Source {
            tree: meta
                .tree(TREE)
                .context("opening the retention policy state")?,
        })
    }

    fn get(&self, k: &[u8]) -> anyhow::Result<Option<String>> {
        Ok(text_of(
            self.tree
                .get(k)
                .context("reading the retention policy state")?,
        ))
    }

    /// The rules fully in force (the defaults when none was stored).
    fn in_force(&self) -> anyhow::Result<(Option<String>, Rules)> {
        let text = self.get(IN_FORCE)?;
        let rules = match &text {
            None => Rules::default(),
            // A text stored once parsed; should a later version refuse
            // it, the defaults (years) are the safe reading.
            Some(t) => Rules::parse(t).unwrap_or_default(),
        };
        Ok((text, rules))
    }

    fn pending(&self) -> anyhow::Result<Option<(String, i64)>> {
        let Some(text) = self.get(PENDING)? else {
            return Ok(None);
        };
        let at = self
            .tree
            .get(PENDING_AT)
            .context("reading the retention policy state")?
            .and_then(|v| v.as_ref().try_into().ok().map(i64::from_be_bytes))
            .unwrap_or(i64::MAX);
        Ok(Some((text, at)))
    }

    fn store(&self, in_force: Option<&str>, pending: Option<(&str, i64)>) -> anyhow::Result<()> {
        let mut b = sled::Batch::default();
        match in_force {
            Some(t) => b.insert(IN_FORCE, t.as_bytes()),
            None => b.remove(IN_FORCE),
        }
        match pending {
            Some((t, at)) => {
                b.insert(PENDING, t.as_bytes());
                b.insert(PENDING_AT, &at.to_be_bytes());
            }
            None => {
                b.remove(PENDING);
                b.remove(PENDING_AT);
            }
        }
        self.tree
            .apply_batch(b)
            .context("storing the retention policy state")?;
        self.tree
            .flush()
            .context("storing the retention policy state")?;
        Ok(())
    }

    /// A waiting shortening whose time has come becomes the policy in
    /// force; returns it when that happened.
    pub fn promote_due(&self, now_ms: i64) -> anyhow::Result<Option<String>> {
        match self.pending()? {
            Some((text, at)) if at <= now_ms => {
                self.store(Some(&text), None)?;
                Ok(Some(text))
            }
            _ => Ok(None),
        }
    }

    /// The policy that applies now from what is stored (without a file).
    pub fn current(&self, now_ms: i64) -> anyhow::Result<Policy> {
        self.promote_due(now_ms)?;
        let (_, in_force) = self.in_force()?;
        Ok(match self.pending()? {
            Some((text, at)) => match Rules::parse(&text) {
                Ok(next) => Policy::shortening(next, in_force, at),
                Err(_) => Policy::new(in_force),
            },
            None => Policy::new(in_force),
        })
    }

    /// Applies the file's `text` at `now_ms`: a text that shortens nothing
    /// relative to the policy in force is in force at once; one that
    /// shortens waits for the longer of the two `shorten_delay`s (a
    /// waiting shortening given again keeps its time; a different one
    /// starts its delay anew). An invalid text changes nothing.
    pub fn apply(&self, text: &str, now_ms: i64) -> Result<(Policy, Applied), String> {
        let next = Rules::parse(text)?;
        let io = |e: anyhow::Error| format!("{e:#}");
        self.promote_due(now_ms).map_err(io)?;
        let (stored, in_force) = self.in_force().map_err(io)?;
        let shortened = in_force.shortened_by(&next);
        if shortened.is_empty() {
            let changed = stored.as_deref() != Some(text);
            self.store(Some(text), None).map_err(io)?;
            return Ok((Policy::new(next), Applied::InForce { changed }));
        }
        let at_ms = match self.pending().map_err(io)? {
            Some((t, at)) if t == text => at,
            _ => now_ms
                .saturating_add(delay_ms(in_force.shorten_delay).max(delay_ms(next.shorten_delay))),
        };
        self.store(stored.as_deref(), Some((text, at_ms)))
            .map_err(io)?;
        Ok((
            Policy::shortening(next, in_force, at_ms),
            Applied::Pending { shortened, at_ms },
        ))
    }

    /// What `text` would shorten relative to the policy in force, each
    /// with when it would take effect if it were applied at `now_ms`.
    pub fn preview(&self, text: &str, now_ms: i64) -> Result<(Rules, Vec<String>), String> {
        let next = Rules::parse(text)?;
        let (_, in_force) = self.in_force().map_err(|e| format!("{e:#}"))?;
        let at = now_ms
            .saturating_add(delay_ms(in_force.shorten_delay).max(delay_ms(next.shorten_delay)));
        let when = super::fmt_ms(at);
        let shortened = in_force
            .shortened_by(&next)
            .into_iter()
            .map(|s| format!("{s} (would take effect at {when}, after the shorten delay)"))
            .collect();
        Ok((next, shortened))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: i64 = 24 * 3600 * 1000;

    #[test]
    fn a_shortening_waits_and_survives_a_restart() {
        let dir = tempfile::tempdir().expect("policy state");
        let meta = crate::store::meta::MetaStore::open(dir.path()).expect("policy state");
        let s = Source::open(&meta).expect("policy state");
        let now = 1_000 * D;
        // Longer than the defaults: at once.
        let long = "[kind]\nemail = \"10y\"\n";
        let (_, a) = s.apply(long, now).expect("policy state");
        assert_eq!(a, Applied::InForce { changed: true });
        assert_eq!(
            s.apply(long, now).expect("policy state").1,
            Applied::InForce { changed: false }
        );
        // Shorter: waits 7 d (the old policy's delay; the new one's 0 h is
        // not taken).
        let short = "shorten_delay = \"0h\"\n[kind]\nemail = \"1y\"\n";
        let (p, a) = s.apply(short, now).expect("policy state");
        let Applied::Pending { shortened, at_ms } = a else {
            panic!("{a:?}")
        };
        assert_eq!(at_ms, now + 7 * D);
        assert_eq!(shortened.len(), 2, "{shortened:?}");
        assert!(p.pending_since().is_some());
        // Given again a day later (a restart): same time.
        let (_, a) = s.apply(short, now + D).expect("policy state");
        assert!(matches!(a, Applied::Pending { at_ms, .. } if at_ms == now + 7 * D));
        let p = s.current(now + D).expect("policy state");
        assert_eq!(p.pending_since().map(|(_, at)| at), Some(now + 7 * D));
        // The time comes: in force.
        assert!(s.promote_due(now + 7 * D).expect("policy state").is_some());
        let p = s.current(now + 7 * D).expect("policy state");
        assert!(p.pending_since().is_none());
        assert_eq!(p.rules().shorten_delay, Period::Ms(0));
        // An invalid file changes nothing.
        assert!(s.apply("[kind]\nemail = \"x\"\n", now + 8 * D).is_err());
        assert_eq!(
            s.current(now + 8 * D)
                .expect("policy state")
                .rules()
                .shorten_delay,
            Period::Ms(0)
        );
        // Going back to the longer one: at once.
        assert!(matches!(
            s.apply(long, now + 8 * D).expect("policy state").1,
            Applied::InForce { changed: true }
        ));
    }

    #[test]
    fn preview_says_when() {
        let dir = tempfile::tempdir().expect("policy state");
        let meta = crate::store::meta::MetaStore::open(dir.path()).expect("policy state");
        let s = Source::open(&meta).expect("policy state");
        let (_, shortened) = s
            .preview("[kind]\nfile = \"90d\"\n", 0)
            .expect("policy state");
        assert_eq!(shortened.len(), 1);
        assert!(shortened[0].contains("kind file 7y → 90d"), "{shortened:?}");
        assert!(
            shortened[0].contains("1970-01-08T00:00:00.000Z"),
            "{shortened:?}"
        );
        assert!(s.preview("nonsense", 0).is_err());
    }
}
