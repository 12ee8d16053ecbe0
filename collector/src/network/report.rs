//! The `NetworkReport` rpc (`kiroku report network`): one host's traffic
//! per process and per peer, a timeline and the P2P findings over a time
//! range.

use kiroku_proto::{NetworkReport, NetworkReportRequest};
use tonic::{Request, Response, Status};

use crate::auth;
use crate::query::QueryService;

pub async fn network_report(
    q: &QueryService,
    req: Request<NetworkReportRequest>,
) -> Result<Response<NetworkReport>, Status> {
    let who = auth::caller(&req)?;
    let r = req.into_inner();
    let filter = format!("host: {:?}, from: {}, to: {}", r.host, r.from_ms, r.to_ms);
    Err(q
        .refuse(
            &who,
            "NetworkReport",
            filter,
            Status::unimplemented("the network report is not built yet"),
        )
        .await)
}
