//! Network and P2P records at the collector (issue 21), end to end with the
//! real collector and CLI: hand-made `NetworkEvent` / `P2pEvent` records
//! shipped through the real gRPC Ingest API as an agent (their capture is
//! tested by network_capture.rs and network_p2p.rs); then each search
//! filter from the CLI (and its refusal naming the flag, and the
//! collector's naming the field for a gRPC client), `kiroku stats --kind
//! network --by process|remote-ip|port` summing the deltas, the table and
//! `kiroku show` of both kinds, and the `p2p` alert: once per episode,
//! also after the collector restarts.

use std::collections::BTreeMap;

use kiroku_proto::event::Kind;
use kiroku_proto::{
    AlertsRequest, Event, NetworkEvent, P2pEvent, P2pReason, ProcessRef, SearchRequest,
};
use kiroku_tests::Env;
use kiroku_tests::ship::ship_as_agent;

const HASH: &str = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a";
const RULE: &str = "p2p-file-sharing";

fn process(name: &str, pid: u32) -> ProcessRef {
    ProcessRef {
        pid,
        name: name.into(),
        exe: format!("/usr/bin/{name}"),
        cmdline: format!("/usr/bin/{name} ubuntu.torrent"),
        uid: 1000,
        user: "alice".into(),
        started_ms: 1,
    }
}

/// One flow record of the scenario.
struct Flow {
    phase: &'static str,
    process: (&'static str, u32),
    protocol: &'static str,
    direction: &'static str,
    local_port: u32,
    remote: (&'static str, u32),
    /// Totals (out, in) and deltas since the flow's previous record.
    totals: (u64, u64),
    deltas: (u64, u64),
    /// Start and end, minutes after t0 (end 0: still open).
    minutes: (i64, i64),
    connections: u64,
}

fn flow(t0: i64, at_min: i64, f: Flow) -> Event {
    Event {
        observed_at_ms: t0 + at_min * 60_000,
        kind: Some(Kind::Network(NetworkEvent {
            phase: f.phase.into(),
            protocol: f.protocol.into(),
            direction: f.direction.into(),
            local_ip: "10.0.0.17".into(),
            local_port: f.local_port,
            remote_ip: f.remote.0.into(),
            remote_port: f.remote.1,
            process: Some(process(f.process.0, f.process.1)),
            attribution: "socket".into(),
            start_ms: t0 + f.minutes.0 * 60_000,
            end_ms: if f.minutes.1 == 0 {
                0
            } else {
                t0 + f.minutes.1 * 60_000
            },
            bytes_out: f.totals.0,
            bytes_in: f.totals.1,
            bytes_out_delta: f.deltas.0,
            bytes_in_delta: f.deltas.1,
            counters: if f.protocol == "tcp" {
                "tcp_info".into()
            } else {
                "packets".into()
            },
            connections: f.connections,
            flow_id: format!("boot-1/{}/{}", f.process.1, f.remote.1),
            info_hashes: if f.phase == "open" && f.process.0 == "aria2c" {
                vec![HASH.into()]
            } else {
                Vec::new()
            },
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The flows of host vm-17, two hours ago: aria2c's long transfer with a
/// peer (open, update, close: 36,000,300 bytes in all) and its tracker;
/// sshd listening and accepting; a UDP DNS query and a summary of 40
/// short HTTPS connections by curl.
fn flows(t0: i64) -> Vec<Event> {
    let f =
        |phase, process, protocol, direction, local_port, remote, totals, deltas, minutes| Flow {
            phase,
            process,
            protocol,
            direction,
            local_port,
            remote,
            totals,
            deltas,
            minutes,
            connections: 1,
        };
    let peer = ("198.51.100.7", 51413);
    let aria = ("aria2c", 4242);
    let mut summary = f(
        "summary",
        ("curl", 77),
        "tcp",
        "outbound",
        0,
        ("203.0.113.9", 443),
        (30_000, 10_000),
        (30_000, 10_000),
        (20, 25),
    );
    summary.connections = 40;
    vec![
        flow(
            t0,
            0,
            f(
                "open",
                aria,
                "tcp",
                "outbound",
                40001,
                peer,
                (100, 200),
                (100, 200),
                (0, 0),
            ),
        ),
        flow(
            t0,
            1,
            f(
                "close",
                aria,
                "tcp",
                "outbound",
                40002,
                ("93.184.216.34", 6969),
                (300, 700),
                (300, 700),
                (0, 1),
            ),
        ),
        flow(
            t0,
            10,
            f(
                "update",
                aria,
                "tcp",
                "outbound",
                40001,
                peer,
                (5_000_100, 20_000_200),
                (5_000_000, 20_000_000),
                (0, 0),
            ),
        ),
        flow(
            t0,
            12,
            f(
                "listen_open",
                ("sshd", 900),
                "tcp",
                "listening",
                22,
                ("", 0),
                (0, 0),
                (0, 0),
                (12, 0),
            ),
        ),
        flow(
            t0,
            15,
            f(
                "close",
                ("sshd", 900),
                "tcp",
                "inbound",
                22,
                ("192.0.2.5", 50522),
                (4_000, 3_000),
                (4_000, 3_000),
                (13, 15),
            ),
        ),
        flow(
            t0,
            16,
            f(
                "close",
                ("curl", 77),
                "udp",
                "outbound",
                53000,
                ("2001:db8::53", 53),
                (40, 120),
                (40, 120),
                (16, 16),
            ),
        ),
        flow(t0, 25, summary),
        flow(
            t0,
            30,
            f(
                "close",
                aria,
                "tcp",
                "outbound",
                40001,
                peer,
                (6_000_100, 30_000_200),
                (1_000_000, 10_000_000),
                (0, 30),
            ),
        ),
    ]
}

fn episode(t0: i64, at_min: i64, name: &str, pid: u32, id: &str, phase: &str) -> Event {
    Event {
        observed_at_ms: t0 + at_min * 60_000,
        kind: Some(Kind::P2p(P2pEvent {
            phase: phase.into(),
            process: Some(process(name, pid)),
            reasons: vec![
                P2pReason {
                    code: "bt_handshake".into(),
                    detail: "BitTorrent handshake with 198.51.100.7:51413".into(),
                },
                P2pReason {
                    code: "tracker_announce".into(),
                    detail: "announce to 93.184.216.34:6969".into(),
                },
            ],
            peers: 12,
            sample_peers: vec!["198.51.100.7:51413".into(), "[2001:db8::7]:6881".into()],
            bytes_out: 5_000_400,
            bytes_in: 20_000_900,
            connections: 13,
            first_ms: t0,
            last_ms: t0 + at_min * 60_000,
            info_hashes: vec![HASH.into()],
            trackers: vec!["93.184.216.34:6969/announce".into()],
            episode_id: id.into(),
        })),
        ..Default::default()
    }
}

/// The ids `kiroku search --json` prints for `args` (sorted).
fn search(env: &Env, args: &[&str]) -> anyhow::Result<Vec<String>> {
    let mut all = vec!["search", "--json", "--limit", "1000"];
    all.extend_from_slice(args);
    let out = env.cli(&all)?;
    let mut ids = Vec::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)?;
        ids.push(v["event_id"].as_str().unwrap_or_default().to_owned());
    }
    ids.sort();
    Ok(ids)
}

/// (key → (events, bytes)) of `kiroku stats --kind network --by <by>`.
fn stats(env: &Env, by: &str) -> anyhow::Result<BTreeMap<String, (u64, u64)>> {
    let out = env.cli(&["stats", "--kind", "network", "--by", by, "--json"])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let num = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.parse().unwrap_or(0),
        n => n.as_u64().unwrap_or(0),
    };
    let mut m = BTreeMap::new();
    for g in v["groups"].as_array().into_iter().flatten() {
        m.insert(
            g["key"].as_str().unwrap_or_default().to_owned(),
            (num(&g["count"]), num(&g["bytes"])),
        );
    }
    m.insert(
        "(total)".into(),
        (num(&v["total_count"]), num(&v["total_bytes"])),
    );
    Ok(m)
}

/// Episode ids of the p2p alerts the collector replays.
async fn p2p_alerts(env: &Env) -> anyhow::Result<Vec<String>> {
    let mut q = env.investigator().await?;
    let mut s = q
        .alerts(AlertsRequest {
            from_ms: 1,
            follow: false,
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(a) = s.message().await? {
        if a.rule != RULE {
            continue;
        }
        anyhow::ensure!(a.kind == "p2p" && a.severity == "critical", "{a:?}");
        let ep = match a.event.and_then(|e| e.kind) {
            Some(Kind::P2p(p)) => p.episode_id,
            other => anyhow::bail!("a p2p alert on {other:?}"),
        };
        out.push(ep);
    }
    out.sort();
    Ok(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn network_records_searched_counted_shown_and_p2p_alerted_once_per_episode()
-> anyhow::Result<()> {
    let env = Env::new()?;
    std::fs::write(
        env.path().join("rules.toml"),
        format!("[[rule]]\nname = \"{RULE}\"\nkind = \"p2p\"\nseverity = \"critical\"\n"),
    )?;
    let alerts = "[alerts]\nrules = \"rules.toml\"\n";
    let mut collector = env.start_collector_with(alerts)?;
    let t0 = (kiroku_common::now_ms() - 2 * 3_600_000) / 60_000 * 60_000;

    let mut events = flows(t0);
    events.push(episode(t0, 2, "aria2c", 4242, "vm17/4242/E1", "detected"));
    events.push(episode(t0, 20, "aria2c", 4242, "vm17/4242/E1", "update"));
    events.push(episode(t0, 40, "aria2c", 4242, "vm17/4242/E1", "ended"));
    let n = events.len();
    let (ack, ids) = ship_as_agent(&env, "vm17", "vm-17", "net1", 1, events).await?;
    assert_eq!(ack.stored as usize, n, "{ack:?}");
    let id = |i: usize| ids[i].clone();
    let (open, tracker, update, listen, ssh, dns, summary, close) =
        (id(0), id(1), id(2), id(3), id(4), id(5), id(6), id(7));
    let (detected, p2p_update, ended) = (id(8), id(9), id(10));
    let sorted = |v: &[&String]| {
        let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    };

    // Each filter from the CLI.
    let upper_hash = HASH.to_uppercase();
    let aria_flows = [&open, &tracker, &update, &close];
    let cases: Vec<(Vec<&str>, Vec<String>)> = vec![
        (
            vec!["--kind", "network"],
            sorted(&[
                &open, &tracker, &update, &listen, &ssh, &dns, &summary, &close,
            ]),
        ),
        (
            vec!["--kind", "p2p"],
            sorted(&[&detected, &p2p_update, &ended]),
        ),
        (
            vec!["--kind", "network", "--process", "aria2c"],
            sorted(&aria_flows),
        ),
        (
            vec!["--kind", "network", "--process", "/usr/bin/sshd"],
            sorted(&[&listen, &ssh]),
        ),
        (vec!["--process", "77"], sorted(&[&dns, &summary])),
        (
            vec!["--remote-ip", "198.51.100.0/24"],
            sorted(&[&open, &update, &close, &detected, &p2p_update, &ended]),
        ),
        (
            vec!["--kind", "network", "--remote-ip", "2001:db8::53"],
            sorted(&[&dns]),
        ),
        (vec!["--port", "22"], sorted(&[&listen, &ssh])),
        (
            vec!["--kind", "network", "--min-bytes", "10M"],
            sorted(&[&update, &close]),
        ),
        (
            vec!["--kind", "network", "--min-bytes", "7KB"],
            sorted(&[&update, &ssh, &summary, &close]),
        ),
        (
            vec!["--kind", "network", "--min-duration", "10m"],
            sorted(&[&update, &close]),
        ),
        (vec!["--protocol", "udp"], sorted(&[&dns])),
        (
            vec!["--p2p-reason", "tracker_announce"],
            sorted(&[&detected, &p2p_update, &ended]),
        ),
        (
            vec!["--info-hash", &upper_hash],
            sorted(&[&open, &detected, &p2p_update, &ended]),
        ),
        (vec!["--net-direction", "inbound"], sorted(&[&ssh])),
        (vec!["--net-phase", "listen_open"], sorted(&[&listen])),
        (vec!["--net-phase", "detected"], sorted(&[&detected])),
        (
            vec![
                "--kind",
                "network",
                "--user",
                "alice",
                "--net-phase",
                "summary",
            ],
            sorted(&[&summary]),
        ),
        (
            vec![
                "--kind",
                "p2p",
                "--text",
                "ubuntu.torrent",
                "--net-phase",
                "ended",
            ],
            sorted(&[&ended]),
        ),
    ];
    for (args, want) in &cases {
        assert_eq!(&search(&env, args)?, want, "kiroku search {args:?}");
    }

    // A value that cannot be right: the CLI names the flag, the collector
    // (asked by a gRPC client) the field.
    for (args, flag) in [
        (&["--protocol", "icmp"][..], "--protocol"),
        (&["--remote-ip", "10.0.0.0/40"], "--remote-ip"),
        (&["--net-phase", "opened"], "--net-phase"),
        (&["--info-hash", "abc"], "--info-hash"),
        (&["--min-bytes", "10X"], "--min-bytes"),
        (&["--port", "70000"], "--port"),
    ] {
        let mut all = vec!["search"];
        all.extend_from_slice(args);
        let (code, _, err) = env.cli_as("investigator-inv", &all)?;
        assert_ne!(code, 0, "{args:?}");
        assert!(err.contains(flag), "{args:?}: {err}");
    }
    let mut q = env.investigator().await?;
    for (r, field) in [
        (
            SearchRequest {
                p2p_reason: "torrent".into(),
                ..Default::default()
            },
            "p2p_reason",
        ),
        (
            SearchRequest {
                port: 70_000,
                ..Default::default()
            },
            "port",
        ),
    ] {
        let e = q.search(r).await.expect_err(field);
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(field), "{e:?}");
    }

    // Counts and bytes: a flow's deltas add up to its totals, however many
    // records it has; the summary's 40 connections are one record.
    let aria_bytes = 6_000_100 + 30_000_200 + 1_000;
    let all_bytes = aria_bytes + 7_000 + 160 + 40_000;
    let want = |rows: &[(&str, u64, u64)]| {
        rows.iter()
            .map(|(k, n, b)| (k.to_string(), (*n, *b)))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(
        stats(&env, "process")?,
        want(&[
            ("aria2c", 4, aria_bytes),
            ("curl", 2, 40_160),
            ("sshd", 2, 7_000),
            ("(total)", 8, all_bytes),
        ])
    );
    assert_eq!(
        stats(&env, "remote-ip")?,
        want(&[
            ("198.51.100.7", 3, 36_000_300),
            ("93.184.216.34", 1, 1_000),
            ("192.0.2.5", 1, 7_000),
            ("2001:db8::53", 1, 160),
            ("203.0.113.9", 1, 40_000),
            ("(total)", 8, all_bytes),
        ])
    );
    assert_eq!(
        stats(&env, "port")?,
        want(&[
            ("51413", 3, 36_000_300),
            ("6969", 1, 1_000),
            ("22", 2, 7_000),
            ("53", 1, 160),
            ("443", 1, 40_000),
            ("(total)", 8, all_bytes),
        ])
    );
    let chart = env.cli(&["stats", "--kind", "network", "--by", "process"])?;
    assert!(
        chart
            .lines()
            .any(|l| l.starts_with("aria2c") && l.contains("36.0 MB")),
        "{chart}"
    );

    // The table and `kiroku show` of both kinds.
    let table = env.cli(&["search", "--process", "aria2c", "--net-phase", "close"])?;
    for want in ["aria2c (pid 4242)", "198.51.100.7:51413", "network: close"] {
        assert!(table.contains(want), "{want:?} in\n{table}");
    }
    let table = env.cli(&["search", "--kind", "p2p", "--net-phase", "detected"])?;
    for want in ["12 peers", "bt_handshake", "p2p: detected"] {
        assert!(table.contains(want), "{want:?} in\n{table}");
    }
    let shown = env.cli(&["show", &close])?;
    for want in [
        "network: close (tcp outbound)",
        "remote: 198.51.100.7:51413",
        "process: aria2c (pid 4242)",
        "lasted: 30 min 0 s",
        "6000100 bytes out, 30000200 bytes in (the kernel's counters)",
        "since previous: 1000000 bytes out, 10000000 bytes in",
    ] {
        assert!(shown.contains(want), "{want:?} in\n{shown}");
    }
    let shown = env.cli(&["show", &detected])?;
    for want in [
        "reason: tracker_announce: announce to 93.184.216.34:6969",
        "peers: 12 distinct; 198.51.100.7:51413, [2001:db8::7]:6881",
        HASH,
        "see: kiroku report network --host vm-17",
    ] {
        assert!(shown.contains(want), "{want:?} in\n{shown}");
    }

    // The p2p alert: once for the episode (detected, not its update or
    // end), tagged on the detected record.
    assert_eq!(p2p_alerts(&env).await?, ["vm17/4242/E1"]);
    assert_eq!(
        search(&env, &["--alert", RULE])?,
        vec![detected.clone()],
        "the detected record carries the alert's tag"
    );
    // Another process's episode fires.
    let (ack, _) = ship_as_agent(
        &env,
        "vm17",
        "vm-17",
        "net1",
        n as u64 + 1,
        vec![episode(
            t0,
            50,
            "qbittorrent-nox",
            5151,
            "vm17/5151/E2",
            "detected",
        )],
    )
    .await?;
    assert_eq!(ack.stored, 1);
    assert_eq!(p2p_alerts(&env).await?, ["vm17/4242/E1", "vm17/5151/E2"]);

    // After a restart the collector still knows which episodes fired: the
    // agent's records of them (a new stream: the agent restarted too) fire
    // nothing, a new episode fires once.
    collector.terminate();
    let _collector = env.start_collector_with(alerts)?;
    let (ack, _) = ship_as_agent(
        &env,
        "vm17",
        "vm-17",
        "net2",
        1,
        vec![
            episode(t0, 60, "aria2c", 4242, "vm17/4242/E1", "update"),
            episode(t0, 60, "qbittorrent-nox", 5151, "vm17/5151/E2", "detected"),
            episode(t0, 61, "aria2c", 4343, "vm17/4343/E3", "detected"),
            episode(t0, 62, "aria2c", 4343, "vm17/4343/E3", "update"),
        ],
    )
    .await?;
    assert_eq!(ack.stored, 4);
    assert_eq!(
        p2p_alerts(&env).await?,
        ["vm17/4242/E1", "vm17/4343/E3", "vm17/5151/E2"]
    );
    Ok(())
}
