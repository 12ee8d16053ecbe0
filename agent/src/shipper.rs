//! Ships buffered events to the collector over one long-lived mutually
//! authenticated gRPC stream (`Ingest.Ship`): Hello → Welcome (the
//! collector says what it already stored), then batches, each acknowledged
//! once durable. Blobs referenced by a batch are uploaded first, and only
//! those the collector does not have. The buffer drops only acknowledged
//! events. Failures reconnect with exponential backoff and jitter.
//!
//! On the same stream the agent measures its clock offset to the collector
//! (NTP-style probes right after Welcome and every [`PROBE_EVERY`]; the
//! best of [`PROBES`] round trips wins) and reports its backlog (`Status`).
//! The agent keeps at most one request outstanding (a batch or a probe), so
//! each response answers the request before it.
//!
//! The collector acknowledges an event that names a raw message only once
//! it holds that blob: an `Ack` with `missing_blobs` covers the batch up
//! to the first such event, and the agent uploads the blobs and sends the
//! rest again. A blob the agent no longer has (lost from its buffer) is
//! said so beside the event (`RecordedEvent.raw_not_kept`), which the
//! collector then stores without it, so the stream never stalls on it.
//!
//! Events go out byte for byte as the buffer queued them
//! (`Batch.recorded`): their stream hash chain (`Event.prev_hash`, see
//! `buffer/chain.rs`) covers those bytes, so the shipper never edits or
//! re-encodes one. Only a collector that does not say it reads them
//! (`Welcome.accepts_recorded` unset: an older version) gets decoded
//! `Batch.events`, with `raw_not_kept` set on the decoded copy. The
//! `Status` carries the chain's durable head, and the signed checkpoints
//! the collector sends back (`Ack.checkpoint`) are kept in the buffer.
//!
//! A collector that shuts down says so (`Shutdown`): the agent reconnects
//! every second or so for a while instead of backing off, to be back as
//! soon as it restarts.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kiroku_proto::ingest_client::IngestClient;
use kiroku_proto::{
    Batch, BlobChunk, Hello, MissingBlobsRequest, RecordedEvent, ShipRequest, ShipResponse, Status,
    TimeProbe, ship_request, ship_response,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::buffer::{self, Buffer, Recorded};
use crate::capture::context::CaptureContext;

/// Events per batch and encoded bytes per batch (under the collector's
/// 16 MiB message limit). Each batch costs the collector one group commit
/// (journal fdatasync + tantivy commit, ~0.2-0.5 s on a busy disk) while
/// the agent waits for its ack, so batches are large: 1,000 events per
/// batch held one agent's backlog drain to ~1,500 small events/s
/// (BENCHMARKS.md, issue 6).
const BATCH_EVENTS: usize = 10_000;
const BATCH_BYTES: usize = 8 * 1024 * 1024;
const BLOB_CHUNK: usize = 1024 * 1024;
/// Blob uploads in flight at once (each holds at most one chunk in memory).
const UPLOADS_IN_FLIGHT: usize = 8;
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Longest wait for an acknowledgement before the stream is considered dead.
const ACK_TIMEOUT: Duration = Duration::from_secs(120);
/// Clock probes per measurement; the one with the shortest round trip is
/// used (its offset error is at most half its round trip).
const PROBES: usize = 4;
const PROBE_EVERY: Duration = Duration::from_secs(60);
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// After the collector said it shuts down, reconnect attempts stay this
/// frequent (instead of backing off) for [`QUICK_RECONNECT_FOR`].
const QUICK_RECONNECT_MAX: Duration = Duration::from_secs(5);
const QUICK_RECONNECT_FOR: Duration = Duration::from_secs(120);
/// What an event whose raw message the agent lost says (`raw_not_kept`).
const LOST_ON_AGENT: &str = "lost on the agent: the raw message was no longer in the agent's buffer when the event was shipped";

/// The collector ended the stream because it shuts down (`Shutdown`).
#[derive(Debug, thiserror::Error)]
#[error("the collector is shutting down ({reason})")]
struct GoingAway {
    reason: String,
    reconnect_after: Duration,
}

type Responses = tonic::Streaming<ShipResponse>;

pub struct Shipper {
    pub buffer: Arc<Buffer>,
    pub endpoint: String,
    pub tls: ClientTlsConfig,
    pub ctx: Arc<CaptureContext>,
    /// HTTP/2 keep-alive ping interval (`collector.keepalive_secs`).
    pub keepalive: Duration,
    /// SHA-256 of the config file in force, sent in `Status`.
    pub config_sha256: Arc<crate::reload::ConfigDigest>,
    /// The TLS files and server name, read again at each connection so a
    /// renewed certificate (`crate::enroll`) is presented; `tls` when they
    /// do not read (a file replaced by hand, half-written).
    pub tls_files: Option<(kiroku_common::tls::TlsFiles, String)>,
}

impl Shipper {
    /// Runs until the task is dropped.
    pub async fn run(self) {
        let mut backoff = BACKOFF_MIN;
        let mut quick_until = None;
        loop {
            let started = tokio::time::Instant::now();
            let e = self
                .session()
                .await
                .err()
                .unwrap_or_else(|| anyhow::anyhow!("the stream ended"));
            let backlog = self.buffer.backlog();
            // A session that ran a while was healthy: start backoff afresh.
            if started.elapsed() > Duration::from_secs(30) {
                backoff = BACKOFF_MIN;
            }
            if let Some(g) = e.downcast_ref::<GoingAway>() {
                tracing::info!(
                    collector = %self.endpoint, reason = %g.reason, queued = backlog.queued,
                    "the collector is shutting down; events stay buffered, reconnecting soon"
                );
                backoff = g.reconnect_after.clamp(BACKOFF_MIN, QUICK_RECONNECT_MAX);
                quick_until = Some(tokio::time::Instant::now() + QUICK_RECONNECT_FOR);
            } else {
                tracing::warn!(
                    collector = %self.endpoint, error = %format!("{e:#}"), queued = backlog.queued,
                    "shipping to the collector failed; events stay buffered, retrying"
                );
            }
            let jitter = rand::random_range(0.5..1.5);
            tokio::time::sleep(backoff.mul_f64(jitter)).await;
            if quick_until.is_some_and(|t| tokio::time::Instant::now() < t) {
                continue;
            }
            quick_until = None;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn connect(&self) -> anyhow::Result<IngestClient<Channel>> {
        let tls = match &self.tls_files {
            Some((files, name)) => files.client_config(name).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "the TLS files do not read; connecting with those read at start");
                self.tls.clone()
            }),
            None => self.tls.clone(),
        };
        let channel = Endpoint::from_shared(self.endpoint.clone())?
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(10))
            .tcp_keepalive(Some(self.keepalive))
            .http2_keep_alive_interval(self.keepalive)
            .keep_alive_timeout((self.keepalive * 2 / 3).max(Duration::from_secs(1)))
            .connect()
            .await?;
        Ok(IngestClient::new(channel)
            .send_compressed(CompressionEncoding::Zstd)
            .accept_compressed(CompressionEncoding::Zstd))
    }

    async fn session(&self) -> anyhow::Result<()> {
        // A new buffer whose database could not be created yet (a full
        // disk at the first start) has no stream to ship as.
        self.buffer.stream_known().await;
        let mut client = self.connect().await?;
        let (tx, rx) = mpsc::channel::<ShipRequest>(4);
        let stream = self.buffer.stream_id();
        tx.send(ShipRequest {
            msg: Some(ship_request::Msg::Hello(Hello {
                stream_id: stream.clone(),
                host: Some((*self.ctx.host()).clone()),
                agent_version: kiroku_common::VERSION.to_owned(),
            })),
        })
        .await?;
        let mut responses = client.ship(ReceiverStream::new(rx)).await?.into_inner();
        let welcome = match next_msg(&mut responses).await? {
            ship_response::Msg::Welcome(w) => w,
            other => anyhow::bail!("collector sent {other:?} instead of Welcome"),
        };
        tracing::info!(collector = %self.endpoint, agent_id = %welcome.agent_id, stored_seq = welcome.stored_seq, recorded = welcome.accepts_recorded, "connected to collector");
        if !welcome.accepts_recorded {
            tracing::warn!(collector = %self.endpoint, "the collector does not read events as the agent recorded them (an older version): they are shipped decoded, and it cannot check this agent's stream hash chain; upgrade the collector");
        }
        // The Status (with any buffer problem) goes first: the collector
        // hears of a buffer that cannot be written even if this ack fails.
        self.measure_clock(&tx, &mut responses).await?;
        self.buffer.ack_stream(&stream, welcome.stored_seq).await?;
        let mut sent = welcome.stored_seq;
        let mut next_probe = tokio::time::Instant::now() + PROBE_EVERY;
        // The config file's SHA-256 last reported: a reload reports the new
        // one at once (with a clock measurement), not a minute later.
        let mut reported = self.config_sha256.get();
        // Blobs the last Ack said were missing, to notice a collector that
        // keeps asking for the same ones.
        let mut asked: Vec<String> = Vec::new();
        loop {
            if self.config_sha256.get() != reported {
                reported = self.config_sha256.get();
                next_probe = tokio::time::Instant::now();
            }
            if tokio::time::Instant::now() >= next_probe {
                self.measure_clock(&tx, &mut responses).await?;
                next_probe = tokio::time::Instant::now() + PROBE_EVERY;
            }
            let batch = self.buffer.read_recorded(sent, BATCH_EVENTS, BATCH_BYTES)?;
            if batch.is_empty() {
                // Idle, but listening: the collector may say it shuts down.
                tokio::select! {
                    _ = self.buffer.appended() => {}
                    _ = tokio::time::sleep_until(next_probe) => {}
                    _ = self.config_sha256.changed() => {}
                    m = next_msg(&mut responses) => {
                        anyhow::bail!("collector sent {:?} unasked", m?);
                    }
                }
                continue;
            }
            let lost = self.upload_blobs(&mut client, &batch).await?;
            let last = batch.last().map_or(sent, |r| r.seq);
            let n = batch.len();
            let batch = if welcome.accepts_recorded {
                recorded_batch(batch, &lost)
            } else {
                decoded_batch(batch, &lost)
            };
            tx.send(ShipRequest {
                msg: Some(ship_request::Msg::Batch(batch)),
            })
            .await
            .map_err(|_| anyhow::anyhow!("stream to collector closed"))?;
            let ack = match tokio::time::timeout(ACK_TIMEOUT, next_msg(&mut responses)).await {
                Err(_) => anyhow::bail!("no acknowledgement in {}s", ACK_TIMEOUT.as_secs()),
                Ok(r) => r?,
            };
            let ack = match ack {
                ship_response::Msg::Ack(a) => a,
                other => anyhow::bail!("collector sent {other:?} instead of Ack"),
            };
            // Sent once per checkpoint, whatever else the Ack says.
            if !ack.checkpoint.is_empty()
                && let Err(e) = self.buffer.keep_checkpoint(&ack.checkpoint)
            {
                // Keeping it is a safeguard, not a condition of shipping.
                tracing::warn!(error = %e, "cannot keep the collector's checkpoint");
            }
            if !ack.missing_blobs.is_empty() {
                // Stored up to an event whose blob the collector lacks:
                // the next round uploads it (or marks it lost) and sends
                // the rest again.
                if ack.stored_seq <= sent && ack.missing_blobs == asked {
                    anyhow::bail!(
                        "the collector still lacks blob {} after it was uploaded",
                        ack.missing_blobs[0]
                    );
                }
                tracing::info!(
                    stored_seq = ack.stored_seq, missing = ack.missing_blobs.len(), first = %ack.missing_blobs[0],
                    "the collector lacks raw messages of this batch; uploading them again"
                );
                self.buffer.ack_stream(&stream, ack.stored_seq).await?;
                sent = sent.max(ack.stored_seq);
                asked = ack.missing_blobs;
                continue;
            }
            asked.clear();
            if ack.stored_seq < last {
                anyhow::bail!(
                    "collector acknowledged {} but {last} was sent",
                    ack.stored_seq
                );
            }
            self.buffer.ack_stream(&stream, ack.stored_seq).await?;
            tracing::debug!(
                events = n,
                stored_seq = ack.stored_seq,
                duplicates = ack.duplicates,
                "batch acknowledged"
            );
            sent = ack.stored_seq;
        }
    }

    /// Measures the clock offset (agent − collector) with [`PROBES`] probes,
    /// keeps the one with the shortest round trip, stamps it on new events
    /// and reports it with the backlog in a `Status`.
    async fn measure_clock(
        &self,
        tx: &mpsc::Sender<ShipRequest>,
        responses: &mut Responses,
    ) -> anyhow::Result<()> {
        let clock = &self.ctx.clock;
        let mut best: Option<(i64, i64)> = None; // (rtt, offset), µs
        for _ in 0..PROBES {
            let t1 = clock.now_us();
            tx.send(ShipRequest {
                msg: Some(ship_request::Msg::TimeProbe(TimeProbe { t1_us: t1 })),
            })
            .await
            .map_err(|_| anyhow::anyhow!("stream to collector closed"))?;
            let reply = match tokio::time::timeout(PROBE_TIMEOUT, next_msg(responses)).await {
                Err(_) => {
                    anyhow::bail!("no answer to a clock probe in {}s", PROBE_TIMEOUT.as_secs())
                }
                Ok(r) => r?,
            };
            let t4 = clock.now_us();
            let r = match reply {
                ship_response::Msg::TimeReply(r) => r,
                other => anyhow::bail!("collector sent {other:?} instead of TimeReply"),
            };
            if r.t1_us != t1 {
                anyhow::bail!("collector answered clock probe {} to probe {t1}", r.t1_us);
            }
            let (rtt, offset) = offset_us(t1, r.t2_us, r.t3_us, t4);
            if best.is_none_or(|(b, _)| rtt < b) {
                best = Some((rtt, offset));
            }
        }
        let Some((rtt_us, offset_us)) = best else {
            return Ok(());
        };
        let offset_ms = offset_us.div_euclid(1000);
        let previous = clock.offset_ms();
        clock.set_offset_ms(offset_ms);
        if previous.is_none_or(|p| (p - offset_ms).abs() >= 100) {
            tracing::info!(
                offset_ms,
                rtt_us,
                "clock offset to the collector (agent - collector)"
            );
        }
        let backlog = self.buffer.backlog();
        let head = self.buffer.chain_head();
        tx.send(ShipRequest {
            msg: Some(ship_request::Msg::Status(Status {
                backlog_events: backlog.queued as u64,
                backlog_bytes: backlog.bytes,
                buffer_problem: backlog.problem.unwrap_or_default(),
                clock_offset_ms: offset_ms,
                rtt_us,
                chain_head_seq: head.map_or(0, |h| h.seq),
                chain_head: head.map(|h| h.sha256.to_vec()).unwrap_or_default(),
                config_sha256: self.config_sha256.get(),
            })),
        })
        .await
        .map_err(|_| anyhow::anyhow!("stream to collector closed"))?;
        Ok(())
    }

    /// Uploads the blobs of `batch` the collector does not have; returns
    /// those that cannot be supplied (the buffer no longer holds them, or
    /// the collector refuses them for good), each with the reason.
    async fn upload_blobs(
        &self,
        client: &mut IngestClient<Channel>,
        batch: &[Recorded],
    ) -> anyhow::Result<Vec<(String, String)>> {
        let mut shas: Vec<String> = batch
            .iter()
            .filter_map(|r| buffer::raw_sha(&r.event))
            .collect();
        shas.sort();
        shas.dedup();
        if shas.is_empty() {
            return Ok(Vec::new());
        }
        let missing = client
            .missing_blobs(MissingBlobsRequest { sha256: shas })
            .await?
            .into_inner()
            .sha256;
        // Several uploads at once: the collector makes each blob durable
        // (two fsyncs) before answering, and concurrent fsyncs share the
        // file system's journal commits; one at a time held a single agent
        // to ~100 mails/s (BENCHMARKS.md, issue 6).
        let uploads = missing.into_iter().map(|sha| {
            let client = client.clone();
            async move {
                let unsupplied = self.upload_blob(client, sha.clone()).await?;
                anyhow::Ok(unsupplied.map(|why| (sha, why)))
            }
        });
        let mut uploads = futures::stream::iter(uploads).buffer_unordered(UPLOADS_IN_FLIGHT);
        let mut lost = Vec::new();
        while let Some(r) = uploads.next().await {
            lost.extend(r?);
        }
        Ok(lost)
    }

    /// Uploads one blob from the buffer. `Some(reason)` when it cannot be
    /// supplied: the buffer does not have it, or the collector refuses it
    /// in a way no retry changes (its hash or size does not match what was
    /// read, it is over the collector's `max_blob_bytes`). Holding the
    /// event back for those would stall the stream for good, fill the
    /// buffer and make the relay refuse mail; transient refusals (a full
    /// collector disk: `Unavailable`) are errors, retried.
    async fn upload_blob(
        &self,
        client: IngestClient<Channel>,
        sha: String,
    ) -> anyhow::Result<Option<String>> {
        match self.send_blob(client, &sha).await {
            Ok(outcome) => Ok(outcome),
            Err(e) => match e.downcast_ref::<tonic::Status>() {
                Some(s) if refused_for_good(s.code()) => {
                    tracing::error!(sha256 = %sha, code = ?s.code(), error = %s.message(), "the collector refuses this blob for good; its event is shipped saying so");
                    Ok(Some(format!(
                        "refused by the collector: {}",
                        kiroku_common::quote::quote(s.message())
                    )))
                }
                _ => Err(e),
            },
        }
    }

    async fn send_blob(
        &self,
        mut client: IngestClient<Channel>,
        sha: &str,
    ) -> anyhow::Result<Option<String>> {
        let sha = sha.to_owned();
        let (file, size) = match self.buffer.blob_file(&sha).await? {
            Some(buffer::BlobSource::File(f, size)) => (f, size),
            Some(buffer::BlobSource::Bytes(data)) => {
                let size = data.len() as u64;
                let chunks: Vec<BlobChunk> = data
                    .chunks(BLOB_CHUNK)
                    .enumerate()
                    .map(|(i, c)| BlobChunk {
                        sha256: if i == 0 { sha.clone() } else { String::new() },
                        size: if i == 0 { size } else { 0 },
                        data: c.to_vec(),
                    })
                    .collect();
                let chunks = if chunks.is_empty() {
                    vec![BlobChunk {
                        sha256: sha.clone(),
                        size: 0,
                        data: Vec::new(),
                    }]
                } else {
                    chunks
                };
                client.put_blob(futures::stream::iter(chunks)).await?;
                tracing::debug!(sha256 = %sha, size, "blob uploaded");
                return Ok(None);
            }
            None => {
                // The event names content the buffer no longer has: it is
                // shipped saying so (`lost_reason`) rather than held back
                // forever.
                tracing::error!(sha256 = %sha, "blob referenced by an event is not in the buffer; the event is shipped marked as lost on the agent");
                return Ok(Some(LOST_ON_AGENT.to_owned()));
            }
        };
        // Read and sent one chunk at a time: a 50 MB message never sits
        // in memory. A read error ends the stream short; the collector
        // then refuses the blob (size/hash mismatch) and the batch is
        // retried.
        let first = sha.clone();
        let chunks = futures::stream::unfold((file, 0u64, false), move |(mut f, sent, done)| {
            let first = first.clone();
            async move {
                if done {
                    return None;
                }
                let mut buf = vec![0u8; BLOB_CHUNK];
                let mut n = 0;
                while n < BLOB_CHUNK {
                    match tokio::io::AsyncReadExt::read(&mut f, &mut buf[n..]).await {
                        Ok(0) => break,
                        Ok(k) => n += k,
                        Err(e) => {
                            tracing::error!(sha256 = %first, error = %e, "reading a blob from the buffer");
                            break;
                        }
                    }
                }
                buf.truncate(n);
                let is_first = sent == 0;
                if n == 0 && !is_first {
                    return None;
                }
                let chunk = BlobChunk {
                    sha256: if is_first { first } else { String::new() },
                    size: if is_first { size } else { 0 },
                    data: buf,
                };
                Some((chunk, (f, sent + n as u64, n < BLOB_CHUNK)))
            }
        });
        client.put_blob(chunks).await?;
        tracing::debug!(sha256 = %sha, size, "blob uploaded");
        Ok(None)
    }
}

/// The next message on the Ship stream; `Shutdown` becomes [`GoingAway`].
/// Cancel-safe (only awaits the stream).
async fn next_msg(responses: &mut Responses) -> anyhow::Result<ship_response::Msg> {
    match responses.message().await? {
        Some(ShipResponse {
            msg: Some(ship_response::Msg::Shutdown(s)),
        }) => Err(GoingAway {
            reason: s.reason,
            reconnect_after: Duration::from_millis(u64::from(s.reconnect_after_ms)),
        }
        .into()),
        Some(ShipResponse { msg: Some(m) }) => Ok(m),
        Some(ShipResponse { msg: None }) => anyhow::bail!("collector sent an empty message"),
        None => anyhow::bail!("collector ended the stream"),
    }
}

/// A PutBlob refusal that no retry of the same bytes changes.
fn refused_for_good(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::InvalidArgument | tonic::Code::ResourceExhausted | tonic::Code::OutOfRange
    )
}

/// Why the raw message `event` names cannot be supplied, if it is in
/// `lost` (the collector lacks it and the agent cannot send it).
fn lost_reason<'a>(event: &kiroku_proto::Event, lost: &'a [(String, String)]) -> Option<&'a str> {
    let sha = buffer::raw_sha(event)?;
    let (_, why) = lost.iter().find(|(s, _)| *s == sha)?;
    tracing::error!(seq = event.seq, sha256 = %sha, reason = %why, "event shipped without its raw message");
    Some(why)
}

/// The batch as recorded: each event's queued bytes untouched, a lost raw
/// message said beside it (`RecordedEvent.raw_not_kept`).
fn recorded_batch(batch: Vec<Recorded>, lost: &[(String, String)]) -> Batch {
    let recorded = batch
        .into_iter()
        .map(|r| RecordedEvent {
            raw_not_kept: lost_reason(&r.event, lost).unwrap_or_default().to_owned(),
            event: r.bytes,
        })
        .collect();
    Batch {
        recorded,
        ..Default::default()
    }
}

/// The batch decoded, for a collector that does not read recorded bytes:
/// a lost raw message is said on the decoded copy
/// (`EmailEvent.raw_not_kept`), which the collector then stores as such.
fn decoded_batch(batch: Vec<Recorded>, lost: &[(String, String)]) -> Batch {
    let events = batch
        .into_iter()
        .map(|r| {
            let mut e = r.event;
            if let Some(why) = lost_reason(&e, lost)
                && let Some(kiroku_proto::event::Kind::Email(m)) = &mut e.kind
            {
                m.raw_not_kept = why.to_owned();
            }
            e
        })
        .collect();
    Batch {
        events,
        ..Default::default()
    }
}

/// Round trip and offset (agent − collector) of one probe, µs: t1 and t4 on
/// the agent's clock, t2 and t3 on the collector's (RFC 5905 on-wire).
fn offset_us(t1: i64, t2: i64, t3: i64, t4: i64) -> (i64, i64) {
    let rtt = (t4 - t1) - (t3 - t2);
    let collector_minus_agent = ((t2 - t1) + (t3 - t4)) / 2;
    (rtt.max(0), -collector_minus_agent)
}

#[cfg(test)]
mod tests {
    use kiroku_proto::{EmailEvent, Event, event::Kind};
    use prost::Message;

    /// Recorded batches carry the queued bytes untouched and say a lost
    /// raw message beside the event; decoded batches (older collectors)
    /// say it on the decoded copy. Only events whose blob is lost.
    #[test]
    fn only_events_whose_blob_is_lost_are_marked() {
        let mail = |seq, sha: &str| {
            let event = Event {
                seq,
                kind: Some(Kind::Email(EmailEvent {
                    raw_sha256: sha.into(),
                    ..Default::default()
                })),
                ..Default::default()
            };
            super::Recorded {
                seq,
                bytes: event.encode_to_vec(),
                event,
            }
        };
        let aa = "a".repeat(64);
        let bb = "b".repeat(64);
        let batch = vec![mail(1, &aa), mail(2, &bb), mail(3, ""), mail(4, &aa)];
        let lost = [(aa.clone(), super::LOST_ON_AGENT.to_owned())];
        let recorded = super::recorded_batch(batch.clone(), &lost);
        assert!(recorded.events.is_empty());
        let marked: Vec<bool> = recorded
            .recorded
            .iter()
            .map(|r| !r.raw_not_kept.is_empty())
            .collect();
        assert_eq!(marked, vec![true, false, false, true]);
        for (r, b) in recorded.recorded.iter().zip(&batch) {
            assert_eq!(r.event, b.bytes, "shipped untouched");
        }
        let decoded = super::decoded_batch(batch, &lost);
        assert!(decoded.recorded.is_empty());
        let not_kept: Vec<bool> = decoded
            .events
            .iter()
            .map(|e| match &e.kind {
                Some(Kind::Email(m)) => !m.raw_not_kept.is_empty(),
                _ => false,
            })
            .collect();
        assert_eq!(not_kept, vec![true, false, false, true]);
    }

    #[test]
    fn offset_is_agent_minus_collector() {
        // Agent 5 s ahead; 2 ms each way; collector holds it 1 ms.
        let (t1, t2, t3, t4) = (105_000_000, 100_002_000, 100_003_000, 105_005_000);
        assert_eq!(super::offset_us(t1, t2, t3, t4), (4_000, 5_000_000));
        // Agent 5 s behind.
        let (t1, t2, t3, t4) = (95_000_000, 100_002_000, 100_003_000, 95_005_000);
        assert_eq!(super::offset_us(t1, t2, t3, t4), (4_000, -5_000_000));
    }
}
