//! An agent's host record (updated from its Hello and Status reports) and
//! its identity in the audit log (first seen, or with another
//! certificate).

use kiroku_common::quote::quote;
use kiroku_proto::HostInfo;
use tonic::Status;

use crate::store::Store;

/// Records in the audit log an agent identity seen for the first time, or
/// connecting with another certificate than before (issued anew).
pub(super) fn audit_identity(
    store: &Store,
    id: &kiroku_common::pki::PeerIdentity,
    hello: &kiroku_proto::Hello,
    cert_sha: &str,
) -> Result<(), Status> {
    use crate::store::audit::admin_call;
    let internal = |e: String| Status::internal(e);
    let known = store
        .meta
        .host(&id.name)
        .map_err(|e| internal(e.to_string()))?
        .is_some();
    let before = store
        .meta
        .agent_cert(&id.name)
        .map_err(|e| internal(e.to_string()))?;
    let host = hello.host.as_ref().map_or("", |h| h.hostname.as_str());
    let entry = if !known {
        Some((
            admin_call::AGENT_IDENTITY_SEEN,
            format!(
                "agent identity {id} connected for the first time: stream {}, host {}, certificate sha256 {cert_sha}",
                hello.stream_id,
                quote(host)
            ),
        ))
    } else if before.as_deref().is_some_and(|b| b != cert_sha) {
        Some((
            admin_call::AGENT_CERT_CHANGED,
            format!(
                "agent identity {id} connected with another certificate: sha256 {cert_sha}, before {}",
                before.as_deref().unwrap_or_default()
            ),
        ))
    } else {
        None
    };
    if let Some((call, detail)) = entry {
        store
            .audit_admin(&id.to_string(), call, &detail)
            .map_err(|e| {
                Status::unavailable(format!(
                    "the collector cannot record this agent in its audit log ({e}); try again later"
                ))
            })?;
    }
    if before.as_deref() != Some(cert_sha) && !cert_sha.is_empty() {
        store
            .meta
            .note_agent_cert(&id.name, cert_sha)
            .map_err(|e| internal(e.to_string()))?;
    }
    Ok(())
}

/// Updates the stored host record with `f` (blocking: sled).
pub(super) fn update_host(
    store: &Store,
    agent_id: &str,
    f: impl FnOnce(&mut HostInfo),
) -> Result<(), Status> {
    let mut info = store
        .meta
        .host(agent_id)
        .map_err(|e| Status::internal(e.to_string()))?
        .unwrap_or_default();
    info.agent_id = agent_id.to_owned();
    f(&mut info);
    store
        .meta
        .put_host(&info)
        .map_err(|e| Status::internal(e.to_string()))
}
