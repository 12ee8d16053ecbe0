//! RetireAgent: an admin retires an agent that no longer reports (left the
//! company, host decommissioned): its current certificate is revoked in the
//! agents' revocation list (signed with the agents' issuing CA's key, which
//! the collector holds), its host record is marked retired, and its live
//! connections are cut by the listener's reload of that list (within its
//! reload interval). Its events stay, under retention like any other. A
//! certificate the root issued cannot be revoked here (the root key stays
//! offline): the answer says how to revoke it with the root, and once the
//! root's list names it, retiring marks the host without revoking again.
//! Every call, refusals included, is in the audit log (kind admin).

use kiroku_common::pki::Role;
use kiroku_common::quote::quote;
use kiroku_proto::{RetireAgentRequest, RetireAgentResponse};
use tonic::{Request, Response, Status};

use crate::admin::AdminService;
use crate::auth;
use crate::store::Store;
use crate::store::audit::admin_call::RETIRE_AGENT;

pub async fn retire(
    svc: &AdminService,
    req: Request<RetireAgentRequest>,
) -> Result<Response<RetireAgentResponse>, Status> {
    let caller = auth::caller(&req)?;
    let (who, is_admin) = (caller.to_string(), caller.role == Role::Admin);
    let r = req.into_inner();
    let asked = format!("agent {} reason {}", quote(&r.agent_id), quote(&r.reason));
    let store = svc.store.clone();
    let ca = svc.agents_ca.clone();
    tokio::task::spawn_blocking(move || {
        let res = if is_admin {
            retire_blocking(&store, ca.as_deref(), &who, &r)
        } else {
            Err(Status::permission_denied(format!(
                "{who} may not retire agents: admins only"
            )))
        };
        if let Err(st) = &res {
            tracing::warn!(identity = %who, code = ?st.code(), reason = %st.message(), "RetireAgent refused");
            let detail = format!("REFUSED {:?}: {} | {asked}", st.code(), st.message());
            if let Err(e) = store.audit_admin(&who, RETIRE_AGENT, &detail) {
                tracing::error!(error = %e, "the refusal could not be recorded in the audit log");
            }
        }
        res.map(Response::new)
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))?
}

fn retire_blocking(
    store: &Store,
    ca: Option<&super::AgentsCa>,
    who: &str,
    r: &RetireAgentRequest,
) -> Result<RetireAgentResponse, Status> {
    let internal = |e: anyhow::Error| Status::internal(format!("{e:#}"));
    kiroku_common::pki::validate_name(&r.agent_id)
        .map_err(|e| Status::invalid_argument(format!("agent id: {e}")))?;
    let reason = r.reason.trim();
    if reason.is_empty() {
        return Err(Status::invalid_argument(
            "a reason is required (--reason TEXT): it goes into the audit log and the host record",
        ));
    }
    let Some(mut host) = store
        .meta
        .host(&r.agent_id)
        .map_err(|e| Status::internal(e.to_string()))?
    else {
        return Err(Status::not_found(format!(
            "no agent {} is known to this collector (`kiroku hosts` lists them)",
            quote(&r.agent_id)
        )));
    };
    let Some(ca) = ca else {
        return Err(Status::failed_precondition(
            "this collector holds no agents' issuing CA, so it cannot revoke an agent's certificate: create one with `kiroku certs agents-ca` on the root CA's workstation and configure it under [agents_ca] (cert, key, crl); until then revoke the agent's certificate with `kiroku certs revoke --cert FILE` and the root key",
        ));
    };
    let Some(der) = super::cert_of(store, &r.agent_id).map_err(internal)? else {
        return Err(Status::failed_precondition(format!(
            "the collector has not recorded agent {}'s certificate (it is recorded at each connection since issue 19); revoke it with `kiroku certs revoke --cert FILE` and the root key, or retire it after its next connection",
            quote(&r.agent_id)
        )));
    };
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| Status::internal(format!("the recorded certificate does not parse: {e}")))?;
    let serial = cert.raw_serial().to_vec();
    let serial_hex = hex::encode(&serial);
    let sha = kiroku_common::sha256_hex(&der);
    let by_root = !ca.issued(&der);
    if by_root && !ca.root_revoked(&serial).map_err(internal)? {
        return Err(Status::failed_precondition(format!(
            "agent {}'s certificate (serial {serial_hex}) was issued by the root CA, whose key stays offline, so the collector cannot revoke it: on the root CA's workstation run `kiroku certs revoke --dir <pki> --cert agent-{}.pem`, copy crl.pem to the collector's `crl`, then retire the agent again (it is then only marked retired)",
            quote(&r.agent_id),
            r.agent_id
        )));
    }
    let how = if by_root {
        "already revoked in the root's revocation list".to_owned()
    } else {
        format!(
            "revoked in the agents' revocation list {}",
            ca.crl_path().display()
        )
    };
    // The audit entry first: an action that then fails is recorded too.
    store
        .audit_admin(
            who,
            RETIRE_AGENT,
            &format!(
                "retiring agent {}: certificate serial {serial_hex} sha256 {sha} {how}; reason {}",
                r.agent_id,
                quote(reason)
            ),
        )
        .map_err(|e| {
            Status::unavailable(format!(
                "the audit log cannot record the retirement ({e:#}); nothing was changed, try again later"
            ))
        })?;
    let done = (|| -> anyhow::Result<bool> {
        let newly = if by_root { false } else { ca.revoke(&serial)? };
        super::note_retired(store, &r.agent_id, &sha)?;
        host.retired_at_ms = crate::clock::now_ms();
        host.retired_reason = reason.to_owned();
        store.meta.put_host(&host)?;
        store.meta.flush()?;
        Ok(newly)
    })();
    let newly = match done {
        Ok(n) => n,
        Err(e) => {
            let _ = store.audit_admin(
                who,
                RETIRE_AGENT,
                &format!("retiring agent {} FAILED: {e:#}", r.agent_id),
            );
            return Err(internal(e));
        }
    };
    tracing::warn!(agent_id = %r.agent_id, serial = %serial_hex, reason, "agent retired");
    let again = if newly || by_root {
        ""
    } else {
        " (it was already)"
    };
    Ok(RetireAgentResponse {
        agent_id: r.agent_id.clone(),
        serial: serial_hex.clone(),
        crl: if by_root {
            String::new()
        } else {
            ca.crl_path().display().to_string()
        },
        message: format!(
            "agent {} retired: its certificate (serial {serial_hex}) is {how}{again}; its open connections are cut within seconds and new ones refused; its events stay searchable, kept under the retention policy",
            r.agent_id
        ),
    })
}
