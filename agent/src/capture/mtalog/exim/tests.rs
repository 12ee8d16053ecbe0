//! Real-format Exim 4.9x mainlog lines and what each must yield.

use jiff::tz::TimeZone;
use kiroku_proto::MtaLogEvent;

use super::{exim_duration_ms, parse};
use crate::capture::mtalog::header::Clock;

fn p(line: &str) -> MtaLogEvent {
    let clock = Clock {
        tz: TimeZone::UTC,
        now_ms: 1_796_541_290_000,
    };
    let e = parse(line, &clock);
    assert_eq!((e.line.as_str(), e.mta.as_str()), (line, "exim"));
    e
}

#[test]
fn arrivals() {
    let e = p(
        "2026-12-06 07:14:50 1tJxyz-000Abc-Q1 <= alice@sender.test H=(desk.sender.test) [127.0.0.1] P=esmtpsa X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=no A=plain:alice S=612 id=via-swaks@sender.test",
    );
    assert!(e.parsed);
    assert_eq!(e.logged_at_ms, 1_796_541_290_000);
    assert_eq!(
        (e.queue_id.as_str(), e.action.as_str()),
        ("1tJxyz-000Abc-Q1", "received")
    );
    assert_eq!(e.from, "alice@sender.test");
    assert_eq!(
        (e.client_host.as_str(), e.client_ip.as_str()),
        ("desk.sender.test", "127.0.0.1")
    );
    assert_eq!(
        (e.sasl_method.as_str(), e.sasl_username.as_str()),
        ("plain", "alice")
    );
    assert_eq!(
        (e.size, e.message_id.as_str()),
        (612, "via-swaks@sender.test")
    );
    assert_eq!(e.tls, "TLS1.3:TLS_AES_256_GCM_SHA384:256");

    // +pid, +millisec, log_timezone, +subject, +received_recipients, 4.97 ids.
    let e = p(
        "2026-12-06 16:14:50.125 +0900 [4242] 1tJxyz-00000000Abc-Q1AB <= <> H=mx.example.org (helo.example.org) [192.0.2.1]:40000 P=esmtp S=3000 id=<x@y> T=\"Re: \\\"quoted\\\" subject\" for bob@example.org carol@example.org",
    );
    assert_eq!((e.logged_at_ms, e.pid), (1_796_541_290_125, 4242));
    assert_eq!(e.queue_id, "1tJxyz-00000000Abc-Q1AB");
    assert_eq!(e.from, "");
    assert_eq!(
        (e.client_host.as_str(), e.client_ip.as_str()),
        ("mx.example.org", "192.0.2.1")
    );
    assert_eq!(e.message_id, "x@y");
    assert_eq!(e.status_text, "Re: \"quoted\" subject");
    assert_eq!(e.to, vec!["bob@example.org", "carol@example.org"]);
    assert_eq!(e.nrcpt, 2);
}

#[test]
fn deliveries() {
    let e = p(
        "2026-12-06 07:14:53 1tJxyz-000Abc-Q1 => bob@example.org R=dnslookup T=remote_smtp H=mx.example.org [192.0.2.1] X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=yes C=\"250 2.0.0 Ok: queued as 4ABCDEF\" QT=3s",
    );
    assert_eq!((e.action.as_str(), e.status.as_str()), ("delivery", "sent"));
    assert_eq!(e.to, vec!["bob@example.org"]);
    assert_eq!(e.relay, "mx.example.org [192.0.2.1]");
    assert_eq!(e.status_text, "250 2.0.0 Ok: queued as 4ABCDEF");
    assert_eq!((e.dsn.as_str(), e.delay_ms), ("2.0.0", 3000));

    let e = p(
        "2026-12-06 07:14:53 1tJxyz-000Abc-Q1 -> carol@example.org <alias@example.org> R=dnslookup T=remote_smtp H=mx.example.org [192.0.2.1]:25 C=\"250 OK\" QT=1m2.5s DT=0.2s",
    );
    assert_eq!(
        (e.orig_to.as_str(), e.status.as_str(), e.delay_ms),
        ("alias@example.org", "sent", 62_500)
    );

    let e = p(
        "2026-12-06 07:14:53 1tJxyz-000Abc-Q1 ** nobody@example.org R=dnslookup T=remote_smtp H=mx.example.org [192.0.2.1]: SMTP error from remote mail server after RCPT TO:<nobody@example.org>: 550 5.1.1 User unknown",
    );
    assert_eq!((e.status.as_str(), e.dsn.as_str()), ("bounced", "5.1.1"));
    assert_eq!(
        e.status_text,
        "SMTP error from remote mail server after RCPT TO:<nobody@example.org>: 550 5.1.1 User unknown"
    );
    assert_eq!(e.relay, "mx.example.org [192.0.2.1]");

    let e = p(
        "2026-12-06 07:14:53 1tJxyz-000Abc-Q1 == bob@example.org R=dnslookup T=remote_smtp defer (-44) H=mx.example.org [192.0.2.1]: SMTP error from remote mail server after RCPT TO:<bob@example.org>: 451 4.7.1 try later",
    );
    assert_eq!((e.status.as_str(), e.dsn.as_str()), ("deferred", "4.7.1"));

    let e = p(
        "2026-12-06 07:14:53 1tJxyz-000Abc-Q1 == bob@example.org R=dnslookup T=remote_smtp defer (111): Connection refused",
    );
    assert_eq!(
        (e.status.as_str(), e.status_text.as_str(), e.relay.as_str()),
        ("deferred", "Connection refused", "remote_smtp")
    );

    let e = p("2026-12-06 07:14:53 1tJxyz-000Abc-Q1 ** bob@example.org: retry timeout exceeded");
    assert_eq!(e.status, "expired");

    let e = p("2026-12-06 07:14:53 1tJxyz-000Abc-Q1 Completed QT=4s");
    assert_eq!(
        (e.action.as_str(), e.queue_id.as_str()),
        ("removed", "1tJxyz-000Abc-Q1")
    );
}

#[test]
fn rejects_auth_connections() {
    let e = p(
        "2026-12-06 07:14:50 H=(desk.sender.test) [127.0.0.1] F=<alice@sender.test> rejected RCPT <nobody@example.test>: 5.1.1 no such user here",
    );
    assert_eq!((e.action.as_str(), e.queue_id.as_str()), ("reject", ""));
    assert_eq!(
        (e.client_host.as_str(), e.client_ip.as_str()),
        ("desk.sender.test", "127.0.0.1")
    );
    assert_eq!(
        (e.from.as_str(), e.to.as_slice()),
        (
            "alice@sender.test",
            &["nobody@example.test".to_string()][..]
        )
    );
    assert_eq!(
        (
            e.reject_reason.as_str(),
            e.dsn.as_str(),
            e.status_text.as_str()
        ),
        ("5.1.1 no such user here", "5.1.1", "RCPT")
    );

    let e = p(
        "2026-12-06 07:14:50 H=(desk.sender.test) [127.0.0.1] rejected MAIL <blocked@sender.test>: 5.7.1 sender blocked by policy",
    );
    assert_eq!(
        (e.from.as_str(), e.status_text.as_str()),
        ("blocked@sender.test", "MAIL")
    );

    let e = p(
        "2026-12-06 07:14:50 1tJxyz-000Abc-Q1 H=(desk.sender.test) [127.0.0.1] X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=no A=plain:alice F=<alice@sender.test> rejected after DATA: 5.7.1 content refused by policy",
    );
    assert_eq!(
        (
            e.action.as_str(),
            e.queue_id.as_str(),
            e.status_text.as_str()
        ),
        ("reject", "1tJxyz-000Abc-Q1", "after DATA")
    );
    assert_eq!(e.sasl_username, "alice");

    let e = p(
        "2026-12-06 07:14:50 H=(x) [192.0.2.7] F=<a@b> temporarily rejected RCPT <c@d>: greylisted",
    );
    assert_eq!(
        (e.action.as_str(), e.status_text.as_str()),
        ("reject", "temporarily RCPT")
    );

    let e = p(
        "2026-12-06 07:14:50 plain authenticator failed for (desk.sender.test) [127.0.0.3]: 535 Incorrect authentication data (set_id=alice)",
    );
    assert_eq!(e.action, "auth_failed");
    assert_eq!(
        (
            e.sasl_method.as_str(),
            e.sasl_username.as_str(),
            e.client_ip.as_str()
        ),
        ("plain", "alice", "127.0.0.3")
    );
    assert_eq!(e.status_text, "535 Incorrect authentication data");

    let e = p(
        "2026-12-06 07:14:50 SMTP connection from (desk.sender.test) [127.0.0.1]:40000 I=[127.0.0.1]:25 (TCP/IP connection count = 1)",
    );
    assert_eq!(
        (e.action.as_str(), e.client_ip.as_str()),
        ("connect", "127.0.0.1")
    );
    let e = p("2026-12-06 07:14:50 SMTP connection from (desk.sender.test) [127.0.0.1] lost");
    assert_eq!(
        (e.action.as_str(), e.status_text.as_str()),
        ("disconnect", "lost")
    );
    let e = p("2026-12-06 07:14:50 SMTP connection from [127.0.0.1]:40000 closed by QUIT");
    assert_eq!(
        (e.action.as_str(), e.client_host.as_str()),
        ("disconnect", "")
    );

    let e = p(
        "2026-12-06 07:14:50 exim 4.96 daemon started: pid=123, no queue runs, listening for SMTP on [127.0.0.1]:2525",
    );
    assert!(e.parsed);
    assert_eq!(e.action, "other");
}

#[test]
fn unparsed_and_durations() {
    for line in [
        "",
        "junk",
        "2026-13-06 07:14:50 x",
        "Dec  6 07:14:50 mx postfix/smtpd[1]: connect",
    ] {
        let e = p(line);
        assert!(!e.parsed, "{line}");
    }
    assert_eq!(exim_duration_ms("1d2h"), Some(93_600_000));
    assert_eq!(exim_duration_ms("0.5s"), Some(500));
    assert_eq!(exim_duration_ms("3x"), None);
}
