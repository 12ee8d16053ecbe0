//! `kiroku retention plan`: what a policy (the one in force, or a
//! candidate) would mark and free now, counted over every event of the
//! index, without changing anything.

use std::collections::BTreeMap;

use kiroku_proto::{Event, RetentionPlan, RetentionPlanRule, event::Kind};
use prost::Message;

use super::marks::Marks;
use super::policy::{Period, Policy};
use crate::holds::HeldSet;
use crate::store::Store;

/// What purging `e` would free, roughly: its journal record and its raw
/// message (a blob shared with a live event stays, so this is an upper
/// bound).
fn bytes_of(e: &Event) -> u64 {
    let raw = match &e.kind {
        Some(Kind::Email(m)) if !m.raw_sha256.is_empty() => m.message_size,
        _ => 0,
    };
    e.encoded_len() as u64 + raw
}

/// Counts over the index; `shortened` comes from the candidate's preview.
pub fn scan(
    store: &Store,
    policy: &Policy,
    marks: &Marks,
    held: &HeldSet,
    now_ms: i64,
) -> anyhow::Result<RetentionPlan> {
    let mut plan = RetentionPlan {
        at_ms: now_ms,
        ..Default::default()
    };
    // Every rule of the policy is listed, also those deciding nothing now.
    let mut rules: BTreeMap<String, RetentionPlanRule> = policy
        .rules()
        .rule_names()
        .into_iter()
        .map(|(name, p)| (name.clone(), row(name, p)))
        .collect();
    let mut oldest = i64::MAX;
    let mut problems = Vec::new();
    store.index.for_each_stored(|e| {
        plan.events_scanned += 1;
        oldest = oldest.min(kiroku_common::mail::corrected_ms(&e));
        let d = policy.decide_at(&e, now_ms);
        let expired = d.expired(now_ms);
        let r = rules
            .entry(d.rule.clone())
            .or_insert_with(|| row(d.rule.clone(), d.period));
        r.events += 1;
        let mark = match marks.get(&e.event_id) {
            Ok(m) => m,
            Err(err) => {
                if problems.is_empty() {
                    problems.push(format!("reading the retention marks: {err:#}"));
                }
                None
            }
        };
        if let Some(m) = &mark {
            plan.marked += 1;
            if m.due(now_ms) {
                plan.due += 1;
            }
        }
        if !expired {
            return Ok(());
        }
        r.expired += 1;
        if held.is_held(&e.event_id) {
            plan.held_back += 1;
            return Ok(());
        }
        let b = bytes_of(&e);
        r.bytes += b;
        plan.bytes_freed += b;
        if mark.is_none() && !marks.is_exempt(&e.event_id, now_ms).unwrap_or(false) {
            plan.would_mark += 1;
        }
        Ok(())
    })?;
    plan.oldest_event_ms = if oldest == i64::MAX { 0 } else { oldest };
    plan.rules = rules.into_values().collect();
    plan.problems = problems;
    Ok(plan)
}

fn row(rule: String, p: Period) -> RetentionPlanRule {
    RetentionPlanRule {
        rule,
        period: p.to_string(),
        ..Default::default()
    }
}
