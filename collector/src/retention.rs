//! Retention (issue 19): how long each event is kept (`policy`), where the
//! policy comes from and how a shortening waits (`source`), marking
//! expired events for their grace period and undo (`marks`), the
//! per-batch logic a maintenance run calls (`step`), the plan preview and
//! erasure on request (`rpc`). Purging itself is the store's
//! (`store/purge.rs`): tombstones, journal stubs, index and blobs.
//!
//! Invariants: nothing is purged before it was marked and its grace period
//! passed in a later run (erasure on request aside: an admin's decision,
//! with a reason); a legal hold always wins; a policy change that shortens
//! any rule takes effect only after its delay; every policy load, refusal
//! and shortening taking effect is in the audit log. The audit log itself
//! is never purged: it is kept at least as long as the longest retention.

pub mod erase;
pub mod marks;
pub mod plan;
pub mod policy;
pub mod rpc;
pub mod source;
pub mod step;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::store::Store;
use crate::store::audit::{COLLECTOR_IDENTITY, admin_call};

pub use source::RetentionConfig;

/// The retention policy in force (shortenings only after their delay),
/// reloaded from its file; shared by maintenance and the Admin calls.
pub struct Retention {
    policy: std::sync::RwLock<Arc<policy::Policy>>,
    source: Option<source::Source>,
    file: Option<PathBuf>,
}

impl Retention {
    /// A fixed policy, nothing persisted (tests, tools).
    pub fn new(policy: policy::Policy) -> Arc<Retention> {
        Arc::new(Retention {
            policy: std::sync::RwLock::new(Arc::new(policy)),
            source: None,
            file: None,
        })
    }

    /// The policy of `cfg` (its file, or the defaults when it names
    /// none) applied over what the store kept: a shortening waiting since
    /// before a restart keeps its time. Refused (the collector does not
    /// start) when the file cannot be read or parsed; the error names it.
    /// The load is recorded in the audit log.
    pub fn open(store: &Store, cfg: &RetentionConfig) -> anyhow::Result<Arc<Retention>> {
        let source = source::Source::open(&store.meta)?;
        let text = match &cfg.policy {
            Some(p) => std::fs::read_to_string(p).map_err(|e| {
                anyhow::anyhow!(
                    "the retention policy {} cannot be read: {e} (fix `[retention] policy` in the collector config)",
                    p.display()
                )
            })?,
            None => String::new(),
        };
        let now = crate::clock::now_ms();
        let (policy, applied) = source.apply(&text, now).map_err(|m| {
            anyhow::anyhow!(
                "the retention policy {}: {m}",
                cfg.policy
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "(defaults)".into())
            )
        })?;
        let r = Arc::new(Retention {
            policy: std::sync::RwLock::new(Arc::new(policy)),
            source: Some(source),
            file: cfg.policy.clone(),
        });
        let detail = format!(
            "{} at start: {}",
            r.describe_file(text.as_bytes()),
            r.describe(&applied)
        );
        tracing::info!(detail = %detail, "retention policy");
        store.audit_admin(COLLECTOR_IDENTITY, admin_call::RETENTION_POLICY, &detail)?;
        Ok(r)
    }

    /// The policy in force now.
    pub fn policy(&self) -> Arc<policy::Policy> {
        self.policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set(&self, p: policy::Policy) {
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(p);
    }

    /// A candidate policy text: its rules and what it would shorten (with
    /// when), relative to the policy in force.
    pub fn preview(&self, text: &str) -> Result<(policy::Rules, Vec<String>), String> {
        let now = crate::clock::now_ms();
        match &self.source {
            Some(s) => s.preview(text, now),
            None => {
                let next = policy::Rules::parse(text)?;
                let shortened = self.policy().rules().shortened_by(&next);
                Ok((next, shortened))
            }
        }
    }

    fn describe_file(&self, bytes: &[u8]) -> String {
        match &self.file {
            Some(p) => format!(
                "retention policy {} sha256 {}",
                p.display(),
                kiroku_common::sha256_hex(bytes)
            ),
            None => "retention policy: the built-in defaults (no [retention] policy file)".into(),
        }
    }

    fn describe(&self, a: &source::Applied) -> String {
        let p = self.policy();
        let longest = p.rules().longest();
        let keep = format!(
            "longest period {longest}; the audit log is never purged, so it is kept at least that long"
        );
        match a {
            source::Applied::InForce { changed: true } => format!("in force ({keep})"),
            source::Applied::InForce { changed: false } => format!("in force, unchanged ({keep})"),
            source::Applied::Pending { shortened, at_ms } => format!(
                "shortens {}; takes effect at {} (shorten delay), until then each event keeps the longer period ({keep})",
                shortened.join("; "),
                fmt_ms(*at_ms)
            ),
        }
    }

    /// Re-reads the policy file (when it changed) and applies it; the
    /// audit entry's detail, or None when nothing changed.
    fn reload(&self, bytes: Option<&[u8]>) -> Option<String> {
        let source = self.source.as_ref()?;
        let now = crate::clock::now_ms();
        let Some(bytes) = bytes else {
            return Some(format!(
                "{} unreadable: the previous policy stays in force",
                self.describe_file(b"")
            ));
        };
        let text = String::from_utf8_lossy(bytes);
        Some(match source.apply(&text, now) {
            Ok((p, applied)) => {
                self.set(p);
                format!("{}: {}", self.describe_file(bytes), self.describe(&applied))
            }
            Err(m) => format!(
                "{}: refused, the previous policy stays in force: {m}",
                self.describe_file(bytes)
            ),
        })
    }

    /// A waiting shortening whose time came: in force now (the policy
    /// already decided by it since; this records it).
    fn promote(&self) -> Option<String> {
        let source = self.source.as_ref()?;
        let now = crate::clock::now_ms();
        match source.promote_due(now) {
            Ok(Some(text)) => {
                if let Ok(p) = source.current(now) {
                    self.set(p);
                }
                Some(format!(
                    "a waiting shortening took effect (policy sha256 {})",
                    kiroku_common::sha256_hex(text.as_bytes())
                ))
            }
            Ok(None) => None,
            Err(e) => {
                tracing::error!(error = %e, "the retention policy state cannot be updated");
                None
            }
        }
    }

    /// Re-reads the policy file when its content changes (checked every
    /// `every`) and records when a waiting shortening takes effect, until
    /// `shutdown`. Each reload, applied or refused, is an admin entry in
    /// the audit log with the file's SHA-256.
    pub async fn watch(
        self: Arc<Self>,
        every: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
        store: Arc<Store>,
    ) {
        let mut last = self.file.as_ref().and_then(|p| std::fs::read(p).ok());
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(200)));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let this = self.clone();
            let now = self.file.as_ref().and_then(|p| std::fs::read(p).ok());
            let changed = self.file.is_some() && now != last;
            last = now.clone();
            let details = tokio::task::spawn_blocking(move || {
                let mut d = Vec::new();
                if changed {
                    d.extend(this.reload(now.as_deref()));
                }
                d.extend(this.promote());
                d
            })
            .await
            .unwrap_or_default();
            for detail in details {
                tracing::info!(detail = %detail, "retention policy");
                let s = store.clone();
                let audited = tokio::task::spawn_blocking(move || {
                    s.audit_admin(COLLECTOR_IDENTITY, admin_call::RETENTION_POLICY, &detail)
                })
                .await;
                if let Ok(Err(e)) = audited {
                    tracing::error!(error = %e, "the retention policy change could not be recorded in the audit log");
                }
            }
        }
    }
}

/// A time for people in messages and reasons (UTC, RFC 3339).
pub fn fmt_ms(ms: i64) -> String {
    kiroku_common::rfc3339_ms(ms)
}
