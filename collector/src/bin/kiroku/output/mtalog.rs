//! Issue 20: an MTA log line (`MtaLogEvent`) for people — its table row
//! and its detail lines. The caller makes every value safe.

use kiroku_proto::{Event, MtaLogEvent, event::Kind};

use super::shorten;
use crate::zone::{Zone, format as time};

pub fn of(e: &Event) -> Option<&MtaLogEvent> {
    match &e.kind {
        Some(Kind::MtaLog(m)) => Some(m),
        _ => None,
    }
}

/// The table row: from, to, the line's gist, the size, the status.
pub fn row(e: &Event, m: &MtaLogEvent, host: String, zone: &Zone) -> [String; 9] {
    let what = if m.parsed {
        format!("{} {}", m.queue_id, m.action)
    } else {
        "(not parsed)".to_owned()
    };
    let gist = if m.parsed && !m.status_text.is_empty() {
        &m.status_text
    } else if m.parsed && !m.reject_reason.is_empty() {
        &m.reject_reason
    } else {
        &m.line
    };
    [
        time(e.observed_at_ms, zone),
        e.event_id.clone(),
        host,
        e.user.clone(),
        shorten(&m.from, 30),
        shorten(&m.to.join(", "), 40),
        shorten(gist, 40),
        if m.size > 0 {
            m.size.to_string()
        } else {
            String::new()
        },
        format!(
            "{}: {}",
            m.mta,
            if m.status.is_empty() {
                what
            } else {
                m.status.clone()
            }
        ),
    ]
}

/// The detail lines (key, value); empty values are skipped by the caller.
pub fn lines(m: &MtaLogEvent, zone: &Zone) -> Vec<(&'static str, String)> {
    let mut v = vec![
        (
            "mta log",
            format!("{} {} (byte {})", m.mta, m.log_path, m.offset),
        ),
        (
            "parsed",
            if m.parsed {
                String::new()
            } else {
                "no (the line is kept as read)".into()
            },
        ),
        (
            "logged at",
            if m.logged_at_ms != 0 {
                time(m.logged_at_ms, zone)
            } else {
                String::new()
            },
        ),
        ("log host", m.log_host.clone()),
        (
            "program",
            match m.pid {
                0 => m.program.clone(),
                pid => format!("{}[{pid}]", m.program),
            },
        ),
        ("action", m.action.clone()),
        ("queue id", m.queue_id.clone()),
        ("Message-ID", m.message_id.clone()),
        ("from", m.from.clone()),
        ("to", m.to.join(", ")),
        ("orig to", m.orig_to.clone()),
        ("relay", m.relay.clone()),
        ("status", m.status.clone()),
        ("dsn", m.dsn.clone()),
        ("status text", m.status_text.clone()),
        ("reject reason", m.reject_reason.clone()),
    ];
    if m.delay_ms > 0 || !m.delays.is_empty() {
        let mut d = format!("{:.2} s", m.delay_ms as f64 / 1000.0);
        if !m.delays.is_empty() {
            d.push_str(&format!(
                " (before queue / in queue / connect / transfer: {})",
                m.delays
            ));
        }
        v.push(("delay", d));
    }
    v.push((
        "client",
        match (m.client_host.is_empty(), m.client_ip.is_empty()) {
            (true, true) => String::new(),
            (false, false) => format!("{} [{}]", m.client_host, m.client_ip),
            _ => format!("{}{}", m.client_host, m.client_ip),
        },
    ));
    if !m.sasl_method.is_empty() || !m.sasl_username.is_empty() {
        v.push(("sasl", format!("{} {}", m.sasl_method, m.sasl_username)));
    }
    v.push(("tls", m.tls.clone()));
    if m.size > 0 {
        v.push(("size", super::count(m.size, "byte", "bytes")));
    }
    if m.nrcpt > 0 {
        v.push(("recipients", m.nrcpt.to_string()));
    }
    v.push(("line", m.line.clone()));
    v
}
