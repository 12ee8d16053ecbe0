use super::*;
use kiroku_proto::{Attachment, EmailEvent, FileEvent, HostIdentity, Outcome, Recipient};

use crate::store::index::EventIndex;

const HOUR: i64 = 3_600_000;
/// 2026-12-01T00:00:00Z, a Tuesday.
const T0: i64 = 1_796_083_200_000;

struct Mail<'a> {
    at: i64,
    user: &'a str,
    host: &'a str,
    from: &'a str,
    to: &'a [&'a str],
    ip: &'a str,
    outcome: Outcome,
    code: u32,
    size: u64,
    attachments: &'a [(&'a str, &'a str)],
}

fn mail(id: usize, m: &Mail) -> Event {
    Event {
        event_id: format!("a1/s1/{id}"),
        agent_id: "a1".into(),
        observed_at_ms: m.at,
        user: m.user.into(),
        host: Some(HostIdentity {
            hostname: m.host.into(),
            ..Default::default()
        }),
        kind: Some(Kind::Email(EmailEvent {
            mail_from: m.from.into(),
            rcpt_to: m
                .to
                .iter()
                .map(|a| Recipient {
                    address: (*a).into(),
                    ..Default::default()
                })
                .collect(),
            client_ip: m.ip.into(),
            outcome: m.outcome as i32,
            reply_code: m.code,
            message_size: m.size,
            attachment_count: m.attachments.len() as u32,
            attachments: m
                .attachments
                .iter()
                .map(|(name, sha)| Attachment {
                    filename: (*name).into(),
                    sha256: (*sha).into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn file(id: usize, at: i64, user: &str, size: u64) -> Event {
    Event {
        event_id: format!("a2/s1/{id}"),
        agent_id: "a2".into(),
        observed_at_ms: at,
        user: user.into(),
        host: Some(HostIdentity {
            hostname: "PC-2".into(),
            ..Default::default()
        }),
        kind: Some(Kind::File(FileEvent {
            operation: "create".into(),
            path: format!("/home/{user}/f{id}"),
            size,
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// Five mails and two files with known values; the index holds them in
/// two segments so counts are merged across segments.
fn known() -> (tempfile::TempDir, EventIndex) {
    let dir = tempfile::tempdir().expect("temp dir");
    let idx = EventIndex::open(&dir.path().join("index")).expect("index");
    let base = Mail {
        at: T0,
        user: "alice",
        host: "PC-1",
        from: "alice@corp.example",
        to: &["bob@partner.example"],
        ip: "127.0.0.1",
        outcome: Outcome::Delivered,
        code: 250,
        size: 1000,
        attachments: &[],
    };
    let mails = [
        mail(1, &base),
        mail(
            2,
            &Mail {
                at: T0 + HOUR,
                to: &["x@gmail.com", "y@GMAIL.com", "z@partner.example"],
                size: 2000,
                attachments: &[("q3.xlsx", "aa"), ("q3.xlsx", "aa")],
                ..base
            },
        ),
        mail(
            3,
            &Mail {
                at: T0 + HOUR + 60_000,
                user: "Bob",
                host: "pc-3",
                from: "BOB@Sales.Corp.Example",
                to: &["c@gmail.com"],
                ip: "10.1.2.3",
                outcome: Outcome::Rejected,
                code: 550,
                size: 300,
                attachments: &[("q3.xlsx", "aa"), ("報告.pdf", "bb")],
            },
        ),
    ];
    idx.add(&mails).expect("add");
    idx.commit().expect("commit");
    let more = [
        mail(
            4,
            &Mail {
                at: T0 + 26 * HOUR,
                ip: "10.1.2.3",
                outcome: Outcome::Rejected,
                code: 451,
                size: 400,
                ..base
            },
        ),
        // Refused at MAIL: no recipients, no reply code of its own here.
        mail(
            5,
            &Mail {
                at: T0 + 26 * HOUR + 1,
                user: "",
                from: "",
                to: &[],
                code: 0,
                size: 0,
                ..base
            },
        ),
        file(6, T0 + 2 * HOUR, "alice", 10_000),
        file(7, T0 + 3 * HOUR, "carol", 20_000),
    ];
    idx.add(&more).expect("add");
    idx.commit().expect("commit");
    (dir, idx)
}

fn run(idx: &EventIndex, filter: &SearchRequest, by: &str, top: u32, zone: &str) -> Stats {
    let q = StatsQuery::parse(by, top, zone).expect("a valid stats query");
    idx.stats(filter, &q).expect("stats")
}

/// (key, count, bytes) of each group.
fn rows(s: &Stats) -> Vec<(String, u64, u64)> {
    s.groups
        .iter()
        .map(|g| (g.key.clone(), g.tally.count, g.tally.bytes))
        .collect()
}

fn t(count: u64, bytes: u64) -> Tally {
    Tally { count, bytes }
}

#[test]
fn every_value_grouping_against_known_data() {
    let (_dir, idx) = known();
    let all = SearchRequest::default();
    type Row = (&'static str, u64, u64);
    // (by, groups, none): every value grouping over all seven events
    // (33,700 bytes in all).
    let cases: [(&str, &[Row], Tally); 11] = [
        (
            "user",
            &[("alice", 4, 13_400), ("bob", 1, 300), ("carol", 1, 20_000)],
            t(1, 0),
        ),
        (
            "sender",
            &[
                ("alice@corp.example", 3, 3_400),
                ("bob@sales.corp.example", 1, 300),
            ],
            t(3, 30_000),
        ),
        (
            "sender-domain",
            &[("corp.example", 3, 3_400), ("sales.corp.example", 1, 300)],
            t(3, 30_000),
        ),
        (
            // Mail 2 has two gmail.com recipients: it counts once there.
            "recipient-domain",
            &[("partner.example", 3, 3_400), ("gmail.com", 2, 2_300)],
            t(3, 30_000),
        ),
        (
            "host",
            &[("pc-1", 4, 3_400), ("pc-2", 2, 30_000), ("pc-3", 1, 300)],
            t(0, 0),
        ),
        (
            "client-ip",
            &[("127.0.0.1", 3, 3_000), ("10.1.2.3", 2, 700)],
            t(2, 30_000),
        ),
        (
            "outcome",
            &[("delivered", 3, 3_000), ("rejected", 2, 700)],
            t(2, 30_000),
        ),
        (
            "reply-code",
            &[("250", 2, 3_000), ("451", 1, 400), ("550", 1, 300)],
            t(3, 30_000),
        ),
        (
            "attachment-name",
            &[("q3.xlsx", 2, 2_300), ("報告.pdf", 1, 300)],
            t(5, 31_400),
        ),
        (
            "attachment-sha256",
            &[("aa", 2, 2_300), ("bb", 1, 300)],
            t(5, 31_400),
        ),
        ("kind", &[("email", 5, 3_700), ("file", 2, 30_000)], t(0, 0)),
    ];
    for (by, groups, none) in cases {
        let s = run(&idx, &all, by, 0, "");
        let want: Vec<(String, u64, u64)> = groups
            .iter()
            .map(|(k, c, b)| (k.to_string(), *c, *b))
            .collect();
        assert_eq!(rows(&s), want, "by {by}");
        assert_eq!(s.total, t(7, 33_700), "total by {by}");
        assert_eq!(s.none, none, "none by {by}");
        assert_eq!((s.other, s.other_groups), (Tally::default(), 0), "by {by}");
        if !GroupBy::parse(by).expect("by").multi_valued() {
            let sum = s.groups.iter().map(|g| g.tally.count).sum::<u64>() + s.none.count;
            assert_eq!(sum, 7, "single-valued groups add up, by {by}");
        }
    }
}

#[test]
fn top_n_and_the_rest_summed() {
    let (_dir, idx) = known();
    let all = SearchRequest::default();
    let s = run(&idx, &all, "user", 1, "");
    assert_eq!(rows(&s), [("alice".to_string(), 4, 13_400)]);
    assert_eq!((s.other, s.other_groups), (t(2, 20_300), 2));
    // Ties are broken by key, so the order is stable.
    let s = run(&idx, &all, "reply-code", 2, "");
    assert_eq!(
        rows(&s),
        [("250".to_string(), 2, 3_000), ("451".to_string(), 1, 400)]
    );
    assert_eq!((s.other, s.other_groups), (t(1, 300), 1));
}

#[test]
fn any_search_filter_applies() {
    let (_dir, idx) = known();
    let f = SearchRequest {
        kind: "email".into(),
        from_ms: T0 + HOUR,
        to_ms: T0 + 2 * HOUR,
        ..Default::default()
    };
    let s = run(&idx, &f, "recipient-domain", 0, "");
    assert_eq!(
        rows(&s),
        [
            ("gmail.com".to_string(), 2, 2_300),
            ("partner.example".to_string(), 1, 2_000)
        ]
    );
    assert_eq!(s.total, t(2, 2_300));
    let f = SearchRequest {
        user: "bob".into(),
        ..Default::default()
    };
    let s = run(&idx, &f, "outcome", 0, "");
    assert_eq!(rows(&s), [("rejected".to_string(), 1, 300)]);
    // A filter that matches nothing: no groups, nothing counted.
    let f = SearchRequest {
        host: "nowhere".into(),
        ..Default::default()
    };
    let s = run(&idx, &f, "hour", 0, "");
    assert_eq!(s, Stats::default());
}

#[test]
fn hour_and_day_buckets_in_utc_and_in_a_zone() {
    let (_dir, idx) = known();
    let all = SearchRequest::default();
    let s = run(&idx, &all, "day", 0, "");
    assert_eq!(
        rows(&s),
        [
            ("2026-12-01".to_string(), 5, 33_300),
            ("2026-12-02".to_string(), 2, 400)
        ]
    );
    assert_eq!(s.groups[1].start_ms, Some(T0 + 24 * HOUR));
    // In Tokyo (UTC+9) the first day starts at 15:00 UTC the day before.
    let s = run(&idx, &all, "day", 0, "Asia/Tokyo");
    assert_eq!(
        rows(&s),
        [
            ("2026-12-01".to_string(), 5, 33_300),
            ("2026-12-02".to_string(), 2, 400)
        ]
    );
    assert_eq!(s.groups[0].start_ms, Some(T0 - 9 * HOUR));
    // In New York (UTC-5 in December) the first events are the evening
    // before.
    let s = run(&idx, &all, "day", 0, "America/New_York");
    assert_eq!(
        rows(&s),
        [
            ("2026-11-30".to_string(), 5, 33_300),
            ("2026-12-01".to_string(), 2, 400)
        ]
    );
    let s = run(&idx, &all, "hour", 0, "Asia/Tokyo");
    assert_eq!(
        s.groups.len(),
        27,
        "09:00 on 12-01 through 11:00 on 12-02, the quiet hours listed"
    );
    assert_eq!(
        rows(&s)[..4],
        [
            ("2026-12-01 09:00 +09:00".to_string(), 1, 1_000),
            ("2026-12-01 10:00 +09:00".to_string(), 2, 2_300),
            ("2026-12-01 11:00 +09:00".to_string(), 1, 10_000),
            ("2026-12-01 12:00 +09:00".to_string(), 1, 20_000),
        ]
    );
    assert_eq!(
        rows(&s)[26],
        ("2026-12-02 11:00 +09:00".to_string(), 2, 400)
    );
    // Over `top` time buckets, the newest are kept.
    let s = run(&idx, &all, "hour", 2, "UTC");
    assert_eq!(
        rows(&s),
        [
            ("2026-12-02 01:00 +00:00".to_string(), 0, 0),
            ("2026-12-02 02:00 +00:00".to_string(), 2, 400)
        ]
    );
    assert_eq!((s.other, s.other_groups), (t(5, 33_300), 25));
}

#[test]
fn hour_of_day_and_weekday_in_a_zone() {
    let (_dir, idx) = known();
    let all = SearchRequest::default();
    let s = run(&idx, &all, "hour-of-day", 0, "Asia/Tokyo");
    assert_eq!(s.groups.len(), 24, "every hour is listed");
    let busy: Vec<_> = rows(&s).into_iter().filter(|r| r.1 > 0).collect();
    assert_eq!(
        busy,
        [
            ("09".to_string(), 1, 1_000),
            ("10".to_string(), 2, 2_300),
            ("11".to_string(), 3, 10_400),
            ("12".to_string(), 1, 20_000),
        ]
    );
    let s = run(&idx, &all, "weekday", 0, "Asia/Tokyo");
    let week: Vec<_> = rows(&s).into_iter().map(|r| (r.0, r.1)).collect();
    let want: Vec<(String, u64)> = [
        ("Mon", 0),
        ("Tue", 5),
        ("Wed", 2),
        ("Thu", 0),
        ("Fri", 0),
        ("Sat", 0),
        ("Sun", 0),
    ]
    .iter()
    .map(|(d, n)| (d.to_string(), *n))
    .collect();
    assert_eq!(week, want);
    let s = run(&idx, &all, "weekday", 0, "America/New_York");
    assert_eq!(
        (s.groups[0].key.as_str(), s.groups[0].tally.count),
        ("Mon", 5)
    );
}

/// A day of 25 hours: 2026-11-01 in New York, when summer time ends. The
/// repeated hour is two buckets, told apart by their offset.
#[test]
fn daylight_saving_days_and_hours() {
    let dir = tempfile::tempdir().expect("temp dir");
    let idx = EventIndex::open(&dir.path().join("index")).expect("index");
    // 2026-11-01T05:30Z is 01:30 EDT; 06:30Z is 01:30 EST.
    let at = 1_793_511_000_000;
    let events: Vec<Event> = (0..3)
        .map(|i| file(i, at + i as i64 * HOUR, "alice", 1))
        .collect();
    idx.add(&events).expect("add");
    idx.commit().expect("commit");
    let all = SearchRequest::default();
    let s = run(&idx, &all, "hour", 0, "America/New_York");
    let keys: Vec<_> = s.groups.iter().map(|g| g.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "2026-11-01 01:00 -04:00",
            "2026-11-01 01:00 -05:00",
            "2026-11-01 02:00 -05:00"
        ]
    );
    let s = run(&idx, &all, "day", 0, "America/New_York");
    assert_eq!(rows(&s), [("2026-11-01".to_string(), 3, 3)]);
    assert_eq!(s.groups[0].start_ms, Some(1_793_505_600_000), "04:00Z");
}

#[test]
fn requests_are_checked() {
    for (by, top, zone, field) in [
        ("", 0, "", "by"),
        ("subject", 0, "", "by"),
        (&"x".repeat(100) as &str, 0, "", "by"),
        ("user", MAX_TOP + 1, "", "top"),
        ("day", 0, "Mars/Olympus", "time_zone"),
        ("day", 0, &"A".repeat(65) as &str, "time_zone"),
    ] {
        match StatsQuery::parse(by, top, zone) {
            Err(IndexError::BadQuery { field: f, message }) => {
                assert_eq!(f, field, "{by:.10} {top} {zone:.10}: {message}");
                assert!(message.len() < 400, "{message}");
            }
            other => panic!("{by:.10} {top} {zone:.10}: {other:?}"),
        }
    }
    for (name, by) in GROUP_BYS {
        assert_eq!(GroupBy::parse(name), Some(by));
        assert_eq!(by.name(), name);
    }
    assert_eq!(
        GroupBy::parse(" Recipient_Domain "),
        Some(GroupBy::RecipientDomain)
    );
    let q = StatsQuery::parse("hour", 0, "").expect("UTC by default");
    assert_eq!(q.zone_name, "UTC");
}

#[test]
fn domains_of_addresses() {
    for (a, d) in [
        ("bob@Example.COM", Some("example.com")),
        ("<bob@example.com>", Some("example.com")),
        ("bob@example.com.", Some("example.com")),
        ("\"a@b\"@mx.example.org", Some("mx.example.org")),
        ("bob", None),
        ("bob@", None),
        ("", None),
    ] {
        assert_eq!(domain_of(a).as_deref(), d, "{a}");
    }
}

#[test]
fn long_values_are_cut_to_a_bounded_key() {
    assert_eq!(key("q3.xlsx"), "q3.xlsx");
    let exact = "a".repeat(MAX_KEY_BYTES);
    assert_eq!(key(&exact), exact.as_str());
    for long in [
        "b".repeat(10_000),
        "報".repeat(1_000),
        format!("a{}", "報".repeat(100)),
    ] {
        let k = key(&long);
        assert!(k.len() <= MAX_KEY_BYTES, "{}", k.len());
        assert!(k.len() > MAX_KEY_BYTES - 8, "{}", k.len());
        assert!(k.ends_with('…'));
        assert!(long.starts_with(k.trim_end_matches('…')));
    }
    // Indexed: a 10,000-byte attachment name is a group of a bounded name.
    let dir = tempfile::tempdir().expect("temp dir");
    let idx = EventIndex::open(&dir.path().join("index")).expect("index");
    let name = "x".repeat(10_000);
    let m = Mail {
        at: T0,
        user: "alice",
        host: "pc-1",
        from: "alice@corp.example",
        to: &["bob@partner.example"],
        ip: "127.0.0.1",
        outcome: Outcome::Delivered,
        code: 250,
        size: 1,
        attachments: &[(&name, "aa")],
    };
    idx.add(&[mail(1, &m)]).expect("add");
    idx.commit().expect("commit");
    let s = run(&idx, &SearchRequest::default(), "attachment-name", 0, "");
    assert_eq!(s.groups.len(), 1);
    assert_eq!(
        s.groups[0].key,
        format!("{}…", "x".repeat(MAX_KEY_BYTES - 3))
    );
}

#[test]
fn the_cli_vocabulary_names_every_grouping() {
    let names: Vec<&str> = GROUP_BYS.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, kiroku_common::vocabulary::STATS_GROUP_BYS);
    for t in kiroku_common::vocabulary::STATS_TIME_BUCKETS {
        assert!(matches!(
            GroupBy::parse(t),
            Some(GroupBy::Hour | GroupBy::Day | GroupBy::HourOfDay | GroupBy::Weekday)
        ));
    }
}

#[test]
fn client_addresses_group_in_their_usual_form() {
    assert_eq!(canonical_ip("::ffff:10.1.2.3"), "10.1.2.3");
    assert_eq!(canonical_ip("10.1.2.3"), "10.1.2.3");
    assert_eq!(canonical_ip("2001:DB8::1"), "2001:db8::1");
    assert_eq!(canonical_ip("not an address"), "not an address");
}
