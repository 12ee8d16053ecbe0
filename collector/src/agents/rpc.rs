//! RetireAgent.

use kiroku_proto::{RetireAgentRequest, RetireAgentResponse};
use tonic::{Request, Response, Status};

use crate::admin::AdminService;

pub async fn retire(
    _svc: &AdminService,
    _req: Request<RetireAgentRequest>,
) -> Result<Response<RetireAgentResponse>, Status> {
    Err(Status::unimplemented("RetireAgent is not built yet"))
}
