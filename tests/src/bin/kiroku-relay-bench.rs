//! Relay overhead benchmark (issue: the relay as an MTA hop). The same
//! load goes directly to a real Postfix and through a kiroku-agent relaying
//! to that Postfix, in alternating rounds in one run, so the ratio is
//! measured side by side on a noisy machine. Then one 50 MB message goes
//! through the relay while the agent's memory is sampled.
//!
//! Needs root (Postfix). Run: `scripts/bench-relay.sh` (builds release).

use std::time::Duration;

use clap::Parser;
use kiroku_tests::mta::Postfix;
use kiroku_tests::{Env, Mode, free_port, load};

#[derive(Parser)]
struct Args {
    /// Alternating direct/relay rounds per case; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Mails per round for 10 KB messages.
    #[arg(long, default_value_t = 2000)]
    small: usize,
    /// Mails per round for 1 MB messages.
    #[arg(long, default_value_t = 64)]
    big: usize,
    /// Size of the single large message, in MB (0: skip it).
    #[arg(long, default_value_t = 50)]
    huge_mb: usize,
    /// How the load sends each envelope (both ways of sending go to both
    /// targets alike).
    #[arg(long, value_enum, default_value_t = load::Submit::LockStep)]
    submit: load::Submit,
    /// Only these message sizes in bytes (default: 10240 and 1000000).
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<usize>,
    /// Only these numbers of concurrent clients (default: 1 and 32).
    #[arg(long, value_delimiter = ',')]
    clients: Vec<usize>,
    /// Keep the run's directory (agent log, buffer) and print its path.
    #[arg(long)]
    keep: bool,
}

fn kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    if let Some(why) = Postfix::unavailable() {
        anyhow::bail!("cannot run: {why}");
    }
    let env = Env::new()?;
    let pf = Postfix::start_with_limit(&env, 200_000_000)?;
    // No collector: the agent buffers what it records, as on a laptop
    // away from the office. This measures the relay's own cost (capture +
    // durable buffer), not shipping or indexing (see scripts/bench.sh),
    // which would compete for the same two cores as Postfix.
    let smtp = free_port();
    // Plain SMTP on both hops so the comparison measures the relay, not TLS.
    let agent = env.start_agent_in_smtp(
        "bench",
        smtp,
        &Mode::Relay(pf.port),
        "upstream_tls = \"off\"\nmax_message_bytes = 104857600\n",
    )?;
    let direct = format!("127.0.0.1:{}", pf.port);
    let relay = format!("127.0.0.1:{smtp}");
    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );

    // Memory first, on a fresh agent, so the peak is this message's.
    if a.huge_mb > 0 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let pid = agent.pid();
        let idle = kb(pid, "VmRSS");
        let huge = load::run(&relay, 1, 1, a.huge_mb * 1_000_000, a.submit).await?;
        let hwm = kb(pid, "VmHWM");
        println!(
            "\n{} MB message through the relay: {:.2} s; agent RSS idle {} kB, peak (VmHWM) {} kB, growth {} kB",
            a.huge_mb,
            huge.seconds,
            idle,
            hwm,
            hwm.saturating_sub(idle)
        );
    }
    println!("\nenvelope: {:?}", a.submit);

    println!(
        "\n| size | clients | direct mails/s | relay mails/s | relay/direct | direct p50 ms | relay p50 ms | added p50 ms | direct p99 ms | relay p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let wanted = |list: &[usize], x: usize| list.is_empty() || list.contains(&x);
    for (size, label, mails) in [(10_240, "10 KB", a.small), (1_000_000, "1 MB", a.big)] {
        if !wanted(&a.sizes, size) {
            continue;
        }
        for clients in [1, 32] {
            if !wanted(&a.clients, clients) {
                continue;
            }
            let (mut d, mut r) = (Vec::new(), Vec::new());
            for _ in 0..a.rounds {
                d.push(load::run(&direct, mails, clients, size, a.submit).await?);
                r.push(load::run(&relay, mails, clients, size, a.submit).await?);
            }
            let m = |v: &[load::Stats], f: &dyn Fn(&load::Stats) -> f64| {
                median(v.iter().map(f).collect())
            };
            let (dt, rt) = (m(&d, &|s| s.per_second()), m(&r, &|s| s.per_second()));
            let (d50, r50) = (m(&d, &|s| s.ms(0.5)), m(&r, &|s| s.ms(0.5)));
            let (d99, r99) = (m(&d, &|s| s.ms(0.99)), m(&r, &|s| s.ms(0.99)));
            println!(
                "| {label} | {clients} | {dt:.0} | {rt:.0} | {:.2} | {d50:.2} | {r50:.2} | {:.2} | {d99:.2} | {r99:.2} |",
                rt / dt,
                r50 - d50
            );
        }
    }
    drop(agent);
    drop(pf);
    if a.keep {
        println!("\nkept: {}", env.dir.keep().display());
    }
    Ok(())
}
