//! The relay in front of a real Exim 4 (STARTTLS and implicit TLS, AUTH
//! PLAIN and LOGIN after TLS, ACL refusals at MAIL, RCPT and end-of-data),
//! driven by swaks, msmtp, Python smtplib and hand-written SMTP. What Exim
//! queued is read back with `exim -Mvh/-Mvb` by the queue id the relay
//! recorded (Exim's `250 OK id=…`). Exim advertises CHUNKING and
//! PIPECONNECT, which the relay does not support end to end: the client
//! must not see them.

use std::process::Command;
use std::time::Duration;

use kiroku_proto::{Outcome, SearchRequest};
use kiroku_tests::mta::{self, Exim, message, one, swaks};
use kiroku_tests::{Env, Mode, Proc, Talk, email, free_port, run_client, send_mail};

fn relay_agent(
    env: &Env,
    ex: &Exim,
    name: &str,
    port: u16,
    cfg: &str,
) -> anyhow::Result<(Proc, u16)> {
    let smtp = free_port();
    let cfg = format!(
        "upstream_ca = {:?}\nupstream_tls_name = {:?}\n{cfg}",
        ex.cert,
        mta::TLS_NAME
    );
    let agent = env.start_agent_in_smtp(name, smtp, &Mode::Relay(port), &cfg)?;
    Ok((agent, smtp))
}

#[tokio::test(flavor = "multi_thread")]
async fn exim_upstream_auth_refusals_and_unsupported_extensions_hidden() -> anyhow::Result<()> {
    kiroku_tests::need_peer!(Exim);
    let env = Env::new()?;
    let ex = Exim::start(&env)?;
    let _collector = env.start_collector()?;
    let (_agent, smtp) = relay_agent(
        &env,
        &ex,
        "pc-exim",
        ex.port,
        "upstream_tls = \"required\"\n",
    )?;

    // AUTH shows because the relay finished STARTTLS with Exim first;
    // Exim's CHUNKING and PIPECONNECT are not passed on.
    let (mut t, (code, _)) = Talk::connect(smtp)?;
    assert_eq!(code, 220);
    let (code, ehlo) = t.cmd("EHLO desk.sender.test")?;
    assert_eq!(code, 250, "{ehlo}");
    assert!(ehlo.contains("AUTH PLAIN LOGIN"), "{ehlo}");
    assert!(ehlo.contains("PIPELINING"), "{ehlo}");
    assert!(ehlo.contains("SIZE 20971520"), "Exim's limit: {ehlo}");
    for hidden in ["CHUNKING", "PIPECONNECT", "STARTTLS"] {
        assert!(!ehlo.contains(hidden), "{hidden} offered: {ehlo}");
    }
    t.cmd("QUIT")?;

    // swaks with AUTH PLAIN to a domain Exim relays only for logged-in users.
    let (ok, out) = run_client(
        &mut swaks(
            smtp,
            "carol@other.test",
            Some(("PLAIN", mta::USER, mta::PASSWORD)),
        ),
        Some(&message("exim-swaks", "carol@other.test")),
    )?;
    assert!(ok && out.contains("250 OK id="), "{out}");

    // msmtp with AUTH LOGIN.
    let (ok, out) = run_client(
        Command::new("msmtp")
            .args(["--host=127.0.0.1", &format!("--port={smtp}")])
            .args([
                "--tls=off",
                "--auth=login",
                &format!("--user={}", mta::USER),
            ])
            .arg(format!("--passwordeval=echo {}", mta::PASSWORD))
            .args(["--from=alice@sender.test", "dave@other.test"]),
        Some(&message("exim-msmtp", "dave@other.test")),
    )?;
    assert!(ok, "msmtp: {out}");

    // A wrong password: Exim's 535 reaches the client verbatim.
    let (ok, out) = run_client(
        &mut swaks(
            smtp,
            "carol@other.test",
            Some(("LOGIN", mta::USER, "wrong")),
        ),
        Some(&message("exim-bad-password", "carol@other.test")),
    )?;
    assert!(
        !ok && out.contains("535 Incorrect authentication data"),
        "{out}"
    );

    for (subject, mech) in [("exim-swaks", "PLAIN"), ("exim-msmtp", "LOGIN")] {
        let m = one(&env, subject).await?;
        assert_eq!(m.outcome, Outcome::Delivered as i32, "{subject}: {m:?}");
        assert_eq!(m.auth_user, mta::USER, "{subject}");
        assert_eq!(m.auth_mechanism, mech, "{subject}");
        assert!(m.upstream_tls.starts_with("TLSv1_"), "{}", m.upstream_tls);
        assert!(!m.upstream_tls.contains("unverified"));
        assert!(
            m.upstream_reply.contains(&m.upstream_queue_id) && !m.upstream_queue_id.is_empty(),
            "{subject}: {}",
            m.upstream_reply
        );
        let queued = ex.queued(&m.upstream_queue_id)?;
        assert!(queued.contains(&format!("Subject: {subject}")), "{queued}");
        assert!(
            queued.contains("\n.leading dot line"),
            "dot-stuffing undone: {queued}"
        );
    }

    // Partial RCPT rejection: the good recipient gets the mail, the
    // refusal is recorded per recipient.
    let sent = send_mail(
        smtp,
        "alice@sender.test",
        &["ok@example.test", mta::REFUSED_RCPT],
        &message("exim-partial", "ok@example.test"),
    )?;
    assert_eq!(sent.code, 250, "{sent:?}");
    let m = one(&env, "exim-partial").await?;
    assert_eq!(m.outcome, Outcome::Delivered as i32);
    let bad = m
        .rcpt_to
        .iter()
        .find(|r| r.address == mta::REFUSED_RCPT)
        .expect("refused recipient recorded");
    assert_eq!(bad.reply_code, 550, "{bad:?}");
    assert!(bad.reply.contains("5.1.1 no such user here"), "{bad:?}");
    assert_eq!(m.recipient_count, 1);
    assert!(
        ex.queued(&m.upstream_queue_id)?
            .contains("Subject: exim-partial")
    );

    // Content refused by the DATA ACL after end-of-data.
    let subject = format!("{} exim", mta::REFUSED_SUBJECT);
    let sent = send_mail(
        smtp,
        "alice@sender.test",
        &["ok@example.test"],
        &message(&subject, "ok@example.test"),
    )?;
    assert_eq!(sent.code, 550, "{sent:?}");
    assert!(sent.reply.contains("content refused by policy"), "{sent:?}");
    let m = one(&env, mta::REFUSED_SUBJECT).await?;
    assert_eq!(m.outcome, Outcome::Rejected as i32);
    assert_eq!(m.ended_at, "END-OF-DATA");
    assert!(!m.raw_sha256.is_empty(), "the refused message is kept");

    // By hand: a sender refused at MAIL (Exim checks it there, unlike the
    // Postfix setup), relay denied at RCPT, then two pipelined
    // transactions on the same connection.
    let (mut t, _) = Talk::connect(smtp)?;
    t.cmd("EHLO desk.sender.test")?;
    let (code, text) = t.cmd(&format!("MAIL FROM:<{}>", mta::REFUSED_SENDER))?;
    assert_eq!(code, 550, "{text}");
    assert!(text.contains("5.7.1 sender blocked by policy"), "{text}");
    assert_eq!(t.cmd("MAIL FROM:<alice@sender.test>")?.0, 250);
    let (code, text) = t.cmd("RCPT TO:<stranger@other.test>")?;
    assert_eq!(code, 550, "{text}");
    assert!(text.contains("relay not permitted"), "{text}");
    assert_eq!(t.cmd("RSET")?.0, 250);
    let mut batch = Vec::new();
    for n in 1..=2 {
        batch.extend_from_slice(
            format!(
                "MAIL FROM:<alice@sender.test>\r\nRCPT TO:<ok@example.test>\r\nDATA\r\nSubject: exim-pipelined-{n}\r\n\r\nbody {n}\r\n.\r\n"
            )
            .as_bytes(),
        );
    }
    batch.extend_from_slice(b"QUIT\r\n");
    t.send(&batch)?;
    let mut codes = Vec::new();
    for _ in 0..9 {
        codes.push(t.reply()?.0);
    }
    assert_eq!(codes, [250, 250, 354, 250, 250, 250, 354, 250, 221]);
    for n in 1..=2 {
        let m = one(&env, &format!("exim-pipelined-{n}")).await?;
        assert_eq!(m.outcome, Outcome::Delivered as i32);
        assert!(
            ex.queued(&m.upstream_queue_id)?
                .contains(&format!("body {n}"))
        );
    }
    let refused_sender = env
        .wait_for(
            SearchRequest {
                sender: mta::REFUSED_SENDER.into(),
                ..Default::default()
            },
            1,
            Duration::from_secs(30),
        )
        .await?;
    let m = email(&refused_sender[0]);
    assert_eq!(m.outcome, Outcome::Rejected as i32, "{m:?}");
    assert_eq!(m.reply_code, 550);
    let agent_log = std::fs::read_to_string(env.path().join("agent-pc-exim.log"))?;
    assert!(!agent_log.contains(mta::PASSWORD) && !agent_log.contains("wrong"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn implicit_tls_to_exim_with_the_agents_own_login() -> anyhow::Result<()> {
    kiroku_tests::need_peer!(Exim);
    let env = Env::new()?;
    let ex = Exim::start(&env)?;
    let _collector = env.start_collector()?;
    let pw = env.path().join("smarthost.pw");
    std::fs::write(&pw, format!("{}\n", mta::PASSWORD))?;
    let cfg = format!(
        "upstream_tls = \"implicit\"\n[smtp.upstream_auth]\nusername = {:?}\npassword_file = {:?}\n",
        mta::USER,
        pw
    );
    let (_agent, smtp) = relay_agent(&env, &ex, "pc-exim-smarthost", ex.smtps, &cfg)?;
    let sent = send_mail(
        smtp,
        "alice@sender.test",
        &["frank@other.test"],
        &message("exim-smarthost", "frank@other.test"),
    )?;
    assert_eq!(sent.code, 250, "{sent:?}");
    let m = one(&env, "exim-smarthost").await?;
    assert_eq!(m.outcome, Outcome::Delivered as i32);
    assert_eq!(m.auth_user, mta::USER);
    assert_eq!(m.auth_mechanism, "agent-credentials");
    assert!(m.upstream_tls.starts_with("TLSv1_"), "{}", m.upstream_tls);
    assert!(
        ex.queued(&m.upstream_queue_id)?
            .contains("Subject: exim-smarthost")
    );
    Ok(())
}
