//! `kiroku report network` end to end (issue 21): hand-made network and
//! p2p records of two hosts are shipped through the real Ingest API over
//! mTLS with each agent's certificate (as an agent would ship them), then
//! the real collector's NetworkReport rpc and the real CLI are asked for
//! one host's report: the figures of the process and peer tables, the
//! timeline, the P2P findings and the network gaps; `--json`, `--csv`;
//! the audit entries; the refusals (an agent, a request without a host).
//!
//! Hand-made records, not a real capture: the figures must be known
//! exactly. The capture's own records are checked against the kernel in
//! `network_capture.rs` and the swarm in `network_p2p.rs`.

use std::time::Duration;

use kiroku_proto::ingest_client::IngestClient;
use kiroku_proto::query_client::QueryClient;
use kiroku_proto::{
    AuditRequest, Batch, Event, GapEvent, Hello, HostIdentity, NetworkEvent, NetworkReportRequest,
    P2pEvent, P2pReason, ProcessRef, SearchRequest, ShipRequest, event::Kind, ship_request,
    ship_response,
};
use kiroku_tests::Env;

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const INFO_HASH: &str = "c9e15763f722f23e98a29decdfae341b98d53056";

/// Ships `events` as agent `agent` (its certificate, one stream, sequence
/// numbers from 1); returns how many the collector stored.
async fn ship(env: &Env, agent: &str, mut events: Vec<Event>) -> anyhow::Result<u32> {
    let (cert, key) = env.identity("agent", agent)?;
    let ch = env.channel(Some((&cert, &key)), None).await?;
    for (i, e) in events.iter_mut().enumerate() {
        e.stream_id = "net-e2e".into();
        e.seq = i as u64 + 1;
        e.host = Some(HostIdentity {
            hostname: agent.into(),
            ..Default::default()
        });
    }
    let msgs = vec![
        ShipRequest {
            msg: Some(ship_request::Msg::Hello(Hello {
                stream_id: "net-e2e".into(),
                ..Default::default()
            })),
        },
        ShipRequest {
            msg: Some(ship_request::Msg::Batch(Batch {
                events,
                ..Default::default()
            })),
        },
    ];
    let mut resp = IngestClient::new(ch)
        .ship(tokio_stream::iter(msgs))
        .await?
        .into_inner();
    while let Some(m) = resp.message().await? {
        if let Some(ship_response::Msg::Ack(a)) = m.msg {
            return Ok(a.stored);
        }
    }
    anyhow::bail!("Ship ended without an Ack")
}

fn proc(name: &str, pid: u32, user: &str) -> ProcessRef {
    ProcessRef {
        pid,
        name: name.into(),
        exe: format!("/usr/bin/{name}"),
        uid: 1000,
        user: user.into(),
        ..Default::default()
    }
}

fn record(at: i64, kind: Kind) -> Event {
    Event {
        observed_at_ms: at,
        clock_offset_known: true,
        kind: Some(kind),
        ..Default::default()
    }
}

/// A TCP flow record: phase, process, remote, deltas (out, in), start.
fn flow(
    at: i64,
    phase: &str,
    p: &ProcessRef,
    remote: (&str, u32),
    delta: (u64, u64),
    start: i64,
) -> Event {
    record(
        at,
        Kind::Network(NetworkEvent {
            phase: phase.into(),
            protocol: "tcp".into(),
            direction: "outbound".into(),
            local_ip: "10.0.0.17".into(),
            local_port: 40_000,
            remote_ip: remote.0.into(),
            remote_port: remote.1,
            process: Some(p.clone()),
            attribution: "socket".into(),
            start_ms: start,
            end_ms: if phase == "close" { at } else { 0 },
            bytes_out_delta: delta.0,
            bytes_in_delta: delta.1,
            counters: "tcp_info".into(),
            connections: 1,
            flow_id: format!("boot/{}/{}:{}", p.pid, remote.0, remote.1),
            ..Default::default()
        }),
    )
}

fn p2p(at: i64, phase: &str, first: i64, reasons: &[&str], info_hashes: &[&str]) -> Event {
    record(
        at,
        Kind::P2p(P2pEvent {
            phase: phase.into(),
            process: Some(proc("qbittorrent-nox", 4242, "bob")),
            reasons: reasons
                .iter()
                .map(|c| P2pReason {
                    code: (*c).into(),
                    detail: format!("{c}: seen"),
                })
                .collect(),
            peers: 12,
            bytes_out: 180_000,
            bytes_in: 36_000_000,
            connections: 12,
            first_ms: first,
            last_ms: at,
            info_hashes: info_hashes.iter().map(|h| (*h).into()).collect(),
            trackers: vec!["tracker.example:6969/announce".into()],
            episode_id: "vm-17/4242/ep1".into(),
            ..Default::default()
        }),
    )
}

/// Two hours of vm-17 from `f`: a torrent client with 12 peers, curl
/// finishing a download begun before the range, an apt burst coalesced
/// into a summary, a listening socket, one P2P episode in three records,
/// a network gap and an smtp one; one record just after the range.
fn vm17(f: i64) -> Vec<Event> {
    let qb = proc("qbittorrent-nox", 4242, "bob");
    let curl = proc("curl", 77, "alice");
    let apt = proc("apt", 900, "root");
    let mut v = Vec::new();
    let mut listen = flow(
        f + 9 * MIN,
        "listen_open",
        &qb,
        ("", 0),
        (0, 0),
        f + 9 * MIN,
    );
    if let Some(Kind::Network(n)) = &mut listen.kind {
        n.direction = "listening".into();
        n.local_port = 6881;
    }
    v.push(listen);
    for i in 0..12u32 {
        let ip = format!("10.77.0.{}", i + 1);
        let remote = (ip.as_str(), 6881 + i);
        let start = f + 10 * MIN;
        v.push(flow(start, "open", &qb, remote, (0, 0), start));
        v.push(flow(
            f + 20 * MIN,
            "update",
            &qb,
            remote,
            (10_000, 2_000_000),
            start,
        ));
        v.push(flow(
            f + 30 * MIN,
            "close",
            &qb,
            remote,
            (5_000, 1_000_000),
            start,
        ));
    }
    let mirror = ("192.0.2.10", 443);
    let mut update = flow(
        f + MIN,
        "update",
        &curl,
        mirror,
        (100, 50_000),
        f - 30 * MIN,
    );
    let mut close = flow(
        f + 3 * MIN,
        "close",
        &curl,
        mirror,
        (50, 25_000),
        f - 30 * MIN,
    );
    for e in [&mut update, &mut close] {
        if let Some(Kind::Network(n)) = &mut e.kind {
            n.remote_name = "mirror.example.org".into();
        }
    }
    v.extend([update, close]);
    let mut summary = flow(
        f + 40 * MIN,
        "summary",
        &apt,
        ("192.0.2.10", 80),
        (2_500, 9_000_000),
        f + 38 * MIN,
    );
    if let Some(Kind::Network(n)) = &mut summary.kind {
        n.connections = 25;
        n.flow_id.clear();
    }
    v.push(summary);
    v.push(p2p(
        f + 11 * MIN,
        "detected",
        f + 10 * MIN,
        &["known_client", "many_peers"],
        &[],
    ));
    v.push(p2p(
        f + 21 * MIN,
        "update",
        f + 10 * MIN,
        &["many_peers", "bt_handshake"],
        &[INFO_HASH],
    ));
    v.push(p2p(
        f + 45 * MIN,
        "ended",
        f + 10 * MIN,
        &["known_client"],
        &[],
    ));
    for (source, count) in [("network", 7), ("smtp", 3)] {
        v.push(record(
            f + 50 * MIN,
            Kind::Gap(GapEvent {
                source: source.into(),
                reason: "notifications_lost".into(),
                count,
                first_ms: f + 48 * MIN,
                last_ms: f + 50 * MIN,
                detail: "the kernel dropped destroy notifications".into(),
                ..Default::default()
            }),
        ));
    }
    // Just after the range (its end is exclusive).
    v.push(flow(
        f + 2 * HOUR,
        "open",
        &curl,
        ("198.51.100.1", 443),
        (1, 1),
        f + 2 * HOUR,
    ));
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn network_report_tables_json_csv_and_audit() -> anyhow::Result<()> {
    let env = Env::new()?;
    let _collector = env.start_collector()?;
    let now = kiroku_common::now_ms();
    // A whole hour at least three hours ago: two hours of records, all in
    // the past, in 2-minute buckets on the hour.
    let f = (now - 3 * HOUR) / HOUR * HOUR;
    let events = vm17(f);
    let n = events.len();
    assert_eq!(ship(&env, "vm-17", events).await?, n as u32);
    // Another host at the same time: not in vm-17's report.
    let other = vec![flow(
        f + 15 * MIN,
        "open",
        &proc("nc", 5, "eve"),
        ("10.9.9.9", 9),
        (1_000_000, 1_000_000),
        f + 15 * MIN,
    )];
    assert_eq!(ship(&env, "vm-18", other).await?, 1);
    env.wait_for(
        SearchRequest {
            host: "vm-17".into(),
            ..Default::default()
        },
        n,
        Duration::from_secs(30),
    )
    .await?;

    // The rpc: the figures.
    let req = NetworkReportRequest {
        from_ms: f,
        to_ms: f + 2 * HOUR,
        host: "vm-17".into(),
        time_zone: "Asia/Tokyo".into(),
        ..Default::default()
    };
    let mut q = env.investigator().await?;
    let r = q.network_report(req.clone()).await?.into_inner();
    // 1 listen + 36 torrent + 2 curl + 1 summary network records.
    assert_eq!(r.records, 40);
    assert_eq!(r.connections, 12 + 1 + 25);
    assert_eq!(r.bytes_out, 180_000 + 150 + 2_500);
    assert_eq!(r.bytes_in, 36_000_000 + 75_000 + 9_000_000);
    let rows: Vec<_> = r
        .processes
        .iter()
        .map(|p| {
            (
                p.process.as_str(),
                p.user.as_str(),
                p.connections,
                p.peers,
                p.p2p,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("qbittorrent-nox", "bob", 12, 12, true),
            ("apt", "root", 25, 1, false),
            ("curl", "alice", 1, 1, false),
        ]
    );
    assert_eq!(r.processes[0].pids, [4242]);
    assert_eq!(
        (r.processes[0].first_ms, r.processes[0].last_ms),
        (f + 9 * MIN, f + 30 * MIN)
    );
    let mirror = &r.peers[0];
    assert_eq!(
        (mirror.remote_ip.as_str(), mirror.remote_name.as_str()),
        ("192.0.2.10", "mirror.example.org")
    );
    assert_eq!(
        (mirror.ports.clone(), mirror.processes.clone()),
        (vec![80, 443], vec!["apt".to_string(), "curl".into()])
    );
    assert_eq!(mirror.connections, 26);
    assert_eq!(r.peers.len(), 13);
    assert_eq!((r.bucket_ms, r.timeline.len()), (2 * MIN, 60));
    assert_eq!(r.timeline[10].bytes_in, 24_000_000);
    assert_eq!(r.timeline[5].connections, 12);
    assert_eq!(
        r.timeline.iter().map(|b| b.bytes_in).sum::<u64>(),
        r.bytes_in
    );
    assert_eq!(r.p2p.len(), 1);
    let Some(Kind::P2p(ep)) = &r.p2p[0].kind else {
        anyhow::bail!("not a p2p record: {:?}", r.p2p[0])
    };
    let codes: Vec<&str> = ep.reasons.iter().map(|x| x.code.as_str()).collect();
    assert_eq!(ep.phase, "ended");
    assert_eq!(codes, ["known_client", "many_peers", "bt_handshake"]);
    assert_eq!(ep.info_hashes, [INFO_HASH]);
    assert_eq!(r.gaps.len(), 1);
    assert!(matches!(&r.gaps[0].kind, Some(Kind::Gap(g)) if g.count == 7));
    assert!(r.notes.is_empty(), "{:?}", r.notes);

    // The CLI: the table, in the zone asked for.
    let (from, to) = (
        kiroku_common::rfc3339_ms(f),
        kiroku_common::rfc3339_ms(f + 2 * HOUR),
    );
    let report = |more: &[&str]| {
        let base = [
            "--tz",
            "Asia/Tokyo",
            "report",
            "network",
            "--host",
            "vm-17",
            "--from",
            &from,
            "--to",
            &to,
        ];
        env.cli(&[&base[..], more].concat())
    };
    let text = report(&[])?;
    for want in [
        "Network activity of vm-17",
        "40 records, 38 connections, 182.7 KB out, 45.1 MB in",
        "Timeline (2m buckets",
        "qbittorrent-nox",
        "mirror.example.org",
        "P2P",
        "reason bt_handshake",
        &format!("info_hash {INFO_HASH}"),
        "notifications_lost: 7 records",
        "+09:00",
    ] {
        assert!(text.contains(want), "{want:?} missing in\n{text}");
    }
    assert!(!text.contains("10.9.9.9"), "{text}");
    // 60 bars, the busiest (the torrent's updates) full width.
    let chart: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("Timeline"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(chart.len(), 60, "{text}");
    assert_eq!(chart[10].matches(['█', '▒']).count(), 40, "{}", chart[10]);
    // The first bucket: curl's update, its flow counted once.
    assert!(
        chart[0].ends_with(" 100 B out, 50.0 KB in, 1 connection"),
        "{}",
        chart[0]
    );

    // --json: the collector's report as it is.
    let json: serde_json::Value = serde_json::from_str(&report(&["--json"])?)?;
    assert_eq!(json["records"], 40, "{json}");
    assert_eq!(json["processes"][0]["process"], "qbittorrent-nox");
    assert_eq!(json["processes"][0]["bytes_in"], 36_000_000);
    assert_eq!(json["timeline"].as_array().map(Vec::len), Some(60));
    assert_eq!(json["p2p"][0]["kind"]["P2p"]["info_hashes"][0], INFO_HASH);

    // --csv: one table at a time, exact figures, times in UTC.
    let csv = report(&["--csv", "processes"])?;
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "process,exe,user,pids,connections,peers,bytes_out,bytes_in,first,last,p2p"
    );
    assert_eq!(
        lines[1],
        format!(
            "qbittorrent-nox,/usr/bin/qbittorrent-nox,bob,4242,12,12,180000,36000000,{},{},true",
            kiroku_common::rfc3339_ms(f + 9 * MIN),
            kiroku_common::rfc3339_ms(f + 30 * MIN)
        )
    );
    assert_eq!(lines.len(), 4);
    let peers = report(&["--csv", "peers"])?;
    assert!(
        peers
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("192.0.2.10,mirror.example.org,80 443,apt curl,26,")),
        "{peers}"
    );
    let timeline = report(&["--csv", "timeline"])?;
    let sum: u64 = timeline
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').nth(2)?.parse::<u64>().ok())
        .sum();
    assert_eq!((timeline.lines().count(), sum), (61, 45_075_000));
    let p2p_csv = report(&["--csv", "p2p"])?;
    assert!(
        p2p_csv.contains("known_client many_peers bt_handshake"),
        "{p2p_csv}"
    );

    // Refusals: a request without a host, and an agent asking.
    let bad = q
        .network_report(NetworkReportRequest {
            host: String::new(),
            ..req.clone()
        })
        .await;
    let st = bad
        .err()
        .ok_or_else(|| anyhow::anyhow!("accepted without a host"))?;
    assert_eq!(st.code(), tonic::Code::InvalidArgument);
    assert!(st.message().contains("host"), "{}", st.message());
    let (cert, key) = env.identity("agent", "vm-17")?;
    let as_agent = QueryClient::new(env.channel(Some((&cert, &key)), None).await?)
        .network_report(req)
        .await;
    assert_eq!(
        as_agent.err().map(|s| s.code()),
        Some(tonic::Code::PermissionDenied)
    );

    // Audited: each report with the records it read, the refusal with why.
    let audit = QueryClient::new(env.admin().await?)
        .audit(AuditRequest {
            limit: 1000,
            ..Default::default()
        })
        .await?
        .into_inner();
    let reports: Vec<_> = audit
        .entries
        .iter()
        .filter(|e| e.call == "NetworkReport")
        .collect();
    assert!(
        reports
            .iter()
            .filter(|e| e.results == 40 && e.filter.contains("host: \"vm-17\""))
            .count()
            >= 6,
        "{reports:?}"
    );
    assert!(
        reports
            .iter()
            .any(|e| e.filter.starts_with("REFUSED InvalidArgument") && e.identity.contains("inv")),
        "{reports:?}"
    );
    Ok(())
}
