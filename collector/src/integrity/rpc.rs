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

pub async fn get_proof(
    _svc: &QueryService,
    _req: Request<GetEventRequest>,
) -> Result<Response<InclusionProof>, Status> {
    Err(Status::unimplemented("GetProof is being built (issue 18)"))
}
