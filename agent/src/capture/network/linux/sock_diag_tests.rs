//! sock_diag against real sockets on loopback: dumps, destroy
//! notifications and their overflow accounting, plus the parsers of the
//! /proc texts it reads. Other processes on the host open and close
//! sockets too, so the checks look for this test's own sockets (by port
//! and cookie) rather than counting everything.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use super::*;
use crate::capture::network::platform::Protocol;

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// A connected pair over `listener`, with `n` bytes sent client → server
/// and `m` server → client, read completely on both sides.
fn pair(listener: &TcpListener, n: usize, m: usize) -> (TcpStream, TcpStream) {
    let addr = listener.local_addr().expect("listener address");
    let mut client = TcpStream::connect(addr).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    client.write_all(&vec![7u8; n]).expect("client write");
    let mut got = vec![0u8; n];
    server.read_exact(&mut got).expect("server read");
    server.write_all(&vec![9u8; m]).expect("server write");
    let mut got = vec![0u8; m];
    client.read_exact(&mut got).expect("client read");
    (client, server)
}

fn find(sockets: &[Socket], local: SocketAddr, remote: Option<SocketAddr>) -> Option<&Socket> {
    sockets
        .iter()
        .find(|s| s.local == local && s.remote == remote)
}

fn bytes(s: &Socket) -> (u64, u64) {
    let c = s.counters.unwrap_or_default();
    (c.bytes_out, c.bytes_in)
}

fn check_tcp_dump(bind: &str) {
    let mut table = SockDiag::open(Options::default()).expect("open sock_diag");
    let listener = TcpListener::bind(bind).expect("bind listener");
    let (client, server) = pair(&listener, 100_000, 3_000);
    let sockets = table.dump().expect("dump");
    let laddr = listener.local_addr().expect("addr");
    let (caddr, saddr) = (
        client.local_addr().expect("addr"),
        server.local_addr().expect("addr"),
    );

    let l = find(&sockets, laddr, None).expect("the listener is in the dump");
    assert_eq!(
        (l.protocol, l.state, l.uid),
        (Protocol::Tcp, "listen", euid())
    );
    assert_ne!(l.inode, 0);

    let c = find(&sockets, caddr, Some(saddr)).expect("the client end is in the dump");
    let s = find(&sockets, saddr, Some(caddr)).expect("the server end is in the dump");
    assert_eq!((c.state, s.state), ("established", "established"));
    assert_eq!(
        bytes(c),
        (100_000, 3_000),
        "client counters {:?}",
        c.counters
    );
    assert_eq!(
        bytes(s),
        (3_000, 100_000),
        "server counters {:?}",
        s.counters
    );
    let cc = c.counters.unwrap_or_default();
    assert!(cc.packets_out >= 2 && cc.packets_in >= 2, "segments {cc:?}");
    assert_eq!((c.uid, s.uid), (euid(), euid()));
    assert!(c.inode != 0 && s.inode != 0 && c.inode != s.inode);
    assert!(c.cookie != 0 && s.cookie != 0 && c.cookie != s.cookie && l.cookie != c.cookie);

    // The cookie and inode are stable from one dump to the next.
    let again = table.dump().expect("second dump");
    let c2 = find(&again, caddr, Some(saddr)).expect("client again");
    assert_eq!((c2.cookie, c2.inode), (c.cookie, c.inode));
}

#[test]
fn dump_shows_both_ends_with_counters_and_the_listener_v4() {
    check_tcp_dump("127.0.0.1:0");
}

#[test]
fn dump_shows_both_ends_with_counters_and_the_listener_v6() {
    if TcpListener::bind("[::1]:0").is_err() {
        eprintln!("SKIP: no IPv6 loopback here");
        return;
    }
    check_tcp_dump("[::1]:0");
}

#[test]
fn dump_shows_bound_and_connected_udp_sockets() {
    let mut table = SockDiag::open(Options::default()).expect("open sock_diag");
    let bound = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let connected = UdpSocket::bind("127.0.0.1:0").expect("bind");
    connected
        .connect(bound.local_addr().expect("addr"))
        .expect("connect");
    connected.send(b"hello").expect("send");
    let sockets = table.dump().expect("dump");
    let b = find(&sockets, bound.local_addr().expect("addr"), None).expect("bound UDP socket");
    assert_eq!(
        (b.protocol, b.state, b.counters),
        (Protocol::Udp, "unconnected", None)
    );
    let c = find(
        &sockets,
        connected.local_addr().expect("addr"),
        Some(bound.local_addr().expect("addr")),
    )
    .expect("connected UDP socket");
    assert_eq!(
        (c.protocol, c.state, c.uid),
        (Protocol::Udp, "established", euid())
    );
    assert_ne!(c.inode, 0);
}

/// Reads notifications until every cookie in `want` came (or 10 s).
fn collect(table: &mut SockDiag, want: &[u64]) -> (Vec<Socket>, u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    let mut lost = 0;
    while Instant::now() < deadline
        && !want
            .iter()
            .all(|c| got.iter().any(|s: &Socket| s.cookie == *c))
    {
        lost += table
            .closed(Duration::from_millis(200), &mut got)
            .expect("closed")
            .overflows;
    }
    (got, lost)
}

fn notifying() -> Option<SockDiag> {
    let table = SockDiag::open(Options::default()).expect("open sock_diag");
    if table.notifies() {
        return Some(table);
    }
    eprintln!("SKIP: no destroy notifications here: {:?}", table.limits());
    None
}

#[test]
fn closed_carries_the_final_counters_and_the_dumped_owner_keys() {
    let Some(mut table) = notifying() else { return };
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let (mut client, server) = pair(&listener, 10_000, 500);
    let dumped = table.dump().expect("dump");
    let (caddr, saddr) = (
        client.local_addr().expect("addr"),
        server.local_addr().expect("addr"),
    );
    let c = find(&dumped, caddr, Some(saddr))
        .expect("client dumped")
        .clone();
    let s = find(&dumped, saddr, Some(caddr))
        .expect("server dumped")
        .clone();
    // More bytes after the dump: only the notification can know them.
    client.write_all(&[1u8; 5_000]).expect("write after dump");
    let mut server = server;
    let mut rest = vec![0u8; 5_000];
    server.read_exact(&mut rest).expect("read after dump");
    drop(client);
    drop(server);
    let (got, lost) = collect(&mut table, &[c.cookie, s.cookie]);
    assert_eq!(lost, 0);
    let cn = got
        .iter()
        .find(|x| x.cookie == c.cookie)
        .expect("client destroy notification");
    let sn = got
        .iter()
        .find(|x| x.cookie == s.cookie)
        .expect("server destroy notification");
    // A received FIN advances rcv_nxt, which `tcpi_bytes_received`
    // follows: after a graceful close each side counts one byte more in
    // than the payload (`tcpi_bytes_sent` counts payload only). The
    // notification's state is "close" either way.
    assert_eq!(bytes(cn), (15_000, 501), "client final {:?}", cn.counters);
    assert_eq!(bytes(sn), (500, 15_001), "server final {:?}", sn.counters);
    assert_eq!((cn.state, sn.state), ("close", "close"));
    assert_eq!(
        (cn.local, cn.remote, cn.protocol),
        (caddr, Some(saddr), Protocol::Tcp)
    );
    // uid and inode are not in the notification; they come from the dump.
    assert_eq!((cn.uid, cn.inode), (c.uid, c.inode));
    assert_eq!((sn.uid, sn.inode), (s.uid, s.inode));
}

#[test]
fn a_notification_read_after_the_next_dump_still_gets_its_owner_keys() {
    let Some(mut table) = notifying() else { return };
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let (client, server) = pair(&listener, 10, 0);
    let (caddr, saddr) = (
        client.local_addr().expect("addr"),
        server.local_addr().expect("addr"),
    );
    let c = find(&table.dump().expect("dump"), caddr, Some(saddr))
        .expect("dumped")
        .clone();
    drop(client);
    drop(server);
    std::thread::sleep(Duration::from_millis(100));
    let again = table.dump().expect("second dump");
    assert!(
        find(&again, caddr, Some(saddr)).is_none(),
        "gone from the second dump"
    );
    let (got, _) = collect(&mut table, &[c.cookie]);
    let n = got
        .iter()
        .find(|x| x.cookie == c.cookie)
        .expect("notification");
    assert_eq!((n.uid, n.inode), (c.uid, c.inode));
}

#[test]
fn closed_reports_sockets_never_dumped_with_inode_zero() {
    let Some(mut table) = notifying() else { return };
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let (client, server) = pair(&listener, 777, 0);
    let (caddr, saddr) = (
        client.local_addr().expect("addr"),
        server.local_addr().expect("addr"),
    );
    drop(client);
    drop(server);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while Instant::now() < deadline && find(&got, caddr, Some(saddr)).is_none() {
        table
            .closed(Duration::from_millis(200), &mut got)
            .expect("closed");
    }
    let n = find(&got, caddr, Some(saddr)).expect("notification of the never-dumped client");
    assert_eq!(bytes(n), (777, 1)); // + the server's FIN
    assert_eq!((n.inode, n.uid), (0, 0), "the kernel leaves them zero");
    assert_ne!(n.cookie, 0);
}

#[test]
fn udp_sockets_are_destroy_notified() {
    let Some(mut table) = notifying() else { return };
    let u = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = u.local_addr().expect("addr");
    drop(u);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while Instant::now() < deadline && find(&got, addr, None).is_none() {
        table
            .closed(Duration::from_millis(200), &mut got)
            .expect("closed");
    }
    let n = find(&got, addr, None).expect("UDP destroy notification");
    assert_eq!((n.protocol, n.counters), (Protocol::Udp, None));
}

/// Closes `n` loopback connections (2n sockets destroyed) as fast as it
/// can; returns the client ports.
fn churn(listener: &TcpListener, n: usize) -> Vec<u16> {
    let mut ports = Vec::with_capacity(n);
    for _ in 0..n {
        let (c, s) = pair(listener, 1, 0);
        ports.push(c.local_addr().expect("addr").port());
        drop(c);
        drop(s);
    }
    ports
}

#[test]
fn an_overflowing_queue_counts_every_dropped_notification() {
    let opts = Options { rcvbuf: Some(4096) }; // the kernel's minimum-ish
    let mut table = SockDiag::open(opts).expect("open sock_diag");
    if !table.notifies() {
        eprintln!("SKIP: no destroy notifications here: {:?}", table.limits());
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let lport = listener.local_addr().expect("addr").port();
    let ports = churn(&listener, 300); // not reading meanwhile
    let mut got = Vec::new();
    let mut lost = 0;
    loop {
        let before = got.len();
        lost += table
            .closed(Duration::from_millis(300), &mut got)
            .expect("closed")
            .overflows;
        if got.len() == before {
            break;
        }
    }
    let ours = got
        .iter()
        .filter(|s| {
            let (l, r) = (s.local.port(), s.remote.map_or(0, |r| r.port()));
            (l == lport && ports.contains(&r)) || (r == lport && ports.contains(&l))
        })
        .count();
    assert!(
        lost > 0,
        "a {}-byte queue should overflow with 600 closes",
        4096
    );
    // Each of the 600 sockets was either delivered or counted as dropped
    // (other processes' sockets can be among the drops: at least).
    assert!(
        ours as u64 + lost >= 600,
        "delivered {ours} + counted lost {lost} < 600 destroyed"
    );
    assert!(ours < 600);
}

#[test]
fn proc_parsers() {
    let netlink = "sk               Eth Pid        Groups   Rmem     Wmem     Dump  Locks    Drops    Inode\n\
        ffff8d1f 4   123        0000000f 0        0        0     2        17       991\n\
        ffff8d20 0   0          00000000 0        0        0     2        0        12\n";
    assert_eq!(drops_of(netlink, 991), Some(17));
    assert_eq!(drops_of(netlink, 5), None);
    let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t0000000000001000\n";
    assert_eq!(cap_in(status, "CapEff:", 12), Some(true));
    assert_eq!(cap_in(status, "CapEff:", 13), Some(false));
    assert_eq!(cap_in("garbage", "CapEff:", 12), None);
}

#[test]
fn limits_name_what_is_missing() {
    let table = SockDiag::open(Options::default()).expect("open sock_diag");
    let limits = table.limits().join("\n");
    assert!(limits.contains("UDP"), "{limits}");
    if table.notifies() {
        assert!(!limits.contains("no destroy notifications"), "{limits}");
    } else {
        assert!(limits.contains("CAP_NET_ADMIN"), "{limits}");
    }
}

const CHILD_ENV: &str = "SOCKDIAG_CHILD_WITHOUT_NET_ADMIN";

/// Runs in a child started by the next test without CAP_NET_ADMIN and
/// reports what actually fails there. On Linux 6.18 joining the destroy
/// groups does not (sock_diag's netlink table is created with
/// NL_CFG_F_NONROOT_RECV; checked with uid nobody too): only forcing the
/// receive buffer past net.core.rmem_max does.
#[test]
#[ignore = "run by without_cap_net_admin_only_the_forced_buffer_fails"]
fn child_without_net_admin() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    assert_eq!(has_cap(CAP_NET_ADMIN), Some(false));
    let mut table = SockDiag::open(Options::default()).expect("dumping needs no privilege");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let laddr = listener.local_addr().expect("addr");
    let sockets = table.dump().expect("dump without CAP_NET_ADMIN");
    assert!(
        find(&sockets, laddr, None).is_some(),
        "the listener is dumped"
    );
    let mut notified = false;
    if table.notifies() {
        let (c, s) = pair(&listener, 10, 0);
        let caddr = c.local_addr().expect("addr");
        drop(c);
        drop(s);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while Instant::now() < deadline && !got.iter().any(|x: &Socket| x.local == caddr) {
            table
                .closed(Duration::from_millis(200), &mut got)
                .expect("closed");
        }
        notified = got.iter().any(|x| x.local == caddr);
    }
    println!("CHILD-NOTIFIED {notified}");
    println!("CHILD-FORCED {:?}", table.rcvbuf().map(|r| r.1));
    println!("CHILD-LIMITS {}", table.limits().join(" | "));
}

#[test]
fn without_cap_net_admin_only_the_forced_buffer_fails() {
    if has_cap(CAP_NET_ADMIN) != Some(true) {
        eprintln!("SKIP: this test drops CAP_NET_ADMIN, which it does not have");
        return;
    }
    let exe = std::env::current_exe().expect("test binary");
    let out = match std::process::Command::new("setpriv")
        .arg("--bounding-set=-net_admin")
        .arg(&exe)
        .args([
            "--exact",
            "capture::network::linux::sock_diag::tests::child_without_net_admin",
        ])
        .args(["--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            eprintln!("SKIP: setpriv not runnable: {e}");
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The harness prints "test <name> ... " before the child's first line.
    let line = |p: &str| {
        stdout
            .lines()
            .find_map(|l| l.split_once(p))
            .map(|(_, v)| v.to_string())
    };
    let limits = line("CHILD-LIMITS ").expect("the child ran");
    match line("CHILD-NOTIFIED ").as_deref() {
        // This kernel lets anyone join the groups: notifications arrive,
        // the buffer stays capped at net.core.rmem_max, limits() says so.
        Some("true") => {
            assert_eq!(line("CHILD-FORCED ").as_deref(), Some("Some(false)"));
            assert!(limits.contains("net.core.rmem_max"), "{limits}");
            assert!(!limits.contains("no destroy notifications"), "{limits}");
        }
        // A kernel that refuses: limits() names the error and the cure.
        _ => {
            assert!(limits.contains("no destroy notifications"), "{limits}");
            assert!(limits.contains("CAP_NET_ADMIN"), "{limits}");
        }
    }
}
