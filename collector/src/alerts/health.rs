//! The periodic checks (every `[alerts] health_secs`): `agent_silent`
//! (an agent with no open stream whose last stream or status is older than
//! the rule's minutes; once per silence — the silence fired is kept in the
//! meta tree `alert_state` with the agent's last_seen, so neither a
//! restart nor the next check fires it again, and the agent coming back
//! ends it), `ingest_paused` (the disk reserve paused ingest: once per
//! pause, in memory), and `incident_open` for an incident still open
//! (seen in an open or still_open record and not closed yet) past the
//! rule's minutes — once per incident, shared with the record check.
//!
//! These alerts belong to no stored event: they are logged for replay,
//! the meta store is flushed, then they are dispatched.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiroku_proto::{Alert, HostInfo};

use super::Alerting;
use super::records::{Details, incident_fired, minutes_text};
use super::rules::RuleKind;

/// ingest_paused rules that fired for the pause in progress.
#[derive(Default)]
pub struct PauseState(Mutex<HashSet<String>>);

fn host_name(h: &HostInfo) -> String {
    match h.host.as_ref().map(|i| i.hostname.as_str()) {
        Some(n) if !n.is_empty() && n != h.agent_id => format!("{n} (agent {})", h.agent_id),
        _ => format!("agent {}", h.agent_id),
    }
}

impl Alerting {
    /// One round of the periodic rules at collector time `now`: `hosts`
    /// as the meta store has them, `paused` why ingest is paused (if it
    /// is). Logs what fires; the caller flushes, then dispatches.
    pub fn check_health(
        &self,
        hosts: &[HostInfo],
        paused: Option<&str>,
        now: i64,
    ) -> Result<Vec<(Vec<u8>, Alert)>, String> {
        let rules = self.rules();
        let mut fired = Vec::new();
        let state = |e: sled::Error| format!("alert state (meta tree alert_state): {e}");
        for rule in &rules.rules {
            let p = &rule.params;
            match rule.kind {
                RuleKind::AgentSilent => {
                    for h in hosts
                        .iter()
                        .filter(|h| h.retired_at_ms == 0 && h.last_seen_ms > 0)
                    {
                        let key = format!("silent\0{}\0{}", rule.name, h.agent_id);
                        let seen = h.last_seen_ms.to_be_bytes();
                        let silent = !h.connected && now - h.last_seen_ms >= p.after_ms;
                        let marked = self.alert_state.get(key.as_bytes()).map_err(state)?;
                        if !silent {
                            if marked.is_some()
                                && (h.connected || marked.as_deref() != Some(&seen[..]))
                            {
                                self.alert_state.remove(key.as_bytes()).map_err(state)?;
                            }
                            continue;
                        }
                        if marked.as_deref() == Some(&seen[..]) {
                            continue;
                        }
                        self.alert_state
                            .insert(key.as_bytes(), &seen[..])
                            .map_err(state)?;
                        let name = host_name(h);
                        let quiet = now - h.last_seen_ms;
                        fired.push(Alert {
                            rule: rule.name.clone(),
                            kind: rule.kind.name().into(),
                            fired_at_ms: now,
                            summary: format!(
                                "{name} silent for {}: no stream, no status since {} (limit {})",
                                minutes_text(quiet),
                                kiroku_common::rfc3339_ms(h.last_seen_ms),
                                minutes_text(p.after_ms)
                            ),
                            body: Details::default()
                                .line("what", format!("agent silent for {}", minutes_text(quiet)))
                                .line("where", name)
                                .line("since", kiroku_common::rfc3339_ms(h.last_seen_ms))
                                .line("backlog", format!("{} events ({} bytes) at its last status", h.backlog_events, h.backlog_bytes))
                                .line("check", "is the agent running (systemctl status kiroku-agent), can it reach the collector?")
                                .line("see", format!("kiroku hosts; kiroku search --agent {} --from 1d", h.agent_id))
                                .text(),
                            ..Default::default()
                        });
                    }
                }
                RuleKind::IngestPaused => {
                    let mut fired_for = self.pause.0.lock().unwrap_or_else(|p| p.into_inner());
                    let Some(why) = paused else {
                        fired_for.remove(&rule.name);
                        continue;
                    };
                    if !fired_for.insert(rule.name.clone()) {
                        continue;
                    }
                    fired.push(Alert {
                        rule: rule.name.clone(),
                        kind: rule.kind.name().into(),
                        fired_at_ms: now,
                        summary: format!("collector ingest paused: {why}"),
                        body: Details::default()
                            .line("what", "the collector refuses new events until disk space is free; agents keep them buffered")
                            .line("why", why)
                            .line("act", "free space on the collector's data disk, or lower min_free_bytes")
                            .line("see", "kiroku status; kiroku hosts (agents' backlog)")
                            .text(),
                        ..Default::default()
                    });
                }
                RuleKind::IncidentOpen => {
                    let open: Vec<_> = self
                        .state
                        .open
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .values()
                        .filter(|o| p.kinds.is_empty() || p.kinds.contains(&o.record.kind))
                        .filter(|o| now - o.first_ms > p.after_ms)
                        .cloned()
                        .collect();
                    for o in open {
                        if !self.first_for_incident(
                            &rule.name,
                            &o.agent,
                            &o.record.incident_id,
                            None,
                        )? {
                            continue;
                        }
                        let f =
                            incident_fired(rule, &o.record, &o.host, now - o.first_ms, &o.event_id);
                        fired.push(Alert {
                            rule: rule.name.clone(),
                            kind: rule.kind.name().into(),
                            event_id: o.event_id.clone(),
                            fired_at_ms: now,
                            summary: f.summary,
                            body: f.body,
                            ..Default::default()
                        });
                    }
                }
                _ => {}
            }
        }
        let mut out = Vec::with_capacity(fired.len());
        for a in fired {
            out.push(self.log_alert(a)?);
        }
        self.logged
            .fetch_add(out.len(), std::sync::atomic::Ordering::Relaxed);
        Ok(out)
    }

    /// Runs [`Alerting::check_health`] every `every` until `shutdown`:
    /// hosts from the meta store, the pause from the disk guard; flushes
    /// the meta store, then dispatches.
    pub async fn health(
        self: Arc<Self>,
        store: Arc<crate::store::Store>,
        every: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(200)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let periodic = self.rules().rules.iter().any(|r| {
                matches!(
                    r.kind,
                    RuleKind::AgentSilent | RuleKind::IngestPaused | RuleKind::IncidentOpen
                )
            });
            if !periodic {
                continue;
            }
            let (this, s) = (self.clone(), store.clone());
            let round = tokio::task::spawn_blocking(move || {
                let hosts = s.meta.hosts().map_err(|e| e.to_string())?;
                let paused = s.disk.paused();
                let out = this.check_health(&hosts, paused.as_deref(), kiroku_common::now_ms())?;
                if !out.is_empty() {
                    this.log.flush().map_err(|e| format!("alert log: {e}"))?;
                }
                Ok::<_, String>(out)
            })
            .await;
            match round {
                Ok(Ok(out)) => self.dispatch(out),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "periodic alert check failed; retried next round")
                }
                Err(e) => {
                    tracing::error!(error = %e, "periodic alert check panicked; retried next round")
                }
            }
        }
    }
}
