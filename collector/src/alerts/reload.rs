//! Putting new rules in force: [`Alerting::reload`] loads and checks a
//! rules file (a refused file leaves the rules in force), and
//! [`Alerting::watch`] reloads on change (polled) and on SIGHUP, recording
//! each reload in the audit log.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{Alerting, RuleSet, RulesError};

impl Alerting {
    fn set_rules(&self, set: RuleSet) {
        match self.rules.write() {
            Ok(mut r) => *r = Arc::new(set),
            Err(p) => *p.into_inner() = Arc::new(set),
        }
    }

    /// Loads `path`; on success the new rules are in force. On failure the
    /// old rules stay and the error (naming file, line and field) returns.
    pub fn reload(&self, path: &Path) -> Result<usize, RulesError> {
        let set = RuleSet::load(path, &self.internal_default)?;
        set.check_routes(&self.notifiers())?;
        let n = set.rules.len();
        self.set_rules(set);
        Ok(n)
    }

    /// Re-reads the rules file when its content changes (checked every
    /// `every`) and on SIGHUP, until `shutdown`. Each reload, applied or
    /// refused, is an admin entry in `store`'s audit log with the file's
    /// SHA-256.
    pub async fn watch(
        self: Arc<Self>,
        path: PathBuf,
        every: Duration,
        shutdown: tokio::sync::watch::Receiver<bool>,
        store: Arc<crate::store::Store>,
    ) {
        let mut shutdown = shutdown;
        let mut last = std::fs::read(&path).ok();
        #[cfg(unix)]
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; the rules file is still polled");
                None
            }
        };
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(200)));
        loop {
            #[cfg(unix)]
            let hup_fut = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hup_fut = std::future::pending::<Option<()>>();
            let forced = tokio::select! {
                _ = tick.tick() => false,
                _ = hup_fut => true,
                _ = shutdown.changed() => return,
            };
            let now = std::fs::read(&path).ok();
            if !forced && now == last {
                continue;
            }
            // The hash is of the content that triggered the reload; should
            // the file change again before it is parsed, the next check
            // sees a difference and reloads (and audits) once more.
            let digest = match &now {
                Some(bytes) => format!(
                    "{} sha256 {}",
                    path.display(),
                    kiroku_common::sha256_hex(bytes)
                ),
                None => format!("{} unreadable", path.display()),
            };
            last = now;
            let this = self.clone();
            let p = path.clone();
            let why = if forced { "SIGHUP" } else { "file changed" };
            let detail = match tokio::task::spawn_blocking(move || this.reload(&p)).await {
                Ok(Ok(n)) => {
                    tracing::info!(file = %path.display(), rules = n, sighup = forced, "alert rules reloaded");
                    format!("rules {digest}: {n} rules in force ({why})")
                }
                Ok(Err(e)) => {
                    tracing::error!(
                        "alert rules NOT reloaded, the previous rules stay in force: {e}"
                    );
                    format!(
                        "rules {digest}: refused, the previous rules stay in force ({why}): {e}"
                    )
                }
                Err(e) => {
                    tracing::error!(error = %e, "alert rules reload failed");
                    format!("rules {digest}: reload failed ({why}): {e}")
                }
            };
            let s = store.clone();
            let audited = tokio::task::spawn_blocking(move || {
                s.audit_admin(
                    crate::store::audit::COLLECTOR_IDENTITY,
                    crate::store::audit::admin_call::RULES_RELOAD,
                    &detail,
                )
            })
            .await;
            if let Ok(Err(e)) = audited {
                tracing::error!(error = %e, "the rules reload could not be recorded in the audit log");
            }
        }
    }
}
