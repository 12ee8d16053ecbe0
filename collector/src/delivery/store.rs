//! The delivery store: what the join needs kept between events, and its
//! result, in trees of the collector's meta sled (`store/meta.rs`):
//! - `delivery_mails`: `queue id \0 time \0 event id` → JSON [`Mail`]:
//!   every relayed mail with an upstream queue id.
//! - `delivery_lines`: the same key → JSON [`Line`]: every MTA log line
//!   with a queue id and a status or a Message-ID. These are also the
//!   "pending" lines of a mail not stored yet (agents ship in no common
//!   order): when the mail comes, its queue id's lines are joined again.
//! - `delivery_expiry`: `time \0 event id` → `m` or `l` and the key
//!   above: mails and lines older than the window ([`AFTER_MS`]) and two
//!   days more (on the collector's clock) can join nothing new and leave
//!   both trees (at most [`EXPIRE_BATCH`] per ingest), so the lines of
//!   mail no agent relayed (inbound mail, the server's own notices) do
//!   not pile up. The deliveries already made stay.
//! - `delivery_keys`: event id → its key above (a purge finds it).
//! - `deliveries`: mail event id → prost [`Delivery`], replaced whenever
//!   a line changes it (`GetDelivery`, `kiroku show`, and the index's
//!   `delivery` field through [`DeliveryStore::status`]).
//!
//! `time` is the event's corrected time as 8 bytes big-endian with the
//! sign bit flipped, so a queue id's entries are in time order. Writes
//! are durable with the committer's meta flush, the same one that makes
//! the events' high-water marks durable; a batch that fails is resent and
//! joined again to the same result (every write is keyed, a replay is
//! idempotent).

use std::collections::BTreeSet;

use kiroku_common::mail::corrected_ms;
use kiroku_proto::{Delivery, Event, event::Kind};
use prost::Message;

use super::join::{self, AFTER_MS, Line, Mail};
use crate::store::meta::{MetaError, MetaStore};

const MAILS: &str = "delivery_mails";
const LINES: &str = "delivery_lines";
const KEYS: &str = "delivery_keys";
const EXPIRY: &str = "delivery_expiry";

/// How long after the window mails and lines are kept.
const KEEP_AFTER_WINDOW_MS: i64 = 2 * 24 * 3600 * 1000;
/// Entries expired per ingest call at most (the rest: the next calls).
pub const EXPIRE_BATCH: usize = 1000;
const DELIVERIES: &str = "deliveries";
/// Mails whose index document is older than their delivery status: set
/// with the new status, cleared once the re-indexed document is committed
/// (a group that fails leaves them for the next one).
const STALE: &str = "delivery_reindex";
/// How many left-over stale mails one ingest group re-indexes.
pub const STALE_BATCH: usize = 1000;

/// How far a line's own timestamp may be from when its agent read it
/// before the read time is used instead (a parser that took the wrong
/// year or time zone must not move a line out of its mail's window).
const LOGGED_AT_TRUSTED_MS: i64 = 24 * 3600 * 1000;

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("delivery store, {what}: {source}")]
    Sled {
        what: &'static str,
        source: sled::Error,
    },
}

fn sled_err(what: &'static str) -> impl FnOnce(sled::Error) -> DeliveryError {
    move |source| DeliveryError::Sled { what, source }
}

/// The trees of the module documentation.
#[derive(Clone)]
pub struct DeliveryStore {
    mails: sled::Tree,
    lines: sled::Tree,
    keys: sled::Tree,
    expiry: sled::Tree,
    deliveries: sled::Tree,
    stale: sled::Tree,
}

fn key(queue_id: &str, at_ms: i64, event_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(queue_id.len() + 10 + event_id.len());
    k.extend_from_slice(queue_id.as_bytes());
    k.push(0);
    k.extend_from_slice(&((at_ms as u64) ^ (1 << 63)).to_be_bytes());
    k.push(0);
    k.extend_from_slice(event_id.as_bytes());
    k
}

fn prefix(queue_id: &str) -> Vec<u8> {
    let mut k = queue_id.as_bytes().to_vec();
    k.push(0);
    k
}

fn lower_unique(names: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        let n = n.trim().to_ascii_lowercase();
        if !n.is_empty() && !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

/// What the join needs of a relayed mail with an upstream queue id.
pub fn mail_of(e: &Event) -> Option<Mail> {
    let Some(Kind::Email(m)) = &e.kind else {
        return None;
    };
    if m.upstream_queue_id.is_empty() {
        return None;
    }
    let host = e.host.clone().unwrap_or_default();
    Some(Mail {
        event_id: e.event_id.clone(),
        agent_id: e.agent_id.clone(),
        hosts: lower_unique([host.hostname, host.fqdn]),
        upstream_host: join::upstream_host(&m.upstream),
        upstream_name: m.upstream_name.to_ascii_lowercase(),
        queue_id: m.upstream_queue_id.clone(),
        message_id: join::bare_message_id(&m.message_id),
        at_ms: corrected_ms(e),
    })
}

/// What the join needs of an MTA log line with a queue id and a status or
/// a Message-ID. Its time: the line's own timestamp on the collector's
/// clock (the agent's offset applies: same host), unless it is more than
/// a day from when the agent read the line.
pub fn line_of(e: &Event) -> Option<Line> {
    let Some(Kind::MtaLog(l)) = &e.kind else {
        return None;
    };
    if l.queue_id.is_empty() || (l.status.is_empty() && l.message_id.is_empty()) {
        return None;
    }
    let read_at = corrected_ms(e);
    let offset = if e.clock_offset_known {
        e.clock_offset_ms
    } else {
        0
    };
    let logged = l.logged_at_ms.saturating_sub(offset);
    let at_ms = if l.logged_at_ms != 0 && (logged - read_at).abs() <= LOGGED_AT_TRUSTED_MS {
        logged
    } else {
        read_at
    };
    let host = e.host.clone().unwrap_or_default();
    let mut names = vec![l.log_host.clone(), host.hostname.clone(), host.fqdn.clone()];
    names.extend(host.interfaces.iter().flat_map(|i| i.ips.iter().cloned()));
    Some(Line {
        log_event_id: e.event_id.clone(),
        agent_id: e.agent_id.clone(),
        names: lower_unique(names),
        host: if l.log_host.is_empty() {
            host.hostname
        } else {
            l.log_host.clone()
        },
        queue_id: l.queue_id.clone(),
        at_ms,
        message_id: join::bare_message_id(&l.message_id),
        status: l.status.clone(),
        to: l.to.clone(),
        relay: l.relay.clone(),
        dsn: l.dsn.clone(),
        text: l.status_text.clone(),
        delay_ms: l.delay_ms,
    })
}

impl DeliveryStore {
    pub fn open(meta: &MetaStore) -> Result<DeliveryStore, DeliveryError> {
        Ok(DeliveryStore {
            mails: meta.tree(MAILS)?,
            lines: meta.tree(LINES)?,
            keys: meta.tree(KEYS)?,
            expiry: meta.tree(EXPIRY)?,
            deliveries: meta.tree(DELIVERIES)?,
            stale: meta.tree(STALE)?,
        })
    }

    /// The mail's Delivery, when a line was joined to it.
    pub fn delivery(&self, event_id: &str) -> Result<Option<Delivery>, DeliveryError> {
        Ok(self
            .deliveries
            .get(event_id.as_bytes())
            .map_err(sled_err("reading a delivery"))?
            .and_then(|v| Delivery::decode(v.as_ref()).ok()))
    }

    /// The mail's delivery status for the index ("delivered", ...); None
    /// when nothing is joined (or the store cannot be read: logged, the
    /// mail is then indexed as "unknown" until its next change).
    pub fn status(&self, event_id: &str) -> Option<String> {
        match self.delivery(event_id) {
            Ok(d) => d.map(|d| d.status),
            Err(e) => {
                tracing::warn!(event_id, error = %e, "delivery not readable; the mail is indexed without it");
                None
            }
        }
    }

    /// Takes newly stored events: keeps the mails and lines the join
    /// needs and joins their queue ids again. Returns the mails whose
    /// delivery status changed (their index documents are out of date).
    pub fn ingest(&self, events: &[Event], now_ms: i64) -> Result<Vec<String>, DeliveryError> {
        let mut touched = BTreeSet::new();
        for e in events {
            let (tree, tag, queue_id, at_ms, value) = if let Some(m) = mail_of(e) {
                let v = serde_json::to_vec(&m).unwrap_or_default();
                (&self.mails, b'm', m.queue_id, m.at_ms, v)
            } else if let Some(l) = line_of(e) {
                let v = serde_json::to_vec(&l).unwrap_or_default();
                (&self.lines, b'l', l.queue_id, l.at_ms, v)
            } else {
                continue;
            };
            let k = key(&queue_id, at_ms, &e.event_id);
            tree.insert(k.as_slice(), value)
                .map_err(sled_err("keeping a mail or log line"))?;
            let mut x = vec![tag];
            x.extend_from_slice(&k);
            self.expiry
                .insert(key("", at_ms, &e.event_id), x)
                .map_err(sled_err("keeping an expiry"))?;
            self.keys
                .insert(e.event_id.as_bytes(), k)
                .map_err(sled_err("keeping a key"))?;
            touched.insert(queue_id);
        }
        self.expire(now_ms)?;
        let mut changed = Vec::new();
        for q in touched {
            changed.extend(self.rejoin(&q, now_ms)?);
        }
        for id in &changed {
            self.stale
                .insert(id.as_bytes(), &[])
                .map_err(sled_err("noting a mail to re-index"))?;
        }
        Ok(changed)
    }

    /// Mails whose re-index an earlier ingest group did not commit (at
    /// most `limit`).
    pub fn stale(&self, limit: usize) -> Result<Vec<String>, DeliveryError> {
        let mut out = Vec::new();
        for kv in self.stale.iter().take(limit) {
            let (k, _) = kv.map_err(sled_err("reading mails to re-index"))?;
            out.push(String::from_utf8_lossy(&k).into_owned());
        }
        Ok(out)
    }

    /// The re-indexed documents of `ids` are committed.
    pub fn reindexed(&self, ids: &[String]) -> Result<(), DeliveryError> {
        for id in ids {
            self.stale
                .remove(id.as_bytes())
                .map_err(sled_err("clearing a mail to re-index"))?;
        }
        Ok(())
    }

    /// Drops mails and lines past the window (see the module
    /// documentation); returns how many.
    fn expire(&self, now_ms: i64) -> Result<usize, DeliveryError> {
        let cutoff = now_ms.saturating_sub(AFTER_MS + KEEP_AFTER_WINDOW_MS);
        let end = key("", cutoff, "");
        let mut n = 0;
        for kv in self.expiry.range(..end).take(EXPIRE_BATCH) {
            let (k, v) = kv.map_err(sled_err("reading expiries"))?;
            if let Some((tag, entry)) = v.split_first() {
                let tree = if *tag == b'm' {
                    &self.mails
                } else {
                    &self.lines
                };
                tree.remove(entry)
                    .map_err(sled_err("expiring a mail or log line"))?;
            }
            if let Some(id) = k.get(10..) {
                self.keys.remove(id).map_err(sled_err("expiring a key"))?;
            }
            self.expiry.remove(&k).map_err(sled_err("expiring"))?;
            n += 1;
        }
        Ok(n)
    }

    fn load<T: serde::de::DeserializeOwned>(
        tree: &sled::Tree,
        queue_id: &str,
    ) -> Result<Vec<(sled::IVec, T)>, DeliveryError> {
        let mut out = Vec::new();
        for kv in tree.scan_prefix(prefix(queue_id)) {
            let (k, v) = kv.map_err(sled_err("reading mails and log lines"))?;
            // An entry that does not decode (a later version's) is skipped.
            if let Ok(x) = serde_json::from_slice(&v) {
                out.push((k, x));
            }
        }
        Ok(out)
    }

    /// Joins one queue id's mails and lines again; returns the mails
    /// whose status changed.
    fn rejoin(&self, queue_id: &str, now_ms: i64) -> Result<Vec<String>, DeliveryError> {
        let mails: Vec<Mail> = Self::load::<Mail>(&self.mails, queue_id)?
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        let lines: Vec<Line> = Self::load::<Line>(&self.lines, queue_id)?
            .into_iter()
            .map(|(_, l)| l)
            .collect();
        let assigned = join::assign(&mails, &lines);
        let mut changed = Vec::new();
        for (mi, mail) in mails.iter().enumerate() {
            let new = assigned.iter().find(|(i, ..)| *i == mi).map(|(_, ls, c)| {
                let ls: Vec<&Line> = ls.iter().map(|i| &lines[*i]).collect();
                join::delivery(mail, &ls, *c)
            });
            let old = self.delivery(&mail.event_id)?;
            let same = match (&old, &new) {
                (Some(o), Some(n)) => {
                    Delivery {
                        updated_at_ms: 0,
                        ..o.clone()
                    } == *n
                }
                (None, None) => true,
                _ => false,
            };
            if same {
                continue;
            }
            let old_status = old.map(|d| d.status);
            let new_status = new.as_ref().map(|d| d.status.clone());
            match new {
                Some(mut d) => {
                    d.updated_at_ms = now_ms;
                    self.deliveries
                        .insert(mail.event_id.as_bytes(), d.encode_to_vec())
                        .map_err(sled_err("writing a delivery"))?;
                }
                None => {
                    self.deliveries
                        .remove(mail.event_id.as_bytes())
                        .map_err(sled_err("removing a delivery"))?;
                }
            }
            if old_status != new_status {
                changed.push(mail.event_id.clone());
            }
        }
        Ok(changed)
    }

    /// Forgets purged events: a mail's Delivery and what the join kept of
    /// it, a log line's copy (a later join no longer sees it; the
    /// Deliveries it made stay, as annotations of their mails).
    pub fn forget(&self, event_ids: &[String]) -> Result<(), DeliveryError> {
        for id in event_ids {
            if let Some(k) = self
                .keys
                .remove(id.as_bytes())
                .map_err(sled_err("forgetting a key"))?
            {
                self.mails
                    .remove(&k)
                    .map_err(sled_err("forgetting a mail"))?;
                self.lines
                    .remove(&k)
                    .map_err(sled_err("forgetting a log line"))?;
                // The key's time, then the event id: the expiry entry.
                if let Some(at) = k
                    .len()
                    .checked_sub(id.len() + 9)
                    .and_then(|i| k.get(i..i + 8))
                {
                    let mut x = vec![0u8];
                    x.extend_from_slice(at);
                    x.push(0);
                    x.extend_from_slice(id.as_bytes());
                    self.expiry
                        .remove(x)
                        .map_err(sled_err("forgetting an expiry"))?;
                }
            }
            self.deliveries
                .remove(id.as_bytes())
                .map_err(sled_err("forgetting a delivery"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "store/tests.rs"]
mod tests;
