//! The issue-20 rules on hand-made events: severity and route, and each
//! new kind firing exactly once per crossing (table-driven where the kind
//! allows). The end-to-end tests with real agents and notifiers are in
//! tests/tests/alert_rules.rs.

use std::path::Path;

use kiroku_common::mail::InternalDomains;
use kiroku_proto::{
    Alert, Attachment, AuthEvent, EmailEvent, Event, FileEvent, GapEvent, HostIdentity, HostInfo,
    IncidentEvent, MtaLogEvent, Recipient, event::Kind,
};

use super::{Alerting, RuleSet, routed};
use crate::store::meta::MetaStore;

const MIN: i64 = 60_000;

fn engine(rules: &str) -> (tempfile::TempDir, Alerting) {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = MetaStore::open(&dir.path().join("meta")).expect("meta");
    let set =
        RuleSet::parse(Path::new("rules.toml"), rules, &InternalDomains::default()).expect("rules");
    let a = Alerting::new(&meta, set, Vec::new(), 1000).expect("engine");
    (dir, a)
}

fn ev(id: &str, agent: &str, at: i64, kind: Kind) -> Event {
    Event {
        event_id: id.into(),
        agent_id: agent.into(),
        observed_at_ms: at,
        received_at_ms: at,
        user: "alice".into(),
        host: Some(HostIdentity {
            hostname: format!("{agent}.corp"),
            ..Default::default()
        }),
        kind: Some(kind),
        ..Default::default()
    }
}

fn mail(subject: &str, body: &str, attachments: &[(&str, bool)]) -> Kind {
    Kind::Email(EmailEvent {
        subject: subject.into(),
        body_text: body.into(),
        rcpt_to: vec![Recipient {
            address: "bob@example.org".into(),
            reply_code: 250,
            ..Default::default()
        }],
        attachments: attachments
            .iter()
            .map(|(n, inline)| Attachment {
                filename: (*n).into(),
                inline: *inline,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    })
}

fn auth(ip: &str, user: &str, ok: bool) -> Kind {
    Kind::Auth(AuthEvent {
        mechanism: "PLAIN".into(),
        claimed_user: user.into(),
        success: ok,
        reply_code: if ok { 235 } else { 535 },
        reply: if ok {
            "2.7.0 ok"
        } else {
            "5.7.8 authentication failed"
        }
        .into(),
        client_ip: ip.into(),
        upstream: "127.0.0.1:25".into(),
        ..Default::default()
    })
}

fn mta(status: &str, to: &str, delay_ms: u64) -> Kind {
    Kind::MtaLog(MtaLogEvent {
        mta: "postfix".into(),
        log_path: "/var/log/mail.log".into(),
        queue_id: "4F2A1B".into(),
        action: "delivery".into(),
        to: vec![to.into()],
        relay: "mx.example.org[192.0.2.1]:25".into(),
        status: status.into(),
        delay_ms,
        parsed: true,
        ..Default::default()
    })
}

fn incident(id: &str, kind: &str, state: &str, first: i64, last: i64) -> Kind {
    Kind::Incident(IncidentEvent {
        kind: kind.into(),
        state: state.into(),
        incident_id: id.into(),
        count: 42,
        first_ms: first,
        last_ms: last,
        last_error: "connect to 127.0.0.1:2525: connection refused".into(),
        upstream: "127.0.0.1:2525".into(),
        ..Default::default()
    })
}

fn run(a: &Alerting, e: Event) -> Vec<Alert> {
    let mut v = [e];
    let out = a.evaluate(&mut v).expect("evaluate");
    let alerts: Vec<Alert> = out.iter().map(|(_, x)| x.clone()).collect();
    a.dispatch(out);
    alerts
}

#[test]
fn severity_and_route_come_from_the_rule() {
    let (_d, a) = engine(
        r#"
[[rule]]
name = "soc"
kind = "any_attachment"
severity = "critical"
route = ["webhook"]
[[rule]]
name = "all"
kind = "any_attachment"
"#,
    );
    let got = run(&a, ev("m1", "pc1", 1, mail("s", "", &[("a.pdf", false)])));
    let by = |r: &str| got.iter().find(|x| x.rule == r).expect(r);
    assert_eq!(by("soc").severity, "critical");
    assert_eq!(by("soc").route, ["webhook"]);
    assert!(routed(by("soc"), "webhook"));
    assert!(!routed(by("soc"), "mail") && !routed(by("soc"), "stream"));
    assert_eq!(by("all").severity, "warning");
    assert!(by("all").route.is_empty());
    assert!(routed(by("all"), "mail") && routed(by("all"), "stream"));
    // The Alerts rpc replays only what is routed to the stream.
    let replayed: Vec<String> = a
        .replay(0)
        .expect("replay")
        .into_iter()
        .map(|x| x.rule)
        .collect();
    assert_eq!(replayed, ["all"]);
    // The body says who, what, where and how to see more.
    let body = &by("soc").body;
    for want in [
        "who:",
        "alice",
        "a.pdf",
        "pc1.corp",
        "see:",
        "kiroku show m1",
    ] {
        assert!(body.contains(want), "{want} in {body}");
    }
}

#[test]
fn bad_severity_route_and_settings_name_line_and_field() {
    let cases: &[(&str, &str)] = &[
        (
            "[[rule]]\nname = \"a\"\nkind = \"any_attachment\"\nseverity = \"urgent\"\n",
            "line 1, rule \"a\", field `severity`",
        ),
        (
            "[[rule]]\nname = \"a\"\nkind = \"any_attachment\"\nroute = [\"pager\"]\n",
            "field `route`: \"pager\" is no notifier",
        ),
        (
            "[[rule]]\nname = \"a\"\nkind = \"any_attachment\"\nroute = []\n",
            "field `route`",
        ),
        (
            "[[rule]]\nname = \"a\"\nkind = \"auth_failures\"\nmax = 3\n",
            "field `per`: required",
        ),
        (
            "[[rule]]\nname = \"a\"\nkind = \"auth_failures\"\nper = \"ip\"\nmax = 3\n",
            "field `per`",
        ),
        (
            "[[rule]]\nname = \"a\"\nkind = \"auth_failures\"\nper = \"user\"\n",
            "field `max`: required",
        ),
        (
            "[[rule]]\nname = \"a\"\nkind = \"auth_failures\"\nper = \"user\"\nmax = 3\nwindow = \"10 minutes\"\n",
            "field `window`",
        ),
        (
            "[[rule]]\nname = \"a\"\nkind = \"incident_open\"\n",
            "field `minutes`: required",
        ),
        (
            "[[rule]]\nname = \"a\"\nkind = \"incident_open\"\nminutes = 5\nkinds = [\"down\"]\n",
            "field `kinds`",
        ),
        (
            "[[rule]]\nname = \"a\"\nkind = \"delivery_delay\"\n",
            "field `max_delay`: required",
        ),
        (
            "[[rule]]\nname = \"a\"\nkind = \"clock_skew\"\nmax_offset = \"2 s\"\n",
            "field `max_offset`",
        ),
        (
            "[[rule]]\nname = \"a\"\nkind = \"off_hours\"\nschedule = [\"Mon-Fri 08:00-19:00\"]\n",
            "field `time_zone`: required",
        ),
        (
            "[[rule]]\nname = \"a\"\nkind = \"off_hours\"\nschedule = [\"Mon-Fri 8-19\"]\ntime_zone = \"UTC\"\n",
            "field `schedule`",
        ),
        (
            "[[rule]]\nname = \"a\"\nkind = \"keyword\"\n",
            "field `keywords`",
        ),
        (
            "[[rule]]\nname = \"a\"\nkind = \"any_attachment\"\nmax = 3\n",
            "field `max`: not used by kind any_attachment",
        ),
        (
            "[[rule]]\nname = \"a\"\nkind = \"agent_silent\"\nminutes = 0\n",
            "field `minutes`",
        ),
    ];
    for (text, want) in cases {
        let err = RuleSet::parse(Path::new("/etc/r.toml"), text, &InternalDomains::default())
            .expect_err(text)
            .to_string();
        assert!(
            err.contains("/etc/r.toml") && err.contains(want),
            "{text:?}: {err}"
        );
    }
    // A route to a notifier that is not configured is refused.
    let set = RuleSet::parse(
        Path::new("/etc/r.toml"),
        "[[rule]]\nname = \"ok\"\nkind = \"capture_gap\"\n\n[[rule]]\nname = \"m\"\nkind = \"capture_gap\"\nroute = [\"mail\"]\n",
        &InternalDomains::default(),
    )
    .expect("rules");
    let err = set
        .check_routes(&["webhook"])
        .expect_err("no mail")
        .to_string();
    assert!(err.contains("line 5, rule \"m\", field `route`"), "{err}");
    assert!(set.check_routes(&["webhook", "mail"]).is_ok());
}

#[test]
fn auth_failures_fire_once_per_crossing_per_ip_and_per_user() {
    let (_d, a) = engine(
        r#"
[[rule]]
name = "ip"
kind = "auth_failures"
per = "client_ip"
max = 2
window = "10m"
[[rule]]
name = "user"
kind = "auth_failures"
per = "user"
max = 3
window = "10m"
"#,
    );
    // (minute, ip, user, success, rules that fire)
    let seq: &[(i64, &str, &str, bool, &[&str])] = &[
        (0, "127.0.0.2", "bob", false, &[]),
        (1, "127.0.0.2", "bob", true, &[]), // a success counts for nothing
        (1, "127.0.0.3", "bob", false, &[]),
        (2, "127.0.0.2", "bob", false, &[]),
        (3, "127.0.0.2", "bob", false, &["ip", "user"]), // 3 from .2; 4 for bob
        (4, "127.0.0.2", "bob", false, &[]),             // still above
        (5, "127.0.0.3", "carol", false, &[]),
        (30, "127.0.0.2", "bob", false, &[]), // the window slid
        (31, "127.0.0.2", "bob", false, &[]),
        (32, "127.0.0.2", "bob", false, &["ip"]), // crosses again
    ];
    for (i, (m, ip, user, ok, want)) in seq.iter().enumerate() {
        let got = run(
            &a,
            ev(&format!("a{i}"), "relay1", m * MIN, auth(ip, user, *ok)),
        );
        let rules: Vec<&str> = got.iter().map(|x| x.rule.as_str()).collect();
        assert_eq!(rules, *want, "attempt {i} at minute {m}");
        if let Some(x) = got.iter().find(|x| x.rule == "ip") {
            assert!(
                x.summary
                    .starts_with("3 failed AUTH attempts from client 127.0.0.2"),
                "{}",
                x.summary
            );
            assert!(
                x.body
                    .contains("kiroku search --kind auth --outcome failed --client-ip 127.0.0.2"),
                "{}",
                x.body
            );
        }
    }
}

#[test]
fn delivery_rules_and_capture_gaps() {
    let (_d, a) = engine(
        r#"
[[rule]]
name = "fail"
kind = "delivery_failures"
max = 2
[[rule]]
name = "slow"
kind = "delivery_delay"
max_delay = "30m"
[[rule]]
name = "gap"
kind = "capture_gap"
"#,
    );
    let file = |op: &str| {
        Kind::File(FileEvent {
            operation: op.into(),
            path: "/srv/share".into(),
            detail: "inotify queue overflow".into(),
            ..Default::default()
        })
    };
    let gap = Kind::Gap(GapEvent {
        source: "smtp".into(),
        reason: "buffer_full".into(),
        count: 17,
        ..Default::default()
    });
    let seq: Vec<(i64, Kind, &[&str])> = vec![
        (0, mta("deferred", "a@slow.example", 0), &[]),
        (1, mta("bounced", "b@slow.example", 0), &[]),
        (2, mta("sent", "c@slow.example", 60_000), &[]),
        (3, mta("deferred", "d@other.example", 0), &[]),
        (4, mta("deferred", "e@SLOW.example", 0), &["fail"]),
        (5, mta("deferred", "f@slow.example", 0), &[]),
        (6, mta("sent", "g@x.example", 31 * MIN as u64), &["slow"]),
        (7, mta("deferred", "h@slow.example", 0), &[]),
        (8, gap, &["gap"]),
        (9, file("overflow"), &["gap"]),
        (10, file("watch_lost"), &["gap"]),
        (11, file("create"), &[]),
        (90, mta("bounced", "i@slow.example", 0), &[]),
        (91, mta("bounced", "j@slow.example", 0), &[]),
        (92, mta("bounced", "k@slow.example", 0), &["fail"]),
    ];
    for (i, (m, k, want)) in seq.into_iter().enumerate() {
        let got = run(&a, ev(&format!("d{i}"), "mx1", m * MIN, k));
        let rules: Vec<&str> = got.iter().map(|x| x.rule.as_str()).collect();
        assert_eq!(rules, want, "record {i} at minute {m}");
        for x in &got {
            assert!(x.body.contains("see:"), "{}", x.body);
            if x.rule == "fail" {
                assert!(x.summary.contains("to slow.example"), "{}", x.summary);
            }
            if x.rule == "gap" && m == 8 {
                assert!(
                    x.summary.contains("17 smtp record(s) not kept"),
                    "{}",
                    x.summary
                );
            }
        }
    }
}

#[test]
fn mail_rules_any_attachment_keyword_off_hours() {
    let (_d, a) = engine(
        r#"
[[rule]]
name = "att"
kind = "any_attachment"
[[rule]]
name = "kw"
kind = "keyword"
keywords = ["社外秘", "confidential"]
[[rule]]
name = "night"
kind = "off_hours"
schedule = ["Mon-Fri 08:00-19:00"]
time_zone = "Asia/Tokyo"
"#,
    );
    // 2026-12-07 Mon 09:00 JST = 00:00 UTC; 2026-12-07 20:00 JST = 11:00 UTC.
    let day = 1_796_601_600_000; // 2026-12-07T00:00:00Z
    let cases: Vec<(i64, Kind, &[&str])> = vec![
        (day, mail("hello", "plain", &[]), &[]),
        (day, mail("plan", "", &[("plan.xlsx", false)]), &["att"]),
        (day, mail("logo", "", &[("logo.png", true)]), &[]),
        (day, mail("【社外秘】計画", "", &[]), &["kw"]),
        (day, mail("x", "This is CONFIDENTIAL.", &[]), &["kw"]),
        (day + 11 * 3_600_000, mail("late", "", &[]), &["night"]),
        (
            day + 11 * 3_600_000,
            mail("late", "ｃｏｎｆｉｄｅｎｔｉａｌ", &[("a.zip", false)]),
            &["att", "kw", "night"],
        ),
    ];
    assert_eq!(
        kiroku_common::rfc3339_ms(day),
        "2026-12-07T00:00:00.000Z",
        "the test's day"
    );
    for (i, (at, k, want)) in cases.into_iter().enumerate() {
        let got = run(&a, ev(&format!("m{i}"), "pc1", at, k));
        let rules: Vec<&str> = got.iter().map(|x| x.rule.as_str()).collect();
        assert_eq!(rules, want, "mail {i}");
        if let Some(x) = got.iter().find(|x| x.rule == "night") {
            assert!(
                x.summary.contains("20:00"),
                "local time in the summary: {}",
                x.summary
            );
        }
    }
}

#[test]
fn clock_skew_fires_once_per_crossing_per_agent() {
    let (_d, a) = engine("[[rule]]\nname = \"skew\"\nkind = \"clock_skew\"\nmax_offset = \"2s\"\n");
    let skewed = |id: &str, agent: &str, off: Option<i64>| {
        let mut e = ev(id, agent, 1000, mail("s", "", &[]));
        if let Some(o) = off {
            e.clock_offset_ms = o;
            e.clock_offset_known = true;
        }
        e
    };
    let seq: &[(&str, Option<i64>, usize)] = &[
        ("pc1", Some(100), 0),
        ("pc1", Some(-5_000), 1),
        ("pc1", Some(-6_000), 0),
        ("pc1", None, 0),
        ("pc2", Some(3_000), 1),
        ("pc1", Some(1_000), 0),
        ("pc1", Some(9_000), 1),
    ];
    for (i, (agent, off, n)) in seq.iter().enumerate() {
        let got = run(&a, skewed(&format!("c{i}"), agent, *off));
        assert_eq!(got.len(), *n, "event {i} from {agent} offset {off:?}");
    }
}

#[test]
fn incident_open_from_records_and_while_open() {
    let (_d, a) = engine(
        r#"
[[rule]]
name = "down"
kind = "incident_open"
kinds = ["upstream_unreachable", "upstream_refused"]
minutes = 10
"#,
    );
    let t0 = 1_000_000_000_000;
    // (record, fires)
    let seq: Vec<(Kind, usize)> = vec![
        (incident("i1", "upstream_unreachable", "open", t0, t0), 0),
        (
            incident("i1", "upstream_unreachable", "still_open", t0, t0 + 5 * MIN),
            0,
        ),
        (
            incident(
                "i1",
                "upstream_unreachable",
                "still_open",
                t0,
                t0 + 15 * MIN,
            ),
            1,
        ),
        (
            incident(
                "i1",
                "upstream_unreachable",
                "still_open",
                t0,
                t0 + 30 * MIN,
            ),
            0,
        ),
        (
            incident("i1", "upstream_unreachable", "closed", t0, t0 + 40 * MIN),
            0,
        ),
        (
            incident("i2", "client_timeout", "closed", t0, t0 + 40 * MIN),
            0,
        ),
        (
            incident("i3", "upstream_refused", "closed", t0, t0 + 11 * MIN),
            1,
        ),
    ];
    for (i, (k, n)) in seq.into_iter().enumerate() {
        let got = run(&a, ev(&format!("i{i}"), "relay1", t0, k));
        assert_eq!(got.len(), n, "record {i}");
        for x in got {
            assert!(
                x.summary.contains("upstream 127.0.0.1:2525"),
                "{}",
                x.summary
            );
            assert!(
                x.body.contains("kiroku search --kind incident --incident"),
                "{}",
                x.body
            );
        }
    }
    // An incident open (no still_open yet) fires from the periodic check
    // once it has lasted the minutes, once.
    let got = run(
        &a,
        ev(
            "o1",
            "relay2",
            t0,
            incident("i9", "upstream_unreachable", "open", t0, t0),
        ),
    );
    assert!(got.is_empty());
    assert!(
        a.check_health(&[], None, t0 + 5 * MIN)
            .expect("health")
            .is_empty()
    );
    let fired = a.check_health(&[], None, t0 + 11 * MIN).expect("health");
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].1.event_id, "o1");
    assert!(
        a.check_health(&[], None, t0 + 20 * MIN)
            .expect("health")
            .is_empty()
    );
    // ... and its still_open record does not fire it again.
    let got = run(
        &a,
        ev(
            "o2",
            "relay2",
            t0,
            incident(
                "i9",
                "upstream_unreachable",
                "still_open",
                t0,
                t0 + 15 * MIN,
            ),
        ),
    );
    assert!(got.is_empty());
    // An agent that crashed with an incident open never closes it; its
    // start record makes the periodic check forget it.
    let got = run(
        &a,
        ev(
            "c1",
            "relay3",
            t0,
            incident("i7", "upstream_unreachable", "open", t0, t0),
        ),
    );
    assert!(got.is_empty());
    let start = Kind::HostChange(kiroku_proto::HostEvent {
        reason: "start".into(),
        identity: None,
    });
    assert!(run(&a, ev("c2", "relay3", t0 + MIN, start)).is_empty());
    assert!(
        a.check_health(&[], None, t0 + 30 * MIN)
            .expect("health")
            .is_empty(),
        "forgotten after the agent's start record"
    );
}

#[test]
fn agent_silent_and_ingest_paused_once_per_episode() {
    let (_d, a) = engine(
        r#"
[[rule]]
name = "silent"
kind = "agent_silent"
minutes = 5
severity = "critical"
[[rule]]
name = "paused"
kind = "ingest_paused"
"#,
    );
    let host = |id: &str, seen: i64, connected: bool| HostInfo {
        agent_id: id.into(),
        last_seen_ms: seen,
        connected,
        ..Default::default()
    };
    let t = 1_000_000_000_000;
    let rules = |out: Vec<(Vec<u8>, Alert)>| -> Vec<String> {
        out.into_iter()
            .map(|(_, x)| {
                format!(
                    "{} {}",
                    x.rule,
                    x.summary.split(' ').take(2).collect::<Vec<_>>().join(" ")
                )
            })
            .collect()
    };
    // (now, hosts, paused, fired)
    type Round<'a> = (i64, Vec<HostInfo>, Option<&'a str>, Vec<&'a str>);
    let seq: Vec<Round> = vec![
        (
            t,
            vec![host("pc1", t, true), host("pc2", t - MIN, false)],
            None,
            vec![],
        ),
        (
            t + 4 * MIN,
            vec![host("pc1", t, true), host("pc2", t - MIN, false)],
            None,
            vec!["silent agent pc2"],
        ),
        (
            t + 9 * MIN,
            vec![host("pc1", t, true), host("pc2", t - MIN, false)],
            Some("disk full"),
            vec!["paused collector ingest"],
        ),
        (
            t + 10 * MIN,
            vec![host("pc1", t, false), host("pc2", t - MIN, false)],
            Some("disk full"),
            vec!["silent agent pc1"],
        ),
        (
            t + 16 * MIN,
            vec![host("pc1", t, false), host("pc2", t + 15 * MIN, true)],
            None,
            vec![],
        ),
        (
            t + 30 * MIN,
            vec![host("pc1", t, false), host("pc2", t + 20 * MIN, false)],
            Some("disk"),
            vec!["silent agent pc2", "paused collector ingest"],
        ),
        // never seen, or retired: not silent
        (
            t + 40 * MIN,
            vec![
                host("pc3", 0, false),
                HostInfo {
                    retired_at_ms: 1,
                    ..host("pc4", t, false)
                },
            ],
            None,
            vec![],
        ),
    ];
    for (i, (now, hosts, paused, want)) in seq.into_iter().enumerate() {
        let got = rules(a.check_health(&hosts, paused, now).expect("health"));
        assert_eq!(got, want, "round {i}");
    }
    let silent = a.replay(0).expect("replay");
    let s = silent.iter().find(|x| x.rule == "silent").expect("logged");
    assert_eq!(s.severity, "critical");
    assert!(s.body.contains("kiroku hosts"), "{}", s.body);
}
