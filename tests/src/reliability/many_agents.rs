//! Overload: 1,000 agents (each its own certificate, its own TLS
//! connection, its own `Ingest.Ship` stream) ship at once to one collector
//! while an investigator keeps searching. Checks that every event is
//! stored exactly once, that the collector's peak RSS stays bounded, that
//! queries keep answering (no starvation) and that the collector logs no
//! error. The streams behave like the agent's shipper: one batch
//! outstanding at a time, and after a failed stream a reconnect that
//! resends from the `Welcome`'s `stored_seq`.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use kiroku_common::pki::{PkiDir, Role};
use kiroku_proto::ingest_client::IngestClient;
use kiroku_proto::query_client::QueryClient;
use kiroku_proto::{
    Batch, EmailEvent, Event, Hello, SearchRequest, ShipRequest, ShipResponse, event::Kind,
    ship_request, ship_response,
};
use tokio::sync::mpsc;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::Row;
use crate::Env;

/// Size of one run.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Concurrent agents, each with its own certificate and connection.
    pub agents: usize,
    /// Batches per stream (one outstanding at a time, as the agent does).
    pub batches: usize,
    /// Events per batch.
    pub per_batch: usize,
}

/// Peak collector RSS (VmHWM) above this fails the run.
const RSS_LIMIT_BYTES: u64 = 1536 << 20;
/// Starvation of the query service fails the run: a search during the
/// load that takes longer than `QUERY_MAX_LIMIT`, or a median over
/// `QUERY_P50_LIMIT`. Generous: debug builds on 2 cores shared with
/// compilers, where the 1,000 client handshakes of this process compete
/// with the collector (single searches of 1.5–5 s were seen while the
/// handshakes ran).
const QUERY_P50_LIMIT: Duration = Duration::from_secs(2);
const QUERY_MAX_LIMIT: Duration = Duration::from_secs(20);
/// Attempts per stream before it gives up (a reconnect after a failure).
const ATTEMPTS: usize = 5;

/// What one agent stream reports.
#[derive(Default)]
pub(super) struct StreamOutcome {
    /// Attempts beyond the first (the stream or connection failed).
    pub(super) retries: usize,
    /// Errors seen on failed attempts (first few, for the notes).
    pub(super) errors: Vec<String>,
    /// Events acknowledged (stored + duplicates).
    pub(super) acked: u64,
    pub(super) connect: Duration,
}

pub async fn run(env: &Env, load: Load) -> anyhow::Result<Row> {
    let tag = "relmanyagents";
    let started = Instant::now();
    let names = issue_agents(env, "many", load.agents).await?;
    let issued_in = started.elapsed();
    let mut collector = env.start_collector()?;
    let pid = collector.pid();

    // The investigator connects before the load and keeps asking, on a
    // thread and runtime of its own: its latency is the collector's, not
    // this process's scheduler queue behind 1,000 client streams.
    let idle = query_latencies(env, tag, 20).await?;
    let idle_rss = vm_hwm(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let query_errors = Arc::new(AtomicUsize::new(0));
    let querier = {
        let (stop, query_errors, env_grpc) = (stop.clone(), query_errors.clone(), env.grpc);
        let pki = env.pki();
        std::thread::spawn(move || -> anyhow::Result<Vec<(Duration, Duration)>> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let mut inv = investigator(env_grpc, &pki).await?;
                let t_start = Instant::now();
                let mut lat = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    let res =
                        tokio::time::timeout(Duration::from_secs(30), inv.search(search(tag)))
                            .await;
                    match res {
                        Ok(Ok(_)) => lat.push((t0 - t_start, t0.elapsed())),
                        _ => {
                            query_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(lat)
            })
        })
    };

    let load_started = Instant::now();
    let (outcomes, failed_streams) = ship_all(env, &names, tag, load, Duration::ZERO).await?;
    let shipped_in = load_started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let timeline = querier
        .join()
        .map_err(|_| anyhow::anyhow!("the querier thread panicked"))??;
    // The slowest searches and when (since the load started) they began.
    let mut slowest = timeline.clone();
    slowest.sort_by_key(|(_, d)| std::cmp::Reverse(*d));
    slowest.truncate(3);
    let mut lat: Vec<Duration> = timeline.iter().map(|(_, d)| *d).collect();
    lat.sort();

    // Exactly once, by event id.
    let expected = expected_ids(&names, load);
    let (stored, duplicated, unexpected) = stored_events(env, tag, &expected).await?;
    let rss = vm_hwm(pid);
    let log = collector.log_text();
    let bad_log: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" ERROR ") || l.contains("panicked"))
        .take(5)
        .collect();

    let sent = expected.len();
    let mut problems = Vec::new();
    if !failed_streams.is_empty() {
        problems.push(format!(
            "{} streams gave up, e.g. {}",
            failed_streams.len(),
            failed_streams[0]
        ));
    }
    if rss.is_some_and(|r| r > RSS_LIMIT_BYTES) {
        problems.push(format!(
            "collector peak RSS over {} MiB",
            RSS_LIMIT_BYTES >> 20
        ));
    }
    let p = |q: f64| percentile(&lat, q);
    if lat.is_empty()
        || p(0.5).is_some_and(|d| d > QUERY_P50_LIMIT)
        || lat.last().is_some_and(|d| *d > QUERY_MAX_LIMIT)
    {
        problems.push(format!(
            "queries starved (p50 over {} s, one over {} s, or none answered)",
            QUERY_P50_LIMIT.as_secs(),
            QUERY_MAX_LIMIT.as_secs()
        ));
    }
    if query_errors.load(Ordering::Relaxed) > 0 {
        problems.push(format!(
            "{} queries failed or timed out",
            query_errors.load(Ordering::Relaxed)
        ));
    }
    if unexpected > 0 {
        problems.push(format!("{unexpected} events stored that nobody sent"));
    }
    if !bad_log.is_empty() {
        problems.push(format!("collector log: {}", bad_log.join(" / ")));
    }
    let retries: usize = outcomes.iter().map(|o| o.retries).sum();
    let mut connects: Vec<Duration> = outcomes.iter().map(|o| o.connect).collect();
    connects.sort();
    let ms = |d: Option<Duration>| {
        d.map(|d| format!("{:.0} ms", d.as_secs_f64() * 1e3))
            .unwrap_or_else(|| "-".into())
    };
    let first_error = outcomes
        .iter()
        .flat_map(|o| o.errors.iter())
        .next()
        .map(|e| format!(" (first: {e})"))
        .unwrap_or_default();
    let acked: u64 = outcomes.iter().map(|o| o.acked).sum();
    let mut notes = format!(
        "shipped in {:.1} s ({:.0} events/s); collector peak RSS {} (idle {}); {} searches during the load: p50 {}, p99 {}, max {} (slowest began at {}; idle p50 {}, max {}); TLS connect + Welcome p50 {}, max {}; {retries} reconnects{first_error}; {acked} events acked; {} certificates issued in {:.1} s",
        shipped_in.as_secs_f64(),
        sent as f64 / shipped_in.as_secs_f64().max(1e-3),
        mib(rss),
        mib(idle_rss),
        lat.len(),
        ms(p(0.5)),
        ms(p(0.99)),
        ms(lat.last().copied()),
        slowest
            .iter()
            .map(|(at, d)| format!("{:.1} s ({:.1} s)", at.as_secs_f64(), d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", "),
        ms(percentile(&idle, 0.5)),
        ms(idle.last().copied()),
        ms(connects.get(connects.len() / 2).copied()),
        ms(connects.last().copied()),
        names.len(),
        issued_in.as_secs_f64(),
    );
    if !problems.is_empty() {
        notes = format!("**{}**; {notes}", problems.join("; "));
    }
    collector.terminate();
    Ok(Row {
        scenario: format!("{} concurrent agent streams", load.agents),
        injected: format!(
            "{} agents, each its own certificate and mTLS connection, ship {} × {} events at once; an investigator searches every 100 ms",
            load.agents, load.batches, load.per_batch
        ),
        sent,
        stored,
        duplicated,
        lost: sent.saturating_sub(stored),
        notes,
        failure: (!problems.is_empty()).then(|| problems.join("; ")),
    })
}

/// Every agent in `names` ships its events at once, each on its own
/// connection, `pause` between batches; the outcomes of the streams that
/// finished and a line for each that gave up.
pub(super) async fn ship_all(
    env: &Env,
    names: &[String],
    tag: &'static str,
    load: Load,
    pause: Duration,
) -> anyhow::Result<(Vec<StreamOutcome>, Vec<String>)> {
    let ca = std::fs::read(env.pki().join("ca.pem"))?;
    let mut streams = tokio::task::JoinSet::new();
    for name in names {
        let (cert, key) = (
            std::fs::read(env.pki().join(format!("agent-{name}.pem")))?,
            std::fs::read(env.pki().join(format!("agent-{name}.key")))?,
        );
        let (ca, name, port) = (ca.clone(), name.clone(), env.grpc);
        streams.spawn(async move {
            let r = agent_stream(port, &ca, &cert, &key, &name, tag, load, pause).await;
            (name, r)
        });
    }
    let mut outcomes = Vec::new();
    let mut failed_streams = Vec::new();
    while let Some(j) = streams.join_next().await {
        match j {
            Ok((_, Ok(o))) => outcomes.push(o),
            Ok((name, Err(e))) => failed_streams.push(format!("{name}: {e:#}")),
            Err(e) => failed_streams.push(format!("task: {e}")),
        }
    }
    Ok((outcomes, failed_streams))
}

/// The event ids `names` ship under `load` (agent id = stream id = name).
pub(super) fn expected_ids(names: &[String], load: Load) -> HashSet<String> {
    names
        .iter()
        .flat_map(|n| {
            (1..=(load.batches * load.per_batch) as u64).map(move |s| format!("{n}/{n}/{s}"))
        })
        .collect()
}

/// Issues `n` agent certificates in-process with the same code as
/// `kiroku certs issue` (spawning the CLI 1,000 times takes minutes in a
/// debug build), spread over the blocking pool.
pub(super) async fn issue_agents(env: &Env, prefix: &str, n: usize) -> anyhow::Result<Vec<String>> {
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}{i:04}")).collect();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in names.chunks(n.div_ceil(threads).max(1)) {
        let (pki, chunk) = (PkiDir::new(env.pki()), chunk.to_vec());
        tasks.spawn_blocking(move || -> anyhow::Result<()> {
            for name in chunk {
                pki.issue(Role::Agent, &name, &[], 30)
                    .with_context(|| format!("issuing agent {name}"))?;
            }
            Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(names)
}

fn mib(bytes: Option<u64>) -> String {
    bytes
        .map(|r| format!("{:.0} MiB", r as f64 / (1 << 20) as f64))
        .unwrap_or_else(|| "unknown".into())
}

/// The `q` quantile of sorted durations.
fn percentile(sorted: &[Duration], q: f64) -> Option<Duration> {
    sorted
        .get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
}

fn search(tag: &str) -> SearchRequest {
    SearchRequest {
        subject: tag.into(),
        page_size: 10,
        ..Default::default()
    }
}

/// `n` searches one after the other on an idle collector, sorted.
async fn query_latencies(env: &Env, tag: &str, n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut inv = env.investigator().await?;
    let mut lat = Vec::new();
    for _ in 0..n {
        let t0 = Instant::now();
        inv.search(search(tag)).await?;
        lat.push(t0.elapsed());
    }
    lat.sort();
    Ok(lat)
}

/// The investigator's client, like [`Env::investigator`] but without an
/// `Env` (for the querier's own thread).
async fn investigator(port: u16, pki: &std::path::Path) -> anyhow::Result<QueryClient<Channel>> {
    let ca = std::fs::read(pki.join("ca.pem"))?;
    let cert = std::fs::read(pki.join("investigator-inv.pem"))?;
    let key = std::fs::read(pki.join("investigator-inv.key"))?;
    Ok(QueryClient::new(connect(port, &ca, &cert, &key).await?))
}

/// Peak resident set size of a process (VmHWM), in bytes.
pub fn vm_hwm(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// (stored once, duplicated, not sent) for the events of this run.
pub(super) async fn stored_events(
    env: &Env,
    tag: &str,
    expected: &HashSet<String>,
) -> anyhow::Result<(usize, usize, usize)> {
    let mut seen = HashSet::new();
    let (mut duplicated, mut unexpected) = (0, 0);
    for e in env.search_all(super::tagged_mail(tag)).await? {
        if !expected.contains(&e.event_id) {
            unexpected += 1;
        } else if !seen.insert(e.event_id) {
            duplicated += 1;
        }
    }
    Ok((seen.len(), duplicated, unexpected))
}

/// A channel of its own (one TLS connection) for one agent.
async fn connect(port: u16, ca: &[u8], cert: &[u8], key: &[u8]) -> anyhow::Result<Channel> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost")
        .identity(Identity::from_pem(cert, key));
    Ok(Endpoint::from_shared(format!("https://127.0.0.1:{port}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(60))
        .connect()
        .await?)
}

fn event(name: &str, seq: u64, tag: &str) -> Event {
    Event {
        stream_id: name.into(),
        seq,
        observed_at_ms: kiroku_common::now_ms(),
        kind: Some(Kind::Email(EmailEvent {
            operation: "send".into(),
            direction: "outbound".into(),
            protocol: "ESMTP".into(),
            mail_from: format!("{name}@corp.example"),
            to: vec!["partner@example.org".into()],
            subject: format!("{tag} {name} m{seq}"),
            message_id: format!("<{name}-{seq}@overload.test>"),
            body_text: format!("quarterly figures, part {seq}, from {name}"),
            message_size: 2048,
            recipient_count: 1,
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// One agent: Hello, then its batches one at a time, each acknowledged
/// before the next; reconnects and resumes from `stored_seq` on failure.
#[allow(clippy::too_many_arguments)]
async fn agent_stream(
    port: u16,
    ca: &[u8],
    cert: &[u8],
    key: &[u8],
    name: &str,
    tag: &str,
    load: Load,
    pause: Duration,
) -> anyhow::Result<StreamOutcome> {
    let mut out = StreamOutcome::default();
    let last = (load.batches * load.per_batch) as u64;
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            out.retries += 1;
            tokio::time::sleep(Duration::from_millis(200 * attempt as u64)).await;
        }
        let t0 = Instant::now();
        match ship_once(port, ca, cert, key, name, tag, load, last, pause, &mut out).await {
            Ok(()) => return Ok(out),
            Err(e) => {
                if out.errors.len() < 3 {
                    out.errors
                        .push(format!("{e:#} after {:.1} s", t0.elapsed().as_secs_f64()));
                }
            }
        }
    }
    anyhow::bail!(
        "gave up after {ATTEMPTS} attempts: {}",
        out.errors.join(" | ")
    )
}

/// One connection's worth of shipping, until everything is acked.
#[allow(clippy::too_many_arguments)]
async fn ship_once(
    port: u16,
    ca: &[u8],
    cert: &[u8],
    key: &[u8],
    name: &str,
    tag: &str,
    load: Load,
    last: u64,
    pause: Duration,
    out: &mut StreamOutcome,
) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let ch = connect(port, ca, cert, key).await.context("connect")?;
    let (tx, rx) = mpsc::channel(2);
    tx.send(ShipRequest {
        msg: Some(ship_request::Msg::Hello(Hello {
            stream_id: name.into(),
            agent_version: "overload".into(),
            ..Default::default()
        })),
    })
    .await?;
    let mut responses = IngestClient::new(ch)
        .ship(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .context("Ship")?
        .into_inner();
    let mut next = match responses.message().await.context("Welcome")? {
        Some(ShipResponse {
            msg: Some(ship_response::Msg::Welcome(w)),
        }) => w.stored_seq + 1,
        other => anyhow::bail!("expected Welcome, got {other:?}"),
    };
    if out.connect.is_zero() {
        out.connect = t0.elapsed();
    }
    while next <= last {
        if !pause.is_zero() && next > 1 {
            tokio::time::sleep(pause).await;
        }
        let upto = (next + load.per_batch as u64 - 1).min(last);
        let events = (next..=upto).map(|s| event(name, s, tag)).collect();
        tx.send(ShipRequest {
            msg: Some(ship_request::Msg::Batch(Batch {
                events,
                ..Default::default()
            })),
        })
        .await
        .context("sending a batch")?;
        loop {
            match responses.message().await.context("waiting for the ack")? {
                Some(ShipResponse {
                    msg: Some(ship_response::Msg::Ack(a)),
                }) => {
                    out.acked += u64::from(a.stored + a.duplicates);
                    next = a.stored_seq + 1;
                    break;
                }
                Some(_) => continue,
                None => anyhow::bail!("stream ended before the ack"),
            }
        }
    }
    Ok(())
}
