//! Ingest, footprint and storage benchmark (issue 6, parts 1, 2, 4, 5).
//! Real collector process, release build, fresh temp dirs, loopback only.
//!
//! 1. Ingest end to end. (a) N simulated agents (distinct agent
//!    certificates, one `Ingest.Ship` stream each, batches exactly as the
//!    agent's shipper builds them: ≤ 10,000 events and ≤ 8 MiB, zstd, one
//!    batch outstanding, missing blobs uploaded before their batch, up to
//!    8 at once; `--batch-events`, `--batch-mib`, `--uploads-in-flight`
//!    give the figures before issue 6: 1,000, 2, 1) for
//!    small file events, 10 KB mails and 1 MB mails with an attachment;
//!    time from the first batch to the last acknowledgement (an ack means
//!    stored, indexed, committed and searchable). A probe agent ships one
//!    event every 100 ms during the load: creation → ack, each then checked
//!    with `GetEvent`. (b) A real agent's buffer: mail captured while the
//!    collector is down, then the collector started and the drain timed
//!    until all mail is searchable.
//! 2. Agent footprint: RSS and CPU of a real, idle agent; CPU at a paced
//!    100 mails/s through its capture-only SMTP listener.
//! 4. Storage: bytes on disk per event kind (the collector's data dir after
//!    each ingest run) and one attachment in many different mails.
//! 5. rsyslog (`rsyslogd` + `rsyslog-gnutls`) side by side: the same number
//!    of ~300 B events forwarded over TLS with a disk-assisted queue.
//!
//! Run: `scripts/bench-ingest.sh` (builds release first); `--tiny` is the
//! CI size (tests/tests/bench_ingest.rs).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use clap::Parser;
use futures::StreamExt;
use kiroku_proto::ingest_client::IngestClient;
use kiroku_proto::{
    Attachment, Batch, BlobChunk, EmailEvent, Event, FileEvent, GetEventRequest, Hello,
    HostIdentity, ListHostsRequest, MissingBlobsRequest, Recipient, SearchRequest, ShipRequest,
    event::Kind, ship_request, ship_response,
};
use kiroku_tests::{Env, Mode, Proc, bin, free_port, load};
use prost::Message;
use rand::{Rng, SeedableRng, rngs::StdRng};
use sha2::Digest;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

// Beside this file rather than in src/bin/, where cargo would take it for
// a binary of its own.
#[path = "kiroku-bench-ingest/docs.rs"]
mod docs;

/// Another build of the collector to run (`--collector-exe`), to compare
/// before and after a change side by side.
static COLLECTOR_EXE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Blob uploads in flight per simulated agent (`--uploads-in-flight`).
static UPLOADS_IN_FLIGHT: AtomicUsize = AtomicUsize::new(8);
const BLOB_CHUNK: usize = 1024 * 1024;

#[derive(Parser)]
struct Args {
    /// CI size: a few events of each kind, short idle, runs in seconds.
    #[arg(long)]
    tiny: bool,
    /// Small file events per ingest run.
    #[arg(long, default_value_t = 200_000)]
    small: usize,
    /// 10 KB mails per ingest run.
    #[arg(long, default_value_t = 5_000)]
    mails_10k: usize,
    /// 1 MB mails per ingest run.
    #[arg(long, default_value_t = 200)]
    mails_1m: usize,
    /// Simulated agent counts, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 10, 100])]
    agents: Vec<usize>,
    /// Kinds to ingest, comma separated: small, mail10k, mail1m.
    #[arg(long, value_delimiter = ',', default_values_t = ["small".to_owned(), "mail10k".to_owned(), "mail1m".to_owned()])]
    kinds: Vec<String>,
    /// Sections to run, comma separated: ingest, drain, footprint, dedup,
    /// rsyslog.
    #[arg(long, value_delimiter = ',', default_values_t = ["ingest".to_owned(), "drain".to_owned(), "footprint".to_owned(), "dedup".to_owned(), "rsyslog".to_owned()])]
    sections: Vec<String>,
    /// Mails captured by the real agent while the collector is down.
    #[arg(long, default_value_t = 5_000)]
    drain_mails: usize,
    /// Idle measurement of the real agent, seconds.
    #[arg(long, default_value_t = 60)]
    idle_secs: u64,
    /// Paced 100 mails/s run, seconds.
    #[arg(long, default_value_t = 30)]
    paced_secs: u64,
    /// Mails carrying the same attachment (dedup check).
    #[arg(long, default_value_t = 100)]
    dedup_mails: usize,
    /// Size of that attachment, MB.
    #[arg(long, default_value_t = 5)]
    dedup_mb: usize,
    /// Record the collector with `perf record -g` during each ingest run
    /// into this directory (one file per run).
    #[arg(long)]
    perf_dir: Option<PathBuf>,
    /// Events per batch of a simulated agent (the agent's shipper: 10,000;
    /// before issue 6: 1,000).
    #[arg(long, default_value_t = 10_000)]
    batch_events: usize,
    /// Encoded bytes per batch, MiB (the agent's shipper: 8; before: 2).
    #[arg(long, default_value_t = 8)]
    batch_mib: usize,
    /// Blob uploads in flight per simulated agent (the agent's shipper: 8;
    /// before issue 6: 1).
    #[arg(long, default_value_t = 8)]
    uploads_in_flight: usize,
    /// Keep the temp dir (logs, data dirs) and print its path.
    #[arg(long)]
    keep: bool,
    /// Run this collector executable instead of the one built beside the
    /// benchmark (an older build, for a before/after comparison).
    #[arg(long)]
    collector_exe: Option<PathBuf>,
}

impl Args {
    fn shrink_for_ci(&mut self) {
        self.small = 2_000;
        self.mails_10k = 100;
        self.mails_1m = 4;
        self.agents = vec![1, 3];
        self.drain_mails = 50;
        self.idle_secs = 2;
        self.paced_secs = 1;
        self.dedup_mails = 5;
        self.dedup_mb = 1;
    }

    fn limits(&self) -> BatchLimits {
        BatchLimits {
            events: self.batch_events.max(1),
            bytes: self.batch_mib.max(1) * 1024 * 1024,
        }
    }

    fn section(&self, name: &str) -> bool {
        self.sections.iter().any(|s| s == name)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum EventKind {
    Small,
    Mail10k,
    Mail1m,
    /// 1 MB mails carrying a real PDF and a real XLSX, different in every
    /// mail: what the collector's analysis (types, text) opens.
    Mail1mDocs,
}

impl EventKind {
    fn parse(s: &str) -> anyhow::Result<EventKind> {
        Ok(match s {
            "small" => EventKind::Small,
            "mail10k" => EventKind::Mail10k,
            "mail1m" => EventKind::Mail1m,
            "mail1m-docs" => EventKind::Mail1mDocs,
            other => bail!("unknown kind {other:?}: small, mail10k, mail1m or mail1m-docs"),
        })
    }

    fn label(self) -> &'static str {
        match self {
            EventKind::Small => "small file event",
            EventKind::Mail10k => "10 KB mail",
            EventKind::Mail1m => "1 MB mail + attachment",
            EventKind::Mail1mDocs => "1 MB mail + PDF + XLSX",
        }
    }
}

// ---------------------------------------------------------------- process

fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of a process, seconds (clock ticks of 10 ms).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Bytes on disk (allocated blocks, as `du`) and apparent bytes under `p`.
fn du(p: &Path) -> (u64, u64) {
    let mut disk = 0;
    let mut apparent = 0;
    let mut stack = vec![p.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                disk += m.blocks() * 512;
                apparent += m.len();
            }
        }
    }
    (disk, apparent)
}

fn quantile_ms(l: &[Duration], q: f64) -> f64 {
    let mut l = l.to_vec();
    l.sort();
    match l.len() {
        0 => f64::NAN,
        n => l[((n as f64 * q) as usize).min(n - 1)].as_secs_f64() * 1e3,
    }
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// `perf record` of one process until dropped (SIGINT so it writes).
struct Perf(Option<std::process::Child>);

impl Perf {
    fn start(dir: Option<&Path>, pid: u32, name: &str) -> Perf {
        let Some(dir) = dir else { return Perf(None) };
        let _ = std::fs::create_dir_all(dir);
        let child = Command::new("perf")
            .args(["record", "-F", "499", "-g", "-p", &pid.to_string(), "-o"])
            .arg(dir.join(format!("{name}.data")))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        match child {
            Ok(c) => {
                std::thread::sleep(Duration::from_millis(500));
                Perf(Some(c))
            }
            Err(e) => {
                eprintln!("perf not started: {e}");
                Perf(None)
            }
        }
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = Command::new("kill")
                .args(["-INT", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------- payloads

const WORDS: &[&str] = &[
    "quarterly",
    "report",
    "budget",
    "meeting",
    "review",
    "contract",
    "invoice",
    "customer",
    "delivery",
    "schedule",
    "project",
    "update",
    "the",
    "and",
    "for",
    "with",
    "please",
    "attached",
    "numbers",
    "forecast",
    "draft",
    "final",
    "revenue",
    "team",
    "office",
    "next",
    "week",
    "monday",
    "approval",
    "legal",
    "pricing",
    "offer",
    "summary",
    "notes",
    "action",
    "items",
    "regards",
];

/// Text of random words in CRLF lines of about 70 characters.
fn text(rng: &mut StdRng, len: usize) -> String {
    let mut s = String::with_capacity(len + 80);
    let mut line = 0;
    while s.len() < len {
        let w = WORDS[rng.random_range(0..WORDS.len())];
        s.push_str(w);
        line += w.len() + 1;
        if line > 70 {
            s.push_str("\r\n");
            line = 0;
        } else {
            s.push(' ');
        }
    }
    s
}

fn host(agent: usize) -> HostIdentity {
    HostIdentity {
        hostname: format!("pc-{agent:03}"),
        ..Default::default()
    }
}

/// A file event of about 300 bytes encoded, as file capture records a
/// closed, hashed file.
fn small_event(agent: usize, seq: u64) -> Event {
    let sha = kiroku_common::sha256_hex(format!("{agent}/{seq}").as_bytes());
    Event {
        stream_id: "bench".into(),
        seq,
        observed_at_ms: kiroku_common::now_ms(),
        clock_offset_known: true,
        host: Some(host(agent)),
        user: format!("user{agent:03}"),
        kind: Some(Kind::File(FileEvent {
            operation: "modify".into(),
            path: format!(
                "/home/user{agent:03}/Documents/projects/q{}/quarterly report {seq:08}.docx",
                seq % 4 + 1
            ),
            size: 20_000 + seq % 10_000,
            sha256: sha,
            mtime_ms: kiroku_common::now_ms(),
            volume: "/".into(),
            uid: 1000,
            pid: 4242,
            process: "soffice.bin".into(),
            exe: "/usr/lib/libreoffice/program/soffice.bin".into(),
            mechanism: "fanotify".into(),
            coalesced: 3,
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// A mail as the agent records it, and its raw message. `size` is the raw
/// size; `attachment` (if any) is attached base64-encoded.
fn mail_event(
    rng: &mut StdRng,
    agent: usize,
    seq: u64,
    size: usize,
    attachment: Option<&[u8]>,
) -> (Event, Vec<u8>) {
    let files = attachment.map(|a| ("contract.pdf", "application/pdf", a));
    mail_with_files(rng, agent, seq, size, files.as_slice())
}

/// A mail with these attachments (name, type, content), base64-encoded.
fn mail_with_files(
    rng: &mut StdRng,
    agent: usize,
    seq: u64,
    size: usize,
    files: &[(&str, &str, &[u8])],
) -> (Event, Vec<u8>) {
    let from = format!("user{agent:03}@corp.example");
    let to = format!(
        "partner{}@ext{}.example",
        rng.random_range(0..1000),
        seq % 7
    );
    let subject = text(rng, 40).replace("\r\n", " ");
    let message_id = format!("<bench-{agent}-{seq}-{}@corp.example>", rng.random::<u32>());
    let mut raw = format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: Mon, 23 Nov 2026 09:00:00 +0000\r\nMessage-ID: {message_id}\r\nMIME-Version: 1.0\r\n"
    );
    let mut attachments = Vec::new();
    let body;
    match files.first() {
        None => {
            body = text(rng, size.saturating_sub(raw.len() + 40));
            raw.push_str("Content-Type: text/plain; charset=utf-8\r\n\r\n");
            raw.push_str(&body);
            raw.push_str("\r\n");
        }
        Some(_) => {
            body = text(rng, 600);
            raw.push_str("Content-Type: multipart/mixed; boundary=\"BENCHBOUNDARY\"\r\n\r\n--BENCHBOUNDARY\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n");
            raw.push_str(&body);
            raw.push_str("\r\n");
            for (name, ctype, att) in files {
                let b64 = base64::engine::general_purpose::STANDARD.encode(att);
                raw.push_str(&format!("--BENCHBOUNDARY\r\nContent-Type: {ctype}\r\nContent-Disposition: attachment; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"));
                for line in b64.as_bytes().chunks(76) {
                    raw.push_str(std::str::from_utf8(line).unwrap_or_default());
                    raw.push_str("\r\n");
                }
                attachments.push(Attachment {
                    filename: (*name).into(),
                    content_type: (*ctype).into(),
                    size: att.len() as u64,
                    sha256: kiroku_common::sha256_hex(att),
                    inline: false,
                    ..Default::default()
                });
            }
            raw.push_str("--BENCHBOUNDARY--\r\n");
        }
    }
    let raw = raw.into_bytes();
    let e = Event {
        stream_id: "bench".into(),
        seq,
        observed_at_ms: kiroku_common::now_ms(),
        clock_offset_known: true,
        host: Some(host(agent)),
        user: format!("user{agent:03}"),
        kind: Some(Kind::Email(EmailEvent {
            operation: "send".into(),
            direction: "outbound".into(),
            protocol: "ESMTP".into(),
            helo: format!("pc-{agent:03}"),
            mail_from: from.clone(),
            rcpt_to: vec![Recipient {
                address: to.clone(),
                reply_code: 250,
                reply: "250 2.1.5 Ok".into(),
                ..Default::default()
            }],
            from: vec![from],
            to: vec![to],
            subject,
            date: "Mon, 23 Nov 2026 09:00:00 +0000".into(),
            message_id,
            body_text: body,
            attachment_count: attachments.len() as u32,
            attachments,
            message_size: raw.len() as u64,
            recipient_count: 1,
            client_ip: "127.0.0.1".into(),
            application: "thunderbird".into(),
            outcome: kiroku_proto::Outcome::Captured as i32,
            reply_code: 250,
            raw_sha256: kiroku_common::sha256_hex(&raw),
            ..Default::default()
        })),
        ..Default::default()
    };
    (e, raw)
}

/// What one simulated agent ships: its events and the raw blobs they name.
struct Load {
    events: Vec<Event>,
    blobs: HashMap<String, Vec<u8>>,
    /// Raw message bytes (mails) or encoded event bytes (file events).
    logical_bytes: u64,
}

fn make_load(kind: EventKind, agent: usize, n: usize) -> Load {
    let mut rng = StdRng::seed_from_u64(agent as u64 * 7919 + 1);
    let mut load = Load {
        events: Vec::with_capacity(n),
        blobs: HashMap::new(),
        logical_bytes: 0,
    };
    for i in 0..n {
        let seq = i as u64 + 1;
        match kind {
            EventKind::Small => {
                let e = small_event(agent, seq);
                load.logical_bytes += e.encoded_len() as u64;
                load.events.push(e);
            }
            EventKind::Mail10k | EventKind::Mail1m => {
                let att;
                let (size, attachment) = if kind == EventKind::Mail10k {
                    (10 * 1024, None)
                } else {
                    // Random bytes (incompressible, like a PDF or a zip):
                    // ~1 MB raw once base64-encoded.
                    att = (0..750 * 1024)
                        .map(|_| rng.random::<u8>())
                        .collect::<Vec<_>>();
                    (0, Some(att.as_slice()))
                };
                let (e, raw) = mail_event(&mut rng, agent, seq, size, attachment);
                load.logical_bytes += raw.len() as u64;
                load.blobs.insert(kiroku_common::sha256_hex(&raw), raw);
                load.events.push(e);
            }
            EventKind::Mail1mDocs => {
                // About 440 KB of PDF and 300 KB of XLSX: ~1 MB once
                // base64-encoded, with ~2,000 words of text each.
                let words: Vec<String> = (0..150).map(|_| text(&mut rng, 80)).collect();
                let pdf = docs::pdf(&mut rng, &words.join("\r\n"), 420 * 1024);
                let xlsx = match docs::xlsx(&mut rng, &words, 280 * 1024) {
                    Ok(x) => x,
                    Err(e) => panic!("building the benchmark's XLSX in memory: {e}"),
                };
                let files = [
                    ("forecast.pdf", "application/pdf", pdf.as_slice()),
                    (
                        "forecast.xlsx",
                        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                        xlsx.as_slice(),
                    ),
                ];
                let (e, raw) = mail_with_files(&mut rng, agent, seq, 0, &files);
                load.logical_bytes += raw.len() as u64;
                load.blobs.insert(kiroku_common::sha256_hex(&raw), raw);
                load.events.push(e);
            }
        }
    }
    load
}

/// Batch limits of a simulated agent's shipper.
#[derive(Clone, Copy)]
struct BatchLimits {
    events: usize,
    bytes: usize,
}

/// Splits events into batches as the agent's shipper does.
fn batches(events: Vec<Event>, limits: BatchLimits) -> Vec<Vec<Event>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut bytes = 0;
    for e in events {
        let len = e.encoded_len();
        if !cur.is_empty() && (cur.len() >= limits.events || bytes + len > limits.bytes) {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        bytes += len;
        cur.push(e);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn raw_sha(e: &Event) -> Option<&str> {
    match &e.kind {
        Some(Kind::Email(m)) if !m.raw_sha256.is_empty() => Some(&m.raw_sha256),
        _ => None,
    }
}

// ---------------------------------------------------------------- agents

/// A channel to the collector as agent `name` (no request timeout: a Ship
/// stream lives as long as the run).
async fn agent_channel(env: &Env, name: &str) -> anyhow::Result<Channel> {
    let pki = env.pki();
    let read = |p: PathBuf| std::fs::read(&p).with_context(|| format!("reading {}", p.display()));
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(pki.join("ca.pem"))?))
        .domain_name("localhost")
        .identity(Identity::from_pem(
            read(pki.join(format!("agent-{name}.pem")))?,
            read(pki.join(format!("agent-{name}.key")))?,
        ));
    Endpoint::from_shared(format!("https://127.0.0.1:{}", env.grpc))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .with_context(|| format!("agent {name} connecting to the collector"))
}

/// One open Ship stream of a simulated agent.
struct Stream {
    name: String,
    uploads_in_flight: usize,
    client: IngestClient<Channel>,
    tx: mpsc::Sender<ShipRequest>,
    responses: tonic::Streaming<kiroku_proto::ShipResponse>,
    /// The collector reads `Batch.recorded` (issue 18): events are sent as
    /// an agent's buffer holds them, chained (`head`: the SHA-256 of the
    /// previous event's bytes), as the agent's shipper does.
    recorded: bool,
    head: Option<[u8; 32]>,
}

impl Stream {
    async fn open(env: &Env, name: &str, agent: usize) -> anyhow::Result<Stream> {
        let mut client = IngestClient::new(agent_channel(env, name).await?)
            .send_compressed(CompressionEncoding::Zstd)
            .accept_compressed(CompressionEncoding::Zstd);
        let (tx, rx) = mpsc::channel(4);
        tx.send(ShipRequest {
            msg: Some(ship_request::Msg::Hello(Hello {
                stream_id: "bench".into(),
                host: Some(host(agent)),
                agent_version: "bench".into(),
            })),
        })
        .await?;
        let mut responses = client.ship(ReceiverStream::new(rx)).await?.into_inner();
        let recorded = match responses.message().await? {
            Some(kiroku_proto::ShipResponse {
                msg: Some(ship_response::Msg::Welcome(w)),
            }) => w.accepts_recorded,
            other => bail!("agent {name}: collector sent {other:?} instead of Welcome"),
        };
        Ok(Stream {
            name: name.to_owned(),
            uploads_in_flight: UPLOADS_IN_FLIGHT.load(Ordering::Relaxed),
            client,
            tx,
            responses,
            recorded,
            head: None,
        })
    }

    /// `batch` as the Batch an agent's shipper sends this collector.
    fn batch(&mut self, batch: Vec<Event>) -> Batch {
        if !self.recorded {
            return Batch {
                events: batch,
                ..Default::default()
            };
        }
        let recorded = batch
            .into_iter()
            .map(|mut e| {
                e.prev_hash = self.head.map(|h| h.to_vec()).unwrap_or_default();
                let event = e.encode_to_vec();
                self.head = Some(sha2::Sha256::digest(&event).into());
                kiroku_proto::RecordedEvent {
                    event,
                    raw_not_kept: String::new(),
                }
            })
            .collect();
        Batch {
            recorded,
            ..Default::default()
        }
    }

    /// Uploads the blobs of `batch` the collector lacks, sends the batch,
    /// waits for its ack.
    async fn ship(
        &mut self,
        batch: Vec<Event>,
        blobs: &HashMap<String, Vec<u8>>,
    ) -> anyhow::Result<()> {
        let mut shas: Vec<String> = batch
            .iter()
            .filter_map(raw_sha)
            .map(str::to_owned)
            .collect();
        shas.sort();
        shas.dedup();
        if !shas.is_empty() {
            let missing = self
                .client
                .missing_blobs(MissingBlobsRequest { sha256: shas })
                .await?
                .into_inner()
                .sha256;
            // As the agent's shipper: several uploads in flight.
            let uploads = missing.into_iter().map(|sha| {
                let mut client = self.client.clone();
                let name = &self.name;
                async move {
                    let data = blobs
                        .get(&sha)
                        .with_context(|| format!("agent {name}: no blob {sha}"))?;
                    let chunks: Vec<BlobChunk> = data
                        .chunks(BLOB_CHUNK)
                        .map(|c| BlobChunk {
                            sha256: sha.clone(),
                            size: data.len() as u64,
                            data: c.to_vec(),
                        })
                        .collect();
                    client.put_blob(tokio_stream::iter(chunks)).await?;
                    anyhow::Ok(())
                }
            });
            let mut uploads =
                futures::stream::iter(uploads).buffer_unordered(self.uploads_in_flight);
            while let Some(r) = uploads.next().await {
                r?;
            }
        }
        let last = batch.last().map_or(0, |e| e.seq);
        let batch = self.batch(batch);
        self.tx
            .send(ShipRequest {
                msg: Some(ship_request::Msg::Batch(batch)),
            })
            .await
            .map_err(|_| anyhow::anyhow!("agent {}: stream closed", self.name))?;
        match self.responses.message().await? {
            Some(kiroku_proto::ShipResponse {
                msg: Some(ship_response::Msg::Ack(a)),
            }) if a.stored_seq >= last => Ok(()),
            other => bail!(
                "agent {}: expected an ack of {last}, got {other:?}",
                self.name
            ),
        }
    }
}

/// Ships one small event every 100 ms until `stop`; per probe the time
/// from its creation to its ack, each confirmed searchable by `GetEvent`.
async fn probe(env: &Env, stop: Arc<AtomicBool>) -> anyhow::Result<(Vec<Duration>, usize)> {
    let mut s = Stream::open(env, "probe", 0).await?;
    let mut q = env.investigator().await?;
    let mut lat = Vec::new();
    let mut missing = 0;
    let mut seq = 0;
    let none = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let t0 = Instant::now();
        let mut e = small_event(0, seq);
        e.stream_id = "bench".into();
        s.ship(vec![e], &none).await?;
        lat.push(t0.elapsed());
        let found = q
            .get_event(GetEventRequest {
                event_id: format!("probe/bench/{seq}"),
            })
            .await
            .is_ok();
        if !found {
            missing += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((lat, missing))
}

// ---------------------------------------------------------------- collector

/// Waits until the collector's analysis queue is empty; the number of mails
/// it analysed, or None when the collector reports no analysis (a build
/// from before it existed).
async fn analysis_drained(env: &Env, limit: Duration) -> anyhow::Result<Option<u64>> {
    let mut q = env.investigator().await?;
    let t0 = Instant::now();
    loop {
        let hosts = q
            .list_hosts(ListHostsRequest::default())
            .await?
            .into_inner();
        let Some(status) = hosts.analysis else {
            return Ok(None);
        };
        if status.pending == 0 {
            return Ok(Some(status.analysed));
        }
        if t0.elapsed() > limit {
            bail!(
                "the collector's analysis still had {} mails pending after {limit:?}: {}",
                status.pending,
                status.message
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The collector under test, started on a fresh data directory.
struct Collector {
    proc: Proc,
    data: PathBuf,
}

fn fresh_collector(env: &Env, old: Option<Collector>) -> anyhow::Result<Collector> {
    let data = env.path().join("collector");
    if let Some(mut c) = old {
        c.proc.terminate();
    }
    if data.exists() {
        std::fs::remove_dir_all(&data).with_context(|| format!("removing {}", data.display()))?;
    }
    let proc = match COLLECTOR_EXE.get() {
        Some(exe) => env.start_collector_on(Path::new("collector"), Some(exe))?,
        None => env.start_collector()?,
    };
    Ok(Collector { proc, data })
}

struct IngestResult {
    events: usize,
    secs: f64,
    logical: u64,
    probe: Vec<Duration>,
    probe_missing: usize,
    cpu: f64,
    rss_peak_kb: u64,
}

async fn ingest_run(
    env: &Env,
    c: &Collector,
    kind: EventKind,
    agents: usize,
    total: usize,
    limits: BatchLimits,
    perf_dir: Option<&Path>,
) -> anyhow::Result<IngestResult> {
    let per = total.div_ceil(agents);
    let mut loads = Vec::new();
    for a in 1..=agents {
        loads.push(tokio::task::spawn_blocking(move || make_load(kind, a, per)));
    }
    let mut streams = Vec::new();
    let mut logical = 0;
    let mut events = 0;
    for (i, l) in loads.into_iter().enumerate() {
        let l = l.await?;
        logical += l.logical_bytes;
        events += l.events.len();
        let s = Stream::open(env, &format!("sim-{:03}", i + 1), i + 1).await?;
        streams.push((s, batches(l.events, limits), l.blobs));
    }
    let pid = c.proc.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let perf = Perf::start(
        perf_dir,
        pid,
        &format!("{}-{agents}", kind.label().replace(' ', "_")),
    );
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for (mut s, bs, blobs) in streams {
        tasks.push(tokio::spawn(async move {
            for b in bs {
                s.ship(b, &blobs).await?;
            }
            anyhow::Ok(())
        }));
    }
    let probe_fut = probe(env, stop.clone());
    let all = async {
        for t in tasks {
            t.await??;
        }
        stop.store(true, Ordering::Relaxed);
        anyhow::Ok(t0.elapsed())
    };
    let (secs, probed) = tokio::join!(all, probe_fut);
    let secs = secs?.as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu0;
    drop(perf);
    let (probe_lat, probe_missing) = probed?;
    Ok(IngestResult {
        events,
        secs,
        logical,
        probe: probe_lat,
        probe_missing,
        cpu,
        rss_peak_kb: status_kb(pid, "VmHWM"),
    })
}

async fn section_ingest(env: &Env, a: &Args) -> anyhow::Result<()> {
    println!("\n### Ingest end to end: simulated agents (real gRPC Ship streams)\n");
    println!(
        "Batches of at most {} events / {} MiB per agent, one outstanding; {} blob uploads in flight.\n",
        a.limits().events,
        a.limits().bytes >> 20,
        a.uploads_in_flight
    );
    println!(
        "| events | agents | count | seconds | events/s | MB/s (raw mail or encoded event) | probe p50 ms | probe p99 ms | probes not found | collector CPU (cores) | collector peak RSS MB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut storage = Vec::new();
    let mut c: Option<Collector> = None;
    for k in &a.kinds {
        let kind = EventKind::parse(k)?;
        let total = match kind {
            EventKind::Small => a.small,
            EventKind::Mail10k => a.mails_10k,
            EventKind::Mail1m | EventKind::Mail1mDocs => a.mails_1m,
        };
        for &n in &a.agents {
            let col = fresh_collector(env, c.take())?;
            let r =
                ingest_run(env, &col, kind, n, total, a.limits(), a.perf_dir.as_deref()).await?;
            println!(
                "| {} | {n} | {} | {:.2} | {:.0} | {:.1} | {:.1} | {:.1} | {} of {} | {:.2} | {:.0} |",
                kind.label(),
                r.events,
                r.secs,
                r.events as f64 / r.secs,
                mb(r.logical) / r.secs,
                quantile_ms(&r.probe, 0.5),
                quantile_ms(&r.probe, 0.99),
                r.probe_missing,
                r.probe.len(),
                r.cpu / r.secs,
                r.rss_peak_kb as f64 / 1024.0
            );
            if kind == EventKind::Mail1mDocs {
                let t0 = Instant::now();
                let cpu0 = cpu_seconds(col.proc.pid());
                match analysis_drained(env, Duration::from_secs(1800)).await? {
                    Some(analysed) => println!(
                        "\n(the analysis of those mails, {analysed} analysed: done {:.1} s after the last acknowledgement; collector CPU in that time {:.1} s)\n",
                        t0.elapsed().as_secs_f64(),
                        cpu_seconds(col.proc.pid()) - cpu0
                    ),
                    None => println!("\n(this collector build has no attachment analysis)\n"),
                }
            }
            if n == a.agents[0] {
                storage.push((
                    kind,
                    r.events + r.probe.len(),
                    r.logical,
                    du_parts(&col.data),
                ));
            }
            c = Some(col);
        }
    }
    if let Some(mut c) = c {
        c.proc.terminate();
    }
    println!(
        "\n### Storage per event kind (collector data dir after the {}-agent run)\n",
        a.agents[0]
    );
    println!(
        "| events | count | logical MB | journal/ MB | blobs/ MB | index/ MB | meta/ MB | total MB | bytes on disk per event | logical / physical |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (kind, n, logical, parts) in storage {
        let total: u64 = parts.iter().map(|p| p.1).sum();
        let get = |name: &str| parts.iter().find(|p| p.0 == name).map_or(0, |p| p.1);
        println!(
            "| {} | {n} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {:.2} |",
            kind.label(),
            mb(logical),
            mb(get("journal")),
            mb(get("blobs")),
            mb(get("index")),
            mb(get("meta")),
            mb(total),
            total as f64 / n as f64,
            logical as f64 / total as f64
        );
    }
    Ok(())
}

/// `du` of each part of a collector data dir: (part, bytes on disk).
fn du_parts(data: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(data) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let bytes = match e.metadata() {
            Ok(m) if m.is_dir() => du(&e.path()).0,
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        };
        out.push((name, bytes));
    }
    out.sort();
    out
}

async fn count(env: &Env, r: &SearchRequest) -> anyhow::Result<u64> {
    Ok(env
        .investigator()
        .await?
        .search(SearchRequest {
            page_size: 1,
            ..r.clone()
        })
        .await?
        .into_inner()
        .total_hits)
}

/// Real agent: mail captured while the collector is down, then drained.
async fn section_drain(env: &Env, a: &Args) -> anyhow::Result<()> {
    let data = env.path().join("collector");
    if data.exists() {
        std::fs::remove_dir_all(&data)?;
    }
    let smtp = free_port();
    let mut agent = env.start_agent("drain", smtp, &Mode::CaptureOnly)?;
    let sent = load::run(
        &format!("127.0.0.1:{smtp}"),
        a.drain_mails,
        8,
        10 * 1024,
        load::Submit::LockStep,
    )
    .await?;
    let agent_dir = env.path().join("agent-drain");
    let buffered = du(&agent_dir).0;
    let mut c = env.start_collector()?;
    let t_start = Instant::now();
    let req = SearchRequest {
        agent_id: "drain".into(),
        kind: "email".into(),
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut first: Option<(Instant, u64)> = None;
    let done = loop {
        let n = count(env, &req).await.unwrap_or(0);
        if n > 0 && first.is_none() {
            first = Some((Instant::now(), n));
        }
        if n as usize >= a.drain_mails {
            break Instant::now();
        }
        if Instant::now() > deadline {
            bail!(
                "drain: {n} of {} mails searchable after 600 s",
                a.drain_mails
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (t_first, n_first) = first.unwrap_or((t_start, 0));
    let rest = a.drain_mails as u64 - n_first;
    let span = (done - t_first).as_secs_f64().max(1e-3);
    println!(
        "\n### Ingest from a real agent's buffer (capture-only agent, collector down, then started)\n"
    );
    println!(
        "{} × 10 KB mails captured at {:.0} mails/s with the collector down (agent buffer {:.1} MB on disk); collector started: first {} searchable after {:.2} s (agent reconnect backoff included), the remaining {} in {:.2} s = {:.0} mails/s ({:.1} MB/s of raw mail); all searchable {:.2} s after the collector started. Agent peak RSS {:.1} MB.",
        a.drain_mails,
        sent.per_second(),
        mb(buffered),
        n_first,
        (t_first - t_start).as_secs_f64(),
        rest,
        span,
        rest as f64 / span,
        mb(rest * 10 * 1024) / span,
        (done - t_start).as_secs_f64(),
        status_kb(agent.pid(), "VmHWM") as f64 / 1024.0
    );
    agent.terminate();
    c.terminate();
    Ok(())
}

/// Real agent: idle RSS and CPU, then CPU at a paced 100 mails/s.
async fn section_footprint(env: &Env, a: &Args) -> anyhow::Result<()> {
    let data = env.path().join("collector");
    if data.exists() {
        std::fs::remove_dir_all(&data)?;
    }
    let mut c = env.start_collector()?;
    let smtp = free_port();
    let mut agent = env.start_agent("footprint", smtp, &Mode::CaptureOnly)?;
    let pid = agent.pid();
    // Let start-up (host identity, connect, first clock probes) finish.
    tokio::time::sleep(Duration::from_secs(if a.tiny { 1 } else { 5 })).await;
    let rss0 = status_kb(pid, "VmRSS");
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(a.idle_secs)).await;
    let idle = t0.elapsed().as_secs_f64();
    let idle_cpu = cpu_seconds(pid) - cpu0;
    let rss1 = status_kb(pid, "VmRSS");
    println!(
        "\n### Agent footprint (real kiroku-agent, capture-only SMTP, connected to the collector)\n"
    );
    println!("| measurement | result |");
    println!("|---|---|");
    println!(
        "| idle RSS (VmRSS) at start of idle / after {:.0} s | {:.1} MB / {:.1} MB |",
        idle,
        rss0 as f64 / 1024.0,
        rss1 as f64 / 1024.0
    );
    println!(
        "| idle CPU over {idle:.0} s (utime+stime, 10 ms ticks) | {:.2} s = {:.3}% of one core |",
        idle_cpu,
        100.0 * idle_cpu / idle
    );
    let mails = 100 * a.paced_secs as usize;
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    let st = load::paced(&format!("127.0.0.1:{smtp}"), mails, 10 * 1024, 100.0).await?;
    // Until shipped and searchable: the agent's work for these mails.
    let req = SearchRequest {
        agent_id: "footprint".into(),
        kind: "email".into(),
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while (count(env, &req).await.unwrap_or(0) as usize) < mails && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu0;
    println!(
        "| CPU at a paced 100 mails/s (10 KB, one SMTP connection, {mails} mails in {:.1} s, {:.0} mails/s achieved; until all searchable: {secs:.1} s) | {:.2} s = {:.1}% of one core; SMTP p50 {:.2} ms, p99 {:.2} ms |",
        st.seconds,
        st.per_second(),
        cpu,
        100.0 * cpu / secs,
        st.ms(0.5),
        st.ms(0.99)
    );
    println!(
        "| RSS after the paced run (peak) | {:.1} MB ({:.1} MB) |",
        status_kb(pid, "VmRSS") as f64 / 1024.0,
        status_kb(pid, "VmHWM") as f64 / 1024.0
    );
    agent.terminate();
    c.terminate();
    Ok(())
}

/// One attachment in many different mails: logical vs physical bytes.
async fn section_dedup(env: &Env, a: &Args) -> anyhow::Result<()> {
    let c = fresh_collector(env, None)?;
    let mut rng = StdRng::seed_from_u64(5);
    let att: Vec<u8> = (0..a.dedup_mb * 1024 * 1024)
        .map(|_| rng.random::<u8>())
        .collect();
    let mut load = Load {
        events: Vec::new(),
        blobs: HashMap::new(),
        logical_bytes: 0,
    };
    for i in 0..a.dedup_mails {
        let (e, raw) = mail_event(&mut rng, 1, i as u64 + 1, 0, Some(&att));
        load.logical_bytes += raw.len() as u64;
        load.blobs.insert(kiroku_common::sha256_hex(&raw), raw);
        load.events.push(e);
    }
    let mut s = Stream::open(env, "sim-001", 1).await?;
    for b in batches(load.events, a.limits()) {
        s.ship(b, &load.blobs).await?;
    }
    let (blobs, _) = du(&c.data.join("blobs"));
    let total: u64 = du_parts(&c.data).iter().map(|p| p.1).sum();
    println!(
        "\n### One {} MB attachment in {} different mails\n",
        a.dedup_mb, a.dedup_mails
    );
    println!(
        "attachment bytes {:.1} MB × {} = {:.1} MB; raw mail (logical) {:.1} MB; blobs/ on disk {:.1} MB (logical / physical = {:.2}; attachment bytes / physical = {:.2}); whole data dir {:.1} MB",
        mb(att.len() as u64),
        a.dedup_mails,
        mb(att.len() as u64 * a.dedup_mails as u64),
        mb(load.logical_bytes),
        mb(blobs),
        load.logical_bytes as f64 / blobs as f64,
        (att.len() * a.dedup_mails) as f64 / blobs as f64,
        mb(total)
    );
    let mut c = c;
    c.proc.terminate();
    Ok(())
}

// ---------------------------------------------------------------- rsyslog

/// Two private rsyslogd on loopback: a sender (imtcp in, omfwd over TLS
/// with a disk-assisted LinkedList queue) and a receiver (imtcp TLS in,
/// omfile out). The same number of ~300 B lines as the small-event run;
/// time from the first line sent to the last line in the receiver's file.
async fn section_rsyslog(env: &Env, a: &Args) -> anyhow::Result<()> {
    println!("\n### Reference shipper: rsyslog, TLS forwarding, disk-assisted queue\n");
    let Ok(out) = Command::new("rsyslogd").arg("-v").output() else {
        println!("skipped: rsyslogd not installed (apt-get install rsyslog rsyslog-gnutls)");
        return Ok(());
    };
    let version = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    let dir = env.path().join("rsyslog");
    std::fs::create_dir_all(dir.join("send-work"))?;
    std::fs::create_dir_all(dir.join("recv-work"))?;
    let pki = env.pki();
    let (in_port, tls_port) = (free_port(), free_port());
    let received = dir.join("received.log");
    let tls_global = format!(
        "defaultNetstreamDriverCAFile=\"{}\" defaultNetstreamDriverCertFile=\"{}\" defaultNetstreamDriverKeyFile=\"{}\"",
        pki.join("ca.pem").display(),
        pki.join("collector-localhost.pem").display(),
        pki.join("collector-localhost.key").display()
    );
    let recv_conf = format!(
        "global(workDirectory=\"{}\" defaultNetstreamDriver=\"gtls\" {tls_global})\n\
         module(load=\"imtcp\" StreamDriver.Name=\"gtls\" StreamDriver.Mode=\"1\" StreamDriver.AuthMode=\"x509/certvalid\")\n\
         input(type=\"imtcp\" port=\"{tls_port}\" address=\"127.0.0.1\")\n\
         template(name=\"msgonly\" type=\"string\" string=\"%msg%\\n\")\n\
         action(type=\"omfile\" file=\"{}\" template=\"msgonly\")\n",
        dir.join("recv-work").display(),
        received.display()
    );
    let send_conf = format!(
        "global(workDirectory=\"{}\" {tls_global})\n\
         module(load=\"imtcp\")\n\
         input(type=\"imtcp\" port=\"{in_port}\" address=\"127.0.0.1\")\n\
         action(type=\"omfwd\" target=\"127.0.0.1\" port=\"{tls_port}\" protocol=\"tcp\" StreamDriver=\"gtls\" StreamDriverMode=\"1\" StreamDriverAuthMode=\"x509/name\" StreamDriverPermittedPeers=\"localhost\" queue.type=\"LinkedList\" queue.filename=\"fwdq\" queue.saveOnShutdown=\"on\" queue.maxDiskSpace=\"2g\" action.resumeRetryCount=\"-1\")\n",
        dir.join("send-work").display()
    );
    std::fs::write(dir.join("recv.conf"), recv_conf)?;
    std::fs::write(dir.join("send.conf"), send_conf)?;
    let start = |name: &str| -> anyhow::Result<Proc> {
        Proc::spawn(
            &format!("rsyslogd {name}"),
            Command::new("rsyslogd")
                .arg("-n")
                .arg("-f")
                .arg(dir.join(format!("{name}.conf")))
                .arg("-i")
                .arg(dir.join(format!("{name}.pid"))),
            &dir.join(format!("{name}.log")),
        )
    };
    let mut recv = start("recv")?;
    recv.wait_port(tls_port)?;
    let mut send = start("send")?;
    send.wait_port(in_port)?;
    let n = a.small;
    // ~300 B per line like the small file events (same words, same path).
    let lines: Vec<u8> = (0..n)
        .flat_map(|i| {
            let e = small_event(1, i as u64 + 1);
            let Some(Kind::File(f)) = e.kind else {
                return Vec::new();
            };
            format!(
                "<13>Nov 23 09:00:00 pc-001 kiroku-bench: seq={} op={} user=user001 uid=1000 size={} sha256={} process={} exe={} path={}\n",
                i + 1, f.operation, f.size, f.sha256, f.process, f.exe, f.path
            )
            .into_bytes()
        })
        .collect();
    let line_bytes = lines.len() as f64 / n as f64;
    let cpu0 = cpu_seconds(send.pid()) + cpu_seconds(recv.pid());
    let t0 = Instant::now();
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", in_port)).await?;
    sock.write_all(&lines).await?;
    sock.shutdown().await?;
    let written = t0.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut seen = 0;
    let done = loop {
        seen = std::fs::read(&received)
            .map(|b| memchr_count(&b))
            .unwrap_or(seen);
        if seen >= n {
            break t0.elapsed();
        }
        if Instant::now() > deadline || !send.is_running() || !recv.is_running() {
            bail!(
                "rsyslog: {seen} of {n} lines arrived; sender log:\n{}\nreceiver log:\n{}",
                send.log_text(),
                recv.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let cpu = cpu_seconds(send.pid()) + cpu_seconds(recv.pid()) - cpu0;
    println!(
        "{version}: {n} lines of {line_bytes:.0} B handed to the sender in {:.2} s; all {n} in the receiver's file after {:.2} s = {:.0} events/s ({:.1} MB/s); rsyslog CPU (both) {:.2} cores; sender peak RSS {:.1} MB",
        written.as_secs_f64(),
        done.as_secs_f64(),
        n as f64 / done.as_secs_f64(),
        n as f64 * line_bytes / 1e6 / done.as_secs_f64(),
        cpu / done.as_secs_f64(),
        status_kb(send.pid(), "VmHWM") as f64 / 1024.0
    );
    send.terminate();
    recv.terminate();
    Ok(())
}

fn memchr_count(b: &[u8]) -> usize {
    b.iter().filter(|c| **c == b'\n').count()
}

// ---------------------------------------------------------------- main

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut a = Args::parse();
    if let Some(exe) = a.collector_exe.clone() {
        let _ = COLLECTOR_EXE.set(exe);
    }
    if a.tiny {
        a.shrink_for_ci();
    }
    anyhow::ensure!(!a.agents.is_empty(), "--agents needs at least one count");
    UPLOADS_IN_FLIGHT.store(a.uploads_in_flight.max(1), Ordering::Relaxed);
    let env = Env::new()?;
    let max_agents = a.agents.iter().copied().max().unwrap_or(1);
    for i in 1..=max_agents {
        env.issue("agent", &format!("sim-{i:03}"), &[])?;
    }
    env.issue("agent", "probe", &[])?;
    let mem_kb = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    println!(
        "machine: {} cores, {:.1} GiB RAM, Linux {}; kiroku {} ({})",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        mem_kb as f64 / 1024.0 / 1024.0,
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        kiroku_common::VERSION,
        bin("kiroku-collector").display()
    );
    println!(
        "small file event: {} B encoded (protobuf)",
        small_event(1, 12345).encoded_len()
    );
    if a.section("ingest") {
        section_ingest(&env, &a).await?;
    }
    if a.section("drain") {
        section_drain(&env, &a).await?;
    }
    if a.section("footprint") {
        section_footprint(&env, &a).await?;
    }
    if a.section("dedup") {
        section_dedup(&env, &a).await?;
    }
    if a.section("rsyslog") {
        section_rsyslog(&env, &a).await?;
    }
    if a.keep {
        eprintln!("kept {}", env.dir.keep().display());
    }
    Ok(())
}
