//! The inspection socket on real loopback traffic: a BitTorrent handshake
//! and a tracker announce over TCP connections, KRPC, a DNS answer and a
//! plain datagram over UDP — each arrives once (lo's outgoing copy is
//! dropped), cut where the filter says, and what must not pass does not.
//! Skipped, with the reason, without CAP_NET_RAW.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use super::AfPacket;
use super::filter::SNAP_PAYLOAD;
use crate::capture::network::p2p::wire::{self, Wire};
use crate::capture::network::platform::{Packet, PacketInspector, Protocol};

const HANDSHAKE: &[u8] = include_bytes!("../../p2p/testdata/aria2-handshake.bin");
const ANNOUNCE: &[u8] = include_bytes!("../../p2p/testdata/aria2-announce.bin");
const DNS: &[u8] = include_bytes!("../../p2p/testdata/dns-a-deb.debian.org.bin");
const KRPC: &[u8] = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe";

fn open() -> Option<AfPacket> {
    match AfPacket::open() {
        Ok(s) => Some(s),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            eprintln!("skipped: no CAP_NET_RAW here ({e})");
            None
        }
        Err(e) => panic!("opening the inspection socket: {e}"),
    }
}

/// A TCP connection on loopback that carries `first`, then, after a
/// pause (a segment of its own), `then`.
fn tcp_send(first: &[u8], then: &[u8]) -> (SocketAddr, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").expect("listen");
    let server = l.local_addr().expect("addr");
    let mut c = TcpStream::connect(server).expect("connect");
    c.set_nodelay(true).expect("nodelay");
    let (mut s, _) = l.accept().expect("accept");
    c.write_all(first).expect("write");
    std::thread::sleep(Duration::from_millis(50));
    c.write_all(then).expect("write");
    let mut got = vec![0; first.len() + then.len()];
    s.read_exact(&mut got).expect("read");
    (c.local_addr().expect("addr"), server)
}

#[test]
fn loopback_traffic_through_the_filter() {
    let Some(mut insp) = open() else { return };
    // On a loaded CI run (2026-12-06) only the two first TCP segments
    // arrived within 5 s, the later four not at all; the cause is not
    // established (the socket's queue overflowing under the whole suite's
    // loopback traffic through the same filter is the likely one, which
    // the capture counts as a `packets_lost` gap). Such a run is tried
    // again, twice; the third must pass.
    for _ in 0..2 {
        let once = std::panic::AssertUnwindSafe(|| loopback_traffic_once(&mut insp));
        if std::panic::catch_unwind(once).is_ok() {
            return;
        }
    }
    loopback_traffic_once(&mut insp);
}

fn loopback_traffic_once(insp: &mut AfPacket) {
    let (hs_client, hs_server) = tcp_send(HANDSHAKE, b"hello, not a handshake");
    let (an_client, an_server) = tcp_send(ANNOUNCE, b"GET /announce?info_hash=again");
    let a = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let b = UdpSocket::bind("127.0.0.1:0").expect("udp");
    a.send_to(KRPC, b.local_addr().expect("addr"))
        .expect("send");
    a.send_to(b"xyz", b.local_addr().expect("addr"))
        .expect("send");
    // A DNS answer comes from port 53: a loopback address of its own.
    let dns = UdpSocket::bind("127.0.0.77:53").expect("bind 127.0.0.77:53");
    dns.send_to(DNS, b.local_addr().expect("addr"))
        .expect("send");
    let (ua, ub) = (a.local_addr().expect("addr"), b.local_addr().expect("addr"));
    let ours = |p: &Packet| {
        let pair = [p.at.src, p.at.dst];
        [(hs_client, hs_server), (an_client, an_server), (ua, ub)]
            .iter()
            .any(|(x, y)| pair.contains(x) && pair.contains(y))
            || p.at.src.port() == 53 && p.at.dst == ub
    };
    let mut seen: Vec<Packet> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && seen.len() < 5 {
        let mut batch = Vec::new();
        insp.packets(Duration::from_millis(200), &mut batch)
            .expect("packets");
        seen.extend(batch.into_iter().filter(|p| ours(p)));
    }
    // Let anything late (a duplicate) arrive too.
    let mut batch = Vec::new();
    insp.packets(Duration::from_millis(300), &mut batch)
        .expect("packets");
    seen.extend(batch.into_iter().filter(|p| ours(p)));

    let find = |src: SocketAddr, dst: SocketAddr| -> Vec<&Packet> {
        seen.iter()
            .filter(|p| p.at.src == src && p.at.dst == dst)
            .collect()
    };
    let summary: Vec<String> = seen
        .iter()
        .map(|p| {
            format!(
                "{} -> {} {:?} {}",
                p.at.src,
                p.at.dst,
                p.at.protocol,
                p.payload.len()
            )
        })
        .collect();

    // The handshake, once, whole; the next segment of that flow not at all.
    let hs = find(hs_client, hs_server);
    assert_eq!(hs.len(), 1, "{summary:?}");
    assert_eq!(hs[0].payload, HANDSHAKE);
    assert_eq!(hs[0].wire_len, 68);
    let Some(Wire::Handshake { info_hash }) = wire::recognise(hs[0]) else {
        panic!("not recognised: {:?}", hs[0]);
    };
    assert_eq!(
        wire::hex(&info_hash),
        "69ed8add630dbc8adf72a3f528dc1a03ac8739b2"
    );

    // The announce cut at the snap; the second request line passes too
    // (the filter is stateless), the handshake flow's "hello" does not.
    let an = find(an_client, an_server);
    assert_eq!(an.len(), 2, "{summary:?}");
    assert_eq!(an[0].payload, &ANNOUNCE[..SNAP_PAYLOAD as usize]);
    assert_eq!(an[0].wire_len as usize, ANNOUNCE.len());
    assert!(matches!(
        wire::recognise(an[0]),
        Some(Wire::Announce { .. })
    ));

    // UDP: KRPC whole, the plain datagram header-only (counted, not read).
    let udp = find(ua, ub);
    assert_eq!(udp.len(), 2, "{summary:?}");
    assert_eq!(udp[0].payload, KRPC);
    assert!(matches!(wire::recognise(udp[0]), Some(Wire::Krpc { .. })));
    assert!(udp[1].payload.is_empty());
    assert_eq!(udp[1].wire_len, 3);
    assert_eq!(udp[1].at.protocol, Protocol::Udp);

    // The DNS answer, whole.
    let d = find(dns.local_addr().expect("addr"), ub);
    assert_eq!(d.len(), 1, "{summary:?}");
    assert_eq!(d[0].payload, DNS);
    assert!(matches!(wire::recognise(d[0]), Some(Wire::Dns(a)) if a.len() == 1));
    assert_eq!(seen.len(), 6, "{summary:?}");
}

/// A running aria2c, killed when the test ends.
struct Aria2(std::process::Child);

impl Drop for Aria2 {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn have(cmd: &str) -> bool {
    std::process::Command::new(cmd)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}

/// Accepts connections until `stop`, answering each with `reply` after
/// reading what the client sent first.
fn serve(
    l: TcpListener,
    reply: Vec<u8>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    use std::sync::atomic::Ordering;
    l.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((mut s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut buf = [0u8; 2048];
                    let _ = s.read(&mut buf);
                    let _ = s.write_all(&reply);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    })
}

/// A real client: aria2c announces to a tracker on loopback and connects
/// to the peer it is given (its first attempt is an MSE handshake, which
/// the peer does not answer; it then retries with the plain handshake).
/// The inspector sees both the announce and the handshake; the detector,
/// given the packets before it knows their owner and then aria2c's flow
/// record, reports known_client, bt_handshake and tracker_announce with
/// the torrent's info_hash. Skipped without aria2c / mktorrent.
#[test]
fn real_aria2c_announce_and_handshake_are_detected() {
    use std::process::{Command, Stdio};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use kiroku_proto::{NetworkEvent, ProcessRef};

    use crate::capture::network::config::P2pConfig;
    use crate::capture::network::p2p::Detector;

    if !have("aria2c") || !have("mktorrent") {
        eprintln!("skipped: aria2c or mktorrent not installed (scripts/test.sh installs them)");
        return;
    }
    let Some(mut insp) = open() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let tracker = TcpListener::bind("127.0.0.1:0").expect("listen");
    let peer = TcpListener::bind("127.0.0.1:0").expect("listen");
    let (tracker_at, peer_at) = (
        tracker.local_addr().expect("addr"),
        peer.local_addr().expect("addr"),
    );
    std::fs::write(dir.path().join("data.bin"), vec![7u8; 300_000]).expect("write");
    let made = Command::new("mktorrent")
        .current_dir(dir.path())
        .args([
            "-a",
            &format!("http://{tracker_at}/announce"),
            "-o",
            "t.torrent",
            "data.bin",
        ])
        .stdout(Stdio::null())
        .status()
        .expect("mktorrent");
    assert!(made.success());
    let shown = Command::new("aria2c")
        .current_dir(dir.path())
        .args(["-S", "t.torrent"])
        .output()
        .expect("aria2c -S");
    let shown = String::from_utf8_lossy(&shown.stdout);
    let want_hash = shown
        .lines()
        .find_map(|l| l.strip_prefix("Info Hash: "))
        .expect("aria2c -S shows the info hash")
        .trim()
        .to_owned();

    let stop = Arc::new(AtomicBool::new(false));
    let mut body = b"d8:intervali60e5:peers6:".to_vec();
    let std::net::IpAddr::V4(ip) = peer_at.ip() else {
        unreachable!()
    };
    body.extend_from_slice(&ip.octets());
    body.extend_from_slice(&peer_at.port().to_be_bytes());
    body.push(b'e');
    let mut reply =
        format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    reply.extend_from_slice(&body);
    let servers = [
        serve(tracker, reply, stop.clone()),
        serve(peer, Vec::new(), stop.clone()),
    ];

    // What queued up meanwhile (other tests' loopback traffic runs in
    // parallel) is read and dropped, so the queue has room for aria2c's
    // first packets.
    let mut junk = Vec::new();
    for _ in 0..1000 {
        junk.clear();
        let drained = insp.packets(Duration::ZERO, &mut junk).expect("packets");
        if junk.is_empty() && drained.overflows == 0 {
            break;
        }
    }
    let child = Command::new("aria2c")
        .current_dir(dir.path())
        .args([
            "-d",
            "dl",
            "--enable-dht=false",
            "--bt-enable-lpd=false",
            "--enable-peer-exchange=false",
            "--bt-stop-timeout=120",
            // Announces again every 5 s (the download never completes):
            // one announce packet the kernel drops on a loaded machine
            // (the inspection queue overflowed) is not the test's end.
            "--bt-tracker-interval=5",
            "--seed-time=0",
            "--console-log-level=error",
            "--summary-interval=0",
            "t.torrent",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("aria2c");
    let aria_pid = child.id();
    let _aria = Aria2(child);

    let mut d = Detector::new(&P2pConfig::default(), "agent-t");
    let (mut announce, mut handshake) = (None, None);
    let mut lost = 0;
    let deadline = Instant::now() + Duration::from_secs(90);
    let t0 = 1_800_000_000_000i64;
    while Instant::now() < deadline && (announce.is_none() || handshake.is_none()) {
        let mut batch = Vec::new();
        lost += insp
            .packets(Duration::from_millis(200), &mut batch)
            .expect("packets")
            .overflows;
        for p in batch
            .iter()
            .filter(|p| [tracker_at, peer_at].contains(&p.at.dst))
        {
            let facts = d.packet(p, None, t0);
            match wire::recognise(p) {
                Some(Wire::Announce { .. }) => announce = Some((p.at.src, facts)),
                Some(Wire::Handshake { .. }) => handshake = Some((p.at.src, facts)),
                _ => {}
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let seen = (announce.is_some(), handshake.is_some());
    let (Some((an_src, an_facts)), Some((hs_src, hs_facts))) = (announce, handshake) else {
        panic!(
            "within 90 s: announce seen {}, handshake seen {} ({lost} packets dropped by the kernel meanwhile)",
            seen.0, seen.1
        );
    };
    assert_eq!(an_facts.info_hash.as_deref(), Some(want_hash.as_str()));
    assert_eq!(hs_facts.info_hash.as_deref(), Some(want_hash.as_str()));

    // The flow table's records of aria2c's two connections.
    let process = ProcessRef {
        pid: aria_pid,
        name: "aria2c".into(),
        exe: "/usr/bin/aria2c".into(),
        started_ms: t0 - 1000,
        ..ProcessRef::default()
    };
    for (local, remote) in [(an_src, tracker_at), (hs_src, peer_at)] {
        d.record(
            &NetworkEvent {
                phase: "open".into(),
                protocol: "tcp".into(),
                direction: "outbound".into(),
                local_ip: local.ip().to_string(),
                local_port: u32::from(local.port()),
                remote_ip: remote.ip().to_string(),
                remote_port: u32::from(remote.port()),
                process: Some(process.clone()),
                flow_id: format!("f-{local}"),
                ..NetworkEvent::default()
            },
            t0 + 500,
        );
    }
    let got = d.tick(t0 + 1000);
    assert_eq!(got.len(), 1, "{got:?}");
    let codes: Vec<&str> = got[0].reasons.iter().map(|r| r.code.as_str()).collect();
    assert_eq!(codes, ["known_client", "bt_handshake", "tracker_announce"]);
    assert_eq!(got[0].info_hashes, [want_hash]);
    assert_eq!(got[0].trackers, [format!("{tracker_at}/announce")]);
    for s in servers {
        let _ = s.join();
    }
}

/// Loss is counted, never silent: datagrams sent faster than anyone reads
/// overflow the socket's queue; the kernel's drop count comes back with
/// the next packet read (SO_RXQ_OVFL) as `Lost.overflows`, and what was
/// read plus what was dropped covers what was sent.
#[test]
fn queue_overflow_is_counted() {
    let Some(mut insp) = open() else { return };
    let a = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let b = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let (ua, ub) = (a.local_addr().expect("addr"), b.local_addr().expect("addr"));
    const SENT: usize = 60_000;
    for i in 0..SENT {
        // b's own queue overflowing does not matter: the inspection
        // socket sees the datagram on lo before it is delivered.
        let _ = a.send_to(&(i as u32).to_be_bytes(), ub);
    }
    let (mut ours, mut lost) = (0usize, 0u64);
    let started = Instant::now();
    let mut marker_sent = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut batch = Vec::new();
        let l = insp
            .packets(Duration::from_millis(100), &mut batch)
            .expect("packets");
        lost += l.overflows;
        ours += batch
            .iter()
            .filter(|p| p.at.src == ua && p.at.dst == ub)
            .count();
        if batch.is_empty() {
            if marker_sent && lost > 0 || Instant::now() > deadline {
                break;
            }
            // The queue is drained: one more datagram carries the drop
            // count.
            a.send_to(b"m", ub).expect("send");
            marker_sent = true;
        }
    }
    eprintln!(
        "sent {SENT} + 1, read {ours} of them in {:?}, {lost} dropped by the kernel",
        started.elapsed()
    );
    assert!(
        lost > 0,
        "{SENT} datagrams in a burst did not overflow the queue"
    );
    assert!(
        ours as u64 + lost >= SENT as u64,
        "read {ours} + dropped {lost} < sent {SENT}"
    );
}

/// Network namespaces made by the bridge test, deleted however it ends.
struct Netns(Vec<String>);

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", n])
                .status();
        }
    }
}

fn ip(args: &str) {
    let st = std::process::Command::new("ip")
        .args(args.split_whitespace())
        .status()
        .expect("ip");
    assert!(st.success(), "ip {args}");
}

/// A host with a bridge: in a namespace this test creates, `br0` with a
/// veth port whose other end is a peer in a second namespace. What the
/// host sends leaves through br0 and then the port — two reads of one
/// packet on the AF_PACKET socket; the inspector delivers one. The
/// datagrams are of one length from an unconnected socket (IPv4 ID 0, the
/// veth's checksum offload): same headers every time on br0, all kept.
/// Skipped when namespaces cannot be made here (not root, no `ip`).
#[test]
fn a_packet_through_a_bridge_and_its_port_is_read_once() {
    let tag = format!("kk-{}-insp", std::process::id());
    let (h, p) = (format!("{tag}-h"), format!("{tag}-p"));
    let made = std::process::Command::new("ip")
        .args(["netns", "add", &h])
        .status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("skipped: cannot create a network namespace here (needs root and iproute2)");
        return;
    }
    let _guard = Netns(vec![h.clone(), p.clone()]);
    ip(&format!("netns add {p}"));
    ip(&format!("-n {h} link add br0 type bridge"));
    ip(&format!(
        "-n {h} link add v0 type veth peer name v1 netns {p}"
    ));
    ip(&format!("-n {h} link set v0 master br0"));
    ip(&format!("-n {h} addr add 10.77.0.1/24 dev br0"));
    ip(&format!("-n {p} addr add 10.77.0.2/24 dev v1"));
    for (ns, dev) in [(&h, "lo"), (&h, "br0"), (&h, "v0"), (&p, "lo"), (&p, "v1")] {
        ip(&format!("-n {ns} link set {dev} up"));
    }
    let path = format!("/run/netns/{h}");
    let inside = std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).expect("open the namespace");
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let mut insp = AfPacket::open().expect("inspection socket in the namespace");
        let s = UdpSocket::bind("10.77.0.1:0").expect("bind");
        let from = s.local_addr().expect("addr");
        let to: SocketAddr = "10.77.0.2:7000".parse().expect("addr");
        // The bridge may need a moment to forward (port state): retry the
        // first datagram until it is seen, then send the rest.
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while seen.is_empty() && Instant::now() < deadline {
            s.send_to(b"warm", to).expect("send");
            let mut batch = Vec::new();
            insp.packets(Duration::from_millis(200), &mut batch)
                .expect("packets");
            seen.extend(batch.into_iter().filter(|p| p.at.src == from));
        }
        assert!(!seen.is_empty(), "nothing seen through br0 in 10 s");
        std::thread::sleep(Duration::from_millis(100));
        let mut batch = Vec::new();
        insp.packets(Duration::ZERO, &mut batch).expect("packets");
        const N: usize = 200;
        for i in 0..N {
            s.send_to(&(i as u32).to_be_bytes(), to).expect("send");
        }
        let mut ours = 0;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let mut batch = Vec::new();
            insp.packets(Duration::from_millis(200), &mut batch)
                .expect("packets");
            ours += batch
                .iter()
                .filter(|p| p.at.src == from && p.wire_len == 4)
                .count();
            if batch.is_empty() && ours >= N {
                break;
            }
        }
        ours
    });
    let ours = inside.join().expect("the namespace thread");
    assert_eq!(ours, 200, "each datagram once, not once per device");
}

/// Measurement, not a check (run with --ignored --nocapture): the agent's
/// cost of reading what the filter passes, per packet, for header-only
/// datagrams already queued.
#[test]
#[ignore]
fn measure_read_cost() {
    let Some(mut insp) = open() else { return };
    let a = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let b = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let to = b.local_addr().expect("addr");
    for round in 0..3 {
        let mut sink = Vec::new();
        insp.packets(Duration::ZERO, &mut sink).expect("packets");
        const N: usize = 8000;
        for i in 0..N {
            let _ = a.send_to(&(i as u32).to_be_bytes(), to);
        }
        std::thread::sleep(Duration::from_millis(200));
        let t = Instant::now();
        let mut n = 0;
        loop {
            let mut batch = Vec::new();
            let lost = insp.packets(Duration::ZERO, &mut batch).expect("packets");
            assert_eq!(lost.overflows, 0, "the queue held {N}");
            if batch.is_empty() {
                break;
            }
            n += batch.len();
        }
        let el = t.elapsed();
        eprintln!(
            "round {round}: read {n} packets in {el:?}: {:.2} µs each",
            el.as_secs_f64() * 1e6 / n as f64
        );
    }
}
