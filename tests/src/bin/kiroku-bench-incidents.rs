//! Incident coalescing benchmark (issue 20): an upstream outage of
//! `--secs` (default 600 s) with `--clients` (32) clients retrying as fast
//! as they are refused (after `--retry-ms`), through a real
//! `kiroku-agent` relaying to a port nothing listens on.
//!
//! Measures the attempts made, the records the agent wrote for them (every
//! event of its stream as the collector stored it: the incident's `open`,
//! `still_open` every `--still-open-secs`, `closed`), and the agent's
//! resident memory (/proc VmRSS: before, peak while sampled every second,
//! after). The outage ends with the clients stopping; the incident closes
//! after `--quiet-secs` without a repeat.
//!
//! Prints a Markdown table and appends it to `--out`.
//!
//! Run (release build, one benchmark at a time on the machine):
//! `cargo build --release -p kiroku-tests --bin kiroku-bench-incidents -p
//! kiroku-agent -p kiroku-collector && flock /work/bench.lock
//! target/release/kiroku-bench-incidents --out BENCHMARKS-incidents.md`

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use kiroku_proto::event::Kind;
use kiroku_proto::{IncidentEvent, SearchRequest};
use kiroku_tests::{Env, Mode, free_port};

#[derive(Parser)]
struct Args {
    /// Length of the outage in seconds.
    #[arg(long, default_value_t = 600)]
    secs: u64,
    /// Clients retrying at once.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Pause of each client between attempts, in milliseconds.
    #[arg(long, default_value_t = 0)]
    retry_ms: u64,
    /// `smtp.incident_still_open_secs` (the default is 900).
    #[arg(long, default_value_t = 900)]
    still_open_secs: u64,
    /// `smtp.incident_quiet_secs` (the default is 120; short here so the
    /// run ends soon after the outage).
    #[arg(long, default_value_t = 5)]
    quiet_secs: u64,
    /// Append the results table here.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// One attempt: connect, read the greeting, leave. The reply code, or 0
/// when the connection failed.
fn attempt(port: u16) -> u16 {
    let Ok(s) = TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut line = String::new();
    let mut r = BufReader::new(&s);
    if r.read_line(&mut line).is_err() {
        return 0;
    }
    let _ = (&s).write_all(b"QUIT\r\n");
    line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let env = Env::new()?;
    let _collector = env.start_collector()?;
    let smtp = free_port();
    let dead = free_port();
    let agent = env.start_agent_in_smtp(
        "bench-incidents",
        smtp,
        &Mode::Relay(dead),
        &format!(
            "incident_quiet_secs = {}\nincident_still_open_secs = {}\n",
            a.quiet_secs, a.still_open_secs
        ),
    )?;
    let pid = agent.pid();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_before = rss_kb(pid);

    let stop = Arc::new(AtomicBool::new(false));
    let tries = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..a.clients)
        .map(|_| {
            let (stop, tries, refused) = (stop.clone(), tries.clone(), refused.clone());
            let pause = Duration::from_millis(a.retry_ms);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let code = attempt(smtp);
                    tries.fetch_add(1, Ordering::Relaxed);
                    if code == 421 {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    std::thread::sleep(pause);
                }
            })
        })
        .collect();
    let mut peak = rss_before;
    while started.elapsed() < Duration::from_secs(a.secs) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak = peak.max(rss_kb(pid));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let outage = started.elapsed();
    let rss_after = rss_kb(pid);
    let attempts = tries.load(Ordering::Relaxed);

    // The incident closes `quiet_secs` after the last attempt; every record
    // of the agent's stream is then at the collector.
    let closed = env
        .wait_for(
            SearchRequest {
                kind: "incident".into(),
                outcome: "closed".into(),
                ..Default::default()
            },
            1,
            Duration::from_secs(a.quiet_secs + 60),
        )
        .await?;
    let all = env
        .search_all(SearchRequest {
            agent_id: "bench-incidents".into(),
            ..Default::default()
        })
        .await?;
    let incidents: Vec<IncidentEvent> = all
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::Incident(i)) => Some(i.clone()),
            _ => None,
        })
        .collect();
    let state = |s: &str| incidents.iter().filter(|i| i.state == s).count();
    let counted = closed
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::Incident(i)) => Some(i.count),
            _ => None,
        })
        .sum::<u64>();
    let table = format!(
        "| outage | clients | attempts (421) | attempts/s | records written (open / still_open / closed / other) | count in closed | agent RSS before / peak / after |\n|---|---|---|---|---|---|---|\n| {:.0} s | {} | {} ({}) | {:.0} | {} ({} / {} / {} / {}) | {} | {:.1} / {:.1} / {:.1} MiB |\n",
        outage.as_secs_f64(),
        a.clients,
        attempts,
        refused.load(Ordering::Relaxed),
        attempts as f64 / outage.as_secs_f64(),
        all.len(),
        state("open"),
        state("still_open"),
        state("closed"),
        all.len() - incidents.len(),
        counted,
        rss_before as f64 / 1024.0,
        peak as f64 / 1024.0,
        rss_after as f64 / 1024.0,
    );
    println!("{table}");
    println!(
        "(incident_still_open_secs = {}, incident_quiet_secs = {}, retry pause {} ms)",
        a.still_open_secs, a.quiet_secs, a.retry_ms
    );
    if let Some(out) = &a.out {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)?;
        f.write_all(table.as_bytes())?;
    }
    Ok(())
}
