//! The `Query` calls: each checks its request (`args.rs`), reads the
//! store off the async threads, records itself in the audit log
//! (`audit.rs`) and answers; the integrity, delivery and network calls are
//! handed to their own modules.

use std::pin::Pin;

use futures::Stream;
use kiroku_proto::query_server::Query;
use kiroku_proto::{
    AggregateGroup, AggregateRequest, AggregateResponse, Alert, AlertsRequest, Annotations,
    AuditRequest, AuditResponse, Event, ExfilFileBatch, ExfilReport, ExfilReportRequest,
    GetAnnotationsRequest, GetEventRequest, GetRawRequest, IndexRebuild, ListHostsRequest,
    ListHostsResponse, RawChunk, SearchRequest, SearchResponse, TraceRequest, TraceResponse,
    event::Kind,
};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::QueryService;
use super::args::{
    aggregate_args, check_search, event_id_arg, exfil_status, index_status, trace_args,
};
use super::audit::{audit_entry, exfil_filter};
use super::raw::stream_verified;
use crate::auth;
use crate::investigate;
use crate::store::index::{MAX_PAGE, Stats, StatsQuery};
use kiroku_common::quote::quote;

type EventStream = Pin<Box<dyn Stream<Item = Result<Event, Status>> + Send>>;
type RawStream = Pin<Box<dyn Stream<Item = Result<RawChunk, Status>> + Send>>;
type ExfilStream = Pin<Box<dyn Stream<Item = Result<ExfilFileBatch, Status>> + Send>>;
pub(crate) type VerifyStream =
    Pin<Box<dyn Stream<Item = Result<kiroku_proto::VerifyResponse, Status>> + Send>>;
pub(crate) type ExportStream =
    Pin<Box<dyn Stream<Item = Result<kiroku_proto::ExportCaseChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Query for QueryService {
    async fn search(
        &self,
        req: Request<SearchRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
        let who = auth::caller(&req)?;
        let r = req.into_inner();
        let filter = format!("{r:?}");
        let (offset, size) = match check_search(&r) {
            Ok(p) => p,
            Err(st) => return Err(self.refuse(&who, "Search", filter, st).await),
        };
        let r2 = r.clone();
        let found = self
            .blocking(move |s| s.index.search(&r2, offset, size).map_err(index_status))
            .await;
        let (events, total, next) = match found {
            Ok(f) => f,
            Err(st) => return Err(self.refuse(&who, "Search", filter, st).await),
        };
        self.audit(&who, "Search", filter, total).await?;
        Ok(Response::new(SearchResponse {
            events,
            next_page_token: next.map(|n| n.to_string()).unwrap_or_default(),
            total_hits: total,
        }))
    }

    type SearchStreamStream = EventStream;

    async fn search_stream(
        &self,
        req: Request<SearchRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let who = auth::caller(&req)?;
        let r = req.into_inner();
        let filter = format!("{r:?} (streamed; results: the matches when it began)");
        // The stream pages internally; only the client's start is bounded.
        let offset = match check_search(&r) {
            Ok((offset, _)) => offset,
            Err(st) => return Err(self.refuse(&who, "SearchStream", filter, st).await),
        };
        // The first page is read before the audit entry, so the entry says
        // how many events the caller is about to receive.
        let r2 = r.clone();
        let first = self
            .blocking(move |s| {
                s.index
                    .search(&r2, offset, MAX_PAGE as usize)
                    .map_err(index_status)
            })
            .await;
        let (events, total, mut next) = match first {
            Ok(f) => f,
            Err(st) => return Err(self.refuse(&who, "SearchStream", filter, st).await),
        };
        self.audit(
            &who,
            "SearchStream",
            filter,
            total.saturating_sub(offset as u64),
        )
        .await?;
        let (tx, rx) = mpsc::channel(64);
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let mut page = events;
            loop {
                for e in page {
                    if tx.blocking_send(Ok(e)).is_err() {
                        return;
                    }
                }
                let Some(offset) = next else { return };
                match store.index.search(&r, offset, MAX_PAGE as usize) {
                    Err(e) => {
                        let _ = tx.blocking_send(Err(index_status(e)));
                        return;
                    }
                    Ok((events, _, n)) => (page, next) = (events, n),
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn get_event(&self, req: Request<GetEventRequest>) -> Result<Response<Event>, Status> {
        let who = auth::caller(&req)?;
        let id = req.into_inner().event_id;
        let filter = format!("event_id: {id:?}");
        if let Err(st) = event_id_arg(&id) {
            return Err(self.refuse(&who, "GetEvent", filter, st).await);
        }
        self.audit(&who, "GetEvent", filter, 1).await?;
        let id2 = id.clone();
        let ev = self
            .blocking(move |s| s.index.get(&id2).map_err(index_status))
            .await?
            .ok_or_else(|| Status::not_found(format!("no event {}", quote(&id))))?;
        Ok(Response::new(ev))
    }

    type GetRawStream = RawStream;

    async fn get_raw(&self, req: Request<GetRawRequest>) -> Result<Response<RawStream>, Status> {
        let who = auth::caller(&req)?;
        let id = req.into_inner().event_id;
        let filter = format!("event_id: {id:?}");
        if let Err(st) = event_id_arg(&id) {
            return Err(self.refuse(&who, "GetRaw", filter, st).await);
        }
        self.audit(&who, "GetRaw", filter, 1).await?;
        let id2 = id.clone();
        let ev = self
            .blocking(move |s| s.index.get(&id2).map_err(index_status))
            .await?
            .ok_or_else(|| Status::not_found(format!("no event {}", quote(&id))))?;
        let sha = match &ev.kind {
            Some(Kind::Email(m)) if !m.raw_sha256.is_empty() => m.raw_sha256.clone(),
            _ => {
                return Err(Status::not_found(format!(
                    "event {} has no raw message",
                    quote(&id)
                )));
            }
        };
        let reader = {
            let (sha, id) = (sha.clone(), id.clone());
            self.blocking(move |s| {
                s.blobs.reader(&sha).map_err(|e| {
                    Status::not_found(format!("raw message {sha} of event {}: {e}", quote(&id)))
                })
            })
            .await?
        };
        let (tx, rx) = mpsc::channel(8);
        tokio::task::spawn_blocking(move || stream_verified(reader, &sha, &id, &tx));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn list_hosts(
        &self,
        req: Request<ListHostsRequest>,
    ) -> Result<Response<ListHostsResponse>, Status> {
        let who = auth::caller(&req)?;
        let stale_ms = req.get_ref().stale_ms;
        let filter = if stale_ms > 0 {
            format!("stale_ms: {stale_ms}")
        } else {
            String::new()
        };
        self.audit(&who, "ListHosts", filter, 0).await?;
        let mut hosts = self
            .blocking(|s| s.meta.hosts().map_err(|e| Status::internal(e.to_string())))
            .await?;
        // Silent agents only (`kiroku hosts --stale 30d`).
        if stale_ms > 0 {
            hosts = crate::agents::stale_among(hosts, crate::clock::now_ms(), stale_ms);
        }
        let (revocation_list, revocation_list_expired) = (self.tls_status)();
        Ok(Response::new(ListHostsResponse {
            hosts,
            ingest_paused: self.store.disk.paused().unwrap_or_default(),
            revocation_list,
            revocation_list_expired,
            index_rebuild: self.store.index.rebuild_status().map(|r| IndexRebuild {
                state: r.state.name().into(),
                events_done: r.events_done,
                events_total: r.events_total,
                percent: r.percent,
                events_per_second: r.events_per_second,
                from_version: r.from_version,
                to_version: r.to_version,
                message: r.describe(),
                reason: r.reason,
            }),
            analysis: Some(self.store.analysis.status()),
        }))
    }

    async fn trace(&self, req: Request<TraceRequest>) -> Result<Response<TraceResponse>, Status> {
        let who = auth::caller(&req)?;
        let r = req.into_inner();
        let (sha, limit) = match trace_args(&r) {
            Ok(a) => a,
            Err(st) => return Err(self.refuse(&who, "Trace", format!("{r:?}"), st).await),
        };
        let sha2 = sha.clone();
        let (events, truncated) = self
            .blocking(move |s| investigate::trace(&s.index, &sha2, limit).map_err(index_status))
            .await?;
        self.audit(
            &who,
            "Trace",
            format!("sha256: {sha:?}, limit: {limit}"),
            events.len() as u64,
        )
        .await?;
        Ok(Response::new(TraceResponse { events, truncated }))
    }

    type AlertsStream = Pin<Box<dyn Stream<Item = Result<Alert, Status>> + Send>>;

    async fn alerts(
        &self,
        req: Request<AlertsRequest>,
    ) -> Result<Response<Self::AlertsStream>, Status> {
        let who = auth::caller(&req)?;
        let r = req.into_inner();
        // Subscribe before reading the log so nothing falls in between;
        // what is in both is sent once.
        let mut live = r.follow.then(|| self.alerting.subscribe());
        let replay = if r.from_ms > 0 {
            let alerting = self.alerting.clone();
            let from = r.from_ms;
            tokio::task::spawn_blocking(move || alerting.replay(from))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(Status::internal)?
        } else {
            Vec::new()
        };
        let filter = if r.follow {
            format!("{r:?} (results: the alerts replayed; the live ones are recorded when it ends)")
        } else {
            format!("{r:?}")
        };
        self.audit(&who, "Alerts", filter.clone(), replay.len() as u64)
            .await?;
        let (tx, rx) = mpsc::channel(64);
        let store = self.store.clone();
        tokio::spawn(async move {
            let mut sent = std::collections::HashSet::new();
            for a in replay {
                sent.insert((a.event_id.clone(), a.rule.clone()));
                if tx.send(Ok(a)).await.is_err() {
                    return;
                }
            }
            let Some(live) = live.as_mut() else {
                return;
            };
            let followed = follow_alerts(live, &tx, sent, &who).await;
            let _ = audit_entry(
                store,
                who.to_string(),
                "Alerts",
                format!("{filter} ended: live alerts sent"),
                followed,
            )
            .await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn exfil_report(
        &self,
        req: Request<ExfilReportRequest>,
    ) -> Result<Response<ExfilReport>, Status> {
        let who = auth::caller(&req)?;
        let r = req.into_inner();
        let filter = exfil_filter(&r);
        let report = self
            .blocking(move |s| investigate::exfil_report(&s.index, &r).map_err(exfil_status))
            .await;
        let report = match report {
            Ok(r) => r,
            Err(st) => return Err(self.refuse(&who, "ExfilReport", filter, st).await),
        };
        self.audit(&who, "ExfilReport", filter, report.files_total)
            .await?;
        Ok(Response::new(report))
    }

    type ExfilFilesStream = ExfilStream;

    async fn exfil_files(
        &self,
        req: Request<ExfilReportRequest>,
    ) -> Result<Response<ExfilStream>, Status> {
        let who = auth::caller(&req)?;
        let r = req.into_inner();
        let filter = format!("{} (streamed)", exfil_filter(&r));
        // The scan (fast fields only) counts the files, so the audit entry
        // says how many the caller is about to receive.
        let scan = self
            .blocking(move |s| {
                let days = investigate::exfil_days(&r).map_err(exfil_status)?;
                let scan = investigate::exfil_scan(&s.index, &r).map_err(exfil_status)?;
                Ok((scan, days))
            })
            .await;
        let (scan, days) = match scan {
            Ok(s) => s,
            Err(st) => return Err(self.refuse(&who, "ExfilFiles", filter, st).await),
        };
        self.audit(
            &who,
            "ExfilFiles",
            filter,
            investigate::files_total(&scan.events),
        )
        .await?;
        let (tx, rx) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let sent = investigate::each_exfil_batch(scan, days, |files| {
                tx.blocking_send(Ok(ExfilFileBatch { files })).is_ok()
            });
            if let Err(e) = sent {
                let _ = tx.blocking_send(Err(index_status(e)));
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    type VerifyStream = VerifyStream;
    type ExportCaseStream = ExportStream;

    async fn verify(
        &self,
        req: Request<kiroku_proto::VerifyRequest>,
    ) -> Result<Response<VerifyStream>, Status> {
        crate::integrity::rpc::verify(self, req).await
    }

    async fn export_case(
        &self,
        req: Request<kiroku_proto::ExportCaseRequest>,
    ) -> Result<Response<ExportStream>, Status> {
        crate::integrity::rpc::export_case(self, req).await
    }

    async fn get_proof(
        &self,
        req: Request<GetEventRequest>,
    ) -> Result<Response<kiroku_proto::InclusionProof>, Status> {
        crate::integrity::rpc::get_proof(self, req).await
    }

    async fn get_delivery(
        &self,
        req: Request<GetEventRequest>,
    ) -> Result<Response<kiroku_proto::Delivery>, Status> {
        crate::delivery::rpc::get_delivery(self, req).await
    }

    async fn network_report(
        &self,
        req: Request<kiroku_proto::NetworkReportRequest>,
    ) -> Result<Response<kiroku_proto::NetworkReport>, Status> {
        crate::network::report::network_report(self, req).await
    }

    async fn get_annotations(
        &self,
        req: Request<GetAnnotationsRequest>,
    ) -> Result<Response<Annotations>, Status> {
        let who = auth::caller(&req)?;
        let id = req.into_inner().event_id;
        let filter = format!("event_id: {id:?}");
        if let Err(st) = event_id_arg(&id) {
            return Err(self.refuse(&who, "GetAnnotations", filter, st).await);
        }
        self.audit(&who, "GetAnnotations", filter, 1).await?;
        let id2 = id.clone();
        let found = self
            .blocking(move |s| {
                s.analysis.annotations(&id2).map_err(|e| {
                    tracing::error!(error = %e, "reading annotations failed");
                    s.exit_if_meta_failed();
                    Status::internal(e.to_string())
                })
            })
            .await?;
        // Nothing yet (not analysed, or not a mail): empty, with the id.
        Ok(Response::new(found.unwrap_or(Annotations {
            event_id: id,
            ..Default::default()
        })))
    }

    async fn aggregate(
        &self,
        req: Request<AggregateRequest>,
    ) -> Result<Response<AggregateResponse>, Status> {
        let who = auth::caller(&req)?;
        let r = req.into_inner();
        let filter = format!("{r:?}");
        let (search, q) = match aggregate_args(&r) {
            Ok(a) => a,
            Err(st) => return Err(self.refuse(&who, "Aggregate", filter, st).await),
        };
        let q2 = q.clone();
        let found = self
            .blocking(move |s| s.index.stats(&search, &q2).map_err(index_status))
            .await;
        let stats = match found {
            Ok(s) => s,
            Err(st) => return Err(self.refuse(&who, "Aggregate", filter, st).await),
        };
        self.audit(&who, "Aggregate", filter, stats.total.count)
            .await?;
        Ok(Response::new(aggregate_response(&q, stats)))
    }

    async fn audit(&self, req: Request<AuditRequest>) -> Result<Response<AuditResponse>, Status> {
        let who = auth::caller(&req)?;
        if who.role != kiroku_common::pki::Role::Admin {
            tracing::warn!(identity = %who, "refused: the audit log is for admins only");
            return Err(Status::permission_denied(format!(
                "{who} may not read the audit log: admins only"
            )));
        }
        let r = req.into_inner();
        if !matches!(r.kind.as_str(), "" | "query" | "admin") {
            return Err(Status::invalid_argument(format!(
                "audit kind {}: expected query, admin or empty (both)",
                kiroku_common::quote::quote(&r.kind)
            )));
        }
        QueryService::audit(self, &who, "Audit", format!("{r:?}"), 0).await?;
        let limit = match r.limit {
            0 => 100,
            n => (n as usize).min(10_000),
        };
        let resp = self
            .blocking(move |s| {
                s.read_audit(r.from_ms, limit, &r.kind)
                    .map_err(|e| Status::internal(e.to_string()))
            })
            .await?;
        Ok(Response::new(resp))
    }
}

/// Sends live alerts until the caller goes away or the collector stops;
/// returns how many were sent. `sent` holds the replayed ones, sent once.
async fn follow_alerts(
    live: &mut tokio::sync::broadcast::Receiver<Alert>,
    tx: &mpsc::Sender<Result<Alert, Status>>,
    mut sent: std::collections::HashSet<(String, String)>,
    who: &kiroku_common::pki::PeerIdentity,
) -> u64 {
    let mut n = 0;
    loop {
        let next = tokio::select! {
            n = live.recv() => n,
            _ = tx.closed() => return n,
        };
        match next {
            Ok(a) => {
                if sent.remove(&(a.event_id.clone(), a.rule.clone())) {
                    continue;
                }
                if tx.send(Ok(a)).await.is_err() {
                    return n;
                }
                n += 1;
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(identity = %who, missed, "Alerts follower too slow, alerts skipped (they are in the replay log)");
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return n,
        }
    }
}

fn aggregate_response(q: &StatsQuery, s: Stats) -> AggregateResponse {
    AggregateResponse {
        by: q.by.name().to_string(),
        groups: s
            .groups
            .into_iter()
            .map(|g| AggregateGroup {
                key: g.key,
                count: g.tally.count,
                bytes: g.tally.bytes,
                start_ms: g.start_ms.unwrap_or_default(),
            })
            .collect(),
        other_count: s.other.count,
        other_bytes: s.other.bytes,
        other_groups: s.other_groups,
        total_count: s.total.count,
        total_bytes: s.total.bytes,
        none_count: s.none.count,
        none_bytes: s.none.bytes,
        multi_valued: q.by.multi_valued(),
        time_zone: q.zone_name.clone(),
    }
}
