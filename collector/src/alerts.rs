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

use kiroku_common::vocabulary::file_op;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use kiroku_proto::{Alert, Annotations, Event, event::Kind};
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::analysis::ppap::{self, Correlator, Derived, MailFacts, Observed};
use crate::store::meta::{MetaError, MetaStore};
use kiroku_common::mail::{
    InternalDomains, accepted_recipients, corrected_ms, event_user, outcome_name, real_attachments,
};
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

/// What [`Alerting::analysed`] gives the analysis worker.
#[derive(Debug, Default)]
pub struct Analysed {
    /// Tags and links for this mail's annotations and its partner's.
    pub derived: Derived,
    /// Logged alerts, to [`Alerting::dispatch`] once the meta store is
    /// flushed (or [`Alerting::discard`] if the batch failed).
    pub alerts: Vec<(Vec<u8>, Alert)>,
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

    fn set_rules(&self, set: RuleSet) {
        match self.rules.write() {
            Ok(mut r) => *r = Arc::new(set),
            Err(p) => *p.into_inner() = Arc::new(set),
        }
    }

    /// Evaluates the rules on newly stored events (never on duplicates),
    /// tags matching events and writes the alerts to the replay log (made
    /// durable by the committer's meta flush). Returns the alerts to
    /// [`Alerting::dispatch`] once the group is durable, or to
    /// [`Alerting::discard`] if it failed.
    pub fn evaluate(&self, events: &mut [Event]) -> Result<Vec<(Vec<u8>, Alert)>, String> {
        let rules = self.rules();
        if rules.rules.is_empty() {
            return Ok(Vec::new());
        }
        let now = kiroku_common::now_ms();
        let mut fired = Vec::new();
        for e in events.iter_mut() {
            for rule in &rules.rules {
                let Some(f) = self.check_any(rule, e)? else {
                    continue;
                };
                let tag = format!("alert:{}", rule.name);
                if !e.tags.contains(&tag) {
                    e.tags.push(tag);
                }
                fired.push(Alert {
                    rule: rule.name.clone(),
                    kind: rule.kind.name().into(),
                    event_id: e.event_id.clone(),
                    fired_at_ms: now,
                    summary: f.summary,
                    body: f.body,
                    event: None,
                    ..Default::default()
                });
            }
        }
        // The tags of every rule are on the events now: attach the final
        // event to each alert and log it.
        let mut out = Vec::with_capacity(fired.len());
        for mut a in fired {
            a.event = events.iter().find(|e| e.event_id == a.event_id).cloned();
            out.push(self.log_alert(a)?);
        }
        self.logged.fetch_add(out.len(), Ordering::Relaxed);
        Ok(out)
    }

    /// Evaluates the rules that need what the analysis worker derived from
    /// a stored mail (`encrypted_attachment`, `ppap`), once its
    /// annotations `a` are stored (a pair is only made with a mail whose
    /// annotations are there to link). Logs what fires, for
    /// [`Alerting::dispatch`] after the worker's meta flush, and returns
    /// the tags and links to add to the annotations of this mail and of
    /// the mail it was paired with ([`crate::analysis::ppap::apply`]). A
    /// mail analysed again gets its tags and links again and fires nothing.
    pub fn analysed(&self, e: &Event, a: &Annotations) -> Result<Analysed, String> {
        let rules = self.rules();
        let encrypted = ppap::encrypted_archives(a);
        let now = kiroku_common::now_ms();
        let mut derived = Derived::default();
        let mut fired = Vec::new();
        let state = |e: sled::Error| format!("alert state (meta tree alert_ppap): {e}");
        for rule in &rules.rules {
            match (rule.kind, &rule.ppap) {
                (RuleKind::EncryptedAttachment, _) => {
                    let Some(summary) =
                        ppap::encrypted_attachment(e, &encrypted, &rule.internal_domains)
                    else {
                        continue;
                    };
                    derived.tag(&e.event_id, &format!("alert:{}", rule.name));
                    if self
                        .ppap
                        .first_time(&rule.name, &e.event_id)
                        .map_err(state)?
                    {
                        fired.push(Alert {
                            rule: rule.name.clone(),
                            kind: rule.kind.name().into(),
                            event_id: e.event_id.clone(),
                            fired_at_ms: now,
                            summary,
                            event: Some(e.clone()),
                            ..Default::default()
                        });
                    }
                }
                (RuleKind::Ppap, Some(settings)) => {
                    let Some(facts) = MailFacts::of(e, !encrypted.is_empty(), settings) else {
                        continue;
                    };
                    match self
                        .ppap
                        .observe(&rule.name, settings.window_ms, &facts)
                        .map_err(state)?
                    {
                        Observed::Paired(pair) => {
                            fired.push(ppap::pair_alert(&rule.name, e, &pair, now, &mut derived))
                        }
                        Observed::PairedBefore(partner) => {
                            ppap::pair_annotations(&rule.name, &facts, &partner, &mut derived)
                        }
                        Observed::Waiting => {}
                    }
                }
                _ => {}
            }
        }
        let mut logged = Vec::with_capacity(fired.len());
        for a in fired {
            logged.push(self.log_alert(a)?);
        }
        self.logged.fetch_add(logged.len(), Ordering::Relaxed);
        Ok(Analysed {
            derived,
            alerts: logged,
        })
    }

    /// The earlier kinds (a summary, the generic body) or the issue-20
    /// kinds (records.rs).
    fn check_any(&self, rule: &Rule, e: &Event) -> Result<Option<records::Fired>, String> {
        // Issue 21 (p2p.rs).
        if rule.kind == RuleKind::P2p {
            return self.check_p2p(rule, e);
        }
        if rule.kind.is_new() {
            return self.check_new(rule, e);
        }
        Ok(self.check(rule, e)?.map(|summary| records::Fired {
            body: records::generic_body(e, &summary),
            summary,
        }))
    }

    /// Writes `a` to the replay log, with its rule's severity and route
    /// and (when the rule gave none) the generic body; its key.
    fn log_alert(&self, mut a: Alert) -> Result<(Vec<u8>, Alert), String> {
        if let Some(r) = self.rules().rules.iter().find(|r| r.name == a.rule) {
            if a.severity.is_empty() {
                a.severity = r.params.severity.into();
            }
            if a.route.is_empty() {
                a.route = r.params.route.clone();
            }
        }
        if a.body.is_empty()
            && let Some(e) = &a.event
        {
            a.body = records::generic_body(e, &a.summary);
        }
        let mut key = a.fired_at_ms.to_be_bytes().to_vec();
        key.extend_from_slice(&self.seq.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        self.log
            .insert(&key, a.encode_to_vec())
            .map_err(|e| format!("alert log: {e}"))?;
        tracing::info!(rule = %a.rule, kind = %a.kind, event_id = %a.event_id, summary = %a.summary, "alert");
        Ok((key, a))
    }

    /// The sensitive-content rules (`sensitive_hash`, `sensitive_dir`) on
    /// what analysis found inside an event's attachments (files in
    /// attached mail and TNEF, archive members): a confidential file
    /// zipped before mailing. Runs once per event and analysis (the worker
    /// skips events already analysed by this version); hashes the event
    /// itself carries were checked at ingest and are left out. Tags the
    /// annotations `alert:<rule>` and logs the alerts, durable with the
    /// worker's meta flush; [`Alerting::dispatch`] them after it.
    pub fn evaluate_derived(
        &self,
        e: &Event,
        annotations: &mut kiroku_proto::Annotations,
    ) -> Result<Vec<(Vec<u8>, Alert)>, String> {
        let rules = self.rules();
        let own = rules::hashes(e);
        let found: Vec<(String, String)> = crate::analysis::derived_files(annotations)
            .into_iter()
            .filter(|(_, h)| !own.contains(h))
            .map(|(p, h)| (p, h.to_owned()))
            .collect();
        if rules.rules.is_empty() || found.is_empty() {
            return Ok(Vec::new());
        }
        let now = kiroku_common::now_ms();
        let mut out = Vec::new();
        for rule in &rules.rules {
            let summary = match rule.kind {
                RuleKind::SensitiveHash => found
                    .iter()
                    .find(|(_, h)| rule.sha256.contains(h.as_str()))
                    .map(|(p, h)| format!("sensitive content {h} inside {p} {}", describe(e))),
                RuleKind::SensitiveDir => self.sensitive_inside(rule, e, &found)?,
                _ => None,
            };
            let Some(summary) = summary else {
                continue;
            };
            let tag = format!("alert:{}", rule.name);
            if !annotations.tags.contains(&tag) {
                annotations.tags.push(tag);
            }
            out.push(self.log_alert(Alert {
                rule: rule.name.clone(),
                kind: rule.kind.name().into(),
                event_id: e.event_id.clone(),
                fired_at_ms: now,
                summary,
                event: Some(e.clone()),
                ..Default::default()
            })?);
        }
        self.logged.fetch_add(out.len(), Ordering::Relaxed);
        Ok(out)
    }

    /// A `sensitive_dir` rule on files found inside an event: content
    /// first seen under the rule's paths, or a member whose own path (as
    /// the archive stores it, e.g. `srv/hr/pay.xlsx`) is under them.
    fn sensitive_inside(
        &self,
        rule: &Rule,
        e: &Event,
        found: &[(String, String)],
    ) -> Result<Option<String>, String> {
        for (path, h) in found {
            let key = format!("{}\0{h}", rule.name).into_bytes();
            if let Some(first) = self
                .sensitive
                .get(key)
                .map_err(|e| format!("sensitive hash set: {e}"))?
            {
                return Ok(Some(format!(
                    "content first seen at {}, inside {path} {}",
                    String::from_utf8_lossy(&first),
                    describe(e)
                )));
            }
            let inner = path.split_once('/').map_or(path.as_str(), |(_, p)| p);
            if rule.paths.is_match(inner) || rule.paths.is_match(format!("/{inner}")) {
                return Ok(Some(format!(
                    "file from a sensitive directory, {path}, {}",
                    describe(e)
                )));
            }
        }
        Ok(None)
    }

    /// The summary line when `rule` matches `e`.
    fn check(&self, rule: &Rule, e: &Event) -> Result<Option<String>, String> {
        let who = event_user(e);
        Ok(match (rule.kind, &e.kind) {
            (RuleKind::ExternalAttachment, Some(Kind::Email(m))) => {
                let names: Vec<&str> = real_attachments(m).map(|a| a.filename.as_str()).collect();
                let ext = rule.internal_domains.external_recipients(m);
                (!names.is_empty() && !ext.is_empty()).then(|| {
                    format!(
                        "{who} mailed {} to {} ({})",
                        names.join(", "),
                        ext.join(", "),
                        outcome_name(m.outcome)
                    )
                })
            }
            (RuleKind::SensitiveHash, _) => rules::hashes(e)
                .into_iter()
                .find(|h| rule.sha256.contains(*h))
                .map(|h| format!("sensitive content {h} {}", describe(e))),
            (RuleKind::SensitiveDir, _) => self.sensitive_dir(rule, e)?,
            (RuleKind::RemovableCopy, Some(Kind::File(f)))
                if f.operation == file_op::COPY_TO_REMOVABLE =>
            {
                Some(format!(
                    "{who} copied {} to removable volume {}{}",
                    if f.source_path.is_empty() {
                        &f.path
                    } else {
                        &f.source_path
                    },
                    f.volume,
                    if f.volume_label.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", f.volume_label)
                    }
                ))
            }
            (RuleKind::Integrity, Some(Kind::Integrity(i))) => Some(format!(
                "{} in stream {} of {} (seq {}–{}): {}",
                if i.tampering {
                    "chain of custody broken"
                } else {
                    "loss reported by the agent"
                },
                i.stream_id,
                e.agent_id,
                i.first_seq,
                i.last_seq,
                i.what
            )),
            (RuleKind::MailRate, Some(Kind::Email(m))) => {
                if rule.internal_domains.external_recipients(m).is_empty() {
                    return Ok(None);
                }
                self.mail_rate(rule, &who, corrected_ms(e), &e.event_id)
                    .map(|n| {
                        format!(
                            "{who} sent {n} mails to external recipients within an hour (limit {})",
                            rule.max_per_hour
                        )
                    })
            }
            _ => None,
        })
    }

    /// Remembers content first seen under the rule's paths; fires when that
    /// content shows up anywhere else.
    fn sensitive_dir(&self, rule: &Rule, e: &Event) -> Result<Option<String>, String> {
        let key = |h: &str| format!("{}\0{h}", rule.name).into_bytes();
        if let Some(Kind::File(f)) = &e.kind
            && rule.paths.is_match(rules::path_key(&f.path).as_ref())
        {
            if !f.sha256.is_empty() {
                self.sensitive
                    .compare_and_swap(key(&f.sha256), None::<&[u8]>, Some(f.path.as_bytes()))
                    .map_err(|e| format!("sensitive hash set: {e}"))?
                    .ok();
            }
            return Ok(None);
        }
        for h in rules::hashes(e) {
            if let Some(first) = self
                .sensitive
                .get(key(h))
                .map_err(|e| format!("sensitive hash set: {e}"))?
            {
                return Ok(Some(format!(
                    "content first seen at {} {}",
                    String::from_utf8_lossy(&first),
                    describe(e)
                )));
            }
        }
        Ok(None)
    }

    /// Counts an external mail; Some(count) when this mail crosses the limit.
    fn mail_rate(&self, rule: &Rule, user: &str, at: i64, event_id: &str) -> Option<usize> {
        let mut rates = match self.rates.lock() {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        let w = rates
            .entry((rule.name.clone(), user.to_owned()))
            .or_default();
        // A batch re-evaluated after a failed commit must not count twice.
        if w.mails.iter().any(|(_, id)| id == event_id) {
            return None;
        }
        let pos = w.mails.partition_point(|(t, _)| *t <= at);
        w.mails.insert(pos, (at, event_id.to_owned()));
        let newest = w.mails.back().map(|(t, _)| *t).unwrap_or(at);
        while w
            .mails
            .front()
            .is_some_and(|(t, _)| *t <= newest - WINDOW_MS)
        {
            w.mails.pop_front();
        }
        let n = w.mails.len();
        if n <= rule.max_per_hour as usize {
            w.above = false;
            return None;
        }
        if w.above {
            return None;
        }
        w.above = true;
        Some(n)
    }

    /// Marks alerts logged by an analysis worker as not dispatched yet,
    /// in the meta store beside the annotations and correlator marks that
    /// keep them from firing again: a batch that fails after them (index
    /// commit, store error, crash) must not lose them, since its retry
    /// fires nothing. [`Alerting::unhold`] after dispatching them;
    /// [`Alerting::take_held`] gives the ones left at start-up.
    pub fn hold(&self, alerts: &[(Vec<u8>, Alert)]) -> Result<(), String> {
        for (key, _) in alerts {
            self.held
                .insert(key, &[][..])
                .map_err(|e| format!("alert log (held): {e}"))?;
        }
        Ok(())
    }

    /// The alerts were dispatched: no longer held.
    pub fn unhold(&self, alerts: &[(Vec<u8>, Alert)]) {
        for (key, _) in alerts {
            if let Err(e) = self.held.remove(key) {
                tracing::warn!(error = %e, "alert log (held): cannot clear a dispatched alert; it may be notified again at the next start");
            }
        }
    }

    /// Every held alert (see [`Alerting::hold`]) with its logged content,
    /// for dispatching at start-up.
    pub fn take_held(&self) -> Result<Vec<(Vec<u8>, Alert)>, String> {
        let mut out = Vec::new();
        for key in self.held.iter().keys() {
            let key = key.map_err(|e| format!("alert log (held): {e}"))?;
            match self.log.get(&key) {
                Ok(Some(v)) => {
                    if let Ok(a) = Alert::decode(v.as_ref()) {
                        out.push((key.to_vec(), a));
                    }
                }
                // Pruned from the replay log: nothing left to notify.
                Ok(None) => {
                    let _ = self.held.remove(&key);
                }
                Err(e) => return Err(format!("alert log: {e}")),
            }
        }
        Ok(out)
    }

    /// The group of these alerts failed to commit: forget them (the agent
    /// resends, and they are evaluated again).
    pub fn discard(&self, alerts: &[(Vec<u8>, Alert)]) {
        for (key, _) in alerts {
            let _ = self.log.remove(key);
        }
        self.logged.fetch_sub(alerts.len(), Ordering::Relaxed);
    }

    /// The events behind `alerts` are durable: notify, and keep the replay
    /// log bounded. Never blocks.
    pub fn dispatch(&self, alerts: Vec<(Vec<u8>, Alert)>) {
        if alerts.is_empty() {
            return;
        }
        for (_, a) in alerts {
            for s in self.sinks.iter().filter(|s| routed(&a, s.name())) {
                s.offer(&a);
            }
            // No live subscriber is not an error.
            if routed(&a, "stream") {
                let _ = self.live.send(a);
            }
        }
        let mut excess = self
            .logged
            .load(Ordering::Relaxed)
            .saturating_sub(self.keep);
        while excess > 0 {
            match self.log.pop_min() {
                Ok(Some(_)) => {
                    self.logged.fetch_sub(1, Ordering::Relaxed);
                    excess -= 1;
                }
                _ => break,
            }
        }
    }

    /// Sends `a` to the webhook only, outside the rules and the replay
    /// log: the collector's own announcements (each new signed checkpoint,
    /// so its head is kept outside the collector). Never blocks.
    pub fn announce(&self, a: &Alert) {
        for s in self.sinks.iter().filter(|s| s.name() == "webhook") {
            s.offer(a);
        }
    }

    /// Sends `a` to every notifier (mail and webhook), outside the rules
    /// and the replay log: the collector's own reports to the
    /// administrators (the maintenance summary, with its `severity` and
    /// `body`). Never blocks; a full queue drops it from that notifier
    /// (logged).
    pub fn notify(&self, a: &Alert) {
        for s in &self.sinks {
            s.offer(a);
        }
    }

    /// Alerts fired at or after `from_ms`, oldest first.
    pub fn replay(&self, from_ms: i64) -> Result<Vec<Alert>, String> {
        let start = from_ms.max(0).to_be_bytes().to_vec();
        self.log
            .range(start..)
            .values()
            .map(|v| {
                v.map_err(|e| format!("alert log: {e}"))
                    .map(|v| Alert::decode(v.as_ref()).unwrap_or_default())
            })
            .filter(|a| a.as_ref().map_or(true, |a| routed(a, "stream")))
            .collect()
    }

    /// The configured notifiers' names ("webhook", "mail").
    pub fn notifiers(&self) -> Vec<&'static str> {
        self.sinks.iter().map(|s| s.name()).collect()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Alert> {
        self.live.subscribe()
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

/// Whether alert `a` goes to notifier `name` ("webhook", "mail",
/// "stream"): its route names it, or it has none (every notifier).
pub fn routed(a: &Alert, name: &str) -> bool {
    a.route.is_empty() || a.route.iter().any(|r| r == name)
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
mod tests {
    use super::*;
    use kiroku_proto::{Attachment, EmailEvent, FileEvent, Recipient};

    fn engine(rules: &str) -> (tempfile::TempDir, Alerting) {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta = MetaStore::open(&dir.path().join("meta")).expect("meta");
        let set = RuleSet::parse(Path::new("rules.toml"), rules, &InternalDomains::default())
            .expect("rules");
        let a = Alerting::new(&meta, set, Vec::new(), 100).expect("engine");
        (dir, a)
    }

    fn mail(id: &str, at: i64, to: &str, att_sha: Option<&str>) -> Event {
        Event {
            event_id: id.into(),
            observed_at_ms: at,
            received_at_ms: at,
            user: "alice".into(),
            kind: Some(Kind::Email(EmailEvent {
                rcpt_to: vec![Recipient {
                    address: to.into(),
                    reply_code: 250,
                    ..Default::default()
                }],
                attachments: att_sha
                    .map(|s| Attachment {
                        filename: "a.pdf".into(),
                        sha256: s.into(),
                        ..Default::default()
                    })
                    .into_iter()
                    .collect(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn file(id: &str, op: &str, path: &str, sha: &str) -> Event {
        Event {
            event_id: id.into(),
            kind: Some(Kind::File(FileEvent {
                operation: op.into(),
                path: path.into(),
                sha256: sha.into(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn fired(a: &Alerting, events: &mut [Event]) -> Vec<(String, String)> {
        a.evaluate(events)
            .expect("evaluate")
            .into_iter()
            .map(|(_, a)| (a.rule, a.event_id))
            .collect()
    }

    #[test]
    fn each_kind_fires_on_what_it_should() {
        let s = "ab".repeat(32);
        let (_d, a) = engine(&format!(
            r#"
[[rule]]
name = "ext"
kind = "external_attachment"
internal_domains = ["corp.example"]
[[rule]]
name = "hash"
kind = "sensitive_hash"
sha256 = ["{s}"]
[[rule]]
name = "dir"
kind = "sensitive_dir"
paths = ["/srv/hr/**"]
[[rule]]
name = "usb"
kind = "removable_copy"
[[rule]]
name = "rate"
kind = "mail_rate"
internal_domains = ["corp.example"]
max_per_hour = 2
"#
        ));
        let d = "cd".repeat(32);
        let cases: Vec<(Event, Vec<&str>)> = vec![
            (
                mail("m1", 1_000, "bob@corp.example", Some(&s)),
                vec!["hash"],
            ),
            (mail("m2", 2_000, "eve@other.org", None), vec![]),
            (file("f1", "create", "/srv/hr/pay.xlsx", &d), vec![]),
            (file("f2", "modify", "/srv/hr/pay.xlsx", &d), vec![]),
            (file("f3", "rename", "/tmp/pay.xlsx", &d), vec!["dir"]),
            (
                mail("m3", 3_000, "eve@other.org", Some(&d)),
                vec!["ext", "dir"],
            ),
            (
                file("f4", "copy_to_removable", "/media/usb/x", &d),
                vec!["dir", "usb"],
            ),
            (mail("m4", 4_000, "eve@other.org", None), vec!["rate"]),
            (mail("m5", 5_000, "eve@other.org", None), vec![]),
            (
                mail("m6", 5_000 + WINDOW_MS * 2, "eve@other.org", None),
                vec![],
            ),
        ];
        for (mut e, want) in cases {
            let id = e.event_id.clone();
            let got = fired(&a, std::slice::from_mut(&mut e));
            let rules: Vec<&str> = got.iter().map(|(r, _)| r.as_str()).collect();
            assert_eq!(rules, want, "{id}");
            for r in want {
                assert!(e.tags.contains(&format!("alert:{r}")), "{id} tagged {r}");
            }
        }
        // The same event evaluated twice (a failed group resent) does not
        // count twice towards a rate.
        let (_d, a) = engine(
            "[[rule]]\nname = \"rate\"\nkind = \"mail_rate\"\ninternal_domains = [\"c.x\"]\nmax_per_hour = 1\n",
        );
        let mut m = [mail("r1", 1, "x@y.z", None)];
        assert!(fired(&a, &mut m).is_empty());
        assert!(fired(&a, &mut m).is_empty());
        let mut m = [mail("r2", 2, "x@y.z", None)];
        assert_eq!(fired(&a, &mut m).len(), 1);
    }

    #[test]
    fn sensitive_rules_look_inside_attachments_once_analysed() {
        use kiroku_proto::{Annotations, ArchiveMember, AttachmentAnalysis};
        let (secret, hr_doc, own) = ("ab".repeat(32), "cd".repeat(32), "ef".repeat(32));
        let (_d, a) = engine(&format!(
            "[[rule]]\nname = \"hash\"\nkind = \"sensitive_hash\"\nsha256 = [\"{secret}\", \"{own}\"]\n[[rule]]\nname = \"dir\"\nkind = \"sensitive_dir\"\npaths = [\"/srv/hr/**\"]\n"
        ));
        // Content first seen under /srv/hr is remembered by the dir rule.
        let mut f = [file("f1", "create", "/srv/hr/pay.xlsx", &hr_doc)];
        assert!(fired(&a, &mut f).is_empty());
        let member = |path: &str, sha: &str| ArchiveMember {
            path: path.into(),
            sha256: sha.into(),
            ..Default::default()
        };
        let ann = |files: Vec<AttachmentAnalysis>| Annotations {
            event_id: "m1".into(),
            attachments: files,
            ..Default::default()
        };
        let zip = |members: Vec<ArchiveMember>| AttachmentAnalysis {
            name: "plan.zip".into(),
            container: "zip".into(),
            members,
            ..Default::default()
        };
        let nested = |path: &str, name: &str, sha: &str| AttachmentAnalysis {
            path: path.into(),
            name: name.into(),
            sha256: sha.into(),
            ..Default::default()
        };
        let e = mail("m1", 1_000, "eve@other.org", Some(&own));
        let cases: Vec<(&str, Annotations, Vec<&str>, &str)> = vec![
            (
                "a sensitive file inside a forwarded mail",
                ann(vec![nested("fwd.eml", "contract.pdf", &secret)]),
                vec!["hash"],
                "inside fwd.eml/contract.pdf",
            ),
            (
                "content first seen under /srv/hr, zipped",
                ann(vec![zip(vec![member("pay.xlsx", &hr_doc)])]),
                vec!["dir"],
                "inside plan.zip/pay.xlsx",
            ),
            (
                "a member stored under srv/hr/ in the archive",
                ann(vec![zip(vec![member(
                    "srv/hr/other.xlsx",
                    &"11".repeat(32),
                )])]),
                vec!["dir"],
                "plan.zip/srv/hr/other.xlsx",
            ),
            (
                "the mail's own attachment was checked at ingest",
                ann(vec![nested("fwd.eml", "copy.pdf", &own)]),
                vec![],
                "",
            ),
            ("nothing inside", ann(vec![]), vec![], ""),
        ];
        for (what, mut an, want, summary) in cases {
            let got = a.evaluate_derived(&e, &mut an).expect("evaluate");
            let rules: Vec<&str> = got.iter().map(|(_, x)| x.rule.as_str()).collect();
            assert_eq!(rules, want, "{what}");
            for (_, x) in &got {
                assert!(x.summary.contains(summary), "{what}: {}", x.summary);
                assert!(an.tags.contains(&format!("alert:{}", x.rule)), "{what}");
            }
        }
    }

    #[test]
    fn replay_log_is_bounded_and_discard_forgets() {
        let (_d, a) = engine("[[rule]]\nname = \"usb\"\nkind = \"removable_copy\"\n");
        for i in 0..150 {
            let mut e = [file(&format!("f{i}"), "copy_to_removable", "/m/x", "")];
            let out = a.evaluate(&mut e).expect("evaluate");
            if i == 149 {
                a.discard(&out);
            } else {
                a.dispatch(out);
            }
        }
        let all = a.replay(0).expect("replay");
        assert_eq!(all.len(), 100);
        assert_eq!(all.last().map(|x| x.event_id.as_str()), Some("f148"));
    }
}
