//! Measurements (not checks): the cost of a sock_diag dump at 1k and 10k
//! sockets, of a full /proc scan with ~300 processes, and how many destroy
//! notifications get through before ENOBUFS. Ignored by default; run
//!   cargo test -p kiroku-agent --lib network::linux::measure -- --ignored --nocapture --test-threads=1
//! The figures are in the sock_diag / procs module docs and the README.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::procs::Procs;
use super::sock_diag::{Options, SockDiag};
use crate::capture::network::platform::{Socket, SocketTable};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn connections(listener: &TcpListener, n: usize) -> Vec<(TcpStream, TcpStream)> {
    let addr = listener.local_addr().expect("addr");
    (0..n)
        .map(|_| {
            let c = TcpStream::connect(addr).expect("connect");
            let (s, _) = listener.accept().expect("accept");
            (c, s)
        })
        .collect()
}

#[test]
#[ignore = "measurement: run with --ignored --nocapture"]
fn measure_dump_cost() {
    let mut table = SockDiag::open(Options::default()).expect("open");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut held = Vec::new();
    for target in [1_000usize, 10_000] {
        let base = table.dump().expect("dump").len();
        held.extend(connections(&listener, target.saturating_sub(base) / 2));
        let mut times = Vec::new();
        let mut len = 0;
        for _ in 0..7 {
            let t = Instant::now();
            len = table.dump().expect("dump").len();
            times.push(t.elapsed());
        }
        let m = median(times);
        // The same kernel work done by iproute2's ss (C, optimised), for
        // scale: what of the figure is the kernel's, what is our parsing.
        let t = Instant::now();
        let ss = Command::new("ss")
            .args(["-tuinaH"])
            .output()
            .map(|o| o.stdout.len())
            .unwrap_or(0);
        let ss_time = t.elapsed();
        println!(
            "MEASURE dump: {len} sockets: median {:.2} ms ({:.2} us/socket); `ss -tuinaH` {:.2} ms ({ss} bytes out)",
            m.as_secs_f64() * 1e3,
            m.as_secs_f64() * 1e6 / len as f64,
            ss_time.as_secs_f64() * 1e3
        );
    }
}

struct Sleepers(Vec<Child>);

impl Drop for Sleepers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn process_count() -> usize {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.parse::<u32>().is_ok())
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
#[ignore = "measurement: run with --ignored --nocapture"]
fn measure_proc_scan_with_300_processes() {
    let mut sleepers = Sleepers(Vec::new());
    while process_count() < 300 {
        sleepers.0.push(
            Command::new("sleep")
                .arg("120")
                .spawn()
                .expect("spawn sleep"),
        );
    }
    let mut procs = Procs::open(Path::new("/proc"), Duration::ZERO).expect("open");
    let mut times = Vec::new();
    for _ in 0..7 {
        procs.scan();
        times.push(procs.last_scan_cost);
    }
    let fds: usize = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_dir(e.path().join("fd")).ok())
                .map(|f| f.count())
                .sum()
        })
        .unwrap_or(0);
    let t = Instant::now();
    let _ = Command::new("sh")
        .args(["-c", "find /proc/[0-9]*/fd -lname 'socket:*' | wc -l"])
        .output();
    println!(
        "MEASURE the same by find(1): {:.2} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    println!(
        "MEASURE /proc scan: {} processes, {fds} fds: median {:.2} ms (first {:.2} ms)",
        process_count(),
        median(times.clone()).as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3
    );
}

/// Opens and closes loopback connections as fast as it can until `stop`.
fn churn_until(addr: std::net::SocketAddr, stop: Arc<AtomicBool>) -> u64 {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        if let Ok(c) = TcpStream::connect(addr) {
            drop(c);
            n += 1;
        }
    }
    n
}

fn ours(got: &[Socket], port: u16) -> usize {
    got.iter()
        .filter(|s| s.local.port() == port || s.remote.is_some_and(|r| r.port() == port))
        .count()
}

fn capacity(opts: Options, label: &str) {
    let mut table = SockDiag::open(opts).expect("open");
    if !table.notifies() {
        println!("MEASURE skipped: no destroy notifications");
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let n = 5_000;
    for pair in connections(&listener, n) {
        drop(pair);
    }
    std::thread::sleep(Duration::from_millis(300));
    let (mut got, mut lost) = (Vec::new(), 0);
    let drain = Instant::now();
    loop {
        let before = got.len();
        lost += table
            .closed(Duration::from_millis(200), &mut got)
            .expect("closed")
            .overflows;
        if got.len() == before {
            break;
        }
    }
    println!(
        "MEASURE queue {label} (rcvbuf granted {:?}): {} connections closed unread ({} sockets): {} of ours delivered, {lost} counted lost, {} delivered in all, read at {:.0}/s",
        table.rcvbuf(),
        n,
        2 * n,
        ours(&got, port),
        got.len(),
        got.len() as f64
            / drain
                .elapsed()
                .saturating_sub(Duration::from_millis(200))
                .as_secs_f64()
    );
}

fn sustained(opts: Options, label: &str) {
    let mut table = SockDiag::open(opts).expect("open");
    if !table.notifies() {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = Arc::new(AtomicBool::new(false));
    let acceptor = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            // Blocking: the last connection after `stop` wakes it.
            while !stop.load(Ordering::Relaxed) {
                if let Ok((s, _)) = listener.accept() {
                    drop(s);
                }
            }
        })
    };
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut delivered, mut lost, mut got) = (0u64, 0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                got.clear();
                lost += table
                    .closed(Duration::from_millis(100), &mut got)
                    .expect("closed")
                    .overflows;
                delivered += got.len() as u64;
            }
            (delivered, lost)
        })
    };
    let started = Instant::now();
    let gens: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || churn_until(addr, stop))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let conns: u64 = gens.into_iter().map(|g| g.join().expect("generator")).sum();
    let _ = TcpStream::connect(addr);
    let secs = started.elapsed().as_secs_f64();
    let (delivered, lost) = reader.join().expect("reader");
    acceptor.join().expect("acceptor");
    println!(
        "MEASURE sustained {label}: {:.0} connections/s ({:.0} sockets destroyed/s of ours) for {secs:.1} s: {delivered} notifications read ({:.0}/s), {lost} lost",
        conns as f64 / secs,
        2.0 * conns as f64 / secs,
        delivered as f64 / secs
    );
}

#[test]
#[ignore = "measurement: run with --ignored --nocapture"]
fn measure_notifications_before_enobufs() {
    capacity(Options { rcvbuf: None }, "default buffer");
    capacity(Options::default(), "16 MiB buffer");
    sustained(Options { rcvbuf: None }, "default buffer");
    sustained(Options::default(), "16 MiB buffer");
}
