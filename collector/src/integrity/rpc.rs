//! The Query calls of evidence integrity: `Verify`, `ExportCase`,
//! `GetProof`. Admins only; each call is audited before it is answered.

use kiroku_proto::{ExportCaseRequest, GetEventRequest, InclusionProof, VerifyRequest};
use tonic::{Request, Response, Status};

use crate::query::{ExportStream, QueryService, VerifyStream};

pub async fn verify(
    _svc: &QueryService,
    _req: Request<VerifyRequest>,
) -> Result<Response<VerifyStream>, Status> {
    Err(Status::unimplemented("Verify is being built (issue 18)"))
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
