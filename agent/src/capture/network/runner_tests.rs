//! The runner against a real buffer with a scripted socket table: records
//! and the flows' keyed state written together, a stop and a restart that
//! continues the flow (no second `open`), lost notifications as a gap
//! record.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiroku_proto::{Event, HostIdentity, event::Kind};

use super::config::NetworkConfig;
use super::flows;
use super::platform::{Counters, Lost, Owner, ProcessTable, Protocol, Socket, SocketTable};
use super::runner::{Runner, Sources};
use crate::buffer::Buffer;
use crate::capture::context::{CaptureContext, Clock};
use crate::gaps::Gaps;

#[derive(Default)]
struct Script {
    now: Vec<Socket>,
    closed: Vec<Socket>,
    overflows: u64,
}

struct Scripted(Arc<Mutex<Script>>);

impl SocketTable for Scripted {
    fn dump(&mut self) -> std::io::Result<Vec<Socket>> {
        Ok(self.0.lock().expect("test value").now.clone())
    }
    fn closed(&mut self, wait: Duration, out: &mut Vec<Socket>) -> std::io::Result<Lost> {
        let mut s = self.0.lock().expect("test value");
        out.append(&mut s.closed);
        let overflows = std::mem::take(&mut s.overflows);
        drop(s);
        if out.is_empty() {
            std::thread::sleep(wait);
        }
        Ok(Lost { overflows })
    }
    fn limits(&self) -> Vec<String> {
        Vec::new()
    }
}

struct Procs;

impl ProcessTable for Procs {
    fn owners(&mut self, inodes: &[u64]) -> HashMap<u64, Owner> {
        inodes
            .iter()
            .map(|i| {
                (
                    *i,
                    Owner {
                        pid: 4242,
                        name: "rsync".into(),
                        exe: "/usr/bin/rsync".into(),
                        uid: 1000,
                        user: "alice".into(),
                        ..Default::default()
                    },
                )
            })
            .collect()
    }
    fn user_name(&mut self, _uid: u32) -> String {
        String::new()
    }
}

fn sock(bytes_out: u64, state: &'static str) -> Socket {
    Socket {
        protocol: Protocol::Tcp,
        local: "10.0.0.5:40000".parse().expect("test value"),
        remote: Some("192.0.2.7:873".parse().expect("test value")),
        state,
        uid: 1000,
        inode: 99,
        cookie: 0xc0ffee,
        counters: Some(Counters {
            bytes_out,
            bytes_in: 10,
            packets_out: 1,
            packets_in: 1,
        }),
    }
}

struct Running {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

fn start(b: &Arc<Buffer>, script: &Arc<Mutex<Script>>) -> Running {
    let ctx = CaptureContext::new(
        "a".into(),
        HostIdentity::default(),
        "me".into(),
        BTreeMap::new(),
        Clock::default(),
    );
    let cfg = NetworkConfig {
        enabled: true,
        dump_interval_ms: 100,
        summary_secs: 1,
        loopback: true,
        ..Default::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let runner = Runner {
        cfg,
        collector: "https://127.0.0.1:1".into(),
        sources: Sources {
            sockets: Box::new(Scripted(script.clone())),
            procs: Box::new(Procs),
            inspector: None,
        },
        buffer: b.clone(),
        ctx: ctx.clone(),
        gaps: Gaps::new(b.clone(), ctx),
        stop: stop.clone(),
        rt: tokio::runtime::Handle::current(),
    };
    let thread = std::thread::spawn(move || runner.run());
    Running { stop, thread }
}

async fn stop(r: Running) {
    r.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::task::spawn_blocking(move || r.thread.join().expect("test value"))
        .await
        .expect("test value");
}

fn events(b: &Buffer) -> Vec<Event> {
    b.read_batch(0, 1_000_000, usize::MAX).expect("read")
}

async fn wait_until(b: &Buffer, what: &str, ok: impl Fn(&[Event]) -> bool) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let e = events(b);
        if ok(&e) {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {e:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn phases(e: &[Event]) -> Vec<(String, bool, u64)> {
    e.iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::Network(n)) => Some((n.phase.clone(), n.continued, n.bytes_out_delta)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_and_state_survive_a_restart_without_a_second_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = Buffer::open(&dir.path().join("buf"), u64::MAX, 1 << 20).expect("open");
    let script = Arc::new(Mutex::new(Script {
        now: vec![sock(100, "established")],
        ..Default::default()
    }));
    let r = start(&b, &script);
    let e = wait_until(&b, "the open", |e| !phases(e).is_empty()).await;
    let open = match &e[0].kind {
        Some(Kind::Network(n)) => n.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(open.phase, "open");
    assert_eq!(open.process.as_ref().expect("test value").name, "rsync");
    assert_eq!(e[0].user, "alice");
    let state = b.keyed_state(flows::STATE);
    assert_eq!(
        state.len(),
        1,
        "the flow's totals are saved with its record"
    );
    script.lock().expect("test value").now = vec![sock(5_000, "established")];
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop(r).await;
    // A new run (the agent restarted) with the same buffer.
    let r = start(&b, &script);
    wait_until(&b, "the continued update", |e| {
        phases(e).iter().any(|(_, continued, _)| *continued)
    })
    .await;
    {
        let mut s = script.lock().expect("test value");
        s.closed = vec![sock(6_000, "close")];
        s.now.clear();
        s.overflows = 7;
    }
    let e = wait_until(&b, "the close and the gap", |e| {
        phases(e).len() >= 4 && e.iter().any(|e| matches!(e.kind, Some(Kind::Gap(_))))
    })
    .await;
    stop(r).await;
    assert_eq!(
        phases(&e),
        [
            ("open".to_owned(), false, 100),
            // The clean stop's final update: the bytes up to the stop.
            ("update".to_owned(), false, 4_900),
            // The restarted run continues the flow (nothing new since).
            ("update".to_owned(), true, 0),
            ("close".to_owned(), false, 1_000),
        ]
    );
    let gap = e
        .iter()
        .find_map(|e| match &e.kind {
            Some(Kind::Gap(g)) => Some(g.clone()),
            _ => None,
        })
        .expect("test value");
    assert_eq!(
        (gap.source.as_str(), gap.reason.as_str(), gap.count),
        ("network", "notifications_lost", 7)
    );
    assert_eq!(
        state.len(),
        0,
        "a closed flow's state is removed with its close"
    );
}

/// The runner with this host's real socket and process tables: a loopback
/// connection of this process is recorded with its owner and bytes.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_sources_record_a_loopback_connection_of_this_process() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().expect("tempdir");
    let b = Buffer::open(&dir.path().join("buf"), u64::MAX, 1 << 20).expect("open");
    let ctx = CaptureContext::new(
        "a".into(),
        HostIdentity::default(),
        "me".into(),
        BTreeMap::new(),
        Clock::default(),
    );
    let stop_flag = Arc::new(AtomicBool::new(false));
    let runner = Runner {
        cfg: NetworkConfig {
            enabled: true,
            dump_interval_ms: 100,
            loopback: true,
            ..Default::default()
        },
        collector: "https://127.0.0.1:1".into(),
        sources: Sources {
            sockets: super::platform::open_sockets().expect("sock_diag"),
            procs: super::platform::open_processes().expect("procs"),
            inspector: None,
        },
        buffer: b.clone(),
        ctx: ctx.clone(),
        gaps: Gaps::new(b.clone(), ctx),
        stop: stop_flag.clone(),
        rt: tokio::runtime::Handle::current(),
    };
    let running = Running {
        stop: stop_flag,
        thread: std::thread::spawn(move || runner.run()),
    };
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("test value");
    let port = l.local_addr().expect("test value").port();
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("test value");
    let (mut s, _) = l.accept().expect("test value");
    c.write_all(&[7u8; 100_000]).expect("test value");
    let mut got = vec![0u8; 100_000];
    s.read_exact(&mut got).expect("test value");
    // Seen by a dump, then closed.
    tokio::time::sleep(Duration::from_millis(400)).await;
    drop(c);
    drop(s);
    let e = wait_until(&b, "the client's close", |e| {
        e.iter().any(|e| match &e.kind {
            Some(Kind::Network(n)) => {
                n.phase == "close" && n.remote_port == u32::from(port) && n.direction == "outbound"
            }
            _ => false,
        })
    })
    .await;
    stop(running).await;
    let close = e
        .iter()
        .find_map(|e| match &e.kind {
            Some(Kind::Network(n)) if n.phase == "close" && n.remote_port == u32::from(port) => {
                Some(n.clone())
            }
            _ => None,
        })
        .expect("test value");
    assert_eq!(close.bytes_out, 100_000, "{close:#?}");
    assert_eq!(close.attribution, "socket");
    assert_eq!(
        close.process.as_ref().expect("test value").pid,
        std::process::id()
    );
}
