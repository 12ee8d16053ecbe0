//! The Ingest service: agents stream batches of events; the collector
//! de-duplicates them by (agent, stream, seq), stores and indexes them, and
//! acknowledges each batch only once it is durable.
//!
//! All writes go through one committer thread that takes every batch
//! waiting, indexes them, and makes them durable with a single commit
//! (group commit), so many agents share the cost of one fsync.
//!
//! Agents from issue 18 on send each event as their buffer recorded it
//! (`Batch.recorded`): the collector decodes a copy to check and index it,
//! and journals the agent's bytes untouched beside its own additions
//! (`store/journal/entry.rs`). Older agents' decoded events are
//! re-encoded.
//!
//! One concept per file: the Ship stream (`ship.rs`: the Hello, the
//! Welcome, then batches, time probes and status reports until the agent or
//! the collector ends it), what is checked and filled in on a batch before
//! it is stored (`admit.rs`), raw messages held and uploaded (`blobs.rs`),
//! the agent's host record and identity in the audit log (`hosts.rs`), the
//! committer (`commit.rs`) and the chain checks (`chain.rs`).

use std::sync::Arc;

use kiroku_proto::ingest_server::Ingest;
use kiroku_proto::{
    BlobChunk, MissingBlobsRequest, MissingBlobsResponse, PutBlobResponse, ShipRequest,
};
use tonic::{Request, Response, Status, Streaming};

use crate::store::Store;

mod admit;
mod blobs;
mod chain;
mod commit;
mod hosts;
mod ship;

pub use admit::{admit_batch, clock_flagged, valid_stream_id};
pub use commit::Committer;

pub struct IngestService {
    store: Arc<Store>,
    committer: Committer,
    max_blob_bytes: u64,
    clock_threshold_ms: i64,
    /// Becomes true when the collector shuts down (see [`Self::with_shutdown`]).
    stopping: Option<tokio::sync::watch::Receiver<bool>>,
    /// The newest signed checkpoint, sent once per Ship stream in an Ack.
    checkpoints: crate::integrity::checkpoint::CheckpointFeed,
}

impl IngestService {
    pub fn new(store: Arc<Store>, committer: Committer, max_blob_bytes: u64) -> Self {
        IngestService {
            store,
            committer,
            max_blob_bytes,
            clock_threshold_ms: crate::config::DEFAULT_CLOCK_THRESHOLD_MS,
            stopping: None,
            checkpoints: Default::default(),
        }
    }

    /// Each Ship stream sends its agent every new checkpoint once
    /// (`Ack.checkpoint`), so its heads are kept outside the collector.
    pub fn with_checkpoints(mut self, feed: crate::integrity::checkpoint::CheckpointFeed) -> Self {
        self.checkpoints = feed;
        self
    }

    /// When `stopping` becomes true, each Ship stream finishes the batch in
    /// hand, sends its agent `Shutdown` and ends, so a shutdown does not
    /// wait for idle agents.
    pub fn with_shutdown(mut self, stopping: tokio::sync::watch::Receiver<bool>) -> Self {
        self.stopping = Some(stopping);
        self
    }

    /// Hosts whose clock is further than this from the collector's are
    /// flagged, and their events tagged `clock-skew`.
    pub fn with_clock_threshold(mut self, ms: i64) -> Self {
        self.clock_threshold_ms = ms;
        self
    }
}

/// The stream of the integrity records the collector writes about an
/// agent's streams (its own sequence numbers per agent).
pub const INTEGRITY_STREAM: &str = "integrity";

/// Tag on events from a host whose clock offset is beyond the threshold.
pub const CLOCK_SKEW_TAG: &str = "clock-skew";

#[tonic::async_trait]
impl Ingest for IngestService {
    type ShipStream = ship::ShipStream;

    async fn ship(
        &self,
        req: Request<Streaming<ShipRequest>>,
    ) -> Result<Response<ship::ShipStream>, Status> {
        ship::ship(self, req).await
    }

    async fn missing_blobs(
        &self,
        req: Request<MissingBlobsRequest>,
    ) -> Result<Response<MissingBlobsResponse>, Status> {
        blobs::missing_blobs(self, req).await
    }

    async fn put_blob(
        &self,
        req: Request<Streaming<BlobChunk>>,
    ) -> Result<Response<PutBlobResponse>, Status> {
        blobs::put_blob(self, req).await
    }
}
