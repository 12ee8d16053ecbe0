//! Real-format Postfix 3.x lines and what each must yield.

use jiff::tz::TimeZone;
use kiroku_proto::MtaLogEvent;

use super::parse;
use crate::capture::mtalog::header::Clock;

fn clock() -> Clock {
    Clock {
        tz: TimeZone::UTC,
        now_ms: 1_796_541_290_000, // 2026-12-06T07:14:50Z
    }
}

fn p(line: &str) -> MtaLogEvent {
    let e = parse(line, &clock());
    assert_eq!(e.line, line);
    assert_eq!(e.mta, "postfix");
    e
}

#[test]
fn smtpd_lines() {
    let e = p("Dec  6 07:14:50 mx postfix/smtpd[1201]: connect from localhost[127.0.0.1]");
    assert!(e.parsed);
    assert_eq!(
        (
            e.action.as_str(),
            e.client_host.as_str(),
            e.client_ip.as_str()
        ),
        ("connect", "localhost", "127.0.0.1")
    );
    assert_eq!(
        (e.program.as_str(), e.pid, e.log_host.as_str()),
        ("postfix/smtpd", 1201, "mx")
    );
    assert_eq!(e.logged_at_ms, 1_796_541_290_000);

    let e = p(
        "Dec  6 07:14:51 mx postfix/smtpd[1201]: disconnect from localhost[127.0.0.1] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5",
    );
    assert_eq!(
        (e.action.as_str(), e.client_ip.as_str()),
        ("disconnect", "127.0.0.1")
    );
    assert_eq!(
        e.status_text,
        "ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5"
    );

    let e = p(
        "Dec  6 07:14:51 mx postfix/smtpd[1201]: lost connection after DATA from unknown[192.0.2.7]",
    );
    assert_eq!(
        (e.action.as_str(), e.client_ip.as_str()),
        ("disconnect", "192.0.2.7")
    );
    assert_eq!(e.status_text, "lost connection after DATA");

    let e = p(
        "Dec  6 07:14:50 mx postfix/smtpd[1201]: 4Q1xYz2Kq8z9Lm: client=mail.example.com[198.51.100.4], sasl_method=PLAIN, sasl_username=alice@example.com",
    );
    assert_eq!(e.action, "client");
    assert_eq!(e.queue_id, "4Q1xYz2Kq8z9Lm");
    assert_eq!(
        (e.client_host.as_str(), e.client_ip.as_str()),
        ("mail.example.com", "198.51.100.4")
    );
    assert_eq!(
        (e.sasl_method.as_str(), e.sasl_username.as_str()),
        ("PLAIN", "alice@example.com")
    );

    let e = p("Dec  6 07:14:50 mx postfix/smtpd[1201]: 3A1B2C4D5E: client=localhost[127.0.0.1]");
    assert_eq!(
        (
            e.action.as_str(),
            e.queue_id.as_str(),
            e.sasl_method.as_str()
        ),
        ("client", "3A1B2C4D5E", "")
    );
}

#[test]
fn rejects() {
    let e = p(
        "Dec  6 07:14:52 mx postfix/smtpd[1201]: NOQUEUE: reject: RCPT from unknown[192.0.2.7]: 554 5.7.1 <x@elsewhere.test>: Relay access denied; from=<spam@bad.test> to=<x@elsewhere.test> proto=ESMTP helo=<bad>",
    );
    assert_eq!(e.action, "reject");
    assert_eq!(e.queue_id, "");
    assert_eq!(e.client_ip, "192.0.2.7");
    assert_eq!(
        e.reject_reason,
        "554 5.7.1 <x@elsewhere.test>: Relay access denied"
    );
    assert_eq!(e.dsn, "5.7.1");
    assert_eq!(e.status_text, "RCPT");
    assert_eq!(e.from, "spam@bad.test");
    assert_eq!(e.to, vec!["x@elsewhere.test"]);

    let e = p(
        "Dec  6 07:14:52 mx postfix/cleanup[1300]: 3A1B2C4D5E: reject: header Subject: buy REFUSED now from localhost[127.0.0.1]; from=<a@example.com> to=<b@example.org> proto=ESMTP helo=<client.test>: 5.7.1 content refused by policy",
    );
    assert_eq!(
        (e.action.as_str(), e.queue_id.as_str()),
        ("reject", "3A1B2C4D5E")
    );
    assert_eq!(e.status_text, "header Subject: buy REFUSED now");
    assert_eq!(e.client_ip, "127.0.0.1");
    assert_eq!(e.reject_reason, "5.7.1 content refused by policy");
    assert_eq!(e.dsn, "5.7.1");
    assert_eq!(
        (e.from.as_str(), e.to.as_slice()),
        ("a@example.com", &["b@example.org".to_string()][..])
    );

    let e = p(
        "Dec  6 07:14:52 mx postfix/smtpd[1201]: NOQUEUE: reject: MAIL from localhost[127.0.0.1]: 554 5.7.1 <blocked@example.com>: Sender address rejected: sender blocked by policy; from=<blocked@example.com> proto=ESMTP helo=<client.test>",
    );
    assert_eq!(e.from, "blocked@example.com");
    assert!(e.to.is_empty());
    assert_eq!(e.status_text, "MAIL");
}

#[test]
fn queue_lifecycle() {
    let e = p(
        "Dec  6 07:14:50 mx postfix/cleanup[1300]: 3A1B2C4D5E: message-id=<20261206.1@client.test>",
    );
    assert_eq!(
        (e.action.as_str(), e.message_id.as_str()),
        ("message_id", "20261206.1@client.test")
    );

    let e = p(
        "Dec  6 07:14:50 mx postfix/qmgr[1100]: 3A1B2C4D5E: from=<a@example.com>, size=1234, nrcpt=2 (queue active)",
    );
    assert_eq!(
        (e.action.as_str(), e.from.as_str(), e.size, e.nrcpt),
        ("from", "a@example.com", 1234, 2)
    );

    let e = p(
        "Dec  6 07:14:50 mx postfix/qmgr[1100]: 3A1B2C4D5E: from=<>, size=3000, nrcpt=1 (queue active)",
    );
    assert_eq!((e.action.as_str(), e.from.as_str()), ("from", ""));

    let e = p("Dec  6 07:14:50 mx postfix/pickup[1101]: 3A1B2C4D5E: uid=0 from=<root>");
    assert_eq!((e.action.as_str(), e.from.as_str()), ("from", "root"));

    let e = p("Dec  6 07:14:53 mx postfix/qmgr[1100]: 3A1B2C4D5E: removed");
    assert_eq!(
        (e.action.as_str(), e.queue_id.as_str()),
        ("removed", "3A1B2C4D5E")
    );

    let e = p(
        "Dec  6 07:14:53 mx postfix/qmgr[1100]: 3A1B2C4D5E: from=<a@example.com>, status=expired, returned to sender",
    );
    assert_eq!(
        (e.action.as_str(), e.status.as_str()),
        ("expired", "expired")
    );
    assert_eq!(e.status_text, "returned to sender");

    let e = p(
        "Dec  6 07:14:53 mx postfix/bounce[1400]: 3A1B2C4D5E: sender non-delivery notification: 5B6C7D8E9F",
    );
    assert_eq!(e.action, "notification");
    assert_eq!(
        e.status_text,
        "sender non-delivery notification: 5B6C7D8E9F"
    );
}

#[test]
fn deliveries() {
    let e = p(
        "Dec  6 07:14:53 mx postfix/smtp[1500]: 3A1B2C4D5E: to=<b@example.org>, relay=mx.example.org[192.0.2.1]:25, delay=3.2, delays=0.1/0.02/0.5/2.6, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 9F8E7D)",
    );
    assert_eq!(e.action, "delivery");
    assert_eq!(e.to, vec!["b@example.org"]);
    assert_eq!(e.relay, "mx.example.org[192.0.2.1]:25");
    assert_eq!(
        (e.delay_ms, e.delays.as_str(), e.dsn.as_str()),
        (3200, "0.1/0.02/0.5/2.6", "2.0.0")
    );
    assert_eq!(
        (e.status.as_str(), e.status_text.as_str()),
        ("sent", "250 2.0.0 Ok: queued as 9F8E7D")
    );

    let e = p(
        "Dec  6 07:14:53 mx postfix/smtp[1500]: 3A1B2C4D5E: to=<b@example.org>, orig_to=<alias@example.org>, relay=none, delay=30, delays=0.01/0/30/0, dsn=4.4.1, status=deferred (connect to 127.0.0.1[127.0.0.1]:9: Connection refused)",
    );
    assert_eq!(
        (e.status.as_str(), e.orig_to.as_str(), e.relay.as_str()),
        ("deferred", "alias@example.org", "none")
    );
    assert_eq!(
        e.status_text,
        "connect to 127.0.0.1[127.0.0.1]:9: Connection refused"
    );
    assert_eq!(e.delay_ms, 30_000);

    let e = p(
        "Dec  6 07:14:53 mx postfix/smtp[1500]: 3A1B2C4D5E: to=<nobody@example.org>, relay=mx.example.org[192.0.2.1]:25, delay=0.5, delays=0.1/0/0.2/0.2, dsn=5.1.1, status=bounced (host mx.example.org[192.0.2.1] said: 550 5.1.1 <nobody@example.org>: Recipient address rejected: User unknown (in reply to RCPT TO command))",
    );
    assert_eq!((e.status.as_str(), e.dsn.as_str()), ("bounced", "5.1.1"));
    assert!(
        e.status_text.ends_with("(in reply to RCPT TO command)"),
        "{}",
        e.status_text
    );

    let e = p(
        "Dec  6 07:14:53 mx postfix/local[1501]: 3A1B2C4D5E: to=<root@mx.example.org>, orig_to=<root>, relay=local, delay=0.03, delays=0.01/0.01/0/0.01, dsn=2.0.0, status=sent (delivered to mailbox)",
    );
    assert_eq!(
        (e.relay.as_str(), e.status.as_str(), e.delay_ms),
        ("local", "sent", 30)
    );

    let e = p(
        "Dec  6 07:14:53 mx postfix/lmtp[1502]: 3A1B2C4D5E: to=<u@example.org>, relay=mail.example.org[private/dovecot-lmtp], delay=0.1, delays=0/0/0/0.1, dsn=2.0.0, status=sent (250 2.0.0 <u@example.org> Saved)",
    );
    assert_eq!(e.relay, "mail.example.org[private/dovecot-lmtp]");

    let e = p(
        "Dec  6 07:14:53 mx postfix/error[1503]: 3A1B2C4D5E: to=<x@example.net>, relay=none, delay=0.2, delays=0.1/0/0/0.1, dsn=4.3.2, status=deferred (delivery temporarily suspended: connect to 127.0.0.1[127.0.0.1]:9: Connection refused)",
    );
    assert_eq!(
        (e.program.as_str(), e.status.as_str()),
        ("postfix/error", "deferred")
    );
}

#[test]
fn auth_tls_and_other() {
    let e = p(
        "Dec  6 07:14:50 mx postfix/smtpd[1201]: warning: unknown[192.0.2.9]: SASL LOGIN authentication failed: authentication failure",
    );
    assert_eq!(e.action, "auth_failed");
    assert_eq!(
        (
            e.client_host.as_str(),
            e.client_ip.as_str(),
            e.sasl_method.as_str()
        ),
        ("unknown", "192.0.2.9", "LOGIN")
    );
    assert_eq!(e.status_text, "authentication failure");

    let e = p(
        "Dec  6 07:14:50 mx postfix/smtpd[1201]: warning: localhost[127.0.0.1]: SASL PLAIN authentication failed: authentication failure, sasl_username=bob@kiroku.test",
    );
    assert_eq!(
        (e.action.as_str(), e.sasl_username.as_str()),
        ("auth_failed", "bob@kiroku.test")
    );

    let e = p(
        "Dec  6 07:14:50 mx postfix/smtpd[1201]: warning: hostname nowhere.test does not resolve to address 192.0.2.5",
    );
    assert_eq!(e.action, "warning");
    assert_eq!(
        e.status_text,
        "hostname nowhere.test does not resolve to address 192.0.2.5"
    );

    let e = p(
        "Dec  6 07:14:50 mx postfix/smtpd[1201]: Anonymous TLS connection established from localhost[127.0.0.1]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature ECDSA (P-256) server-digest SHA256",
    );
    assert_eq!(
        (e.action.as_str(), e.client_ip.as_str()),
        ("tls", "127.0.0.1")
    );
    assert_eq!(
        e.tls,
        "Anonymous TLSv1.3 TLS_AES_256_GCM_SHA384 (256/256 bits)"
    );

    let e = p(
        "Dec  6 07:14:50 mx postfix/smtp[1500]: Trusted TLS connection established to mx.example.org[192.0.2.1]:25: TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits)",
    );
    assert_eq!(
        (e.relay.as_str(), e.tls.as_str()),
        (
            "mx.example.org[192.0.2.1]:25",
            "Trusted TLSv1.2 ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits)"
        )
    );

    let e = p(
        "Dec  6 07:14:50 mx postfix/master[1000]: daemon started -- version 3.7.11, configuration /etc/postfix",
    );
    assert!(e.parsed);
    assert_eq!((e.action.as_str(), e.queue_id.as_str()), ("other", ""));

    let e = p(
        "Dec  6 07:14:50 mx postfix/anvil[1001]: statistics: max connection rate 1/60s for (smtp:127.0.0.1) at Dec  6 07:10:00",
    );
    assert_eq!((e.action.as_str(), e.queue_id.as_str()), ("other", ""));

    let e = p(
        "Dec  6 07:14:50 mx postfix/smtp[1500]: 3A1B2C4D5E: host mx.example.org[192.0.2.1] said: 451 4.7.1 try later (in reply to RCPT TO command)",
    );
    assert_eq!(
        (e.action.as_str(), e.queue_id.as_str()),
        ("other", "3A1B2C4D5E")
    );
}

#[test]
fn unparsed_lines_are_kept() {
    for line in [
        "",
        "random text",
        "Dec  6 07:14:50 mx dovecot[55]: imap-login: Login: user=<u>",
        "Dec  6 07:14:50 mx",
        "\u{fffd}\u{fffd} binary",
    ] {
        let e = p(line);
        assert!(!e.parsed, "{line}");
        assert_eq!(e.action, "");
    }
}
