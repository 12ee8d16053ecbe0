//! HoldCreate, HoldList, HoldRelease.

use kiroku_proto::{
    Hold, HoldCreateRequest, HoldListRequest, HoldListResponse, HoldReleaseRequest,
};
use tonic::{Request, Response, Status};

use crate::admin::AdminService;

pub async fn create(
    _svc: &AdminService,
    _req: Request<HoldCreateRequest>,
) -> Result<Response<Hold>, Status> {
    Err(Status::unimplemented("HoldCreate is not built yet"))
}

pub async fn list(
    _svc: &AdminService,
    _req: Request<HoldListRequest>,
) -> Result<Response<HoldListResponse>, Status> {
    Err(Status::unimplemented("HoldList is not built yet"))
}

pub async fn release(
    _svc: &AdminService,
    _req: Request<HoldReleaseRequest>,
) -> Result<Response<Hold>, Status> {
    Err(Status::unimplemented("HoldRelease is not built yet"))
}
