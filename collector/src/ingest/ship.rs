//! The Ship stream: the agent's Hello checked and answered with a
//! Welcome, then its batches admitted and handed to the committer, its
//! time probes answered and its Status reports kept, until the agent goes
//! away or the collector shuts down.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use kiroku_common::pki::PeerIdentity;
use kiroku_common::quote::quote;
use kiroku_proto::{
    Ack, Batch, Hello, ShipRequest, ShipResponse, TimeProbe, TimeReply, Welcome, event::Kind,
    ship_request, ship_response,
};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::admit::{SessionClock, admit_incoming, clock_flagged, valid_stream_id};
use super::blobs::cut_at_missing_blob;
use super::commit::Committer;
use super::hosts::{audit_identity, update_host};
use super::{CLOCK_SKEW_TAG, INTEGRITY_STREAM, IngestService};
use crate::auth;
use crate::integrity::checkpoint::CheckpointFeed;
use crate::store::Store;

/// How soon an agent told to go away (`Shutdown`) should try again.
const RECONNECT_AFTER_SHUTDOWN_MS: u32 = 1000;

/// Resolves once `stopping` is true; never without a shutdown signal.
async fn stopped(stopping: &mut Option<tokio::sync::watch::Receiver<bool>>) {
    if let Some(rx) = stopping
        && rx.wait_for(|s| *s).await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

fn micros_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

pub(super) type ShipStream = Pin<Box<dyn Stream<Item = Result<ShipResponse, Status>> + Send>>;

pub(super) async fn ship(
    svc: &IngestService,
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
    let hello = hello(&mut inbound).await?;
    let stream_id = hello.stream_id.clone();
    let store = svc.store.clone();
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
    let live = store.meta.connected(&id.name);
    let stopping = svc.stopping.clone();
    let session = Session {
        id,
        group,
        stream_id,
        store,
        committer: svc.committer.clone(),
        threshold: svc.clock_threshold_ms,
        checkpoints: svc.checkpoints.clone(),
        checkpoint_sent: 0,
        clock: SessionClock::default(),
        tx,
    };
    tokio::spawn(async move {
        let _live = live;
        session.run(inbound, stopping).await;
    });
    Ok(Response::new(Box::pin(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    )))
}

/// The stream's first message: a Hello naming a stream an agent may use.
async fn hello(inbound: &mut Streaming<ShipRequest>) -> Result<Hello, Status> {
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
    Ok(hello)
}

/// One Ship stream after its Welcome: the agent, where its batches go and
/// what the stream has learnt (the agent's clock, the newest checkpoint
/// sent), and the sender of its responses.
struct Session {
    id: PeerIdentity,
    group: String,
    stream_id: String,
    store: Arc<Store>,
    committer: Committer,
    threshold: i64,
    checkpoints: CheckpointFeed,
    checkpoint_sent: u64,
    clock: SessionClock,
    tx: mpsc::Sender<Result<ShipResponse, Status>>,
}

impl Session {
    /// Answers the agent's requests until it goes away, one of them ends
    /// the stream or the collector shuts down.
    async fn run(
        mut self,
        mut inbound: Streaming<ShipRequest>,
        mut stopping: Option<tokio::sync::watch::Receiver<bool>>,
    ) {
        loop {
            // Between requests (never while a batch is being stored)
            // a shutdown ends the stream with `Shutdown`.
            let next = tokio::select! {
                m = inbound.message() => m,
                () = stopped(&mut stopping) => {
                    tracing::info!(agent_id = %self.id.name, stream_id = %self.stream_id, "ship stream ended: collector shutting down");
                    let bye = ship_response::Msg::Shutdown(kiroku_proto::Shutdown {
                        reason: "collector shutting down".into(),
                        reconnect_after_ms: RECONNECT_AFTER_SHUTDOWN_MS,
                    });
                    let _ = self.tx.send(Ok(ShipResponse { msg: Some(bye) })).await;
                    break;
                }
            };
            let msg = match next {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    // Tell the agent why (e.g. a message over the size
                    // limit) rather than ending the stream silently.
                    tracing::warn!(agent_id = %self.id.name, error = %e, "ship stream ended with an error");
                    let _ = self.tx.send(Err(e)).await;
                    break;
                }
            };
            let go_on = match msg.msg {
                Some(ship_request::Msg::Batch(b)) => self.batch(b).await,
                Some(ship_request::Msg::TimeProbe(p)) => {
                    self.tx.send(Ok(time_reply(&p))).await.is_ok()
                }
                Some(ship_request::Msg::Status(st)) => {
                    self.status(st).await;
                    true
                }
                _ => {
                    let _ = self
                        .tx
                        .send(Err(Status::invalid_argument(
                            "expected a Batch, TimeProbe or Status",
                        )))
                        .await;
                    false
                }
            };
            if !go_on {
                break;
            }
        }
    }

    /// A Status report: the agent's clock offset (for this stream's
    /// events that do not carry one, and the host record), its backlog and
    /// buffer in the host record, its chain head handed to the committer.
    /// A failure is logged; the stream goes on.
    async fn status(&mut self, st: kiroku_proto::Status) {
        self.clock.offset_ms = Some(st.clock_offset_ms);
        let flagged = clock_flagged(st.clock_offset_ms, self.threshold);
        if flagged {
            tracing::warn!(agent_id = %self.id.name, offset_ms = st.clock_offset_ms, threshold_ms = self.threshold, "agent clock is off beyond the threshold; its events are tagged {CLOCK_SKEW_TAG}");
        }
        if !st.buffer_problem.is_empty() {
            tracing::warn!(agent_id = %self.id.name, problem = %st.buffer_problem, "the agent reports that its buffer refuses new records");
        }
        let head = (st.chain_head_seq, st.chain_head.clone());
        let (store, name) = (self.store.clone(), self.id.name.clone());
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
        if let Ok(Err(e)) | Err(e) = res.map_err(|e| Status::internal(e.to_string())) {
            tracing::error!(agent_id = %self.id.name, error = %e, "cannot update host record");
        }
        // The stream's chain head: checked against what is
        // stored, or kept until that event arrives.
        if head.0 > 0 {
            match <[u8; 32]>::try_from(head.1.as_slice()) {
                Ok(hash) => {
                    if let Err(e) = self
                        .committer
                        .head(&self.id.name, &self.stream_id, head.0, hash)
                        .await
                    {
                        tracing::error!(agent_id = %self.id.name, stream_id = %self.stream_id, error = %e, "cannot keep the chain head the agent reported");
                    }
                }
                Err(_) => tracing::warn!(
                    agent_id = %self.id.name, stream_id = %self.stream_id, bytes = head.1.len(),
                    "the agent's status names a chain head that is no SHA-256 (not 32 bytes); ignored"
                ),
            }
        }
    }

    /// A batch: admitted, cut before the first event whose raw message
    /// the collector does not hold, stored by the committer and
    /// acknowledged (with the missing blobs and a newer checkpoint). False
    /// when the stream ends: the batch refused, the commit failed or the
    /// agent gone.
    async fn batch(&mut self, batch: Batch) -> bool {
        let events = match admit_incoming(
            batch,
            &self.id,
            &self.group,
            &self.stream_id,
            self.clock.offset_ms,
            self.threshold,
            kiroku_common::now_ms(),
        ) {
            Ok(events) => events,
            Err(status) => {
                let _ = self.tx.send(Err(status)).await;
                return false;
            }
        };
        let newest_host = events.iter().rev().find_map(|i| match &i.event.kind {
            Some(Kind::HostChange(h)) => h.identity.clone(),
            _ => None,
        });
        let (st, mut events, uploader) = (self.store.clone(), events, self.id.to_string());
        let held = tokio::task::spawn_blocking(move || {
            let missing = cut_at_missing_blob(&st, &uploader, &mut events);
            (events, missing)
        })
        .await;
        let Ok((events, missing_blobs)) = held else {
            let _ = self
                .tx
                .send(Err(Status::internal("checking blobs failed")))
                .await;
            return false;
        };
        if !missing_blobs.is_empty() {
            tracing::info!(
                agent_id = %self.id.name, missing = missing_blobs.len(), first = %missing_blobs[0],
                "batch stored only up to an event whose raw message the collector does not hold; the agent is asked to upload it"
            );
        }
        let res = self
            .committer
            .store(&self.id.name, &self.stream_id, events)
            .await
            .map(|ack| Ack {
                missing_blobs,
                checkpoint: self.checkpoints.newer(&mut self.checkpoint_sent),
                ..ack
            });
        if let (Ok(_), Some(identity)) = (&res, newest_host) {
            let (store, name) = (self.store.clone(), self.id.name.clone());
            let _ = tokio::task::spawn_blocking(move || {
                update_host(&store, &name, |info| info.host = Some(identity))
            })
            .await;
        }
        let stop = res.is_err();
        let resp = res.map(|ack| ShipResponse {
            msg: Some(ship_response::Msg::Ack(ack)),
        });
        self.tx.send(resp).await.is_ok() && !stop
    }
}

/// The answer to a time probe: when it came (t2) and when the answer
/// leaves (t3), by the collector's clock.
fn time_reply(p: &TimeProbe) -> ShipResponse {
    let t2 = micros_now();
    let reply = TimeReply {
        t1_us: p.t1_us,
        t2_us: t2,
        t3_us: micros_now(),
    };
    ShipResponse {
        msg: Some(ship_response::Msg::TimeReply(reply)),
    }
}
