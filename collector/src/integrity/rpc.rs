//! The Query calls of evidence integrity: `Verify`, `ExportCase`,
//! `GetProof`. Admins only; each call is audited before it is answered.

use kiroku_common::pki::Role;
use kiroku_common::quote::quote;
use kiroku_proto::{ExportCaseRequest, GetEventRequest, InclusionProof, VerifyRequest};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use crate::auth;
use crate::integrity::export::{self, ExportError};
use crate::query::{ExportStream, QueryService, VerifyStream, index_status};
use crate::store::audit::admin_call;

/// Checks the store (`integrity/verify.rs`) in a blocking task, streaming
/// progress, then the findings, then the summary. Admins only; recorded in
/// the audit log before it starts and with its outcome when done.
pub async fn verify(
    svc: &QueryService,
    req: Request<VerifyRequest>,
) -> Result<Response<VerifyStream>, Status> {
    use crate::store::audit::admin_call;
    let who = crate::auth::caller(&req)?;
    let r = req.into_inner();
    if who.role != kiroku_common::pki::Role::Admin {
        tracing::warn!(identity = %who, "refused: Verify is for admins only");
        // A refused call is audited like any other (who tried what).
        let st = Status::permission_denied(format!("{who} may not verify the store: admins only"));
        return Err(svc.refuse(&who, "Verify", format!("{r:?}"), st).await);
    }
    let opts = crate::integrity::verify::Options::from(&r);
    let store = svc.store().clone();
    let ca = svc.ca_pem();
    let tsa_ca = svc.tsa_ca();
    let identity = who.to_string();
    let asked = format!("verify {r:?}");
    {
        let (store, identity) = (store.clone(), identity.clone());
        tokio::task::spawn_blocking(move || {
            store.audit_admin(&identity, admin_call::VERIFY, &asked)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| {
            Status::unavailable(format!(
                "the verification cannot be recorded in the audit log ({e}); try again later"
            ))
        })?;
    }
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::task::spawn_blocking(move || {
        let mut send = |m: kiroku_proto::VerifyResponse| {
            // The caller may be gone; the run finishes and is recorded.
            let _ = tx.blocking_send(Ok(m));
        };
        let ca = (!ca.is_empty()).then_some(ca.as_slice());
        let tsa_ca = tsa_ca.as_ref().map(|t| t.as_slice());
        let outcome = match crate::integrity::verify::run(&store, ca, tsa_ca, &opts, &mut send) {
            Ok(s) => {
                tracing::info!(identity = %identity, alterations = s.alterations, "{}", s.message);
                s.message
            }
            Err(e) => {
                tracing::error!(identity = %identity, error = %format!("{e:#}"), "verify failed");
                let _ = tx.blocking_send(Err(Status::internal(format!("verify failed: {e:#}"))));
                format!("failed: {e:#}")
            }
        };
        if let Err(e) = store.audit_admin(
            &identity,
            admin_call::VERIFY,
            &format!("verify done: {outcome}"),
        ) {
            tracing::error!(error = %e, "the verification's outcome could not be recorded in the audit log");
        }
    });
    Ok(Response::new(Box::pin(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    )))
}

/// A case bundle (`integrity/export.rs`), admins only: the filter checked
/// like a search's, the events selected, the export recorded in the audit
/// log (kind admin) before the first file is sent, then the files streamed
/// from a blocking thread. A refused request is audited as a refusal.
pub async fn export_case(
    svc: &QueryService,
    req: Request<ExportCaseRequest>,
) -> Result<Response<ExportStream>, Status> {
    let who = auth::caller(&req)?;
    let r = req.into_inner();
    let asked = format!(
        "case {}, reason {}, {:?}",
        quote(&r.case_name),
        quote(&r.reason),
        r.filter
    );
    if who.role != Role::Admin {
        let st = Status::permission_denied(format!("{who} may not export cases: admins only"));
        return Err(svc.refuse(&who, CALL, asked, st).await);
    }
    let case = match export_args(r) {
        Ok(c) => c,
        Err(st) => return Err(svc.refuse(&who, CALL, asked, st).await),
    };
    let store = svc.store().clone();
    let filter = case.filter.clone();
    let selected = tokio::task::spawn_blocking(move || export::build::select(&store, &filter))
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
    let events = match selected {
        Ok(ev) => ev,
        Err(e) => return Err(svc.refuse(&who, CALL, asked, export_status(e)).await),
    };
    let detail = format!(
        "case {}: {} events; reason {}; filter {:?}",
        quote(&case.name),
        events.len(),
        quote(&case.reason),
        case.filter
    );
    let store = svc.store().clone();
    let identity = who.to_string();
    let own = tokio::task::spawn_blocking(move || {
        store.audit_admin(&identity, admin_call::EXPORT, &detail)
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))?
    .map_err(|e| {
        tracing::error!(error = %e, "cannot write the audit log; the export is refused");
        Status::unavailable(format!(
            "the export cannot be recorded in the audit log ({e}); try again later"
        ))
    })?;
    let (tx, rx) = mpsc::channel(16);
    let store = svc.store().clone();
    let signer = svc.signer().cloned();
    tokio::task::spawn_blocking(move || {
        let exporter = export::Exporter {
            identity: who.to_string(),
            signer: signer.as_deref(),
            unsigned_reason:
                "the collector has no signing key ([checkpoint] signing_cert and signing_key)"
                    .into(),
        };
        let send = |c| tx.blocking_send(Ok(c)).is_ok();
        match export::build(&store, &case, &exporter, &events, &own, send) {
            Ok(s) => {
                tracing::info!(identity = %who, case = %case.name, events = s.events, files = s.files, bytes = s.bytes, "case exported");
            }
            Err(ExportError::Gone) => {
                tracing::warn!(identity = %who, case = %case.name, "the case export was abandoned by the client");
            }
            Err(e) => {
                tracing::error!(identity = %who, case = %case.name, error = %e, "the case export failed");
                let _ = tx.blocking_send(Err(export_status(e)));
            }
        }
    });
    Ok(Response::new(Box::pin(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    )))
}

/// The audit log's call name of an export.
const CALL: &str = "ExportCase";
/// Longest case name and reason accepted (bytes).
const MAX_CASE_NAME: usize = 200;
const MAX_REASON: usize = 2000;

/// The case of a request, checked: a name of printable characters, a
/// bounded reason, and the filter within a search's bounds.
fn export_args(r: ExportCaseRequest) -> Result<export::Case, Status> {
    let name = r.case_name.trim().to_owned();
    if name.is_empty() || name.len() > MAX_CASE_NAME || name.chars().any(char::is_control) {
        return Err(Status::invalid_argument(format!(
            "case name {}: give 1 to {MAX_CASE_NAME} bytes without control characters",
            quote(&r.case_name)
        )));
    }
    if r.reason.len() > MAX_REASON {
        return Err(Status::invalid_argument(format!(
            "the reason is {} bytes; at most {MAX_REASON} are accepted",
            r.reason.len()
        )));
    }
    let filter = r.filter.unwrap_or_default();
    crate::store::index::check_search(&filter).map_err(index_status)?;
    Ok(export::Case {
        name,
        reason: r.reason,
        filter,
    })
}

fn export_status(e: ExportError) -> Status {
    match e {
        ExportError::Search(e) => index_status(e),
        ExportError::TooMany(_) => Status::invalid_argument(e.to_string()),
        ExportError::Gone => Status::cancelled(e.to_string()),
        ExportError::Read { .. } => Status::data_loss(format!(
            "{e}; the case was not exported whole. The collector's operator should {}",
            crate::store::REPAIR_HINT
        )),
        ExportError::Sign(_) | ExportError::Internal(_) => Status::internal(e.to_string()),
    }
}

/// The event's journal entry and its RFC 6962 path in the newest
/// checkpoint that covers it (`checkpoint` 0 and an empty path when none
/// does yet). Investigators may call it, as they may `GetEvent`: the entry
/// holds the same event. Audited.
pub async fn get_proof(
    svc: &QueryService,
    req: Request<GetEventRequest>,
) -> Result<Response<InclusionProof>, Status> {
    let who = crate::auth::caller(&req)?;
    let id = req.into_inner().event_id;
    let filter = format!("event_id: {id:?}");
    if id.is_empty() || id.len() > 512 {
        let st = Status::invalid_argument("event_id: 1 to 512 bytes");
        return Err(svc.refuse(&who, "GetProof", filter, st).await);
    }
    svc.audit(&who, "GetProof", filter, 1).await?;
    let proof = svc
        .blocking(move |s| {
            crate::integrity::proof::prove_event(s, &id)
                .map(|p| p.proof)
                .map_err(Status::from)
        })
        .await?;
    Ok(Response::new(proof))
}
