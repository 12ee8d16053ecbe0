//! Hostile bytes on the collector's gRPC port while real agents ship:
//! random garbage, a plain HTTP/1.1 request, an HTTP/2 preface without
//! TLS, a TLS ClientHello followed by garbage, and — after a valid mTLS
//! handshake — HTTP/1.1 instead of HTTP/2, random bytes, and garbage
//! HTTP/2 frames; beside them connections that never finish: TCP that
//! says nothing, a ClientHello and then silence, a finished mTLS handshake
//! and then silence. Each is closed (the unfinished ones after the
//! handshake timeout), never answered in plain text, and logged with the
//! peer address; the collector keeps serving (every event of the agents
//! stored exactly once, searches answer), and file descriptors and threads
//! come back to where they were.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiroku_proto::SearchRequest;
use rand::Rng;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Row;
use super::many_agents::{self, Load};
use crate::Env;

/// The collector's handshake timeout (`collector/src/listener.rs`).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A refused connection must be closed within this.
const CLOSE_WITHIN: Duration = Duration::from_secs(15);
/// Connections that never finish, of each silent kind.
const SILENT_EACH: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Probe {
    Garbage,
    Http1Plain,
    H2PrefaceWithoutTls,
    ClientHelloThenGarbage,
    Http1AfterMtls,
    GarbageAfterMtls,
    GarbageH2FramesAfterMtls,
    /// TCP connect, then nothing.
    Silent,
    /// A ClientHello, then nothing (a handshake never finished).
    ClientHelloThenSilence,
    /// A complete mTLS handshake, then nothing (no HTTP/2 preface).
    SilentAfterMtls,
}

/// The probes that are refused at once.
pub const FAST: [Probe; 7] = [
    Probe::Garbage,
    Probe::Http1Plain,
    Probe::H2PrefaceWithoutTls,
    Probe::ClientHelloThenGarbage,
    Probe::Http1AfterMtls,
    Probe::GarbageAfterMtls,
    Probe::GarbageH2FramesAfterMtls,
];
/// The probes cut by a timeout.
pub const SILENT: [Probe; 3] = [
    Probe::Silent,
    Probe::ClientHelloThenSilence,
    Probe::SilentAfterMtls,
];

const HTTP1: &[u8] =
    b"GET /kiroku.v1.Query/Search HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n";
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame.
const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

fn garbage(n: usize) -> Vec<u8> {
    let mut rng = rand::rng();
    (0..n).map(|_| rng.random()).collect()
}

/// HTTP/2 frames with random types, flags, stream ids and payloads (each
/// complete, so the server never waits for the rest of one; never a
/// GOAWAY, which would end the connection politely), then a DATA frame on
/// stream 0, which is a connection error whatever came before.
fn garbage_frames() -> Vec<u8> {
    let mut rng = rand::rng();
    let mut out = Vec::new();
    for _ in 0..rng.random_range(1..20) {
        let len: usize = rng.random_range(0..256);
        let kind = loop {
            let k: u8 = rng.random();
            if k != 7 {
                break k;
            }
        };
        out.extend_from_slice(&[0, (len >> 8) as u8, len as u8, kind, rng.random()]);
        out.extend_from_slice(&rng.random::<u32>().to_be_bytes());
        out.extend(garbage(len));
    }
    out.extend_from_slice(&[0, 0, 4, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
    out
}

/// What the client saw: bytes the server sent, and whether (and when) it
/// closed the connection.
#[derive(Debug)]
pub struct Seen {
    pub probe: Probe,
    pub local: SocketAddr,
    pub bytes: Vec<u8>,
    pub closed_after: Option<Duration>,
}

/// Reads until the server closes (EOF or reset) or `within` passes.
async fn until_closed<S: AsyncRead + Unpin>(
    s: &mut S,
    within: Duration,
) -> (Vec<u8>, Option<Duration>) {
    let t0 = Instant::now();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = within.saturating_sub(t0.elapsed());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (bytes, Some(t0.elapsed())),
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
            Err(_) => return (bytes, None),
        }
    }
}

/// TLS clients with the agent certificate `name`: one offering `h2` by
/// ALPN (as gRPC clients do), one offering nothing (as an HTTP/1.1
/// client).
pub struct Clients {
    pub h2: Arc<rustls::ClientConfig>,
    pub plain: Arc<rustls::ClientConfig>,
}

impl Clients {
    pub fn new(env: &Env, name: &str) -> anyhow::Result<Clients> {
        let pki = env.pki();
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(pki.join("ca.pem"))? {
            roots.add(c?)?;
        }
        let cfg = rustls::ClientConfig::builder_with_provider(
            rustls::crypto::ring::default_provider().into(),
        )
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(
            CertificateDer::pem_file_iter(pki.join(format!("agent-{name}.pem")))?
                .collect::<Result<_, _>>()?,
            PrivateKeyDer::from_pem_file(pki.join(format!("agent-{name}.key")))?,
        )?;
        let mut h2 = cfg.clone();
        h2.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Clients {
            h2: Arc::new(h2),
            plain: Arc::new(cfg),
        })
    }

    fn for_probe(&self, p: Probe) -> Arc<rustls::ClientConfig> {
        match p {
            Probe::Http1AfterMtls => self.plain.clone(),
            _ => self.h2.clone(),
        }
    }
}

/// A TLS ClientHello as a real client would send it first.
fn client_hello(cfg: Arc<rustls::ClientConfig>) -> anyhow::Result<Vec<u8>> {
    let mut c = rustls::ClientConnection::new(cfg, ServerName::try_from("localhost")?.to_owned())?;
    let mut out = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut out)?;
    }
    Ok(out)
}

/// Runs one probe against 127.0.0.1:`port`.
pub async fn probe(port: u16, p: Probe, clients: &Clients) -> anyhow::Result<Seen> {
    let tls = clients.for_probe(p);
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let local = tcp.local_addr()?;
    let silent_within = HANDSHAKE_TIMEOUT * 2;
    // A write may fail once the server has cut the connection: what
    // counts is what the client sees afterwards.
    let (bytes, closed_after) = match p {
        Probe::Garbage => {
            let _ = tcp.write_all(&garbage(4096)).await;
            until_closed(&mut tcp, CLOSE_WITHIN).await
        }
        Probe::Http1Plain => {
            let _ = tcp.write_all(HTTP1).await;
            until_closed(&mut tcp, CLOSE_WITHIN).await
        }
        Probe::H2PrefaceWithoutTls => {
            let _ = tcp.write_all(&[PREFACE, SETTINGS].concat()).await;
            until_closed(&mut tcp, CLOSE_WITHIN).await
        }
        Probe::ClientHelloThenGarbage => {
            let hello = client_hello(tls)?;
            let _ = tcp.write_all(&[hello, garbage(2048)].concat()).await;
            until_closed(&mut tcp, CLOSE_WITHIN).await
        }
        Probe::Silent => until_closed(&mut tcp, silent_within).await,
        Probe::ClientHelloThenSilence => {
            let _ = tcp.write_all(&client_hello(tls)?).await;
            until_closed(&mut tcp, silent_within).await
        }
        Probe::Http1AfterMtls
        | Probe::GarbageAfterMtls
        | Probe::GarbageH2FramesAfterMtls
        | Probe::SilentAfterMtls => {
            let mut tls = tokio_rustls::TlsConnector::from(tls)
                .connect(ServerName::try_from("localhost")?.to_owned(), tcp)
                .await?;
            let payload = match p {
                Probe::Http1AfterMtls => HTTP1.to_vec(),
                Probe::GarbageAfterMtls => garbage(4096),
                // A valid start, then frames of random bytes.
                Probe::GarbageH2FramesAfterMtls => [PREFACE, SETTINGS, &garbage_frames()].concat(),
                _ => Vec::new(),
            };
            if !payload.is_empty() {
                let _ = tls.write_all(&payload).await;
                let _ = tls.flush().await;
            }
            let within = if p == Probe::SilentAfterMtls {
                silent_within
            } else {
                CLOSE_WITHIN
            };
            until_closed(&mut tls, within).await
        }
    };
    Ok(Seen {
        probe: p,
        local,
        bytes,
        closed_after,
    })
}

/// What is wrong with how the server treated one probe, if anything.
pub fn judge(seen: &Seen) -> Option<String> {
    let p = seen.probe;
    let Some(closed) = seen.closed_after else {
        return Some(format!("{p:?}: the connection was never closed"));
    };
    if SILENT.contains(&p) {
        if closed < HANDSHAKE_TIMEOUT - Duration::from_secs(1) {
            return Some(format!(
                "{p:?}: cut after {closed:?}, before the handshake timeout"
            ));
        }
    } else if closed >= CLOSE_WITHIN {
        return Some(format!("{p:?}: took {closed:?} to close"));
    }
    // Never an answer in plain text: no HTTP/1.1 response, no HTTP/2
    // frames outside TLS (a TLS alert record, 0x15, is fine).
    if seen.bytes.starts_with(b"HTTP/") {
        return Some(format!(
            "{p:?}: answered in plain HTTP: {:?}",
            String::from_utf8_lossy(&seen.bytes)
        ));
    }
    if matches!(
        p,
        Probe::Garbage | Probe::Http1Plain | Probe::H2PrefaceWithoutTls | Probe::Silent
    ) && !(seen.bytes.is_empty() || seen.bytes[0] == 0x15)
    {
        return Some(format!(
            "{p:?}: something other than a TLS alert came back: {:02x?}",
            &seen.bytes[..seen.bytes.len().min(32)]
        ));
    }
    None
}

pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

pub fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Whether the log has a line refusing or closing the connection from
/// `local`.
fn logged(log: &str, local: SocketAddr) -> bool {
    let needle = format!("peer={local}");
    log.lines()
        .any(|l| l.contains(&needle) && (l.contains("refused") || l.contains("closing")))
}

/// Refused handshakes the log counts in summaries instead of one by one
/// (`not_logged=N`).
fn summarised(log: &str) -> usize {
    log.lines()
        .filter_map(|l| l.split("not_logged=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<usize>().ok())
        .sum()
}

/// Log phrases that name what happened (checked once each kind ran).
const NAMED: [(&str, &str); 4] = [
    (
        "not HTTP/2 after the TLS handshake",
        "HTTP/1.1 or garbage inside TLS",
    ),
    ("HTTP/2 protocol error", "garbage HTTP/2 frames"),
    ("no TLS handshake within", "a silent connection"),
    (
        "no HTTP/2 preface within",
        "a silent connection after the handshake",
    ),
];

/// The scenario: `connections` hostile connections (the fast kinds in
/// turn, 20 at a time) and `SILENT_EACH` of each kind that never finishes,
/// while 20 agents ship 20 batches of 10 events, a batch every 250 ms.
pub async fn run(env: &Env, connections: usize) -> anyhow::Result<Row> {
    let tag = "relhostileport";
    env.issue("agent", "hostile", &[])?;
    let clients = Arc::new(Clients::new(env, "hostile")?);
    let names = many_agents::issue_agents(env, "legit", 20).await?;
    let load = Load {
        agents: names.len(),
        batches: 20,
        per_batch: 10,
    };
    let mut collector = env.start_collector()?;
    let pid = collector.pid();
    // Let the connection of `wait_port` be refused and forgotten.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (fds_before, threads_before) = (open_fds(pid), threads(pid));

    let legit = many_agents::ship_all(env, &names, tag, load, Duration::from_millis(250));
    let silent = {
        let mut set = tokio::task::JoinSet::new();
        for p in SILENT {
            for _ in 0..SILENT_EACH {
                let (port, clients) = (env.grpc, clients.clone());
                set.spawn(async move { probe(port, p, &clients).await });
            }
        }
        set
    };
    let hostile = async {
        let mut seen = Vec::new();
        let mut peak_fds = 0;
        let mut query_ms = Vec::new();
        let mut inv = env.investigator().await?;
        let started = Instant::now();
        for round in 0..connections.div_ceil(20) {
            let mut set = tokio::task::JoinSet::new();
            for i in 0..20.min(connections - round * 20) {
                let p = FAST[(round * 20 + i) % FAST.len()];
                let (port, clients) = (env.grpc, clients.clone());
                set.spawn(async move { probe(port, p, &clients).await });
            }
            peak_fds = peak_fds.max(open_fds(pid));
            while let Some(r) = set.join_next().await {
                seen.push(r??);
            }
            let t0 = Instant::now();
            inv.search(SearchRequest {
                subject: tag.into(),
                page_size: 10,
                ..Default::default()
            })
            .await?;
            query_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        anyhow::Ok((seen, peak_fds, query_ms, started.elapsed()))
    };
    let ((outcomes, failed_streams), (mut seen, peak_fds, query_ms, hostile_took)) =
        tokio::try_join!(legit, hostile)?;
    let mut peak_fds = peak_fds.max(open_fds(pid));
    let silent_peak_threads = threads(pid);
    let mut silent = silent;
    while let Some(r) = silent.join_next().await {
        seen.push(r??);
    }

    let mut problems: Vec<String> = seen.iter().filter_map(judge).collect();
    // Refusals are logged with the peer address, after the peer saw the
    // close; past 1,000 refused handshakes a minute the collector counts
    // the rest into one summary line, written when the minute is over.
    let deadline = Instant::now() + Duration::from_secs(70);
    let (log, unlogged) = loop {
        let log = collector.log_text();
        let unlogged: Vec<&Seen> = seen.iter().filter(|s| !logged(&log, s.local)).collect();
        if unlogged.len() <= summarised(&log) || Instant::now() >= deadline {
            break (log, unlogged);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    if let Some(s) = unlogged
        .first()
        .filter(|_| summarised(&log) < unlogged.len())
    {
        problems.push(format!(
            "{} refusals not logged with the peer address, e.g. {:?} from {}",
            unlogged.len(),
            s.probe,
            s.local
        ));
    }
    for (phrase, what) in NAMED {
        if !log.contains(phrase) {
            problems.push(format!("the log does not name {what} (\"{phrase}\")"));
        }
    }
    if log.contains("panicked") {
        problems.push("the collector panicked".into());
    }
    if !collector.is_running() {
        problems.push("the collector died".into());
    }
    // The server side of a closed connection goes away a moment later.
    let mut fds_after = open_fds(pid);
    for _ in 0..50 {
        if fds_after <= fds_before + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        fds_after = open_fds(pid);
    }
    peak_fds = peak_fds.max(fds_after);
    let threads_after = threads(pid);
    if fds_after > fds_before + 2 {
        problems.push(format!(
            "file descriptors leak: {fds_before} before, {fds_after} after"
        ));
    }
    if !failed_streams.is_empty() {
        problems.push(format!(
            "{} agent streams gave up, e.g. {}",
            failed_streams.len(),
            failed_streams[0]
        ));
    }
    let expected = many_agents::expected_ids(&names, load);
    let (stored, duplicated, unexpected) = many_agents::stored_events(env, tag, &expected).await?;
    if unexpected > 0 {
        problems.push(format!("{unexpected} events stored that nobody sent"));
    }
    let retries: usize = outcomes.iter().map(|o| o.retries).sum();
    let mut by_kind = std::collections::BTreeMap::new();
    for s in &seen {
        *by_kind.entry(format!("{:?}", s.probe)).or_insert(0usize) += 1;
    }
    let mut fast_close: Vec<Duration> = seen
        .iter()
        .filter(|s| FAST.contains(&s.probe))
        .filter_map(|s| s.closed_after)
        .collect();
    fast_close.sort();
    let silent_cut: Vec<f64> = seen
        .iter()
        .filter(|s| SILENT.contains(&s.probe))
        .filter_map(|s| s.closed_after.map(|d| d.as_secs_f64()))
        .collect();
    let mut query_sorted = query_ms.clone();
    query_sorted.sort_by(f64::total_cmp);
    let mut notes = format!(
        "{} hostile connections in {:.1} s ({}); refused ones closed in p50 {:.1} ms, max {:.1} ms; silent ones cut after {:.1}–{:.1} s; collector fds {fds_before} before, peak {peak_fds}, after {fds_after}; threads {threads_before} before, {silent_peak_threads} with the silent ones open, {threads_after} after; {} searches between rounds: p50 {:.0} ms, max {:.0} ms; {retries} agent reconnects",
        seen.len(),
        hostile_took.as_secs_f64(),
        by_kind
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", "),
        fast_close
            .get(fast_close.len() / 2)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3),
        fast_close.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        silent_cut.iter().copied().fold(f64::INFINITY, f64::min),
        silent_cut.iter().copied().fold(0.0, f64::max),
        query_sorted.len(),
        query_sorted
            .get(query_sorted.len() / 2)
            .copied()
            .unwrap_or(0.0),
        query_sorted.last().copied().unwrap_or(0.0),
    );
    if !problems.is_empty() {
        notes = format!("**{}**; {notes}", problems.join("; "));
    }
    collector.terminate();
    let sent = expected.len();
    Ok(Row {
        scenario: "hostile bytes on the gRPC port".into(),
        injected: format!(
            "{connections} connections of garbage, HTTP/1.1, HTTP/2 without TLS, ClientHello + garbage, and inside mTLS HTTP/1.1, random bytes, garbage frames; {} that never finish (silent TCP, ClientHello then silence, mTLS then silence); while {} agents ship",
            SILENT.len() * SILENT_EACH,
            names.len()
        ),
        sent,
        stored,
        duplicated,
        lost: sent.saturating_sub(stored),
        notes,
        failure: (!problems.is_empty()).then(|| problems.join("; ")),
    })
}
