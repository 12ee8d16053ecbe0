//! Each mail-flow filter against known mail: domains and subdomains,
//! wildcards, client networks (IPv4 and IPv6), Message-ID, queue id, reply
//! codes and classes, SMTP login, replies as text, internal/external,
//! direction, oldest first.

use kiroku_common::mail::InternalDomains;
use kiroku_proto::event::Kind;
use kiroku_proto::{EmailEvent, Event, Outcome, Recipient, SearchRequest};

use crate::store::index::EventIndex;

struct Mail {
    id: &'static str,
    at: i64,
    from: &'static str,
    rcpt: &'static [(&'static str, u32)],
    ip: &'static str,
    reply: (u32, &'static str),
    message_id: &'static str,
    queue_id: &'static str,
    auth: (&'static str, &'static str),
}

const MAILS: &[Mail] = &[
    Mail {
        id: "m1",
        at: 1_000,
        from: "alice@corp.example",
        rcpt: &[("bob@gmail.com", 250)],
        ip: "10.1.2.3",
        reply: (250, "2.0.0 Ok: queued as 4AB12"),
        message_id: "<One@corp.example>",
        queue_id: "4AB12",
        auth: ("", ""),
    },
    Mail {
        id: "m2",
        at: 2_000,
        from: "bobby@corp.example",
        rcpt: &[("carol@mx.example.com", 250), ("dan@corp.example", 250)],
        ip: "10.2.0.9",
        reply: (250, "2.0.0 Ok"),
        message_id: "two@corp.example",
        queue_id: "",
        auth: ("Bobby", "PLAIN"),
    },
    Mail {
        id: "m3",
        at: 3_000,
        from: "news@partner.example",
        rcpt: &[("erin@hr.corp.example", 250), ("nobody@gmail.com", 550)],
        ip: "2001:db8::25",
        reply: (451, "4.3.0 connection refused by next hop"),
        message_id: "",
        queue_id: "",
        auth: ("relay", "agent-credentials"),
    },
    Mail {
        id: "m4",
        at: 4_000,
        from: "spam@examples.com",
        rcpt: &[("frank@example.com", 250)],
        ip: "192.168.7.7",
        reply: (554, "5.7.1 rejected"),
        message_id: "",
        queue_id: "",
        auth: ("", ""),
    },
    Mail {
        id: "m5",
        at: 5_000,
        from: "root@corp.example",
        rcpt: &[("ops@corp.example", 250)],
        ip: "::ffff:10.1.9.9",
        reply: (250, "2.0.0 Ok"),
        message_id: "",
        queue_id: "",
        auth: ("", ""),
    },
];

fn event(m: &Mail) -> Event {
    Event {
        event_id: m.id.into(),
        agent_id: "a1".into(),
        observed_at_ms: m.at,
        kind: Some(Kind::Email(EmailEvent {
            mail_from: m.from.into(),
            rcpt_to: m
                .rcpt
                .iter()
                .map(|(a, code)| Recipient {
                    address: (*a).into(),
                    reply_code: *code,
                    reply: if *code == 550 {
                        "5.1.1 mailbox unavailable".into()
                    } else {
                        "2.1.5 Ok".into()
                    },
                    ..Default::default()
                })
                .collect(),
            client_ip: m.ip.into(),
            reply_code: m.reply.0,
            upstream_reply: m.reply.1.into(),
            outcome: if m.reply.0 < 300 {
                Outcome::Delivered
            } else {
                Outcome::Rejected
            } as i32,
            message_id: m.message_id.into(),
            upstream_queue_id: m.queue_id.into(),
            auth_user: m.auth.0.into(),
            auth_mechanism: m.auth.1.into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn index() -> (tempfile::TempDir, EventIndex) {
    let dir = tempfile::tempdir().expect("temp dir");
    let idx = EventIndex::open(&dir.path().join("index")).expect("index");
    idx.add(&MAILS.iter().map(event).collect::<Vec<_>>())
        .expect("add");
    idx.commit().expect("commit");
    idx.set_internal_domains(InternalDomains::new(&["corp.example"]).expect("domains"));
    (dir, idx)
}

fn ids(idx: &EventIndex, r: &SearchRequest) -> Vec<String> {
    let (found, _, _) = idx.search(r, 0, 100).expect("search");
    found.into_iter().map(|e| e.event_id).collect()
}

#[test]
fn each_filter_finds_its_mail() {
    let (_dir, idx) = index();
    let r = SearchRequest::default;
    let cases: Vec<(&str, SearchRequest, &[&str])> = vec![
        (
            "recipient domain, subdomains included",
            SearchRequest {
                recipient_domain: "example.com".into(),
                ..r()
            },
            &["m4", "m2"],
        ),
        (
            "recipient domain written with @ and in capitals",
            SearchRequest {
                recipient_domain: "@CORP.example".into(),
                ..r()
            },
            &["m5", "m3", "m2"],
        ),
        (
            "a subdomain only",
            SearchRequest {
                recipient_domain: "hr.corp.example".into(),
                ..r()
            },
            &["m3"],
        ),
        (
            "sender domain: examples.com is not example.com",
            SearchRequest {
                sender_domain: "example.com".into(),
                ..r()
            },
            &[],
        ),
        (
            "sender domain",
            SearchRequest {
                sender_domain: "partner.example".into(),
                ..r()
            },
            &["m3"],
        ),
        (
            "recipient wildcard *@domain: that domain exactly",
            SearchRequest {
                recipient: "*@gmail.com".into(),
                ..r()
            },
            &["m3", "m1"],
        ),
        (
            "sender wildcard",
            SearchRequest {
                sender: "bob*@corp.example".into(),
                ..r()
            },
            &["m2"],
        ),
        (
            "wildcard with ?",
            SearchRequest {
                recipient: "?ob@*".into(),
                ..r()
            },
            &["m1"],
        ),
        (
            "regex syntax in a pattern is literal",
            SearchRequest {
                recipient: "bob@gmail.co(m|x)*".into(),
                ..r()
            },
            &[],
        ),
        (
            "any address *@domain",
            SearchRequest {
                address: "*@partner.example".into(),
                ..r()
            },
            &["m3"],
        ),
        (
            "IPv4 network",
            SearchRequest {
                client_ip: "10.1.0.0/16".into(),
                ..r()
            },
            &["m5", "m1"],
        ),
        (
            "one IPv4 address",
            SearchRequest {
                client_ip: "10.2.0.9".into(),
                ..r()
            },
            &["m2"],
        ),
        (
            "IPv6 network",
            SearchRequest {
                client_ip: "2001:db8::/32".into(),
                ..r()
            },
            &["m3"],
        ),
        (
            "Message-ID with brackets and in another case",
            SearchRequest {
                message_id: "<one@CORP.example>".into(),
                ..r()
            },
            &["m1"],
        ),
        (
            "queue id",
            SearchRequest {
                queue_id: "4ab12".into(),
                ..r()
            },
            &["m1"],
        ),
        (
            "reply code: a recipient's",
            SearchRequest {
                reply_code: "550".into(),
                ..r()
            },
            &["m3"],
        ),
        (
            "reply class 4xx: the final reply",
            SearchRequest {
                reply_code: "4xx".into(),
                ..r()
            },
            &["m3"],
        ),
        (
            "reply class 5xx",
            SearchRequest {
                reply_code: "5xx".into(),
                ..r()
            },
            &["m4", "m3"],
        ),
        (
            "SMTP login of the client, not the agent's own",
            SearchRequest {
                auth_user: "bobby".into(),
                ..r()
            },
            &["m2"],
        ),
        (
            "the agent's smarthost login is not a client's",
            SearchRequest {
                auth_user: "relay".into(),
                ..r()
            },
            &[],
        ),
        (
            "free text over the upstream's replies",
            SearchRequest {
                text: "\"connection refused\"".into(),
                ..r()
            },
            &["m3"],
        ),
        (
            "external: an accepted recipient outside corp.example",
            SearchRequest {
                external: true,
                ..r()
            },
            &["m4", "m2", "m1"],
        ),
        (
            "internal: every accepted recipient inside (a refused one does not count)",
            SearchRequest {
                internal: true,
                ..r()
            },
            &["m5", "m3"],
        ),
        (
            "outbound",
            SearchRequest {
                direction: "outbound".into(),
                ..r()
            },
            &["m2", "m1"],
        ),
        (
            "inbound",
            SearchRequest {
                direction: "inbound".into(),
                ..r()
            },
            &["m3"],
        ),
        (
            "internal direction",
            SearchRequest {
                direction: "Internal".into(),
                ..r()
            },
            &["m5"],
        ),
        (
            "transit",
            SearchRequest {
                direction: "transit".into(),
                ..r()
            },
            &["m4"],
        ),
        (
            "oldest first",
            SearchRequest {
                ascending: true,
                ..r()
            },
            &["m1", "m2", "m3", "m4", "m5"],
        ),
        (
            "filters combine",
            SearchRequest {
                external: true,
                client_ip: "10.0.0.0/8".into(),
                ascending: true,
                ..r()
            },
            &["m1", "m2"],
        ),
    ];
    for (what, req, want) in cases {
        assert_eq!(ids(&idx, &req), want, "{what}");
    }
}

#[test]
fn a_changed_internal_domains_setting_applies_to_stored_mail() {
    let (_dir, idx) = index();
    let ext = SearchRequest {
        external: true,
        ..Default::default()
    };
    assert_eq!(ids(&idx, &ext), ["m4", "m2", "m1"]);
    idx.set_internal_domains(
        InternalDomains::new(&["corp.example", "example.com", "gmail.com"]).expect("domains"),
    );
    assert!(ids(&idx, &ext).is_empty());
}

#[test]
fn bad_values_name_their_field() {
    let (_dir, idx) = index();
    let r = SearchRequest::default;
    for (req, field, says) in [
        (
            SearchRequest {
                client_ip: "10.1.0.0/33".into(),
                ..r()
            },
            "client_ip",
            "10.1.0.0/16",
        ),
        (
            SearchRequest {
                reply_code: "6xx".into(),
                ..r()
            },
            "reply_code",
            "4xx",
        ),
        (
            SearchRequest {
                recipient_domain: "a b".into(),
                ..r()
            },
            "recipient_domain",
            "not a domain",
        ),
        (
            SearchRequest {
                recipient: "*a*b*c*d*e*f*g*h*i".into(),
                ..r()
            },
            "recipient",
            "at most 8",
        ),
        (
            SearchRequest {
                direction: "sideways".into(),
                ..r()
            },
            "direction",
            "outbound",
        ),
        (
            SearchRequest {
                external: true,
                internal: true,
                ..r()
            },
            "external",
            "one",
        ),
        (
            SearchRequest {
                queue_id: "q".repeat(2000),
                ..r()
            },
            "queue_id",
            "1024",
        ),
    ] {
        let e = idx.search(&req, 0, 10).expect_err(field).to_string();
        assert!(e.contains(&format!("`{field}`")) && e.contains(says), "{e}");
    }
    idx.set_internal_domains(InternalDomains::default());
    let e = idx
        .search(
            &SearchRequest {
                external: true,
                ..r()
            },
            0,
            10,
        )
        .expect_err("no internal domains")
        .to_string();
    assert!(e.contains("internal_domains"), "{e}");
}
