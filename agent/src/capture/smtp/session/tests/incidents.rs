//! Relay incidents as the session reports them, coalesced by the real
//! tracker and written to the real buffer.

use super::*;

/// A loopback port nothing listens on.
async fn dead_port() -> SocketAddr {
    let free = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dead = free.local_addr().expect("addr");
    drop(free);
    dead
}

fn quick(mut cfg: SmtpConfig) -> SmtpConfig {
    cfg.incident_quiet_secs = 1;
    cfg
}

#[tokio::test]
async fn an_unreachable_upstream_is_one_incident_whatever_the_attempts() {
    let dead = dead_port().await;
    let mut h = Harness::with_config(Harness::config(Some(dead))).await;
    for _ in 0..20 {
        let mut c = h.client().await;
        assert_eq!(c.reply().await.0, 421);
    }
    h.stop().await;
    let recs = h.incidents();
    let states: Vec<_> = recs.iter().map(|r| r.state.as_str()).collect();
    assert_eq!(states, ["open", "closed"], "{recs:?}");
    let closed = &recs[1];
    assert_eq!(closed.kind, "upstream_unreachable");
    assert_eq!(closed.count, 20);
    assert_eq!(closed.upstream, dead.to_string());
    assert_eq!(closed.step, "connect");
    assert_eq!(closed.client_ips, ["127.0.0.1"]);
    assert!(
        closed.detail.starts_with("agent stopped"),
        "{}",
        closed.detail
    );
    assert_eq!(recs[0].incident_id, closed.incident_id);
}

#[tokio::test]
async fn refusal_at_greeting_closes_when_the_upstream_works_again() {
    let refusing = Script {
        greeting: "554 5.3.2 not now".into(),
        ..Script::default()
    };
    let (bad, _) = scripted_upstream(refusing).await;
    let mut h = Harness::with_config(Harness::config(Some(bad))).await;
    for _ in 0..3 {
        let mut c = h.client().await;
        assert_eq!(c.reply().await.0, 554);
    }
    h.stop().await;
    let recs = h.incidents();
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert_eq!(
        (recs[1].kind.as_str(), recs[1].count, recs[1].reply_code),
        ("upstream_refused", 3, 554)
    );
}

#[tokio::test]
async fn a_slow_upstream_times_out_and_quiet_closes_it() {
    let slow = Script {
        greeting_delay: Duration::from_secs(30),
        ..Script::default()
    };
    let (up, _) = scripted_upstream(slow).await;
    let mut cfg = quick(Harness::config(Some(up)));
    cfg.upstream_greeting_timeout_secs = 2;
    let h = Harness::with_config(cfg).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(h.client().await);
    }
    for c in &mut clients {
        let (code, text) = c.reply().await;
        assert_eq!(code, 421, "{text}");
    }
    // Closed by the quiet time (1 s), not by a stop.
    let deadline = tokio::time::Instant::now() + WAIT;
    let recs = loop {
        let recs = h.incidents();
        if recs.iter().any(|r| r.state == "closed") || tokio::time::Instant::now() > deadline {
            break recs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let closed = recs.iter().find(|r| r.state == "closed").expect("closed");
    assert_eq!(
        (closed.kind.as_str(), closed.count),
        ("upstream_timeout", 3)
    );
    assert_eq!(closed.step, "greeting");
    assert!(
        closed.detail.starts_with("ended: no repeat"),
        "{}",
        closed.detail
    );
}

#[tokio::test]
async fn a_working_upstream_closes_its_incident() {
    // The scripted upstream answers; an incident opened for its address
    // (as if it had been down) closes at the next good greeting and EHLO.
    let (up, _) = scripted_upstream(Script::default()).await;
    let h = Harness::with_config(Harness::config(Some(up))).await;
    let e = crate::capture::smtp::upstream::UpstreamError::new(
        &up.to_string(),
        crate::capture::smtp::upstream::Step::Connect,
        crate::capture::smtp::upstream::ErrorKind::Unreachable("refused".into()),
    );
    let occ = crate::capture::smtp::incidents::Occurrence::upstream(&e, up).expect("incident");
    h.cap.incidents.occurred(occ);
    let mut c = h.client().await;
    c.reply().await;
    assert_eq!(c.cmd("EHLO client.test").await.0, 250);
    let recs = h.records(2).await;
    let states: Vec<_> = h.incidents().into_iter().map(|r| r.state).collect();
    assert_eq!(states, ["open", "closed"], "{recs:?}");
    let closed = h.incidents().pop().expect("closed");
    assert!(
        closed.detail.starts_with("ended: the upstream answered"),
        "{}",
        closed.detail
    );
}

#[tokio::test]
async fn client_side_incidents() {
    let (up, _) = scripted_upstream(Script::default()).await;
    let mut h = Harness::with_config(Harness::config(Some(up))).await;
    // Gone before MAIL, twice.
    for _ in 0..2 {
        let mut c = h.client().await;
        c.reply().await;
        c.cmd("EHLO client.test").await;
        drop(c);
    }
    // Connected and closed without a command (a port probe): not one.
    for _ in 0..3 {
        let mut c = h.client().await;
        c.reply().await;
        drop(c);
    }
    // Gone after MAIL: not an incident.
    {
        let mut c = h.client().await;
        c.reply().await;
        c.cmd("EHLO client.test").await;
        c.cmd("MAIL FROM:<a@example.org>").await;
    }
    // Too many bad commands.
    {
        let mut c = h.client().await;
        c.reply().await;
        let mut last = 0;
        for _ in 0..20 {
            last = c.cmd("BOGUS").await.0;
        }
        assert_eq!(last, 500);
        assert_eq!(c.reply().await.0, 421, "told to go after the 20th");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.stop().await;
    let closed: Vec<_> = h
        .incidents()
        .into_iter()
        .filter(|r| r.state == "closed")
        .map(|r| (r.kind, r.count))
        .collect();
    assert_eq!(
        closed,
        [
            ("client_gone_before_mail".to_owned(), 2),
            ("client_too_many_errors".to_owned(), 1)
        ]
    );
}
