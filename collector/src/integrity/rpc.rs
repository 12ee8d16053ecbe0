//! The Query calls of evidence integrity: `Verify`, `ExportCase`,
//! `GetProof`. Admins only; each call is audited before it is answered.

use kiroku_proto::{ExportCaseRequest, GetEventRequest, InclusionProof, VerifyRequest};
use tonic::{Request, Response, Status};

use crate::query::{ExportStream, QueryService, VerifyStream};

/// Checks the store (`integrity/verify.rs`) in a blocking task, streaming
/// progress, then the findings, then the summary. Admins only; recorded in
/// the audit log before it starts and with its outcome when done.
pub async fn verify(
    svc: &QueryService,
    req: Request<VerifyRequest>,
) -> Result<Response<VerifyStream>, Status> {
    use crate::store::audit::admin_call;
    let who = crate::auth::caller(&req)?;
    if who.role != kiroku_common::pki::Role::Admin {
        tracing::warn!(identity = %who, "refused: Verify is for admins only");
        return Err(Status::permission_denied(format!(
            "{who} may not verify the store: admins only"
        )));
    }
    let r = req.into_inner();
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

pub async fn export_case(
    _svc: &QueryService,
    _req: Request<ExportCaseRequest>,
) -> Result<Response<ExportStream>, Status> {
    Err(Status::unimplemented(
        "ExportCase is being built (issue 18)",
    ))
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
