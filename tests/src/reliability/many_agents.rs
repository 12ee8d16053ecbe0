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
/// A search during the load slower than this at p99 fails the run
/// (starvation of the query service). Debug builds on 2 shared cores.
const QUERY_P99_LIMIT: Duration = Duration::from_secs(5);
/// Attempts per stream before it gives up (a reconnect after a failure).
const ATTEMPTS: usize = 5;

/// What one agent stream reports.
#[derive(Default)]
struct StreamOutcome {
    /// Attempts beyond the first (the stream or connection failed).
    retries: usize,
    /// Errors seen on failed attempts (first few, for the notes).
    errors: Vec<String>,
    /// Events acknowledged (stored + duplicates).
    acked: u64,
    connect: Duration,
}

pub async fn run(env: &Env, load: Load) -> anyhow::Result<Row> {
    let tag = "relmanyagents";
    let started = Instant::now();
    let names = issue_agents(env, load.agents).await?;
    let issued_in = started.elapsed();
    let mut collector = env.start_collector()?;
    let pid = collector.pid();
    let ca = std::fs::read(env.pki().join("ca.pem"))?;

    // The investigator connects before the load and keeps asking.
    let mut inv = env.investigator().await?;
    let stop = Arc::new(AtomicBool::new(false));
    let query_errors = Arc::new(AtomicUsize::new(0));
    let querier = {
        let (stop, query_errors) = (stop.clone(), query_errors.clone());
        tokio::spawn(async move {
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let res = tokio::time::timeout(
                    Duration::from_secs(30),
                    inv.search(SearchRequest {
                        subject: tag.into(),
                        page_size: 10,
                        ..Default::default()
                    }),
                )
                .await;
                match res {
                    Ok(Ok(_)) => lat.push(t0.elapsed()),
                    _ => {
                        query_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            lat
        })
    };

    let load_started = Instant::now();
    let mut streams = tokio::task::JoinSet::new();
    for name in &names {
        let (cert, key) = (
            std::fs::read(env.pki().join(format!("agent-{name}.pem")))?,
            std::fs::read(env.pki().join(format!("agent-{name}.key")))?,
        );
        let (ca, name, port) = (ca.clone(), name.clone(), env.grpc);
        streams.spawn(async move {
            let r = agent_stream(port, &ca, &cert, &key, &name, tag, load).await;
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
    let shipped_in = load_started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut lat = querier.await.unwrap_or_default();
    lat.sort();

    // Exactly once, by event id.
    let expected: HashSet<String> = names
        .iter()
        .flat_map(|n| {
            (1..=(load.batches * load.per_batch) as u64).map(move |s| format!("{n}/{n}/{s}"))
        })
        .collect();
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
        problems.push(format!("collector peak RSS over {} MiB", RSS_LIMIT_BYTES >> 20));
    }
    let p = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
            .copied()
    };
    if lat.is_empty() || p(0.99).is_some_and(|d| d > QUERY_P99_LIMIT) {
        problems.push(format!(
            "queries starved (p99 over {} s, or none answered)",
            QUERY_P99_LIMIT.as_secs()
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
        "shipped in {:.1} s ({:.0} events/s); collector peak RSS {}; {} searches during the load: p50 {}, p99 {}, max {}; TLS connect + Welcome p50 {}, max {}; {retries} reconnects{first_error}; {acked} events acked; {} certificates issued in {:.1} s",
        shipped_in.as_secs_f64(),
        sent as f64 / shipped_in.as_secs_f64().max(1e-3),
        rss.map(|r| format!("{:.0} MiB", r as f64 / (1 << 20) as f64))
            .unwrap_or_else(|| "unknown".into()),
        lat.len(),
        ms(p(0.5)),
        ms(p(0.99)),
        ms(lat.last().copied()),
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

/// Issues `n` agent certificates in-process with the same code as
/// `kiroku certs issue` (spawning the CLI 1,000 times takes minutes in a
/// debug build), spread over the blocking pool.
async fn issue_agents(env: &Env, n: usize) -> anyhow::Result<Vec<String>> {
    let names: Vec<String> = (0..n).map(|i| format!("many{i:04}")).collect();
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
async fn stored_events(
    env: &Env,
    tag: &str,
    expected: &HashSet<String>,
) -> anyhow::Result<(usize, usize, usize)> {
    let mut q = env.investigator().await?;
    let mut stream = q
        .search_stream(SearchRequest {
            subject: tag.into(),
            kind: "email".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut seen = HashSet::new();
    let (mut duplicated, mut unexpected) = (0, 0);
    while let Some(e) = stream.message().await? {
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
async fn agent_stream(
    port: u16,
    ca: &[u8],
    cert: &[u8],
    key: &[u8],
    name: &str,
    tag: &str,
    load: Load,
) -> anyhow::Result<StreamOutcome> {
    let mut out = StreamOutcome::default();
    let last = (load.batches * load.per_batch) as u64;
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            out.retries += 1;
            tokio::time::sleep(Duration::from_millis(200 * attempt as u64)).await;
        }
        let t0 = Instant::now();
        match ship_once(port, ca, cert, key, name, tag, load, last, &mut out).await {
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
        let upto = (next + load.per_batch as u64 - 1).min(last);
        let events = (next..=upto).map(|s| event(name, s, tag)).collect();
        tx.send(ShipRequest {
            msg: Some(ship_request::Msg::Batch(Batch { events })),
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
