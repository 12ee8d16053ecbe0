//! The Query service for investigators: search with filters (newest first,
//! paged or streamed), one event, the original message, known hosts, a
//! hash's trace, alerts (replay and live) and the exfiltration report (its
//! totals and newest files, or every file streamed). Every
//! call is logged with the caller's identity, the filter and the result
//! count (the tamper-evident audit log is its own piece of work).

use std::io::Read;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use kiroku_proto::query_server::Query;
use kiroku_proto::{
    Alert, AlertsRequest, AuditRequest, AuditResponse, Event, ExfilFileBatch, ExfilReport,
    ExfilReportRequest, GetEventRequest, GetRawRequest, ListHostsRequest, ListHostsResponse,
    RawChunk, SearchRequest, SearchResponse, TraceRequest, TraceResponse, event::Kind,
};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use crate::alerts::Alerting;
use crate::auth;
use crate::investigate::{self, ExfilError, TRACE_DEFAULT, TRACE_MAX};
use crate::store::Store;
use crate::store::index::{DEFAULT_PAGE, IndexError, MAX_PAGE};

const RAW_CHUNK: usize = 256 * 1024;
/// Deepest page offset a client may ask for; the search keeps offset + page
/// results in memory. Deeper reads use SearchStream or a narrower filter.
const MAX_OFFSET: usize = 100_000;

pub struct QueryService {
    store: Arc<Store>,
    alerting: Arc<Alerting>,
    tls_status: Arc<dyn Fn() -> (String, bool) + Send + Sync>,
}

impl QueryService {
    pub fn new(store: Arc<Store>, alerting: Arc<Alerting>) -> Self {
        QueryService {
            store,
            alerting,
            tls_status: Arc::new(|| (String::new(), false)),
        }
    }

    /// What `ListHosts` says about the revocation list: its description
    /// and whether it has expired (see `listener::TlsSource::crl_status`).
    pub fn with_tls_status(mut self, f: Arc<dyn Fn() -> (String, bool) + Send + Sync>) -> Self {
        self.tls_status = f;
        self
    }

    /// Records a query in the audit log (durable) before it is answered;
    /// a query that cannot be recorded is refused.
    async fn audit(
        &self,
        who: &kiroku_common::pki::PeerIdentity,
        call: &'static str,
        filter: String,
        results: u64,
    ) -> Result<(), Status> {
        let who = who.to_string();
        tracing::info!(target: "audit", identity = %who, call, filter = %filter, results, "query");
        self.blocking(move |s| {
            s.audit_query(&who, call, &filter, results).map_err(|e| {
                tracing::error!(error = %e, "cannot write the audit log; the query is refused");
                s.exit_if_meta_failed();
                Status::unavailable(format!(
                    "the query cannot be recorded in the audit log ({e}); try again later"
                ))
            })
        })
        .await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
    }
}

fn index_status(e: IndexError) -> Status {
    match e {
        IndexError::BadQuery { .. } => Status::invalid_argument(e.to_string()),
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
        "from_ms: {}, to_ms: {}, utc_offset_minutes: {}, max_files: {}",
        r.from_ms, r.to_ms, r.utc_offset_minutes, r.max_files
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
            Status::invalid_argument(format!("invalid page_token {:?}", r.page_token))
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
            "sha256 {:?} is not a SHA-256 (64 hex digits)",
            r.sha256
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

#[tonic::async_trait]
impl Query for QueryService {
    async fn search(
        &self,
        req: Request<SearchRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
        let who = auth::caller(&req)?;
        let r = req.into_inner();
        let (offset, size) = page_of(&r)?;
        let r2 = r.clone();
        let (events, total, next) = self
            .blocking(move |s| s.index.search(&r2, offset, size).map_err(index_status))
            .await?;
        self.audit(&who, "Search", format!("{r:?}"), total).await?;
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
        let (mut offset, _) = page_of(&r)?;
        // The stream pages internally; only the client's start is bounded.
        self.audit(&who, "SearchStream", format!("{r:?} (streamed)"), 0)
            .await?;
        let (tx, rx) = mpsc::channel(64);
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            loop {
                match store.index.search(&r, offset, MAX_PAGE as usize) {
                    Err(e) => {
                        let _ = tx.blocking_send(Err(index_status(e)));
                        return;
                    }
                    Ok((events, _, next)) => {
                        for e in events {
                            if tx.blocking_send(Ok(e)).is_err() {
                                return;
                            }
                        }
                        match next {
                            Some(n) => offset = n,
                            None => return,
                        }
                    }
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
        self.audit(&who, "GetEvent", format!("event_id: {id:?}"), 1)
            .await?;
        let id2 = id.clone();
        let ev = self
            .blocking(move |s| s.index.get(&id2).map_err(index_status))
            .await?
            .ok_or_else(|| Status::not_found(format!("no event {id:?}")))?;
        Ok(Response::new(ev))
    }

    type GetRawStream = RawStream;

    async fn get_raw(&self, req: Request<GetRawRequest>) -> Result<Response<RawStream>, Status> {
        let who = auth::caller(&req)?;
        let id = req.into_inner().event_id;
        self.audit(&who, "GetRaw", format!("event_id: {id:?}"), 1)
            .await?;
        let id2 = id.clone();
        let ev = self
            .blocking(move |s| s.index.get(&id2).map_err(index_status))
            .await?
            .ok_or_else(|| Status::not_found(format!("no event {id:?}")))?;
        let sha = match &ev.kind {
            Some(Kind::Email(m)) if !m.raw_sha256.is_empty() => m.raw_sha256.clone(),
            _ => {
                return Err(Status::not_found(format!(
                    "event {id:?} has no raw message"
                )));
            }
        };
        let mut reader = {
            let sha = sha.clone();
            self.blocking(move |s| {
                s.blobs.reader(&sha).map_err(|e| {
                    Status::not_found(format!("raw message {sha} of event {id:?}: {e}"))
                })
            })
            .await?
        };
        let (tx, rx) = mpsc::channel(8);
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; RAW_CHUNK];
            loop {
                match read_full(&mut reader, &mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        if tx
                            .blocking_send(Ok(RawChunk {
                                data: buf[..n].to_vec(),
                            }))
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(Status::data_loss(format!(
                            "reading blob {sha}: {e}"
                        ))));
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn list_hosts(
        &self,
        req: Request<ListHostsRequest>,
    ) -> Result<Response<ListHostsResponse>, Status> {
        let who = auth::caller(&req)?;
        self.audit(&who, "ListHosts", String::new(), 0).await?;
        let hosts = self
            .blocking(|s| s.meta.hosts().map_err(|e| Status::internal(e.to_string())))
            .await?;
        let (revocation_list, revocation_list_expired) = (self.tls_status)();
        Ok(Response::new(ListHostsResponse {
            hosts,
            ingest_paused: self.store.disk.paused().unwrap_or_default(),
            revocation_list,
            revocation_list_expired,
        }))
    }

    async fn trace(&self, req: Request<TraceRequest>) -> Result<Response<TraceResponse>, Status> {
        let who = auth::caller(&req)?;
        let (sha, limit) = trace_args(&req.into_inner())?;
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
        self.audit(&who, "Alerts", format!("{r:?}"), 0).await?;
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
        let (tx, rx) = mpsc::channel(64);
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
            loop {
                let next = tokio::select! {
                    n = live.recv() => n,
                    _ = tx.closed() => return,
                };
                match next {
                    Ok(a) => {
                        if sent.remove(&(a.event_id.clone(), a.rule.clone())) {
                            continue;
                        }
                        if tx.send(Ok(a)).await.is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(identity = %who, missed = n, "Alerts follower too slow, alerts skipped (they are in the replay log)");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
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
            .await?;
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
        let offset = r.utc_offset_minutes;
        // The scan (fast fields only) counts the files, so the audit entry
        // says how many the caller is about to receive.
        let scan = self
            .blocking(move |s| investigate::exfil_scan(&s.index, &r).map_err(exfil_status))
            .await?;
        self.audit(
            &who,
            "ExfilFiles",
            filter,
            investigate::files_total(&scan.events),
        )
        .await?;
        let (tx, rx) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let sent = investigate::each_exfil_batch(scan, offset, |files| {
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

    async fn audit(&self, req: Request<AuditRequest>) -> Result<Response<AuditResponse>, Status> {
        let who = auth::caller(&req)?;
        if who.role != kiroku_common::pki::Role::Admin {
            tracing::warn!(identity = %who, "refused: the audit log is for admins only");
            return Err(Status::permission_denied(format!(
                "{who} may not read the audit log: admins only"
            )));
        }
        let r = req.into_inner();
        QueryService::audit(self, &who, "Audit", format!("{r:?}"), 0).await?;
        let limit = match r.limit {
            0 => 100,
            n => (n as usize).min(10_000),
        };
        let resp = self
            .blocking(move |s| {
                s.read_audit(r.from_ms, limit)
                    .map_err(|e| Status::internal(e.to_string()))
            })
            .await?;
        Ok(Response::new(resp))
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
