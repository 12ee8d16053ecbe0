//! The issue-20 kinds evaluated on stored events (the committer calls
//! [`Alerting::evaluate`](super::Alerting::evaluate), which comes here for
//! them): auth_failures, incident_open (from its records),
//! delivery_failures, delivery_delay, clock_skew, capture_gap, off_hours,
//! any_attachment, keyword. Each returns a [`Fired`]: the one-line summary
//! and the body with who, what, where, the counts and a `kiroku` command.
//!
//! State: the counting windows (`windows.rs`) and clock_skew's per-agent
//! crossing are in memory; incident_open's "fired for this incident" marks
//! are in the meta tree `alert_state` (a restart does not fire an incident
//! again); the incidents seen open are in memory for the periodic check
//! (`health.rs`), learnt again from the next still_open record after a
//! restart.

use std::collections::HashMap;
use std::sync::Mutex;

use kiroku_common::mail::{accepted_recipients, corrected_ms, event_user, real_attachments};
use kiroku_common::vocabulary::file_op;
use kiroku_proto::{Event, IncidentEvent, event::Kind};

use super::params::Per;
use super::rules::{Rule, RuleKind};
use super::windows::Windows;

/// What a rule found: a line for the subject, and the text to act on.
#[derive(Debug, Default)]
pub struct Fired {
    pub summary: String,
    pub body: String,
}

/// The body of a notification: labelled lines, then the command to see
/// more.
#[derive(Default)]
pub struct Details(Vec<(&'static str, String)>);

impl Details {
    pub fn line(mut self, label: &'static str, value: impl Into<String>) -> Self {
        let v = value.into();
        if !v.is_empty() {
            self.0.push((label, v));
        }
        self
    }

    pub fn text(self) -> String {
        let mut s = String::new();
        for (l, v) in self.0 {
            s.push_str(&format!("{:<9}{v}\n", format!("{l}:")));
        }
        s
    }
}

/// An incident seen open (for the periodic incident_open check).
#[derive(Debug, Clone)]
pub struct OpenIncident {
    pub agent: String,
    pub host: String,
    /// Collector clock (the agent's first_ms corrected by its offset).
    pub first_ms: i64,
    pub record: IncidentEvent,
    pub event_id: String,
}

/// The in-memory state of the issue-20 kinds.
#[derive(Default)]
pub struct State {
    pub windows: Mutex<Windows>,
    /// clock_skew: (rule, agent) above the limit and fired.
    /// (rule, agent) → the event that fired while the clock is off (the
    /// same event again fires again: its group failed to commit).
    pub skewed: Mutex<HashMap<(String, String), String>>,
    /// (agent, incident_id) → the incident, while open.
    pub open: Mutex<HashMap<(String, String), OpenIncident>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The host an event came from, for people.
pub fn host_of(e: &Event) -> String {
    let h = e
        .host
        .as_ref()
        .map(|h| h.hostname.as_str())
        .filter(|h| !h.is_empty());
    match h {
        Some(h) if h != e.agent_id => format!("{h} (agent {})", e.agent_id),
        _ => format!("agent {}", e.agent_id),
    }
}

fn when(e: &Event) -> String {
    kiroku_common::rfc3339_ms(corrected_ms(e))
}

/// The body for a rule of the earlier kinds: who, what, where, when, and
/// the event to show.
pub fn generic_body(e: &Event, summary: &str) -> String {
    Details::default()
        .line("who", event_user(e))
        .line("what", summary)
        .line("where", host_of(e))
        .line("when", when(e))
        .line("see", format!("kiroku show {}", e.event_id))
        .text()
}

fn domain(addr: &str) -> String {
    kiroku_common::mail::domain_of(addr).unwrap_or_default()
}

/// The incident's duration so far, ms (agent clock on both ends).
fn lasted(i: &IncidentEvent) -> i64 {
    i.last_ms.saturating_sub(i.first_ms)
}

pub fn minutes_text(ms: i64) -> String {
    if ms >= 3_600_000 {
        format!("{:.1} h", ms as f64 / 3_600_000.0)
    } else if ms >= 60_000 {
        format!("{:.1} min", ms as f64 / 60_000.0)
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

/// The summary and body of an incident_open alert.
pub fn incident_fired(
    rule: &Rule,
    i: &IncidentEvent,
    host: &str,
    ms: i64,
    event_id: &str,
) -> Fired {
    let whom = if i.upstream.is_empty() || i.kind.starts_with("client_") {
        format!("client {}", i.client_ip)
    } else {
        format!("upstream {}", i.upstream)
    };
    let mut cmd = format!("kiroku search --kind incident --incident {}", i.kind);
    if !i.upstream.is_empty() {
        cmd.push_str(&format!(" --upstream {}", i.upstream));
    }
    Fired {
        summary: format!(
            "relay incident {} ({whom}) on {host} {} for {} ({} occurrences, limit {})",
            i.kind,
            if i.state == "closed" {
                "lasted"
            } else {
                "open"
            },
            minutes_text(ms),
            i.count,
            minutes_text(rule.params.after_ms)
        ),
        body: Details::default()
            .line("what", format!("relay incident {} ({})", i.kind, i.state))
            .line("where", format!("{host}, {whom}"))
            .line(
                "since",
                format!(
                    "{} (agent clock), for {}",
                    kiroku_common::rfc3339_ms(i.first_ms),
                    minutes_text(ms)
                ),
            )
            .line(
                "count",
                format!("{} occurrences, {} distinct clients", i.count, i.clients),
            )
            .line("error", i.last_error.clone())
            .line("meaning", i.detail.clone())
            .line("see", format!("{cmd}; kiroku show {event_id}"))
            .text(),
    }
}

impl super::Alerting {
    /// The issue-20 rules that look at one stored event.
    pub(super) fn check_new(&self, rule: &Rule, e: &Event) -> Result<Option<Fired>, String> {
        let p = &rule.params;
        Ok(match (rule.kind, &e.kind) {
            (RuleKind::AnyAttachment, Some(Kind::Email(m))) => {
                let names: Vec<&str> = real_attachments(m).map(|a| a.filename.as_str()).collect();
                if names.is_empty() {
                    return Ok(None);
                }
                let to: Vec<&str> = accepted_recipients(m).collect();
                let who = event_user(e);
                Some(Fired {
                    summary: format!("{who} mailed {} to {}", names.join(", "), to.join(", ")),
                    body: Details::default()
                        .line("who", who)
                        .line("from", m.mail_from.clone())
                        .line(
                            "what",
                            format!("{} attachment(s): {}", names.len(), names.join(", ")),
                        )
                        .line("to", to.join(", "))
                        .line("subject", m.subject.clone())
                        .line("where", host_of(e))
                        .line("when", when(e))
                        .line("see", format!("kiroku show {}", e.event_id))
                        .text(),
                })
            }
            (RuleKind::Keyword, Some(Kind::Email(m))) => {
                let Some(k) = &p.keywords else {
                    return Ok(None);
                };
                let found = k.found(&[&m.subject, &m.body_text]);
                if found.is_empty() {
                    return Ok(None);
                }
                let who = event_user(e);
                let to: Vec<&str> = accepted_recipients(m).collect();
                Some(Fired {
                    summary: format!(
                        "{who} mailed {} to {}: {}",
                        if m.subject.is_empty() {
                            "(no subject)"
                        } else {
                            &m.subject
                        },
                        to.join(", "),
                        found.join(", ")
                    ),
                    body: Details::default()
                        .line("who", who)
                        .line("from", m.mail_from.clone())
                        .line(
                            "what",
                            format!("keywords {} in subject or body", found.join(", ")),
                        )
                        .line("subject", m.subject.clone())
                        .line("to", to.join(", "))
                        .line("where", host_of(e))
                        .line("when", when(e))
                        .line("see", format!("kiroku show {}", e.event_id))
                        .text(),
                })
            }
            (RuleKind::OffHours, Some(Kind::Email(m))) => {
                let Some(s) = &p.schedule else {
                    return Ok(None);
                };
                let at = corrected_ms(e);
                if s.inside(at) {
                    return Ok(None);
                }
                let who = event_user(e);
                let to: Vec<&str> = accepted_recipients(m).collect();
                Some(Fired {
                    summary: format!("{who} sent mail at {}, outside {}", s.local(at), s.text),
                    body: Details::default()
                        .line("who", who)
                        .line("from", m.mail_from.clone())
                        .line("what", format!("mail to {}: {}", to.join(", "), m.subject))
                        .line(
                            "when",
                            format!("{} (working hours {})", s.local(at), s.text),
                        )
                        .line("where", host_of(e))
                        .line("see", format!("kiroku show {}", e.event_id))
                        .text(),
                })
            }
            (RuleKind::CaptureGap, kind) => capture_gap(e, kind.as_ref()),
            (RuleKind::DeliveryDelay, Some(Kind::MtaLog(l)))
                if l.status == "sent" && l.delay_ms > p.max_delay_ms =>
            {
                let to = l.to.join(", ");
                Some(Fired {
                    summary: format!(
                        "delivery to {to} took {} (limit {}) via {}",
                        minutes_text(l.delay_ms as i64),
                        minutes_text(p.max_delay_ms as i64),
                        l.relay
                    ),
                    body: Details::default()
                        .line("what", format!("{} delivered {} late", l.mta, l.queue_id))
                        .line("to", to)
                        .line("from", l.from.clone())
                        .line(
                            "delay",
                            format!("{} ({})", minutes_text(l.delay_ms as i64), l.delays),
                        )
                        .line("relay", l.relay.clone())
                        .line("where", format!("{}, {}", host_of(e), l.log_path))
                        .line("when", when(e))
                        .line(
                            "see",
                            format!("kiroku search --kind mta_log --queue-id {}", l.queue_id),
                        )
                        .text(),
                })
            }
            (RuleKind::DeliveryFailures, Some(Kind::MtaLog(l)))
                if l.status == "deferred" || l.status == "bounced" =>
            {
                let mut domains: Vec<String> = l.to.iter().map(|t| domain(t)).collect();
                domains.sort();
                domains.dedup();
                let at = corrected_ms(e);
                let mut out = None;
                let mut w = lock(&self.state.windows);
                for d in domains.iter().filter(|d| !d.is_empty()) {
                    let Some(n) = w.count(&rule.name, d, at, &e.event_id, p.window_ms, p.max)
                    else {
                        continue;
                    };
                    out = Some(Fired {
                        summary: format!(
                            "{n} deferred or bounced deliveries to {d} within {} (limit {}); last: {} {}",
                            minutes_text(p.window_ms),
                            p.max,
                            l.status,
                            l.status_text
                        ),
                        body: Details::default()
                            .line("what", format!("{n} deliveries to {d} deferred or bounced"))
                            .line(
                                "count",
                                format!(
                                    "{n} within {} (limit {})",
                                    minutes_text(p.window_ms),
                                    p.max
                                ),
                            )
                            .line(
                                "last",
                                format!("{} {} {} via {}", l.status, l.dsn, l.status_text, l.relay),
                            )
                            .line("where", format!("{}, {}", host_of(e), l.log_path))
                            .line("when", when(e))
                            .line(
                                "see",
                                format!(
                                    "kiroku search --kind mta_log --recipient-domain {d} --from {}",
                                    span_arg(p.window_ms)
                                ),
                            )
                            .text(),
                    });
                    break;
                }
                out
            }
            (RuleKind::AuthFailures, Some(Kind::Auth(a))) if !a.success => {
                let (key, label, flag) = match p.per {
                    Per::ClientIp => (a.client_ip.clone(), "client", "--client-ip"),
                    Per::User => (
                        if a.claimed_user.is_empty() {
                            "(unknown)".to_owned()
                        } else {
                            a.claimed_user.clone()
                        },
                        "user",
                        "--auth-user",
                    ),
                };
                let n = lock(&self.state.windows).count(
                    &rule.name,
                    &key,
                    corrected_ms(e),
                    &e.event_id,
                    p.window_ms,
                    p.max,
                );
                n.map(|n| Fired {
                    summary: format!(
                        "{n} failed AUTH attempts from {label} {key} within {} (limit {}) via {}",
                        minutes_text(p.window_ms),
                        p.max,
                        host_of(e)
                    ),
                    body: Details::default()
                        .line("who", format!("{label} {key} (last: user {:?} from {})", a.claimed_user, a.client_ip))
                        .line("what", format!("failed AUTH {} through the relay: {} {}", a.mechanism, a.reply_code, a.reply))
                        .line("count", format!("{n} within {} (limit {})", minutes_text(p.window_ms), p.max))
                        .line("where", format!("{}, upstream {}", host_of(e), a.upstream))
                        .line("when", when(e))
                        .line(
                            "see",
                            format!(
                                "kiroku search --kind auth --outcome failed {flag} {} --from {}; kiroku stats --kind auth --by {}",
                                quote_arg(&key),
                                span_arg(p.window_ms),
                                if p.per == Per::User { "user" } else { "client-ip" }
                            ),
                        )
                        .text(),
                })
            }
            (RuleKind::IncidentOpen, Some(Kind::Incident(i))) => self.incident(rule, e, i)?,
            // The agent started again: the incidents it had open were in
            // its memory and will never close (a crash leaves them with
            // their `open` record only), so the periodic check forgets
            // them rather than report them as lasting.
            (RuleKind::IncidentOpen, Some(Kind::HostChange(h)))
                if h.reason.starts_with("start") =>
            {
                lock(&self.state.open).retain(|(agent, _), _| *agent != e.agent_id);
                None
            }
            (RuleKind::ClockSkew, _) if e.clock_offset_known => {
                let key = (rule.name.clone(), e.agent_id.clone());
                let off = e.clock_offset_ms;
                let mut skewed = lock(&self.state.skewed);
                if off.abs() <= p.max_offset_ms {
                    skewed.remove(&key);
                    return Ok(None);
                }
                match skewed.get(&key) {
                    Some(by) if *by != e.event_id => return Ok(None),
                    Some(_) => {}
                    None => {
                        skewed.insert(key, e.event_id.clone());
                    }
                }
                Some(Fired {
                    summary: format!(
                        "clock of {} is {} ms {} the collector's (limit {} ms)",
                        host_of(e),
                        off.abs(),
                        if off > 0 { "ahead of" } else { "behind" },
                        p.max_offset_ms
                    ),
                    body: Details::default()
                        .line("what", format!("clock offset {off} ms (agent − collector), limit ±{} ms", p.max_offset_ms))
                        .line("where", host_of(e))
                        .line("when", kiroku_common::rfc3339_ms(e.received_at_ms))
                        .line("effect", "its events are tagged clock-skew; searches by corrected time (--corrected) place them right")
                        .line("see", format!("kiroku hosts; kiroku search --agent {} --tag clock-skew", e.agent_id))
                        .text(),
                })
            }
            _ => None,
        })
    }

    /// incident_open on an incident record: remembers open ones for the
    /// periodic check; fires once per incident when a still_open or
    /// closed record shows it lasted longer than the rule's minutes.
    fn incident(&self, rule: &Rule, e: &Event, i: &IncidentEvent) -> Result<Option<Fired>, String> {
        let key = (e.agent_id.clone(), i.incident_id.clone());
        {
            let mut open = lock(&self.state.open);
            if i.state == "closed" {
                open.remove(&key);
            } else {
                let offset = if e.clock_offset_known {
                    e.clock_offset_ms
                } else {
                    0
                };
                open.insert(
                    key,
                    OpenIncident {
                        agent: e.agent_id.clone(),
                        host: host_of(e),
                        first_ms: i.first_ms - offset,
                        record: i.clone(),
                        event_id: e.event_id.clone(),
                    },
                );
            }
        }
        let p = &rule.params;
        if !p.kinds.is_empty() && !p.kinds.contains(&i.kind) {
            return Ok(None);
        }
        let ms = lasted(i);
        if i.state == "open" || ms <= p.after_ms {
            return Ok(None);
        }
        if !self.first_for_incident(&rule.name, &e.agent_id, &i.incident_id, Some(&e.event_id))? {
            return Ok(None);
        }
        Ok(Some(incident_fired(rule, i, &host_of(e), ms, &e.event_id)))
    }

    /// Marks (rule, agent, incident) fired in `alert_state`; false when it
    /// was already.
    ///
    /// `by` is the event that fires it (None: the periodic check): the
    /// same event again is first again, since an alert of a group that
    /// then failed to commit was discarded and the group is evaluated anew.
    pub(super) fn first_for_incident(
        &self,
        rule: &str,
        agent: &str,
        id: &str,
        by: Option<&str>,
    ) -> Result<bool, String> {
        self.first_for("incident", rule, agent, id, by)
    }

    /// Marks (rule, agent, `id`) fired in `alert_state` under `scope`
    /// ("incident"; issue 21: "p2p", an episode), as
    /// [`Self::first_for_incident`] does; false when it was already.
    pub(super) fn first_for(
        &self,
        scope: &str,
        rule: &str,
        agent: &str,
        id: &str,
        by: Option<&str>,
    ) -> Result<bool, String> {
        let mark = by.unwrap_or("\0health");
        let key = format!("{scope}\0{rule}\0{agent}\0{id}");
        self.alert_state
            .compare_and_swap(key.as_bytes(), None::<&[u8]>, Some(mark.as_bytes()))
            .map(|r| match r {
                Ok(()) => true,
                Err(cur) => by.is_some() && cur.current.as_deref() == Some(mark.as_bytes()),
            })
            .map_err(|e| format!("alert state (meta tree alert_state): {e}"))
    }
}

/// A span for `--from`: "30m", "2h", "1d".
fn span_arg(ms: i64) -> String {
    if ms % 86_400_000 == 0 {
        format!("{}d", ms / 86_400_000)
    } else if ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else {
        format!("{}m", (ms + 59_999) / 60_000)
    }
}

/// A value quoted for a shell when it needs it.
fn quote_arg(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "@._-:/".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// capture_gap: a gap record, a file overflow or watch_lost, an integrity
/// record.
fn capture_gap(e: &Event, kind: Option<&Kind>) -> Option<Fired> {
    let (what, detail, count, cmd) = match kind? {
        Kind::Gap(g) => (
            format!(
                "{} {} record(s) not kept ({}) between {} and {}",
                g.count,
                g.source,
                g.reason,
                kiroku_common::rfc3339_ms(g.first_ms),
                kiroku_common::rfc3339_ms(g.last_ms)
            ),
            g.detail.clone(),
            g.count,
            "gap",
        ),
        Kind::File(f) if f.operation == file_op::OVERFLOW || f.operation == file_op::WATCH_LOST => {
            (
                format!("file capture {} at {}", f.operation, f.path),
                f.detail.clone(),
                u64::from(f.coalesced.max(1)),
                "file",
            )
        }
        Kind::Integrity(i) => (
            format!(
                "{} in stream {} (seq {}–{}): {}",
                if i.tampering {
                    "chain of custody broken"
                } else {
                    "loss reported by the agent"
                },
                i.stream_id,
                i.first_seq,
                i.last_seq,
                i.what
            ),
            i.detail.clone(),
            i.last_seq.saturating_sub(i.first_seq) + 1,
            "integrity",
        ),
        _ => return None,
    };
    Some(Fired {
        summary: format!("capture gap on {}: {what}", host_of(e)),
        body: Details::default()
            .line("what", what)
            .line("detail", detail)
            .line("count", count.to_string())
            .line("where", host_of(e))
            .line("when", when(e))
            .line(
                "see",
                format!(
                    "kiroku show {}; kiroku search --kind {cmd} --agent {}",
                    e.event_id, e.agent_id
                ),
            )
            .text(),
    })
}
