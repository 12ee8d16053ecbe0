//! What the CJK-aware analyzer costs: the same synthetic events indexed
//! twice through the collector's own `EventIndex` (same schema, same
//! batches and commits), once with tantivy's default analyzer (what every
//! full-text field used before: words of letters and digits, lower case,
//! tokens of 40 bytes or more dropped) and once with
//! `store::index::analyzer` (NFKC, CJK bigrams and unigrams). Prints the
//! ingest rate (events per second of `add` + `commit`, generation not
//! counted; the merges those commits started are waited for and counted)
//! and the bytes of the index's segments for each.
//!
//! The events: mail (four in five) with a subject, a body of several
//! sentences and up to two attachment names, and file events with a path;
//! half of the text Japanese, a third English, the rest mixed in one
//! sentence, words drawn Zipf-like from a vocabulary of each language.
//! Generation is deterministic (seeded), so both runs index the same
//! events.
//!
//! usage: cargo run --release -p kiroku-collector --example analyzer_cost -- \
//!          --dir /work/bench-data/analyzer-cost --events 400000

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use kiroku_collector::store::index::{EventIndex, analyzer};
use kiroku_proto::{Attachment, EmailEvent, Event, FileEvent, event::Kind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tantivy::tokenizer::{TokenStream, TokenizerManager};

#[derive(Parser)]
#[command(about = "Index the same events with tantivy's default analyzer and Kiroku's")]
struct Args {
    /// Directory for the two indexes (emptied first, removed after).
    #[arg(long)]
    dir: PathBuf,
    /// Events to index with each analyzer.
    #[arg(long, default_value_t = 400_000)]
    events: u64,
    /// Events per add + commit, as the collector's committer batches.
    #[arg(long, default_value_t = 5_000)]
    batch: u64,
    /// Keep the indexes (to look at them).
    #[arg(long)]
    keep: bool,
}

const JA: &[&str] = &[
    "売上",
    "報告",
    "会議",
    "予算",
    "見積書",
    "契約",
    "請求書",
    "至急",
    "確認",
    "資料",
    "案内",
    "変更",
    "提出",
    "承認",
    "依頼",
    "営業部",
    "人事",
    "異動",
    "出張",
    "障害",
    "新製品",
    "発表会",
    "株式会社",
    "御中",
    "お世話になっております",
    "よろしくお願いします",
    "添付",
    "送付",
    "第3四半期",
    "来期",
    "計画",
    "顧客",
    "取引先",
    "納期",
    "在庫",
    "発注",
    "議事録",
    "打ち合わせ",
    "スケジュール",
    "プロジェクト",
    "システム",
    "データ",
    "ファイル",
    "サーバー",
    "ネットワーク",
    "セキュリティ",
    "パスワード",
    "アカウント",
    "メール",
    "東京",
    "大阪",
    "本社",
    "支店",
    "部長",
    "課長",
    "担当者",
    "以上",
    "について",
    "の件",
    "ご連絡",
    "皆様",
    "本日",
    "明日",
    "来週",
    "今月",
    "完了",
    "対応",
    "検討",
    "調整",
    "共有",
    "更新",
    "削除",
    "ｶﾀﾛｸﾞ",
    "ＰＤＦ",
];

const EN: &[&str] = &[
    "the",
    "report",
    "sales",
    "budget",
    "meeting",
    "quarterly",
    "invoice",
    "contract",
    "urgent",
    "review",
    "please",
    "find",
    "attached",
    "for",
    "and",
    "of",
    "to",
    "in",
    "project",
    "schedule",
    "customer",
    "order",
    "delivery",
    "server",
    "network",
    "security",
    "password",
    "account",
    "update",
    "draft",
    "final",
    "plan",
    "forecast",
    "revenue",
    "minutes",
    "agenda",
    "team",
    "office",
    "Tokyo",
    "Osaka",
    "Q3",
    "FY2026",
    "status",
    "issue",
    "fix",
    "release",
    "deploy",
    "data",
    "file",
    "backup",
    "summary",
    "regards",
    "thanks",
    "next",
    "week",
    "today",
    "confirm",
    "approval",
    "request",
    "supplier",
];

const EXT: &[&str] = &["pdf", "xlsx", "docx", "pptx", "zip", "csv", "txt"];

/// A word of `vocab`, the first ones far more often (about Zipf).
fn word<'a>(rng: &mut StdRng, vocab: &[&'a str]) -> &'a str {
    let r: f64 = rng.random();
    vocab[((r * r * r) * vocab.len() as f64) as usize % vocab.len()]
}

/// A sentence of `n` words: Japanese run together and ended by `。`,
/// English spaced and ended by `.`, or both languages mixed.
fn sentence(rng: &mut StdRng, n: usize) -> String {
    let lang = rng.random_range(0..6);
    let mut s = String::new();
    for i in 0..n {
        let ja = match lang {
            0..=2 => true,
            3 | 4 => false,
            _ => rng.random_bool(0.5),
        };
        if ja {
            s.push_str(word(rng, JA));
        } else {
            if i > 0 {
                s.push(' ');
            }
            s.push_str(word(rng, EN));
        }
    }
    s.push_str(if lang <= 2 { "。" } else { ". " });
    s
}

fn event(rng: &mut StdRng, i: u64) -> Event {
    let kind = if rng.random_range(0..5) < 4 {
        let n = rng.random_range(2..6);
        let subject = sentence(rng, n);
        let body: String = (0..rng.random_range(3..12))
            .map(|_| {
                let n = rng.random_range(4..14);
                sentence(rng, n)
            })
            .collect();
        let attachments = (0..rng.random_range(0..3))
            .map(|_| Attachment {
                filename: format!(
                    "{}_{}.{}",
                    word(rng, JA),
                    rng.random_range(1..400),
                    EXT[rng.random_range(0..EXT.len())]
                ),
                ..Default::default()
            })
            .collect::<Vec<_>>();
        Kind::Email(EmailEvent {
            mail_from: format!("user{}@example.co.jp", i % 500),
            subject,
            body_text: body,
            attachment_count: attachments.len() as u32,
            attachments,
            ..Default::default()
        })
    } else {
        Kind::File(FileEvent {
            operation: "create".into(),
            path: format!(
                "/home/user{}/{}/{} {}.{}",
                i % 500,
                word(rng, JA),
                word(rng, EN),
                word(rng, JA),
                EXT[rng.random_range(0..EXT.len())]
            ),
            ..Default::default()
        })
    };
    Event {
        event_id: format!("bench/{i}"),
        agent_id: format!("pc-{}", i % 500),
        observed_at_ms: 1_790_000_000_000 + i as i64 * 1000,
        kind: Some(kind),
        ..Default::default()
    }
}

/// Bytes of the segments the index's `meta.json` lists (what searches
/// read): files of merges the writer abandoned when it was dropped are
/// not the index.
fn index_bytes(p: &Path) -> anyhow::Result<(u64, usize)> {
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(p.join("meta.json")).with_context(|| format!("{}", p.display()))?,
    )?;
    let live: Vec<String> = meta["segments"]
        .as_array()
        .context("meta.json lists no segments")?
        .iter()
        .filter_map(|s| s["segment_id"].as_str().map(|id| id.replace('-', "")))
        .collect();
    let mut n = 0;
    for e in std::fs::read_dir(p)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if live.iter().any(|id| name.starts_with(id.as_str())) {
            n += e.metadata()?.len();
        }
    }
    Ok((n, live.len()))
}

/// The full-text fields' values of an event.
fn texts(e: &Event) -> Vec<&str> {
    match &e.kind {
        Some(Kind::Email(m)) => [m.subject.as_str(), m.body_text.as_str()]
            .into_iter()
            .chain(m.attachments.iter().map(|a| a.filename.as_str()))
            .collect(),
        Some(Kind::File(f)) => vec![f.path.as_str()],
        _ => Vec::new(),
    }
}

struct Run {
    name: &'static str,
    took: Duration,
    analysis: Duration,
    tokens: u64,
    bytes: u64,
    segments: usize,
    text_bytes: u64,
}

fn run(
    args: &Args,
    name: &'static str,
    text: tantivy::tokenizer::TextAnalyzer,
) -> anyhow::Result<Run> {
    let path = args.dir.join(name);
    if path.exists() {
        std::fs::remove_dir_all(&path)?;
    }
    let mut analysis_only = text.clone();
    let idx = EventIndex::open_with_analyzer(&path, text)?;
    let (mut analysis, mut tokens) = (Duration::ZERO, 0u64);
    let mut rng = StdRng::seed_from_u64(16);
    let mut took = Duration::ZERO;
    let mut text_bytes = 0u64;
    let mut i = 0;
    while i < args.events {
        let n = args.batch.min(args.events - i);
        let batch: Vec<Event> = (i..i + n).map(|k| event(&mut rng, k)).collect();
        text_bytes += batch
            .iter()
            .flat_map(texts)
            .map(|s| s.len() as u64)
            .sum::<u64>();
        // The analyzer alone over the same text (not part of `took`).
        let t = Instant::now();
        for e in &batch {
            for s in texts(e) {
                let mut stream = analysis_only.token_stream(s);
                while stream.advance() {
                    tokens += 1;
                }
            }
        }
        analysis += t.elapsed();
        let t = Instant::now();
        idx.add(&batch)?;
        idx.commit()?;
        took += t.elapsed();
        i += n;
    }
    anyhow::ensure!(idx.count() == args.events, "indexed {} events", idx.count());
    let t = Instant::now();
    idx.close_after_merges()?;
    took += t.elapsed();
    let (bytes, segments) = index_bytes(&path)?;
    if !args.keep {
        std::fs::remove_dir_all(&path)?;
    }
    Ok(Run {
        name,
        took,
        analysis,
        tokens,
        bytes,
        segments,
        text_bytes,
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.dir)?;
    let default = TokenizerManager::default()
        .get("default")
        .context("tantivy's default analyzer")?;
    let runs = [
        run(&args, "default", default)?,
        run(&args, "cjk", analyzer::index_analyzer())?,
    ];
    println!(
        "{} events ({:.0} MB of text), batches of {}",
        args.events,
        runs[0].text_bytes as f64 / 1e6,
        args.batch
    );
    println!(
        "analyzer   events/s   index MB   bytes/event   segments   tokens/event   analysis alone MB/s"
    );
    for r in &runs {
        println!(
            "{:<9} {:>9.0} {:>10.1} {:>13.0} {:>10} {:>14.1} {:>21.1}",
            r.name,
            args.events as f64 / r.took.as_secs_f64(),
            r.bytes as f64 / 1e6,
            r.bytes as f64 / args.events as f64,
            r.segments,
            r.tokens as f64 / args.events as f64,
            r.text_bytes as f64 / 1e6 / r.analysis.as_secs_f64()
        );
    }
    Ok(())
}
