//! The life of one flow in the table: open, update and close with deltas
//! adding up, directions and listeners, TIME_WAIT and late notifications,
//! a restarted agent continuing its flows, exclusions, and what inspected
//! packets add to a flow's records (a name, UDP counters, info_hashes).

use super::*;
use crate::capture::network::p2p::PacketFacts;
use crate::capture::network::platform::{Endpoints, Packet};

#[test]
fn a_flow_opens_updates_and_closes_with_deltas_adding_up() {
    let cfg = cfg();
    let mut t = table(&cfg, HashMap::new());
    let mut p = procs();
    let mut out = Vec::new();
    t.dump(
        vec![tcp(1, 11, CLIENT, Some(SERVER), "established", 100, 50)],
        &mut p,
        1_000,
        &mut out,
    );
    // Before update_secs: nothing; after: an update.
    t.dump(
        vec![tcp(1, 11, CLIENT, Some(SERVER), "established", 200, 60)],
        &mut p,
        30_000,
        &mut out,
    );
    t.dump(
        vec![tcp(1, 11, CLIENT, Some(SERVER), "established", 300, 80)],
        &mut p,
        61_000,
        &mut out,
    );
    t.closed(
        vec![tcp(1, 0, CLIENT, Some(SERVER), "close", 1_000, 90)],
        &mut p,
        62_000,
        &mut out,
    );
    let ev = nets(&out);
    let phases: Vec<&str> = ev.iter().map(|e| e.phase.as_str()).collect();
    assert_eq!(phases, ["open", "update", "close"]);
    let deltas: Vec<(u64, u64)> = ev
        .iter()
        .map(|e| (e.bytes_out_delta, e.bytes_in_delta))
        .collect();
    assert_eq!(deltas, [(100, 50), (200, 30), (700, 10)]);
    let close = ev[2];
    assert_eq!((close.bytes_out, close.bytes_in), (1_000, 90));
    assert_eq!((close.start_ms, close.end_ms), (1_000, 62_000));
    assert_eq!(close.counters, "tcp_info");
    assert_eq!(close.direction, "outbound");
    assert!(ev.iter().all(|e| e.flow_id == "boot-0000000000000001"));
    let pr = close.process.as_ref().expect("test value");
    assert_eq!(
        (pr.pid, pr.name.as_str(), close.attribution.as_str()),
        (100, "curl", "socket")
    );
    // The state follows: set by open/update, removed by close.
    let mut state = HashMap::new();
    apply_state(&out, &mut state);
    assert!(state.is_empty());
    assert!(t.is_empty());
}

#[test]
fn directions_and_listening_sockets() {
    let cfg = cfg();
    let mut t = table(&cfg, HashMap::new());
    let mut p = procs();
    let mut out = Vec::new();
    let udp = Socket {
        protocol: Protocol::Udp,
        local: "0.0.0.0:5353".parse().expect("test value"),
        remote: None,
        state: "unconnected",
        uid: 0,
        inode: 0,
        cookie: 9,
        counters: None,
    };
    t.dump(
        vec![
            tcp(1, 12, "0.0.0.0:8080", None, "listen", 0, 0),
            tcp(
                2,
                12,
                "10.0.0.5:8080",
                Some("10.0.0.9:50000"),
                "established",
                10,
                20,
            ),
            tcp(
                3,
                11,
                "10.0.0.5:50001",
                Some("10.0.0.9:8080"),
                "established",
                5,
                5,
            ),
            udp,
        ],
        &mut p,
        1_000,
        &mut out,
    );
    let dir: HashMap<&str, (&str, &str)> = nets(&out)
        .iter()
        .map(|e| (e.flow_id.as_str(), (e.phase.as_str(), e.direction.as_str())))
        .collect();
    assert_eq!(dir["boot-0000000000000001"], ("listen_open", "listening"));
    assert_eq!(dir["boot-0000000000000002"], ("open", "inbound"));
    assert_eq!(dir["boot-0000000000000003"], ("open", "outbound"));
    assert_eq!(dir["boot-0000000000000009"], ("open", "unknown"));
    let udp_open = nets(&out)
        .into_iter()
        .find(|e| e.protocol == "udp")
        .expect("test value");
    assert_eq!(
        (udp_open.counters.as_str(), udp_open.attribution.as_str()),
        ("none", "uid")
    );
    // The listener goes away without a notification: closed at the second
    // dump it is missing from, with end_ms its last sighting.
    out.clear();
    t.dump(vec![], &mut p, 2_000, &mut out);
    assert!(nets(&out).is_empty());
    t.dump(vec![], &mut p, 3_000, &mut out);
    let ev = nets(&out);
    assert_eq!(ev.len(), 4);
    let l = ev
        .iter()
        .find(|e| e.flow_id == "boot-0000000000000001")
        .expect("test value");
    assert_eq!((l.phase.as_str(), l.end_ms), ("listen_close", 1_000));
    let c = ev
        .iter()
        .find(|e| e.flow_id == "boot-0000000000000002")
        .expect("test value");
    assert_eq!(
        (c.phase.as_str(), c.counters.as_str()),
        ("close", "last_dump")
    );
}

#[test]
fn time_wait_is_not_a_new_flow_and_late_notifications_are_dropped() {
    let cfg = cfg();
    let mut t = table(&cfg, HashMap::new());
    let mut p = procs();
    let mut out = Vec::new();
    t.dump(
        vec![tcp(1, 11, CLIENT, Some(SERVER), "established", 10, 10)],
        &mut p,
        1_000,
        &mut out,
    );
    t.closed(
        vec![tcp(1, 0, CLIENT, Some(SERVER), "close", 20, 20)],
        &mut p,
        1_500,
        &mut out,
    );
    // The connection's TIME_WAIT remains carry the same cookie.
    t.dump(
        vec![tcp(1, 0, CLIENT, Some(SERVER), "time_wait", 0, 0)],
        &mut p,
        2_000,
        &mut out,
    );
    // A flow seen in TIME_WAIT without a notification is closed.
    t.dump(
        vec![tcp(
            2,
            11,
            "10.0.0.5:40001",
            Some(SERVER),
            "established",
            5,
            5,
        )],
        &mut p,
        3_000,
        &mut out,
    );
    t.dump(
        vec![tcp(2, 0, "10.0.0.5:40001", Some(SERVER), "time_wait", 0, 0)],
        &mut p,
        4_000,
        &mut out,
    );
    // Its notification, late: not a second close.
    t.closed(
        vec![tcp(2, 0, "10.0.0.5:40001", Some(SERVER), "close", 9, 9)],
        &mut p,
        4_100,
        &mut out,
    );
    let phases: Vec<(&str, &str)> = nets(&out)
        .iter()
        .map(|e| (e.flow_id.as_str(), e.phase.as_str()))
        .collect();
    assert_eq!(
        phases,
        [
            ("boot-0000000000000001", "open"),
            ("boot-0000000000000001", "close"),
            ("boot-0000000000000002", "open"),
            ("boot-0000000000000002", "close"),
        ]
    );
}

#[test]
fn a_restarted_agent_continues_flows_instead_of_opening_them_again() {
    let cfg = cfg();
    let mut state = HashMap::new();
    let mut p = procs();
    let mut out = Vec::new();
    {
        let mut t = table(&cfg, HashMap::new());
        t.dump(
            vec![
                tcp(1, 11, CLIENT, Some(SERVER), "established", 1_000, 100),
                tcp(2, 12, "0.0.0.0:8080", None, "listen", 0, 0),
                tcp(3, 11, "10.0.0.5:40003", Some(SERVER), "established", 7, 7),
            ],
            &mut p,
            1_000,
            &mut out,
        );
        apply_state(&out, &mut state);
        // Killed here (nothing else written).
    }
    assert_eq!(state.len(), 3);
    out.clear();
    let mut t = table(&cfg, state.clone());
    t.dump(
        vec![
            tcp(1, 11, CLIENT, Some(SERVER), "established", 5_000, 300),
            tcp(2, 12, "0.0.0.0:8080", None, "listen", 0, 0),
        ],
        &mut p,
        9_000,
        &mut out,
    );
    apply_state(&out, &mut state);
    let ev = nets(&out);
    assert_eq!(ev.len(), 2, "{ev:#?}");
    let u = ev[0];
    assert_eq!((u.phase.as_str(), u.continued), ("update", true));
    assert_eq!(
        (u.bytes_out_delta, u.bytes_in_delta, u.bytes_out),
        (4_000, 200, 5_000)
    );
    assert_eq!(u.start_ms, 1_000);
    // Flow 3 ended while the agent was stopped.
    let c = ev[1];
    assert_eq!(c.flow_id, "boot-0000000000000003");
    assert_eq!(
        (c.phase.as_str(), c.counters.as_str(), c.continued),
        ("close", "last_record", true)
    );
    assert_eq!((c.bytes_out, c.bytes_out_delta), (7, 0));
    assert_eq!(state.len(), 2);
    // Later records are not "continued".
    out.clear();
    t.closed(
        vec![tcp(1, 0, CLIENT, Some(SERVER), "close", 6_000, 300)],
        &mut p,
        10_000,
        &mut out,
    );
    let c = nets(&out)[0];
    assert_eq!(
        (c.phase.as_str(), c.continued, c.bytes_out_delta),
        ("close", false, 1_000)
    );
}

#[test]
fn exclusions_are_never_recorded_even_when_they_close() {
    let cfg = cfg();
    let mut t = FlowTable::new(
        &cfg,
        Excluder::with(false, vec![SERVER.parse().expect("test value")], vec![]),
        "boot".into(),
        HashMap::new(),
        0,
    );
    let mut p = procs();
    let mut out = Vec::new();
    t.dump(
        vec![
            tcp(
                1,
                11,
                "127.0.0.1:40000",
                Some("127.0.0.1:80"),
                "established",
                1,
                1,
            ),
            tcp(2, 11, CLIENT, Some(SERVER), "established", 1, 1),
        ],
        &mut p,
        1_000,
        &mut out,
    );
    t.closed(
        vec![
            tcp(1, 0, "127.0.0.1:40000", Some("127.0.0.1:80"), "close", 2, 2),
            tcp(2, 0, CLIENT, Some(SERVER), "close", 2, 2),
            tcp(3, 0, "127.0.0.1:40001", Some("127.0.0.1:80"), "close", 2, 2),
        ],
        &mut p,
        1_500,
        &mut out,
    );
    assert!(out.is_empty(), "{out:#?}");
    assert_eq!(t.stats.excluded, 3);
}

#[test]
fn inspected_packets_name_flows_count_udp_and_attach_info_hashes() {
    let cfg = cfg();
    let mut t = table(&cfg, HashMap::new());
    let mut p = procs();
    let mut out = Vec::new();
    let udp = Socket {
        protocol: Protocol::Udp,
        local: "0.0.0.0:6881".parse().expect("test value"),
        remote: None,
        state: "unconnected",
        uid: 0,
        inode: 11,
        cookie: 5,
        counters: None,
    };
    t.dump(
        vec![udp, tcp(1, 11, CLIENT, Some(SERVER), "established", 10, 10)],
        &mut p,
        1_000,
        &mut out,
    );
    let packet = |proto, src: &str, dst: &str, outgoing| Packet {
        at: Endpoints {
            protocol: proto,
            src: src.parse().expect("test value"),
            dst: dst.parse().expect("test value"),
        },
        wire_len: 120,
        outgoing,
        payload: Vec::new(),
    };
    let mut owners = Vec::new();
    t.packet(
        &packet(Protocol::Udp, "10.0.0.5:6881", "198.51.100.3:6881", true),
        |o| {
            owners.push(o.map(|o| o.name.clone()));
            PacketFacts::default()
        },
    );
    t.packet(
        &packet(Protocol::Udp, "198.51.100.3:6881", "10.0.0.5:6881", false),
        |_| PacketFacts::default(),
    );
    t.packet(&packet(Protocol::Tcp, CLIENT, SERVER, true), |o| {
        owners.push(o.map(|o| o.name.clone()));
        PacketFacts {
            info_hash: Some("ab".repeat(20)),
            dns: vec![(
                "198.51.100.9".parse().expect("test value"),
                "tracker.example".into(),
            )],
        }
    });
    assert_eq!(owners, [Some("curl".to_owned()), Some("curl".to_owned())]);
    out.clear();
    t.dump(
        vec![
            tcp(1, 11, CLIENT, Some(SERVER), "established", 10, 10),
            tcp(6, 11, CLIENT, Some("198.51.100.9:80"), "established", 1, 1),
        ],
        &mut p,
        2_000,
        &mut out,
    );
    let named = nets(&out)[0];
    assert_eq!(
        (named.remote_name.as_str(), named.name_source.as_str()),
        ("tracker.example", "dns_answer")
    );
    out.clear();
    t.closed(
        vec![tcp(1, 0, CLIENT, Some(SERVER), "close", 10, 10)],
        &mut p,
        3_000,
        &mut out,
    );
    assert_eq!(nets(&out)[0].info_hashes, ["ab".repeat(20)]);
    out.clear();
    t.dump(vec![], &mut p, 4_000, &mut out);
    t.dump(vec![], &mut p, 5_000, &mut out);
    let u = nets(&out)
        .into_iter()
        .find(|e| e.protocol == "udp")
        .expect("test value");
    assert_eq!(
        (u.counters.as_str(), u.bytes_out, u.bytes_in, u.packets_in),
        ("packets", 120, 120, 1)
    );
}

/// At a clean stop every flow with traffic since its last record gets an
/// `update` (and its totals in the keyed state), before `update_secs`
/// would have given it one; a flow without new traffic gets none; a
/// coalesced flow's last delta goes to its summary.
#[test]
fn a_clean_stop_writes_each_flows_last_bytes() {
    let cfg = NetworkConfig {
        coalesce_after: 1,
        ..cfg()
    };
    let mut t = table(&cfg, HashMap::new());
    let mut p = procs();
    let mut out = Vec::new();
    let socks = |a: u64, b: u64| {
        vec![
            tcp(1, 11, CLIENT, Some(SERVER), "established", a, 10),
            // The second flow of the same key: coalesced.
            tcp(2, 11, "10.0.0.5:41001", Some(SERVER), "established", b, 10),
            tcp(
                3,
                13,
                "10.0.0.5:41002",
                Some("192.0.2.8:80"),
                "established",
                7,
                7,
            ),
        ]
    };
    t.dump(socks(100, 100), &mut p, 1_000, &mut out);
    assert_eq!(
        nets(&out).iter().filter(|e| e.phase == "open").count(),
        2,
        "{out:#?}"
    );
    out.clear();
    t.dump(socks(500, 300), &mut p, 5_000, &mut out);
    assert!(nets(&out).is_empty(), "before update_secs: nothing");
    t.at_stop(5_000, &mut out);
    t.tick(5_000, true, &mut out);
    let ev = nets(&out);
    let updates: Vec<_> = ev.iter().filter(|e| e.phase == "update").collect();
    assert_eq!(updates.len(), 1, "only the flow with new traffic: {ev:#?}");
    assert_eq!(
        (updates[0].bytes_out, updates[0].bytes_out_delta),
        (500, 400)
    );
    let summary: Vec<_> = ev.iter().filter(|e| e.phase == "summary").collect();
    assert_eq!(summary.len(), 1, "{ev:#?}");
    assert_eq!(
        summary[0].bytes_out, 300,
        "the coalesced flow's bytes up to the stop"
    );
    let ops = out
        .iter()
        .filter(|r| matches!(r, Rec::Net(e, Some(_)) if e.phase == "update"))
        .count();
    assert_eq!(ops, 1, "the update's totals go to the keyed state");
}
