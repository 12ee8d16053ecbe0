//! The `GetDelivery` rpc: a mail's downstream fate, for investigators
//! (audited like `GetAnnotations`).

use kiroku_proto::{Delivery, GetEventRequest};
use tonic::{Request, Response, Status};

use crate::auth;
use crate::query::QueryService;

pub async fn get_delivery(
    q: &QueryService,
    req: Request<GetEventRequest>,
) -> Result<Response<Delivery>, Status> {
    let who = auth::caller(&req)?;
    let id = req.into_inner().event_id;
    let filter = format!("event_id: {id:?}");
    if let Err(st) = crate::query::event_id_arg(&id) {
        return Err(q.refuse(&who, "GetDelivery", filter, st).await);
    }
    q.audit(&who, "GetDelivery", filter, 1).await?;
    let id2 = id.clone();
    let found = q
        .blocking(move |s| {
            s.delivery.delivery(&id2).map_err(|e| {
                tracing::error!(error = %e, "reading a delivery failed");
                s.exit_if_meta_failed();
                Status::internal(e.to_string())
            })
        })
        .await?;
    // Nothing joined yet (no MTA log line, or not a relayed mail): empty,
    // with the id.
    Ok(Response::new(found.unwrap_or(Delivery {
        event_id: id,
        status: crate::delivery::UNKNOWN.into(),
        ..Default::default()
    })))
}
