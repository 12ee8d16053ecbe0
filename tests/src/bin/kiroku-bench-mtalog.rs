//! MTA log benchmark (issue 20): Postfix and Exim lines parsed per second
//! by the parsers alone, and the agent's CPU per 1,000 lines/s of Postfix
//! log: a real agent (and collector) following a file written at fixed
//! rates, its utime+stime from /proc/<pid>/stat over the run; every line
//! written must be recorded (checked by count at the collector).
//!
//! Run: `cargo build --release -p kiroku-tests --bins -p kiroku-agent -p kiroku-collector`, then
//! `flock /work/bench.lock target/release/kiroku-bench-mtalog`.

use std::io::Write;
use std::time::{Duration, Instant};

use clap::Parser;
use kiroku_agent::capture::mtalog::{exim, header::Clock, postfix};
use kiroku_proto::SearchRequest;
use kiroku_tests::{Env, Mode, free_port};

#[derive(Parser)]
struct Args {
    /// Lines parsed per format for the parser figure.
    #[arg(long, default_value_t = 1_000_000)]
    lines: usize,
    /// Rates (lines/s) the agent follows, comma-separated.
    #[arg(long, default_value = "1000,5000")]
    rates: String,
    /// Seconds per rate.
    #[arg(long, default_value_t = 20)]
    secs: u64,
    /// Parts: parse, follow.
    #[arg(long, default_value = "parse,follow")]
    parts: String,
}

/// A realistic mix of Postfix lines for message `i` (one mail's life).
fn postfix_lines(i: usize) -> [String; 8] {
    let q = format!("4F{i:08X}");
    [
        format!(
            "Dec  6 07:14:50 mx postfix/smtpd[1201]: connect from client{i}.example.com[192.0.2.{}]",
            i % 250
        ),
        format!(
            "Dec  6 07:14:50 mx postfix/smtpd[1201]: {q}: client=client{i}.example.com[192.0.2.{}], sasl_method=PLAIN, sasl_username=user{i}@example.com",
            i % 250
        ),
        format!(
            "Dec  6 07:14:50 mx postfix/cleanup[1300]: {q}: message-id=<{i}.1234567890@client{i}.example.com>"
        ),
        format!(
            "Dec  6 07:14:50 mx postfix/qmgr[1100]: {q}: from=<user{i}@example.com>, size=12345, nrcpt=1 (queue active)"
        ),
        format!(
            "Dec  6 07:14:50 mx postfix/smtpd[1201]: disconnect from client{i}.example.com[192.0.2.{}] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5",
            i % 250
        ),
        "Dec  6 07:14:51 mx postfix/smtp[1500]: Trusted TLS connection established to mx.example.org[198.51.100.1]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)".to_owned(),
        format!(
            "Dec  6 07:14:53 mx postfix/smtp[1500]: {q}: to=<rcpt{i}@example.org>, relay=mx.example.org[198.51.100.1]:25, delay=3.2, delays=0.1/0.02/0.5/2.6, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 9F8E7D{i:X})"
        ),
        format!("Dec  6 07:14:53 mx postfix/qmgr[1100]: {q}: removed"),
    ]
}

fn exim_lines(i: usize) -> [String; 3] {
    let id = format!("1tJ{:03}-000Abc-Q1", i % 1000);
    [
        format!(
            "2026-12-06 07:14:50 {id} <= user{i}@example.com H=client{i}.example.com (helo{i}) [192.0.2.{}] P=esmtpsa X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=no A=plain:user{i} S=12345 id={i}.123@example.com",
            i % 250
        ),
        format!(
            "2026-12-06 07:14:53 {id} => rcpt{i}@example.org R=dnslookup T=remote_smtp H=mx.example.org [198.51.100.1] X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=yes C=\"250 2.0.0 Ok: queued as 9F8E7D\" QT=3s"
        ),
        format!("2026-12-06 07:14:53 {id} Completed"),
    ]
}

fn parse_rate(
    name: &str,
    lines: &[String],
    parse: impl Fn(&str, &Clock) -> kiroku_proto::MtaLogEvent,
) {
    let clock = Clock::system();
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    let t0 = Instant::now();
    let mut parsed = 0usize;
    for l in lines {
        if parse(l, &clock).parsed {
            parsed += 1;
        }
    }
    let s = t0.elapsed().as_secs_f64();
    println!(
        "{name}: {} lines in {s:.2} s = {:.0} lines/s ({:.1} MB/s), {parsed} parsed",
        lines.len(),
        lines.len() as f64 / s,
        bytes as f64 / s / 1e6
    );
}

/// utime + stime of a process, seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

async fn count(env: &Env) -> anyhow::Result<u64> {
    Ok(env
        .investigator()
        .await?
        .search(SearchRequest {
            kind: "mta_log".into(),
            page_size: 1,
            ..Default::default()
        })
        .await?
        .into_inner()
        .total_hits)
}

async fn follow(a: &Args) -> anyhow::Result<()> {
    let env = Env::new()?;
    let _collector = env.start_collector()?;
    let log = env.path().join("maillog");
    std::fs::write(&log, "")?;
    let agent = env.start_agent_with(
        "mtalog-bench",
        free_port(),
        &Mode::CaptureOnly,
        &format!("[[mta_log]]\npath = {log:?}\nformat = \"postfix\"\n"),
    )?;
    agent
        .wait_log("following the MTA log", Duration::from_secs(60))
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = agent.pid();
    let mut written = 0u64;
    let mut n = 0usize;
    for rate in a
        .rates
        .split(',')
        .filter_map(|r| r.trim().parse::<u64>().ok())
    {
        let mut f = std::fs::OpenOptions::new().append(true).open(&log)?;
        let cpu0 = cpu_seconds(pid);
        let t0 = Instant::now();
        let total = rate * a.secs;
        // Written in 10 ms slices at the rate.
        let per_slice = (rate / 100).max(1);
        let mut done = 0u64;
        while done < total {
            let mut chunk = String::new();
            for _ in 0..per_slice.min(total - done) {
                chunk.push_str(&postfix_lines(n / 8)[n % 8]);
                chunk.push('\n');
                n += 1;
                done += 1;
            }
            f.write_all(chunk.as_bytes())?;
            let due = t0 + Duration::from_secs_f64(done as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let write_wall = t0.elapsed().as_secs_f64();
        let write_cpu = cpu_seconds(pid) - cpu0;
        written += total;
        // Until the collector has every line (the agent's work is done).
        let deadline = Instant::now() + Duration::from_secs(120);
        while count(&env).await? < written {
            anyhow::ensure!(Instant::now() < deadline, "lines missing at the collector");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let wall = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds(pid) - cpu0;
        println!(
            "follow {rate} lines/s for {} s: while writing, agent CPU {write_cpu:.2} s over {write_wall:.1} s = {:.1}% of a core ({:.1}% per 1,000 lines/s); until the collector had all {total} lines: {cpu:.2} s CPU over {wall:.1} s = {:.1} ms CPU per 1,000 lines",
            a.secs,
            write_cpu / write_wall * 100.0,
            write_cpu / write_wall * 100.0 / (rate as f64 / 1000.0),
            cpu * 1000.0 / (total as f64 / 1000.0)
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    println!(
        "machine: {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    if a.parts.contains("parse") {
        let pf: Vec<String> = (0..a.lines / 8 + 1)
            .flat_map(postfix_lines)
            .take(a.lines)
            .collect();
        parse_rate("postfix parser", &pf, postfix::parse);
        let ex: Vec<String> = (0..a.lines / 3 + 1)
            .flat_map(exim_lines)
            .take(a.lines)
            .collect();
        parse_rate("exim parser", &ex, exim::parse);
    }
    if a.parts.contains("follow") {
        follow(&a).await?;
    }
    Ok(())
}
