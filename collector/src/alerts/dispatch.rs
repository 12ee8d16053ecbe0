//! The replay log (meta tree `alerts`) and the hand-over: an alert is
//! logged with its rule's severity and route, held while an analysis
//! worker has not dispatched it, forgotten if its group failed, and
//! dispatched to the notifiers and the live stream its route names only
//! once durable; the log keeps the newest `keep`. Also the collector's own
//! announcements and reports, outside the rules and the log.

use std::sync::atomic::Ordering;

use kiroku_proto::Alert;
use prost::Message;
use tokio::sync::broadcast;

use super::{Alerting, records};

impl Alerting {
    /// Writes `a` to the replay log, with its rule's severity and route
    /// and (when the rule gave none) the generic body; its key.
    pub(super) fn log_alert(&self, mut a: Alert) -> Result<(Vec<u8>, Alert), String> {
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
}

/// Whether alert `a` goes to notifier `name` ("webhook", "mail",
/// "stream"): its route names it, or it has none (every notifier).
pub fn routed(a: &Alert, name: &str) -> bool {
    a.route.is_empty() || a.route.iter().any(|r| r == name)
}
