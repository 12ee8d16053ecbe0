//! The reliability table (RELIABILITY.md): runs the fault-injection
//! scenarios of `kiroku_tests::reliability` against the real binaries and
//! prints one Markdown row per run. Quick mode runs each scenario once (as
//! the test suite does); `--soak-minutes N` repeats them until N minutes
//! have passed (the overload scenario, `--agents N` concurrent agent
//! streams, and the hostile-port scenario run in each round too; `--only
//! NAME` picks scenarios). Exit
//! status 1 if any run lost or duplicated anything or failed a check.
//!
//! Run: `scripts/reliability.sh [--soak-minutes N]` (builds first).

use std::time::{Duration, Instant};

use clap::Parser;
use kiroku_tests::Env;
use kiroku_tests::reliability::{self, Row};

#[derive(Parser)]
struct Args {
    /// Repeat the scenarios until this many minutes have passed (0: once).
    #[arg(long, default_value_t = 0)]
    soak_minutes: u64,
    /// SIGKILLs per crash scenario run.
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// Fault rounds per network scenario run.
    #[arg(long, default_value_t = 3)]
    net_rounds: usize,
    /// Concurrent agent streams in the overload scenario (0: skip it).
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Batches each of those streams ships.
    #[arg(long, default_value_t = 5)]
    agent_batches: usize,
    /// Events per batch in the overload scenario.
    #[arg(long, default_value_t = 10)]
    agent_batch_events: usize,
    /// Hostile connections in the hostile-port scenario (0: skip it).
    #[arg(long, default_value_t = 200)]
    hostile_connections: usize,
    /// Run only these scenarios (repeatable): agent-kill, collector-kill,
    /// network, overload, hostile-port.
    #[arg(long)]
    only: Vec<String>,
}

const SCENARIOS: [&str; 5] = [
    "agent-kill",
    "collector-kill",
    "network",
    "overload",
    "hostile-port",
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let started = Instant::now();
    let until = started + Duration::from_secs(a.soak_minutes * 60);
    println!(
        "Machine: {} cores, Linux {}; started {}; mode: {}\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        kiroku_common::now_ms() / 1000,
        if a.soak_minutes == 0 {
            "quick".to_owned()
        } else {
            format!("soak {} min", a.soak_minutes)
        }
    );
    println!("{}", Row::markdown_header());
    let mut failed = false;
    let mut runs = 0;
    loop {
        for scenario in SCENARIOS {
            if (!a.only.is_empty() && !a.only.iter().any(|o| o == scenario))
                || (scenario == "overload" && a.agents == 0)
                || (scenario == "hostile-port" && a.hostile_connections == 0)
            {
                continue;
            }
            // A fresh installation per run: every run starts from empty
            // stores, and a failure cannot leak into the next.
            let env = Env::new()?;
            let rows = match scenario {
                "agent-kill" => reliability::agent_crashes(&env, a.kills).await,
                "collector-kill" => reliability::collector_crashes(&env, a.kills).await,
                "network" => reliability::network_faults(&env, a.net_rounds)
                    .await
                    .map(|r| vec![r]),
                "hostile-port" => reliability::hostile_port::run(&env, a.hostile_connections)
                    .await
                    .map(|r| vec![r]),
                _ => {
                    let load = reliability::many_agents::Load {
                        agents: a.agents,
                        batches: a.agent_batches,
                        per_batch: a.agent_batch_events,
                    };
                    reliability::many_agents::run(&env, load)
                        .await
                        .map(|r| vec![r])
                }
            };
            let rows = match rows {
                Ok(r) => r,
                Err(e) => {
                    failed = true;
                    eprintln!("scenario {scenario} could not run: {e:#}");
                    continue;
                }
            };
            for row in rows {
                failed |= !row.ok();
                println!("{}", row.markdown());
                eprintln!(
                    "[{:.0} s] {} done",
                    started.elapsed().as_secs_f64(),
                    row.scenario
                );
            }
        }
        runs += 1;
        if Instant::now() >= until {
            break;
        }
    }
    println!(
        "\n{runs} round(s) of the scenarios in {:.1} min.",
        started.elapsed().as_secs_f64() / 60.0
    );
    if failed {
        std::process::exit(1);
    }
    Ok(())
}
