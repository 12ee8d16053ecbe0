//! Fault-injection scenarios over the real binaries: `kill -9` of the agent
//! and of the collector at random points, and network faults between them
//! (a [`FaultProxy`]), while mail flows through the relay. Each scenario
//! ends with every store running again and reports what was sent (mails
//! the relay answered 250), stored, duplicated and lost, checked per mail
//! by Message-ID, raw SHA-256 and event id. Used by `tests/reliability.rs`
//! (quick mode, in CI) and `kiroku-reliability` (soak mode, RELIABILITY.md).
//! [`many_agents`] is the overload scenario: 1,000 agent streams at once;
//! [`hostile_port`] sends hostile bytes to the gRPC port.

pub mod hostile_port;
pub mod many_agents;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use kiroku_proto::SearchRequest;
use rand::Rng;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::faultproxy::{Fault, FaultProxy};
use crate::load::reply;
use crate::{Env, Mode, Proc, Upstream, email, free_port};

/// One line of the reliability table.
#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: String,
    pub injected: String,
    /// Mails the relay accepted (250 after end-of-data).
    pub sent: usize,
    /// Of those, stored in the collector (each once).
    pub stored: usize,
    /// Mails stored more than once (must be 0).
    pub duplicated: usize,
    /// Mails accepted but not stored, or stored with the wrong content.
    pub lost: usize,
    /// Extra facts (records of mails the client never saw accepted, ...).
    pub notes: String,
    /// A check beyond the counts that failed (memory, query latency,
    /// errors in a log), if any.
    pub failure: Option<String>,
}

impl Row {
    pub fn ok(&self) -> bool {
        self.duplicated == 0 && self.lost == 0 && self.stored == self.sent && self.failure.is_none()
    }

    pub fn markdown_header() -> &'static str {
        "| scenario | injected | sent (250 or written) | stored | duplicated | lost | result | notes |\n|---|---|---|---|---|---|---|---|"
    }

    pub fn markdown(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            self.scenario,
            self.injected,
            self.sent,
            self.stored,
            self.duplicated,
            self.lost,
            if self.ok() { "pass" } else { "FAIL" },
            self.notes
        )
    }
}

/// A mail this run sent, by Message-ID.
#[derive(Debug, Clone)]
struct Sent {
    sha256: String,
    latency: Duration,
    at: Instant,
}

/// Mail sent continuously through an agent's relay by a few connections,
/// one transaction per connection (a killed agent cuts it short).
pub struct Sender {
    stop: Arc<AtomicBool>,
    accepted: Arc<Mutex<BTreeMap<String, Sent>>>,
    /// Transactions that failed (connection refused or cut, 4xx/5xx).
    pub failed: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Sender {
    /// Starts `clients` senders to 127.0.0.1:`port`; subjects carry `tag`.
    pub fn start(port: u16, tag: &str, clients: usize) -> Sender {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(Mutex::new(BTreeMap::new()));
        let failed = Arc::new(AtomicUsize::new(0));
        let next = Arc::new(AtomicUsize::new(0));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, accepted, failed, next, tag) = (
                    stop.clone(),
                    accepted.clone(),
                    failed.clone(),
                    next.clone(),
                    tag.to_owned(),
                );
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        let id = format!("<{tag}-{n}-{}@reliability.test>", rand::random::<u32>());
                        let raw = format!(
                            "From: rel@example.com\r\nTo: sink@example.org\r\nSubject: {tag} m{n}\r\nMessage-ID: {id}\r\n\r\nmail {n} of {tag}\r\n"
                        )
                        .into_bytes();
                        let t0 = Instant::now();
                        let res = tokio::time::timeout(
                            Duration::from_secs(20),
                            transaction(port, &raw),
                        )
                        .await;
                        match res {
                            Ok(Ok(true)) => {
                                if let Ok(mut a) = accepted.lock() {
                                    a.insert(
                                        id,
                                        Sent {
                                            sha256: kiroku_common::sha256_hex(&raw),
                                            latency: t0.elapsed(),
                                            at: t0,
                                        },
                                    );
                                }
                            }
                            _ => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                })
            })
            .collect();
        Sender {
            stop,
            accepted,
            failed,
            tasks,
        }
    }

    /// Stops sending (transactions in progress finish or time out).
    pub async fn stop(mut self) -> SentMails {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        SentMails {
            mails: self.accepted.lock().map(|a| a.clone()).unwrap_or_default(),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

/// What a [`Sender`] got accepted.
pub struct SentMails {
    mails: BTreeMap<String, Sent>,
    pub failed: usize,
}

impl SentMails {
    pub fn len(&self) -> usize {
        self.mails.len()
    }

    pub fn is_empty(&self) -> bool {
        self.mails.is_empty()
    }

    /// p50 latency (MAIL → 250) of mails sent between `from` and `to`.
    pub fn p50_between(&self, from: Instant, to: Instant) -> Option<Duration> {
        let mut l: Vec<Duration> = self
            .mails
            .values()
            .filter(|s| s.at >= from && s.at < to)
            .map(|s| s.latency)
            .collect();
        l.sort();
        l.get(l.len() / 2).copied()
    }
}

/// One SMTP transaction on a fresh connection: true when the end-of-data
/// reply is 250.
async fn transaction(port: u16, raw: &[u8]) -> anyhow::Result<bool> {
    let s = TcpStream::connect(("127.0.0.1", port)).await?;
    s.set_nodelay(true)?;
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    reply(&mut r).await?;
    for (cmd, want) in [
        (&b"EHLO reliability.test\r\n"[..], 250),
        (b"MAIL FROM:<rel@example.com>\r\n", 250),
        (b"RCPT TO:<sink@example.org>\r\n", 250),
        (b"DATA\r\n", 354),
    ] {
        w.write_all(cmd).await?;
        if reply(&mut r).await?.0 != want {
            return Ok(false);
        }
    }
    w.write_all(raw).await?;
    w.write_all(b".\r\n").await?;
    let ok = reply(&mut r).await?.0 == 250;
    let _ = w.write_all(b"QUIT\r\n").await;
    Ok(ok)
}

/// Compares what was accepted with what the collector stores for `tag`,
/// waiting up to `within` for the stores to catch up.
pub async fn check(
    env: &Env,
    scenario: &str,
    injected: String,
    tag: &str,
    sent: &SentMails,
    within: Duration,
) -> anyhow::Result<Row> {
    let deadline = Instant::now() + within;
    loop {
        let row = compare(env, scenario, &injected, tag, sent).await?;
        if row.ok() || Instant::now() > deadline {
            return Ok(row);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The mails of a run: `tag` is in every subject.
pub(crate) fn tagged_mail(tag: &str) -> SearchRequest {
    SearchRequest {
        subject: tag.into(),
        kind: "email".into(),
        ..Default::default()
    }
}

/// How many mails tagged `tag` the collector holds now.
async fn stored(env: &Env, tag: &str) -> anyhow::Result<usize> {
    Ok(env.search_all(tagged_mail(tag)).await?.len())
}

async fn compare(
    env: &Env,
    scenario: &str,
    injected: &str,
    tag: &str,
    sent: &SentMails,
) -> anyhow::Result<Row> {
    let mut by_id: HashMap<String, Vec<(String, String)>> = HashMap::new();
    let mut event_ids = std::collections::HashSet::new();
    let mut repeated_event_ids = 0;
    for e in env.search_all(tagged_mail(tag)).await? {
        if !event_ids.insert(e.event_id.clone()) {
            repeated_event_ids += 1;
        }
        let m = email(&e);
        by_id
            .entry(m.message_id.clone())
            .or_default()
            .push((m.raw_sha256.clone(), e.event_id.clone()));
    }
    let (mut stored, mut duplicated, mut lost) = (0, 0, 0);
    for (id, s) in &sent.mails {
        match by_id.get(id).map(Vec::as_slice) {
            Some([(sha, _)]) if *sha == s.sha256 => stored += 1,
            Some([_]) | None | Some([]) => lost += 1,
            Some(_) => {
                stored += 1;
                duplicated += 1;
            }
        }
    }
    let unseen = by_id
        .keys()
        .filter(|id| !sent.mails.contains_key(*id))
        .count();
    let mut notes = format!(
        "{} transactions failed or cut (client saw no 250); {unseen} of them recorded anyway",
        sent.failed
    );
    if repeated_event_ids > 0 {
        notes.push_str(&format!("; {repeated_event_ids} repeated event ids"));
        duplicated += repeated_event_ids;
    }
    Ok(Row {
        scenario: scenario.into(),
        injected: injected.into(),
        sent: sent.len(),
        stored,
        duplicated,
        lost,
        notes,
        failure: None,
    })
}

/// A file this run wrote: its content hash.
#[derive(Debug, Clone)]
struct Written {
    sha256: String,
}

/// Writes new files (unique names and contents) into a watched directory
/// at a steady pace from its own thread.
pub struct FileWriter {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<BTreeMap<String, Written>>>,
}

impl FileWriter {
    /// Starts writing `tag-<n>.txt` files into `dir`, about `per_sec` a second.
    pub fn start(dir: &std::path::Path, tag: &str, per_sec: u64) -> FileWriter {
        let stop = Arc::new(AtomicBool::new(false));
        let (dir, tag) = (dir.to_owned(), tag.to_owned());
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut written = BTreeMap::new();
            let mut n = 0u64;
            while !s.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(1000 / per_sec.max(1)));
                let path = dir.join(format!("{tag}-{n}.txt"));
                let body = format!("file {n} of {tag}, {}\n", rand::random::<u64>());
                if std::fs::write(&path, &body).is_ok() {
                    written.insert(
                        path.to_string_lossy().into_owned(),
                        Written {
                            sha256: kiroku_common::sha256_hex(body.as_bytes()),
                        },
                    );
                }
                n += 1;
            }
            written
        });
        FileWriter {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops writing; returns what was written (path → content hash).
    fn stop(mut self) -> BTreeMap<String, Written> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

/// Compares the files written with the `create` records the collector
/// holds for them (by path, content hash and event id), waiting up to
/// `within`.
async fn check_files(
    env: &Env,
    scenario: &str,
    injected: &str,
    dir: &std::path::Path,
    written: &BTreeMap<String, Written>,
    within: Duration,
) -> anyhow::Result<Row> {
    let deadline = Instant::now() + within;
    loop {
        let row = compare_files(env, scenario, injected, dir, written).await?;
        if row.ok() || Instant::now() > deadline {
            return Ok(row);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn compare_files(
    env: &Env,
    scenario: &str,
    injected: &str,
    dir: &std::path::Path,
    written: &BTreeMap<String, Written>,
) -> anyhow::Result<Row> {
    let files = env
        .search_all(SearchRequest {
            kind: "file".into(),
            ..Default::default()
        })
        .await?;
    let prefix = dir.to_string_lossy().into_owned();
    let mut by_path: HashMap<String, Vec<String>> = HashMap::new();
    let mut event_ids = std::collections::HashSet::new();
    let mut repeated_event_ids = 0;
    let mut other_ops = 0;
    for e in files {
        let Some(kiroku_proto::event::Kind::File(f)) = &e.kind else {
            continue;
        };
        if !f.path.starts_with(&prefix) {
            continue;
        }
        if !event_ids.insert(e.event_id.clone()) {
            repeated_event_ids += 1;
        }
        if f.operation == "create" {
            by_path
                .entry(f.path.clone())
                .or_default()
                .push(f.sha256.clone());
        } else {
            other_ops += 1;
        }
    }
    let (mut stored, mut duplicated, mut lost) = (0, 0, 0);
    for (path, w) in written {
        match by_path.get(path).map(Vec::as_slice) {
            Some([sha]) if *sha == w.sha256 => stored += 1,
            Some([_]) | None | Some([]) => lost += 1,
            Some(_) => {
                stored += 1;
                duplicated += 1;
            }
        }
    }
    let mut notes = format!("{other_ops} records of other operations");
    if repeated_event_ids > 0 {
        notes.push_str(&format!("; {repeated_event_ids} repeated event ids"));
        duplicated += repeated_event_ids;
    }
    Ok(Row {
        scenario: scenario.into(),
        injected: injected.into(),
        sent: written.len(),
        stored,
        duplicated,
        lost,
        notes,
        failure: None,
    })
}

/// Waits until the agent's log shows file capture watching for the
/// `nth` time (its log is appended across restarts).
async fn wait_watching(agent: &Proc, nth: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while agent.log_text().matches("file capture watching").count() < nth {
        if Instant::now() > deadline {
            bail!("agent never started watching:\n{}", agent.log_text());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn files_config(dir: &std::path::Path) -> String {
    format!("[files]\nwatch = [{dir:?}]\ncoalesce_ms = 100\nremovable_auto = false\n")
}

fn pause(rng: &mut impl Rng, lo_ms: u64, hi_ms: u64) -> Duration {
    Duration::from_millis(rng.random_range(lo_ms..=hi_ms))
}

/// Fails when a log shows a store that did not open cleanly.
fn opened_cleanly(p: &Proc) -> anyhow::Result<()> {
    let log = p.log_text();
    for bad in [
        "cannot be opened",
        "moving it aside",
        "Corrupt",
        "corrupt entry",
    ] {
        if log.contains(bad) {
            bail!("{} did not open cleanly ({bad}):\n{log}", p.name);
        }
    }
    Ok(())
}

/// `kill -9` of the agent `kills` times at random points while mail flows
/// through it and files are written in a directory it watches, right up to
/// the kill and on while it is down; the collector stays up. Every file
/// written counts: those the agent recorded before it died, and those it
/// missed (written around the kill or while it was down), which the
/// catch-up scan at the next start reports. Each must be stored exactly
/// once as a `create` with its content hash.
pub async fn agent_crashes(env: &Env, kills: usize) -> anyhow::Result<Vec<Row>> {
    let tag = "relagentkill";
    let upstream = Upstream::start(env)?;
    let _collector = env.start_collector()?;
    let smtp = free_port();
    let watched = env.path().join("watched-agentkill");
    std::fs::create_dir_all(&watched)?;
    let files = files_config(&watched);
    let mut rng = rand::rng();
    let mut all = SentMails {
        mails: BTreeMap::new(),
        failed: 0,
    };
    let mut written = BTreeMap::new();
    for i in 0..kills {
        let mut agent =
            env.start_agent_with("crashy", smtp, &Mode::Relay(upstream.port), &files)?;
        opened_cleanly(&agent)?;
        wait_watching(&agent, i + 1).await?;
        let writer = FileWriter::start(&watched, &format!("f{i}"), 50);
        let sender = Sender::start(smtp, tag, 3);
        tokio::time::sleep(pause(&mut rng, 100, 700)).await;
        agent.kill9();
        let got = sender.stop().await;
        all.failed += got.failed;
        all.mails.extend(got.mails);
        // Files go on being written for a moment while the agent is down.
        tokio::time::sleep(pause(&mut rng, 0, 100)).await;
        written.extend(writer.stop());
    }
    let agent = env.start_agent_with("crashy", smtp, &Mode::Relay(upstream.port), &files)?;
    let injected = format!("{kills} × SIGKILL of the agent under mail and file load");
    let row = check(
        env,
        "agent kill -9",
        injected.clone(),
        tag,
        &all,
        Duration::from_secs(60),
    )
    .await?;
    let files_row = check_files(
        env,
        "agent kill -9 (file events)",
        &injected,
        &watched,
        &written,
        Duration::from_secs(30),
    )
    .await?;
    opened_cleanly(&agent)?;
    Ok(vec![row, files_row])
}

/// `kill -9` of the collector `kills` times at random points while mail
/// flows through an agent that keeps shipping and files are written in a
/// directory it watches.
pub async fn collector_crashes(env: &Env, kills: usize) -> anyhow::Result<Vec<Row>> {
    let tag = "relcollectorkill";
    let upstream = Upstream::start(env)?;
    let smtp = free_port();
    let watched = env.path().join("watched-collectorkill");
    std::fs::create_dir_all(&watched)?;
    let agent = env.start_agent_with(
        "steady",
        smtp,
        &Mode::Relay(upstream.port),
        &files_config(&watched),
    )?;
    wait_watching(&agent, 1).await?;
    let writer = FileWriter::start(&watched, "c", 30);
    let sender = Sender::start(smtp, tag, 3);
    let mut rng = rand::rng();
    for _ in 0..kills {
        let mut c = env.start_collector()?;
        opened_cleanly(&c)?;
        tokio::time::sleep(pause(&mut rng, 200, 1200)).await;
        c.kill9();
        tokio::time::sleep(pause(&mut rng, 0, 300)).await;
    }
    let sent = sender.stop().await;
    let written = writer.stop();
    let collector = env.start_collector()?;
    let injected =
        format!("{kills} × SIGKILL of the collector while the agent ships mail and file events");
    let row = check(
        env,
        "collector kill -9",
        injected.clone(),
        tag,
        &sent,
        Duration::from_secs(90),
    )
    .await?;
    let files_row = check_files(
        env,
        "collector kill -9 (file events)",
        &injected,
        &watched,
        &written,
        Duration::from_secs(60),
    )
    .await?;
    opened_cleanly(&collector)?;
    Ok(vec![row, files_row])
}

/// Network faults between agent and collector (a TCP proxy): delay,
/// blackhole without RST, resets, streams cut mid-batch. Mail keeps
/// flowing through the relay; its latency during the outage is compared
/// with normal operation.
pub async fn network_faults(env: &Env, rounds: usize) -> anyhow::Result<Row> {
    let tag = "relnetfault";
    let upstream = Upstream::start(env)?;
    let _collector = env.start_collector()?;
    let proxy = FaultProxy::start(env.grpc).await?;
    let smtp = free_port();
    // Keep-alive every 2 s: a stranded connection is noticed in ~3.3 s.
    let agent = env.start_agent_via_with(
        "netfault",
        smtp,
        &Mode::Relay(upstream.port),
        proxy.port,
        "keepalive_secs = 2\n",
        "",
    )?;
    let sender = Sender::start(smtp, tag, 2);
    let mut rng = rand::rng();
    let normal_from = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let normal_to = Instant::now();
    let mut outage = Vec::new();
    for _ in 0..rounds {
        proxy.set(Fault::Delay(Duration::from_millis(200)));
        tokio::time::sleep(pause(&mut rng, 500, 1500)).await;
        let from = Instant::now();
        proxy.set(Fault::Blackhole);
        tokio::time::sleep(pause(&mut rng, 1500, 3000)).await;
        outage.push((from, Instant::now()));
        proxy.set(Fault::Reset);
        tokio::time::sleep(pause(&mut rng, 300, 1000)).await;
        proxy.set(Fault::CutAfter(rng.random_range(500..20_000)));
        tokio::time::sleep(pause(&mut rng, 1000, 2000)).await;
        proxy.set(Fault::Pass);
        tokio::time::sleep(pause(&mut rng, 300, 1000)).await;
    }
    // The open connection silently forgotten by the path (no RST, no FIN,
    // nothing forwarded ever again): the agent must notice by itself and
    // connect anew while mail keeps flowing.
    // First a settled, working connection: no new connection for a
    // second while mail kept arriving at the collector through it.
    let settle_by = Instant::now() + Duration::from_secs(60);
    loop {
        let (a, n) = (
            proxy.accepted.load(Ordering::Relaxed),
            stored(env, tag).await?,
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        if proxy.accepted.load(Ordering::Relaxed) == a && stored(env, tag).await? > n {
            break;
        }
        if Instant::now() > settle_by {
            bail!("the agent never settled on a working connection after the faults");
        }
    }
    let before = proxy.accepted.load(Ordering::Relaxed);
    let stranded_at = Instant::now();
    proxy.set(Fault::Strand(before));
    let reconnect = loop {
        if proxy.accepted.load(Ordering::Relaxed) > before {
            break stranded_at.elapsed();
        }
        if stranded_at.elapsed() > Duration::from_secs(60) {
            bail!(
                "the agent never left a stranded connection to the collector:\n{}",
                agent.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = sender.stop().await;
    let normal = sent.p50_between(normal_from, normal_to);
    let mut during: Vec<Duration> = outage
        .iter()
        .filter_map(|(a, b)| sent.p50_between(*a, *b))
        .collect();
    during.sort();
    let during = during.get(during.len() / 2).copied();
    let mut row = check(
        env,
        "network faults agent ↔ collector",
        format!(
            "{rounds} × (200 ms delay, blackhole 1.5–3 s, resets, stream cut after 0.5–20 KB), then the open connection stranded for good; {} connections",
            proxy.accepted.load(Ordering::Relaxed)
        ),
        tag,
        &sent,
        Duration::from_secs(90),
    )
    .await?;
    let ms = |d: Option<Duration>| {
        d.map(|d| format!("{:.1} ms", d.as_secs_f64() * 1e3))
            .unwrap_or_else(|| "-".into())
    };
    row.notes = format!(
        "relay p50 normal {}, during blackhole {}; stranded connection left after {:.1} s (keep-alive 2 s); {}",
        ms(normal),
        ms(during),
        reconnect.as_secs_f64(),
        row.notes
    );
    Ok(row)
}
