//! The report over hand-made records: the aggregation's figures, the
//! bounded scan over a real index (pages, a crowded millisecond, the
//! host and the range), the bounds said in notes, and refused requests.

use super::*;
use kiroku_proto::{
    Event, GapEvent, HostIdentity, NetworkEvent, P2pEvent, P2pReason, ProcessRef, event::Kind,
};

const T0: i64 = 1_796_522_400_000; // 2026-12-06T02:00:00Z
const MIN: i64 = 60_000;

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

/// A flow record: (phase, process, remote ip:port, deltas out/in).
#[allow(clippy::too_many_arguments)]
fn flow(
    seq: u64,
    at: i64,
    phase: &str,
    p: &ProcessRef,
    remote: (&str, u32),
    delta: (u64, u64),
    start: i64,
    flow_id: &str,
) -> Event {
    ev(
        seq,
        at,
        Kind::Network(NetworkEvent {
            phase: phase.into(),
            protocol: "tcp".into(),
            direction: "outbound".into(),
            remote_ip: remote.0.into(),
            remote_port: remote.1,
            process: Some(p.clone()),
            attribution: "socket".into(),
            start_ms: start,
            end_ms: if phase == "close" { at } else { 0 },
            bytes_out_delta: delta.0,
            bytes_in_delta: delta.1,
            connections: 1,
            flow_id: flow_id.into(),
            ..Default::default()
        }),
    )
}

fn ev(seq: u64, at: i64, kind: Kind) -> Event {
    Event {
        event_id: format!("vm-17/s/{seq}"),
        agent_id: "vm-17".into(),
        stream_id: "s".into(),
        seq,
        observed_at_ms: at,
        received_at_ms: at,
        host: Some(HostIdentity {
            hostname: "vm-17".into(),
            ..Default::default()
        }),
        kind: Some(kind),
        ..Default::default()
    }
}

fn episode(seq: u64, at: i64, phase: &str, reasons: &[&str], hashes: &[&str], peers: u64) -> Event {
    ev(
        seq,
        at,
        Kind::P2p(P2pEvent {
            phase: phase.into(),
            process: Some(proc("qbittorrent-nox", 4242, "bob")),
            reasons: reasons
                .iter()
                .map(|c| P2pReason {
                    code: (*c).into(),
                    detail: format!("{c} seen"),
                })
                .collect(),
            peers,
            first_ms: T0 + 10 * MIN,
            last_ms: at,
            info_hashes: hashes.iter().map(|h| (*h).into()).collect(),
            episode_id: "vm-17/4242/1".into(),
            ..Default::default()
        }),
    )
}

fn gap(seq: u64, at: i64, source: &str, count: u64) -> Event {
    ev(
        seq,
        at,
        Kind::Gap(GapEvent {
            source: source.into(),
            reason: "notifications_lost".into(),
            count,
            first_ms: at - MIN,
            last_ms: at,
            ..Default::default()
        }),
    )
}

/// One hour of vm-17: a BitTorrent client talking to 5 peers, curl
/// fetching from one server (a flow opened before the hour too), an apt
/// summary, a listening socket, a P2P episode in three records, gaps.
fn the_hour() -> Vec<Event> {
    let qb = proc("qbittorrent-nox", 4242, "bob");
    let curl = proc("curl", 77, "alice");
    let apt = proc("apt", 900, "root");
    let mut v = Vec::new();
    let mut seq = 0;
    let mut next = || {
        seq += 1;
        seq
    };
    for i in 0..5u32 {
        let ip = format!("10.9.0.{}", i + 1);
        let id = format!("b/{i}");
        let start = T0 + 10 * MIN;
        v.push(flow(
            next(),
            start,
            "open",
            &qb,
            (&ip, 51413),
            (0, 0),
            start,
            &id,
        ));
        v.push(flow(
            next(),
            start + 5 * MIN,
            "update",
            &qb,
            (&ip, 51413),
            (1000, 100_000),
            start,
            &id,
        ));
        v.push(flow(
            next(),
            start + 9 * MIN,
            "close",
            &qb,
            (&ip, 51413),
            (500, 50_000),
            start,
            &id,
        ));
    }
    // A download that began before the hour: two updates in it, counted
    // as one connection.
    let early = T0 - 30 * MIN;
    v.push(flow(
        next(),
        T0 + MIN,
        "update",
        &curl,
        ("192.0.2.80", 443),
        (200, 7000),
        early,
        "c/1",
    ));
    v.push(flow(
        next(),
        T0 + 2 * MIN,
        "close",
        &curl,
        ("192.0.2.80", 443),
        (100, 3000),
        early,
        "c/1",
    ));
    let mut s = flow(
        next(),
        T0 + 30 * MIN,
        "summary",
        &apt,
        ("192.0.2.80", 80),
        (40, 4000),
        T0 + 29 * MIN,
        "",
    );
    if let Some(Kind::Network(n)) = &mut s.kind {
        n.connections = 20;
        n.remote_name = "deb.example.org".into();
    }
    v.push(s);
    let mut l = flow(
        next(),
        T0 + 3 * MIN,
        "listen_open",
        &qb,
        ("", 0),
        (0, 0),
        T0 + 3 * MIN,
        "l/1",
    );
    if let Some(Kind::Network(n)) = &mut l.kind {
        n.direction = "listening".into();
        n.local_port = 51413;
    }
    v.push(l);
    v.push(episode(
        next(),
        T0 + 11 * MIN,
        "detected",
        &["known_client"],
        &[],
        2,
    ));
    v.push(episode(
        next(),
        T0 + 16 * MIN,
        "update",
        &["many_peers", "known_client"],
        &["aa".repeat(20).as_str()],
        5,
    ));
    v.push(episode(
        next(),
        T0 + 25 * MIN,
        "ended",
        &["known_client"],
        &[],
        5,
    ));
    v.push(gap(next(), T0 + 40 * MIN, "network", 12));
    v.push(gap(next(), T0 + 41 * MIN, "smtp", 3));
    v
}

fn request() -> NetworkReportRequest {
    NetworkReportRequest {
        from_ms: T0,
        to_ms: T0 + 60 * MIN,
        host: "vm-17".into(),
        ..Default::default()
    }
}

fn aggregate(events: Vec<Event>, r: &NetworkReportRequest, bounds: Bounds) -> NetworkReport {
    let plan = plan(r).expect("plan");
    let mut agg = Aggregator::new(r.from_ms, plan.timeline, bounds);
    for e in events {
        agg.add(e);
    }
    agg.finish(plan.top)
}

#[test]
fn per_process_and_per_peer_figures() {
    let rep = aggregate(the_hour(), &request(), Bounds::default());
    // 15 + 2 + 1 + 1 network records; 5 + 1 + 20 connections.
    assert_eq!(rep.records, 19);
    assert_eq!(rep.connections, 26);
    assert_eq!(rep.bytes_out, 5 * 1500 + 300 + 40);
    assert_eq!(rep.bytes_in, 5 * 150_000 + 10_000 + 4000);
    // (process, user, connections, peers, out, in, p2p)
    let rows: Vec<_> = rep
        .processes
        .iter()
        .map(|p| {
            (
                p.process.as_str(),
                p.user.as_str(),
                p.connections,
                p.peers,
                p.bytes_out,
                p.bytes_in,
                p.p2p,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("qbittorrent-nox", "bob", 5, 5, 7500, 750_000, true),
            ("curl", "alice", 1, 1, 300, 10_000, false),
            ("apt", "root", 20, 1, 40, 4000, false),
        ]
    );
    let qb = &rep.processes[0];
    assert_eq!(qb.pids, [4242]);
    assert_eq!(qb.exe, "/usr/bin/qbittorrent-nox");
    // From the listening socket's opening to the last close.
    assert_eq!((qb.first_ms, qb.last_ms), (T0 + 3 * MIN, T0 + 19 * MIN));
    // curl's flow began before the range: its first is the flow's start.
    assert_eq!(rep.processes[1].first_ms, T0 - 30 * MIN);
    // Peers: the torrent's five by bytes, then the server both curl and
    // apt used.
    let server = &rep.peers[5];
    assert_eq!(server.remote_ip, "192.0.2.80");
    assert_eq!(rep.peers[0].remote_ip, "10.9.0.1");
    assert_eq!(rep.peers[0].processes, ["qbittorrent-nox"]);
    assert_eq!(server.remote_name, "deb.example.org");
    assert_eq!(server.ports, [80, 443]);
    assert_eq!(server.processes, ["apt", "curl"]);
    assert_eq!((server.connections, server.bytes_in), (21, 14_000));
    assert_eq!(rep.peers.len(), 6);
    assert_eq!((rep.other_processes, rep.other_peers), (0, 0));
    assert!(rep.notes.is_empty(), "{:?}", rep.notes);
}

#[test]
fn the_timeline_adds_up_to_the_totals() {
    let rep = aggregate(the_hour(), &request(), Bounds::default());
    // One hour: one-minute buckets from the hour.
    assert_eq!(rep.bucket_ms, MIN);
    assert_eq!(rep.timeline.len(), 60);
    assert_eq!(rep.timeline[0].start_ms, T0);
    let sum = |f: fn(&kiroku_proto::TrafficBucket) -> u64| rep.timeline.iter().map(f).sum::<u64>();
    assert_eq!(sum(|b| b.bytes_out), rep.bytes_out);
    assert_eq!(sum(|b| b.bytes_in), rep.bytes_in);
    assert_eq!(sum(|b| b.connections), rep.connections);
    // The torrent's updates at +15 min: 5 × 100,000 in.
    assert_eq!(rep.timeline[15].bytes_in, 500_000);
    assert_eq!(rep.timeline[10].connections, 5);
    assert_eq!(rep.timeline[30].connections, 20);
}

#[test]
fn one_p2p_finding_per_episode_and_network_gaps_only() {
    let rep = aggregate(the_hour(), &request(), Bounds::default());
    assert_eq!(rep.p2p.len(), 1);
    let e = &rep.p2p[0];
    // The latest record, with every reason and info_hash the episode had.
    assert_eq!(e.event_id, "vm-17/s/22");
    let Some(Kind::P2p(p)) = &e.kind else {
        panic!("not a p2p record")
    };
    assert_eq!(p.phase, "ended");
    let codes: Vec<&str> = p.reasons.iter().map(|r| r.code.as_str()).collect();
    assert_eq!(codes, ["known_client", "many_peers"]);
    assert_eq!(p.info_hashes, ["aa".repeat(20)]);
    assert_eq!((p.peers, p.first_ms), (5, T0 + 10 * MIN));
    assert_eq!(rep.gaps.len(), 1);
    assert!(matches!(&rep.gaps[0].kind, Some(Kind::Gap(g)) if g.count == 12));
}

#[test]
fn bounds_reached_are_said() {
    let bounds = Bounds {
        processes: 1,
        peers: 2,
        pairs: 3,
        early_flows: 0,
        episodes: 0,
        gaps: 0,
    };
    let rep = aggregate(the_hour(), &request(), bounds);
    // The totals and the timeline still count everything but the early
    // flow's connection.
    assert_eq!(rep.records, 19);
    assert_eq!(rep.bytes_in, 5 * 150_000 + 10_000 + 4000);
    assert_eq!(rep.connections, 25);
    assert_eq!(rep.processes.len(), 1);
    assert_eq!(rep.processes[0].peers, 3);
    assert_eq!(rep.peers.len(), 2);
    assert!(rep.p2p.is_empty() && rep.gaps.is_empty());
    let notes = rep.notes.join("\n");
    for want in [
        "records of processes beyond the first 1",
        "records of remote addresses beyond the first 2",
        "peer counts are lower bounds: 3 distinct",
        "connections are a lower bound: 2 records",
        "3 records of P2P episodes beyond the first 0",
        "1 network gap records beyond the first 0",
    ] {
        assert!(notes.contains(want), "{want:?} missing in\n{notes}");
    }
}

#[test]
fn top_cuts_the_tables_and_counts_the_rest() {
    let r = NetworkReportRequest {
        top: 2,
        ..request()
    };
    let rep = aggregate(the_hour(), &r, Bounds::default());
    assert_eq!((rep.processes.len(), rep.other_processes), (2, 1));
    assert_eq!((rep.peers.len(), rep.other_peers), (2, 4));
}

/// An index holding `events`, committed.
fn index_with(events: &[Event]) -> (tempfile::TempDir, EventIndex) {
    let dir = tempfile::tempdir().expect("tempdir");
    let idx = EventIndex::open(dir.path()).expect("open");
    for chunk in events.chunks(1000) {
        idx.add(chunk).expect("add");
    }
    idx.commit().expect("commit");
    (dir, idx)
}

#[test]
fn read_from_the_index_by_host_and_range() {
    let mut events = the_hour();
    // Another host's traffic, and vm-17's own outside the range.
    let mut other = flow(
        100,
        T0 + 5 * MIN,
        "open",
        &proc("nc", 1, "eve"),
        ("10.0.0.1", 9),
        (5, 5),
        T0,
        "o/1",
    );
    other.event_id = "vm-18/s/100".into();
    other.agent_id = "vm-18".into();
    other.host = Some(HostIdentity {
        hostname: "vm-18".into(),
        ..Default::default()
    });
    events.push(other);
    events.push(flow(
        101,
        T0 - 1,
        "open",
        &proc("nc", 2, "eve"),
        ("10.0.0.1", 9),
        (5, 5),
        T0 - 1,
        "o/2",
    ));
    events.push(flow(
        102,
        T0 + 60 * MIN,
        "open",
        &proc("nc", 3, "eve"),
        ("10.0.0.1", 9),
        (5, 5),
        T0,
        "o/3",
    ));
    // An agent whose clock runs 2 h fast: corrected, inside the hour.
    let mut skewed = flow(
        103,
        T0 + 125 * MIN,
        "open",
        &proc("ssh", 4, "eve"),
        ("10.0.0.2", 22),
        (7, 7),
        T0 + 125 * MIN,
        "o/4",
    );
    skewed.clock_offset_known = true;
    skewed.clock_offset_ms = 120 * MIN;
    events.push(skewed);
    let (_dir, idx) = index_with(&events);
    let rep = build(&idx, &request(), Bounds::default()).expect("report");
    assert_eq!(rep.records, 20);
    assert_eq!(rep.host, "vm-17");
    let names: Vec<&str> = rep.processes.iter().map(|p| p.process.as_str()).collect();
    assert_eq!(names, ["qbittorrent-nox", "curl", "apt", "ssh"]);
    let ssh = &rep.processes[3];
    assert_eq!(ssh.first_ms, T0 + 5 * MIN);
    assert_eq!(rep.p2p.len(), 1);
    assert_eq!(rep.gaps.len(), 1);
    // By agent id: the same.
    let by_agent = NetworkReportRequest {
        host: String::new(),
        agent_id: "vm-17".into(),
        ..request()
    };
    let rep2 = build(&idx, &by_agent, Bounds::default()).expect("report");
    assert_eq!((rep2.records, rep2.bytes_in), (rep.records, rep.bytes_in));
}

#[test]
fn the_scan_reads_every_record_in_pages() {
    // 2,500 records: 1,200 in one millisecond (more than a page), the
    // rest a millisecond apart around it, each 1 byte out.
    let p = proc("burst", 9, "eve");
    let mut events = Vec::new();
    for i in 0..2500u64 {
        let at = match i {
            0..650 => T0 + i as i64,
            650..1850 => T0 + 1000,
            _ => T0 + 2000 + i as i64,
        };
        events.push(flow(
            i + 1,
            at,
            "open",
            &p,
            ("10.1.0.1", 80),
            (1, 0),
            at,
            &format!("f/{i}"),
        ));
    }
    let (_dir, idx) = index_with(&events);
    let mut ids = std::collections::HashSet::new();
    let mut last = 0;
    let given = scan::each_event(
        &idx,
        &SearchRequest {
            from_ms: T0,
            to_ms: T0 + 60 * MIN,
            host: "vm-17".into(),
            ..Default::default()
        },
        |e| {
            assert!(
                kiroku_common::mail::corrected_ms(&e) >= last,
                "out of order"
            );
            last = kiroku_common::mail::corrected_ms(&e);
            assert!(ids.insert(e.event_id), "read twice");
            true
        },
    )
    .expect("scan");
    assert_eq!((given, ids.len()), (2500, 2500));
    let rep = build(&idx, &request(), Bounds::default()).expect("report");
    assert_eq!(
        (rep.records, rep.connections, rep.bytes_out),
        (2500, 2500, 2500)
    );
}

#[test]
fn requests_refused_with_the_field_at_fault() {
    let r = request();
    for (bad, want) in [
        (
            NetworkReportRequest {
                host: String::new(),
                ..r.clone()
            },
            "host: name the host",
        ),
        (
            NetworkReportRequest {
                from_ms: 0,
                ..r.clone()
            },
            "from_ms (0) must be set",
        ),
        (
            NetworkReportRequest {
                to_ms: r.from_ms,
                ..r.clone()
            },
            "must be after from_ms",
        ),
        (
            NetworkReportRequest {
                top: 1001,
                ..r.clone()
            },
            "top 1001 is over the most, 1000",
        ),
        (
            NetworkReportRequest {
                bucket_ms: 10,
                ..r.clone()
            },
            "bucket_ms 10 is under the shortest",
        ),
        (
            NetworkReportRequest {
                bucket_ms: 1000,
                ..r.clone()
            },
            "more than 1000 buckets",
        ),
        (
            NetworkReportRequest {
                time_zone: "Mars/Olympus".into(),
                ..r.clone()
            },
            "time_zone: unknown time zone",
        ),
    ] {
        match plan(&bad) {
            Err(ReportError::BadRequest(m)) => assert!(m.contains(want), "{want:?} not in {m:?}"),
            Err(e) => panic!("{want}: {e}"),
            Ok(_) => panic!("{want}: accepted"),
        }
    }
    // A chosen bucket in a zone: the hour's buckets start on its minutes.
    let ok = plan(&NetworkReportRequest {
        time_zone: "Asia/Tokyo".into(),
        bucket_ms: 5 * MIN,
        ..r
    })
    .expect("plan");
    assert_eq!(ok.timeline.step(), 5 * MIN);
}

#[test]
fn a_p2p_record_flags_its_process_by_name_and_pid_too() {
    // The detection names the process without its executable (told
    // differently than the flows did): still the same row, flagged.
    let mut events = the_hour();
    for e in &mut events {
        if let Some(Kind::P2p(p)) = &mut e.kind
            && let Some(r) = &mut p.process
        {
            r.exe.clear();
            r.user.clear();
        }
    }
    let rep = aggregate(events, &request(), Bounds::default());
    let flags: Vec<(&str, bool)> = rep
        .processes
        .iter()
        .map(|p| (p.process.as_str(), p.p2p))
        .collect();
    assert_eq!(
        flags,
        [("qbittorrent-nox", true), ("curl", false), ("apt", false)]
    );
}

#[test]
fn a_flow_whose_only_record_is_its_close_counts_as_a_connection() {
    let curl = proc("curl", 4242, "alice");
    let mut only_close = flow(
        1,
        T0 + MIN,
        "close",
        &curl,
        ("192.0.2.7", 443),
        (10, 20),
        T0 + MIN - 5,
        "b-1",
    );
    let mut opened = flow(
        2,
        T0 + MIN,
        "open",
        &curl,
        ("192.0.2.7", 443),
        (1, 1),
        T0 + MIN,
        "b-2",
    );
    let closed = flow(
        3,
        T0 + 2 * MIN,
        "close",
        &curl,
        ("192.0.2.7", 443),
        (5, 5),
        T0 + MIN,
        "b-2",
    );
    for (e, first) in [(&mut only_close, true), (&mut opened, true)] {
        if let Some(Kind::Network(n)) = &mut e.kind {
            n.first = first;
        }
    }
    let rep = aggregate(
        vec![only_close, opened, closed],
        &request(),
        Bounds::default(),
    );
    // b-1 at its close (its only record), b-2 at its open, not again at
    // its close.
    assert_eq!(rep.connections, 2);
    assert_eq!(rep.processes[0].connections, 2);
}
