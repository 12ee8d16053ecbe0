//! Network and P2P records indexed and found by each filter of 50–59,
//! counted by process, remote address and port (hand-made records).

use kiroku_proto::event::Kind;
use kiroku_proto::{Event, NetworkEvent, P2pEvent, P2pReason, ProcessRef, SearchRequest};

use super::super::{EventIndex, GroupBy, StatsQuery};

const HASH: &str = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a";

fn process(name: &str, pid: u32, user: &str) -> ProcessRef {
    ProcessRef {
        pid,
        name: name.into(),
        exe: format!("/usr/bin/{name}"),
        cmdline: format!("/usr/bin/{name} --seed-ratio=0 ubuntu.torrent"),
        uid: 1000,
        user: user.into(),
        started_ms: 1,
    }
}

/// A flow record: (id, phase, process, remote ip:port, local port,
/// direction, totals (out, in), deltas (out, in), start, end).
struct Flow {
    id: &'static str,
    phase: &'static str,
    proc_: (&'static str, u32),
    remote: (&'static str, u32),
    local_port: u32,
    direction: &'static str,
    protocol: &'static str,
    totals: (u64, u64),
    deltas: (u64, u64),
    span: (i64, i64),
    at: i64,
}

fn flow(x: Flow) -> Event {
    Event {
        event_id: x.id.into(),
        agent_id: "vm17".into(),
        observed_at_ms: x.at,
        kind: Some(Kind::Network(NetworkEvent {
            phase: x.phase.into(),
            protocol: x.protocol.into(),
            direction: x.direction.into(),
            local_ip: "10.0.0.17".into(),
            local_port: x.local_port,
            remote_ip: x.remote.0.into(),
            remote_port: x.remote.1,
            remote_name: if x.remote.0 == "93.184.216.34" {
                "tracker.example.org".into()
            } else {
                String::new()
            },
            process: Some(process(x.proc_.0, x.proc_.1, "alice")),
            attribution: "socket".into(),
            start_ms: x.span.0,
            end_ms: x.span.1,
            bytes_out: x.totals.0,
            bytes_in: x.totals.1,
            bytes_out_delta: x.deltas.0,
            bytes_in_delta: x.deltas.1,
            counters: "tcp_info".into(),
            connections: 1,
            info_hashes: if x.id == "b1" {
                vec![HASH.to_uppercase()]
            } else {
                Vec::new()
            },
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn records() -> Vec<Event> {
    let f = |id, phase, proc_, remote, local_port, direction, totals, deltas, span, at| Flow {
        id,
        phase,
        proc_,
        remote,
        local_port,
        direction,
        protocol: "tcp",
        totals,
        deltas,
        span,
        at,
    };
    let mut v = vec![
        // aria2c: one long flow to a peer (open, update, close) ...
        flow(f(
            "b1",
            "open",
            ("aria2c", 4242),
            ("198.51.100.7", 51413),
            40001,
            "outbound",
            (100, 200),
            (100, 200),
            (1_000, 0),
            1_000,
        )),
        flow(f(
            "b2",
            "update",
            ("aria2c", 4242),
            ("198.51.100.7", 51413),
            40001,
            "outbound",
            (5_000_100, 20_000_200),
            (5_000_000, 20_000_000),
            (1_000, 0),
            61_000,
        )),
        flow(f(
            "b3",
            "close",
            ("aria2c", 4242),
            ("198.51.100.7", 51413),
            40001,
            "outbound",
            (6_000_100, 30_000_200),
            (1_000_000, 10_000_000),
            (1_000, 301_000),
            301_000,
        )),
        // ... and the tracker.
        flow(f(
            "t1",
            "close",
            ("aria2c", 4242),
            ("93.184.216.34", 6969),
            40002,
            "outbound",
            (300, 700),
            (300, 700),
            (2_000, 2_500),
            2_500,
        )),
        // sshd accepting a connection, and listening.
        flow(f(
            "s1",
            "close",
            ("sshd", 900),
            ("192.0.2.5", 50522),
            22,
            "inbound",
            (4_000, 3_000),
            (4_000, 3_000),
            (5_000, 65_000),
            65_000,
        )),
        flow(f(
            "l1",
            "listen_open",
            ("sshd", 900),
            ("", 0),
            22,
            "listening",
            (0, 0),
            (0, 0),
            (500, 0),
            500,
        )),
    ];
    // A UDP DNS query by curl.
    let mut dns = f(
        "d1",
        "close",
        ("curl", 77),
        ("2001:db8::53", 53),
        53_000,
        "outbound",
        (40, 120),
        (40, 120),
        (3_000, 3_010),
        3_010,
    );
    dns.protocol = "udp";
    v.push(flow(dns));
    v.push(Event {
        event_id: "p1".into(),
        agent_id: "vm17".into(),
        observed_at_ms: 70_000,
        kind: Some(Kind::P2p(P2pEvent {
            phase: "detected".into(),
            process: Some(process("aria2c", 4242, "alice")),
            reasons: vec![
                P2pReason {
                    code: "bt_handshake".into(),
                    detail: "BitTorrent handshake to 198.51.100.7:51413".into(),
                },
                P2pReason {
                    code: "tracker_announce".into(),
                    detail: "announce to tracker.example.org:6969".into(),
                },
            ],
            peers: 12,
            sample_peers: vec!["198.51.100.7:51413".into(), "[2001:db8::7]:6881".into()],
            bytes_out: 5_000_400,
            bytes_in: 20_000_900,
            connections: 13,
            first_ms: 1_000,
            last_ms: 61_000,
            info_hashes: vec![HASH.into()],
            trackers: vec!["tracker.example.org:6969/announce".into()],
            episode_id: "vm17/4242/1000".into(),
        })),
        ..Default::default()
    });
    v
}

fn index() -> (tempfile::TempDir, EventIndex) {
    let dir = tempfile::tempdir().expect("tempdir");
    let idx = EventIndex::open(&dir.path().join("index")).expect("open");
    idx.add(&records()).expect("add");
    idx.commit().expect("commit");
    (dir, idx)
}

fn ids(idx: &EventIndex, r: &SearchRequest) -> Vec<String> {
    let (found, _, _) = idx.search(r, 0, 100).expect("search");
    let mut v: Vec<String> = found.into_iter().map(|e| e.event_id).collect();
    v.sort();
    v
}

#[test]
fn each_filter_finds_its_records() {
    let (_d, idx) = index();
    let req = |f: fn(&mut SearchRequest)| {
        let mut r = SearchRequest::default();
        f(&mut r);
        r
    };
    let cases: Vec<(&str, SearchRequest, Vec<&str>)> = vec![
        (
            "kind network",
            req(|r| r.kind = "network".into()),
            vec!["b1", "b2", "b3", "d1", "l1", "s1", "t1"],
        ),
        ("kind p2p", req(|r| r.kind = "P2P".into()), vec!["p1"]),
        (
            "process by name",
            req(|r| r.process = "Aria2c".into()),
            vec!["b1", "b2", "b3", "p1", "t1"],
        ),
        (
            "process by exe",
            req(|r| r.process = "/usr/bin/sshd".into()),
            vec!["l1", "s1"],
        ),
        (
            "process by pid",
            req(|r| r.process = "77".into()),
            vec!["d1"],
        ),
        (
            "remote address (a peer of the episode too)",
            req(|r| r.remote_ip = "198.51.100.7".into()),
            vec!["b1", "b2", "b3", "p1"],
        ),
        (
            "remote network, v6",
            req(|r| r.remote_ip = "2001:db8::/32".into()),
            vec!["d1", "p1"],
        ),
        (
            "remote network, v4",
            req(|r| {
                r.kind = "network".into();
                r.remote_ip = "192.0.2.0/24".into();
            }),
            vec!["s1"],
        ),
        ("local port", req(|r| r.port = 22), vec!["l1", "s1"]),
        (
            "remote port",
            req(|r| r.port = 51413),
            vec!["b1", "b2", "b3", "p1"],
        ),
        (
            "bytes in + out (totals) at least",
            req(|r| r.min_bytes = 10_000_000),
            vec!["b2", "b3", "p1"],
        ),
        (
            "bytes, exactly the total",
            req(|r| r.min_bytes = 7_000),
            vec!["b2", "b3", "p1", "s1"],
        ),
        (
            "duration at least (an open flow: as of its record)",
            req(|r| r.min_duration_ms = 60_000),
            vec!["b2", "b3", "p1", "s1"],
        ),
        ("protocol", req(|r| r.protocol = "UDP".into()), vec!["d1"]),
        (
            "direction",
            req(|r| r.net_direction = "inbound".into()),
            vec!["s1"],
        ),
        (
            "phase",
            req(|r| r.net_phase = "listen_open".into()),
            vec!["l1"],
        ),
        (
            "phase of an episode",
            req(|r| r.net_phase = "detected".into()),
            vec!["p1"],
        ),
        (
            "p2p reason",
            req(|r| r.p2p_reason = "tracker_announce".into()),
            vec!["p1"],
        ),
        (
            "info_hash, any case, flow and episode",
            req(|r| r.info_hash = HASH.to_uppercase()),
            vec!["b1", "p1"],
        ),
        (
            "the process's user",
            req(|r| {
                r.user = "ALICE".into();
                r.net_phase = "close".into();
            }),
            vec!["b3", "d1", "s1", "t1"],
        ),
        (
            "words: the remote's name, the command line",
            req(|r| r.text = "tracker.example.org".into()),
            vec!["p1", "t1"],
        ),
        (
            "words of the command line",
            req(|r| {
                r.text = "ubuntu.torrent".into();
                r.kind = "p2p".into();
            }),
            vec!["p1"],
        ),
        (
            "together",
            req(|r| {
                r.process = "aria2c".into();
                r.net_phase = "close".into();
                r.port = 6969;
            }),
            vec!["t1"],
        ),
    ];
    for (what, r, want) in cases {
        assert_eq!(ids(&idx, &r), want, "{what}");
    }
}

#[test]
fn bad_values_are_refused_naming_the_field() {
    let (_d, idx) = index();
    let cases: Vec<(SearchRequest, &str, &str)> = vec![
        (
            SearchRequest {
                remote_ip: "10.0.0.0/33".into(),
                ..Default::default()
            },
            "`remote_ip`",
            "10.1.0.0/16",
        ),
        (
            SearchRequest {
                port: 70_000,
                ..Default::default()
            },
            "`port`",
            "65535",
        ),
        (
            SearchRequest {
                protocol: "icmp".into(),
                ..Default::default()
            },
            "`protocol`",
            "tcp, udp",
        ),
        (
            SearchRequest {
                p2p_reason: "torrent".into(),
                ..Default::default()
            },
            "`p2p_reason`",
            "bt_handshake",
        ),
        (
            SearchRequest {
                info_hash: "abc".into(),
                ..Default::default()
            },
            "`info_hash`",
            "40 hex digits",
        ),
        (
            SearchRequest {
                net_direction: "up".into(),
                ..Default::default()
            },
            "`net_direction`",
            "listening",
        ),
        (
            SearchRequest {
                net_phase: "opened".into(),
                ..Default::default()
            },
            "`net_phase`",
            "listen_close",
        ),
        (
            SearchRequest {
                process: "x".repeat(2000),
                ..Default::default()
            },
            "`process`",
            "1024",
        ),
    ];
    for (r, field, hint) in cases {
        let e = idx.search(&r, 0, 10).expect_err(field).to_string();
        assert!(e.contains(field) && e.contains(hint), "{field}: {e}");
    }
}

#[test]
fn stats_sum_the_deltas_by_process_remote_and_port() {
    let (_d, idx) = index();
    let network = SearchRequest {
        kind: "network".into(),
        ..Default::default()
    };
    let stats = |by| {
        let q = StatsQuery {
            by,
            top: 0,
            zone: jiff::tz::TimeZone::UTC,
            zone_name: "UTC".into(),
        };
        let s = idx.stats(&network, &q).expect("stats");
        let mut groups: Vec<(String, u64, u64)> = s
            .groups
            .iter()
            .map(|g| (g.key.clone(), g.tally.count, g.tally.bytes))
            .collect();
        groups.sort();
        (groups, s.none.count, s.total.bytes)
    };
    // The three records of the long flow add up to its final totals
    // (36,000,300 bytes), not to the sum of their totals.
    let aria = 6_000_100 + 30_000_200 + 1_000;
    let total = aria + 7_000 + 160;
    let g = |k: &str, n, b| (k.to_owned(), n, b);
    assert_eq!(
        stats(GroupBy::Process),
        (
            vec![g("aria2c", 4, aria), g("curl", 1, 160), g("sshd", 2, 7_000)],
            0,
            total
        )
    );
    assert_eq!(
        stats(GroupBy::RemoteIp),
        (
            vec![
                g("192.0.2.5", 1, 7_000),
                g("198.51.100.7", 3, 36_000_300),
                g("2001:db8::53", 1, 160),
                g("93.184.216.34", 1, 1_000),
            ],
            1,
            total
        )
    );
    assert_eq!(
        stats(GroupBy::Port),
        (
            vec![
                g("22", 2, 7_000),
                g("51413", 3, 36_000_300),
                g("53", 1, 160),
                g("6969", 1, 1_000),
            ],
            0,
            total
        )
    );
}

#[test]
fn an_index_of_an_older_schema_refuses_every_network_filter() {
    let set: [fn(&mut SearchRequest); 10] = [
        |r| r.process = "aria2c".into(),
        |r| r.remote_ip = "10.0.0.1".into(),
        |r| r.port = 22,
        |r| r.min_bytes = 1,
        |r| r.min_duration_ms = 1,
        |r| r.protocol = "tcp".into(),
        |r| r.p2p_reason = "dht".into(),
        |r| r.info_hash = HASH.into(),
        |r| r.net_direction = "inbound".into(),
        |r| r.net_phase = "open".into(),
    ];
    for (i, f) in set.iter().enumerate() {
        let mut r = SearchRequest {
            kind: "network".into(),
            ..Default::default()
        };
        f(&mut r);
        assert!(
            super::super::legacy::refusal(&r, &[]).is_some(),
            "filter {} answered by an old index",
            50 + i
        );
    }
    let kind_only = SearchRequest {
        kind: "p2p".into(),
        ..Default::default()
    };
    assert_eq!(super::super::legacy::refusal(&kind_only, &[]), None);
}
