//! The `GetDelivery` rpc.

use kiroku_proto::{Delivery, GetEventRequest};
use tonic::{Request, Response, Status};

use crate::query::QueryService;

pub async fn get_delivery(
    _q: &QueryService,
    _req: Request<GetEventRequest>,
) -> Result<Response<Delivery>, Status> {
    Err(Status::unimplemented(
        "GetDelivery: not built yet (issue 20)",
    ))
}
