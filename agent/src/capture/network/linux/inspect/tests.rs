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
