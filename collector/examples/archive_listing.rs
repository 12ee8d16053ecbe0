//! What listing a mailed archive costs the collector: archives of every
//! kind the collector opens, made by the real tools (`zip`, `7z`, `tar`)
//! from the same files, listed with `analysis::archive::list` (every
//! member read and hashed, as the analysis worker does), median of several
//! runs each. Also a zip bomb (1 GiB of zeros in about 1 MiB), which the
//! default limits stop at 1 GiB expanded.
//!
//! The files: `--files` text files of `--file-kib` KiB each, words drawn
//! from a small vocabulary (seeded, so every run lists the same bytes;
//! they compress about 3:1 like office text).
//!
//! usage: cargo build --release -p kiroku-collector --example archive_listing
//!        flock /work/bench.lock target/release/examples/archive_listing \
//!          --dir /work/bench-data/archive-listing

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use kiroku_collector::analysis::archive::{ArchiveLimits, list};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Parser)]
#[command(about = "Time the collector's archive listing per archive type and size")]
struct Args {
    /// Working directory (emptied first, removed after).
    #[arg(long)]
    dir: PathBuf,
    /// Runs per archive; the median is shown.
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

/// (label, files, KiB per file).
const SETS: &[(&str, usize, usize)] = &[
    ("small: 10 x 10 KiB", 10, 10),
    ("many: 1000 x 4 KiB", 1000, 4),
    ("large: 4 x 16 MiB", 4, 16 * 1024),
];

/// (label, file name, tool, arguments before the name and the inputs).
const KINDS: &[(&str, &str, &str, &[&str])] = &[
    ("zip (deflate)", "a.zip", "zip", &["-q", "-r"]),
    ("zip zipcrypto", "c.zip", "zip", &["-q", "-r", "-P", "pw"]),
    (
        "zip aes-256 (7z)",
        "aes.zip",
        "7z",
        &["a", "-bd", "-tzip", "-mem=AES256", "-ppw"],
    ),
    ("7z (lzma2, solid)", "a.7z", "7z", &["a", "-bd"]),
    (
        "7z aes, names hidden",
        "h.7z",
        "7z",
        &["a", "-bd", "-ppw", "-mhe=on"],
    ),
    ("tar", "a.tar", "tar", &["-cf"]),
    ("tar.gz", "a.tgz", "tar", &["-czf"]),
];

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(&args.dir)?;
    let limits = ArchiveLimits::default();
    println!("| files | archive | archive bytes | members | expanded MiB | ms (median) | MiB/s |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (set, n, kib) in SETS {
        let src = args.dir.join("src");
        let _ = std::fs::remove_dir_all(&src);
        write_files(&src.join("docs"), *n, *kib)?;
        for (kind, name, tool, pre) in KINDS {
            let archive = src.join(name);
            let mut a: Vec<&str> = pre.to_vec();
            a.extend([*name, "docs"]);
            run(&src, tool, &a)?;
            let data = std::fs::read(&archive)?;
            let (ms, members, expanded) = time(&data, name, &limits, args.runs)?;
            row(set, kind, data.len(), members, expanded, ms);
            std::fs::remove_file(&archive)?;
        }
    }
    // A bomb: 1 GiB of zeros, one member.
    let bomb_dir = args.dir.join("bomb");
    std::fs::create_dir_all(&bomb_dir)?;
    std::fs::File::create(bomb_dir.join("zeros.bin"))?.set_len(1 << 30)?;
    run(&bomb_dir, "zip", &["-q", "-9", "bomb.zip", "zeros.bin"])?;
    std::fs::remove_file(bomb_dir.join("zeros.bin"))?;
    let data = std::fs::read(bomb_dir.join("bomb.zip"))?;
    let (ms, members, expanded) = time(&data, "bomb.zip", &limits, args.runs)?;
    row(
        "bomb: 1 GiB of zeros",
        "zip (deflate), bounded",
        data.len(),
        members,
        expanded,
        ms,
    );
    std::fs::remove_dir_all(&args.dir)?;
    Ok(())
}

fn row(set: &str, kind: &str, bytes: usize, members: usize, expanded: u64, ms: f64) {
    let mib = expanded as f64 / (1 << 20) as f64;
    let rate = if ms > 0.0 { mib / (ms / 1000.0) } else { 0.0 };
    println!("| {set} | {kind} | {bytes} | {members} | {mib:.1} | {ms:.1} | {rate:.0} |");
}

/// Median wall time of `runs` listings, the members listed and the bytes
/// they hold (as read; encrypted members count their listed size).
fn time(
    data: &[u8],
    name: &str,
    limits: &ArchiveLimits,
    runs: usize,
) -> anyhow::Result<(f64, usize, u64)> {
    let mut times: Vec<Duration> = Vec::new();
    let mut last = None;
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let l = list(data, name, limits).with_context(|| format!("{name} is not listed"))?;
        times.push(t.elapsed());
        last = Some(l);
    }
    times.sort();
    let l = last.context("no run")?;
    if !l.status.is_empty() {
        eprintln!("{name}: {}", l.status);
    }
    let expanded = l.members.iter().map(|m| m.size).sum();
    Ok((
        times[times.len() / 2].as_secs_f64() * 1000.0,
        l.members.len(),
        expanded,
    ))
}

fn run(dir: &Path, tool: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(tool)
        .args(args)
        .current_dir(dir)
        .output()
        .with_context(|| format!("cannot run {tool} (apt-get install zip p7zip-full)"))?;
    anyhow::ensure!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// `n` files of `kib` KiB of words, seeded.
fn write_files(dir: &Path, n: usize, kib: usize) -> anyhow::Result<()> {
    const WORDS: &[&str] = &[
        "売上",
        "見積",
        "契約",
        "社外秘",
        "quarterly",
        "revenue",
        "contract",
        "the",
        "of",
        "and",
        "forecast",
        "会議",
        "資料",
        "confidential",
        "plan",
        "2026",
        "円",
        "merger",
        "部長",
        "予算",
    ];
    std::fs::create_dir_all(dir)?;
    let mut rng = StdRng::seed_from_u64(17);
    for i in 0..n {
        let mut s = String::with_capacity(kib * 1024 + 32);
        while s.len() < kib * 1024 {
            s.push_str(WORDS[rng.random_range(0..WORDS.len())]);
            s.push(if rng.random_range(0..12) == 0 {
                '\n'
            } else {
                ' '
            });
        }
        std::fs::write(dir.join(format!("file-{i:04}.txt")), s)?;
    }
    Ok(())
}
