//! Network capture benchmark (issue 21): a real agent with `[network]` on
//! (and a collector) while this process makes load on loopback, phase by
//! phase: idle, new TCP connections at each `--rates` per second (connect,
//! a few bytes each way, close: `netgen::short_connections`), and one
//! paced transfer at `--gbit` Gbit/s. Per phase: the agent's CPU
//! (utime+stime from /proc/<pid>/stat over the phase) and RSS, and the
//! connections it recorded (its `network` records at the collector: flows
//! and summaries' counts, and `network` gap records) side by side with
//! what the generator made and what the kernel counted (/proc/net/snmp
//! Tcp ActiveOpens / PassiveOpens deltas).
//!
//! By default the whole run happens in a network namespace of its own
//! (`unshare --net`, loopback up; it goes when the run ends), so the
//! kernel's counters and the agent's socket table hold only this run's
//! traffic; `--host-netns` runs in the host's (the counters then include
//! whatever else runs).
//!
//! Run: `CARGO_INCREMENTAL=0 cargo build --release -p kiroku-tests --bins
//! -p kiroku-agent -p kiroku-collector`, then
//! `flock /work/bench.lock target/release/kiroku-bench-network`.

use std::collections::{BTreeMap, HashSet};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use kiroku_proto::NetworkEvent;
use kiroku_tests::netgen::{
    EchoServer, TcpCounters, cpu_seconds, paced_transfer, rss_bytes, short_connections,
};
use kiroku_tests::netrec::{NetRecords, Tally};
use kiroku_tests::{Env, Mode, Proc, free_port};

#[derive(Parser, Clone)]
struct Args {
    /// New connections per second, one phase each, comma-separated.
    #[arg(long, default_value = "100,1000")]
    rates: String,
    /// Seconds each connection phase lasts.
    #[arg(long, default_value_t = 20)]
    secs: u64,
    /// Seconds of the idle phase.
    #[arg(long, default_value_t = 20)]
    idle_secs: u64,
    /// Bytes each short connection sends (and gets back).
    #[arg(long, default_value_t = 32)]
    payload: usize,
    /// The transfer phase's rate (Gbit/s; 0: no transfer phase).
    #[arg(long, default_value_t = 1.0)]
    gbit: f64,
    #[arg(long, default_value_t = 20)]
    stream_secs: u64,
    /// Also measure an agent without `[network]` at idle (the baseline).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    baseline: bool,
    /// TOML lines added inside the agent's `[network]` section.
    #[arg(long, default_value = "")]
    network: String,
    /// Run in the host's network namespace instead of a new one.
    #[arg(long)]
    host_netns: bool,
}

/// Set in the environment of the re-executed benchmark inside its own
/// network namespace.
const IN_NETNS: &str = "KIROKU_BENCH_NETWORK_NETNS";

/// One phase's figures.
struct Phase {
    name: String,
    wall: f64,
    agent_cpu: f64,
    /// Agent CPU from the phase's start until its records were at the
    /// collector (the work the phase caused, drain included).
    agent_cpu_total: f64,
    collector_cpu: f64,
    rss: u64,
    hwm: u64,
    kernel: TcpCounters,
    /// Connections the generator completed.
    made: u64,
    out: Tally,
    inb: Tally,
    gaps: BTreeMap<String, u64>,
    note: String,
}

fn mb(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1e6)
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "{cores} cores, {:.0} GiB, Linux {}, load average at start {}",
        mem as f64 / 1024.0 / 1024.0,
        kernel.trim(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

fn commit() -> String {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    let head = git(&["rev-parse", "--short", "HEAD"]);
    let dirty = if git(&["status", "--porcelain", "--untracked-files=no"]).is_empty() {
        ""
    } else {
        " (with uncommitted changes)"
    };
    format!(
        "{head}{dirty}, branch {}",
        git(&["branch", "--show-current"])
    )
}

/// Re-runs this benchmark inside a new network namespace with loopback up;
/// returns its exit status.
fn reexec_in_netns() -> anyhow::Result<std::process::ExitStatus> {
    let exe = std::env::current_exe()?;
    Ok(Command::new("unshare")
        .args([
            "--net",
            "--",
            "sh",
            "-c",
            "ip link set lo up && exec \"$@\"",
            "sh",
        ])
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env(IN_NETNS, "1")
        .status()?)
}

struct Bench<'a> {
    env: &'a Env,
    agent: &'a Proc,
    collector: &'a Proc,
    agent_id: &'a str,
}

impl Bench<'_> {
    fn cpu(&self) -> (f64, f64) {
        (
            cpu_seconds(self.agent.pid()),
            cpu_seconds(self.collector.pid()),
        )
    }

    async fn idle(&self, secs: u64, name: &str) -> anyhow::Result<Phase> {
        let k0 = TcpCounters::read()?;
        let (a0, c0) = self.cpu();
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let wall = t0.elapsed().as_secs_f64();
        let (a1, c1) = self.cpu();
        let (rss, hwm) = rss_bytes(self.agent.pid());
        Ok(Phase {
            name: name.into(),
            wall,
            agent_cpu: a1 - a0,
            agent_cpu_total: a1 - a0,
            collector_cpu: c1 - c0,
            rss,
            hwm,
            kernel: TcpCounters::read()?.since(&k0),
            made: 0,
            out: Tally::default(),
            inb: Tally::default(),
            gaps: BTreeMap::new(),
            note: String::new(),
        })
    }

    /// Records of the phase that started at `from_ms`, once `enough` holds
    /// or nothing new arrives for 75 s.
    async fn settle(
        &self,
        from_ms: i64,
        enough: impl Fn(&NetRecords) -> bool,
    ) -> anyhow::Result<NetRecords> {
        NetRecords::settle(
            self.env,
            self.agent_id,
            from_ms,
            enough,
            // Longer than the default summary interval (60 s): a
            // summary comes at its end.
            Duration::from_secs(75),
            Duration::from_secs(150),
        )
        .await
    }

    async fn connections(&self, rate: u64, secs: u64, payload: usize) -> anyhow::Result<Phase> {
        // From before the listener opens: its listen_open record too.
        let from_ms = kiroku_common::now_ms() - 1000;
        let server = EchoServer::start(payload)?;
        let port = server.addr.port() as u32;
        // Until a dump has seen the listener.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let k0 = TcpCounters::read()?;
        let (a0, c0) = self.cpu();
        let t0 = Instant::now();
        let addr = server.addr;
        let st = tokio::task::spawn_blocking(move || {
            short_connections(addr, rate * secs, rate as f64, payload)
        })
        .await?;
        let wall = t0.elapsed().as_secs_f64();
        let kernel = TcpCounters::read()?.since(&k0);
        let (a1, c1) = self.cpu();
        let (rss, hwm) = rss_bytes(self.agent.pid());
        let out = |n: &NetworkEvent| n.remote_port == port && n.local_port != port;
        // The server ends: inbound to the listener's port from one of the
        // client's ports (an inbound summary names the local port and no
        // remote port: it counts one client IP's connections to it).
        let ports: HashSet<u32> = st.ports.iter().map(|&p| u32::from(p)).collect();
        let inb = |n: &NetworkEvent| {
            n.direction == "inbound"
                && n.local_port == port
                && (n.phase == "summary" || ports.contains(&n.remote_port))
        };
        let made = st.made;
        let recs = self
            .settle(from_ms, |r| {
                let gaps = r.gap_total();
                r.tally(out).connections() + gaps >= made
                    && r.tally(inb).connections() + gaps >= made
            })
            .await?;
        let (a2, _) = self.cpu();
        drop(server);
        // How the listener's owner was found (inbound inference uses it).
        let listener = recs
            .network
            .iter()
            .find(|n| n.phase == "listen_open" && n.local_port == port)
            .map_or_else(
                || "no listen_open record".to_owned(),
                |n| {
                    format!(
                        "attribution {:?}, pid {}",
                        n.attribution,
                        n.process.as_ref().map_or(0, |p| p.pid)
                    )
                },
            );
        Ok(Phase {
            name: format!("{rate} connections/s"),
            wall,
            agent_cpu: a1 - a0,
            agent_cpu_total: a2 - a0,
            collector_cpu: c1 - c0,
            rss,
            hwm,
            kernel,
            made: st.made,
            out: recs.tally(out),
            inb: recs.tally(inb),
            gaps: recs.gap_counts(),
            note: format!(
                "generator (pid {}): {} made at {:.0}/s, {} failed; lifetimes p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; its listener's listen_open: {listener}",
                std::process::id(),
                st.made,
                st.rate(),
                st.failed,
                st.lifetime_ms(0.5),
                st.lifetime_ms(0.99),
                st.lifetime_ms(1.0)
            ),
        })
    }

    async fn transfer(&self, gbit: f64, secs: u64) -> anyhow::Result<Phase> {
        let from_ms = kiroku_common::now_ms() - 1000;
        let k0 = TcpCounters::read()?;
        let (a0, c0) = self.cpu();
        let t0 = Instant::now();
        let st =
            tokio::task::spawn_blocking(move || paced_transfer(gbit * 1e9, secs as f64)).await??;
        let wall = t0.elapsed().as_secs_f64();
        let kernel = TcpCounters::read()?.since(&k0);
        let (a1, c1) = self.cpu();
        let (rss, hwm) = rss_bytes(self.agent.pid());
        let (lp, rp) = (st.local_port as u32, st.remote_port as u32);
        let out = |n: &NetworkEvent| n.local_port == lp && n.remote_port == rp;
        let inb = |n: &NetworkEvent| n.local_port == rp && n.remote_port == lp;
        // Until both ends' close records are in.
        let recs = self
            .settle(from_ms, |r| {
                r.tally(out).by_phase.contains_key("close")
                    && r.tally(inb).by_phase.contains_key("close")
            })
            .await?;
        let (a2, _) = self.cpu();
        let o = recs.tally(out);
        let recorded = o.bytes_out;
        Ok(Phase {
            name: format!("{gbit} Gbit/s transfer"),
            wall,
            agent_cpu: a1 - a0,
            agent_cpu_total: a2 - a0,
            collector_cpu: c1 - c0,
            rss,
            hwm,
            kernel,
            made: 1,
            out: o,
            inb: recs.tally(inb),
            gaps: recs.gap_counts(),
            note: format!(
                "sent {} at {:.2} Gbit/s ({} received); recorded bytes out {} ({:+.2}% of sent)",
                mb(st.sent),
                st.gbit_per_s(),
                mb(st.received),
                mb(recorded),
                (recorded as f64 - st.sent as f64) / st.sent.max(1) as f64 * 100.0
            ),
        })
    }
}

fn gaps_text(g: &BTreeMap<String, u64>) -> String {
    if g.is_empty() {
        return "none".into();
    }
    g.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn report(phases: &[Phase]) {
    println!();
    println!(
        "| phase | agent CPU (% of a core) | agent CPU incl. drain | agent RSS (peak) | collector CPU (% of a core) | connections made | kernel ActiveOpens / PassiveOpens | recorded outbound (flows + summarized) | recorded inbound | network gaps | records (out + in) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for p in phases {
        println!(
            "| {} | {:.1}% ({:.2} s / {:.0} s) | {:.2} s | {} ({}) | {:.1}% | {} | {} / {} | {} ({} + {}) | {} ({} + {}) | {} | {} + {} |",
            p.name,
            p.agent_cpu / p.wall * 100.0,
            p.agent_cpu,
            p.wall,
            p.agent_cpu_total,
            mb(p.rss),
            mb(p.hwm),
            p.collector_cpu / p.wall * 100.0,
            p.made,
            p.kernel.active_opens,
            p.kernel.passive_opens,
            p.out.connections(),
            p.out.flows,
            p.out.summarized,
            p.inb.connections(),
            p.inb.flows,
            p.inb.summarized,
            gaps_text(&p.gaps),
            p.out.records,
            p.inb.records,
        );
    }
    println!();
    for p in phases {
        if !p.note.is_empty() {
            println!("- {}: {}", p.name, p.note);
        }
        if p.out.records > 0 {
            println!(
                "  - outbound records by phase {:?}, attribution (connections) {:?}, counters {:?}",
                p.out.by_phase, p.out.by_attribution, p.out.by_counters
            );
        }
        if p.inb.records > 0 {
            println!(
                "  - inbound records by phase {:?}, attribution (connections) {:?}, counters {:?}",
                p.inb.by_phase, p.inb.by_attribution, p.inb.by_counters
            );
        }
    }
}

async fn run(a: &Args) -> anyhow::Result<()> {
    let env = Env::new()?;
    let collector = env.start_collector()?;
    let mut phases = Vec::new();
    if a.baseline {
        let agent = env.start_agent_with("netbase", free_port(), &Mode::CaptureOnly, "")?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let b = Bench {
            env: &env,
            agent: &agent,
            collector: &collector,
            agent_id: "netbase",
        };
        phases.push(b.idle(a.idle_secs, "idle, no [network] (baseline)").await?);
        drop(agent);
    }
    let agent_id = "netbench";
    let agent = env.start_agent_with(
        agent_id,
        free_port(),
        &Mode::CaptureOnly,
        &format!(
            "[network]\nenabled = true\nloopback = true\n{}\n",
            a.network
        ),
    )?;
    NetRecords::wait_running(&env, agent_id, Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let b = Bench {
        env: &env,
        agent: &agent,
        collector: &collector,
        agent_id,
    };
    phases.push(b.idle(a.idle_secs, "idle, [network] on").await?);
    for rate in a
        .rates
        .split(',')
        .filter_map(|r| r.trim().parse::<u64>().ok())
    {
        phases.push(b.connections(rate, a.secs, a.payload).await?);
        eprintln!("done: {rate} connections/s");
    }
    if a.gbit > 0.0 {
        phases.push(b.transfer(a.gbit, a.stream_secs).await?);
    }
    report(&phases);
    let limits: Vec<String> = agent
        .log_text()
        .lines()
        .filter(|l| l.contains("network") && (l.contains("WARN") || l.contains("cannot")))
        .map(str::to_owned)
        .take(10)
        .collect();
    if !limits.is_empty() {
        println!("\nagent log, network warnings:\n{}", limits.join("\n"));
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    if !a.host_netns && std::env::var_os(IN_NETNS).is_none() {
        let status = reexec_in_netns()?;
        std::process::exit(status.code().unwrap_or(1));
    }
    println!("machine: {}", machine());
    println!("commit: {}", commit());
    println!(
        "network namespace: {}",
        if a.host_netns {
            "the host's"
        } else {
            "a new one (unshare --net)"
        }
    );
    println!(
        "started: {}",
        time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    );
    run(&a).await
}
