//! The `NetworkReport` rpc (`kiroku report network`): one host's traffic
//! per process and per peer, a timeline and the P2P findings over a time
//! range, with the network gaps that say what was missed.
//!
//! The records are read with the index's ordinary search (kind + host or
//! agent + corrected time), page by page (`scan.rs`), and added up as
//! they come (`aggregate.rs`): memory is bounded by the aggregation's
//! tables, not by the number of records. The timeline's buckets are
//! chosen from the range (`timeline.rs`). Like every query the report is
//! recorded in the audit log before it is answered (refusals too); the
//! Query service admits investigators (and admins) only.

mod aggregate;
mod scan;
mod timeline;

#[cfg(test)]
mod tests;

use kiroku_proto::{NetworkReport, NetworkReportRequest, SearchRequest};
use tonic::{Request, Response, Status};

use crate::auth;
use crate::query::{QueryService, index_status};
use crate::store::index::{EventIndex, IndexError};
use kiroku_common::quote::quote;

use aggregate::Aggregator;
pub use aggregate::Bounds;
use timeline::Timeline;

/// Rows per table: default and most.
pub const TOP_DEFAULT: u32 = 20;
pub const TOP_MAX: u32 = 1000;
/// The kinds the report reads.
const KINDS_READ: [&str; 3] = ["network", "p2p", "gap"];

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The request cannot be answered as asked; the message says why.
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Index(#[from] IndexError),
}

impl From<ReportError> for Status {
    fn from(e: ReportError) -> Status {
        match e {
            ReportError::BadRequest(m) => Status::invalid_argument(m),
            // A bad host or agent id is a BadQuery: invalid_argument too.
            ReportError::Index(e) => index_status(e),
        }
    }
}

pub async fn network_report(
    q: &QueryService,
    req: Request<NetworkReportRequest>,
) -> Result<Response<NetworkReport>, Status> {
    let who = auth::caller(&req)?;
    let r = req.into_inner();
    let filter = audit_filter(&r);
    let report = q
        .blocking(move |s| build(&s.index, &r, Bounds::default()).map_err(Status::from))
        .await;
    let report = match report {
        Ok(r) => r,
        Err(st) => return Err(q.refuse(&who, "NetworkReport", filter, st).await),
    };
    q.audit(&who, "NetworkReport", filter, report.records)
        .await?;
    Ok(Response::new(report))
}

/// A request as the audit log records it.
fn audit_filter(r: &NetworkReportRequest) -> String {
    format!(
        "from_ms: {}, to_ms: {}, host: {}, agent_id: {}, top: {}, bucket_ms: {}, time_zone: {}",
        r.from_ms,
        r.to_ms,
        quote(&r.host),
        quote(&r.agent_id),
        r.top,
        r.bucket_ms,
        quote(&r.time_zone)
    )
}

/// A request checked: what the scan and the aggregation need.
struct Plan {
    top: usize,
    timeline: Timeline,
}

fn plan(r: &NetworkReportRequest) -> Result<Plan, ReportError> {
    let bad = |m: String| Err(ReportError::BadRequest(m));
    if r.host.trim().is_empty() && r.agent_id.trim().is_empty() {
        return bad("host: name the host the report is about (or its agent_id)".into());
    }
    if r.from_ms <= 0 {
        return bad(format!(
            "from_ms ({}) must be set: the report covers a time range",
            r.from_ms
        ));
    }
    if r.to_ms <= r.from_ms {
        return bad(format!(
            "to_ms ({}) must be after from_ms ({})",
            r.to_ms, r.from_ms
        ));
    }
    if r.top > TOP_MAX {
        return bad(format!("top {} is over the most, {TOP_MAX}", r.top));
    }
    let tz = if r.time_zone.trim().is_empty() {
        kiroku_common::zone::TimeZone::UTC
    } else {
        kiroku_common::zone::lookup(&r.time_zone)
            .map_err(|e| ReportError::BadRequest(format!("time_zone: {e}")))?
    };
    let range = r.to_ms.saturating_sub(r.from_ms);
    let step = match r.bucket_ms {
        0 => timeline::choose(range),
        b if b < timeline::MIN_BUCKET_MS => {
            return bad(format!(
                "bucket_ms {b} is under the shortest bucket, {} ms",
                timeline::MIN_BUCKET_MS
            ));
        }
        b if range / b > timeline::MAX_BUCKETS => {
            return bad(format!(
                "bucket_ms {b} cuts the range into more than {} buckets: choose a longer bucket or 0 (chosen from the range)",
                timeline::MAX_BUCKETS
            ));
        }
        b => b,
    };
    Ok(Plan {
        top: match r.top {
            0 => TOP_DEFAULT,
            n => n,
        } as usize,
        timeline: Timeline::new(r.from_ms, r.to_ms, step, &tz),
    })
}

/// The report of `r` over `index`, the aggregation held to `bounds`.
pub fn build(
    index: &EventIndex,
    r: &NetworkReportRequest,
    bounds: Bounds,
) -> Result<NetworkReport, ReportError> {
    let plan = plan(r)?;
    let mut agg = Aggregator::new(r.from_ms, plan.timeline, bounds);
    let base = SearchRequest {
        from_ms: r.from_ms,
        to_ms: r.to_ms,
        host: r.host.trim().to_owned(),
        agent_id: r.agent_id.trim().to_owned(),
        ..Default::default()
    };
    for kind in KINDS_READ {
        let by_kind = SearchRequest {
            kind: kind.into(),
            ..base.clone()
        };
        scan::each_event(index, &by_kind, |e| {
            agg.add(e);
            true
        })?;
    }
    let mut report = agg.finish(plan.top);
    report.from_ms = r.from_ms;
    report.to_ms = r.to_ms;
    report.host = if r.host.trim().is_empty() {
        r.agent_id.trim().to_owned()
    } else {
        r.host.trim().to_owned()
    };
    Ok(report)
}
