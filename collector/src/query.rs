//! The Query service for investigators: search with filters (newest first,
//! paged or streamed), one event, the original message, known hosts, a
//! hash's trace, alerts (replay and live) and the exfiltration report (its
//! totals and newest files, or every file streamed) and counts of the
//! events a filter matches, grouped (Aggregate). Every call is
//! recorded in the audit log (`store/audit.rs`) with the caller's
//! identity, the filter and the result count before it is answered, and
//! so is every request refused as invalid (with why). A streamed call's
//! count is what matched when the stream began; a followed alert stream
//! records a second entry with what it sent when it ends.
//!
//! Invariant: no request field reaches a parser unbounded (search limits
//! in `store/index/limits.rs`), no error message echoes a whole input
//! (`kiroku_common::quote`), and raw content is checked against its hash
//! while it streams: the last chunk is sent only after the check passed.

use std::io::Read;
use std::pin::Pin;
use std::sync::Arc;

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

use crate::alerts::Alerting;
use crate::auth;
use crate::investigate::{self, ExfilError, TRACE_DEFAULT, TRACE_MAX};
use crate::store::Store;
use crate::store::audit::bounded_filter;
use crate::store::index::{DEFAULT_PAGE, IndexError, MAX_PAGE, Stats, StatsQuery};
use kiroku_common::quote::quote;

const RAW_CHUNK: usize = 256 * 1024;
/// Deepest page offset a client may ask for; the search keeps offset + page
/// results in memory. Deeper reads use SearchStream or a narrower filter.
const MAX_OFFSET: usize = 100_000;
/// Longest event id accepted (agent id, stream id and sequence number).
const MAX_EVENT_ID: usize = 512;

pub struct QueryService {
    store: Arc<Store>,
    alerting: Arc<Alerting>,
    tls_status: Arc<dyn Fn() -> (String, bool) + Send + Sync>,
    /// The CA certificate (PEM): what `Verify` checks checkpoint signers
    /// against.
    ca_pem: Arc<Vec<u8>>,
    /// The TSA's CA certificate (PEM), when checkpoints are time-stamped.
    tsa_ca: Option<Arc<Vec<u8>>>,
    /// The collector's signing key (case bundles); None: unsigned.
    signer: Option<Arc<crate::integrity::signing::Signer>>,
}

impl QueryService {
    pub fn new(store: Arc<Store>, alerting: Arc<Alerting>) -> Self {
        QueryService {
            store,
            alerting,
            tls_status: Arc::new(|| (String::new(), false)),
            signer: None,
            ca_pem: Arc::default(),
            tsa_ca: None,
        }
    }

    /// The key case bundles are signed with (`[checkpoint]
    /// signing_cert/signing_key`, the checkpoints' key).
    pub fn with_signer(mut self, signer: Option<Arc<crate::integrity::signing::Signer>>) -> Self {
        self.signer = signer;
        self
    }

    /// The signing key, for the calls of `integrity/rpc.rs`.
    pub(crate) fn signer(&self) -> Option<&Arc<crate::integrity::signing::Signer>> {
        self.signer.as_ref()
    }

    /// The CA certificate (PEM) checkpoint signatures are checked against,
    /// and the TSA's CA certificate their time stamps are.
    pub fn with_ca_pem(mut self, pem: Vec<u8>, tsa_ca: Option<Vec<u8>>) -> Self {
        self.ca_pem = Arc::new(pem);
        self.tsa_ca = tsa_ca.map(Arc::new);
        self
    }

    pub(crate) fn tsa_ca(&self) -> Option<Arc<Vec<u8>>> {
        self.tsa_ca.clone()
    }

    pub(crate) fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub(crate) fn ca_pem(&self) -> Arc<Vec<u8>> {
        self.ca_pem.clone()
    }

    /// What `ListHosts` says about the revocation list: its description
    /// and whether it has expired (see `listener::TlsSource::crl_status`).
    pub fn with_tls_status(mut self, f: Arc<dyn Fn() -> (String, bool) + Send + Sync>) -> Self {
        self.tls_status = f;
        self
    }

    /// Records a query in the audit log (durable) before it is answered;
    /// a query that cannot be recorded is refused.
    pub(crate) async fn audit(
        &self,
        who: &kiroku_common::pki::PeerIdentity,
        call: &'static str,
        filter: String,
        results: u64,
    ) -> Result<(), Status> {
        audit_entry(self.store.clone(), who.to_string(), call, filter, results).await
    }

    /// Records a request refused with `status` (the caller, what was
    /// asked, why) and returns the refusal. A refusal that cannot be
    /// recorded is still a refusal; the failure to record it is logged.
    pub(crate) async fn refuse(
        &self,
        who: &kiroku_common::pki::PeerIdentity,
        call: &'static str,
        filter: String,
        status: Status,
    ) -> Status {
        tracing::warn!(identity = %who, call, code = ?status.code(), reason = %status.message(), "query refused");
        let entry = format!(
            "REFUSED {:?}: {} | {filter}",
            status.code(),
            status.message()
        );
        let _ = self.audit(who, call, entry, 0).await;
        status
    }

    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
    }
}

/// Writes one audit entry (durable) from async code; the error refuses
/// the query.
pub(crate) async fn audit_entry(
    store: Arc<Store>,
    who: String,
    call: &'static str,
    filter: String,
    results: u64,
) -> Result<(), Status> {
    // The log line gets the bounded form; the audit log bounds (and
    // hashes) the whole filter itself, so it is handed the original.
    tracing::info!(target: "audit", identity = %who, call, filter = %bounded_filter(&filter), results, "query");
    tokio::task::spawn_blocking(move || {
        store
            .audit_query(&who, call, &filter, results)
            .map_err(|e| {
                tracing::error!(error = %e, "cannot write the audit log; the query is refused");
                store.exit_if_meta_failed();
                Status::unavailable(format!(
                    "the query cannot be recorded in the audit log ({e}); try again later"
                ))
            })
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))?
}

/// An event id as a request names it: bounded before it is looked up.
pub(crate) fn event_id_arg(id: &str) -> Result<(), Status> {
    if id.len() > MAX_EVENT_ID {
        return Err(Status::invalid_argument(format!(
            "event_id is {} bytes; at most {MAX_EVENT_ID} are accepted",
            id.len()
        )));
    }
    Ok(())
}

pub(crate) fn index_status(e: IndexError) -> Status {
    match e {
        IndexError::BadQuery { .. } => Status::invalid_argument(e.to_string()),
        IndexError::NeedsRebuild { .. } => Status::failed_precondition(e.to_string()),
        _ => {
            tracing::error!(error = %e, "reading the index failed; {}", crate::store::REPAIR_HINT);
            Status::internal(format!(
                "{e} (the collector's index may be damaged; its operator can {})",
                crate::store::REPAIR_HINT
            ))
        }
    }
}

fn exfil_status(e: ExfilError) -> Status {
    match e {
        ExfilError::BadRequest(m) => Status::invalid_argument(m),
        ExfilError::Index(e) => index_status(e),
    }
}

/// An exfiltration request as the audit log records it.
fn exfil_filter(r: &ExfilReportRequest) -> String {
    format!(
        "from_ms: {}, to_ms: {}, utc_offset_minutes: {}, time_zone: {}, method: {}, user: {}, host: {}, recipients: {}, max_files: {}, top_users: {}",
        r.from_ms,
        r.to_ms,
        r.utc_offset_minutes,
        quote(&r.time_zone),
        quote(&r.method),
        quote(&r.user),
        quote(&r.host),
        quote(&r.recipients),
        r.max_files,
        r.top_users
    )
}

/// (offset, page size) of a Search: the page token checked and bounded.
/// Public for the fuzz targets in `fuzz/`.
#[doc(hidden)]
pub fn page_of(r: &SearchRequest) -> Result<(usize, usize), Status> {
    let offset = if r.page_token.is_empty() {
        0
    } else {
        r.page_token.parse().map_err(|_| {
            Status::invalid_argument(format!("invalid page_token {}", quote(&r.page_token)))
        })?
    };
    if offset > MAX_OFFSET {
        return Err(Status::invalid_argument(format!(
            "page_token {offset} is deeper than {MAX_OFFSET} results: narrow the filter (e.g. a time range) or use SearchStream"
        )));
    }
    let size = match r.page_size {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    };
    Ok((offset, size as usize))
}

/// (hash, limit) of a Trace: the hash normalised and checked, the limit
/// bounded. Public for the fuzz targets in `fuzz/`.
#[doc(hidden)]
pub fn trace_args(r: &TraceRequest) -> Result<(String, usize), Status> {
    let sha = r.sha256.trim().to_lowercase();
    if !kiroku_common::is_sha256_hex(&sha) {
        return Err(Status::invalid_argument(format!(
            "sha256 {} is not a SHA-256 (64 hex digits)",
            quote(&r.sha256)
        )));
    }
    let limit = match r.limit {
        0 => TRACE_DEFAULT,
        n => (n as usize).min(TRACE_MAX),
    };
    Ok((sha, limit))
}

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

/// The checks of a search request before anything reads the index: its
/// page, and every field within its bounds (`store/index/limits.rs`).
fn check_search(r: &SearchRequest) -> Result<(usize, usize), Status> {
    crate::store::index::check_search(r).map_err(index_status)?;
    page_of(r)
}

/// The filter and the grouping of an Aggregate call, checked before
/// anything reads the index: the filter with the search's limits
/// (`store/index/limits.rs`), `by`, `top` and the zone with the stats'
/// (`store/index/stats.rs`). Public for the fuzz targets in `fuzz/`.
#[doc(hidden)]
pub fn aggregate_args(r: &AggregateRequest) -> Result<(SearchRequest, StatsQuery), Status> {
    let filter = r.filter.clone().unwrap_or_default();
    crate::store::index::check_search(&filter).map_err(index_status)?;
    let q = StatsQuery::parse(&r.by, r.top, &r.time_zone).map_err(index_status)?;
    Ok((filter, q))
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

/// Streams a raw message, verified: each chunk is sent only once the read
/// after it succeeded, so the last one goes out only after the whole
/// content matched its hash. On a mismatch (or a read error) the stream
/// ends with `DataLoss` naming the blob and what to do.
fn stream_verified(
    mut reader: Box<dyn Read + Send>,
    sha: &str,
    id: &str,
    tx: &mpsc::Sender<Result<RawChunk, Status>>,
) {
    let mut pending: Option<Vec<u8>> = None;
    loop {
        let mut buf = vec![0u8; RAW_CHUNK];
        match read_full(&mut reader, &mut buf) {
            Ok(n) => {
                if let Some(data) = pending.take()
                    && tx.blocking_send(Ok(RawChunk { data })).is_err()
                {
                    return;
                }
                if n == 0 {
                    return;
                }
                buf.truncate(n);
                pending = Some(buf);
            }
            Err(e) => {
                tracing::error!(blob = sha, event_id = %id, error = %e, "a stored raw message is damaged; the download was stopped. {}", crate::store::REPAIR_HINT);
                let _ = tx.blocking_send(Err(Status::data_loss(format!(
                    "raw message {sha} of event {} is damaged and was not served whole: {e}. The collector's operator should {}; it moves damaged blobs aside and names the events they belong to",
                    quote(id),
                    crate::store::REPAIR_HINT
                ))));
                return;
            }
        }
    }
}

/// Fills `buf` as far as the reader allows; 0 means end of data.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
