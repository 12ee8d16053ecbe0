//! Issue 20, items 2 and 3. AUTH attempts through the relay to a real
//! Postfix with Cyrus SASL, from two client addresses (swaks bound to
//! 127.0.0.2 and 127.0.0.3): one `AuthEvent` per attempt, searchable and
//! countable by claimed user and client IP with the `kiroku` CLI, and no
//! password anywhere — not in a record, the agent's log, the collector's
//! log or the CLI's raw output. Then the per-phase timings of the mail
//! records: a scripted slow end-of-data reply (aiosmtpd) shows in
//! `end_of_data_ms` and `kiroku search --min-delay / --max-delay` tells the
//! slow mail from the fast.

use std::process::Command;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use kiroku_proto::{AuthEvent, Event, SearchRequest, event::Kind};
use kiroku_tests::mta::{self, Postfix, message, swaks};
use kiroku_tests::{Env, Mode, Upstream, email, free_port, run_client};

/// Wrong passwords the clients try; none may be recorded or logged.
const WRONG: [&str; 2] = ["Guess-0ne-wrong", "Guess-Tw0-wrong"];

fn auth(e: &Event) -> &AuthEvent {
    match &e.kind {
        Some(Kind::Auth(a)) => a,
        other => panic!("not an AUTH record: {other:?}"),
    }
}

/// swaks from `ip` with AUTH (mechanism, user, password); true when the
/// mail went through.
fn attempt(smtp: u16, ip: &str, mech: &str, user: &str, pw: &str) -> anyhow::Result<bool> {
    let mut c = swaks(smtp, "carol@other.test", Some((mech, user, pw)));
    c.args(["--local-interface", ip]);
    let subject = format!("from {ip} as {user}");
    let (ok, out) = run_client(&mut c, Some(&message(&subject, "carol@other.test")))?;
    if !ok {
        assert!(out.contains("535"), "{out}");
    }
    Ok(ok)
}

/// Every form a secret could take in a record or a log line.
fn secrets() -> Vec<String> {
    let mut s = Vec::new();
    for pw in std::iter::once(mta::PASSWORD).chain(WRONG) {
        s.push(pw.to_owned());
        s.push(B64.encode(pw));
        for user in [mta::USER, "mallory"] {
            s.push(B64.encode(format!("\0{user}\0{pw}")));
        }
    }
    s
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_attempts_recorded_per_user_and_ip_without_any_secret() -> anyhow::Result<()> {
    kiroku_tests::need_peer!(Postfix);
    let env = Env::new()?;
    let pf = Postfix::start(&env)?;
    let collector = env.start_collector()?;
    let smtp = free_port();
    let cfg = format!(
        "upstream_tls = \"required\"\nupstream_ca = {:?}\nupstream_tls_name = {:?}\n",
        pf.cert,
        mta::TLS_NAME
    );
    let agent = env.start_agent_in_smtp("pc-auth", smtp, &Mode::Relay(pf.port), &cfg)?;

    // 127.0.0.2: the right password once (PLAIN), two wrong ones (LOGIN).
    assert!(attempt(
        smtp,
        "127.0.0.2",
        "PLAIN",
        mta::USER,
        mta::PASSWORD
    )?);
    for pw in WRONG {
        assert!(!attempt(smtp, "127.0.0.2", "LOGIN", mta::USER, pw)?);
    }
    // 127.0.0.3: someone guessing at "mallory" (no such user) three
    // times, then alice's right password by LOGIN.
    for pw in [WRONG[0], WRONG[1], WRONG[0]] {
        assert!(!attempt(smtp, "127.0.0.3", "PLAIN", "mallory", pw)?);
    }
    assert!(attempt(
        smtp,
        "127.0.0.3",
        "LOGIN",
        mta::USER,
        mta::PASSWORD
    )?);

    let all = env
        .wait_for(
            SearchRequest {
                kind: "auth".into(),
                ..Default::default()
            },
            7,
            Duration::from_secs(30),
        )
        .await?;
    assert_eq!(all.len(), 7, "one record per attempt");
    for e in &all {
        let a = auth(e);
        assert!(["PLAIN", "LOGIN"].contains(&a.mechanism.as_str()), "{a:?}");
        assert!(["127.0.0.2", "127.0.0.3"].contains(&a.client_ip.as_str()));
        assert_eq!(a.upstream, format!("127.0.0.1:{}", pf.port));
        assert!(a.upstream_tls.starts_with("TLSv1_"), "{a:?}");
        assert_eq!(a.reply_code, if a.success { 235 } else { 535 }, "{a:?}");
        if !a.success {
            assert!(a.reply.contains("5.7.8"), "the upstream's reply: {a:?}");
        }
    }
    // The local client's process, found as for mail records.
    assert!(
        all.iter().any(|e| auth(e).process.contains("swaks")),
        "{all:?}"
    );

    // Searchable per IP, per user and by outcome with the CLI.
    let ids = |args: &[&str]| -> anyhow::Result<Vec<String>> {
        let mut full = vec!["search", "--kind", "auth", "--json"];
        full.extend_from_slice(args);
        let out = env.cli(&full)?;
        Ok(out
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["event_id"].as_str().map(str::to_owned))
            .collect())
    };
    assert_eq!(ids(&["--outcome", "failed"])?.len(), 5);
    assert_eq!(
        ids(&["--outcome", "failed", "--client-ip", "127.0.0.3"])?.len(),
        3
    );
    assert_eq!(
        ids(&["--outcome", "failed", "--auth-user", mta::USER])?.len(),
        2
    );
    assert_eq!(
        ids(&["--outcome", "succeeded", "--client-ip", "127.0.0.2"])?.len(),
        1
    );

    // Countable per IP and per claimed user.
    let counts = |by: &str| -> anyhow::Result<Vec<(String, u64)>> {
        let out = env.cli(&[
            "stats",
            "--kind",
            "auth",
            "--outcome",
            "failed",
            "--by",
            by,
            "--json",
        ])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        let mut g: Vec<(String, u64)> = v["groups"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|g| {
                (
                    g["key"].as_str().unwrap_or_default().to_owned(),
                    g["count"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        g.sort();
        Ok(g)
    };
    assert_eq!(
        counts("client-ip")?,
        [("127.0.0.2".to_owned(), 2), ("127.0.0.3".to_owned(), 3)]
    );
    assert_eq!(
        counts("user")?,
        [("alice".to_owned(), 2), ("mallory".to_owned(), 3)]
    );

    // `kiroku show` says who, from where, and what the upstream answered.
    let failed = ids(&["--outcome", "failed", "--auth-user", "mallory"])?;
    let shown = env.cli(&["show", &failed[0]])?;
    for want in ["claimed user: mallory", "PLAIN failed", "127.0.0.3:", "535"] {
        assert!(shown.contains(want), "{want:?} in {shown}");
    }

    // The table names the claimed user and the outcome (cells may wrap).
    let table = env.cli(&[
        "search",
        "--kind",
        "auth",
        "--client-ip",
        "127.0.0.3",
        "--outcome",
        "failed",
    ])?;
    assert_eq!(table.matches("mallory").count(), 3, "{table}");
    assert!(table.contains("failed"), "{table}");

    // The mail of the successful logins carries its timings and the name
    // Postfix greeted with.
    let mails = env
        .wait_for(
            SearchRequest {
                kind: "email".into(),
                auth_user: mta::USER.into(),
                ..Default::default()
            },
            2,
            Duration::from_secs(30),
        )
        .await?;
    for e in &mails {
        let m = email(e);
        assert_eq!(m.upstream_name, mta::TLS_NAME);
        let t = m.timings.expect("timings");
        assert!(t.total_ms > 0 && t.total_ms >= t.end_of_data_ms, "{t:?}");
    }

    // No secret anywhere: the records, the CLI's raw output, both logs.
    let raw = env.cli(&["search", "--json", "--limit", "1000"])?;
    let records = format!("{:?}", env.search_all(SearchRequest::default()).await?);
    let agent_log = agent.log_text();
    let collector_log = collector.log_text();
    for s in secrets() {
        for (what, text) in [
            ("records", &records),
            ("search output", &raw),
            ("agent log", &agent_log),
            ("collector log", &collector_log),
        ] {
            assert!(!text.contains(&s), "secret {s:?} in the {what}");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_end_of_data_shows_in_the_timings_and_min_delay_finds_it() -> anyhow::Result<()> {
    let env = Env::new()?;
    let up = Upstream::start(&env)?;
    let _collector = env.start_collector()?;
    let smtp = free_port();
    let _agent = env.start_agent("pc-timing", smtp, &Mode::Relay(up.port))?;
    for (subject, extra) in [
        ("fast one", ""),
        ("slow one", "X-Test-Slow-Reply: 1500\r\n"),
    ] {
        let raw = format!("Subject: {subject}\r\n{extra}From: a@example.org\r\n\r\nhi\r\n");
        let mut c = Command::new("swaks");
        c.args(["--server", &format!("127.0.0.1:{smtp}")])
            .args(["--from", "a@example.org", "--to", "b@example.org"])
            .args(["--data", "-"]);
        let (ok, out) = run_client(&mut c, Some(raw.as_bytes()))?;
        assert!(ok, "{out}");
    }
    let mails = env
        .wait_for(
            SearchRequest {
                kind: "email".into(),
                ..Default::default()
            },
            2,
            Duration::from_secs(30),
        )
        .await?;
    let timing = |subject: &str| {
        mails
            .iter()
            .map(email)
            .find(|m| m.subject == subject)
            .and_then(|m| m.timings)
            .expect("timings")
    };
    let (fast, slow) = (timing("fast one"), timing("slow one"));
    assert!(slow.end_of_data_ms >= 1_500, "{slow:?}");
    assert!(slow.total_ms >= slow.end_of_data_ms, "{slow:?}");
    assert!(fast.end_of_data_ms < 1_000, "{fast:?}");

    let subjects = |args: &[&str]| -> anyhow::Result<Vec<String>> {
        let mut full = vec!["search", "--kind", "email", "--json"];
        full.extend_from_slice(args);
        Ok(env
            .cli(&full)?
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["email"]["subject"].as_str().map(str::to_owned))
            .collect())
    };
    assert_eq!(subjects(&["--min-delay", "1s"])?, ["slow one"]);
    assert_eq!(subjects(&["--max-delay", "1s"])?, ["fast one"]);
    assert_eq!(
        subjects(&["--min-delay", "1400ms", "--max-delay", "2m"])?,
        ["slow one"]
    );
    let bad = env.cli(&["search", "--min-delay", "5s", "--max-delay", "1s"]);
    assert!(
        bad.is_err_and(|e| e.to_string().contains("--max-delay")),
        "an empty range is refused, naming the flag"
    );
    // `kiroku show` prints the phases.
    let slow_id = env
        .cli(&["search", "--min-delay", "1s", "--json"])?
        .lines()
        .find_map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["event_id"].as_str().map(str::to_owned))
        })
        .expect("the slow mail");
    let shown = env.cli(&["show", &slow_id])?;
    assert!(
        shown.contains("timings:") && shown.contains("end of data 1."),
        "{shown}"
    );
    Ok(())
}
