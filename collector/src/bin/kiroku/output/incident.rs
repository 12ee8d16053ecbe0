//! A relay incident (issue 20) for people: its row in the search table and
//! its lines in `kiroku show`. The callers make every value safe.

use kiroku_proto::{Event, IncidentEvent, event::Kind};

use crate::zone::{Zone, format as time};

pub fn incident(e: &Event) -> Option<&IncidentEvent> {
    match &e.kind {
        Some(Kind::Incident(i)) => Some(i),
        _ => None,
    }
}

/// How long it lasted so far, "3 min 20 s".
fn span(i: &IncidentEvent) -> String {
    let s = (i.last_ms - i.first_ms).max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// Who was affected: the upstream, or the client for client kinds.
fn scope(i: &IncidentEvent) -> String {
    if i.kind.starts_with("upstream") {
        i.upstream.clone()
    } else {
        i.client_ip.clone()
    }
}

/// The search table's cells after time, id, host and user: from = the
/// scope, to = the clients, subject = the last error, att = the count,
/// outcome = kind and state.
pub fn row(i: &IncidentEvent) -> [String; 5] {
    [
        super::shorten(&scope(i), 30),
        super::shorten(&i.client_ips.join(", "), 40),
        super::shorten(&i.last_error, 40),
        i.count.to_string(),
        format!("incident: {} ({})", i.kind, i.state),
    ]
}

/// The lines of `kiroku show` (key, value); empty values are skipped by
/// the caller.
pub fn lines(i: &IncidentEvent, zone: &Zone) -> Vec<(&'static str, String)> {
    let mut out = vec![
        ("incident", format!("{} ({})", i.kind, i.state)),
        ("incident id", i.incident_id.clone()),
        (
            "occurrences",
            format!(
                "{} between {} and {} ({})",
                i.count,
                time(i.first_ms, zone),
                time(i.last_ms, zone),
                span(i)
            ),
        ),
        ("upstream", i.upstream.clone()),
        ("failed step", i.step.clone()),
        ("last error", i.last_error.clone()),
    ];
    if i.reply_code != 0 {
        out.push(("reply", i.reply.replace('\n', " | ")));
    }
    if !i.client_ip.is_empty() {
        out.push(("last client", format!("{}:{}", i.client_ip, i.client_port)));
    }
    if i.pid != 0 || !i.process.is_empty() {
        out.push(("process", format!("{} (pid {})", i.process, i.pid)));
    }
    out.push((
        "clients",
        format!(
            "{} distinct: {}{}",
            i.clients,
            i.client_ips.join(", "),
            if (i.client_ips.len() as u64) < i.clients {
                " …"
            } else {
                ""
            }
        ),
    ));
    if let Some(t) = &i.timings
        && t.total_ms > 0
    {
        out.push((
            "session time",
            format!("{} ms (the last occurrence's session)", t.total_ms),
        ));
    }
    out.push(("detail", i.detail.clone()));
    out
}
