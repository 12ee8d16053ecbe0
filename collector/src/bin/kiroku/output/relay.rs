//! Issue 20's relay records for people: an AUTH attempt (table row and
//! detail lines) and a mail's per-phase timings. Every value goes through
//! the caller's escaping (`output.rs`): these functions only choose what
//! is shown.

use kiroku_common::vocabulary::auth_outcome;
use kiroku_proto::{AuthEvent, EmailEvent, Event, PhaseTimings, event::Kind};

use super::shorten;
use crate::zone::{Zone, format as time};

pub(super) fn auth(e: &Event) -> Option<&AuthEvent> {
    match &e.kind {
        Some(Kind::Auth(a)) => Some(a),
        _ => None,
    }
}

/// "alice", or what stands for a user the record could not read.
fn claimed(a: &AuthEvent) -> String {
    if a.claimed_user.is_empty() {
        "(not readable)".into()
    } else {
        a.claimed_user.clone()
    }
}

/// The table row of an AUTH attempt: from = the claimed user, to = the
/// upstream, subject = the reply, att = the client, outcome = how it went.
pub(super) fn auth_row(e: &Event, a: &AuthEvent, host: String, zone: &Zone) -> [String; 9] {
    [
        time(e.observed_at_ms, zone),
        e.event_id.clone(),
        host,
        e.user.clone(),
        shorten(&claimed(a), 30),
        shorten(&a.upstream, 40),
        shorten(&a.reply.replace('\n', " | "), 40),
        a.client_ip.clone(),
        format!("auth {}: {}", a.mechanism, auth_outcome::name(a.success)),
    ]
}

/// The detail lines of an AUTH attempt (key, value; empty values are
/// skipped by the caller).
pub(super) fn auth_lines(a: &AuthEvent) -> Vec<(&'static str, String)> {
    let reply = match a.reply_code {
        0 => a.reply.clone(),
        c => format!("{c} {}", a.reply.replace('\n', " | ")),
    };
    vec![
        (
            "auth",
            format!("{} {}", a.mechanism, auth_outcome::name(a.success)),
        ),
        ("claimed user", claimed(a)),
        ("reply", reply),
        ("client", format!("{}:{}", a.client_ip, a.client_port)),
        (
            "process",
            match (a.pid, a.process.is_empty()) {
                (0, _) => String::new(),
                (pid, true) => format!("pid {pid}"),
                (_, false) => a.process.clone(),
            },
        ),
        ("client tls", a.client_tls.clone()),
        ("upstream", a.upstream.clone()),
        ("upstream tls", a.upstream_tls.clone()),
        ("duration", ms(a.duration_ms)),
    ]
}

/// 850 ms, 5.2 s, 3 min 20 s.
fn ms(v: u64) -> String {
    match v {
        0..1_000 => format!("{v} ms"),
        1_000..60_000 => format!("{:.1} s", v as f64 / 1000.0),
        _ => format!("{} min {} s", v / 60_000, (v % 60_000) / 1000),
    }
}

/// A mail's timings on one line: the phases that took time, then the
/// total ("connect 2 ms, greeting 31 ms, ..., total 5.3 s").
pub(super) fn timings_line(m: &EmailEvent) -> String {
    let Some(t) = &m.timings else {
        return String::new();
    };
    let PhaseTimings {
        connect_ms,
        greeting_ms,
        hello_ms,
        envelope_ms,
        data_ms,
        end_of_data_ms,
        total_ms,
    } = *t;
    let mut parts: Vec<String> = [
        ("connect", connect_ms),
        ("greeting", greeting_ms),
        ("hello", hello_ms),
        ("envelope", envelope_ms),
        ("data", data_ms),
        ("end of data", end_of_data_ms),
    ]
    .into_iter()
    .filter(|(_, v)| *v > 0)
    .map(|(k, v)| format!("{k} {}", ms(v)))
    .collect();
    parts.push(format!("total {}", ms(total_ms)));
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_read_as_one_line() {
        let m = EmailEvent {
            timings: Some(PhaseTimings {
                connect_ms: 2,
                greeting_ms: 31,
                envelope_ms: 12,
                data_ms: 4,
                end_of_data_ms: 5_210,
                total_ms: 5_260,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            timings_line(&m),
            "connect 2 ms, greeting 31 ms, envelope 12 ms, data 4 ms, end of data 5.2 s, total 5.3 s"
        );
        assert_eq!(timings_line(&EmailEvent::default()), "");
        assert_eq!(ms(200_000), "3 min 20 s");
    }

    #[test]
    fn auth_lines_say_who_and_how_it_went() {
        let a = AuthEvent {
            mechanism: "PLAIN".into(),
            claimed_user: "alice".into(),
            reply_code: 535,
            reply: "535 5.7.8 Error: authentication failed".into(),
            client_ip: "127.0.0.2".into(),
            client_port: 40000,
            ..Default::default()
        };
        let lines = auth_lines(&a);
        let get = |k: &str| {
            lines
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        assert_eq!(get("auth"), "PLAIN failed");
        assert_eq!(get("claimed user"), "alice");
        assert_eq!(get("client"), "127.0.0.2:40000");
        assert!(get("reply").starts_with("535 "));
        assert_eq!(get("process"), "");
    }
}
