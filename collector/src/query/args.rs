//! A Query request's arguments checked and bounded before anything reads
//! the index (page, event id, trace hash and limit, an Aggregate's filter
//! and grouping), and the index's and the exfiltration report's errors as
//! gRPC statuses.

use kiroku_proto::{AggregateRequest, SearchRequest, TraceRequest};
use tonic::Status;

use crate::investigate::{ExfilError, TRACE_DEFAULT, TRACE_MAX};
use crate::store::index::{DEFAULT_PAGE, IndexError, MAX_PAGE, StatsQuery};
use kiroku_common::quote::quote;

/// Deepest page offset a client may ask for; the search keeps offset + page
/// results in memory. Deeper reads use SearchStream or a narrower filter.
const MAX_OFFSET: usize = 100_000;
/// Longest event id accepted (agent id, stream id and sequence number).
const MAX_EVENT_ID: usize = 512;

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

pub(super) fn exfil_status(e: ExfilError) -> Status {
    match e {
        ExfilError::BadRequest(m) => Status::invalid_argument(m),
        ExfilError::Index(e) => index_status(e),
    }
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

/// The checks of a search request before anything reads the index: its
/// page, and every field within its bounds (`store/index/limits.rs`).
pub(super) fn check_search(r: &SearchRequest) -> Result<(usize, usize), Status> {
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
