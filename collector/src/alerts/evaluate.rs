//! Evaluating newly stored events against the rules, inside the committer
//! ([`Alerting::evaluate`]): the earlier kinds (external_attachment,
//! sensitive_hash, sensitive_dir, removable_copy, integrity, mail_rate)
//! here, the issue-20 kinds in `records.rs`, `p2p` in `p2p.rs`. State kept
//! here: the content first seen under a sensitive_dir rule's paths (meta
//! tree `alert_sensitive`) and mail_rate's hour windows (in memory).

use std::sync::atomic::Ordering;

use kiroku_common::mail::{corrected_ms, event_user, outcome_name, real_attachments};
use kiroku_common::vocabulary::file_op;
use kiroku_proto::{Alert, Event, event::Kind};

use super::rules::{self, Rule, RuleKind};
use super::{Alerting, WINDOW_MS, describe, records};

impl Alerting {
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
}
