//! Network namespaces made by a test (issue 21): a "hub" namespace with a
//! bridge, and peer namespaces each joined to it by a veth pair, so that
//! real programs (BitTorrent clients, a tracker, HTTP and SMTP servers)
//! talk to each other over real, non-loopback interfaces while the
//! machine's own (root) namespace is never touched.
//!
//! ```text
//!   kk-<pid>-<n>h   (the monitored host: agent, monitored client)
//!     lo, br0 10.77.0.1/24
//!       ├── v1 ── eth0 10.77.0.11  kk-<pid>-<n>p1
//!       ├── v2 ── eth0 10.77.0.12  kk-<pid>-<n>p2
//!       └── ...
//! ```
//!
//! Cleanup is guaranteed by [`Lab`]'s `Drop` (also when the test panics):
//! every process still in one of the lab's namespaces is killed (SIGKILL,
//! found with `ip netns pids`), the forwarders stop, and the namespaces are
//! deleted (their veths and bridge go with them). Namespaces left by a test
//! process that was itself killed (its pid is gone) are removed by the next
//! [`Lab::new`].
//!
//! Processes are started inside a namespace with `ip netns exec`, which
//! execs the program (the [`Proc`] guard's pid is the program's). The test
//! process itself stays in the root namespace; where it must reach a
//! namespace (a port forwarded to the collector, a readiness probe) a
//! short-lived thread enters it with setns(2) and creates the socket there
//! (a socket belongs to the namespace it was created in, whatever thread
//! uses it afterwards).

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{Env, Proc};

/// The hub's address on its bridge; peer `i` (1-based) is 10.77.0.(10+i).
pub const HUB_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

/// Every namespace of this crate's labs starts with this.
const PREFIX: &str = "kk-";

/// Labs made by this process so far (names stay unique when tests run in
/// parallel threads).
static LABS: AtomicUsize = AtomicUsize::new(0);

/// One peer namespace: its name and its address on the hub's bridge.
#[derive(Debug, Clone)]
pub struct Peer {
    pub ns: String,
    pub ip: Ipv4Addr,
}

/// A hub namespace with a bridge and `n` peer namespaces; all deleted on
/// drop.
pub struct Lab {
    pub hub: String,
    pub peers: Vec<Peer>,
    forwards: Vec<Forward>,
}

/// Why namespace tests cannot run here, if they cannot: not root, no `ip`,
/// or creating a namespace fails (a container without CAP_SYS_ADMIN).
pub fn unavailable() -> Option<String> {
    if !crate::is_root() {
        return Some("network namespaces need root".into());
    }
    let probe = format!(
        "{PREFIX}{}-probe{}",
        std::process::id(),
        LABS.fetch_add(1, Ordering::SeqCst)
    );
    match Command::new("ip").args(["netns", "add", &probe]).output() {
        Err(e) => Some(format!("cannot run `ip` (iproute2): {e}")),
        Ok(o) if !o.status.success() => Some(format!(
            "`ip netns add` fails here: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Ok(_) => {
            let _ = Command::new("ip").args(["netns", "del", &probe]).status();
            None
        }
    }
}

/// Runs `ip args...`; fails with its stderr.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let o = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    anyhow::ensure!(
        o.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr).trim()
    );
    Ok(())
}

/// Pids of the processes in namespace `ns`.
fn pids_in(ns: &str) -> Vec<u32> {
    Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Kills whatever runs in `ns` and deletes it (best effort, bounded).
fn destroy(ns: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids = pids_in(ns);
        if pids.is_empty() || Instant::now() > deadline {
            break;
        }
        for p in pids {
            let _ = Command::new("kill").args(["-9", &p.to_string()]).status();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = Command::new("ip").args(["netns", "del", ns]).status();
}

/// Removes namespaces a killed test process left (`kk-<pid>-...` whose pid
/// no longer runs).
fn sweep_stale() {
    let Ok(o) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            destroy(name);
        }
    }
}

impl Lab {
    /// Creates the hub (lo up, bridge `br0` with [`HUB_IP`]) and `n` peers
    /// (lo up, `eth0` = 10.77.0.(10+i)/24 bridged to the hub).
    pub fn new(n: usize) -> anyhow::Result<Lab> {
        anyhow::ensure!(n <= 200, "at most 200 peers in a lab ({n} asked)");
        sweep_stale();
        let tag = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            LABS.fetch_add(1, Ordering::SeqCst)
        );
        let mut lab = Lab {
            hub: format!("{tag}h"),
            peers: Vec::new(),
            forwards: Vec::new(),
        };
        // From here on a failure drops `lab`, which deletes what exists.
        ip(&["netns", "add", &lab.hub])?;
        let hub = lab.hub.clone();
        ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        ip(&[
            "-n",
            &hub,
            "addr",
            "add",
            &format!("{HUB_IP}/24"),
            "dev",
            "br0",
        ])?;
        for i in 1..=n {
            let peer = Peer {
                ns: format!("{tag}p{i}"),
                ip: Ipv4Addr::new(10, 77, 0, 10 + i as u8),
            };
            ip(&["netns", "add", &peer.ns])?;
            lab.peers.push(peer.clone());
            let veth = format!("v{i}");
            ip(&["-n", &peer.ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n", &hub, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns",
                &peer.ns,
            ])?;
            ip(&["-n", &hub, "link", "set", &veth, "master", "br0", "up"])?;
            ip(&[
                "-n",
                &peer.ns,
                "addr",
                "add",
                &format!("{}/24", peer.ip),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &peer.ns, "link", "set", "eth0", "up"])?;
        }
        Ok(lab)
    }

    /// Peer `i` (1-based, as in the namespace names).
    pub fn peer(&self, i: usize) -> &Peer {
        &self.peers[i - 1]
    }

    /// `program` to be run inside namespace `ns` (`ip netns exec`).
    pub fn command(&self, ns: &str, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(program);
        c
    }

    /// The same command (program, arguments, environment, directory) run
    /// inside namespace `ns`.
    pub fn wrap(&self, ns: &str, cmd: &Command) -> Command {
        let mut c = self.command(ns, cmd.get_program());
        c.args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        if let Some(d) = cmd.get_current_dir() {
            c.current_dir(d);
        }
        c
    }

    /// Starts `cmd` inside `ns` with its output in `log`; killed when the
    /// guard drops (and by the lab's cleanup in any case).
    pub fn spawn(&self, ns: &str, name: &str, cmd: &Command, log: &Path) -> anyhow::Result<Proc> {
        Proc::spawn(name, &mut self.wrap(ns, cmd), log)
    }

    /// Runs `f` on a thread that has entered namespace `ns`: sockets it
    /// creates belong to `ns`.
    pub fn within<T: Send>(&self, ns: &str, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
        let path = format!("/run/netns/{ns}");
        std::thread::scope(|s| {
            s.spawn(|| -> anyhow::Result<T> {
                let fd = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
                rustix::thread::move_into_link_name_space(
                    std::os::fd::AsFd::as_fd(&fd),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .with_context(|| format!("setns into {path}"))?;
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("thread in namespace {ns} panicked"))?
        })
    }

    /// The kernel's counters of interface `dev` in `ns`: (bytes received,
    /// packets received) — frames with their headers.
    pub fn rx_counters(&self, ns: &str, dev: &str) -> anyhow::Result<(u64, u64)> {
        let o = Command::new("ip")
            .args(["-n", ns, "-s", "-j", "link", "show", dev])
            .output()
            .context("running ip (iproute2)")?;
        anyhow::ensure!(
            o.status.success(),
            "ip -n {ns} -s link show {dev}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)
            .with_context(|| format!("ip -j output for {dev} in {ns}"))?;
        let rx = &v[0]["stats64"]["rx"];
        match (rx["bytes"].as_u64(), rx["packets"].as_u64()) {
            (Some(b), Some(p)) => Ok((b, p)),
            _ => bail!("no rx counters for {dev} in {ns}: {v}"),
        }
    }

    /// A TCP connection to `addr` made from inside `ns`.
    pub fn connect(&self, ns: &str, addr: SocketAddr) -> anyhow::Result<TcpStream> {
        Ok(self.within(ns, || {
            TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        })??)
    }

    /// Waits until `addr` accepts connections inside `ns` (30 s), failing
    /// early when `p` exits.
    pub fn wait_port(&self, ns: &str, addr: SocketAddr, p: &mut Proc) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if !p.is_running() {
                bail!("{} exited at start:\n{}", p.name, p.log_text());
            }
            if self.connect(ns, addr).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not listen on {addr} in {ns}:\n{}",
                    p.name,
                    p.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Listens on `listen` inside `ns` and forwards every connection to
    /// `to` in the test's own namespace (e.g. a collector on 127.0.0.1):
    /// a program in `ns` reaches it over the lab's network. Stops with the
    /// lab.
    pub fn forward(&mut self, ns: &str, listen: SocketAddr, to: SocketAddr) -> anyhow::Result<()> {
        let listener = self
            .within(ns, || TcpListener::bind(listen))?
            .with_context(|| format!("bind {listen} in {ns}"))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (stop2, open2) = (stop.clone(), open.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((inside, _)) => {
                        let _ = inside.set_nonblocking(false);
                        if let Ok(outside) = TcpStream::connect(to) {
                            splice(inside, outside, &open2);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        self.forwards.push(Forward {
            stop,
            open,
            thread: Some(thread),
        });
        Ok(())
    }
}

/// Copies both ways between `a` and `b` on two threads; the streams are
/// kept in `open` so the forwarder can shut them down.
fn splice(a: TcpStream, b: TcpStream, open: &Mutex<Vec<TcpStream>>) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    if let (Ok(a3), Ok(b3), Ok(mut o)) = (a.try_clone(), b.try_clone(), open.lock()) {
        o.push(a3);
        o.push(b3);
    }
    fn pump(mut from: TcpStream, mut to: TcpStream) {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    }
    std::thread::spawn(move || pump(a, b2));
    std::thread::spawn(move || pump(b, a2));
}

/// A port forwarded into a namespace (see [`Lab::forward`]).
struct Forward {
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Ok(o) = self.open.lock() {
            for s in o.iter() {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.forwards.clear();
        for p in &self.peers {
            destroy(&p.ns);
        }
        destroy(&self.hub);
    }
}

/// Starts an agent named `name` inside `ns`: it ships to the collector at
/// `collector` (an address reachable from `ns`, verified as "localhost"),
/// takes SMTP on `smtp` relaying to `upstream` when given, with `extra`
/// TOML appended (e.g. a `[network]` section). Waits for its SMTP port.
#[allow(clippy::too_many_arguments)]
pub fn start_agent(
    lab: &Lab,
    env: &Env,
    ns: &str,
    name: &str,
    collector: SocketAddr,
    smtp: SocketAddr,
    upstream: Option<SocketAddr>,
    extra: &str,
) -> anyhow::Result<Proc> {
    let pki = env.pki();
    if !pki.join(format!("agent-{name}.pem")).exists() {
        env.issue("agent", name, &[])?;
    }
    let mode = match upstream {
        None => "mode = \"capture-only\"\n".to_owned(),
        Some(u) => format!("mode = \"relay\"\nupstream = \"{u}\"\n"),
    };
    let cfg = env.path().join(format!("agent-{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "data_dir = {:?}\n[collector]\nendpoint = \"https://{collector}\"\nserver_name = \"localhost\"\n[collector.tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n[smtp]\nlisten = [\"{smtp}\"]\n{mode}{extra}",
            env.path().join(format!("agent-{name}")),
            pki.join("ca.pem"),
            pki.join(format!("agent-{name}.pem")),
            pki.join(format!("agent-{name}.key")),
        ),
    )?;
    let mut cmd = Command::new(crate::bin("kiroku-agent"));
    cmd.arg("--config").arg(&cfg).current_dir(env.path());
    let mut p = lab.spawn(
        ns,
        &format!("agent {name}"),
        &cmd,
        &env.path().join(format!("agent-{name}.log")),
    )?;
    lab.wait_port(ns, smtp, &mut p)?;
    Ok(p)
}
