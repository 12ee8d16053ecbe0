//! RetentionPlan and Purge (erasure on request, undo): admins only; every
//! call, refusals included, in the audit log (a plan and a dry run as
//! reads, an erasure and an undo as admin entries written before anything
//! changes).

use kiroku_common::pki::{PeerIdentity, Role};
use kiroku_common::quote::quote;
use kiroku_proto::{PurgeRequest, PurgeResponse, RetentionPlan, RetentionPlanRequest};
use tonic::{Request, Response, Status};

use super::marks::Marks;
use super::policy::Policy;
use crate::admin::AdminService;
use crate::store::Store;
use crate::store::audit::admin_call;

/// Longest reason accepted (it goes into every tombstone).
const MAX_REASON: usize = 1000;
/// Longest candidate policy accepted.
const MAX_POLICY: usize = 256 * 1024;

async fn blocking<T: Send + 'static>(
    svc: &AdminService,
    f: impl FnOnce(&Store) -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    let store = svc.store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
}

/// A read recorded in the audit log (durable) before it is answered.
async fn audit_read(
    svc: &AdminService,
    who: &PeerIdentity,
    call: &'static str,
    detail: String,
    results: u64,
) -> Result<(), Status> {
    let who = who.to_string();
    blocking(svc, move |s| {
        s.audit_query(&who, call, &detail, results).map_err(|e| {
            Status::unavailable(format!(
                "the call cannot be recorded in the audit log ({e}); try again later"
            ))
        })
    })
    .await
}

/// A change recorded in the audit log (durable) before it is made.
async fn audit_change(
    svc: &AdminService,
    who: &PeerIdentity,
    call: &'static str,
    detail: String,
) -> Result<(), Status> {
    let who = who.to_string();
    blocking(svc, move |s| {
        s.audit_admin(&who, call, &detail).map(|_| ()).map_err(|e| {
            Status::unavailable(format!(
                "the change cannot be recorded in the audit log ({e}); nothing was changed, try again later"
            ))
        })
    })
    .await
}

/// Records the refusal (who, what, why) and returns it.
async fn refuse(
    svc: &AdminService,
    who: &PeerIdentity,
    call: &'static str,
    detail: String,
    st: Status,
) -> Status {
    tracing::warn!(identity = %who, call, code = ?st.code(), reason = %st.message(), "refused");
    let entry = format!("REFUSED {:?}: {} | {detail}", st.code(), st.message());
    let _ = audit_read(svc, who, call, entry, 0).await;
    st
}

fn admins_only(who: &PeerIdentity, what: &str) -> Result<(), Status> {
    if who.role == Role::Admin {
        return Ok(());
    }
    Err(Status::permission_denied(format!(
        "{who} may not {what}: admins only"
    )))
}

fn internal(e: anyhow::Error) -> Status {
    Status::internal(format!("{e:#}"))
}

pub async fn plan(
    svc: &AdminService,
    req: Request<RetentionPlanRequest>,
) -> Result<Response<RetentionPlan>, Status> {
    const CALL: &str = "RetentionPlan";
    let who = crate::auth::caller(&req)?;
    let r = req.into_inner();
    let detail = if r.policy_toml.is_empty() {
        "the policy in force".to_owned()
    } else {
        format!(
            "candidate policy sha256 {}",
            kiroku_common::sha256_hex(r.policy_toml.as_bytes())
        )
    };
    if let Err(st) = admins_only(&who, "preview retention") {
        return Err(refuse(svc, &who, CALL, detail, st).await);
    }
    if r.policy_toml.len() > MAX_POLICY {
        let st = Status::invalid_argument(format!(
            "the candidate policy is {} bytes; at most {MAX_POLICY} are accepted",
            r.policy_toml.len()
        ));
        return Err(refuse(svc, &who, CALL, detail, st).await);
    }
    let (policy, shortened) = if r.policy_toml.is_empty() {
        ((*svc.retention.policy()).clone(), Vec::new())
    } else {
        match svc.retention.preview(&r.policy_toml) {
            Ok((rules, shortened)) => (Policy::new(rules), shortened),
            Err(m) => {
                let st = Status::invalid_argument(format!("the candidate policy: {m}"));
                return Err(refuse(svc, &who, CALL, detail, st).await);
            }
        }
    };
    let holds = svc.holds.clone();
    let now = crate::clock::now_ms();
    let mut plan = blocking(svc, move |s| {
        let held = holds.held_set(s).map_err(internal)?;
        let marks = Marks::open(&s.meta).map_err(internal)?;
        super::plan::scan(s, &policy, &marks, &held, now).map_err(internal)
    })
    .await?;
    plan.shortened = shortened;
    if let Some((_, at)) = svc.retention.policy().pending_since()
        && r.policy_toml.is_empty()
    {
        plan.shortened.push(format!(
            "a shortening of the policy in force takes effect at {} (until then each event keeps the longer period)",
            super::fmt_ms(at)
        ));
    }
    audit_read(svc, &who, CALL, detail, plan.events_scanned).await?;
    Ok(Response::new(plan))
}

pub async fn purge(
    svc: &AdminService,
    req: Request<PurgeRequest>,
) -> Result<Response<PurgeResponse>, Status> {
    const CALL: &str = "Purge";
    let who = crate::auth::caller(&req)?;
    let r = req.into_inner();
    let filter = r.filter.clone().unwrap_or_default();
    let detail = format!(
        "{} reason {} dry_run {} filter {filter:?}",
        if r.undo { "undo" } else { "erase" },
        quote(&r.reason),
        r.dry_run
    );
    if let Err(st) = check(&who, &r, &filter) {
        return Err(refuse(svc, &who, CALL, detail, st).await);
    }
    let f2 = filter.clone();
    let found = blocking(svc, move |s| {
        super::erase::matching(s, &f2).map_err(|e| {
            match e.downcast::<crate::store::index::IndexError>() {
                Ok(ie) => crate::query::index_status(ie),
                Err(e) => internal(e),
            }
        })
    })
    .await;
    let (ids, total) = match found {
        Ok(f) => f,
        Err(st) => return Err(refuse(svc, &who, CALL, detail, st).await),
    };
    let more = total.saturating_sub(ids.len() as u64);
    let mut resp = if r.undo {
        undo(svc, &who, &r, ids, detail).await?
    } else {
        erase(svc, &who, &r, ids, detail).await?
    };
    if more > 0 {
        resp.notes.push(format!(
            "{more} more events match: at most {} are taken per request; run it again",
            super::erase::MAX_EVENTS
        ));
    }
    Ok(Response::new(resp))
}

/// Admins only, a reason, a filter that names something.
fn check(
    who: &PeerIdentity,
    r: &PurgeRequest,
    filter: &kiroku_proto::SearchRequest,
) -> Result<(), Status> {
    admins_only(who, "purge or restore events")?;
    let reason = r.reason.trim();
    if reason.is_empty() {
        return Err(Status::invalid_argument(
            "a reason is required (--reason): it goes into the tombstones and the audit log",
        ));
    }
    if reason.len() > MAX_REASON {
        return Err(Status::invalid_argument(format!(
            "the reason is {} bytes; at most {MAX_REASON} are accepted",
            reason.len()
        )));
    }
    if !super::erase::names_a_filter(filter) {
        return Err(Status::invalid_argument(
            "a filter is required (--user, --address or any search filter): an erasure of everything is refused",
        ));
    }
    crate::store::index::check_search(filter).map_err(crate::query::index_status)?;
    Ok(())
}

async fn erase(
    svc: &AdminService,
    who: &PeerIdentity,
    r: &PurgeRequest,
    ids: Vec<String>,
    detail: String,
) -> Result<PurgeResponse, Status> {
    const CALL: &str = "Purge";
    let holds = svc.holds.clone();
    let (reason, by, dry_run) = (r.reason.trim().to_owned(), who.to_string(), r.dry_run);
    let n = ids.len() as u64;
    if !dry_run {
        // The request itself (the filter) before anything is removed; the
        // store adds its own entry per purge with the tombstones' leaves.
        audit_change(
            svc,
            who,
            admin_call::ERASURE,
            format!("erasure requested: {detail}; {n} events match"),
        )
        .await?;
    }
    let resp = blocking(svc, move |s| {
        let marks = Marks::open(&s.meta).map_err(internal)?;
        // Holds do not change between the held set and the end of the
        // purge (a hold created meanwhile waits for it).
        loop {
            let held = holds.held_set(s).map_err(|e| {
                Status::failed_precondition(format!(
                    "the legal holds cannot be evaluated now, so nothing is erased: {e:#}"
                ))
            })?;
            let _no_hold_change = holds.purge_guard();
            if !holds.is_current(&held) {
                continue;
            }
            return super::erase::erase(s, &marks, &held, ids, &reason, &by, dry_run)
                .map_err(internal);
        }
    })
    .await?;
    tracing::info!(identity = %who, matched = resp.matched, purged = resp.purged, held_back = resp.held_back, dry_run, "erasure on request");
    if dry_run {
        audit_read(svc, who, CALL, detail, resp.matched).await?;
    }
    Ok(resp)
}

async fn undo(
    svc: &AdminService,
    who: &PeerIdentity,
    r: &PurgeRequest,
    ids: Vec<String>,
    detail: String,
) -> Result<PurgeResponse, Status> {
    const CALL: &str = "Purge";
    let dry_run = r.dry_run;
    let until = crate::clock::now_ms().saturating_add(svc.retention.policy().undo_exempt_ms());
    let n = ids.len() as u64;
    if dry_run {
        audit_read(svc, who, CALL, detail.clone(), n).await?;
    } else {
        audit_change(
            svc,
            who,
            admin_call::RETENTION_UNDO,
            format!(
                "{detail}; {n} events match; exempt until {}",
                super::fmt_ms(until)
            ),
        )
        .await?;
    }
    let holds = svc.holds.clone();
    blocking(svc, move |s| {
        let _no_purge = holds.undo_guard();
        let marks = Marks::open(&s.meta).map_err(internal)?;
        super::erase::undo(&marks, ids, until, dry_run).map_err(internal)
    })
    .await
}
