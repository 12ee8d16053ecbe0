//! The join itself, pure: which relayed mail an MTA log line belongs to,
//! and the `Delivery` a mail's lines make. No I/O; `delivery/store.rs`
//! feeds it what the meta store holds for one queue id.
//!
//! The rule (README, "Mail flow and incidents"):
//! 1. **Same MTA.** The mail's `upstream` (host:port) names the MTA it was
//!    handed to. A line belongs to that MTA when the agent that shipped it
//!    runs on that host: its host identity (hostname, fqdn, any interface
//!    address) or the host name in the syslog line equals the upstream host
//!    or the upstream's own name from its greeting (`upstream_name`). An
//!    upstream on a loopback address (`127.0.0.0/8`, `::1`, `localhost`)
//!    is the relay's own host: the line must come from the relaying agent
//!    itself or an agent with the same host name.
//! 2. **Same queue id**: the mail's `upstream_queue_id` (from the
//!    upstream's "250 ... queued as X") equals the line's.
//! 3. **Time window**: the line was logged within [relay time − 5 min,
//!    relay time + 30 days] (both on the collector's clock where the
//!    agents' offsets were measured). Postfix's short queue ids repeat,
//!    so of several mails that qualify the nearest — the latest relayed
//!    not after the line (+ 5 min) — wins.
//! 4. **Message-ID**: when both the mail and the line (or the earlier
//!    `cleanup` line of the same queue id on the same host, which is where
//!    Postfix logs it) know a Message-ID, they must be equal: a different
//!    one rules the mail out, an equal one wins over a mere time match.

use std::net::IpAddr;

use kiroku_proto::{Delivery, DeliveryAttempt};
use serde::{Deserialize, Serialize};

/// A line may come this long before the relay's record of its mail (the
/// two clocks, and the MTA logs before it answers).
pub const BEFORE_MS: i64 = 5 * 60 * 1000;
/// How long after the relay a line can still be the mail's (Postfix's
/// `maximal_queue_lifetime` is 5 days by default; bounces and expiry of
/// longer queues still fall inside).
pub const AFTER_MS: i64 = 30 * 24 * 3600 * 1000;

/// A relayed mail as the join knows it (meta tree `delivery_mails`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Mail {
    pub event_id: String,
    /// The relaying agent, and its host names (lower case).
    pub agent_id: String,
    pub hosts: Vec<String>,
    /// The host part of `upstream` (lower case, no brackets).
    pub upstream_host: String,
    pub upstream_name: String,
    pub queue_id: String,
    /// Without `<>`.
    pub message_id: String,
    /// Relay time, corrected.
    pub at_ms: i64,
}

/// One MTA log line the join uses (meta tree `delivery_lines`): lines
/// with a queue id and a delivery status or a Message-ID.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Line {
    pub log_event_id: String,
    pub agent_id: String,
    /// Every name of the shipping agent's host (hostname, fqdn, interface
    /// addresses) and the host the syslog line names, lower case.
    pub names: Vec<String>,
    /// The host the line is from, for people.
    pub host: String,
    pub queue_id: String,
    pub at_ms: i64,
    pub message_id: String,
    /// "sent", "deferred", "bounced", "expired" or "" (a Message-ID line).
    pub status: String,
    pub to: Vec<String>,
    pub relay: String,
    pub dsn: String,
    pub text: String,
    pub delay_ms: u64,
}

/// Strips `<>` and surrounding space: how both sides' Message-IDs are
/// compared.
pub fn bare_message_id(id: &str) -> String {
    id.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_owned()
}

/// The host part of an upstream `host:port` (`[::1]:25`, `mx:25`, `mx`),
/// lower case.
pub fn upstream_host(upstream: &str) -> String {
    let u = upstream.trim();
    let host = if let Some(rest) = u.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else if u.matches(':').count() == 1 {
        u.split(':').next().unwrap_or(u)
    } else {
        u
    };
    host.to_ascii_lowercase()
}

fn is_loopback(host: &str) -> bool {
    host.is_empty()
        || host == "localhost"
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Rule 1: the line comes from the MTA the mail was handed to.
pub fn same_mta(mail: &Mail, line: &Line) -> bool {
    if is_loopback(&mail.upstream_host) {
        return line.agent_id == mail.agent_id || mail.hosts.iter().any(|h| line.names.contains(h));
    }
    let name = mail.upstream_name.to_ascii_lowercase();
    line.names
        .iter()
        .any(|n| *n == mail.upstream_host || (!name.is_empty() && *n == name))
}

/// Rule 3: the line's time is inside the mail's window.
pub fn in_window(mail: &Mail, at_ms: i64) -> bool {
    at_ms >= mail.at_ms.saturating_sub(BEFORE_MS) && at_ms <= mail.at_ms.saturating_add(AFTER_MS)
}

/// The Message-ID a line speaks for: its own, else that of the latest
/// Message-ID line of the same queue id from the same agent logged no
/// later than it (Postfix logs it once, in `cleanup`) — unless a mail with
/// that queue id was relayed to this MTA after that line: the queue id was
/// used again, and the Message-ID line is of an earlier mail.
pub fn message_id_of<'a>(line: &'a Line, lines: &'a [Line], mails: &[Mail]) -> &'a str {
    if !line.message_id.is_empty() {
        return &line.message_id;
    }
    let Some(c) = lines
        .iter()
        .filter(|l| {
            !l.message_id.is_empty()
                && l.agent_id == line.agent_id
                && l.queue_id == line.queue_id
                && l.at_ms <= line.at_ms
                && line.at_ms - l.at_ms <= AFTER_MS
        })
        .max_by_key(|l| l.at_ms)
    else {
        return "";
    };
    let reused = mails.iter().any(|m| {
        m.queue_id == line.queue_id
            && same_mta(m, line)
            && m.at_ms > c.at_ms.saturating_add(BEFORE_MS)
            && m.at_ms <= line.at_ms.saturating_add(BEFORE_MS)
    });
    if reused { "" } else { &c.message_id }
}

/// Which of `mails` (all with the line's queue id) the line belongs to,
/// by the rules of the module documentation; `message_id` is the line's
/// ([`message_id_of`]). The second value: the Message-ID confirmed it.
pub fn owner<'a>(line: &Line, message_id: &str, mails: &'a [Mail]) -> Option<(&'a Mail, bool)> {
    let candidates = mails.iter().filter(|m| {
        m.queue_id == line.queue_id
            && same_mta(m, line)
            && in_window(m, line.at_ms)
            && (message_id.is_empty() || m.message_id.is_empty() || m.message_id == message_id)
    });
    // An equal Message-ID beats a time match; then the latest mail.
    candidates
        .map(|m| {
            let confirmed = !message_id.is_empty() && m.message_id == message_id;
            (m, confirmed)
        })
        .max_by_key(|(m, confirmed)| (*confirmed, m.at_ms, m.event_id.clone()))
}

/// Each mail's lines: `(mail index, line indexes, confirmed by Message-ID)`
/// for every mail that owns at least one line.
pub fn assign(mails: &[Mail], lines: &[Line]) -> Vec<(usize, Vec<usize>, bool)> {
    let mut out: Vec<(usize, Vec<usize>, bool)> = Vec::new();
    for (li, line) in lines.iter().enumerate() {
        let mid = message_id_of(line, lines, mails);
        let Some((m, confirmed)) = owner(line, mid, mails) else {
            continue;
        };
        let mi = mails
            .iter()
            .position(|x| std::ptr::eq(x, m))
            .unwrap_or_default();
        match out.iter_mut().find(|(i, _, _)| *i == mi) {
            Some((_, ls, c)) => {
                ls.push(li);
                *c |= confirmed;
            }
            None => out.push((mi, vec![li], confirmed)),
        }
    }
    out
}

/// Where a recipient stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fate {
    Deferred,
    Delivered,
    Expired,
    Bounced,
}

/// The `Delivery` of `mail` from its lines (any order); `confirmed`: a
/// Message-ID confirmed the join. `updated_at_ms` is left 0 (the caller's
/// clock).
pub fn delivery(mail: &Mail, lines: &[&Line], confirmed: bool) -> Delivery {
    let mut lines: Vec<&Line> = lines.to_vec();
    lines.sort_by(|a, b| (a.at_ms, &a.log_event_id).cmp(&(b.at_ms, &b.log_event_id)));
    let mut attempts = Vec::new();
    // Recipient → its final fate (or deferred), in first-seen order.
    let mut fates: Vec<(String, Fate, i64, String)> = Vec::new();
    let mut expired_at = None;
    for l in lines.iter().filter(|l| !l.status.is_empty()) {
        let fate = match l.status.as_str() {
            "sent" => Fate::Delivered,
            "bounced" => Fate::Bounced,
            "expired" => Fate::Expired,
            _ => Fate::Deferred,
        };
        if fate == Fate::Expired && l.to.is_empty() {
            // Postfix's qmgr "status=expired, returned to sender": every
            // recipient still pending.
            expired_at = Some(l.at_ms);
        }
        let recipients: Vec<&str> = if l.to.is_empty() {
            vec![""]
        } else {
            l.to.iter().map(String::as_str).collect()
        };
        for r in recipients {
            attempts.push(DeliveryAttempt {
                recipient: r.to_owned(),
                status: l.status.clone(),
                relay: l.relay.clone(),
                dsn: l.dsn.clone(),
                text: l.text.clone(),
                at_ms: l.at_ms,
                delay_ms: l.delay_ms,
                log_event_id: l.log_event_id.clone(),
            });
            if r.is_empty() {
                continue;
            }
            match fates.iter_mut().find(|(to, ..)| to == r) {
                // A final fate stays; a deferral after it is a duplicate.
                Some(f) if f.1 != Fate::Deferred => {}
                Some(f) => *f = (r.to_owned(), fate, l.at_ms, l.relay.clone()),
                None => fates.push((r.to_owned(), fate, l.at_ms, l.relay.clone())),
            }
        }
    }
    if let Some(at) = expired_at {
        for f in fates.iter_mut().filter(|f| f.1 == Fate::Deferred) {
            f.1 = Fate::Expired;
            f.2 = at;
        }
    }
    let status = status_of(&fates, expired_at.is_some());
    let first = lines.first();
    Delivery {
        event_id: mail.event_id.clone(),
        status: status.to_owned(),
        mta_agent_id: first.map(|l| l.agent_id.clone()).unwrap_or_default(),
        mta_host: first.map(|l| l.host.clone()).unwrap_or_default(),
        queue_id: mail.queue_id.clone(),
        summary: summary(mail, status, &attempts),
        attempts,
        updated_at_ms: 0,
        joined_by: if confirmed {
            "queue id + host + time + message-id".into()
        } else {
            "queue id + host + time".into()
        },
    }
}

/// The mail's status: the worst final fate (bounced, expired over
/// delivered), else deferred while any recipient is pending, else
/// delivered; "unknown" with no status line yet.
fn status_of(fates: &[(String, Fate, i64, String)], expired: bool) -> &'static str {
    if fates.is_empty() {
        return if expired { "expired" } else { "unknown" };
    }
    if fates.iter().any(|f| f.1 == Fate::Bounced) {
        "bounced"
    } else if fates.iter().any(|f| f.1 == Fate::Expired) {
        "expired"
    } else if fates.iter().any(|f| f.1 == Fate::Deferred) {
        "deferred"
    } else {
        "delivered"
    }
}

/// The relay's host in Postfix's `mx.example.org[192.0.2.1]:25` (the name,
/// else the address), or the whole value (`local`, `none`).
pub fn relay_name(relay: &str) -> &str {
    match relay.split_once('[') {
        Some((name, rest)) if name.is_empty() || name == "unknown" => {
            rest.split(']').next().unwrap_or(rest)
        }
        Some((name, _)) => name,
        None => relay,
    }
}

/// "3.2 s", "12 min", "5 h", "5 days".
pub fn human_duration(ms: i64) -> String {
    let ms = ms.max(0);
    let s = ms as f64 / 1000.0;
    if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 3600.0 {
        format!("{} min", (s / 60.0).round() as i64)
    } else if s < 2.0 * 86400.0 {
        format!("{} h", (s / 3600.0).round() as i64)
    } else {
        format!("{} days", (s / 86400.0).round() as i64)
    }
}

/// One line for people: "delivered to mx.example.org 3.2 s later",
/// "deferred 4 times, bounced after 5 days".
fn summary(mail: &Mail, status: &str, attempts: &[DeliveryAttempt]) -> String {
    let deferrals = attempts.iter().filter(|a| a.status == "deferred").count();
    let last = |s: &str| attempts.iter().rev().find(|a| a.status == s);
    let after = |a: &DeliveryAttempt| human_duration(a.at_ms - mail.at_ms);
    let times = |n: usize| {
        if n == 1 {
            "once".to_owned()
        } else {
            format!("{n} times")
        }
    };
    let prefix = if deferrals > 0 {
        format!("deferred {}, ", times(deferrals))
    } else {
        String::new()
    };
    match status {
        "delivered" => {
            let sent: Vec<&DeliveryAttempt> =
                attempts.iter().filter(|a| a.status == "sent").collect();
            let Some(a) = sent.last() else {
                return "delivered".into();
            };
            let mut relays: Vec<&str> = sent.iter().map(|a| relay_name(&a.relay)).collect();
            relays.dedup();
            // The MTA's own delay (its clock, sub-second) when it gave one.
            let later = if a.delay_ms > 0 {
                human_duration(a.delay_ms as i64)
            } else {
                after(a)
            };
            format!("{prefix}delivered to {} {later} later", relays.join(", "))
        }
        "deferred" => {
            let why = last("deferred").map_or(String::new(), |a| {
                let said: Vec<&str> = [a.dsn.as_str(), a.text.as_str()]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect();
                if said.is_empty() {
                    String::new()
                } else {
                    format!(" (last: {})", said.join(" "))
                }
            });
            format!("deferred {}, still queued{why}", times(deferrals.max(1)))
        }
        "bounced" => {
            let a = last("bounced");
            let why = a.map_or(String::new(), |a| format!(" ({})", a.dsn));
            let when = a.map_or(String::new(), |a| format!(" after {}", after(a)));
            format!("{prefix}bounced{when}{why}")
        }
        "expired" => {
            let when = last("expired").map_or(String::new(), |a| format!(" after {}", after(a)));
            format!("{prefix}expired{when}, returned to sender")
        }
        _ => "accepted by the MTA, no delivery logged yet".into(),
    }
}

#[cfg(test)]
#[path = "join/tests.rs"]
mod tests;
