//! Who may call what. The caller's identity comes only from its verified
//! client certificate (`kiroku://<role>/<name>` URI SAN); each gRPC service
//! is wrapped in an interceptor that admits the allowed roles and puts the
//! [`PeerIdentity`] into the request's extensions for the handler.

use kiroku_common::pki::{PeerIdentity, Role};
use tonic::{Request, Status};

/// Roles allowed to call the Ingest service.
pub const INGEST_ROLES: &[Role] = &[Role::Agent, Role::Admin];
/// Roles allowed to call the Query service.
pub const QUERY_ROLES: &[Role] = &[Role::Investigator, Role::Admin];

/// Identity of the caller of `req`, from its client certificate.
pub fn peer_identity<T>(req: &Request<T>) -> Result<PeerIdentity, Status> {
    let peer = req
        .remote_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "unknown".into());
    let Some(certs) = req.peer_certs() else {
        tracing::warn!(peer = %peer, "refused: no client certificate");
        return Err(Status::unauthenticated(
            "a client certificate issued by the Kiroku CA is required",
        ));
    };
    let Some(leaf) = certs.first() else {
        return Err(Status::unauthenticated("empty client certificate chain"));
    };
    kiroku_common::pki::identity_from_der(leaf.as_ref()).map_err(|e| {
        tracing::warn!(peer = %peer, error = %e, "refused: certificate carries no Kiroku identity");
        Status::unauthenticated(format!("client certificate has no Kiroku identity: {e}"))
    })
}

/// The agent group the caller's certificate carries (`kiroku://group/<g>`),
/// empty when it carries none.
pub fn peer_group<T>(req: &Request<T>) -> Result<String, Status> {
    let Some(leaf) = req.peer_certs().and_then(|c| c.first().cloned()) else {
        return Ok(String::new());
    };
    kiroku_common::pki::group_from_der(leaf.as_ref())
        .map(Option::unwrap_or_default)
        .map_err(|e| {
            Status::unauthenticated(format!("client certificate carries an invalid group: {e}"))
        })
}

/// An interceptor admitting only `allowed` roles to `service`.
pub fn require(
    service: &'static str,
    allowed: &'static [Role],
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |mut req: Request<()>| {
        let id = peer_identity(&req)?;
        if !allowed.contains(&id.role) {
            let peer = req.remote_addr().map(|a| a.to_string()).unwrap_or_default();
            tracing::warn!(identity = %id, peer = %peer, service, "refused: role not allowed");
            let roles: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
            return Err(Status::permission_denied(format!(
                "{id} may not call {service} (allowed roles: {})",
                roles.join(", ")
            )));
        }
        req.extensions_mut().insert(id);
        Ok(req)
    }
}

/// The identity the interceptor admitted.
pub fn caller<T>(req: &Request<T>) -> Result<PeerIdentity, Status> {
    req.extensions()
        .get::<PeerIdentity>()
        .cloned()
        .ok_or_else(|| {
            Status::internal("caller identity missing (service not behind the auth interceptor)")
        })
}
