//! The store with hand-built events as the committer hands them over.

use kiroku_proto::{EmailEvent, HostIdentity, Interface, MtaLogEvent};

use super::*;

const DAY: i64 = 24 * 3600 * 1000;

fn open() -> (tempfile::TempDir, DeliveryStore) {
    let dir = tempfile::tempdir().expect("store call");
    let meta = MetaStore::open(&dir.path().join("meta")).expect("store call");
    (dir, DeliveryStore::open(&meta).expect("store call"))
}

fn host(name: &str, ip: &str) -> Option<HostIdentity> {
    Some(HostIdentity {
        hostname: name.into(),
        interfaces: vec![Interface {
            name: "eth0".into(),
            ips: vec![ip.into(), "127.0.0.1".into()],
            ..Default::default()
        }],
        ..Default::default()
    })
}

/// A mail relayed by agent `ws1` to mx.example.org (192.0.2.10).
fn mail(id: &str, queue_id: &str, at: i64, message_id: &str) -> Event {
    Event {
        event_id: id.into(),
        agent_id: "ws1".into(),
        observed_at_ms: at,
        host: host("ws1", "192.0.2.50"),
        kind: Some(Kind::Email(EmailEvent {
            upstream: "192.0.2.10:25".into(),
            upstream_name: "mx.example.org".into(),
            upstream_queue_id: queue_id.into(),
            message_id: format!("<{message_id}>"),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// A Postfix log line shipped by agent `mx` on mx.example.org.
fn line(id: &str, queue_id: &str, at: i64, status: &str, message_id: &str) -> Event {
    Event {
        event_id: id.into(),
        agent_id: "mx".into(),
        observed_at_ms: at + 300,
        host: host("mx", "192.0.2.10"),
        kind: Some(Kind::MtaLog(MtaLogEvent {
            mta: "postfix".into(),
            logged_at_ms: at,
            log_host: "mx".into(),
            queue_id: queue_id.into(),
            message_id: message_id.into(),
            status: status.into(),
            to: if status.is_empty() {
                vec![]
            } else {
                vec!["bob@example.net".into()]
            },
            relay: "mail.example.net[198.51.100.7]:25".into(),
            dsn: if status == "sent" { "2.0.0" } else { "4.4.1" }.into(),
            delay_ms: 1_500,
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn status(s: &DeliveryStore, id: &str) -> Option<String> {
    s.status(id)
}

#[test]
fn a_line_after_its_mail_is_joined() {
    let (_d, s) = open();
    assert_eq!(
        s.ingest(&[mail("m1", "4F1A", DAY, "a@x")], 1)
            .expect("store call"),
        Vec::<String>::new()
    );
    assert_eq!(status(&s, "m1"), None);
    let changed = s
        .ingest(&[line("l1", "4F1A", DAY + 1_000, "deferred", "")], 2)
        .expect("store call");
    assert_eq!(changed, ["m1"]);
    assert_eq!(status(&s, "m1").as_deref(), Some("deferred"));
    let changed = s
        .ingest(&[line("l2", "4F1A", DAY + 60_000, "sent", "")], 3)
        .expect("store call");
    assert_eq!(changed, ["m1"]);
    let d = s.delivery("m1").expect("read").expect("joined");
    assert_eq!(d.status, "delivered");
    assert_eq!(
        d.summary,
        "deferred once, delivered to mail.example.net 1.5 s later"
    );
    assert_eq!(d.mta_agent_id, "mx");
    assert_eq!(d.mta_host, "mx");
    assert_eq!(d.queue_id, "4F1A");
    assert_eq!(d.attempts.len(), 2);
    assert_eq!(d.updated_at_ms, 3);
    // The same line again (a resend): nothing changes.
    let again = s
        .ingest(&[line("l2", "4F1A", DAY + 60_000, "sent", "")], 4)
        .expect("store call");
    assert!(again.is_empty());
    assert_eq!(
        s.delivery("m1")
            .expect("read")
            .expect("joined")
            .updated_at_ms,
        3
    );
}

#[test]
fn lines_before_their_mail_wait_for_it() {
    let (_d, s) = open();
    let early = [
        line("l0", "4F1A", DAY, "", "<a@x>"),
        line("l1", "4F1A", DAY + 2_000, "bounced", ""),
    ];
    assert!(s.ingest(&early, 1).expect("store call").is_empty());
    let changed = s
        .ingest(&[mail("m1", "4F1A", DAY + 500, "a@x")], 2)
        .expect("store call");
    assert_eq!(changed, ["m1"]);
    let d = s.delivery("m1").expect("read").expect("joined");
    assert_eq!(d.status, "bounced");
    assert_eq!(d.joined_by, "queue id + host + time + message-id");
}

#[test]
fn a_repeated_queue_id_goes_to_the_nearest_mail() {
    let (_d, s) = open();
    s.ingest(
        &[
            mail("old", "4F1A", DAY, "a@x"),
            mail("new", "4F1A", 3 * DAY, "b@x"),
        ],
        1,
    )
    .expect("store call");
    s.ingest(&[line("l1", "4F1A", DAY + 1_000, "sent", "")], 2)
        .expect("store call");
    s.ingest(&[line("l2", "4F1A", 3 * DAY + 1_000, "bounced", "")], 3)
        .expect("store call");
    assert_eq!(status(&s, "old").as_deref(), Some("delivered"));
    assert_eq!(status(&s, "new").as_deref(), Some("bounced"));
    // A mail relayed in between, arriving late, takes the later line.
    let changed = s
        .ingest(&[mail("mid", "4F1A", 2 * DAY, "")], 4)
        .expect("store call");
    assert!(changed.is_empty(), "the 3-day line is nearer to `new`");
}

#[test]
fn the_message_id_breaks_a_tie_between_two_mails() {
    let (_d, s) = open();
    // Two mails with one queue id a minute apart: their cleanup lines
    // say which is which.
    s.ingest(
        &[
            mail("a", "4F1A", DAY, "a@x"),
            mail("b", "4F1A", DAY + 60_000, "b@x"),
            line("c", "4F1A", DAY + 100, "", "<a@x>"),
            line("s", "4F1A", DAY + 200, "deferred", ""),
        ],
        1,
    )
    .expect("store call");
    assert_eq!(status(&s, "a").as_deref(), Some("deferred"));
    assert_eq!(status(&s, "b"), None);
}

#[test]
fn another_hosts_log_and_other_kinds_are_not_joined() {
    let (_d, s) = open();
    let mut other = line("l1", "4F1A", DAY + 1_000, "sent", "");
    other.host = host("mx2", "192.0.2.11");
    if let Some(Kind::MtaLog(l)) = &mut other.kind {
        l.log_host = "mx2".into();
    }
    let mut no_queue = line("l2", "", DAY + 1_000, "sent", "");
    no_queue.event_id = "l2".into();
    let not_status = line("l3", "4F1A", DAY + 1_000, "", "");
    let changed = s
        .ingest(
            &[mail("m1", "4F1A", DAY, ""), other, no_queue, not_status],
            1,
        )
        .expect("store call");
    assert!(changed.is_empty());
    assert_eq!(status(&s, "m1"), None);
}

#[test]
fn a_line_timestamp_far_from_its_read_time_is_not_trusted() {
    let mut e = line("l", "Q", DAY, "sent", "");
    assert_eq!(line_of(&e).expect("a line the join uses").at_ms, DAY);
    e.clock_offset_known = true;
    e.clock_offset_ms = 1_000;
    assert_eq!(
        line_of(&e).expect("a line the join uses").at_ms,
        DAY - 1_000,
        "the agent's offset"
    );
    // A syslog line read with the wrong year.
    if let Some(Kind::MtaLog(l)) = &mut e.kind {
        l.logged_at_ms = DAY - 365 * DAY;
    }
    assert_eq!(
        line_of(&e).expect("a line the join uses").at_ms,
        DAY + 300 - 1_000,
        "read time"
    );
}

#[test]
fn a_purged_mail_loses_its_delivery() {
    let (_d, s) = open();
    s.ingest(
        &[
            mail("m1", "4F1A", DAY, ""),
            line("l1", "4F1A", DAY + 1_000, "sent", ""),
        ],
        1,
    )
    .expect("store call");
    assert!(s.delivery("m1").expect("store call").is_some());
    s.forget(&["m1".into()]).expect("store call");
    assert!(s.delivery("m1").expect("store call").is_none());
    // The line alone joins nothing again.
    assert!(
        s.ingest(&[line("l2", "4F1A", DAY + 2_000, "sent", "")], 2)
            .expect("store call")
            .is_empty()
    );
    assert!(s.delivery("m1").expect("store call").is_none());
}

#[test]
fn mails_and_lines_past_the_window_expire_and_deliveries_stay() {
    let (_d, s) = open();
    s.ingest(
        &[
            mail("m1", "4F1A", DAY, ""),
            line("l1", "4F1A", DAY + 1_000, "sent", ""),
            // Inbound mail no agent relayed: its line waits for nothing.
            line("in", "77AA", DAY + 2_000, "sent", ""),
        ],
        DAY + 3_000,
    )
    .expect("ingest");
    let count = |t: &sled::Tree| t.iter().count();
    assert_eq!(
        (count(&s.mails), count(&s.lines), count(&s.keys)),
        (1, 2, 3)
    );
    // 33 days later, a new mail with the same queue id.
    let later = 34 * DAY;
    let changed = s
        .ingest(&[mail("m2", "4F1A", later, "")], later)
        .expect("ingest");
    assert!(changed.is_empty());
    assert_eq!(
        (count(&s.mails), count(&s.lines), count(&s.keys)),
        (1, 0, 1)
    );
    assert_eq!(count(&s.expiry), 1);
    assert_eq!(status(&s, "m1").as_deref(), Some("delivered"), "kept");
    // Forgetting the new mail leaves nothing behind.
    s.forget(&["m2".into()]).expect("forget");
    assert_eq!(
        (count(&s.mails), count(&s.keys), count(&s.expiry)),
        (0, 0, 0)
    );
}
