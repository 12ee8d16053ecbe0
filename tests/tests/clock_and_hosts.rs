//! Clock offsets and host identity: an agent whose clock is deliberately
//! wrong (test-only skew) is measured over the Ship stream, flagged by the
//! collector and its events tagged; corrected time orders events from
//! different hosts as they happened. Host identity is recorded at start
//! and listed with offset, backlog and connection state.

use std::time::{Duration, Instant};

use kiroku_proto::{ListHostsRequest, SearchRequest, event::Kind};
use kiroku_tests::{Env, Mode, Upstream, email, free_port, send_mail};

fn mail(subject: &str) -> Vec<u8> {
    format!(
        "From: a@example.com\r\nTo: b@example.org\r\nSubject: {subject}\r\nMessage-ID: <{subject}@example.com>\r\n\r\nbody\r\n"
    )
    .into_bytes()
}

/// Waits until both agents have reported a measured clock offset.
async fn hosts_with_offsets(env: &Env, n: usize) -> anyhow::Result<Vec<kiroku_proto::HostInfo>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let hosts = env
            .investigator()
            .await?
            .list_hosts(ListHostsRequest::default())
            .await?
            .into_inner()
            .hosts;
        if hosts.iter().filter(|h| h.clock_offset_known).count() >= n {
            return Ok(hosts);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "hosts never reported clock offsets: {hosts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn skewed_agent_is_flagged_and_corrected_time_orders_events() -> anyhow::Result<()> {
    let env = Env::new()?;
    let upstream = Upstream::start(&env)?;
    let _collector = env.start_collector()?;
    let (fast_port, good_port) = (free_port(), free_port());
    // pc-fast's clock runs two minutes ahead of the collector's.
    let _fast = env.start_agent_env(
        "pc-fast",
        fast_port,
        &Mode::Relay(upstream.port),
        &[("KIROKU_TEST_CLOCK_SKEW_MS", "120000")],
    )?;
    let _good = env.start_agent("pc-good", good_port, &Mode::Relay(upstream.port))?;
    let hosts = hosts_with_offsets(&env, 2).await?;
    let fast = hosts
        .iter()
        .find(|h| h.agent_id == "pc-fast")
        .expect("pc-fast listed");
    let good = hosts
        .iter()
        .find(|h| h.agent_id == "pc-good")
        .expect("pc-good listed");
    assert!(
        (fast.clock_offset_ms - 120_000).abs() < 1_000,
        "measured {} ms for a +120 s clock",
        fast.clock_offset_ms
    );
    assert!(fast.clock_flagged, "{fast:?}");
    assert!(good.clock_offset_ms.abs() < 1_000, "{good:?}");
    assert!(!good.clock_flagged, "{good:?}");
    assert!(fast.connected && good.connected);
    let id = fast.host.clone().unwrap_or_default();
    assert!(
        !id.hostname.is_empty() && !id.agent_version.is_empty(),
        "{id:?}"
    );

    // The fast host mails first, the good one a moment later.
    let sent = send_mail(
        fast_port,
        "a@example.com",
        &["b@example.org"],
        &mail("clockfirst"),
    )?;
    assert_eq!(sent.code, 250, "{sent:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = send_mail(
        good_port,
        "a@example.com",
        &["b@example.org"],
        &mail("clocksecond"),
    )?;
    assert_eq!(sent.code, 250, "{sent:?}");

    let order = |corrected: bool| SearchRequest {
        text: "body".into(),
        corrected_time: corrected,
        ..Default::default()
    };
    let by_agent_clock = env
        .wait_for(order(false), 2, Duration::from_secs(30))
        .await?;
    let subjects = |ev: &[kiroku_proto::Event]| -> Vec<String> {
        ev.iter().map(|e| email(e).subject.clone()).collect()
    };
    // Newest first on the agents' clocks: the fast host's mail looks newer.
    assert_eq!(subjects(&by_agent_clock), ["clockfirst", "clocksecond"]);
    let corrected = env.wait_for(order(true), 2, Duration::from_secs(5)).await?;
    assert_eq!(subjects(&corrected), ["clocksecond", "clockfirst"]);

    let first = &by_agent_clock[0];
    assert!(first.clock_offset_known);
    assert!((first.clock_offset_ms - 120_000).abs() < 1_000);
    assert!(
        first.tags.iter().any(|t| t == "clock-skew"),
        "{:?}",
        first.tags
    );
    assert!(!by_agent_clock[1].tags.iter().any(|t| t == "clock-skew"));

    // A corrected time range excludes the fast host's mail by its real time.
    let now = kiroku_common::now_ms();
    let future = SearchRequest {
        from_ms: now + 60_000,
        ..order(false)
    };
    let ev = env
        .wait_for(future.clone(), 1, Duration::from_secs(5))
        .await?;
    assert_eq!(subjects(&ev), ["clockfirst"], "agent clock says the future");
    let ev = env
        .investigator()
        .await?
        .search(SearchRequest {
            corrected_time: true,
            ..future
        })
        .await?
        .into_inner()
        .events;
    assert!(ev.is_empty(), "corrected, nothing is in the future: {ev:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn host_identity_is_recorded_at_start_and_listed() -> anyhow::Result<()> {
    let env = Env::new()?;
    let upstream = Upstream::start(&env)?;
    let _collector = env.start_collector()?;
    let port = free_port();
    let mut agent = env.start_agent("pc-id", port, &Mode::Relay(upstream.port))?;
    hosts_with_offsets(&env, 1).await?;
    agent.terminate();
    let _agent = env.start_agent("pc-id", port, &Mode::Relay(upstream.port))?;
    // Two starts, two identity records, with the host's facts.
    let req = SearchRequest {
        agent_id: "pc-id".into(),
        kind: "host_change".into(),
        ..Default::default()
    };
    let ev = env.wait_for(req, 2, Duration::from_secs(30)).await?;
    let ids: Vec<_> = ev
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::HostChange(h)) => Some(h),
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), 2, "{ev:?}");
    for h in ids {
        assert_eq!(h.reason, "start");
        let id = h.identity.clone().unwrap_or_default();
        assert!(!id.hostname.is_empty());
        assert!(
            id.interfaces
                .iter()
                .any(|i| i.ips.iter().any(|ip| ip == "127.0.0.1")),
            "{id:?}"
        );
    }
    let out = env.cli(&["hosts"])?;
    assert!(
        out.contains("pc-id") && out.contains("clock offset"),
        "{out}"
    );
    assert!(out.contains("(connected)"), "{out}");
    Ok(())
}
