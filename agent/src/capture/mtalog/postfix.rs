//! Postfix 3.x log lines (syslog format, or Postfix's own `maillog_file`)
//! into [`MtaLogEvent`] fields. A pure function, table-tested below.
//!
//! Understood: smtpd `connect`/`disconnect`/`lost connection`,
//! `QUEUEID: client=` (with `sasl_method=`/`sasl_username=`),
//! `NOQUEUE: reject:` and `QUEUEID: reject:` (smtpd and cleanup's header or
//! body checks), cleanup `message-id=`, pickup/qmgr `from=` (`size=`,
//! `nrcpt=`), qmgr `removed` and `status=expired`, delivery agents (smtp,
//! lmtp, local, virtual, pipe, error, discard, relay) `to=`, `orig_to=`,
//! `relay=`, `delay=`, `delays=`, `dsn=`, `status=sent|deferred|bounced`,
//! bounce's `sender non-delivery notification: NEWID` (action
//! "notification", the new queue id in `status_text`), `warning: ... SASL
//! X authentication failed` (action "auth_failed"), other `warning:`
//! lines, and `Trusted|Untrusted|Anonymous|Verified TLS connection
//! established` (action "tls"). Any other line of a `postfix*` program is
//! `parsed` with action "other" (its queue id when it has one); a line
//! without a syslog header or from another program is not parsed.

use kiroku_proto::MtaLogEvent;

use super::header::{Clock, host_ip, syslog};

/// Parses one line (without its newline). Never fails: an unparsed line
/// comes back with `parsed = false` and only `line` set.
pub fn parse(line: &str, clock: &Clock) -> MtaLogEvent {
    let mut e = MtaLogEvent {
        mta: "postfix".into(),
        line: line.to_owned(),
        ..Default::default()
    };
    let Some(h) = syslog(line, clock) else {
        return e;
    };
    if !h.program.starts_with("postfix") {
        return e;
    }
    e.parsed = true;
    e.logged_at_ms = h.at_ms;
    e.log_host = h.host.to_owned();
    e.program = h.program.to_owned();
    e.pid = h.pid;
    e.action = "other".into();
    message(h.message, &mut e);
    e
}

/// A Postfix queue id: short (upper-case hex) or long
/// (`enable_long_queue_ids`: base-52 with a `z`), never a plain word.
fn is_queue_id(s: &str) -> bool {
    (6..=24).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric())
        && (s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
            || s.bytes().any(|b| b.is_ascii_digit()))
}

fn message(msg: &str, e: &mut MtaLogEvent) {
    if let Some(rest) = msg.strip_prefix("warning: ") {
        return warning(rest, e);
    }
    if let Some(rest) = msg.strip_prefix("NOQUEUE: ") {
        if let Some(r) = rest.strip_prefix("reject: ") {
            reject(r, e);
        }
        return;
    }
    if let Some((qid, rest)) = msg.split_once(": ")
        && is_queue_id(qid)
    {
        e.queue_id = qid.to_owned();
        return queued(rest, e);
    }
    if let Some(rest) = msg.strip_prefix("connect from ") {
        e.action = "connect".into();
        return client(rest, e);
    }
    if let Some(rest) = msg.strip_prefix("disconnect from ") {
        e.action = "disconnect".into();
        let (who, counts) = rest.split_once(' ').unwrap_or((rest, ""));
        e.status_text = counts.to_owned();
        return client(who, e);
    }
    if let Some(rest) = msg.strip_prefix("lost connection after ") {
        e.action = "disconnect".into();
        if let Some((what, who)) = rest.split_once(" from ") {
            e.status_text = format!("lost connection after {what}");
            client(who, e);
        }
        return;
    }
    if let Some(i) = msg.find(" TLS connection established ") {
        tls(msg, i, e);
    }
}

/// `host[ip]` (trailing text ignored) into the client fields.
fn client(s: &str, e: &mut MtaLogEvent) {
    if let Some((host, ip)) = host_ip(s) {
        e.client_host = host.to_owned();
        e.client_ip = ip.to_owned();
    }
}

/// `Anonymous TLS connection established from host[ip]: TLSv1.3 with
/// cipher X (256/256 bits) ...` (smtpd) or `... to host[ip]:25: ...` (smtp).
fn tls(msg: &str, at: usize, e: &mut MtaLogEvent) {
    let trust = &msg[..at];
    let rest = &msg[at + " TLS connection established ".len()..];
    let (peer, details) = rest.split_once(": ").unwrap_or((rest, ""));
    e.action = "tls".into();
    if let Some(p) = peer.strip_prefix("from ") {
        client(p, e);
    } else if let Some(p) = peer.strip_prefix("to ") {
        e.relay = p.to_owned();
    }
    let details = details.replacen(" with cipher ", " ", 1);
    // Up to the key size, e.g. "Trusted TLSv1.3 TLS_AES_256_GCM_SHA384 (256/256 bits)".
    let details = match details.find(" bits)") {
        Some(i) => &details[..i + " bits)".len()],
        None => &details,
    };
    e.tls = format!("{trust} {details}");
}

/// After `warning: `.
fn warning(rest: &str, e: &mut MtaLogEvent) {
    e.action = "warning".into();
    e.status_text = rest.to_owned();
    // "unknown[192.0.2.9]: SASL LOGIN authentication failed: authentication failure[, sasl_username=u]"
    if let Some((who, what)) = rest.split_once(": SASL ")
        && let Some((mech, why)) = what.split_once(" authentication failed")
    {
        e.action = "auth_failed".into();
        client(who, e);
        e.sasl_method = mech.to_owned();
        let why = why.strip_prefix(": ").unwrap_or(why);
        let (why, user) = match why.rsplit_once(", sasl_username=") {
            Some((w, u)) => (w, u),
            None => (why, ""),
        };
        e.sasl_username = user.to_owned();
        e.status_text = why.to_owned();
    }
}

/// After `QUEUEID: `.
fn queued(rest: &str, e: &mut MtaLogEvent) {
    if let Some(r) = rest.strip_prefix("reject: ") {
        return reject(r, e);
    }
    if rest == "removed" {
        e.action = "removed".into();
        return;
    }
    if let Some(id) = rest.strip_prefix("message-id=") {
        e.action = "message_id".into();
        e.message_id = strip_angle(id).to_owned();
        return;
    }
    if let Some(id) = rest.strip_prefix("sender non-delivery notification: ") {
        e.action = "notification".into();
        e.status_text = format!("sender non-delivery notification: {id}");
        return;
    }
    if let Some(r) = rest.strip_prefix("client=") {
        e.action = "client".into();
        let mut parts = r.split(", ");
        if let Some(c) = parts.next() {
            client(c, e);
        }
        for p in parts {
            if let Some(v) = p.strip_prefix("sasl_method=") {
                e.sasl_method = v.to_owned();
            } else if let Some(v) = p.strip_prefix("sasl_username=") {
                e.sasl_username = v.to_owned();
            }
        }
        return;
    }
    if rest.starts_with("from=") || rest.starts_with("to=") || rest.starts_with("uid=") {
        fields(rest, e);
    }
}

fn strip_angle(s: &str) -> &str {
    s.strip_prefix('<')
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or(s)
}

/// `from=<a>, size=1, nrcpt=1 (queue active)` (qmgr), `uid=0 from=<a>`
/// (pickup), `from=<a>, status=expired, returned to sender` (qmgr) and
/// `to=<b>, relay=..., delay=..., delays=..., dsn=..., status=sent (text)`
/// (delivery agents).
fn fields(rest: &str, e: &mut MtaLogEvent) {
    let mut s = rest;
    let mut recipient = false;
    while !s.is_empty() {
        let (key, after) = match s.split_once('=') {
            Some(kv) => kv,
            None => break,
        };
        let key = key.trim_start_matches(", ").trim();
        // Addresses may hold ", " or spaces inside their <>.
        let (value, next) = if after.starts_with('<') {
            match after.find('>') {
                Some(i) => (&after[..=i], &after[i + 1..]),
                None => (after, ""),
            }
        } else if key == "status" {
            // "sent (250 2.0.0 Ok: queued as X)": the rest is the text.
            let (v, text) = after.split_once(' ').unwrap_or((after, ""));
            let text = text.trim();
            e.status_text = text
                .strip_prefix('(')
                .and_then(|t| t.strip_suffix(')'))
                .unwrap_or(text)
                .to_owned();
            (v.trim_end_matches(','), "")
        } else {
            let end = after.find([',', ' ']).unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        match key {
            "from" => {
                e.from = strip_angle(value).to_owned();
                if e.action == "other" {
                    e.action = "from".into();
                }
            }
            "to" => {
                recipient = true;
                e.to.push(strip_angle(value).to_owned());
            }
            "orig_to" => e.orig_to = strip_angle(value).to_owned(),
            "relay" => e.relay = value.to_owned(),
            "delay" => e.delay_ms = seconds_ms(value),
            "delays" => e.delays = value.to_owned(),
            "dsn" => e.dsn = value.to_owned(),
            "size" => e.size = value.parse().unwrap_or(0),
            "nrcpt" => e.nrcpt = value.parse().unwrap_or(0),
            "status" => {
                e.status = value.to_owned();
                if value == "expired" {
                    e.action = "expired".into();
                }
            }
            _ => {}
        }
        s = next.trim_start_matches([',', ' ']);
        // "nrcpt=1 (queue active)": stop at text that is not key=value.
        if s.starts_with('(') {
            break;
        }
    }
    if recipient {
        e.action = "delivery".into();
    }
}

/// `3.2` (seconds, Postfix's delay=) → 3200.
fn seconds_ms(s: &str) -> u64 {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| (v * 1000.0).round() as u64)
        .unwrap_or(0)
}

/// After `reject: `: `RCPT from host[ip]: 554 5.7.1 <x>: Relay access
/// denied; from=<a> to=<b> proto=ESMTP helo=<h>` (smtpd) or `header
/// Subject: x from host[ip]; from=<a> to=<b> proto=ESMTP helo=<h>: 5.7.1
/// text` (cleanup).
fn reject(r: &str, e: &mut MtaLogEvent) {
    e.action = "reject".into();
    let (head, tail) = r.split_once("; from=").unwrap_or((r, ""));
    if let Some((what, who)) = head.split_once(" from ")
        && !what.starts_with("header ")
        && !what.starts_with("body ")
    {
        // smtpd: "RCPT from host[ip]: 554 5.7.1 ...".
        let (who, reason) = who.split_once(": ").unwrap_or((who, ""));
        client(who, e);
        e.reject_reason = reason.to_owned();
        e.status_text = what.to_owned();
    } else if let Some(i) = head.rfind(" from ") {
        // cleanup: "header Subject: x from host[ip]".
        client(&head[i + " from ".len()..], e);
        e.status_text = head[..i].to_owned();
    }
    e.dsn = e
        .reject_reason
        .split(' ')
        .nth(1)
        .filter(|d| d.len() >= 5 && d.as_bytes()[1] == b'.')
        .unwrap_or("")
        .to_owned();
    if tail.is_empty() {
        return;
    }
    // "<a> to=<b> proto=ESMTP helo=<h>[: 5.7.1 text]"
    let (envelope, reason) = match tail.rfind(">: ") {
        Some(i) => (&tail[..=i], &tail[i + 3..]),
        None => (tail, ""),
    };
    if !reason.is_empty() {
        e.reject_reason = reason.to_owned();
        e.dsn = reason.split(' ').next().unwrap_or("").to_owned();
    }
    e.from = angled(envelope).to_owned();
    if let Some(i) = envelope.find(" to=<") {
        e.to.push(angled(&envelope[i + 4..]).to_owned());
    }
}

/// The address in `<...>` at the start of `s`.
fn angled(s: &str) -> &str {
    s.strip_prefix('<')
        .and_then(|s| s.split_once('>'))
        .map(|(a, _)| a)
        .unwrap_or("")
}

#[cfg(test)]
mod tests;
