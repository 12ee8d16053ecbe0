//! The relay in front of a real OpenSMTPD (plain SMTP: Debian 12's
//! OpenSMTPD cannot do TLS with OpenSSL 3). OpenSMTPD does not offer
//! PIPELINING and drops a client that pipelines anyway ("500 5.5.1 Invalid
//! command: Pipelining not supported"), so a client pipelining to the relay
//! proves the relay sends the upstream one command at a time when it was
//! not offered pipelining. What OpenSMTPD queued is read back from its
//! spool by the queue id the relay recorded.

use kiroku_proto::Outcome;
use kiroku_tests::mta::{OpenSmtpd, one};
use kiroku_tests::{Env, Mode, Talk, free_port, send_mail};

/// What OpenSMTPD queued, without its Received: header, with CRLF line
/// ends as sent (it adds nothing else when Date and Message-ID are there).
fn as_sent(queued: &str) -> String {
    let mut lines = queued.split('\n').peekable();
    // The Received: header and its folded continuation lines.
    lines.next();
    while lines.peek().is_some_and(|l| l.starts_with([' ', '\t'])) {
        lines.next();
    }
    lines.collect::<Vec<_>>().join("\r\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn opensmtpd_upstream_without_pipelining_gets_one_command_at_a_time() -> anyhow::Result<()> {
    kiroku_tests::need_peer!(OpenSmtpd);
    let env = Env::new()?;
    let os = OpenSmtpd::start(&env)?;
    let _collector = env.start_collector()?;
    let smtp = free_port();
    let _agent = env.start_agent_in_smtp(
        "pc-opensmtpd",
        smtp,
        &Mode::Relay(os.port),
        "upstream_tls = \"off\"\n",
    )?;

    // The relay offers PIPELINING to its clients (it reads their
    // commands one by one) and OpenSMTPD's SIZE.
    let (mut t, (code, _)) = Talk::connect(smtp)?;
    assert_eq!(code, 220);
    let (code, ehlo) = t.cmd("EHLO desk.sender.test")?;
    assert_eq!(code, 250, "{ehlo}");
    assert!(ehlo.contains("PIPELINING"), "{ehlo}");
    assert!(ehlo.contains("SIZE 36700160"), "{ehlo}");

    // Two transactions and QUIT in one write, the second with a
    // recipient OpenSMTPD refuses: replies in order, one per command.
    let mut batch = Vec::new();
    for (n, extra) in [(1, ""), (2, "RCPT TO:<stranger@other.test>\r\n")] {
        batch.extend_from_slice(
            format!(
                "MAIL FROM:<alice@sender.test>\r\nRCPT TO:<ok@example.test>\r\n{extra}DATA\r\nSubject: os-pipelined-{n}\r\nMessage-ID: <os-{n}@sender.test>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\nbody {n}\r\n..leading dot\r\n.\r\n"
            )
            .as_bytes(),
        );
    }
    batch.extend_from_slice(b"QUIT\r\n");
    t.send(&batch)?;
    let mut replies = Vec::new();
    for _ in 0..10 {
        replies.push(t.reply()?);
    }
    let codes: Vec<u16> = replies.iter().map(|r| r.0).collect();
    assert_eq!(
        codes,
        [250, 250, 354, 250, 250, 250, 550, 354, 250, 221],
        "{replies:?}"
    );
    assert!(
        replies[6].1.contains("Invalid recipient"),
        "OpenSMTPD's refusal verbatim: {replies:?}"
    );

    for n in 1..=2 {
        let m = one(&env, &format!("os-pipelined-{n}")).await?;
        assert_eq!(m.outcome, Outcome::Delivered as i32, "{m:?}");
        assert_eq!(m.upstream_queue_id.len(), 8, "{}", m.upstream_reply);
        let queued = as_sent(&os.queued(&m.upstream_queue_id)?);
        assert_eq!(
            queued,
            format!(
                "Subject: os-pipelined-{n}\r\nMessage-ID: <os-{n}@sender.test>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\nbody {n}\r\n.leading dot\r\n"
            ),
            "the message as the client meant it (dot-stuffing undone)"
        );
        if n == 2 {
            assert_eq!(m.recipient_count, 1);
            let bad = m
                .rcpt_to
                .iter()
                .find(|r| r.address == "stranger@other.test")
                .expect("refused recipient recorded");
            assert_eq!(bad.reply_code, 550, "{bad:?}");
        }
    }

    // A plain client too, and nothing of the above was cut as pipelining.
    let sent = send_mail(
        smtp,
        "alice@sender.test",
        &["ok@example.test"],
        b"Subject: os-smtplib\r\n\r\nhello\r\n",
    )?;
    assert_eq!(sent.code, 250, "{sent:?}");
    assert_eq!(
        one(&env, "os-smtplib").await?.outcome,
        Outcome::Delivered as i32
    );
    let log = os.log();
    assert!(!log.contains("Pipelining not supported"), "{log}");
    Ok(())
}
