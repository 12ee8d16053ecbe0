use super::*;
use kiroku_proto::event::Kind;
use kiroku_proto::{Attachment, EmailEvent, Recipient};

/// Found by fuzz/grpc_query: an agent's extreme time and clock offset
/// overflowed (a panic while indexing, in a debug build).
#[test]
fn extreme_agent_times_and_offsets_are_indexed_and_searched() {
    let dir = tempfile::tempdir().expect("temp dir");
    let idx = EventIndex::open(&dir.path().join("index")).expect("index");
    let mut events = Vec::new();
    for (i, (at, offset)) in [(i64::MIN, 1), (i64::MAX, -1), (-86_400_000, i64::MAX)]
        .into_iter()
        .enumerate()
    {
        let mut e = mail(&format!("a1/s1/{i}"), at, "a@x", "b@y", "budget", None);
        e.clock_offset_ms = offset;
        e.clock_offset_known = true;
        assert_eq!(corrected_ms(&e), at.saturating_sub(offset));
        events.push(e);
    }
    idx.add(&events).expect("add");
    idx.commit().expect("commit");
    let r = SearchRequest {
        text: "budget".into(),
        ..Default::default()
    };
    let (found, total, _) = idx.search(&r, 0, 10).expect("search");
    assert_eq!((found.len(), total), (3, 3));
}

#[test]
fn hashes_are_found_by_their_hex_in_either_case_and_others_by_themselves() {
    let dir = tempfile::tempdir().expect("temp dir");
    let idx = EventIndex::open(&dir.path().join("index")).expect("index");
    let a = mail("a1/s1/1", 1_000, "a@x", "b@y", "one", Some("x.pdf"));
    let mut b = mail("a1/s1/2", 2_000, "a@x", "b@y", "two", Some("y.pdf"));
    if let Some(Kind::Email(m)) = b.kind.as_mut() {
        m.attachments[0].sha256 = "cd".repeat(32);
        m.raw_sha256 = "not-a-hash".into();
    }
    idx.add(&[a, b]).expect("add");
    idx.commit().expect("commit");
    let find = |sha: &str| {
        let r = SearchRequest {
            sha256: sha.into(),
            ..Default::default()
        };
        let (found, _, _) = idx.search(&r, 0, 10).expect("search");
        found.into_iter().map(|e| e.event_id).collect::<Vec<_>>()
    };
    assert_eq!(find(&"ab".repeat(32)), ["a1/s1/1"]);
    assert_eq!(find(&"AB".repeat(32)), ["a1/s1/1"], "upper-case hex");
    assert_eq!(find(&"cd".repeat(32)), ["a1/s1/2"]);
    assert_eq!(find("not-a-hash"), ["a1/s1/2"]);
    assert!(find(&"ef".repeat(32)).is_empty());
    assert!(
        find(&"ab".repeat(16)).is_empty(),
        "half a hash is not a hash"
    );
    let (by, _) = idx.by_hash(&"cd".repeat(32), 10).expect("by_hash");
    assert_eq!(by.len(), 1);
    assert_eq!(sha_key(&"ab".repeat(32)), vec![0xab; 16]);
}

fn mail(id: &str, at: i64, from: &str, to: &str, subject: &str, att: Option<&str>) -> Event {
    Event {
        event_id: id.into(),
        agent_id: "a1".into(),
        observed_at_ms: at,
        user: "Alice".into(),
        kind: Some(Kind::Email(EmailEvent {
            mail_from: from.into(),
            rcpt_to: vec![Recipient {
                address: to.into(),
                reply_code: 250,
                ..Default::default()
            }],
            subject: subject.into(),
            body_text: "quarterly numbers inside".into(),
            attachment_count: u32::from(att.is_some()),
            attachments: att
                .map(|n| Attachment {
                    filename: n.into(),
                    sha256: "ab".repeat(32),
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

#[test]
fn filters_order_paging_and_idempotent_add() {
    let dir = tempfile::tempdir().expect("tempdir");
    let idx = EventIndex::open(dir.path()).expect("open");
    idx.add(&[
        mail(
            "a1/s/1",
            1000,
            "alice@x.com",
            "bob@y.com",
            "Budget plan",
            Some("budget 2025.xlsx"),
        ),
        mail("a1/s/2", 3000, "alice@x.com", "carol@z.com", "Lunch", None),
        mail(
            "a1/s/3",
            2000,
            "dave@x.com",
            "bob@y.com",
            "Budget review",
            None,
        ),
    ])
    .expect("add");
    idx.commit().expect("commit");
    // Re-adding the same id replaces, never duplicates.
    idx.add(&[mail(
        "a1/s/1",
        1000,
        "alice@x.com",
        "bob@y.com",
        "Budget plan",
        Some("budget 2025.xlsx"),
    )])
    .expect("add");
    idx.commit().expect("commit");
    assert_eq!(idx.count(), 3);

    let ids = |r: SearchRequest| -> Vec<String> {
        idx.search(&r, 0, 10)
            .expect("search")
            .0
            .into_iter()
            .map(|e| e.event_id)
            .collect()
    };
    let all = ids(SearchRequest::default());
    assert_eq!(all, vec!["a1/s/2", "a1/s/3", "a1/s/1"], "newest first");
    let cases: Vec<(SearchRequest, Vec<&str>)> = vec![
        (
            SearchRequest {
                sender: "ALICE@x.com".into(),
                ..Default::default()
            },
            vec!["a1/s/2", "a1/s/1"],
        ),
        (
            SearchRequest {
                recipient: "bob@y.com".into(),
                ..Default::default()
            },
            vec!["a1/s/3", "a1/s/1"],
        ),
        (
            SearchRequest {
                text: "budget".into(),
                ..Default::default()
            },
            vec!["a1/s/3", "a1/s/1"],
        ),
        (
            SearchRequest {
                has_attachment: true,
                ..Default::default()
            },
            vec!["a1/s/1"],
        ),
        (
            SearchRequest {
                attachment_name: "budget".into(),
                ..Default::default()
            },
            vec!["a1/s/1"],
        ),
        (
            SearchRequest {
                sha256: "ab".repeat(32),
                ..Default::default()
            },
            vec!["a1/s/1"],
        ),
        (
            SearchRequest {
                from_ms: 1500,
                to_ms: 3000,
                ..Default::default()
            },
            vec!["a1/s/3"],
        ),
        (
            SearchRequest {
                user: "alice".into(),
                address: "carol@z.com".into(),
                ..Default::default()
            },
            vec!["a1/s/2"],
        ),
    ];
    for (req, want) in cases {
        assert_eq!(ids(req.clone()), want, "{req:?}");
    }
    let (page, total, next) = idx.search(&SearchRequest::default(), 0, 2).expect("page");
    assert_eq!((page.len(), total, next), (2, 3, Some(2)));
    let (page, _, next) = idx.search(&SearchRequest::default(), 2, 2).expect("page");
    assert_eq!((page.len(), next), (1, None));
    assert!(idx.get("a1/s/3").expect("get").is_some());
    assert!(idx.get("nope").expect("get").is_none());
    assert!(matches!(
        idx.search(
            &SearchRequest {
                text: "subject:(".into(),
                ..Default::default()
            },
            0,
            1
        ),
        Err(IndexError::BadQuery { .. })
    ));
}

fn file(id: &str, at: i64, op: &str, path: &str, old: &str, removable: bool) -> Event {
    Event {
        event_id: id.into(),
        agent_id: "a1".into(),
        observed_at_ms: at,
        kind: Some(Kind::File(kiroku_proto::FileEvent {
            operation: op.into(),
            path: path.into(),
            old_path: old.into(),
            removable,
            sha256: if op == "copy_to_removable" {
                "cd".repeat(32)
            } else {
                String::new()
            },
            uid: -1,
            mechanism: "inotify".into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

#[test]
fn file_event_filters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let idx = EventIndex::open(dir.path()).expect("open");
    idx.add(&[
        mail("m/1", 500, "alice@x.com", "bob@y.com", "hi", None),
        file(
            "f/1",
            1000,
            "create",
            "/home/alice/Q3 Report.pdf",
            "",
            false,
        ),
        file(
            "f/2",
            2000,
            "rename",
            "/home/alice/final.pdf",
            "/home/alice/Q3 Report.pdf",
            false,
        ),
        file(
            "f/3",
            3000,
            "copy_to_removable",
            "/media/usb/final (1).pdf",
            "",
            true,
        ),
    ])
    .expect("add");
    idx.commit().expect("commit");
    let ids = |r: SearchRequest| -> Vec<String> {
        idx.search(&r, 0, 10)
            .expect("search")
            .0
            .into_iter()
            .map(|e| e.event_id)
            .collect()
    };
    let cases: Vec<(SearchRequest, Vec<&str>)> = vec![
        (
            SearchRequest {
                kind: "file".into(),
                ..Default::default()
            },
            vec!["f/3", "f/2", "f/1"],
        ),
        (
            SearchRequest {
                kind: "Email".into(),
                ..Default::default()
            },
            vec!["m/1"],
        ),
        (
            SearchRequest {
                path: "q3 report".into(),
                ..Default::default()
            },
            vec!["f/2", "f/1"],
        ),
        (
            SearchRequest {
                path: "final (1).pdf".into(),
                ..Default::default()
            },
            vec!["f/3"],
        ),
        (
            SearchRequest {
                operation: "rename".into(),
                ..Default::default()
            },
            vec!["f/2"],
        ),
        (
            SearchRequest {
                removable: true,
                ..Default::default()
            },
            vec!["f/3"],
        ),
        (
            SearchRequest {
                sha256: "cd".repeat(32),
                ..Default::default()
            },
            vec!["f/3"],
        ),
    ];
    for (req, want) in cases {
        assert_eq!(ids(req.clone()), want, "{req:?}");
    }
    for bad in [
        SearchRequest {
            kind: "fax".into(),
            ..Default::default()
        },
        SearchRequest {
            path: "/".into(),
            ..Default::default()
        },
        SearchRequest {
            operation: "bogus".into(),
            ..Default::default()
        },
        // fuzz/regressions/grpc_query/text-3000-nested-parens: this
        // overflowed the parser's stack (an abort, not a panic).
        SearchRequest {
            text: format!("{}a{}", "(".repeat(3000), ")".repeat(3000)),
            ..Default::default()
        },
        SearchRequest {
            subject: "NOT ".repeat(500) + "a",
            ..Default::default()
        },
    ] {
        assert!(
            matches!(idx.search(&bad, 0, 1), Err(IndexError::BadQuery { .. })),
            "{bad:?}"
        );
    }
}

#[test]
fn corrected_time_orders_by_the_collector_clock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let idx = EventIndex::open(dir.path()).expect("open");
    // Host A's clock is 120 s ahead: its mail at collector time 1000 s
    // says 1120 s. Host B (no skew) mails one second later.
    let mut a = mail("a/s/1", 1_120_000, "a@x", "r@y", "first", None);
    a.clock_offset_ms = 120_000;
    a.clock_offset_known = true;
    let mut b = mail("b/s/1", 1_001_000, "b@x", "r@y", "second", None);
    b.clock_offset_known = true;
    idx.add(&[a, b]).expect("add");
    idx.commit().expect("commit");
    let ids = |r: &SearchRequest| -> Vec<String> {
        let (ev, _, _) = idx.search(r, 0, 10).expect("search");
        ev.into_iter().map(|e| e.event_id).collect()
    };
    let mut r = SearchRequest::default();
    assert_eq!(ids(&r), ["a/s/1", "b/s/1"], "agent clocks: a looks newer");
    r.corrected_time = true;
    assert_eq!(ids(&r), ["b/s/1", "a/s/1"], "corrected: b is newer");
    r.from_ms = 1_000_500;
    assert_eq!(ids(&r), ["b/s/1"]);
    r.corrected_time = false;
    assert_eq!(ids(&r), ["a/s/1", "b/s/1"]);
}

/// Review of issue 16: mail relayed with the agent's own smarthost login
/// from a client that did not log in is nobody's: neither `--user` nor the
/// counts by user put it under that login.
#[test]
fn the_agents_smarthost_login_is_not_a_user() {
    let dir = tempfile::tempdir().expect("tempdir");
    let idx = EventIndex::open(dir.path()).expect("open");
    let mut relayed = mail("a1/s/1", 1000, "x@corp.example", "y@z.example", "hi", None);
    relayed.user = String::new();
    let mut own = mail("a1/s/2", 2000, "x@corp.example", "y@z.example", "hi", None);
    own.user = String::new();
    for (e, login, mechanism) in [
        (
            &mut relayed,
            "relay",
            kiroku_common::mail::AGENT_CREDENTIALS,
        ),
        (&mut own, "carol", "PLAIN"),
    ] {
        if let Some(Kind::Email(m)) = e.kind.as_mut() {
            m.auth_user = login.into();
            m.auth_mechanism = mechanism.into();
        }
    }
    idx.add(&[relayed, own]).expect("add");
    idx.commit().expect("commit");
    let by_user = |u: &str| {
        let r = SearchRequest {
            user: u.into(),
            ..Default::default()
        };
        idx.search(&r, 0, 10).expect("search").1
    };
    assert_eq!(by_user("relay"), 0);
    assert_eq!(by_user("carol"), 1);
    let q = StatsQuery {
        by: GroupBy::User,
        top: 0,
        zone: jiff::tz::TimeZone::UTC,
        zone_name: "UTC".into(),
    };
    let s = idx.stats(&SearchRequest::default(), &q).expect("stats");
    let keys: Vec<&str> = s.groups.iter().map(|g| g.key.as_str()).collect();
    assert_eq!(keys, ["carol"]);
    assert_eq!(s.none.count, 1, "the relayed mail has no user");
}

/// A file's other names (`name_candidates`: a decoy plain name beside the
/// RFC 2231 one) are searchable like its display name.
#[test]
fn every_name_candidate_is_searchable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let idx = EventIndex::open(dir.path()).expect("open");
    let mut ev = mail(
        "a1/s/1",
        1000,
        "a@x.com",
        "b@y.com",
        "q3",
        Some("q3-forecast.zip"),
    );
    if let Some(Kind::Email(m)) = &mut ev.kind {
        m.attachments[0].name_candidates = vec!["q3-forecast.zip".into(), "holiday.png".into()];
    }
    idx.add(&[
        ev,
        mail("a1/s/2", 2000, "a@x.com", "b@y.com", "x", Some("other.pdf")),
    ])
    .expect("add");
    idx.commit().expect("commit");
    for name in ["holiday.png", "forecast", "holiday"] {
        let r = SearchRequest {
            attachment_name: name.into(),
            ..Default::default()
        };
        let found: Vec<String> = idx
            .search(&r, 0, 10)
            .expect("search")
            .0
            .into_iter()
            .map(|e| e.event_id)
            .collect();
        assert_eq!(found, ["a1/s/1"], "{name}");
    }
}
