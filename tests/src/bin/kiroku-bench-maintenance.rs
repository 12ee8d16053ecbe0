//! Maintenance benchmark (issue 19): a real `kiroku-collector` on a
//! bulk-loaded data directory whose events have all expired.
//!
//! 1. Loads the data directory with the collector's `bulk_load` example
//!    (`--mails` + `--files` events, 90 days ending `--age-days` ago, a raw
//!    message blob per mail), unless it is there; sizes per part.
//! 2. Starts the collector (a build with the `test-hooks` feature: the
//!    retention clock is moved through `KIROKU_TEST_CLOCK_FILE`) with a
//!    policy keeping every kind 30 days, grace 1 h, and a maintenance window
//!    far from now (runs are started by hand). The clock is moved 8 days on,
//!    past the policy's shortening delay.
//! 3. Ingest and query latency with no run: batches of 100 file events
//!    shipped over a Ship stream (time to the Ack) alternating with Search
//!    by address + time range, for `--probe-secs`.
//! 4. Run 1 (`Maintenance start`): verifies the chain and marks every
//!    expired event; events verified per second from its report.
//! 5. The clock moved 2 h on (past the grace). Run 2: verifies again and
//!    purges every marked event; ingest and query latency measured while
//!    it runs; events purged per second; bytes freed (the report's figure
//!    and the data directory's parts measured before and after).
//!
//! Prints a Markdown table (and appends it to `--out`). The data
//! directory is deleted at the end unless `--keep`.
//!
//! Run: `scripts/bench-maintenance.sh [--mails N --files M]`.

use kiroku_tests::bench::{Lat, mb, ms};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use kiroku_proto::admin_client::AdminClient;
use kiroku_proto::ingest_client::IngestClient;
use kiroku_proto::query_client::QueryClient;
use kiroku_proto::{
    Batch, Event, FileEvent, Hello, MaintenanceReport, MaintenanceRequest, SearchRequest,
    ShipRequest, event::Kind, ship_request, ship_response,
};
use kiroku_tests::{Env, Proc, example_bin};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tonic::transport::Channel;

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;

#[derive(Parser)]
struct Args {
    /// Collector data directory (created and loaded if needed).
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value_t = 200_000)]
    mails: u64,
    #[arg(long, default_value_t = 800_000)]
    files: u64,
    /// The newest loaded event is this many days old.
    #[arg(long, default_value_t = 60)]
    age_days: i64,
    /// The collector to run: a build with the `test-hooks` feature.
    #[arg(long)]
    collector: PathBuf,
    /// Seconds of the no-run latency probe.
    #[arg(long, default_value_t = 20)]
    probe_secs: u64,
    /// Append the results table here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Keep the data directory.
    #[arg(long)]
    keep: bool,
    /// Stop a run (`Maintenance stop`) after this many seconds; the
    /// figures are then of the part it did (the report says so).
    #[arg(long, default_value_t = 3600)]
    max_run_secs: u64,
}

/// File bytes under `p`.
fn du(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => du(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

const PARTS: [&str; 4] = ["journal", "index", "blobs", "meta"];

fn parts(data: &Path) -> Vec<u64> {
    PARTS.iter().map(|p| du(&data.join(p))).collect()
}

/// A Ship stream as agent `bench`: batches in, acks out.
struct Shipper {
    tx: mpsc::Sender<ShipRequest>,
    rx: tonic::Streaming<kiroku_proto::ShipResponse>,
    seq: u64,
}

impl Shipper {
    async fn open(env: &Env) -> anyhow::Result<Shipper> {
        let pki = env.pki();
        let ch = env
            .channel(
                Some((&pki.join("agent-bench.pem"), &pki.join("agent-bench.key"))),
                None,
            )
            .await?;
        let (tx, rx) = mpsc::channel(4);
        tx.send(ShipRequest {
            msg: Some(ship_request::Msg::Hello(Hello {
                stream_id: "bench".into(),
                ..Default::default()
            })),
        })
        .await?;
        let rx = IngestClient::new(ch)
            .ship(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(Shipper { tx, rx, seq: 0 })
    }

    /// Ships 100 file events; the time to their Ack.
    async fn batch(&mut self) -> anyhow::Result<f64> {
        let now = kiroku_common::now_ms();
        let events: Vec<Event> = (0..100)
            .map(|_| {
                self.seq += 1;
                Event {
                    stream_id: "bench".into(),
                    seq: self.seq,
                    observed_at_ms: now,
                    user: "probe".into(),
                    kind: Some(Kind::File(FileEvent {
                        operation: "modify".into(),
                        path: format!("/home/probe/file-{}.txt", self.seq),
                        size: 4096,
                        volume: "/".into(),
                        ..Default::default()
                    })),
                    ..Default::default()
                }
            })
            .collect();
        let t = Instant::now();
        self.tx
            .send(ShipRequest {
                msg: Some(ship_request::Msg::Batch(Batch {
                    events,
                    ..Default::default()
                })),
            })
            .await?;
        while let Some(m) = self.rx.message().await? {
            if let Some(ship_response::Msg::Ack(a)) = m.msg {
                anyhow::ensure!(a.stored == 100, "the probe batch stored {}", a.stored);
                return Ok(ms(t.elapsed()));
            }
        }
        bail!("the Ship stream ended without an Ack")
    }
}

/// Ingest and Search latency, alternating, for `secs` or, with `admin`,
/// until no run is in progress.
async fn probe(
    ship: &mut Shipper,
    q: &mut QueryClient<Channel>,
    query: &mut impl FnMut() -> SearchRequest,
    secs: u64,
    mut admin: Option<&mut AdminClient<Channel>>,
) -> anyhow::Result<(Lat, Lat)> {
    let (mut ingest, mut search) = (Lat(Vec::new()), Lat(Vec::new()));
    let t = Instant::now();
    for i in 0u64.. {
        let stop = match admin.as_deref_mut() {
            Some(a) if i % 10 == 0 && t.elapsed() >= Duration::from_secs(secs) => {
                stop_run(a).await?;
                wait_finished(a).await?;
                true
            }
            Some(a) => i % 10 == 0 && finished(a).await?.is_some(),
            None => t.elapsed() >= Duration::from_secs(secs),
        };
        if stop {
            break;
        }
        ingest.0.push(ship.batch().await?);
        let r = query();
        let s = Instant::now();
        q.search(r).await.context("Search")?;
        search.0.push(ms(s.elapsed()));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((ingest, search))
}

fn set_clock(file: &Path, offset_ms: i64) -> anyhow::Result<()> {
    std::fs::write(file, offset_ms.to_string())
        .with_context(|| format!("writing {}", file.display()))?;
    // The collector re-reads it at most every 200 ms.
    std::thread::sleep(Duration::from_millis(600));
    Ok(())
}

/// Starts a run by hand and returns its run id.
async fn start(admin: &mut AdminClient<Channel>) -> anyhow::Result<String> {
    let s = admin
        .maintenance(MaintenanceRequest {
            action: "start".into(),
        })
        .await
        .context("Maintenance start")?
        .into_inner();
    let id = s
        .current
        .as_ref()
        .map(|r| r.run_id.clone())
        .unwrap_or_default();
    eprintln!("maintenance: {} (run {id})", s.message);
    Ok(id)
}

async fn stop_run(admin: &mut AdminClient<Channel>) -> anyhow::Result<()> {
    let s = admin
        .maintenance(MaintenanceRequest {
            action: "stop".into(),
        })
        .await
        .context("Maintenance stop")?
        .into_inner();
    eprintln!("maintenance: {}", s.message);
    Ok(())
}

/// The last report once no run is in progress.
async fn finished(admin: &mut AdminClient<Channel>) -> anyhow::Result<Option<MaintenanceReport>> {
    let s = admin
        .maintenance(MaintenanceRequest {
            action: "status".into(),
        })
        .await
        .context("Maintenance status")?
        .into_inner();
    Ok((s.state == "idle").then(|| s.last.unwrap_or_default()))
}

async fn wait_finished(admin: &mut AdminClient<Channel>) -> anyhow::Result<MaintenanceReport> {
    loop {
        if let Some(r) = finished(admin).await? {
            return Ok(r);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn rate(n: u64, r: &MaintenanceReport) -> String {
    let secs = (r.ended_ms - r.started_ms).max(1) as f64 / 1e3;
    format!("{n} in {secs:.1} s = {:.0}/s", n as f64 / secs)
}

fn report_line(r: &MaintenanceReport) -> String {
    format!(
        "verified {}, marked {}, purged {}, held back {}, bytes freed {}, complete {}, severity {}, protect {}, problems {:?}",
        r.verified,
        r.marked,
        r.purged,
        r.held_back,
        mb(r.bytes_freed),
        r.complete,
        r.severity,
        r.protect,
        r.problems.iter().take(3).collect::<Vec<_>>()
    )
}

fn load(a: &Args) -> anyhow::Result<()> {
    let end_ms = (kiroku_common::now_ms() - a.age_days * DAY_MS) / DAY_MS * DAY_MS;
    let t = Instant::now();
    let st = Command::new(example_bin("bulk_load"))
        .arg("--dir")
        .arg(&a.data)
        .args(["--mails", &a.mails.to_string()])
        .args(["--files", &a.files.to_string()])
        .args(["--days", "90", "--big-raw-mb", "1"])
        .args(["--end-ms", &end_ms.to_string()])
        .status()
        .context("running bulk_load")?;
    if !st.success() {
        bail!("bulk_load failed ({st})");
    }
    eprintln!("load step took {:.1} s", t.elapsed().as_secs_f64());
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let mut report = Vec::<String>::new();
    let mut row = |k: &str, v: String| {
        println!("| {k} | {v} |");
        report.push(format!("| {k} | {v} |"));
    };
    println!("| figure | result |\n|---|---|");
    load(&a)?;
    let data = std::fs::canonicalize(&a.data)?;
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("bench-manifest.json"))?)?;
    let docs = m["indexed_docs"].as_u64().unwrap_or(0);
    row(
        "data",
        format!(
            "{} mails + {} file events ({docs} documents), 90 days ending {} days ago; policy: every kind 30 days, grace 1 h",
            m["mails"], m["files"], a.age_days
        ),
    );
    let before = parts(&data);
    row(
        "data dir before",
        PARTS
            .iter()
            .zip(&before)
            .map(|(p, b)| format!("{p} {}", mb(*b)))
            .collect::<Vec<_>>()
            .join(", "),
    );

    let env = Env::new()?;
    env.issue("agent", "bench", &[])?;
    let clock = env.path().join("clock");
    set_clock(&clock, 0)?;
    std::fs::write(
        env.path().join("retention.toml"),
        "grace = \"1h\"\nshorten_delay = \"1h\"\n[kind]\nemail = \"30d\"\nfile = \"30d\"\nhost_change = \"30d\"\ngap = \"30d\"\nintegrity = \"30d\"\n",
    )?;
    // A window six hours from now (UTC): runs here are started by hand.
    let start_h = (kiroku_common::now_ms() / HOUR_MS + 6) % 24;
    let cfg = env.path().join("collector.toml");
    let pki = env.pki();
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:{}\"\ndata_dir = {:?}\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n[retention]\npolicy = \"retention.toml\"\n[maintenance]\nstart = \"{start_h:02}:00\"\nend = \"{start_h:02}:30\"\ntime_zone = \"UTC\"\n",
            env.grpc,
            data,
            pki.join("ca.pem"),
            pki.join("collector-localhost.pem"),
            pki.join("collector-localhost.key"),
        ),
    )?;
    let t = Instant::now();
    let mut collector = Proc::spawn(
        "collector",
        Command::new(&a.collector)
            .arg("--config")
            .arg(&cfg)
            .env("KIROKU_TEST_CLOCK_FILE", &clock),
        &env.path().join("collector.log"),
    )?;
    collector.wait_port(env.grpc)?;
    row(
        "collector start to listening",
        format!("{:.0} ms", ms(t.elapsed())),
    );
    // Past the shortening delay of the defaults (7 days).
    set_clock(&clock, 8 * DAY_MS)?;

    let mut admin = AdminClient::new(env.admin().await?);
    let mut q = env.investigator().await?;
    let mut ship = Shipper::open(&env).await?;
    let addresses: Vec<String> = m["addresses"]
        .as_array()
        .map(|v| {
            v.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let (from, to) = (
        m["from_ms"].as_i64().unwrap_or(0),
        m["to_ms"].as_i64().unwrap_or(0),
    );
    let mut rng = StdRng::seed_from_u64(19);
    let mut query = move || {
        let start = rng.random_range(from..(to - 7 * DAY_MS).max(from + 1));
        SearchRequest {
            address: addresses.choose(&mut rng).cloned().unwrap_or_default(),
            from_ms: start,
            to_ms: start + 7 * DAY_MS,
            page_size: 50,
            ..Default::default()
        }
    };
    let secs = a.probe_secs;
    let (ingest0, search0) = probe(&mut ship, &mut q, &mut query, secs, None).await?;
    row("ingest, no run (100 events per Ack)", ingest0.summary());
    row("search, no run (address + 7 days)", search0.summary());

    // Run 1: verify and mark.
    start(&mut admin).await?;
    let t1 = Instant::now();
    let r1 = loop {
        if let Some(r) = finished(&mut admin).await? {
            break r;
        }
        if t1.elapsed() >= Duration::from_secs(a.max_run_secs) {
            stop_run(&mut admin).await?;
            break wait_finished(&mut admin).await?;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    row("run 1 (verify + mark)", report_line(&r1));
    row("run 1: events verified per second", rate(r1.verified, &r1));
    row("run 1: events marked per second", rate(r1.marked, &r1));

    // Past the grace period: run 2 purges, with the probes running.
    set_clock(&clock, 8 * DAY_MS + 2 * HOUR_MS)?;
    start(&mut admin).await?;
    let (ingest1, search1) = probe(
        &mut ship,
        &mut q,
        &mut query,
        a.max_run_secs,
        Some(&mut admin),
    )
    .await?;
    let r2 = wait_finished(&mut admin).await?;
    row("run 2 (verify + purge)", report_line(&r2));
    row("run 2: events purged per second", rate(r2.purged, &r2));
    row("run 2: events verified per second", rate(r2.verified, &r2));
    row(
        "ingest during run 2 (100 events per Ack)",
        ingest1.summary(),
    );
    row("search during run 2 (address + 7 days)", search1.summary());
    collector.terminate();
    let after = parts(&data);
    row(
        "data dir after",
        PARTS
            .iter()
            .zip(before.iter().zip(&after))
            .map(|(p, (b, a))| format!("{p} {} (freed {})", mb(*a), mb(b.saturating_sub(*a))))
            .collect::<Vec<_>>()
            .join(", "),
    );
    let (b, af): (u64, u64) = (before.iter().sum(), after.iter().sum());
    row(
        "space reclaimed",
        format!(
            "{} of {} ({:.0}%); the report says {}",
            mb(b.saturating_sub(af)),
            mb(b),
            b.saturating_sub(af) as f64 * 100.0 / b.max(1) as f64,
            mb(r2.bytes_freed)
        ),
    );
    if let Some(out) = &a.out {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)?;
        writeln!(f, "| figure | result |\n|---|---|\n{}", report.join("\n"))?;
    }
    if !a.keep {
        std::fs::remove_dir_all(&data).with_context(|| format!("removing {}", data.display()))?;
    }
    Ok(())
}
