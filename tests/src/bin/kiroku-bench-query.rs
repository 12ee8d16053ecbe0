//! Query benchmark (issue 6, part 3): a real `kiroku-collector` on a
//! bulk-loaded data directory, queried over mTLS gRPC as an investigator.
//!
//! 1. Loads (or continues loading) the data directory with the collector's
//!    `bulk_load` example (the store's own code, large batches), unless
//!    `--no-load`; reports the load rate and the directory's size.
//! 2. Starts the collector on it and measures, after one cold query and a
//!    warm-up: Search by address + time range (p50/p99 over `--queries`
//!    different addresses and ranges), full-text Search over subject and
//!    body (common, mid-frequency and rare words), the 30-day ExfilReport
//!    (totals, newest files) and the same 30 days' ExfilFiles stream,
//!    Aggregate over 30 days (`kiroku stats`: by recipient domain top 20,
//!    by user top 20, by day in Asia/Tokyo) and GetRaw of the large
//!    message (MB/s).
//!
//! Prints a Markdown table (and appends it to `--out` when given).
//!
//! Run: `scripts/bench-query.sh [--tiny | --mails N --files M]`.

use kiroku_tests::bench::{Lat, mb, ms};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use kiroku_proto::query_client::QueryClient;
use kiroku_proto::{AggregateRequest, ExfilReportRequest, GetRawRequest, SearchRequest};
use kiroku_tests::{Env, example_bin};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

const DAY_MS: i64 = 86_400_000;

#[derive(Parser)]
struct Args {
    /// Collector data directory (created and loaded if needed).
    #[arg(long)]
    data: PathBuf,
    /// Mail events to load.
    #[arg(long, default_value_t = 1_000_000)]
    mails: u64,
    /// File events to load.
    #[arg(long, default_value_t = 10_000_000)]
    files: u64,
    /// 10,000 mails and 100,000 file events, 50 queries: the size CI runs.
    #[arg(long)]
    tiny: bool,
    /// Size of the large raw message, MB.
    #[arg(long, default_value_t = 10)]
    big_raw_mb: u64,
    /// Use the data directory as it is.
    #[arg(long)]
    no_load: bool,
    /// Measured queries per search kind (after a warm-up of 20).
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// GetRaw repetitions (at least 5).
    #[arg(long, default_value_t = 5)]
    raw_runs: usize,
    /// Collector binary to run (default: the one built with this; another
    /// build compares before and after a change).
    #[arg(long)]
    collector: Option<PathBuf>,
    /// Append the results table here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Measure only the Aggregate calls (`kiroku stats`), not searches,
    /// reports or GetRaw.
    #[arg(long)]
    aggregate_only: bool,
}

/// (file bytes, allocated bytes) under `p`.
fn du(p: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = std::fs::read_dir(p) else {
        return std::fs::metadata(p)
            .map(|m| (m.len(), m.blocks() * 512))
            .unwrap_or((0, 0));
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => du(&e.path()),
            _ => e
                .metadata()
                .map(|m| (m.len(), m.blocks() * 512))
                .unwrap_or((0, 0)),
        })
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

async fn timed_search(
    q: &mut QueryClient<Channel>,
    r: SearchRequest,
) -> anyhow::Result<(f64, u64)> {
    let t = Instant::now();
    let resp = q
        .search(r.clone())
        .await
        .with_context(|| format!("Search {r:?}"))?
        .into_inner();
    Ok((ms(t.elapsed()), resp.total_hits))
}

/// Size of the raw message and the rates (MB/s, ascending) of `runs`
/// GetRaw calls.
async fn get_raw(
    mut q: QueryClient<Channel>,
    id: &str,
    runs: usize,
) -> anyhow::Result<(usize, Vec<f64>)> {
    let mut rates = Vec::new();
    let mut size = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let mut s = q
            .get_raw(GetRawRequest {
                event_id: id.to_owned(),
            })
            .await
            .with_context(|| format!("GetRaw {id}"))?
            .into_inner();
        size = 0;
        while let Some(c) = s.message().await? {
            size += c.data.len();
        }
        rates.push(size as f64 / 1e6 / t.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    Ok((size, rates))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut a = Args::parse();
    if a.tiny {
        a.mails = 10_000;
        a.files = 100_000;
        a.queries = a.queries.min(50);
    }
    let mut report = Vec::<String>::new();
    let mut row = |k: &str, v: String| {
        println!("| {k} | {v} |");
        report.push(format!("| {k} | {v} |"));
    };
    println!("| figure | result |\n|---|---|");

    if !a.no_load {
        let t = Instant::now();
        let st = Command::new(example_bin("bulk_load"))
            .arg("--dir")
            .arg(&a.data)
            .args(["--mails", &a.mails.to_string()])
            .args(["--files", &a.files.to_string()])
            .args(["--big-raw-mb", &a.big_raw_mb.to_string()])
            .status()
            .context("running bulk_load")?;
        if !st.success() {
            bail!("bulk_load failed ({st})");
        }
        eprintln!("load step took {:.1} s", t.elapsed().as_secs_f64());
    }
    let manifest_path = a.data.join("bench-manifest.json");
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&manifest_path)
            .with_context(|| format!("reading {}", manifest_path.display()))?,
    )
    .with_context(|| format!("parsing {}", manifest_path.display()))?;
    let field = |k: &str| {
        m[k].as_i64().with_context(|| {
            format!(
                "{}: field `{k}` missing or not a number",
                manifest_path.display()
            )
        })
    };
    let (from, to) = (field("from_ms")?, field("to_ms")?);
    let docs = field("indexed_docs")?;
    row(
        "data",
        format!(
            "{} mails + {} file events ({docs} documents) over {} days, {} users",
            m["mails"],
            m["files"],
            (to - from) / DAY_MS,
            m["users"]
        ),
    );
    if let Some(runs) = m["load_runs"].as_array() {
        for r in runs {
            row(
                "bulk load (store code)",
                format!(
                    "{} events in {:.0} s = {:.0} events/s, batches of {}",
                    r["events"],
                    r["seconds"].as_f64().unwrap_or(0.0),
                    r["events_per_s"].as_f64().unwrap_or(0.0),
                    r["batch"]
                ),
            );
        }
    }
    let (idx, blobs, meta, journal) = (
        du(&a.data.join("index")),
        du(&a.data.join("blobs")),
        du(&a.data.join("meta")),
        du(&a.data.join("journal")),
    );
    let all = (
        idx.0 + blobs.0 + meta.0 + journal.0,
        idx.1 + blobs.1 + meta.1 + journal.1,
    );
    row(
        "data dir on disk (file bytes; allocated)",
        format!(
            "journal {} ({}), index {} ({}), blobs {} ({}), meta {} ({}); {:.0} bytes/event ({:.0} allocated), index alone {:.0}",
            mb(journal.0),
            mb(journal.1),
            mb(idx.0),
            mb(idx.1),
            mb(blobs.0),
            mb(blobs.1),
            mb(meta.0),
            mb(meta.1),
            all.0 as f64 / docs.max(1) as f64,
            all.1 as f64 / docs.max(1) as f64,
            idx.0 as f64 / docs.max(1) as f64
        ),
    );

    let env = Env::new()?;
    let t = Instant::now();
    let collector =
        env.start_collector_on(&std::fs::canonicalize(&a.data)?, a.collector.as_deref())?;
    row(
        "collector start (index open) to listening",
        format!("{:.0} ms", ms(t.elapsed())),
    );
    // As the `kiroku` CLI connects: responses zstd-compressed.
    let mut q = env
        .investigator()
        .await?
        .accept_compressed(tonic::codec::CompressionEncoding::Zstd);
    let mut rng = StdRng::seed_from_u64(7);
    let addresses: Vec<String> = m["addresses"]
        .as_array()
        .map(|v| {
            v.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    anyhow::ensure!(
        !addresses.is_empty(),
        "{}: no addresses",
        manifest_path.display()
    );
    let addr_query = |rng: &mut StdRng| {
        let days = rng.random_range(1..=30);
        let start = rng.random_range(from..to - days * DAY_MS);
        SearchRequest {
            address: addresses.choose(rng).cloned().unwrap_or_default(),
            from_ms: start,
            to_ms: start + days * DAY_MS,
            page_size: 50,
            ..Default::default()
        }
    };

    if a.aggregate_only {
        aggregates(&env, &mut q, from, to, a.queries, &mut row).await?;
        return finish(collector, &report, a.out.as_deref());
    }
    // Cold: the first query after start.
    let (cold, hits) = timed_search(&mut q, addr_query(&mut rng)).await?;
    row(
        "first query after start (address + range)",
        format!("{cold:.1} ms ({hits} hits)"),
    );
    for _ in 0..20 {
        timed_search(&mut q, addr_query(&mut rng)).await?;
    }
    let mut lat = Lat(Vec::new());
    let mut hits = Vec::new();
    for _ in 0..a.queries {
        let (l, h) = timed_search(&mut q, addr_query(&mut rng)).await?;
        lat.0.push(l);
        hits.push(h);
    }
    hits.sort_unstable();
    row(
        "Search address + time range (1–30 days), page 50",
        format!(
            "{}; median hits {}",
            lat.summary(),
            hits.get(hits.len() / 2).copied().unwrap_or(0)
        ),
    );

    let words = |k: &str| -> Vec<String> {
        m["words"][k]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (common, mid, rare) = (words("common"), words("mid"), words("rare"));
    anyhow::ensure!(
        !common.is_empty() && !mid.is_empty() && !rare.is_empty(),
        "{}: no words",
        manifest_path.display()
    );
    let text_query = |rng: &mut StdRng, i: usize| -> SearchRequest {
        let pick = |v: &Vec<String>, rng: &mut StdRng| v.choose(rng).cloned().unwrap_or_default();
        // A third each: one common word, a mid + a common word, a rare word.
        let text = match i % 3 {
            0 => pick(&common, rng),
            1 => format!("{} {}", pick(&mid, rng), pick(&common, rng)),
            _ => pick(&rare, rng),
        };
        SearchRequest {
            text,
            page_size: 50,
            ..Default::default()
        }
    };
    for i in 0..20 {
        timed_search(&mut q, text_query(&mut rng, i)).await?;
    }
    let mut lat = Lat(Vec::new());
    let mut hits = Vec::new();
    for i in 0..a.queries {
        let (l, h) = timed_search(&mut q, text_query(&mut rng, i)).await?;
        lat.0.push(l);
        hits.push(h);
    }
    hits.sort_unstable();
    row(
        "Search full text (subject + body), page 50",
        format!(
            "{}; hits median {}, max {}",
            lat.summary(),
            hits.get(hits.len() / 2).copied().unwrap_or(0),
            hits.last().copied().unwrap_or(0)
        ),
    );

    // The report as an investigator asks for it: totals over every file,
    // the collector's default of newest files listed.
    let window = |i: i64| {
        let end = to - (i % 60) * DAY_MS;
        ExfilReportRequest {
            from_ms: end - 30 * DAY_MS,
            to_ms: end,
            utc_offset_minutes: 540,
            ..Default::default()
        }
    };
    let mut lat = Lat(Vec::new());
    let (mut total, mut listed) = (0, 0);
    let runs = (a.queries / 20).max(3) as i64;
    // 30-day windows ending at different days, after one warm-up.
    for i in -1..runs {
        let t = Instant::now();
        let rep = q
            .exfil_report(window(i.max(0)))
            .await
            .context("ExfilReport")?
            .into_inner();
        if i >= 0 {
            lat.0.push(ms(t.elapsed()));
        }
        (total, listed) = (rep.files_total, rep.files.len());
    }
    row(
        "ExfilReport, 30 days",
        format!(
            "{}; {total} files in the last report, the newest {listed} listed",
            lat.summary()
        ),
    );
    // Every file of the same windows, streamed (what `--csv` exports).
    let mut lat = Lat(Vec::new());
    let mut streamed = 0;
    for i in 0..(runs / 3).max(3) {
        let t = Instant::now();
        let mut s = q
            .exfil_files(window(i))
            .await
            .context("ExfilFiles")?
            .into_inner();
        streamed = 0;
        while let Some(batch) = s.message().await.context("ExfilFiles stream")? {
            streamed += batch.files.len();
        }
        lat.0.push(ms(t.elapsed()));
    }
    row(
        "ExfilFiles (every file streamed), 30 days",
        format!("{}; {streamed} files in the last stream", lat.summary()),
    );

    aggregates(&env, &mut q, from, to, a.queries, &mut row).await?;

    // A load resumed after its first batch does not know the large
    // message's id: find it by its subject.
    let big_id = match m["big_raw_event_id"].as_str() {
        Some(id) => Some(id.to_owned()),
        None => q
            .search(SearchRequest {
                subject: "bigraw archive".into(),
                page_size: 1,
                ..Default::default()
            })
            .await
            .context("Search for the large message")?
            .into_inner()
            .events
            .first()
            .map(|e| e.event_id.clone()),
    };
    if let Some(id) = big_id.as_deref() {
        // Both ways a client may ask: accepting zstd (the server then
        // compresses every chunk again) and without compression.
        let plain = env.investigator().await?;
        for (how, client) in [("zstd accepted", q.clone()), ("no compression", plain)] {
            let (size, rates) = get_raw(client, id, a.raw_runs.max(5)).await?;
            row(
                &format!("GetRaw of the large message, {how}"),
                format!(
                    "{} in median {:.0} MB/s (min {:.0}, max {:.0}, {} runs)",
                    mb(size as u64),
                    rates[rates.len() / 2],
                    rates[0],
                    rates[rates.len() - 1],
                    rates.len()
                ),
            );
        }
    }
    finish(collector, &report, a.out.as_deref())
}

/// The collector's peak memory, then the table appended to `out`.
fn finish(
    mut collector: kiroku_tests::Proc,
    report: &[String],
    out: Option<&Path>,
) -> anyhow::Result<()> {
    let rss = std::fs::read_to_string(format!("/proc/{}/status", collector.pid()))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_owned() + " kB")
        .unwrap_or_default();
    println!("| collector peak RSS (VmHWM) | {rss} |");
    collector.terminate();
    if let Some(out) = out {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)
            .with_context(|| format!("opening {}", out.display()))?;
        writeln!(
            f,
            "| figure | result |\n|---|---|\n{}\n| collector peak RSS (VmHWM) | {rss} |",
            report.join("\n")
        )
        .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

/// Aggregate (`kiroku stats`) over 30-day windows ending on different days
/// of the data: by recipient domain and by user (top 20 each), and by day
/// in Asia/Tokyo; the first call is the cold one, then a warm-up of 10.
/// Then the command an investigator types, `kiroku stats --by
/// recipient-domain --top 20 --from 30d`, end to end (process start, TLS,
/// the call, the chart).
async fn aggregates(
    env: &Env,
    q: &mut QueryClient<Channel>,
    from: i64,
    to: i64,
    queries: usize,
    row: &mut impl FnMut(&str, String),
) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(11);
    let span = (to - from) / DAY_MS;
    let mut window = |by: &str, top: u32, zone: &str| {
        let end = to - rng.random_range(0..(span - 30).max(1)) * DAY_MS;
        AggregateRequest {
            filter: Some(SearchRequest {
                from_ms: end - 30 * DAY_MS,
                to_ms: end,
                ..Default::default()
            }),
            by: by.into(),
            top,
            time_zone: zone.into(),
        }
    };
    let mut first = true;
    for (by, top, zone, n) in [
        ("recipient-domain", 20, "", queries),
        ("user", 20, "", queries / 2),
        ("day", 0, "Asia/Tokyo", queries / 2),
    ] {
        let mut lat = Lat(Vec::new());
        let mut last = None;
        for i in 0..(n.max(5) + 10) {
            let r = window(by, top, zone);
            let t = Instant::now();
            let resp = q
                .aggregate(r.clone())
                .await
                .with_context(|| format!("Aggregate {r:?}"))?
                .into_inner();
            let took = ms(t.elapsed());
            if first {
                row(
                    "first Aggregate after start (30 days, by recipient domain, top 20)",
                    format!("{took:.1} ms"),
                );
                first = false;
            }
            if i >= 10 {
                lat.0.push(took);
            }
            last = Some(resp);
        }
        let last = last.unwrap_or_default();
        row(
            &format!(
                "Aggregate, 30 days, by {by}{}",
                match (top, zone) {
                    (0, "") => String::new(),
                    (0, z) => format!(" in {z}"),
                    (t, _) => format!(", top {t}"),
                }
            ),
            format!(
                "{}; the last: {} events counted, {} groups + {} others",
                lat.summary(),
                last.total_count,
                last.groups.len(),
                last.other_groups
            ),
        );
    }
    let mut lat = Lat(Vec::new());
    let args = [
        "stats",
        "--by",
        "recipient-domain",
        "--top",
        "20",
        "--from",
        "30d",
    ];
    let mut chart = String::new();
    for _ in 0..(queries / 5).max(5) {
        let t = Instant::now();
        chart = env.cli(&args)?;
        lat.0.push(ms(t.elapsed()));
    }
    eprintln!("{chart}");
    row(
        "kiroku stats --by recipient-domain --top 20 --from 30d (the CLI, end to end)",
        lat.summary(),
    );
    Ok(())
}
