//! The relay in front of a real Postfix (STARTTLS, smtps, Cyrus SASL,
//! access maps, header checks), driven by real clients: swaks, msmtp,
//! curl, Python smtplib and hand-written SMTP for exact protocol checks.
//! What Postfix queued is read back with `postcat` by the queue id the
//! relay recorded.

use std::process::Command;
use std::time::Duration;

use kiroku_proto::{Outcome, SearchRequest};
use kiroku_tests::mta::{self, Postfix, message, one, swaks};
use kiroku_tests::{Env, Mode, Proc, Talk, email, free_port, run_client, send_mail};

/// Agent relaying to `pf` with TLS verified against Postfix's certificate.
fn relay_agent(env: &Env, pf: &Postfix, name: &str, extra: &str) -> anyhow::Result<(Proc, u16)> {
    let smtp = free_port();
    let cfg = format!(
        "upstream_tls = \"required\"\nupstream_ca = {:?}\nupstream_tls_name = {:?}\n{extra}",
        pf.cert,
        mta::TLS_NAME
    );
    let agent = env.start_agent_in_smtp(name, smtp, &Mode::Relay(pf.port), &cfg)?;
    Ok((agent, smtp))
}

fn queue_id_in(transcript: &str) -> Option<String> {
    let i = transcript.find("queued as ")?;
    Some(
        transcript[i + 10..]
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_through_the_relay_to_postfix_with_swaks_msmtp_and_curl() -> anyhow::Result<()> {
    kiroku_tests::need_peer!(Postfix);
    let env = Env::new()?;
    let pf = Postfix::start(&env)?;
    let _collector = env.start_collector()?;
    let (_agent, smtp) = relay_agent(&env, &pf, "pc-auth", "")?;

    // The client's EHLO reply already shows AUTH: Postfix offers it only
    // after STARTTLS, so the relay finished STARTTLS upstream first.
    let (mut t, (code, _)) = Talk::connect(smtp)?;
    assert_eq!(code, 220);
    let (code, ehlo) = t.cmd("EHLO desk.sender.test")?;
    assert_eq!(code, 250, "{ehlo}");
    assert!(ehlo.contains("AUTH PLAIN LOGIN"), "{ehlo}");
    assert!(ehlo.contains("PIPELINING"), "{ehlo}");
    assert!(
        ehlo.contains("SIZE 20480000"),
        "upstream's smaller limit: {ehlo}"
    );
    assert!(
        !ehlo.contains("CHUNKING") && !ehlo.contains("STARTTLS"),
        "{ehlo}"
    );
    // Cancel with `*`: one 501 from Postfix, and still in step after.
    assert_eq!(t.cmd("AUTH LOGIN")?.0, 334);
    let (code, text) = t.cmd("*")?;
    assert_eq!(code, 501, "{text}");
    assert_eq!(t.cmd("NOOP")?.0, 250);
    t.cmd("QUIT")?;

    // swaks, AUTH PLAIN, to a domain Postfix relays only for logged-in users.
    let (ok, out) = run_client(
        &mut swaks(
            smtp,
            "carol@other.test",
            Some(("PLAIN", mta::USER, mta::PASSWORD)),
        ),
        Some(&message("via-swaks", "carol@other.test")),
    )?;
    assert!(ok, "{out}");
    let swaks_qid = queue_id_in(&out).expect("queue id in swaks transcript");
    assert!(!pf.log().contains(mta::PASSWORD), "no secret in logs");

    // msmtp, AUTH LOGIN.
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
        Some(&message("via-msmtp", "dave@other.test")),
    )?;
    assert!(ok, "msmtp: {out}");

    // curl smtp://, its default mechanism choice.
    let mut f = tempfile::NamedTempFile::new()?;
    std::io::Write::write_all(&mut f, &message("via-curl", "erin@other.test"))?;
    let (ok, out) = run_client(
        Command::new("curl")
            .args(["-sS", &format!("smtp://127.0.0.1:{smtp}/desk.sender.test")])
            .args([
                "--mail-from",
                "alice@sender.test",
                "--mail-rcpt",
                "erin@other.test",
            ])
            .args(["--user", &format!("{}:{}", mta::USER, mta::PASSWORD)])
            .arg("--upload-file")
            .arg(f.path()),
        None,
    )?;
    assert!(ok, "curl: {out}");

    // A wrong password: Postfix's 535 reaches the client verbatim.
    let (ok, out) = run_client(
        &mut swaks(
            smtp,
            "carol@other.test",
            Some(("LOGIN", mta::USER, "wrong")),
        ),
        Some(&message("bad-password", "carol@other.test")),
    )?;
    assert!(!ok && out.contains("535 5.7.8"), "{out}");

    for (subject, mech) in [
        ("via-swaks", "PLAIN"),
        ("via-msmtp", "LOGIN"),
        ("via-curl", ""),
    ] {
        let m = one(&env, subject).await?;
        assert_eq!(m.outcome, Outcome::Delivered as i32, "{subject}: {m:?}");
        assert_eq!(m.auth_user, mta::USER, "{subject}");
        if !mech.is_empty() {
            assert_eq!(m.auth_mechanism, mech, "{subject}");
        }
        assert!(
            m.upstream_tls.starts_with("TLSv1_"),
            "{subject}: {}",
            m.upstream_tls
        );
        assert!(!m.upstream_tls.contains("unverified"));
        assert_eq!(m.ended_at, "END-OF-DATA");
        assert!(
            !m.upstream_queue_id.is_empty(),
            "{subject}: {}",
            m.upstream_reply
        );
        let queued = pf.queued(&m.upstream_queue_id)?;
        assert!(queued.contains(&format!("Subject: {subject}")), "{queued}");
        assert!(
            queued.contains(".leading dot line"),
            "dot-stuffing undone: {queued}"
        );
        if subject == "via-swaks" {
            assert_eq!(m.upstream_queue_id, swaks_qid);
        }
    }
    // The failed login left no transaction behind and no secret anywhere.
    let agent_log = std::fs::read_to_string(env.path().join("agent-pc-auth.log"))?;
    assert!(!agent_log.contains(mta::PASSWORD) && !agent_log.contains("wrong"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn postfix_refusals_reach_the_client_verbatim_and_are_recorded() -> anyhow::Result<()> {
    kiroku_tests::need_peer!(Postfix);
    let env = Env::new()?;
    let pf = Postfix::start(&env)?;
    let _collector = env.start_collector()?;
    let (_agent, smtp) = relay_agent(&env, &pf, "pc-refuse", "")?;

    // Partial RCPT rejection: the good recipient gets the mail.
    let sent = send_mail(
        smtp,
        "alice@sender.test",
        &["ok@example.test", mta::REFUSED_RCPT],
        &message("partial", "ok@example.test"),
    )?;
    assert_eq!(sent.code, 250, "{sent:?}");
    let m = one(&env, "partial").await?;
    assert_eq!(m.outcome, Outcome::Delivered as i32);
    let bad = m
        .rcpt_to
        .iter()
        .find(|r| r.address == mta::REFUSED_RCPT)
        .expect("refused recipient recorded");
    assert!(
        bad.reply_code >= 500 && bad.reply.contains("no such user here"),
        "{bad:?}"
    );
    assert_eq!(m.recipient_count, 1);
    assert!(
        pf.queued(&m.upstream_queue_id)?
            .contains("Subject: partial")
    );

    // Content refused at end-of-data by header_checks.
    let subject = format!("{} now", mta::REFUSED_SUBJECT);
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
    assert_eq!(m.reply_code, 550);
    assert_eq!(m.ended_at, "END-OF-DATA");
    assert!(
        !m.raw_sha256.is_empty(),
        "the refused message itself is kept"
    );

    // By hand: relay denied at RCPT, so DATA is refused — recorded with the
    // envelope; a blocked sender (Postfix checks it at RCPT); an abandoned
    // transaction; two transactions on one connection, pipelined.
    let (mut t, _) = Talk::connect(smtp)?;
    t.cmd("EHLO desk.sender.test")?;
    assert_eq!(t.cmd("MAIL FROM:<alice@sender.test>")?.0, 250);
    let (code, text) = t.cmd("RCPT TO:<stranger@other.test>")?;
    assert_eq!(code, 554, "{text}");
    assert!(text.contains("Relay access denied"), "{text}");
    let (code, text) = t.cmd("DATA")?;
    assert!(code >= 500, "{text}");
    assert_eq!(t.cmd("RSET")?.0, 250);

    assert_eq!(
        t.cmd(&format!("MAIL FROM:<{}>", mta::REFUSED_SENDER))?.0,
        250
    );
    let (code, text) = t.cmd("RCPT TO:<ok@example.test>")?;
    assert!(
        code >= 500 && text.contains("sender blocked by policy"),
        "{text}"
    );
    assert_eq!(t.cmd("RSET")?.0, 250);

    assert_eq!(
        t.cmd("MAIL FROM:<abandoned@sender.test> BODY=8BITMIME")?.0,
        250
    );
    assert_eq!(
        t.cmd("RCPT TO:<ok@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;ok@example.test")?
            .0,
        250
    );
    assert_eq!(t.cmd("RSET")?.0, 250);

    // Pipelined: both transactions in one write, replies in order.
    let mut batch = Vec::new();
    for n in 1..=2 {
        batch.extend_from_slice(
            format!(
                "MAIL FROM:<alice@sender.test>\r\nRCPT TO:<ok@example.test>\r\nDATA\r\nSubject: pipelined-{n}\r\n\r\nbody {n}\r\n.\r\n"
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

    // A pipelined envelope with a refused recipient in the middle, relayed
    // to Postfix (which offers PIPELINING) as one group: the replies come
    // back in order and each recipient is recorded with its own.
    let (mut t, _) = Talk::connect(smtp)?;
    t.cmd("EHLO desk.sender.test")?;
    t.send(
        format!(
            "MAIL FROM:<alice@sender.test>\r\nRCPT TO:<ok@example.test>\r\nRCPT TO:<{}>\r\nRCPT TO:<ok2@example.test>\r\nDATA\r\n",
            mta::REFUSED_RCPT
        )
        .as_bytes(),
    )?;
    let mut replies = Vec::new();
    for _ in 0..5 {
        replies.push(t.reply()?);
    }
    let codes: Vec<u16> = replies.iter().map(|r| r.0).collect();
    assert_eq!(codes[..2], [250, 250], "{replies:?}");
    assert!(
        codes[2] >= 500 && replies[2].1.contains("no such user here"),
        "{replies:?}"
    );
    assert_eq!(codes[3..], [250, 354], "{replies:?}");
    t.send(b"Subject: pipelined-partial\r\n\r\nbody\r\n.\r\n")?;
    assert_eq!(t.reply()?.0, 250);
    assert_eq!(t.cmd("QUIT")?.0, 221);
    let m = one(&env, "pipelined-partial").await?;
    assert_eq!(m.outcome, Outcome::Delivered as i32);
    let rcpt: Vec<(&str, bool)> = m
        .rcpt_to
        .iter()
        .map(|r| (r.address.as_str(), r.reply_code == 250))
        .collect();
    assert_eq!(
        rcpt,
        [
            ("ok@example.test", true),
            (mta::REFUSED_RCPT, false),
            ("ok2@example.test", true)
        ]
    );
    assert_eq!(m.rcpt_to[1].reply_code, u32::from(codes[2]));

    let rejected = env
        .wait_for(
            SearchRequest {
                outcome: "rejected".into(),
                sender: "alice@sender.test".into(),
                ..Default::default()
            },
            2,
            Duration::from_secs(30),
        )
        .await?;
    let relay_denied = rejected
        .iter()
        .map(email)
        .find(|m| m.ended_at == "DATA")
        .expect("relay-denied transaction recorded at DATA");
    assert_eq!(relay_denied.rcpt_to[0].reply_code, 554);
    assert!(relay_denied.raw_sha256.is_empty());
    let blocked = env
        .wait_for(
            SearchRequest {
                sender: mta::REFUSED_SENDER.into(),
                ..Default::default()
            },
            1,
            Duration::from_secs(30),
        )
        .await?;
    let blocked = email(&blocked[0]);
    assert_eq!(
        blocked.outcome,
        Outcome::Aborted as i32,
        "client gave up with RSET"
    );
    assert!(blocked.rcpt_to[0].reply.contains("sender blocked"));
    let abandoned = env
        .wait_for(
            SearchRequest {
                sender: "abandoned@sender.test".into(),
                ..Default::default()
            },
            1,
            Duration::from_secs(30),
        )
        .await?;
    let abandoned = email(&abandoned[0]);
    assert_eq!(abandoned.outcome, Outcome::Aborted as i32);
    assert_eq!(abandoned.ended_at, "RSET");
    assert_eq!(abandoned.mail_params, "BODY=8BITMIME");
    assert_eq!(
        abandoned.rcpt_to[0].params,
        "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;ok@example.test"
    );
    for n in 1..=2 {
        let m = one(&env, &format!("pipelined-{n}")).await?;
        assert_eq!(m.outcome, Outcome::Delivered as i32);
        assert!(
            pf.queued(&m.upstream_queue_id)?
                .contains(&format!("body {n}"))
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn implicit_tls_with_the_agents_own_smarthost_login() -> anyhow::Result<()> {
    kiroku_tests::need_peer!(Postfix);
    let env = Env::new()?;
    let pf = Postfix::start(&env)?;
    let _collector = env.start_collector()?;
    let pw = env.path().join("smarthost.pw");
    std::fs::write(&pw, format!("{}\n", mta::PASSWORD))?;
    let smtp = free_port();
    let cfg = format!(
        "upstream_tls = \"implicit\"\nupstream_ca = {:?}\nupstream_tls_name = {:?}\n[smtp.upstream_auth]\nusername = {:?}\npassword_file = {:?}\n",
        pf.cert,
        mta::TLS_NAME,
        mta::USER,
        pw
    );
    let _agent = env.start_agent_in_smtp("pc-smarthost", smtp, &Mode::Relay(pf.smtps), &cfg)?;
    let (mut t, _) = Talk::connect(smtp)?;
    let (_, ehlo) = t.cmd("EHLO desk.sender.test")?;
    assert!(!ehlo.contains("AUTH"), "the agent logs in itself: {ehlo}");
    t.cmd("QUIT")?;
    let sent = send_mail(
        smtp,
        "alice@sender.test",
        &["frank@other.test"],
        &message("smarthost", "frank@other.test"),
    )?;
    assert_eq!(sent.code, 250, "{sent:?}");
    let m = one(&env, "smarthost").await?;
    assert_eq!(m.outcome, Outcome::Delivered as i32);
    assert_eq!(m.auth_user, mta::USER);
    assert_eq!(m.auth_mechanism, "agent-credentials");
    assert!(m.upstream_tls.starts_with("TLSv1_"), "{}", m.upstream_tls);
    assert!(
        pf.queued(&m.upstream_queue_id)?
            .contains("Subject: smarthost")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_tls_policies_verified_opportunistic_and_off() -> anyhow::Result<()> {
    kiroku_tests::need_peer!(Postfix);
    let env = Env::new()?;
    let pf = Postfix::start(&env)?;
    let _collector = env.start_collector()?;

    // Required, but the certificate is checked against the system roots,
    // which do not know it: the client is told to come back later.
    let strict = free_port();
    let _a = env.start_agent_in_smtp(
        "pc-strict",
        strict,
        &Mode::Relay(pf.port),
        &format!(
            "upstream_tls = \"required\"\nupstream_tls_name = {:?}\n",
            mta::TLS_NAME
        ),
    )?;
    let (mut t, _) = Talk::connect(strict)?;
    let (code, text) = t.cmd("EHLO desk.sender.test")?;
    assert_eq!(code, 421, "{text}");
    assert!(t.closed());
    let log = std::fs::read_to_string(env.path().join("agent-pc-strict.log"))?;
    assert!(
        log.contains("TLS with upstream") && log.contains("upstream_ca"),
        "{log}"
    );

    // Opportunistic (the default): encrypted, not authenticated.
    let opp = free_port();
    let _b = env.start_agent_in_smtp("pc-opp", opp, &Mode::Relay(pf.port), "")?;
    let sent = send_mail(
        opp,
        "alice@sender.test",
        &["ok@example.test"],
        &message("opportunistic", "ok@example.test"),
    )?;
    assert_eq!(sent.code, 250, "{sent:?}");
    let m = one(&env, "opportunistic").await?;
    assert!(m.upstream_tls.ends_with("unverified"), "{}", m.upstream_tls);
    // Postfix offers AUTH after STARTTLS, but the relay does not pass
    // passwords over TLS it could not verify.
    let (mut t, _) = Talk::connect(opp)?;
    let (_, ehlo) = t.cmd("EHLO desk.sender.test")?;
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    t.cmd("QUIT")?;

    // Opportunistic with a certificate that does verify: noted as verified,
    // so AUTH passes through (the default config must not break AUTH for
    // smarthosts with proper certificates).
    let opp_ok = free_port();
    let _d = env.start_agent_in_smtp(
        "pc-opp-ok",
        opp_ok,
        &Mode::Relay(pf.port),
        &format!(
            "upstream_ca = {:?}\nupstream_tls_name = {:?}\n",
            pf.cert,
            mta::TLS_NAME
        ),
    )?;
    let (mut t, _) = Talk::connect(opp_ok)?;
    let (_, ehlo) = t.cmd("EHLO desk.sender.test")?;
    assert!(ehlo.contains("AUTH PLAIN LOGIN"), "{ehlo}");
    t.cmd("QUIT")?;
    let sent = send_mail(
        opp_ok,
        "alice@sender.test",
        &["ok@example.test"],
        &message("opportunistic-verified", "ok@example.test"),
    )?;
    assert_eq!(sent.code, 250, "{sent:?}");
    let m = one(&env, "opportunistic-verified").await?;
    assert!(
        m.upstream_tls.starts_with("TLSv1_") && !m.upstream_tls.ends_with("unverified"),
        "{}",
        m.upstream_tls
    );

    // Off: plain text; Postfix then offers no AUTH, and neither do we.
    let off = free_port();
    let _c = env.start_agent_in_smtp(
        "pc-off",
        off,
        &Mode::Relay(pf.port),
        "upstream_tls = \"off\"\n",
    )?;
    let (mut t, _) = Talk::connect(off)?;
    let (_, ehlo) = t.cmd("EHLO desk.sender.test")?;
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    t.cmd("QUIT")?;
    let sent = send_mail(
        off,
        "alice@sender.test",
        &["ok@example.test"],
        &message("plaintext", "ok@example.test"),
    )?;
    assert_eq!(sent.code, 250, "{sent:?}");
    assert_eq!(one(&env, "plaintext").await?.upstream_tls, "");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_get_starttls_and_injected_plaintext_is_refused() -> anyhow::Result<()> {
    kiroku_tests::need_peer!(Postfix);
    let env = Env::new()?;
    let pf = Postfix::start(&env)?;
    let _collector = env.start_collector()?;
    let ck = rcgen::generate_simple_self_signed(vec!["relay.test".into()])?;
    let (cert, key) = (env.path().join("relay.pem"), env.path().join("relay.key"));
    std::fs::write(&cert, ck.cert.pem())?;
    std::fs::write(&key, ck.signing_key.serialize_pem())?;
    let (_agent, smtp) = relay_agent(
        &env,
        &pf,
        "pc-tls",
        &format!("tls_cert = {cert:?}\ntls_key = {key:?}\n"),
    )?;

    // swaks: STARTTLS to the relay, then AUTH through it.
    let (ok, out) = run_client(
        swaks(
            smtp,
            "gina@other.test",
            Some(("PLAIN", mta::USER, mta::PASSWORD)),
        )
        .arg("--tls"),
        Some(&message("client-tls", "gina@other.test")),
    )?;
    assert!(ok, "{out}");
    let m = one(&env, "client-tls").await?;
    assert!(m.client_tls.starts_with("TLSv1_"), "{}", m.client_tls);
    assert_eq!(m.auth_user, mta::USER);

    // CVE-2011-0411 class: plain text sent after STARTTLS in the same
    // packet must never run as if it came through TLS; the relay hangs up.
    let (_, out) = run_client(
        Command::new("python3")
            .arg(kiroku_tests::data_dir().join("starttls_injection.py"))
            .arg(smtp.to_string()),
        None,
    )?;
    assert_eq!(out.trim(), "closed", "{out}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn smtp_source_load_through_the_relay_is_all_delivered_and_recorded() -> anyhow::Result<()> {
    kiroku_tests::need_peer!(Postfix);
    let env = Env::new()?;
    let pf = Postfix::start(&env)?;
    let _collector = env.start_collector()?;
    let (_agent, smtp) = relay_agent(&env, &pf, "pc-load", "")?;
    // Postfix's own load generator: 8 sessions, 200 messages, several per
    // connection (-d).
    let (ok, out) = run_client(
        Command::new("smtp-source")
            .args(["-d", "-s", "8", "-m", "200", "-l", "4096"])
            .args(["-f", "load@sender.test", "-t", "sink@example.test"])
            .args(["-S", "smtp-source load"])
            .arg(format!("127.0.0.1:{smtp}")),
        None,
    )?;
    assert!(ok, "smtp-source: {out}");
    let events = env
        .wait_for(
            SearchRequest {
                sender: "load@sender.test".into(),
                outcome: "delivered".into(),
                ..Default::default()
            },
            200,
            Duration::from_secs(60),
        )
        .await?;
    assert_eq!(events.len(), 200);
    let mut ids: Vec<&str> = events
        .iter()
        .map(|e| email(e).upstream_queue_id.as_str())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 200, "one Postfix queue id per recorded mail");
    for id in ids.iter().step_by(40) {
        assert!(pf.queued(id)?.contains("smtp-source load"));
    }
    Ok(())
}
