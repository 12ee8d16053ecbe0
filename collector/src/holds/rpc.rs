//! HoldCreate (investigators and admins), HoldList (both), HoldRelease
//! (admins only). Every change, and every refused change, is an admin
//! entry in the audit log (`HoldCreate`, `HoldRelease`: who, the case, the
//! reason, the filter) written before the hold store changes; a list is a
//! query entry.

use kiroku_common::pki::{PeerIdentity, Role};
use kiroku_common::quote::quote;
use kiroku_proto::{
    Hold, HoldCreateRequest, HoldListRequest, HoldListResponse, HoldReleaseRequest, SearchRequest,
};
use tonic::{Request, Response, Status};

use super::{ReleaseError, describe_filter, filter_is_empty};
use crate::admin::AdminService;
use crate::auth;
use crate::store::Store;
use crate::store::audit::admin_call;

/// Longest case name accepted.
const MAX_CASE: usize = 200;
/// Longest reason accepted.
const MAX_REASON: usize = 2000;

pub async fn create(
    svc: &AdminService,
    req: Request<HoldCreateRequest>,
) -> Result<Response<Hold>, Status> {
    let who = auth::caller(&req)?;
    let r = req.into_inner();
    let filter = r.filter.clone().unwrap_or_default();
    let asked = format!(
        "case {}, reason {}, filter {}",
        quote(&r.case_name),
        quote(&r.reason),
        describe_filter(&filter)
    );
    if let Err(st) = check_create(&r, &filter) {
        return Err(refuse(svc, &who, admin_call::HOLD_CREATE, &asked, st).await);
    }
    let (store, holds, by) = (svc.store.clone(), svc.holds.clone(), who.to_string());
    let made = blocking(move || {
        // The filter is run once before anything is written: one the index
        // cannot answer is refused, and the count goes into the audit entry.
        let events = count(&store, &filter)?;
        let hold = holds
            .create(r.case_name.trim(), r.reason.trim(), filter, &by, |h| {
                let detail = format!(
                    "hold {} created for case {}: reason {}; filter {}; covers {events} events now",
                    h.id,
                    quote(&h.case_name),
                    quote(&h.reason),
                    describe_filter(&h.filter.clone().unwrap_or_default())
                );
                store.audit_admin(&by, admin_call::HOLD_CREATE, &detail)?;
                Ok(())
            })
            .map_err(|e| stored_status(&store, "the hold was not created", e))?;
        Ok(Hold { events, ..hold })
    })
    .await;
    match made {
        Ok(h) => {
            tracing::info!(identity = %who, hold = %h.id, case = %quote(&h.case_name), events = h.events, "legal hold created");
            Ok(Response::new(h))
        }
        Err(st) => Err(refuse(svc, &who, admin_call::HOLD_CREATE, &asked, st).await),
    }
}

pub async fn list(
    svc: &AdminService,
    req: Request<HoldListRequest>,
) -> Result<Response<HoldListResponse>, Status> {
    let who = auth::caller(&req)?;
    let r = req.into_inner();
    let (store, holds) = (svc.store.clone(), svc.holds.clone());
    let listed = blocking(move || {
        let all = if r.include_released {
            holds.all()
        } else {
            holds.in_force()
        }
        .map_err(|e| stored_status(&store, "the holds cannot be read", e))?;
        all.into_iter()
            .map(|h| {
                let events = match (&h.filter, h.released_at_ms) {
                    (Some(f), 0) => count(&store, f)?,
                    _ => 0,
                };
                Ok(Hold { events, ..h })
            })
            .collect::<Result<Vec<_>, Status>>()
    })
    .await?;
    let entry = format!("include_released: {}", r.include_released);
    let store = svc.store.clone();
    let (by, n) = (who.to_string(), listed.len() as u64);
    blocking(move || {
        store
            .audit_query(&by, "HoldList", &entry, n)
            .map_err(|e| stored_status(&store, "the list cannot be recorded in the audit log", e))
    })
    .await?;
    Ok(Response::new(HoldListResponse { holds: listed }))
}

pub async fn release(
    svc: &AdminService,
    req: Request<HoldReleaseRequest>,
) -> Result<Response<Hold>, Status> {
    let who = auth::caller(&req)?;
    let r = req.into_inner();
    let asked = format!("hold or case {}, reason {}", quote(&r.id), quote(&r.reason));
    let checked = if who.role != Role::Admin {
        Err(Status::permission_denied(format!(
            "{who} may not release a legal hold: only an admin may (ask an admin to run `kiroku hold release {} --reason ...`)",
            quote(&r.id)
        )))
    } else {
        check_release(&r)
    };
    if let Err(st) = checked {
        return Err(refuse(svc, &who, admin_call::HOLD_RELEASE, &asked, st).await);
    }
    let (store, holds, by) = (svc.store.clone(), svc.holds.clone(), who.to_string());
    let released = blocking(move || {
        let id = r.id.trim();
        holds
            .release(id, r.reason.trim(), &by, |hs| {
                for h in hs {
                    let detail = format!(
                        "hold {} of case {} released: reason {}; it was created by {} for {}; filter {}",
                        h.id,
                        quote(&h.case_name),
                        quote(&h.release_reason),
                        h.created_by,
                        quote(&h.reason),
                        describe_filter(&h.filter.clone().unwrap_or_default())
                    );
                    store.audit_admin(&by, admin_call::HOLD_RELEASE, &detail)?;
                }
                Ok(())
            })
            .map_err(|e| match e {
                ReleaseError::NotFound(_) => Status::not_found(format!(
                    "{e} (`kiroku hold list --all` lists them)"
                )),
                ReleaseError::AlreadyReleased(_) => Status::failed_precondition(e.to_string()),
                ReleaseError::Store(e) => stored_status(&store, "nothing was released", e),
            })
    })
    .await;
    match released {
        Ok(hs) => {
            let ids: Vec<&str> = hs.iter().map(|h| h.id.as_str()).collect();
            tracing::info!(identity = %who, holds = %ids.join(", "), "legal hold released");
            // A case with several holds: one answer naming them all.
            let mut first = hs.first().cloned().unwrap_or_default();
            first.id = ids.join(", ");
            Ok(Response::new(first))
        }
        Err(st) => Err(refuse(svc, &who, admin_call::HOLD_RELEASE, &asked, st).await),
    }
}

fn check_create(r: &HoldCreateRequest, filter: &SearchRequest) -> Result<(), Status> {
    check_text("case_name", &r.case_name, MAX_CASE)?;
    check_text("reason", &r.reason, MAX_REASON)?;
    if filter_is_empty(filter) {
        return Err(Status::invalid_argument(
            "a hold needs a filter naming what it holds (an agent, user, address, domain, time range, hash, tag, ...); a hold over every event is refused",
        ));
    }
    crate::store::index::check_search(filter).map_err(crate::query::index_status)
}

fn check_release(r: &HoldReleaseRequest) -> Result<(), Status> {
    check_text("id", &r.id, MAX_CASE)?;
    check_text("reason", &r.reason, MAX_REASON)
}

/// A required text: not blank, bounded, no control characters.
fn check_text(field: &str, v: &str, max: usize) -> Result<(), Status> {
    if v.trim().is_empty() {
        return Err(Status::invalid_argument(format!("{field} is required")));
    }
    if v.len() > max {
        return Err(Status::invalid_argument(format!(
            "{field} is {} bytes; at most {max} are accepted",
            v.len()
        )));
    }
    if v.chars().any(char::is_control) {
        return Err(Status::invalid_argument(format!(
            "{field} {} holds control characters",
            quote(v)
        )));
    }
    Ok(())
}

/// Events `filter` matches now.
fn count(store: &Store, filter: &SearchRequest) -> Result<u64, Status> {
    store
        .index
        .search(filter, 0, 1)
        .map(|(_, total, _)| total)
        .map_err(crate::query::index_status)
}

/// A failure of the hold store or the audit log: the caller is told that
/// nothing changed; a metadata store that failed ends the process.
fn stored_status(store: &Store, what: &str, e: anyhow::Error) -> Status {
    tracing::error!(error = %format!("{e:#}"), "{what}");
    store.exit_if_meta_failed();
    Status::unavailable(format!("{what}: {e:#}; try again later"))
}

/// Records a refused hold request in the audit log (admin kind: who, what
/// was asked, why) and returns the refusal.
async fn refuse(
    svc: &AdminService,
    who: &PeerIdentity,
    call: &'static str,
    asked: &str,
    st: Status,
) -> Status {
    tracing::warn!(identity = %who, call, code = ?st.code(), reason = %st.message(), "hold request refused");
    let detail = format!("REFUSED {:?}: {} | {asked}", st.code(), st.message());
    let (store, by) = (svc.store.clone(), who.to_string());
    let written =
        tokio::task::spawn_blocking(move || store.audit_admin(&by, call, &detail).map(drop)).await;
    if !matches!(written, Ok(Ok(()))) {
        tracing::error!(identity = %who, call, "cannot record the refusal in the audit log");
    }
    st
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(e.to_string()))?
}
