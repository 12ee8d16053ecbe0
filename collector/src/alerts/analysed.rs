//! The rules evaluated once the analysis worker has looked inside a stored
//! mail: [`Alerting::analysed`] (encrypted_attachment, ppap) and
//! [`Alerting::evaluate_derived`] (sensitive_hash and sensitive_dir on the
//! files found inside its attachments). What fires is logged, for
//! [`Alerting::dispatch`] after the worker's meta flush.

use std::sync::atomic::Ordering;

use kiroku_proto::{Alert, Annotations, Event};

use super::rules::{self, Rule, RuleKind};
use super::{Alerting, describe};
use crate::analysis::ppap::{self, Derived, MailFacts, Observed};

/// What [`Alerting::analysed`] gives the analysis worker.
#[derive(Debug, Default)]
pub struct Analysed {
    /// Tags and links for this mail's annotations and its partner's.
    pub derived: Derived,
    /// Logged alerts, to [`Alerting::dispatch`] once the meta store is
    /// flushed (or [`Alerting::discard`] if the batch failed).
    pub alerts: Vec<(Vec<u8>, Alert)>,
}

impl Alerting {
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
}
