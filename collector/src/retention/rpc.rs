//! RetentionPlan and Purge (erasure on request, undo).

use kiroku_proto::{PurgeRequest, PurgeResponse, RetentionPlan, RetentionPlanRequest};
use tonic::{Request, Response, Status};

use crate::admin::AdminService;

pub async fn plan(
    _svc: &AdminService,
    _req: Request<RetentionPlanRequest>,
) -> Result<Response<RetentionPlan>, Status> {
    Err(Status::unimplemented("RetentionPlan is not built yet"))
}

pub async fn purge(
    _svc: &AdminService,
    _req: Request<PurgeRequest>,
) -> Result<Response<PurgeResponse>, Status> {
    Err(Status::unimplemented("Purge is not built yet"))
}
