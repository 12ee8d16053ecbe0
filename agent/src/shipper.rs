//! Ships buffered events to the collector over one long-lived mutually
//! authenticated gRPC stream (`Ingest.Ship`): Hello → Welcome (the
//! collector says what it already stored), then batches, each acknowledged
//! once durable. Blobs referenced by a batch are uploaded first, and only
//! those the collector does not have. The buffer drops only acknowledged
//! events. Failures reconnect with exponential backoff and jitter.

use std::sync::Arc;
use std::time::Duration;

use kiroku_proto::ingest_client::IngestClient;
use kiroku_proto::{
    Batch, BlobChunk, Hello, HostIdentity, MissingBlobsRequest, ShipRequest, ship_request,
    ship_response,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::buffer::{self, Buffer};

/// Events per batch and encoded bytes per batch (under the 4 MiB gRPC
/// default message limit).
const BATCH_EVENTS: usize = 1000;
const BATCH_BYTES: usize = 2 * 1024 * 1024;
const BLOB_CHUNK: usize = 1024 * 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Longest wait for an acknowledgement before the stream is considered dead.
const ACK_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Shipper {
    pub buffer: Arc<Buffer>,
    pub endpoint: String,
    pub tls: ClientTlsConfig,
    pub host: HostIdentity,
}

impl Shipper {
    /// Runs until the task is dropped.
    pub async fn run(self) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let started = tokio::time::Instant::now();
            match self.session().await {
                Ok(()) => {}
                Err(e) => {
                    let backlog = self.buffer.backlog();
                    tracing::warn!(
                        collector = %self.endpoint, error = %format!("{e:#}"), queued = backlog.queued,
                        "shipping to the collector failed; events stay buffered, retrying"
                    );
                }
            }
            // A session that ran a while was healthy: start backoff afresh.
            if started.elapsed() > Duration::from_secs(30) {
                backoff = BACKOFF_MIN;
            }
            let jitter = rand::random_range(0.5..1.5);
            tokio::time::sleep(backoff.mul_f64(jitter)).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn connect(&self) -> anyhow::Result<IngestClient<Channel>> {
        let channel = Endpoint::from_shared(self.endpoint.clone())?
            .tls_config(self.tls.clone())?
            .connect_timeout(Duration::from_secs(10))
            .tcp_keepalive(Some(Duration::from_secs(30)))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20))
            .connect()
            .await?;
        Ok(IngestClient::new(channel)
            .send_compressed(CompressionEncoding::Zstd)
            .accept_compressed(CompressionEncoding::Zstd))
    }

    async fn session(&self) -> anyhow::Result<()> {
        let mut client = self.connect().await?;
        let (tx, rx) = mpsc::channel::<ShipRequest>(4);
        tx.send(ShipRequest {
            msg: Some(ship_request::Msg::Hello(Hello {
                stream_id: self.buffer.stream_id().to_owned(),
                host: Some(self.host.clone()),
                agent_version: kiroku_common::VERSION.to_owned(),
            })),
        })
        .await?;
        let mut responses = client.ship(ReceiverStream::new(rx)).await?.into_inner();
        let welcome = match responses.message().await? {
            Some(kiroku_proto::ShipResponse {
                msg: Some(ship_response::Msg::Welcome(w)),
            }) => w,
            other => anyhow::bail!("collector sent {other:?} instead of Welcome"),
        };
        tracing::info!(collector = %self.endpoint, agent_id = %welcome.agent_id, stored_seq = welcome.stored_seq, "connected to collector");
        self.buffer.ack(welcome.stored_seq).await?;
        let mut sent = welcome.stored_seq;
        loop {
            let batch = self.buffer.read_batch(sent, BATCH_EVENTS, BATCH_BYTES)?;
            if batch.is_empty() {
                tokio::select! {
                    _ = self.buffer.appended() => {}
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
                continue;
            }
            self.upload_blobs(&mut client, &batch).await?;
            let last = batch.last().map_or(sent, |e| e.seq);
            let n = batch.len();
            tx.send(ShipRequest {
                msg: Some(ship_request::Msg::Batch(Batch { events: batch })),
            })
            .await
            .map_err(|_| anyhow::anyhow!("stream to collector closed"))?;
            let ack = match tokio::time::timeout(ACK_TIMEOUT, responses.message()).await {
                Err(_) => anyhow::bail!("no acknowledgement in {}s", ACK_TIMEOUT.as_secs()),
                Ok(r) => r?,
            };
            let ack = match ack {
                Some(kiroku_proto::ShipResponse {
                    msg: Some(ship_response::Msg::Ack(a)),
                }) => a,
                other => anyhow::bail!("collector sent {other:?} instead of Ack"),
            };
            if ack.stored_seq < last {
                anyhow::bail!(
                    "collector acknowledged {} but {last} was sent",
                    ack.stored_seq
                );
            }
            self.buffer.ack(ack.stored_seq).await?;
            tracing::debug!(
                events = n,
                stored_seq = ack.stored_seq,
                duplicates = ack.duplicates,
                "batch acknowledged"
            );
            sent = ack.stored_seq;
        }
    }

    async fn upload_blobs(
        &self,
        client: &mut IngestClient<Channel>,
        batch: &[kiroku_proto::Event],
    ) -> anyhow::Result<()> {
        let mut shas: Vec<String> = batch.iter().filter_map(buffer::raw_sha).collect();
        shas.sort();
        shas.dedup();
        if shas.is_empty() {
            return Ok(());
        }
        let missing = client
            .missing_blobs(MissingBlobsRequest { sha256: shas })
            .await?
            .into_inner()
            .sha256;
        for sha in missing {
            let Some((file, size)) = self.buffer.blob_file(&sha).await? else {
                // Recorded without content (e.g. over the size limit): the
                // event says so; nothing to upload.
                tracing::warn!(sha256 = %sha, "blob referenced by an event is not in the buffer");
                continue;
            };
            // Read and sent one chunk at a time: a 50 MB message never sits
            // in memory. A read error ends the stream short; the collector
            // then refuses the blob (size/hash mismatch) and the batch is
            // retried.
            let first = sha.clone();
            let chunks = futures::stream::unfold(
                (file, 0u64, false),
                move |(mut f, sent, done)| {
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
                },
            );
            client.put_blob(chunks).await?;
            tracing::debug!(sha256 = %sha, size, "blob uploaded");
        }
        Ok(())
    }
}
