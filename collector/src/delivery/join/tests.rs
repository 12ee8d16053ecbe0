use super::*;

const MIN: i64 = 60_000;
const DAY: i64 = 24 * 60 * MIN;

fn mail(id: &str, queue_id: &str, at_ms: i64) -> Mail {
    Mail {
        event_id: id.into(),
        agent_id: "relay".into(),
        hosts: vec!["ws1".into()],
        upstream_host: "mx.example.org".into(),
        upstream_name: "mx1.example.org".into(),
        queue_id: queue_id.into(),
        message_id: String::new(),
        at_ms,
    }
}

fn line(id: &str, queue_id: &str, at_ms: i64, status: &str) -> Line {
    Line {
        log_event_id: id.into(),
        agent_id: "mta".into(),
        names: vec!["mx.example.org".into(), "192.0.2.10".into()],
        host: "mx.example.org".into(),
        queue_id: queue_id.into(),
        at_ms,
        status: status.into(),
        to: if status.is_empty() || status == "expired" {
            vec![]
        } else {
            vec!["bob@example.net".into()]
        },
        relay: "mail.example.net[198.51.100.7]:25".into(),
        dsn: match status {
            "sent" => "2.0.0",
            "deferred" => "4.4.1",
            "bounced" => "5.1.1",
            _ => "",
        }
        .into(),
        delay_ms: 0,
        ..Default::default()
    }
}

fn owner_of(l: &Line, mails: &[Mail]) -> Option<String> {
    owner(l, &l.message_id, mails).map(|(m, _)| m.event_id.clone())
}

#[test]
fn upstream_host_is_the_host_part() {
    for (upstream, host) in [
        ("mx.example.org:25", "mx.example.org"),
        ("MX.Example.ORG:587", "mx.example.org"),
        ("127.0.0.1:2525", "127.0.0.1"),
        ("[::1]:25", "::1"),
        ("[2001:db8::1]:25", "2001:db8::1"),
        ("mx", "mx"),
        ("", ""),
    ] {
        assert_eq!(upstream_host(upstream), host, "{upstream}");
    }
}

#[test]
fn the_mta_is_found_by_host_name_address_or_greeting_name() {
    let m = mail("m", "Q1", 0);
    let mut l = line("l", "Q1", 0, "sent");
    assert!(
        same_mta(&m, &l),
        "the upstream host is one of the agent's names"
    );
    l.names = vec!["mx1.example.org".into()];
    assert!(same_mta(&m, &l), "the upstream's greeting name");
    l.names = vec!["other.example.org".into(), "192.0.2.99".into()];
    assert!(!same_mta(&m, &l), "another host's log");
    let mut m = mail("m", "Q1", 0);
    m.upstream_host = "192.0.2.10".into();
    l.names = vec!["mx".into(), "192.0.2.10".into()];
    assert!(same_mta(&m, &l), "an interface address");
}

#[test]
fn a_loopback_upstream_is_the_relays_own_host() {
    let mut m = mail("m", "Q1", 0);
    m.upstream_host = "127.0.0.1".into();
    m.upstream_name = "localhost".into();
    let mut l = line("l", "Q1", 0, "sent");
    l.names = vec!["127.0.0.1".into(), "other".into()];
    assert!(
        !same_mta(&m, &l),
        "every host has 127.0.0.1: another agent's log is not the relay's MTA"
    );
    l.agent_id = "relay".into();
    assert!(
        same_mta(&m, &l),
        "the relaying agent follows the log itself"
    );
    l.agent_id = "mta-on-ws1".into();
    l.names = vec!["ws1".into()];
    assert!(same_mta(&m, &l), "another agent on the same host");
    m.upstream_host = "::1".into();
    assert!(same_mta(&m, &l));
    m.upstream_host = "localhost".into();
    assert!(same_mta(&m, &l));
}

#[test]
fn the_window_is_five_minutes_before_to_thirty_days_after() {
    let m = mail("m", "Q1", 10 * DAY);
    for (at, inside) in [
        (10 * DAY - 5 * MIN, true),
        (10 * DAY - 5 * MIN - 1, false),
        (10 * DAY, true),
        (40 * DAY, true),
        (40 * DAY + 1, false),
    ] {
        assert_eq!(in_window(&m, at), inside, "{at}");
    }
}

#[test]
fn a_line_belongs_to_the_nearest_earlier_mail_with_its_queue_id() {
    // Postfix's short queue ids repeat: the same id a day apart.
    let mails = [
        mail("old", "Q1", DAY),
        mail("new", "Q1", 2 * DAY),
        mail("other-id", "Q2", 2 * DAY + MIN),
    ];
    let cases = [
        (line("a", "Q1", DAY + MIN, "sent"), Some("old")),
        (line("b", "Q1", 2 * DAY + MIN, "sent"), Some("new")),
        // Logged just before the relay recorded it (clocks, order).
        (line("c", "Q1", 2 * DAY - MIN, "sent"), Some("new")),
        (line("d", "Q1", 20 * DAY, "bounced"), Some("new")),
        (line("e", "Q1", DAY - 10 * MIN, "sent"), None),
        (line("f", "Q3", 2 * DAY, "sent"), None),
        (line("g", "Q1", 33 * DAY, "sent"), None),
    ];
    for (l, want) in cases {
        assert_eq!(
            owner_of(&l, &mails).as_deref(),
            want,
            "line {}",
            l.log_event_id
        );
    }
}

#[test]
fn a_message_id_confirms_or_breaks_a_tie() {
    let mut a = mail("a", "Q1", DAY);
    a.message_id = "one@example.org".into();
    let mut b = mail("b", "Q1", DAY + MIN);
    b.message_id = "two@example.org".into();
    let c = mail("c", "Q1", DAY + 2 * MIN); // Message-ID not recorded
    let mails = [a, b, c];
    let at = DAY + 3 * MIN;
    let with = |mid: &str| {
        let mut l = line("l", "Q1", at, "sent");
        l.message_id = mid.into();
        l
    };
    for (mid, want, confirmed) in [
        ("one@example.org", "a", true),
        ("two@example.org", "b", true),
        // Unknown to every mail: only the mail without one may match.
        ("three@example.org", "c", false),
        // None on the line: the latest mail.
        ("", "c", false),
    ] {
        let l = with(mid);
        let got = owner(&l, mid, &mails).map(|(m, c)| (m.event_id.as_str(), c));
        assert_eq!(got, Some((want, confirmed)), "message-id {mid:?}");
    }
}

#[test]
fn a_status_line_takes_the_message_id_of_its_cleanup_line() {
    let mut cleanup = line("cleanup", "Q1", DAY, "");
    cleanup.message_id = "one@example.org".into();
    let mut other_host = line("cleanup2", "Q1", DAY, "");
    other_host.agent_id = "mta2".into();
    other_host.message_id = "two@example.org".into();
    let sent = line("sent", "Q1", DAY + 1000, "sent");
    let lines = [cleanup, other_host, sent.clone()];
    let mails = [mail("a", "Q1", DAY)];
    assert_eq!(message_id_of(&sent, &lines, &mails), "one@example.org");
    let earlier = line("earlier", "Q1", DAY - 1000, "sent");
    assert_eq!(
        message_id_of(&earlier, &lines, &mails),
        "",
        "logged before it"
    );
    // The queue id came round again: the cleanup line is the old mail's.
    let later = line("later", "Q1", 3 * DAY, "sent");
    let mails = [mail("a", "Q1", DAY), mail("b", "Q1", 3 * DAY - 1000)];
    assert_eq!(message_id_of(&later, &lines, &mails), "");
}

#[test]
fn assign_gives_each_mail_its_lines() {
    let mut a = mail("a", "Q1", DAY);
    a.message_id = "one@example.org".into();
    let b = mail("b", "Q1", 3 * DAY);
    let mut cleanup = line("l0", "Q1", DAY, "");
    cleanup.message_id = "one@example.org".into();
    let lines = [
        cleanup,
        line("l1", "Q1", DAY + 1000, "deferred"),
        line("l2", "Q1", 3 * DAY + 1000, "sent"),
        line("l3", "Q9", 3 * DAY + 1000, "sent"),
    ];
    let got = assign(&[a, b], &lines);
    assert_eq!(got, vec![(0, vec![0, 1], true), (1, vec![2], false)]);
}

fn deliver(m: &Mail, lines: &[Line]) -> Delivery {
    delivery(m, &lines.iter().collect::<Vec<_>>(), false)
}

#[test]
fn status_and_summary_follow_the_lines() {
    let m = mail("m", "Q1", 0);
    let mut sent = line("s", "Q1", 3_200, "sent");
    sent.delay_ms = 3_200;
    let mut expired = line("x", "Q1", 5 * DAY, "expired");
    expired.to.clear();
    let two = |mut l: Line, to: &str| {
        l.to = vec![to.into()];
        l
    };
    let cases: Vec<(&str, Vec<Line>, &str, &str)> = vec![
        (
            "delivered",
            vec![sent.clone()],
            "delivered",
            "delivered to mail.example.net 3.2 s later",
        ),
        (
            "deferred",
            vec![
                line("d1", "Q1", 1_000, "deferred"),
                line("d2", "Q1", 60_000, "deferred"),
            ],
            "deferred",
            "deferred 2 times, still queued (last: 4.4.1)",
        ),
        (
            "deferred then bounced",
            vec![
                line("d1", "Q1", 1_000, "deferred"),
                line("d2", "Q1", DAY, "deferred"),
                line("d3", "Q1", 2 * DAY, "deferred"),
                line("d4", "Q1", 3 * DAY, "deferred"),
                line("b", "Q1", 5 * DAY, "bounced"),
            ],
            "bounced",
            "deferred 4 times, bounced after 5 days (5.1.1)",
        ),
        (
            "deferred then expired",
            vec![line("d1", "Q1", 1_000, "deferred"), expired.clone()],
            "expired",
            "deferred once, expired after 5 days, returned to sender",
        ),
        (
            "one delivered, one pending",
            vec![
                sent.clone(),
                two(line("d", "Q1", 2_000, "deferred"), "eve@example.com"),
            ],
            "deferred",
            "deferred once, still queued (last: 4.4.1)",
        ),
        (
            "one delivered, one bounced: the worst final one",
            vec![
                sent.clone(),
                two(line("b", "Q1", 2_000, "bounced"), "eve@example.com"),
            ],
            "bounced",
            "bounced after 2.0 s (5.1.1)",
        ),
        (
            "a deferral logged after the delivery does not undo it",
            vec![sent.clone(), line("d", "Q1", 4_000, "deferred")],
            "delivered",
            "deferred once, delivered to mail.example.net 3.2 s later",
        ),
        (
            "only the Message-ID line",
            vec![line("c", "Q1", 100, "")],
            "unknown",
            "accepted by the MTA, no delivery logged yet",
        ),
    ];
    for (what, lines, status, summary) in cases {
        let d = deliver(&m, &lines);
        assert_eq!(d.status, status, "{what}");
        assert_eq!(d.summary, summary, "{what}");
        assert_eq!(d.queue_id, "Q1");
        assert_eq!(d.mta_host, "mx.example.org");
        assert_eq!(d.mta_agent_id, "mta");
    }
}

#[test]
fn attempts_are_in_log_order_one_per_recipient() {
    let m = mail("m", "Q1", 0);
    let mut both = line("b", "Q1", 2_000, "sent");
    both.to = vec!["a@example.net".into(), "b@example.net".into()];
    let d = deliver(&m, &[both, line("a", "Q1", 1_000, "deferred")]);
    let got: Vec<(&str, &str, &str)> = d
        .attempts
        .iter()
        .map(|a| {
            (
                a.recipient.as_str(),
                a.status.as_str(),
                a.log_event_id.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("bob@example.net", "deferred", "a"),
            ("a@example.net", "sent", "b"),
            ("b@example.net", "sent", "b"),
        ]
    );
    // bob's deferral is still pending: no sent line for him.
    assert_eq!(d.status, "deferred");
}

#[test]
fn relay_names_and_durations_read_well() {
    for (relay, name) in [
        ("mx.example.org[192.0.2.1]:25", "mx.example.org"),
        ("unknown[192.0.2.1]:25", "192.0.2.1"),
        ("local", "local"),
        ("none", "none"),
    ] {
        assert_eq!(relay_name(relay), name);
    }
    for (ms, text) in [
        (3_200, "3.2 s"),
        (12 * MIN, "12 min"),
        (5 * 60 * MIN, "5 h"),
        (5 * DAY, "5 days"),
        (-5, "0.0 s"),
    ] {
        assert_eq!(human_duration(ms), text);
    }
}
