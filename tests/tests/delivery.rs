//! A relayed mail's downstream fate (issue 20): a real Postfix behind the
//! relay delivers, defers and bounces, the agent follows Postfix's own
//! log (`maillog_file`), and the collector joins each log line to the
//! mail it relayed (same host: the relay's upstream is on loopback, so
//! the log must be this agent's; queue id; time; Message-ID). Each fate
//! is shown by `kiroku show` and found by `kiroku search --delivery`.
//!
//! Postfix routes by domain (`transport_maps`): `deliver.test` to a
//! second local MTA (aiosmtpd, which refuses recipients whose local part
//! starts with "reject": a bounce), `unreachable.test` to a loopback port
//! nobody listens on (deferred every second or two, expired after 60 s
//! and returned to sender: long enough for the test to see it deferred
//! first, through the maillog, the agent and the collector, on a loaded
//! machine).

use std::time::{Duration, Instant};

use kiroku_proto::{GetEventRequest, SearchRequest};
use kiroku_tests::mta::{self, Postfix};
use kiroku_tests::{Env, Mode, Upstream, free_port, send_mail};

/// Waits until `--delivery status` finds the mail `id` (gRPC search, as
/// the CLI sends it); on failure says what was joined and what Postfix
/// logged.
async fn wait_delivery(
    env: &Env,
    pf: &Postfix,
    id: &str,
    status: &str,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let found = env
            .search_all(SearchRequest {
                delivery: status.into(),
                kind: "email".into(),
                ..Default::default()
            })
            .await?;
        if found.iter().any(|e| e.event_id == id) {
            return Ok(());
        }
        if Instant::now() > deadline {
            let mut q = env.investigator().await?;
            let d = q
                .get_delivery(GetEventRequest {
                    event_id: id.into(),
                })
                .await?
                .into_inner();
            let log = pf.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            anyhow::bail!(
                "{id} not found with --delivery {status} within {within:?}; its delivery: {d:?}\n--- maillog, newest first ---\n{}",
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The ids the CLI lists for `kiroku search --delivery status`.
fn cli_ids(env: &Env, status: &str) -> anyhow::Result<Vec<String>> {
    let out = env.cli(&["search", "--delivery", status, "--json", "--all"])?;
    Ok(out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["event_id"].as_str().map(str::to_owned))
        .collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn postfix_delivers_defers_and_bounces_and_each_fate_is_joined() -> anyhow::Result<()> {
    kiroku_tests::need_peer!(Postfix);
    let env = Env::new()?;
    let sink = Upstream::start(&env)?;
    let dead = free_port();
    let transport = env.path().join("transport");
    std::fs::write(
        &transport,
        format!(
            "deliver.test smtp:[127.0.0.1]:{sink}\nunreachable.test smtp:[127.0.0.1]:{dead}\n{local} smtp:[127.0.0.1]:{sink}\nsender.test smtp:[127.0.0.1]:{sink}\n",
            sink = sink.port,
            local = mta::LOCAL_DOMAIN,
        ),
    )?;
    let pf = Postfix::start_with_extra(
        &env,
        &format!(
            "defer_transports =
relay_domains = {local} deliver.test unreachable.test
transport_maps = texthash:{t}
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
maximal_queue_lifetime = 60s
bounce_queue_lifetime = 60s
smtp_connect_timeout = 2s
",
            local = mta::LOCAL_DOMAIN,
            t = transport.display()
        ),
    )?;
    let _collector = env.start_collector()?;
    let smtp = free_port();
    let _agent = env.start_agent_with(
        "mx-relay",
        smtp,
        &Mode::Relay(pf.port),
        &format!(
            "[[mta_log]]\npath = {:?}\nformat = \"postfix\"\nstart_at = \"start\"\n",
            pf.dir.join("maillog")
        ),
    )?;

    let cases = [
        ("fate-delivered", "bob@deliver.test"),
        ("fate-bounced", "reject-me@deliver.test"),
        ("fate-deferred", "carol@unreachable.test"),
    ];
    let mut ids = Vec::new();
    for (subject, to) in cases {
        let sent = send_mail(smtp, "alice@sender.test", &[to], &mta::message(subject, to))?;
        assert_eq!(sent.code, 250, "{subject}: {}", sent.reply);
        let m = mta::one(&env, subject).await?;
        assert!(
            !m.upstream_queue_id.is_empty(),
            "{subject}: Postfix's queue id recorded"
        );
        let ev = env
            .wait_for(
                SearchRequest {
                    subject: subject.into(),
                    ..Default::default()
                },
                1,
                Duration::from_secs(10),
            )
            .await?;
        ids.push(ev[0].event_id.clone());
    }
    let (delivered, bounced, deferred) = (&ids[0], &ids[1], &ids[2]);

    let within = Duration::from_secs(60);
    // The deferred mail first, while it is still queued (it expires 60 s
    // after it was queued), `show` included.
    wait_delivery(&env, &pf, deferred, "deferred", within).await?;
    let show = env.cli(&["show", deferred])?;
    assert!(show.contains("status: deferred"), "{show}");
    assert!(show.contains("still queued"), "{show}");
    wait_delivery(&env, &pf, delivered, "delivered", within).await?;
    wait_delivery(&env, &pf, bounced, "bounced", within).await?;
    // What aiosmtpd received is the delivered mail only.
    let received: Vec<String> = sink
        .messages()
        .iter()
        .map(|(raw, _)| String::from_utf8_lossy(raw).into_owned())
        .collect();
    assert!(
        received
            .iter()
            .any(|m| m.contains("Subject: fate-delivered"))
    );

    // The CLI: the flag and `show`.
    assert!(cli_ids(&env, "delivered")?.contains(delivered));
    assert!(!cli_ids(&env, "delivered")?.contains(bounced));
    assert!(cli_ids(&env, "bounced")?.contains(bounced));
    let show = env.cli(&["show", delivered])?;
    assert!(show.contains("delivery (from the MTA's log):"), "{show}");
    assert!(show.contains("status: delivered"), "{show}");
    assert!(show.contains("delivered to 127.0.0.1 "), "{show}");
    assert!(show.contains("later"), "{show}");
    assert!(
        show.contains("joined by: queue id + host + time + message-id"),
        "Postfix's cleanup line gave the Message-ID: {show}"
    );
    let show = env.cli(&["show", bounced])?;
    assert!(show.contains("status: bounced"), "{show}");
    assert!(show.contains("dsn=5.1.1"), "{show}");
    assert!(show.contains("mailbox unavailable"), "{show}");

    // The unreachable destination: deferred again and again, then Postfix
    // gives up (maximal_queue_lifetime) and returns it to the sender.
    wait_delivery(&env, &pf, deferred, "expired", Duration::from_secs(150)).await?;
    let show = env.cli(&["show", deferred])?;
    assert!(show.contains("status: expired"), "{show}");
    assert!(show.contains("expired after"), "{show}");
    assert!(show.contains("returned to sender"), "{show}");
    let times: usize = show
        .split("deferred ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        times >= 2,
        "deferred more than once before it expired: {show}"
    );
    assert!(!cli_ids(&env, "deferred")?.contains(deferred));
    // Returned to its sender: `--delivery bounced` finds it beside the
    // refused one, `--delivery expired` only it.
    let bounced_ids = cli_ids(&env, "bounced")?;
    assert!(
        bounced_ids.contains(deferred) && bounced_ids.contains(bounced),
        "{bounced_ids:?}"
    );
    assert!(!cli_ids(&env, "expired")?.contains(bounced));
    // Nothing left unknown among the three.
    let unknown = cli_ids(&env, "unknown")?;
    assert!(ids.iter().all(|id| !unknown.contains(id)), "{unknown:?}");
    Ok(())
}
