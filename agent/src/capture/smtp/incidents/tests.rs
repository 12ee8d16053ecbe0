//! The coalescing, table-driven: a script of occurrences, successes and
//! ticks at given times, and the records it must write.

use std::net::SocketAddr;

use super::tracker::{CATCH_ALL, MAX_OPEN};
use super::*;

const UP: &str = "127.0.0.1:25";

fn occ(kind: IncidentKind, client: &str) -> Occurrence {
    let client: SocketAddr = format!("{client}:40000").parse().expect("addr");
    Occurrence {
        kind,
        upstream: UP.into(),
        step: "connect".into(),
        error: format!("{} from {client}", kind.name()),
        reply: None,
        client,
        pid: None,
        process: String::new(),
        timings: None,
    }
}

/// One step of a script.
enum Step {
    /// An occurrence of this kind from this client at this time (ms).
    Occ(i64, IncidentKind, &'static str),
    /// The upstream answered.
    Ok,
    Tick(i64),
    Stop,
}

/// (state, kind, count, first_ms, last_ms, clients) of each record.
type Rec = (&'static str, &'static str, u64, i64, i64, u64);

fn run(script: &[Step]) -> Vec<Rec> {
    let mut t = Tracker::new(Timing {
        quiet_ms: 120_000,
        still_open_ms: 900_000,
    });
    let mut out = Vec::new();
    for s in script {
        let recs = match s {
            Step::Occ(at, kind, client) => {
                t.occurred(occ(*kind, client), *at).into_iter().collect()
            }
            Step::Ok => t.upstream_ok(UP),
            Step::Tick(at) => t.tick(*at),
            Step::Stop => t.close_all(),
        };
        out.extend(recs);
    }
    let ids: std::collections::BTreeSet<_> = out
        .iter()
        .map(|r| (r.kind.clone(), r.incident_id.clone()))
        .collect();
    // One id per incident: every record of a kind in these scripts shares it
    // unless the kind reopened.
    assert!(!ids.is_empty() || out.is_empty());
    out.iter()
        .map(|r| {
            let state = match r.state.as_str() {
                "open" => "open",
                "still_open" => "still_open",
                "closed" => "closed",
                other => panic!("state {other}"),
            };
            let kind = IncidentKind::ALL
                .iter()
                .find(|k| k.name() == r.kind)
                .expect("known kind")
                .name();
            (state, kind, r.count, r.first_ms, r.last_ms, r.clients)
        })
        .collect()
}

use IncidentKind::*;

#[test]
fn coalescing() {
    let unreachable = "upstream_unreachable";
    let gone = "client_gone_before_mail";
    let cases: Vec<(&str, Vec<Step>, Vec<Rec>)> = vec![
        (
            "100 attempts from two clients, then quiet: one open, one closed with count 100",
            (0..100)
                .map(|i| {
                    Step::Occ(
                        i * 100,
                        UpstreamUnreachable,
                        if i % 2 == 0 { "127.0.0.2" } else { "127.0.0.3" },
                    )
                })
                .chain([Step::Tick(60_000), Step::Tick(9_900 + 120_000)])
                .collect(),
            vec![
                ("open", unreachable, 1, 0, 0, 1),
                ("closed", unreachable, 100, 0, 9_900, 2),
            ],
        ),
        (
            "the upstream answering again closes upstream incidents only",
            vec![
                Step::Occ(0, UpstreamUnreachable, "127.0.0.2"),
                Step::Occ(10, ClientGoneBeforeMail, "127.0.0.2"),
                Step::Occ(20, UpstreamUnreachable, "127.0.0.2"),
                Step::Ok,
                Step::Occ(30, UpstreamUnreachable, "127.0.0.2"),
            ],
            vec![
                ("open", unreachable, 1, 0, 0, 1),
                ("open", gone, 1, 10, 10, 1),
                ("closed", unreachable, 2, 0, 20, 1),
                ("open", unreachable, 1, 30, 30, 1),
            ],
        ),
        (
            "a long outage reports still_open every 15 min, then closes at stop",
            vec![
                Step::Occ(0, UpstreamTimeout, "127.0.0.2"),
                Step::Occ(100_000, UpstreamTimeout, "127.0.0.2"),
                Step::Occ(200_000, UpstreamTimeout, "127.0.0.2"),
                Step::Occ(300_000, UpstreamTimeout, "127.0.0.2"),
                Step::Occ(400_000, UpstreamTimeout, "127.0.0.2"),
                Step::Occ(500_000, UpstreamTimeout, "127.0.0.2"),
                Step::Occ(600_000, UpstreamTimeout, "127.0.0.2"),
                Step::Occ(700_000, UpstreamTimeout, "127.0.0.2"),
                Step::Occ(800_000, UpstreamTimeout, "127.0.0.2"),
                Step::Occ(890_000, UpstreamTimeout, "127.0.0.2"),
                Step::Tick(900_000),
                Step::Tick(901_000),
                Step::Stop,
            ],
            vec![
                ("open", "upstream_timeout", 1, 0, 0, 1),
                ("still_open", "upstream_timeout", 10, 0, 890_000, 1),
                ("closed", "upstream_timeout", 10, 0, 890_000, 1),
            ],
        ),
        (
            "client kinds are per client address",
            vec![
                Step::Occ(0, ClientGoneBeforeMail, "127.0.0.2"),
                Step::Occ(1, ClientGoneBeforeMail, "127.0.0.3"),
                Step::Occ(2, ClientGoneBeforeMail, "127.0.0.2"),
                Step::Tick(120_001),
                Step::Tick(120_002),
            ],
            vec![
                ("open", gone, 1, 0, 0, 1),
                ("open", gone, 1, 1, 1, 1),
                ("closed", gone, 1, 1, 1, 1),
                ("closed", gone, 2, 0, 2, 1),
            ],
        ),
        (
            "a repeat just before the quiet time keeps it open",
            vec![
                Step::Occ(0, UpstreamTls, "127.0.0.2"),
                Step::Occ(119_999, UpstreamTls, "127.0.0.2"),
                Step::Tick(120_000),
                Step::Tick(239_999),
                Step::Tick(240_000),
            ],
            vec![
                ("open", "upstream_tls", 1, 0, 0, 1),
                ("closed", "upstream_tls", 2, 0, 119_999, 1),
            ],
        ),
    ];
    for (name, script, want) in cases {
        assert_eq!(run(&script), want, "{name}");
    }
}

#[test]
fn records_of_one_incident_share_an_id_and_a_reopened_one_gets_a_new_id() {
    let mut t = Tracker::new(Timing {
        quiet_ms: 1_000,
        still_open_ms: 10_000,
    });
    let open = t
        .occurred(occ(UpstreamRefused, "127.0.0.2"), 0)
        .expect("open");
    let closed = t.tick(1_000).pop().expect("closed");
    assert_eq!(open.incident_id, closed.incident_id);
    let again = t
        .occurred(occ(UpstreamRefused, "127.0.0.2"), 2_000)
        .expect("reopened");
    assert_ne!(again.incident_id, open.incident_id);
    assert_eq!(
        closed.detail.split(';').next(),
        Some("ended: no repeat for 1 s (smtp.incident_quiet_secs)")
    );
    let stopped = t.close_all().pop().expect("closed at stop");
    assert!(
        stopped.detail.starts_with("agent stopped"),
        "{}",
        stopped.detail
    );
}

#[test]
fn open_incidents_are_bounded() {
    let mut t = Tracker::new(Timing {
        quiet_ms: 1_000,
        still_open_ms: 10_000,
    });
    for i in 0..(MAX_OPEN + 50) {
        let ip = format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256);
        t.occurred(occ(ClientGoneBeforeMail, &ip), 0);
    }
    assert_eq!(t.open_count(), MAX_OPEN + 1, "the rest share one catch-all");
    let closed = t.close_all();
    let all = closed
        .iter()
        .find(|r| r.detail.contains("gathers the rest"))
        .expect("catch-all record");
    assert_eq!((all.count, all.clients), (50, 50));
    let _ = CATCH_ALL;
}

#[test]
fn upstream_errors_are_classified() {
    use crate::capture::smtp::upstream::{ErrorKind as K, Step as S, UpstreamError};
    let cases = [
        (
            S::Connect,
            K::Unreachable("refused".into()),
            Some(UpstreamUnreachable),
        ),
        (
            S::Connect,
            K::TimedOut(std::time::Duration::from_secs(30)),
            Some(UpstreamUnreachable),
        ),
        (
            S::Greeting,
            K::TimedOut(std::time::Duration::from_secs(2)),
            Some(UpstreamTimeout),
        ),
        (S::Command, K::Io("reset".into()), Some(UpstreamLost)),
        (
            S::StartTls,
            K::Tls {
                error: "unknown issuer".into(),
                verify: true,
            },
            Some(UpstreamTls),
        ),
        (S::StartTls, K::DataBeforeTls, Some(UpstreamTls)),
        (
            S::Ehlo,
            K::StartTlsUnavailable("does not offer STARTTLS".into()),
            Some(UpstreamStartTlsAbsent),
        ),
        (
            S::AgentAuth,
            K::AgentAuth("refused the login".into()),
            Some(UpstreamRefused),
        ),
        (S::Data, K::NotConnected, None),
    ];
    for (step, kind, want) in cases {
        let e = UpstreamError::new(UP, step, kind);
        assert_eq!(IncidentKind::of_upstream(&e), want, "{e}");
    }
}

#[test]
fn kind_names_are_the_shared_vocabulary() {
    let ours: Vec<&str> = IncidentKind::ALL.iter().map(|k| k.name()).collect();
    assert_eq!(ours, kiroku_common::vocabulary::INCIDENT_KINDS);
}
