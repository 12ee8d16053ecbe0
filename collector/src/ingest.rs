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

use kiroku_common::quote::quote;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use kiroku_common::pki::PeerIdentity;
use kiroku_proto::ingest_server::Ingest;
use kiroku_proto::{
    Ack, Batch, BlobChunk, Event, HostInfo, MissingBlobsRequest, MissingBlobsResponse,
    PutBlobResponse, ShipRequest, ShipResponse, TimeReply, Welcome, event::Kind, ship_request,
    ship_response,
};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::auth;
use crate::store::Store;

mod chain;
mod commit;

pub use commit::Committer;
use commit::Incoming;

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

/// How soon an agent told to go away (`Shutdown`) should try again.
const RECONNECT_AFTER_SHUTDOWN_MS: u32 = 1000;
/// Most missing blobs named in one Ack.
const MISSING_BLOBS_MAX: usize = 1000;

/// Resolves once `stopping` is true; never without a shutdown signal.
async fn stopped(stopping: &mut Option<tokio::sync::watch::Receiver<bool>>) {
    if let Some(rx) = stopping
        && rx.wait_for(|s| *s).await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

/// The raw message an event says the collector holds: `raw_sha256`, unless
/// the agent stated that the content could not be kept (`raw_not_kept`).
fn held_raw(e: &Event) -> Option<&str> {
    match &e.kind {
        Some(Kind::Email(m)) if !m.raw_sha256.is_empty() && m.raw_not_kept.is_empty() => {
            Some(&m.raw_sha256)
        }
        _ => None,
    }
}

/// Whether the collector holds blob `sha` as far as `uploader` may know:
/// stored, and uploaded by that identity itself. Whether another host's
/// content is stored is not the business of an agent (it would be an
/// oracle for "was this document ever mailed?"); the price is that two
/// agents with the same raw message each upload it once (stored once).
/// Blocking (file system, sled).
fn held_for(store: &Store, uploader: &str, sha: &str) -> bool {
    if !store.meta.uploaded_by(uploader, sha).unwrap_or(false) {
        return false;
    }
    // The agent goes on as if it were held: a purge must spare it a
    // while. The claim comes before the look, and a purge reads claims
    // under the blob store's lock as it removes: either it sees this
    // claim, or the blob is gone before `has` and the agent uploads it.
    if let Err(e) = store.meta.claim_blob(sha, crate::clock::now_ms()) {
        tracing::warn!(sha256 = %sha, error = %e, "cannot note a blob's claim; not trusting the stored copy");
        return false;
    }
    store.blobs.has(sha)
}

/// Cuts a batch just before its first event whose raw message the
/// collector does not hold (for `uploader`, see [`held_for`]), and names
/// the missing blobs from there on (at most [`MISSING_BLOBS_MAX`]). An
/// event is never acknowledged before its blob is stored: its agent
/// uploads the blobs (or states that it lost them) and sends the rest
/// again. Blocking (file system).
fn cut_at_missing_blob(store: &Store, uploader: &str, events: &mut Vec<Incoming>) -> Vec<String> {
    let missing = |i: &Incoming| {
        held_raw(&i.event)
            .filter(|sha| !held_for(store, uploader, sha))
            .map(str::to_owned)
    };
    let Some((first, sha)) = events
        .iter()
        .enumerate()
        .find_map(|(i, e)| missing(e).map(|sha| (i, sha)))
    else {
        return Vec::new();
    };
    let mut shas: Vec<String> = std::iter::once(sha)
        .chain(events[first + 1..].iter().filter_map(missing))
        .take(MISSING_BLOBS_MAX)
        .collect();
    shas.sort();
    shas.dedup();
    events.truncate(first);
    shas
}

/// The stream of the integrity records the collector writes about an
/// agent's streams (its own sequence numbers per agent).
pub const INTEGRITY_STREAM: &str = "integrity";

/// Tag on events from a host whose clock offset is beyond the threshold.
pub const CLOCK_SKEW_TAG: &str = "clock-skew";

/// What one Ship stream knows about its agent's clock.
#[derive(Default, Clone, Copy)]
struct SessionClock {
    /// agent − collector, from the agent's last Status.
    offset_ms: Option<i64>,
}

fn micros_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Updates the stored host record with `f` (blocking: sled).
/// Records in the audit log an agent identity seen for the first time, or
/// connecting with another certificate than before (issued anew).
fn audit_identity(
    store: &Store,
    id: &kiroku_common::pki::PeerIdentity,
    hello: &kiroku_proto::Hello,
    cert_sha: &str,
) -> Result<(), Status> {
    use crate::store::audit::admin_call;
    let internal = |e: String| Status::internal(e);
    let known = store
        .meta
        .host(&id.name)
        .map_err(|e| internal(e.to_string()))?
        .is_some();
    let before = store
        .meta
        .agent_cert(&id.name)
        .map_err(|e| internal(e.to_string()))?;
    let host = hello.host.as_ref().map_or("", |h| h.hostname.as_str());
    let entry = if !known {
        Some((
            admin_call::AGENT_IDENTITY_SEEN,
            format!(
                "agent identity {id} connected for the first time: stream {}, host {}, certificate sha256 {cert_sha}",
                hello.stream_id,
                quote(host)
            ),
        ))
    } else if before.as_deref().is_some_and(|b| b != cert_sha) {
        Some((
            admin_call::AGENT_CERT_CHANGED,
            format!(
                "agent identity {id} connected with another certificate: sha256 {cert_sha}, before {}",
                before.as_deref().unwrap_or_default()
            ),
        ))
    } else {
        None
    };
    if let Some((call, detail)) = entry {
        store
            .audit_admin(&id.to_string(), call, &detail)
            .map_err(|e| {
                Status::unavailable(format!(
                    "the collector cannot record this agent in its audit log ({e}); try again later"
                ))
            })?;
    }
    if before.as_deref() != Some(cert_sha) && !cert_sha.is_empty() {
        store
            .meta
            .note_agent_cert(&id.name, cert_sha)
            .map_err(|e| internal(e.to_string()))?;
    }
    Ok(())
}

fn update_host(store: &Store, agent_id: &str, f: impl FnOnce(&mut HostInfo)) -> Result<(), Status> {
    let mut info = store
        .meta
        .host(agent_id)
        .map_err(|e| Status::internal(e.to_string()))?
        .unwrap_or_default();
    info.agent_id = agent_id.to_owned();
    f(&mut info);
    store
        .meta
        .put_host(&info)
        .map_err(|e| Status::internal(e.to_string()))
}

/// Whether a Hello's `stream_id` is acceptable (public for the fuzz
/// targets in `fuzz/`).
#[doc(hidden)]
pub fn valid_stream_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether an agent clock offset (agent − collector) is beyond the
/// threshold either way.
#[doc(hidden)]
pub fn clock_flagged(offset_ms: i64, threshold_ms: i64) -> bool {
    offset_ms.abs() > threshold_ms
}

/// Tags an event from a host whose clock is off beyond the threshold. An
/// event recorded before its agent measured the offset is judged by the
/// offset the agent reported on this stream (the event itself is not
/// changed: `clock_offset_known` stays false).
fn check_clock(e: &mut Event, session: SessionClock, threshold_ms: i64) {
    let offset = if e.clock_offset_known {
        Some(e.clock_offset_ms)
    } else {
        session.offset_ms
    };
    if offset.is_some_and(|o| clock_flagged(o, threshold_ms))
        && !e.tags.iter().any(|t| t == CLOCK_SKEW_TAG)
    {
        e.tags.push(CLOCK_SKEW_TAG.to_owned());
    }
}

/// Checks one event of a batch and fills in what the collector owns.
fn admit(e: &mut Event, id: &PeerIdentity, stream_id: &str, now: i64) -> Result<(), Status> {
    if !e.agent_id.is_empty() && e.agent_id != id.name {
        tracing::warn!(identity = %id, claimed = %e.agent_id, "refused: agent tried to submit events as another agent");
        return Err(Status::permission_denied(format!(
            "{id} may only submit its own events, not events of agent {}",
            quote(&e.agent_id)
        )));
    }
    if e.stream_id != stream_id {
        return Err(Status::invalid_argument(format!(
            "event seq {} names stream {} but this stream is {}",
            e.seq,
            quote(&e.stream_id),
            quote(stream_id)
        )));
    }
    if e.seq == 0 {
        return Err(Status::invalid_argument("event without a sequence number"));
    }
    if e.kind.is_none() {
        return Err(Status::invalid_argument(format!(
            "event seq {} has no kind",
            e.seq
        )));
    }
    if matches!(e.kind, Some(Kind::Integrity(_))) {
        return Err(Status::invalid_argument(format!(
            "event seq {} is an integrity record: only the collector writes those",
            e.seq
        )));
    }
    e.agent_id = id.name.clone();
    e.event_id = format!("{}/{}/{}", id.name, stream_id, e.seq);
    e.received_at_ms = now;
    // The group is the certificate's ([`admit_incoming`] sets it), never
    // the agent's own say.
    e.agent_group.clear();
    confine_tags(e, id);
    Ok(())
}

/// Tags in the collector's namespaces (`alert:…`, `clock-skew`) come only
/// from the collector: whatever else an agent sent is kept under `agent:`
/// (`kiroku_common::vocabulary`), before the collector adds its own.
fn confine_tags(e: &mut Event, id: &PeerIdentity) {
    let moved = kiroku_common::vocabulary::confine_agent_tags(&mut e.tags);
    if moved > 0 {
        tracing::debug!(identity = %id, event_id = %e.event_id, moved, "tags an agent may not set kept under agent:");
    }
}

/// Everything the collector checks and fills in on a decoded batch before
/// it goes to the committer: [`admit`] on each event (identity from the
/// certificate, stream, sequence number, kind), then the clock-skew tag
/// (`session_offset_ms`: the offset the agent last reported on this
/// stream). Public for the fuzz targets in `fuzz/`; the Ship stream uses it.
#[doc(hidden)]
pub fn admit_batch(
    events: &mut [Event],
    id: &PeerIdentity,
    stream_id: &str,
    session_offset_ms: Option<i64>,
    threshold_ms: i64,
    now_ms: i64,
) -> Result<(), Status> {
    events
        .iter_mut()
        .try_for_each(|e| admit(e, id, stream_id, now_ms))?;
    let session = SessionClock {
        offset_ms: session_offset_ms,
    };
    for e in events.iter_mut() {
        check_clock(e, session, threshold_ms);
    }
    Ok(())
}

/// A batch decoded and admitted ([`admit_batch`]), each event with the
/// bytes to journal: `Batch.recorded` as the agent's buffer holds them
/// (the shipper's `raw_not_kept` note set in the merged view), or an
/// older agent's `Batch.events` encoded as received (before the
/// collector's additions).
fn admit_incoming(
    batch: Batch,
    id: &PeerIdentity,
    group: &str,
    stream_id: &str,
    session_offset_ms: Option<i64>,
    threshold_ms: i64,
    now_ms: i64,
) -> Result<Vec<Incoming>, Status> {
    if !batch.events.is_empty() && !batch.recorded.is_empty() {
        return Err(Status::invalid_argument(
            "a batch carries either events or recorded events, not both",
        ));
    }
    let reencoded = batch.recorded.is_empty();
    let (mut events, mut raw) = (Vec::new(), Vec::new());
    if reencoded {
        raw = batch
            .events
            .iter()
            .map(|e| (e.encode_to_vec(), String::new()))
            .collect();
        events = batch.events;
    } else {
        for (n, r) in batch.recorded.into_iter().enumerate() {
            let mut e = Event::decode(r.event.as_slice()).map_err(|err| {
                Status::invalid_argument(format!(
                    "recorded event {n} of the batch does not decode as an Event: {err}"
                ))
            })?;
            if !r.raw_not_kept.is_empty()
                && let Some(Kind::Email(m)) = &mut e.kind
            {
                m.raw_not_kept.clone_from(&r.raw_not_kept);
            }
            events.push(e);
            raw.push((r.event, r.raw_not_kept));
        }
    }
    admit_batch(
        &mut events,
        id,
        stream_id,
        session_offset_ms,
        threshold_ms,
        now_ms,
    )?;
    for e in &mut events {
        group.clone_into(&mut e.agent_group);
    }
    Ok(events
        .into_iter()
        .zip(raw)
        .map(|(event, (recorded, raw_not_kept))| Incoming {
            event,
            recorded,
            raw_not_kept,
            reencoded,
        })
        .collect())
}

type ShipStream = Pin<Box<dyn Stream<Item = Result<ShipResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Ingest for IngestService {
    type ShipStream = ShipStream;

    async fn ship(
        &self,
        req: Request<Streaming<ShipRequest>>,
    ) -> Result<Response<ShipStream>, Status> {
        let id = auth::caller(&req)?;
        let cert_sha = req
            .peer_certs()
            .and_then(|c| c.first().map(|c| kiroku_common::sha256_hex(c.as_ref())))
            .unwrap_or_default();
        // The agent's group, from its certificate: set on every event it
        // ships (over whatever the agent put there) and on its host record.
        let group = auth::peer_group(&req)?;
        let cert_der = req
            .peer_certs()
            .and_then(|c| c.first().map(|c| c.as_ref().to_vec()))
            .unwrap_or_default();
        let mut inbound = req.into_inner();
        let hello = match inbound.message().await? {
            Some(ShipRequest {
                msg: Some(ship_request::Msg::Hello(h)),
            }) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message of Ship must be Hello",
                ));
            }
        };
        if hello.stream_id == INTEGRITY_STREAM {
            return Err(Status::invalid_argument(format!(
                "stream_id {INTEGRITY_STREAM} is the collector's own (its integrity records); an agent stream must be named otherwise"
            )));
        }
        if !valid_stream_id(&hello.stream_id) {
            return Err(Status::invalid_argument(format!(
                "invalid stream_id {}: 1-64 characters of letters, digits, '-' and '_'",
                quote(&hello.stream_id)
            )));
        }
        let stream_id = hello.stream_id.clone();
        let store = self.store.clone();
        let stored_seq = {
            let (store, id, hello) = (store.clone(), id.clone(), hello.clone());
            let group = group.clone();
            tokio::task::spawn_blocking(move || -> Result<u64, Status> {
                crate::agents::on_connect(&store, &id, &cert_der)?;
                audit_identity(&store, &id, &hello, &cert_sha)?;
                update_host(&store, &id.name, |info| {
                    info.host = hello.host.clone();
                    info.last_seen_ms = kiroku_common::now_ms();
                    info.agent_group = group;
                })?;
                store
                    .meta
                    .stored_seq(&id.name, &hello.stream_id)
                    .map_err(|e| Status::internal(e.to_string()))
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))??
        };
        tracing::info!(agent_id = %id.name, stream_id = %stream_id, stored_seq, version = %hello.agent_version, "agent connected");

        let (tx, rx) = mpsc::channel::<Result<ShipResponse, Status>>(4);
        tx.send(Ok(ShipResponse {
            msg: Some(ship_response::Msg::Welcome(Welcome {
                stored_seq,
                agent_id: id.name.clone(),
                collector_time_ms: kiroku_common::now_ms(),
                // Agents send their buffer's bytes (`Batch.recorded`) only
                // to a collector that says it reads them.
                accepts_recorded: true,
            })),
        }))
        .await
        .map_err(|_| Status::cancelled("client went away"))?;
        let committer = self.committer.clone();
        let threshold = self.clock_threshold_ms;
        let live = store.meta.connected(&id.name);
        let mut stopping = self.stopping.clone();
        let checkpoints = self.checkpoints.clone();
        let mut checkpoint_sent = 0u64;
        tokio::spawn(async move {
            let _live = live;
            let mut clock = SessionClock::default();
            loop {
                // Between requests (never while a batch is being stored)
                // a shutdown ends the stream with `Shutdown`.
                let next = tokio::select! {
                    m = inbound.message() => m,
                    () = stopped(&mut stopping) => {
                        tracing::info!(agent_id = %id.name, stream_id = %stream_id, "ship stream ended: collector shutting down");
                        let bye = ship_response::Msg::Shutdown(kiroku_proto::Shutdown {
                            reason: "collector shutting down".into(),
                            reconnect_after_ms: RECONNECT_AFTER_SHUTDOWN_MS,
                        });
                        let _ = tx.send(Ok(ShipResponse { msg: Some(bye) })).await;
                        break;
                    }
                };
                let msg = match next {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(e) => {
                        // Tell the agent why (e.g. a message over the size
                        // limit) rather than ending the stream silently.
                        tracing::warn!(agent_id = %id.name, error = %e, "ship stream ended with an error");
                        let _ = tx.send(Err(e)).await;
                        break;
                    }
                };
                let batch = match msg.msg {
                    Some(ship_request::Msg::Batch(b)) => b,
                    Some(ship_request::Msg::TimeProbe(p)) => {
                        let t2 = micros_now();
                        let reply = TimeReply {
                            t1_us: p.t1_us,
                            t2_us: t2,
                            t3_us: micros_now(),
                        };
                        let msg = ShipResponse {
                            msg: Some(ship_response::Msg::TimeReply(reply)),
                        };
                        if tx.send(Ok(msg)).await.is_err() {
                            break;
                        }
                        continue;
                    }
                    Some(ship_request::Msg::Status(st)) => {
                        clock.offset_ms = Some(st.clock_offset_ms);
                        let flagged = clock_flagged(st.clock_offset_ms, threshold);
                        if flagged {
                            tracing::warn!(agent_id = %id.name, offset_ms = st.clock_offset_ms, threshold_ms = threshold, "agent clock is off beyond the threshold; its events are tagged {CLOCK_SKEW_TAG}");
                        }
                        if !st.buffer_problem.is_empty() {
                            tracing::warn!(agent_id = %id.name, problem = %st.buffer_problem, "the agent reports that its buffer refuses new records");
                        }
                        let head = (st.chain_head_seq, st.chain_head.clone());
                        let (store, name) = (store.clone(), id.name.clone());
                        let res = tokio::task::spawn_blocking(move || {
                            update_host(&store, &name, |info| {
                                info.clock_offset_ms = st.clock_offset_ms;
                                info.clock_offset_known = true;
                                info.clock_flagged = flagged;
                                info.backlog_events = st.backlog_events;
                                info.backlog_bytes = st.backlog_bytes;
                                info.buffer_problem = st.buffer_problem;
                                info.config_sha256 = st.config_sha256;
                                info.last_seen_ms = kiroku_common::now_ms();
                            })
                        })
                        .await;
                        if let Ok(Err(e)) | Err(e) =
                            res.map_err(|e| Status::internal(e.to_string()))
                        {
                            tracing::error!(agent_id = %id.name, error = %e, "cannot update host record");
                        }
                        // The stream's chain head: checked against what is
                        // stored, or kept until that event arrives.
                        if head.0 > 0 {
                            match <[u8; 32]>::try_from(head.1.as_slice()) {
                                Ok(hash) => {
                                    if let Err(e) =
                                        committer.head(&id.name, &stream_id, head.0, hash).await
                                    {
                                        tracing::error!(agent_id = %id.name, stream_id = %stream_id, error = %e, "cannot keep the chain head the agent reported");
                                    }
                                }
                                Err(_) => tracing::warn!(
                                    agent_id = %id.name, stream_id = %stream_id, bytes = head.1.len(),
                                    "the agent's status names a chain head that is no SHA-256 (not 32 bytes); ignored"
                                ),
                            }
                        }
                        continue;
                    }
                    _ => {
                        let _ = tx
                            .send(Err(Status::invalid_argument(
                                "expected a Batch, TimeProbe or Status",
                            )))
                            .await;
                        break;
                    }
                };
                let events = match admit_incoming(
                    batch,
                    &id,
                    &group,
                    &stream_id,
                    clock.offset_ms,
                    threshold,
                    kiroku_common::now_ms(),
                ) {
                    Ok(events) => events,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                };
                let newest_host = events.iter().rev().find_map(|i| match &i.event.kind {
                    Some(Kind::HostChange(h)) => h.identity.clone(),
                    _ => None,
                });
                let (st, mut events, uploader) = (store.clone(), events, id.to_string());
                let held = tokio::task::spawn_blocking(move || {
                    let missing = cut_at_missing_blob(&st, &uploader, &mut events);
                    (events, missing)
                })
                .await;
                let Ok((events, missing_blobs)) = held else {
                    let _ = tx
                        .send(Err(Status::internal("checking blobs failed")))
                        .await;
                    break;
                };
                if !missing_blobs.is_empty() {
                    tracing::info!(
                        agent_id = %id.name, missing = missing_blobs.len(), first = %missing_blobs[0],
                        "batch stored only up to an event whose raw message the collector does not hold; the agent is asked to upload it"
                    );
                }
                let res = committer
                    .store(&id.name, &stream_id, events)
                    .await
                    .map(|ack| Ack {
                        missing_blobs,
                        checkpoint: checkpoints.newer(&mut checkpoint_sent),
                        ..ack
                    });
                if let (Ok(_), Some(identity)) = (&res, newest_host) {
                    let (store, name) = (store.clone(), id.name.clone());
                    let _ = tokio::task::spawn_blocking(move || {
                        update_host(&store, &name, |info| info.host = Some(identity))
                    })
                    .await;
                }
                let stop = res.is_err();
                let resp = res.map(|ack| ShipResponse {
                    msg: Some(ship_response::Msg::Ack(ack)),
                });
                if tx.send(resp).await.is_err() || stop {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn missing_blobs(
        &self,
        req: Request<MissingBlobsRequest>,
    ) -> Result<Response<MissingBlobsResponse>, Status> {
        let uploader = auth::caller(&req)?.to_string();
        let shas = req.into_inner().sha256;
        if let Some(bad) = shas.iter().find(|s| !kiroku_common::is_sha256_hex(s)) {
            return Err(Status::invalid_argument(format!(
                "not a lower-case hex sha256: {}",
                quote(bad)
            )));
        }
        let store = self.store.clone();
        let missing = tokio::task::spawn_blocking(move || {
            shas.into_iter()
                .filter(|s| !held_for(&store, &uploader, s))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(MissingBlobsResponse { sha256: missing }))
    }

    async fn put_blob(
        &self,
        req: Request<Streaming<BlobChunk>>,
    ) -> Result<Response<PutBlobResponse>, Status> {
        let id = auth::caller(&req)?;
        let mut chunks = req.into_inner();
        let first = chunks
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty PutBlob stream"))??;
        let (sha, size) = (first.sha256.clone(), first.size);
        if !kiroku_common::is_sha256_hex(&sha) {
            return Err(Status::invalid_argument(format!(
                "not a lower-case hex sha256: {}",
                quote(&sha)
            )));
        }
        if size > self.max_blob_bytes {
            return Err(Status::resource_exhausted(format!(
                "blob of {size} bytes is over the collector's max_blob_bytes ({})",
                self.max_blob_bytes
            )));
        }
        // A full disk pauses blob uploads too; the agent keeps the blob and
        // uploads it again. The space stays promised to this upload until
        // it is stored, so concurrent uploads cannot together pass the
        // reserve.
        let store = self.store.clone();
        let reservation = tokio::task::spawn_blocking(move || store.disk.reserve(size))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|why| {
                tracing::warn!(identity = %id, sha256 = %sha, size, "blob upload refused: {why}");
                Status::unavailable(why)
            })?;
        // Grow with what actually arrives: an announced size is not a
        // reason to reserve memory.
        let mut data = Vec::with_capacity((size as usize).min(8 << 20));
        data.extend_from_slice(&first.data);
        while let Some(c) = chunks.next().await {
            let c = c?;
            if (data.len() + c.data.len()) as u64 > size {
                return Err(Status::invalid_argument(format!(
                    "blob {sha} is longer than its announced size {size}"
                )));
            }
            data.extend_from_slice(&c.data);
        }
        if data.len() as u64 != size {
            return Err(Status::invalid_argument(format!(
                "blob {sha}: received {} bytes, announced {size}",
                data.len()
            )));
        }
        let store = self.store.clone();
        let (sha2, uploader) = (sha.clone(), id.to_string());
        // `already_stored` only tells the agent about its own uploads.
        let stored = tokio::task::spawn_blocking(move || {
            let before = held_for(&store, &uploader, &sha2);
            // Claimed before it is stored (or found stored): a purge that
            // removes blobs reads claims under the blob store's lock, so it
            // either spares this blob or removes it before `put` looks.
            if let Err(e) = store.meta.claim_blob(&sha2, crate::clock::now_ms()) {
                tracing::error!(identity = %uploader, error = %e, "cannot note the blob's claim; it is refused for now");
                return Err(crate::store::blobs::BlobError::Io {
                    path: store.dir.join("meta"),
                    source: std::io::Error::other(e.to_string()),
                });
            }
            let stored = store.blobs.put(&sha2, &data).map(|_| before);
            drop(reservation);
            if stored.is_ok()
                && let Err(e) = store.meta.note_uploader(&uploader, &sha2)
            {
                tracing::error!(identity = %uploader, error = %e, "cannot note the blob's uploader; it will be asked for again");
            }
            stored
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| match e {
            // The disk, not the agent, is at fault: it retries later.
            crate::store::blobs::BlobError::Io { .. } => {
                tracing::error!(identity = %id, error = %e, "storing a blob failed");
                Status::unavailable(format!("collector could not store the blob: {e}"))
            }
            e => {
                tracing::warn!(identity = %id, error = %e, "blob refused");
                Status::invalid_argument(e.to_string())
            }
        })?;
        Ok(Response::new(PutBlobResponse {
            sha256: sha,
            already_stored: stored,
        }))
    }
}
