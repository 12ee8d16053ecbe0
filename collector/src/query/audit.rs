//! What the audit log records of a Query call: every call and every
//! refusal (with the caller, what was asked and why) is written before it
//! is answered, and a request's filter as the log shows it.

use std::sync::Arc;

use kiroku_proto::ExfilReportRequest;
use tonic::Status;

use super::QueryService;
use crate::store::Store;
use crate::store::audit::bounded_filter;
use kiroku_common::quote::quote;

impl QueryService {
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
        refuse_entry(self.store.clone(), who, call, filter, status).await
    }
}

/// [`QueryService::refuse`] for a query answered elsewhere (the enrollment
/// tokens' listing): logs and audits the refusal, returns it.
pub(crate) async fn refuse_entry(
    store: Arc<Store>,
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
    let _ = audit_entry(store, who.to_string(), call, entry, 0).await;
    status
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

/// An exfiltration request as the audit log records it.
pub(super) fn exfil_filter(r: &ExfilReportRequest) -> String {
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
