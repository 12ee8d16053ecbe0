//! Alerts: rules from a file (`rules.rs`) evaluated on every newly stored
//! event inside the committer, before indexing; a match tags the event
//! `alert:<rule>` and, once the event is durable, notifies a webhook and an
//! administrator by mail (`notify.rs`) and the live `Alerts` stream.
//!
//! Exactly-once, and why: the committer evaluates only events above the
//! stream's high-water mark (re-sent duplicates never reach the rules). The
//! tag is indexed with the event and the alert goes into the replay log
//! (`alerts` tree of the meta sled) in the same group commit, so both are
//! durable exactly when the event is. Notifications leave only after that
//! commit succeeded; a failed group removes its log entries and the agent's
//! resend evaluates afresh. A crash in the short window between the commit
//! and the hand-over to the notifiers loses those notifications (never
//! doubles them); the alert stays in the tag and the replay log.
//!
//! Rules are re-read when the file changes (polled) and on SIGHUP; a file
//! that does not load is refused with a message naming file, line, rule and
//! field, and the rules in force stay.
//!
//! Architecture invariant: evaluation never waits on the network; the
//! notifiers' queues are bounded and a full queue drops (and logs), it
//! does not block ingest.

pub mod health;
pub mod keyword;
pub mod notify;
// Issue 21.
pub mod p2p;
pub mod params;
pub mod records;
pub mod rules;
pub mod schedule;
pub mod windows;

// The engine's work, one `impl Alerting` per concept: stored events
// (`evaluate.rs`), what analysis found in a mail (`analysed.rs`), the replay
// log and the hand-over to notifiers (`dispatch.rs`), new rules in force
// (`reload.rs`). The issue-20 kinds are in `records.rs` and `health.rs`,
// `p2p` in `p2p.rs`.
mod analysed;
mod dispatch;
mod evaluate;
mod reload;

use kiroku_common::vocabulary::file_op;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, RwLock};

use kiroku_proto::{Alert, Event, event::Kind};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::analysis::ppap::Correlator;
use crate::store::meta::{MetaError, MetaStore};
pub use analysed::Analysed;
pub use dispatch::routed;
use kiroku_common::mail::{InternalDomains, accepted_recipients, event_user};
pub use rules::{Rule, RuleKind, RuleSet, RulesError};

/// `[alerts]` in the collector config.
///
/// The rules live in a file of their own because they change often and are
/// re-read without a restart; the notification settings here change rarely
/// and take effect at start.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Rules file (TOML, `[[rule]]` tables; see
    /// packaging/alert-rules.example.toml). Relative to the collector config.
    pub rules: PathBuf,
    /// How often the rules file is checked for changes, seconds. SIGHUP
    /// re-reads it at once.
    #[serde(default = "default_reload_secs")]
    pub reload_secs: u64,
    /// How often the periodic rules (agent_silent, ingest_paused,
    /// incident_open while open) are checked, seconds (at least 1).
    #[serde(default = "default_health_secs")]
    pub health_secs: u64,
    /// Alerts kept in the meta store for replay (`kiroku alerts --since`).
    #[serde(default = "default_keep")]
    pub keep: usize,
    /// POST every alert as JSON to a URL.
    #[serde(default)]
    pub webhook: Option<notify::WebhookConfig>,
    /// Mail alerts to administrators.
    #[serde(default)]
    pub mail: Option<notify::MailConfig>,
}

fn default_reload_secs() -> u64 {
    5
}
fn default_health_secs() -> u64 {
    30
}
fn default_keep() -> usize {
    10_000
}

impl AlertsConfig {
    pub fn resolve(&mut self, config_path: &Path) {
        self.rules = kiroku_common::config::resolve_relative(config_path, &self.rules);
        if let Some(m) = &mut self.mail
            && let Some(p) = &m.password_file
        {
            m.password_file = Some(kiroku_common::config::resolve_relative(config_path, p));
        }
    }
}

const WINDOW_MS: i64 = 3_600_000;
const LIVE_CAPACITY: usize = 1024;

/// One user's external mails within the last hour, for one mail_rate rule.
#[derive(Default)]
struct RateWindow {
    /// (event time, event id), oldest first.
    mails: VecDeque<(i64, String)>,
    /// The count is above the limit and the crossing has fired.
    above: bool,
}

/// The alert engine shared by the committer (evaluate, then dispatch) and
/// the Query service (replay, live subscription).
pub struct Alerting {
    rules: RwLock<Arc<RuleSet>>,
    rates: Mutex<HashMap<(String, String), RateWindow>>,
    live: broadcast::Sender<Alert>,
    sinks: Vec<notify::Sink>,
    log: sled::Tree,
    /// Keys of logged alerts an analysis worker has not dispatched yet
    /// (see [`Alerting::hold`]).
    held: sled::Tree,
    sensitive: sled::Tree,
    logged: AtomicUsize,
    seq: AtomicU64,
    keep: usize,
    /// The collector's `internal_domains`: the rules' default.
    internal_default: InternalDomains,
    /// PPAP pairs in progress, and which analysed mails fired already.
    ppap: Correlator,
    /// Issue 20: the counting windows, crossings and open incidents.
    state: records::State,
    /// Issue 20: which incidents and silences fired (meta tree
    /// `alert_state`), so a restart does not fire them again.
    alert_state: sled::Tree,
    /// ingest_paused: the rules fired for the pause in progress.
    pause: health::PauseState,
}

impl Alerting {
    /// The collector's `internal_domains`, the default of every rule
    /// that compares with internal domains and names none of its own (a
    /// reload of the rules uses it too).
    pub fn with_internal_domains(mut self, domains: InternalDomains) -> Self {
        self.internal_default = domains;
        self
    }

    /// An engine with `rules`, its replay log and sensitive-hash set in the
    /// collector's meta store.
    pub fn new(
        meta: &MetaStore,
        rules: RuleSet,
        sinks: Vec<notify::Sink>,
        keep: usize,
    ) -> Result<Alerting, MetaError> {
        let log = meta.tree("alerts")?;
        let held = meta.tree("alerts_held")?;
        let sensitive = meta.tree("alert_sensitive")?;
        let ppap = Correlator::new(meta.tree("alert_ppap")?);
        let alert_state = meta.tree("alert_state")?;
        let next_seq = log
            .last()
            .ok()
            .flatten()
            .and_then(|(k, _)| k.get(8..16).and_then(|s| <[u8; 8]>::try_from(s).ok()))
            .map(|s| u64::from_be_bytes(s) + 1)
            .unwrap_or(0);
        Ok(Alerting {
            rules: RwLock::new(Arc::new(rules)),
            rates: Mutex::new(HashMap::new()),
            live: broadcast::channel(LIVE_CAPACITY).0,
            sinks,
            logged: AtomicUsize::new(log.len()),
            log,
            held,
            sensitive,
            seq: AtomicU64::new(next_seq),
            keep: keep.max(1),
            internal_default: InternalDomains::default(),
            ppap,
            state: records::State::default(),
            alert_state,
            pause: health::PauseState::default(),
        })
    }

    pub fn rules(&self) -> Arc<RuleSet> {
        match self.rules.read() {
            Ok(r) => r.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

/// Where an event put content, for summaries.
fn describe(e: &Event) -> String {
    let host = e
        .host
        .as_ref()
        .map(|h| h.hostname.as_str())
        .filter(|h| !h.is_empty())
        .unwrap_or(&e.agent_id);
    match &e.kind {
        Some(Kind::Email(m)) => format!(
            "mailed by {} to {} (on {host})",
            event_user(e),
            accepted_recipients(m).collect::<Vec<_>>().join(", ")
        ),
        Some(Kind::File(f)) if f.operation == file_op::COPY_TO_REMOVABLE => {
            format!("copied to removable {} on {host}", f.path)
        }
        Some(Kind::File(f)) if !f.old_path.is_empty() => {
            format!("{} {} → {} on {host}", f.operation, f.old_path, f.path)
        }
        Some(Kind::File(f)) => format!("{} {} on {host}", f.operation, f.path),
        _ => format!("in event {}", e.event_id),
    }
}

#[cfg(test)]
mod tests20;

#[cfg(test)]
mod tests;
