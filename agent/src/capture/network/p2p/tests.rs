//! The detector over scripted records and real captured packets: each
//! reason fires on what it is meant for, ordinary traffic fires nothing,
//! episodes start, update and end with one stable id.

use std::net::SocketAddr;

use kiroku_proto::{NetworkEvent, P2pEvent, ProcessRef};

use super::super::config::P2pConfig;
use super::super::platform::{Endpoints, Packet, Protocol};
use super::Detector;

const HASH: &str = "69ed8add630dbc8adf72a3f528dc1a03ac8739b2";

fn proc(pid: u32, name: &str, exe: &str) -> ProcessRef {
    ProcessRef {
        pid,
        name: name.into(),
        exe: exe.into(),
        uid: 1000,
        user: "alice".into(),
        started_ms: 1_700_000_000_000 + i64::from(pid),
        ..ProcessRef::default()
    }
}

/// One flow's record: `phase`, tcp/udp, local, remote, direction, bytes.
struct Flow<'a> {
    phase: &'a str,
    protocol: &'a str,
    local: &'a str,
    remote: &'a str,
    direction: &'a str,
    out: u64,
    inb: u64,
}

fn ev(p: &ProcessRef, f: Flow<'_>) -> NetworkEvent {
    let local: SocketAddr = f.local.parse().expect("test data");
    let (rip, rport) = match f.remote.parse::<SocketAddr>() {
        Ok(r) => (r.ip().to_string(), u32::from(r.port())),
        Err(_) => (String::new(), 0),
    };
    NetworkEvent {
        phase: f.phase.into(),
        protocol: f.protocol.into(),
        direction: f.direction.into(),
        local_ip: local.ip().to_string(),
        local_port: u32::from(local.port()),
        remote_ip: rip,
        remote_port: rport,
        process: Some(p.clone()),
        attribution: "socket".into(),
        bytes_out_delta: f.out,
        bytes_in_delta: f.inb,
        bytes_out: f.out,
        bytes_in: f.inb,
        connections: 1,
        flow_id: format!("boot-{}-{}-{}", f.local, f.remote, f.protocol),
        ..NetworkEvent::default()
    }
}

fn tcp_out<'a>(local: &'a str, remote: &'a str, out: u64, inb: u64) -> Flow<'a> {
    Flow {
        phase: "open",
        protocol: "tcp",
        local,
        remote,
        direction: "outbound",
        out,
        inb,
    }
}

fn cfg() -> P2pConfig {
    P2pConfig {
        min_peers: 10,
        window_secs: 300,
        quiet_secs: 600,
        update_secs: 600,
        ..P2pConfig::default()
    }
}

fn packet(proto: Protocol, src: &str, dst: &str, outgoing: bool, payload: &[u8]) -> Packet {
    Packet {
        at: Endpoints {
            protocol: proto,
            src: src.parse().expect("test data"),
            dst: dst.parse().expect("test data"),
        },
        wire_len: payload.len() as u32,
        outgoing,
        payload: payload.to_vec(),
    }
}

fn codes(e: &P2pEvent) -> Vec<&str> {
    e.reasons.iter().map(|r| r.code.as_str()).collect()
}

const T0: i64 = 1_800_000_000_000;

#[test]
fn known_client_episode_detected_updated_ended_with_one_id() {
    let mut d = Detector::new(&cfg(), "agent-1");
    let aria = proc(4242, "aria2c", "/usr/bin/aria2c");
    d.record(
        &ev(&aria, tcp_out("10.0.0.5:40000", "10.0.0.9:6969", 300, 200)),
        T0,
    );
    let got = d.tick(T0 + 1000);
    assert_eq!(got.len(), 1);
    let det = &got[0];
    assert_eq!(det.phase, "detected");
    assert_eq!(codes(det), ["known_client"]);
    assert_eq!(
        det.episode_id,
        format!("agent-1/4242-{}/{T0}", aria.started_ms)
    );
    assert_eq!(
        (det.bytes_out, det.bytes_in, det.connections, det.peers),
        (300, 200, 1, 1)
    );
    assert_eq!(det.process.as_ref().expect("test data").name, "aria2c");
    // Nothing due until update_secs; then an update with the same id.
    assert!(d.tick(T0 + 5000).is_empty());
    d.record(
        &ev(
            &aria,
            tcp_out("10.0.0.5:40001", "10.0.0.8:51413", 1000, 5000),
        ),
        T0 + 300_000,
    );
    let up = d.tick(T0 + 601_000);
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].phase, "update");
    assert_eq!(up[0].episode_id, det.episode_id);
    assert_eq!(
        (
            up[0].bytes_out,
            up[0].bytes_in,
            up[0].connections,
            up[0].peers
        ),
        (1300, 5200, 2, 2)
    );
    // Quiet for quiet_secs after the last sign: ended, same id.
    let end = d.tick(T0 + 300_000 + 600_000);
    assert_eq!(end.len(), 1);
    assert_eq!(end[0].phase, "ended");
    assert_eq!(end[0].episode_id, det.episode_id);
    assert_eq!(end[0].last_ms, T0 + 300_000);
    // Active again: a new episode, a new id.
    d.record(
        &ev(&aria, tcp_out("10.0.0.5:40002", "10.0.0.7:6881", 1, 1)),
        T0 + 2_000_000,
    );
    let again = d.tick(T0 + 2_000_500);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].phase, "detected");
    assert_ne!(again[0].episode_id, det.episode_id);
}

#[test]
fn known_client_matches_exe_and_cut_comm() {
    let mut d = Detector::new(&cfg(), "a");
    // comm is cut at 15 bytes by the kernel: "transmission-daemon".
    let t = proc(7, "transmission-da", "/usr/local/bin/td");
    let q = proc(8, "python3", "/opt/qBittorrent/qbittorrent-nox");
    let not = proc(9, "share-helper", "/usr/bin/share-helper");
    for p in [&t, &q, &not] {
        d.record(&ev(p, tcp_out("10.0.0.5:40000", "192.0.2.1:443", 1, 1)), T0);
    }
    let got = d.tick(T0 + 1);
    let mut pids: Vec<u32> = got
        .iter()
        .map(|e| e.process.as_ref().expect("test data").pid)
        .collect();
    pids.sort();
    assert_eq!(pids, [7, 8]);
}

#[test]
fn many_peers_fires_with_its_counts() {
    let mut d = Detector::new(&cfg(), "a");
    let p = proc(100, "unknown-client", "/tmp/x");
    for i in 0..9u16 {
        let remote = format!("198.51.100.{}:{}", i + 1, 6881 + i);
        d.record(
            &ev(
                &p,
                tcp_out(&format!("10.0.0.5:{}", 40000 + i), &remote, 100, 1000),
            ),
            T0 + i64::from(i) * 1000,
        );
    }
    assert!(
        d.tick(T0 + 10_000).is_empty(),
        "9 peers: under the threshold"
    );
    d.record(
        &ev(
            &p,
            tcp_out("10.0.0.5:41000", "198.51.100.50:51413", 100, 1000),
        ),
        T0 + 11_000,
    );
    let got = d.tick(T0 + 12_000);
    assert_eq!(got.len(), 1);
    assert_eq!(codes(&got[0]), ["many_peers"]);
    assert!(
        got[0].reasons[0].detail.starts_with("10 distinct peers"),
        "{}",
        got[0].reasons[0].detail
    );
    assert_eq!(
        (
            got[0].peers,
            got[0].connections,
            got[0].bytes_out,
            got[0].bytes_in
        ),
        (10, 10, 1000, 10_000)
    );
    assert_eq!(
        got[0].first_ms, T0,
        "the episode starts at the first peer of the window"
    );
    assert_eq!(got[0].sample_peers.len(), 10);
}

#[test]
fn peers_spread_beyond_the_window_do_not_fire() {
    let mut d = Detector::new(&cfg(), "a");
    let p = proc(100, "client", "/tmp/x");
    for i in 0..20u16 {
        let remote = format!("198.51.100.{}:7000", i + 1);
        let at = T0 + i64::from(i) * 60_000; // one a minute: 5 per window
        d.record(
            &ev(
                &p,
                tcp_out(&format!("10.0.0.5:{}", 40000 + i), &remote, 1, 1),
            ),
            at,
        );
        assert!(d.tick(at).is_empty(), "at peer {i}");
    }
}

/// What the issue names as ordinary traffic, none of which may fire.
#[test]
fn ordinary_traffic_does_not_fire() {
    let mut d = Detector::new(&cfg(), "agent-1");
    let curl = proc(1, "curl", "/usr/bin/curl");
    let apt = proc(2, "http", "/usr/lib/apt/methods/http");
    let postfix = proc(3, "smtp", "/usr/lib/postfix/sbin/smtp");
    let smtpd = proc(4, "smtpd", "/usr/lib/postfix/sbin/smtpd");
    let agent = proc(5, "kiroku-agent", "/usr/bin/kiroku-agent");
    let web = proc(6, "gunicorn", "/usr/bin/gunicorn");
    let mut at = T0;
    // HTTPS to one server, over and over.
    for i in 0..50u16 {
        d.record(
            &ev(
                &curl,
                tcp_out(
                    &format!("10.0.0.5:{}", 40000 + i),
                    "203.0.113.10:443",
                    500,
                    90_000,
                ),
            ),
            at,
        );
        at += 100;
    }
    // apt-like burst: 20 connections to 2 mirrors on 80 and 443, twice.
    for i in 0..40u16 {
        let server = ["203.0.113.80:80", "203.0.113.81:443"][usize::from(i % 2)];
        d.record(
            &ev(
                &apt,
                tcp_out(&format!("10.0.0.5:{}", 42000 + i), server, 300, 2_000_000),
            ),
            at,
        );
        at += 10;
    }
    // SMTP relay: inbound on 25, outbound to a few MXes on 25.
    for i in 0..30u16 {
        let inbound = Flow {
            phase: "open",
            protocol: "tcp",
            local: "10.0.0.5:25",
            remote: &format!("192.0.2.{}:{}", i + 1, 50000 + i),
            direction: "inbound",
            out: 400,
            inb: 20_000,
        };
        d.record(&ev(&smtpd, inbound), at);
        let mx = format!("198.51.100.{}:25", i % 3 + 1);
        d.record(
            &ev(
                &postfix,
                tcp_out(&format!("10.0.0.5:{}", 43000 + i), &mx, 20_000, 400),
            ),
            at,
        );
        at += 50;
    }
    // The agent's gRPC stream to the collector on a high port, reconnecting.
    for i in 0..20u16 {
        d.record(
            &ev(
                &agent,
                tcp_out(
                    &format!("10.0.0.5:{}", 44000 + i),
                    "10.0.0.2:7443",
                    10_000,
                    100,
                ),
            ),
            at,
        );
        at += 1000;
    }
    // A web application on 8080 whose many clients connect from
    // ephemeral ports: both ports high, but it contacts none of them.
    for i in 0..200u16 {
        let inbound = Flow {
            phase: "open",
            protocol: "tcp",
            local: "10.0.0.5:8080",
            remote: &format!("192.0.2.{}:{}", i % 250 + 1, 30000 + i),
            direction: "inbound",
            out: 5000,
            inb: 300,
        };
        d.record(&ev(&web, inbound), at);
    }
    // A DNS answer and plain HTTPS packets seen by inspect.
    let dns = include_bytes!("testdata/dns-a-deb.debian.org.bin");
    let facts = d.packet(
        &packet(
            Protocol::Udp,
            "10.255.255.53:53",
            "10.0.0.5:53000",
            false,
            dns,
        ),
        Some(&apt),
        at,
    );
    assert_eq!(facts.dns.len(), 1);
    let tls_hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
    d.packet(
        &packet(
            Protocol::Tcp,
            "10.0.0.5:40000",
            "203.0.113.10:443",
            true,
            tls_hello,
        ),
        Some(&curl),
        at,
    );
    for t in [at, at + 60_000, at + 700_000] {
        assert!(d.tick(t).is_empty(), "fired at {t}");
    }
}

#[test]
fn handshake_before_the_owner_is_known_is_credited_at_the_record() {
    let mut d = Detector::new(&cfg(), "a");
    let hs = include_bytes!("testdata/aria2-handshake.bin");
    let client = proc(300, "myclient", "/opt/myclient");
    // The packet arrives before any dump has seen the socket.
    let facts = d.packet(
        &packet(Protocol::Tcp, "10.0.0.5:40100", "10.0.0.9:6881", true, hs),
        None,
        T0,
    );
    assert_eq!(facts.info_hash.as_deref(), Some(HASH));
    assert!(
        d.tick(T0 + 10).is_empty(),
        "no owner: nothing to report yet"
    );
    // A record of another socket does not take it.
    d.record(
        &ev(&client, tcp_out("10.0.0.5:40101", "10.0.0.9:6881", 1, 1)),
        T0 + 500,
    );
    assert!(d.tick(T0 + 600).is_empty());
    let mut open = ev(&client, tcp_out("10.0.0.5:40100", "10.0.0.9:6881", 68, 68));
    open.info_hashes = vec![HASH.into()];
    d.record(&open, T0 + 900);
    let got = d.tick(T0 + 1000);
    assert_eq!(got.len(), 1);
    assert_eq!(codes(&got[0]), ["bt_handshake"]);
    assert_eq!(got[0].info_hashes, [HASH]);
    // The same flow's next record does not count the handshake twice.
    d.record(&open, T0 + 2000);
    let e = d.tick(T0 + 700_000);
    assert!(
        e[0].reasons[0].detail.starts_with("1 BitTorrent handshake"),
        "{:?}",
        e[0].reasons
    );
}

#[test]
fn announce_and_dht_with_owner() {
    let mut d = Detector::new(&cfg(), "a");
    let client = proc(301, "myclient", "/opt/myclient");
    let announce = include_bytes!("testdata/aria2-announce.bin");
    let facts = d.packet(
        &packet(
            Protocol::Tcp,
            "10.0.0.5:40200",
            "127.0.0.1:16969",
            true,
            announce,
        ),
        Some(&client),
        T0,
    );
    assert_eq!(facts.info_hash.as_deref(), Some(HASH));
    let get_peers = b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz123456e1:q9:get_peers1:t2:aa1:y1:qe";
    d.packet(
        &packet(
            Protocol::Udp,
            "10.0.0.5:6881",
            "198.51.100.7:6881",
            true,
            get_peers,
        ),
        Some(&client),
        T0,
    );
    let got = d.tick(T0 + 10);
    assert_eq!(got.len(), 1);
    assert_eq!(codes(&got[0]), ["tracker_announce", "dht"]);
    assert_eq!(got[0].trackers, ["127.0.0.1:16969/announce"]);
    let want = [HASH.to_owned(), super::wire::hex(b"mnopqrstuvwxyz123456")];
    let mut want = want.to_vec();
    want.sort();
    assert_eq!(got[0].info_hashes, want);
    assert!(
        got[0].reasons[1].detail.contains("get_peers"),
        "{:?}",
        got[0].reasons
    );
}

#[test]
fn utp_needs_many_peers() {
    let mut d = Detector::new(&cfg(), "a");
    let client = proc(302, "myclient", "/opt/myclient");
    let syn = [
        0x41, 0, 0x3a, 0x2b, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 1, 0, 0,
    ];
    for i in 0..4 {
        let dst = format!("198.51.100.{}:80", i + 1); // a low port: not a many_peers peer
        d.packet(
            &packet(Protocol::Udp, "10.0.0.5:6881", &dst, true, &syn),
            Some(&client),
            T0,
        );
    }
    assert!(
        d.tick(T0 + 10).is_empty(),
        "4 uTP peers: under max(3, 10 / 2)"
    );
    d.packet(
        &packet(
            Protocol::Udp,
            "10.0.0.5:6881",
            "198.51.100.9:80",
            true,
            &syn,
        ),
        Some(&client),
        T0 + 20,
    );
    let got = d.tick(T0 + 30);
    assert_eq!(codes(&got[0]), ["utp"]);
}

#[test]
fn udp_peers_come_from_packets_and_who_wrote_first() {
    let mut d = Detector::new(&cfg(), "a");
    let node = proc(303, "myclient", "/opt/myclient");
    let server = proc(304, "openvpn", "/usr/sbin/openvpn");
    let avahi = proc(305, "avahi-daemon", "/usr/sbin/avahi-daemon");
    for i in 0..12u16 {
        let peer = format!("198.51.100.{}:{}", i + 1, 20000 + i);
        // A node that writes first to the peers it finds (header-only
        // packets, not recognised, still name the peer), then hears back.
        d.packet(
            &packet(Protocol::Udp, "10.0.0.5:6881", &peer, true, b""),
            Some(&node),
            T0,
        );
        d.packet(
            &packet(Protocol::Udp, &peer, "10.0.0.5:6881", false, b""),
            Some(&node),
            T0 + 1,
        );
        // A server: its clients write first; it answers each.
        d.packet(
            &packet(Protocol::Udp, &peer, "10.0.0.5:1194", false, b""),
            Some(&server),
            T0,
        );
        d.packet(
            &packet(Protocol::Udp, "10.0.0.5:1194", &peer, true, b""),
            Some(&server),
            T0 + 1,
        );
        let group = "224.0.0.251:5353";
        // mDNS: every host on the link answers to the group.
        let host = format!("10.0.0.{}:5353", i + 20);
        d.packet(
            &packet(Protocol::Udp, &host, group, false, b""),
            Some(&avahi),
            T0,
        );
        d.packet(
            &packet(Protocol::Udp, "10.0.0.5:5353", group, true, b""),
            Some(&avahi),
            T0,
        );
    }
    // The server's port 1194 is high too; only the node fires.
    let got = d.tick(T0 + 200);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].process.as_ref().map(|p| p.pid), Some(303));
    assert_eq!(codes(&got[0]), ["many_peers"]);
    assert_eq!(got[0].peers, 12);
}

/// Records naming no process (pid 0: only a uid, or nothing, known — the
/// uid of a socket never dumped is 0 for "unknown") start no episode: one
/// keyed on a uid mixes every process of that user (issue 21: a phantom
/// `uid0` episode fired a third alert in the swarm test).
#[test]
fn a_record_without_a_process_starts_no_episode() {
    let mut d = Detector::new(&cfg(), "a");
    let nobody = ProcessRef {
        uid: 0,
        user: "root".into(),
        ..ProcessRef::default()
    };
    let hs = include_bytes!("testdata/aria2-handshake.bin");
    for i in 0..30u16 {
        let local = format!("10.0.0.5:{}", 40000 + i);
        let remote = format!("10.0.0.{}:6881", 10 + i);
        let mut e = ev(&nobody, tcp_out(&local, &remote, 5000, 5000));
        e.attribution = "uid".into();
        d.record(&e, T0 + i64::from(i));
        // Its packets, with the same owner: kept waiting for a process.
        d.packet(
            &packet(Protocol::Tcp, &local, &remote, true, hs),
            Some(&nobody),
            T0 + i64::from(i),
        );
    }
    assert!(
        d.tick(T0 + 1_000).is_empty(),
        "no episode without a process"
    );
    // A record that names the process of one of those sockets takes its
    // handshake.
    let client = proc(300, "myclient", "/opt/myclient");
    let mut e = ev(&client, tcp_out("10.0.0.5:40003", "10.0.0.13:6881", 1, 1));
    e.start_ms = T0;
    d.record(&e, T0 + 1_500);
    let got = d.tick(T0 + 2_000);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(codes(&got[0]), ["bt_handshake"]);
    assert!(got[0].episode_id.contains("/300-"), "{}", got[0].episode_id);
}

/// Waiting signs go only to the socket they can be: not to a listener
/// (its accepted connections claim their own), not to a socket that did
/// not exist yet (the previous client on the same port), and packets
/// between other hosts never reach the detector (the inspector drops
/// them). Issue 21: the plain run's info_hash showed up in the encrypted
/// run's episode through the new client's listener on the same port.
#[test]
fn listeners_and_sockets_opened_later_do_not_claim_signs() {
    let mut d = Detector::new(&cfg(), "a");
    d.set_dump_interval_ms(1_000);
    let hs = include_bytes!("testdata/aria2-handshake.bin");
    // The previous client's inbound handshake, its owner never known.
    d.packet(
        &packet(Protocol::Tcp, "10.0.0.9:50000", "10.0.0.5:6881", false, hs),
        None,
        T0,
    );
    let client = proc(400, "myclient", "/opt/myclient");
    let mut listen = ev(
        &client,
        Flow {
            phase: "listen_open",
            protocol: "tcp",
            local: "0.0.0.0:6881",
            remote: "",
            direction: "listening",
            out: 0,
            inb: 0,
        },
    );
    listen.start_ms = T0 + 5_000;
    d.record(&listen, T0 + 5_000);
    // A connection with the same ends, opened after the sign.
    let mut again = ev(
        &client,
        Flow {
            phase: "open",
            protocol: "tcp",
            local: "10.0.0.5:6881",
            remote: "10.0.0.9:50000",
            direction: "inbound",
            out: 10,
            inb: 10,
        },
    );
    again.start_ms = T0 + 5_000;
    d.record(&again, T0 + 5_000);
    assert!(d.tick(T0 + 6_000).is_empty(), "nothing claimed");
    // The socket it was (open within a dump interval of the sign) does.
    let other = proc(401, "otherclient", "/opt/otherclient");
    let mut it = again.clone();
    it.process = Some(other);
    it.start_ms = T0 + 800;
    d.record(&it, T0 + 6_000);
    let got = d.tick(T0 + 7_000);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].process.as_ref().map(|p| p.pid), Some(401));
    assert_eq!(got[0].info_hashes, [HASH]);
}
