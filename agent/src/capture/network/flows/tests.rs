//! The flow table driven by scripted dumps and destroy notifications (the
//! real sock_diag source is tested against real sockets in `linux/`, and
//! the whole capture end to end in tests/tests/network_capture.rs).

use std::collections::HashMap;

use kiroku_proto::{GapEvent, NetworkEvent};

use super::super::config::NetworkConfig;
use super::super::p2p::PacketFacts;
use super::super::platform::{Counters, Endpoints, Owner, Packet, ProcessTable, Protocol, Socket};
use super::{Excluder, FlowTable, Rec, Saved};

struct Procs(HashMap<u64, Owner>);

impl ProcessTable for Procs {
    fn owners(&mut self, inodes: &[u64]) -> HashMap<u64, Owner> {
        inodes
            .iter()
            .filter_map(|i| self.0.get(i).map(|o| (*i, o.clone())))
            .collect()
    }
    fn user_name(&mut self, uid: u32) -> String {
        match uid {
            0 => "root".into(),
            65534 => "nobody".into(),
            _ => String::new(),
        }
    }
}

fn owner(pid: u32, name: &str, uid: u32) -> Owner {
    Owner {
        pid,
        name: name.into(),
        exe: format!("/usr/bin/{name}"),
        cmdline: name.into(),
        uid,
        user: if uid == 0 {
            "root".into()
        } else {
            "nobody".into()
        },
        started_ms: 1000 + i64::from(pid),
    }
}

fn procs() -> Procs {
    Procs(HashMap::from([
        (11, owner(100, "curl", 0)),
        (12, owner(200, "nginx", 0)),
        (13, owner(300, "wget", 65534)),
    ]))
}

fn tcp(
    cookie: u64,
    inode: u64,
    local: &str,
    remote: Option<&str>,
    state: &'static str,
    out: u64,
    inn: u64,
) -> Socket {
    Socket {
        protocol: Protocol::Tcp,
        local: local.parse().expect("test value"),
        remote: remote.map(|r| r.parse().expect("test value")),
        state,
        uid: 0,
        inode,
        cookie,
        counters: (state != "listen").then_some(Counters {
            bytes_out: out,
            bytes_in: inn,
            packets_out: out / 100,
            packets_in: inn / 100,
        }),
    }
}

fn cfg() -> NetworkConfig {
    NetworkConfig {
        enabled: true,
        update_secs: 60,
        summary_secs: 60,
        coalesce_after: 1000,
        max_records_per_sec: 10_000,
        ..NetworkConfig::default()
    }
}

fn table(cfg: &NetworkConfig, saved: HashMap<String, Saved>) -> FlowTable {
    FlowTable::new(
        cfg,
        Excluder::with(true, vec![], vec![]),
        "boot".into(),
        saved,
        0,
    )
}

fn nets(out: &[Rec]) -> Vec<&NetworkEvent> {
    out.iter()
        .filter_map(|r| match r {
            Rec::Net(e, _) => Some(e),
            Rec::Gap(_) => None,
        })
        .collect()
}

fn gaps(out: &[Rec]) -> Vec<&GapEvent> {
    out.iter()
        .filter_map(|r| match r {
            Rec::Gap(g) => Some(g),
            Rec::Net(..) => None,
        })
        .collect()
}

/// Applies the records' state changes, as the buffer does.
fn apply_state(out: &[Rec], state: &mut HashMap<String, Saved>) {
    for r in out {
        if let Rec::Net(_, Some(op)) = r {
            match &op.value {
                Some(v) => {
                    state.insert(op.flow_id.clone(), Saved::decode(v).expect("test value"));
                }
                None => {
                    state.remove(&op.flow_id);
                }
            }
        }
    }
}

const CLIENT: &str = "10.0.0.5:40000";
const SERVER: &str = "192.0.2.7:443";

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
fn a_flow_never_seen_in_a_dump_is_inferred_or_attributed_to_its_uid() {
    let cfg = cfg();
    let mut t = table(&cfg, HashMap::new());
    let mut p = procs();
    let mut out = Vec::new();
    // wget (uid 65534) is seen talking to SERVER; nginx listens on 8080.
    let mut seen = tcp(1, 13, CLIENT, Some(SERVER), "established", 1, 1);
    seen.uid = 65534;
    t.dump(
        vec![seen, tcp(2, 12, "0.0.0.0:8080", None, "listen", 0, 0)],
        &mut p,
        1_000,
        &mut out,
    );
    out.clear();
    let other = "198.51.100.4:443";
    // Linux notifications of sockets never dumped: inode 0, uid unknown.
    let short = tcp(7, 0, "10.0.0.5:40007", Some(SERVER), "close", 500, 40);
    let nobody_knows = tcp(8, 0, "10.0.0.5:40008", Some(other), "close", 300, 30);
    let inbound = tcp(
        9,
        0,
        "10.0.0.5:8080",
        Some("203.0.113.8:50000"),
        "close",
        10,
        10,
    );
    // Dumped once (inode and uid known) but not tracked: uid 0 is not
    // wget's uid, so only the uid is told.
    let mut known_uid = tcp(10, 77, "10.0.0.5:40010", Some(SERVER), "close", 1, 1);
    known_uid.uid = 0;
    t.closed(
        vec![short, nobody_knows, inbound, known_uid],
        &mut p,
        1_400,
        &mut out,
    );
    // Those not inferred now wait for the next dump (here: the stop).
    assert_eq!(nets(&out).len(), 2);
    t.finish(&mut p, &mut out);
    let ev = nets(&out);
    assert_eq!(ev.len(), 4);
    let (a, b, c, d) = (ev[0], ev[2], ev[1], ev[3]);
    assert_eq!(
        (a.phase.as_str(), a.attribution.as_str()),
        ("close", "inferred")
    );
    assert_eq!(a.process.as_ref().expect("test value").name, "wget");
    assert_eq!(
        (a.start_ms, a.end_ms, a.bytes_out_delta, a.bytes_out),
        (1_000, 1_400, 500, 500)
    );
    assert_eq!((b.attribution.as_str(), b.process.is_none()), ("", true));
    assert_eq!(
        (c.attribution.as_str(), c.direction.as_str()),
        ("inferred", "inbound")
    );
    assert_eq!(c.process.as_ref().expect("test value").name, "nginx");
    assert_eq!(d.attribution, "uid");
    let pr = d.process.as_ref().expect("test value");
    assert_eq!((pr.pid, pr.uid, pr.user.as_str()), (0, 0, "root"));
    // Nothing is kept for them: no state change.
    assert!(out.iter().all(|r| matches!(r, Rec::Net(_, None))));
}

#[test]
fn beyond_coalesce_after_short_flows_become_one_summary() {
    let cfg = NetworkConfig {
        coalesce_after: 2,
        ..cfg()
    };
    let mut t = table(&cfg, HashMap::new());
    let mut p = procs();
    let mut out = Vec::new();
    let shorts: Vec<Socket> = (0..5)
        .map(|i| {
            tcp(
                100 + i,
                0,
                &format!("10.0.0.5:{}", 41000 + i),
                Some(SERVER),
                "close",
                100,
                10,
            )
        })
        .collect();
    t.closed(shorts, &mut p, 1_000, &mut out);
    // Not inferred (nobody seen with SERVER): recorded after the next
    // dump, or at the stop.
    assert!(out.is_empty());
    t.finish(&mut p, &mut out);
    // A long coalesced flow (the third seen in a dump) adds its deltas.
    assert_eq!(nets(&out).len(), 2);
    t.tick(59_000, false, &mut out);
    assert_eq!(nets(&out).len(), 2);
    t.tick(60_000, false, &mut out);
    let ev = nets(&out);
    assert_eq!(ev.len(), 3);
    let s = ev[2];
    assert_eq!(s.phase, "summary");
    assert_eq!(
        (s.connections, s.bytes_out, s.bytes_in, s.bytes_out_delta),
        (3, 300, 30, 300)
    );
    assert_eq!((s.remote_ip.as_str(), s.remote_port), ("192.0.2.7", 443));
    assert_eq!(t.stats.coalesced, 3);
}

#[test]
fn coalesced_long_flows_add_their_deltas_to_summaries() {
    let cfg = NetworkConfig {
        coalesce_after: 0,
        ..cfg()
    };
    let mut t = table(&cfg, HashMap::new());
    let mut p = procs();
    let mut out = Vec::new();
    t.dump(
        vec![tcp(1, 11, CLIENT, Some(SERVER), "established", 100, 0)],
        &mut p,
        1_000,
        &mut out,
    );
    t.dump(
        vec![tcp(1, 11, CLIENT, Some(SERVER), "established", 250, 0)],
        &mut p,
        2_000,
        &mut out,
    );
    t.tick(60_000, false, &mut out);
    t.dump(
        vec![tcp(1, 11, CLIENT, Some(SERVER), "established", 400, 0)],
        &mut p,
        61_000,
        &mut out,
    );
    t.closed(
        vec![tcp(1, 0, CLIENT, Some(SERVER), "close", 1_000, 0)],
        &mut p,
        62_000,
        &mut out,
    );
    t.tick(62_500, true, &mut out);
    let ev = nets(&out);
    let s: Vec<(u64, u64)> = ev
        .iter()
        .map(|e| (e.connections, e.bytes_out_delta))
        .collect();
    assert!(ev.iter().all(|e| e.phase == "summary"));
    assert_eq!(s, [(1, 250), (0, 750)]);
}

#[test]
fn over_max_flows_new_flows_are_counted_in_a_gap_record() {
    let cfg = NetworkConfig {
        max_flows: 2,
        ..cfg()
    };
    let mut t = table(&cfg, HashMap::new());
    let mut p = procs();
    let mut out = Vec::new();
    let socks = |n: u64| -> Vec<Socket> {
        (1..=n)
            .map(|i| {
                tcp(
                    i,
                    11,
                    &format!("10.0.0.5:{}", 42000 + i),
                    Some(SERVER),
                    "established",
                    1,
                    1,
                )
            })
            .collect()
    };
    t.dump(socks(4), &mut p, 1_000, &mut out);
    // The same untracked sockets at the next dump are not counted again.
    t.dump(socks(5), &mut p, 2_000, &mut out);
    assert_eq!(nets(&out).len(), 2);
    t.tick(60_000, false, &mut out);
    let g = gaps(&out);
    assert_eq!(g.len(), 1);
    assert_eq!(
        (g[0].source.as_str(), g[0].reason.as_str(), g[0].count),
        ("network", "flow_table_full", 3)
    );
    assert_eq!((g[0].first_ms, g[0].last_ms), (1_000, 2_000));
    assert!(g[0].detail.contains("network.max_flows = 2"));
}

#[test]
fn lost_notifications_are_a_gap_record() {
    let cfg = cfg();
    let mut t = table(&cfg, HashMap::new());
    let mut out = Vec::new();
    t.lost(0, 1_000);
    t.tick(60_000, false, &mut out);
    assert!(out.is_empty());
    t.lost(17, 61_000);
    t.lost(3, 62_000);
    t.tick(119_000, false, &mut out);
    assert!(out.is_empty(), "one gap record per interval at most");
    t.tick(120_000, false, &mut out);
    let g = gaps(&out);
    assert_eq!(
        (g[0].reason.as_str(), g[0].count),
        ("notifications_lost", 20)
    );
}

#[test]
fn inspected_packets_dropped_are_a_gap_record() {
    let cfg = cfg();
    let mut t = table(&cfg, HashMap::new());
    let mut out = Vec::new();
    t.packets_lost(0, 1_000);
    t.tick(60_000, false, &mut out);
    assert!(out.is_empty());
    t.packets_lost(40, 61_000);
    t.packets_lost(2, 62_000);
    t.lost(5, 62_000);
    t.tick(120_000, false, &mut out);
    let g = gaps(&out);
    let got: Vec<(&str, &str, u64)> = g
        .iter()
        .map(|g| (g.source.as_str(), g.reason.as_str(), g.count))
        .collect();
    assert_eq!(
        got,
        [
            ("network", "notifications_lost", 5),
            ("network", "packets_lost", 42)
        ]
    );
    let p = g
        .iter()
        .find(|g| g.reason == "packets_lost")
        .expect("the gap");
    assert_eq!((p.first_ms, p.last_ms), (61_000, 62_000));
    assert_eq!(t.stats.packets_lost, 42);
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

#[test]
fn the_first_record_waits_for_the_owner_a_little() {
    let cfg = cfg();
    let mut t = table(&cfg, HashMap::new());
    // The process table knows nothing yet (it rescans at most once a
    // second).
    let mut empty = Procs(HashMap::new());
    let mut p = procs();
    let mut out = Vec::new();
    t.dump(
        vec![tcp(1, 11, CLIENT, Some(SERVER), "established", 10, 0)],
        &mut empty,
        1_000,
        &mut out,
    );
    assert!(out.is_empty());
    t.dump(
        vec![tcp(1, 11, CLIENT, Some(SERVER), "established", 20, 0)],
        &mut p,
        1_200,
        &mut out,
    );
    let ev = nets(&out);
    assert_eq!(
        (
            ev[0].phase.as_str(),
            ev[0].attribution.as_str(),
            ev[0].start_ms
        ),
        ("open", "socket", 1_000)
    );
    assert_eq!(
        (
            ev[0].process.as_ref().expect("test value").name.as_str(),
            ev[0].bytes_out_delta
        ),
        ("curl", 20)
    );
    // Never found: recorded with its uid once the wait is over (nobody
    // else talks to its peer: not inferred).
    out.clear();
    let s1 = || tcp(1, 11, CLIENT, Some(SERVER), "established", 20, 0);
    let s2 = || {
        tcp(
            2,
            55,
            "10.0.0.5:40002",
            Some("198.51.100.4:443"),
            "established",
            5,
            0,
        )
    };
    t.dump(vec![s1(), s2()], &mut empty, 2_000, &mut out);
    t.dump(vec![s1(), s2()], &mut empty, 3_000, &mut out);
    assert!(out.is_empty());
    t.dump(vec![s1(), s2()], &mut empty, 4_500, &mut out);
    let ev = nets(&out);
    assert_eq!(
        (ev[0].phase.as_str(), ev[0].attribution.as_str()),
        ("open", "uid")
    );
    // Closed while waiting: one close record, nothing else.
    out.clear();
    t.dump(
        vec![tcp(
            3,
            56,
            "10.0.0.5:40003",
            Some(SERVER),
            "established",
            5,
            0,
        )],
        &mut empty,
        5_000,
        &mut out,
    );
    t.closed(
        vec![tcp(3, 56, "10.0.0.5:40003", Some(SERVER), "close", 9, 0)],
        &mut empty,
        5_100,
        &mut out,
    );
    let ev = nets(&out);
    assert_eq!(ev.len(), 1);
    assert_eq!(
        (ev[0].phase.as_str(), ev[0].bytes_out_delta, ev[0].start_ms),
        ("close", 9, 5_000)
    );
}

/// Who is what in `inbound_connections_belong_to_a_dual_stack_listener`.
fn who(ev: &NetworkEvent) -> (&str, &str, &str, &str) {
    (
        ev.phase.as_str(),
        ev.direction.as_str(),
        ev.attribution.as_str(),
        ev.process.as_ref().map_or("", |p| p.name.as_str()),
    )
}

/// A BitTorrent client's listener is dual-stack ([::]:6881) and accepts
/// IPv4 connections (v4-mapped); connections accepted and closed between
/// two dumps, or still in the listener's queue at a dump (inode 0), or
/// whose owner /proc did not tell in time, are the listener's owner's
/// (issue 21: the swarm test's short inbound connections had only a uid).
#[test]
fn inbound_connections_belong_to_a_dual_stack_listener() {
    let cfg = cfg();
    let mut t = table(&cfg, HashMap::new());
    let mut p = procs();
    let mut empty = Procs(HashMap::new());
    let mut out = Vec::new();
    // A port probe on 0.0.0.0:6881, closed before any dump saw the
    // listener: waits for the dump that sees it.
    t.closed(
        vec![tcp(20, 0, "0.0.0.0:6881", None, "close", 0, 0)],
        &mut p,
        500,
        &mut out,
    );
    assert!(out.is_empty(), "{out:#?}");
    let listener = || tcp(1, 12, "[::]:6881", None, "listen", 0, 0);
    // Accepted, not yet taken from the queue: no inode.
    let queued = |inode| {
        tcp(
            2,
            inode,
            "[::ffff:10.77.0.1]:6881",
            Some("[::ffff:10.77.0.5]:50000"),
            "established",
            68,
            68,
        )
    };
    t.dump(vec![listener(), queued(0)], &mut p, 1_000, &mut out);
    let ev = nets(&out);
    assert_eq!(ev.len(), 2, "{ev:#?}");
    assert_eq!(who(ev[0]), ("listen_open", "listening", "socket", "nginx"));
    assert_eq!(
        who(ev[1]),
        ("listen_close", "listening", "inferred", "nginx")
    );
    assert_eq!(ev[1].local_port, 6881);
    out.clear();
    // The next dump has its inode: its owner is found.
    t.dump(vec![listener(), queued(12)], &mut p, 2_000, &mut out);
    let ev = nets(&out);
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert_eq!(who(ev[0]), ("open", "inbound", "socket", "nginx"));
    assert_eq!(ev[0].local_ip, "10.77.0.1");
    out.clear();
    // Accepted and closed between two dumps (IPv4 and v4-mapped IPv6).
    t.closed(
        vec![
            tcp(
                3,
                0,
                "10.77.0.1:6881",
                Some("10.77.0.6:40000"),
                "close",
                900,
                800,
            ),
            tcp(
                4,
                0,
                "[::ffff:10.77.0.1]:6881",
                Some("[::ffff:10.77.0.7]:40000"),
                "close",
                900,
                800,
            ),
        ],
        &mut p,
        2_500,
        &mut out,
    );
    let ev = nets(&out);
    assert_eq!(ev.len(), 2, "{ev:#?}");
    for e in &ev {
        assert_eq!(who(e), ("close", "inbound", "inferred", "nginx"));
    }
    out.clear();
    // Its owner never found by /proc (the process table lags): inferred
    // when the wait is over.
    let late = || {
        tcp(
            5,
            77,
            "10.77.0.1:6881",
            Some("10.77.0.8:40000"),
            "established",
            10,
            10,
        )
    };
    t.dump(
        vec![listener(), queued(12), late()],
        &mut empty,
        3_000,
        &mut out,
    );
    assert!(out.is_empty(), "{out:#?}");
    t.dump(
        vec![listener(), queued(12), late()],
        &mut empty,
        6_000,
        &mut out,
    );
    let ev = nets(&out);
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert_eq!(who(ev[0]), ("open", "inbound", "inferred", "nginx"));
    out.clear();
    // An outbound orphan (inode 0: its process closed it) to a peer only
    // that process talks to: inferred after the wait.
    let orphan = || {
        tcp(
            6,
            0,
            "10.77.0.1:41000",
            Some("10.77.0.5:6881"),
            "fin_wait1",
            0,
            0,
        )
    };
    t.dump(
        vec![listener(), queued(12), late(), orphan()],
        &mut empty,
        7_000,
        &mut out,
    );
    assert!(out.is_empty(), "{out:#?}");
    t.dump(
        vec![listener(), queued(12), late(), orphan()],
        &mut empty,
        10_000,
        &mut out,
    );
    let ev = nets(&out);
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert_eq!(who(ev[0]), ("open", "outbound", "inferred", "nginx"));
}
