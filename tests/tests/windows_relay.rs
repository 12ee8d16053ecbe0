//! The Windows agent (`kiroku-agent.exe`, cross-built) under Wine relays
//! mail from a Linux client (Python smtplib) to its loopback port on to an
//! aiosmtpd upstream on Linux and ships it over mTLS to a Linux collector:
//! the mail is found with `kiroku search` and `kiroku raw` gives it back
//! byte-identical; a `kill -9` of the Windows process right after its 250
//! loses and duplicates nothing after a restart.
//!
//! Skipped (with the reason, never passed) when Wine or the exe is
//! missing: see `kiroku_tests::wine`.

use std::time::Duration;

use kiroku_proto::{Outcome, SearchRequest};
use kiroku_tests::wine::Wine;
use kiroku_tests::{Env, Mode, Talk, Upstream, email, free_port, send_mail, skip};

fn wine_or_skip(test: &str) -> Option<&'static Wine> {
    match Wine::get() {
        Ok(w) => Some(w),
        Err(why) => {
            skip(test, &why);
            None
        }
    }
}

fn mail(tag: &str, n: usize) -> Vec<u8> {
    format!(
        "From: Hanako <hanako@example.co.jp>\r\nTo: client@example.org\r\nSubject: {tag} {n}\r\nMessage-ID: <{tag}-{n}@example.co.jp>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n見積書を送ります {n}\r\n.leading dot kept\r\n"
    )
    .into_bytes()
}

/// A ~300 KB mail (base64 lines of a pseudo-random attachment).
fn big_mail(tag: &str) -> Vec<u8> {
    let mut m = format!(
        "From: hanako@example.co.jp\r\nTo: client@example.org\r\nSubject: {tag}\r\nMessage-ID: <{tag}@example.co.jp>\r\nMIME-Version: 1.0\r\nContent-Type: application/octet-stream; name=\"data.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    )
    .into_bytes();
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x: u32 = 7;
    for _ in 0..4000 {
        for _ in 0..76 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            m.push(alphabet[(x >> 16) as usize % 64]);
        }
        m.extend_from_slice(b"\r\n");
    }
    m
}

/// The `kiroku` CLI's JSON lines as values.
fn json_lines(out: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn windows_agent_relays_and_ships_mail_found_byte_identical() -> anyhow::Result<()> {
    let Some(wine) = wine_or_skip("windows_agent_relays_and_ships_mail_found_byte_identical")
    else {
        return Ok(());
    };
    let env = Env::new()?;
    let _collector = env.start_collector()?;
    let upstream = Upstream::start(&env)?;
    let smtp = free_port();
    let mut agent = env.start_windows_agent(wine, "pc-win", smtp, &Mode::Relay(upstream.port))?;

    let raw = mail("winrelay", 0);
    let sent = send_mail(
        smtp,
        "hanako@example.co.jp",
        &["client@example.org", "boss@example.co.jp"],
        &raw,
    )?;
    assert_eq!(sent.code, 250, "{sent:?}\n{}", agent.log_text());
    assert!(
        sent.reply.contains("queued as"),
        "the upstream's reply is passed back: {sent:?}"
    );
    let got = upstream.messages();
    assert_eq!(got.len(), 1, "delivered upstream once");
    assert!(
        got[0].0 == raw,
        "the upstream copy differs from the original"
    );

    let events = env
        .wait_for(
            SearchRequest {
                subject: "winrelay".into(),
                ..Default::default()
            },
            1,
            Duration::from_secs(60),
        )
        .await?;
    assert_eq!(events.len(), 1);
    let e = &events[0];
    let m = email(e);
    assert_eq!(e.agent_id, "pc-win");
    assert_eq!(m.mail_from, "hanako@example.co.jp");
    assert_eq!(m.rcpt_to.len(), 2);
    assert_eq!(m.outcome, Outcome::Delivered as i32);
    assert_eq!(m.raw_sha256, kiroku_common::sha256_hex(&raw));
    assert_eq!(m.client_ip, "127.0.0.1");
    assert_eq!(
        e.custom.get("department").map(String::as_str),
        Some("finance"),
        "the same config as the Linux agent's"
    );

    // Through the CLI: search finds it, raw gives it back byte-identical.
    let found =
        json_lines(&env.cli(&["search", "--agent", "pc-win", "--kind", "email", "--json"])?)?;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["event_id"].as_str(), Some(e.event_id.as_str()));
    let out = env.path().join("win.eml");
    env.cli(&["raw", &e.event_id, "-o", &out.to_string_lossy()])?;
    assert!(
        std::fs::read(&out)? == raw,
        "kiroku raw differs from what the client sent"
    );

    // A mail over the buffer's in-memory limit (64 KiB) is spooled to a
    // file in the buffer's blob directory, whose entry is made durable
    // before the 250 (a directory sync, which Windows does differently).
    let big = big_mail("winbig");
    let sent = send_mail(smtp, "hanako@example.co.jp", &["client@example.org"], &big)?;
    assert_eq!(sent.code, 250, "{sent:?}\n{}", agent.log_text());
    let events = env
        .wait_for(
            SearchRequest {
                subject: "winbig".into(),
                ..Default::default()
            },
            1,
            Duration::from_secs(60),
        )
        .await?;
    assert!(
        env.raw(&events[0].event_id).await? == big,
        "the spooled mail differs from the original"
    );
    assert!(upstream.messages().iter().any(|(m, _)| *m == big));

    assert!(
        kiroku_tests::winagent::stop_windows(&mut agent, Duration::from_secs(30)),
        "the Windows agent stops on Ctrl+C:\n{}",
        agent.log_text()
    );
    let log = agent.log_text();
    assert!(log.contains("kiroku-agent stopping"), "{log}");
    assert!(
        !log.contains("Access denied"),
        "the buffer's files and directories are written as on Linux (the sequence file, directory syncs):\n{log}"
    );
    Ok(())
}

/// One mail by hand; returns right after the 250 to the end of DATA (no
/// QUIT), so the caller can kill the agent at that instant.
fn send_until_250(smtp: u16, raw: &[u8]) -> anyhow::Result<Talk> {
    let (mut t, (code, _)) = Talk::connect(smtp)?;
    anyhow::ensure!(code == 220, "greeting {code}");
    for (line, want) in [
        ("EHLO winclient", 250),
        ("MAIL FROM:<hanako@example.co.jp>", 250),
        ("RCPT TO:<client@example.org>", 250),
        ("DATA", 354),
    ] {
        let (code, text) = t.cmd(line)?;
        anyhow::ensure!(code == want, "{line}: {code} {text}");
    }
    t.send(raw)?;
    let (code, text) = t.cmd(".")?;
    anyhow::ensure!(code == 250, "end of DATA: {code} {text}");
    Ok(t)
}

/// The messages `tag` 0..n each exactly once on the collector, and still
/// so after a pause (a late duplicate would show).
async fn assert_exactly_once(
    env: &Env,
    tag: &str,
    n: usize,
) -> anyhow::Result<Vec<kiroku_proto::Event>> {
    let req = SearchRequest {
        subject: tag.into(),
        ..Default::default()
    };
    env.wait_for(req.clone(), n, Duration::from_secs(90))
        .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let events = env.search_all(req).await?;
    let mut ids: Vec<String> = events.iter().map(|e| email(e).message_id.clone()).collect();
    ids.sort();
    let mut want: Vec<String> = (0..n)
        .map(|i| format!("<{tag}-{i}@example.co.jp>"))
        .collect();
    want.sort();
    assert_eq!(ids, want, "each message exactly once");
    Ok(events)
}

#[tokio::test(flavor = "multi_thread")]
async fn windows_agent_killed_right_after_250_stores_each_mail_exactly_once() -> anyhow::Result<()>
{
    let test = "windows_agent_killed_right_after_250_stores_each_mail_exactly_once";
    let Some(wine) = wine_or_skip(test) else {
        return Ok(());
    };
    let env = Env::new()?;
    let upstream = Upstream::start(&env)?;
    let smtp = free_port();
    let mode = Mode::Relay(upstream.port);
    let rounds = 3;
    let mut collector = None;
    for i in 0..rounds {
        // Round 0 runs with the collector down, so the mail cannot have
        // been shipped before the kill: it survives in the buffer only.
        // Later rounds race the shipper (shipped, acknowledged or not).
        if i == 1 {
            collector = Some(env.start_collector()?);
        }
        let mut agent = env.start_windows_agent(wine, "pc-wk", smtp, &mode)?;
        let pid = agent.pid();
        let talk = send_until_250(smtp, &mail("winkill", i))?;
        agent.kill9();
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "the Windows process (Linux pid {pid}) is gone after kill -9"
        );
        drop(talk);
    }
    assert!(collector.is_some());
    let mut agent = env.start_windows_agent(wine, "pc-wk", smtp, &mode)?;
    let events = assert_exactly_once(&env, "winkill", rounds).await?;
    for e in &events {
        assert_eq!(e.agent_id, "pc-wk");
    }
    assert_eq!(
        upstream.messages().len(),
        rounds,
        "each mail was relayed upstream once (the 250 was the upstream's)"
    );
    kiroku_tests::winagent::stop_windows(&mut agent, Duration::from_secs(30));
    Ok(())
}
