//! The agents' enrollment calls: `Enrollment.Enroll` (enrollment
//! listener, a token, no client certificate) and `AgentCerts.Renew` (main
//! listener, role agent); the admins' token calls are in `admin.rs`. Each
//! outcome, refusals included, is audited; only an address turned away by
//! the refusal brake is not (it is logged).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use kiroku_common::pki::Role;
use kiroku_common::pki::enroll::{agent_id_from_computer_name, check_csr};
use kiroku_common::quote::quote;
use kiroku_proto::{EnrollRequest, EnrollResponse, RenewRequest};
use tonic::{Request, Response, Status};

use super::Enroll;
use super::limit::cut;
use super::tokens::{Enrolled, Refusal, token_ref, when};
use crate::auth;
use crate::store::audit::admin_call::{ENROLL, RENEW_AGENT_CERT};

/// Longest computer name accepted (bytes).
const MAX_NAME: usize = 256;
/// Most of a client's computer name or version shown in the audit log
/// and the log (bytes).
const SHOWN: usize = 128;

pub(super) fn internal(e: anyhow::Error) -> Status {
    Status::internal(format!("{e:#}"))
}

/// Records `res` (the outcome of `what`) in the audit log: the success
/// detail, or the refusal with its code.
fn audit(enroll: &Enroll, who: &str, call: &str, what: &str, res: &Result<String, Status>) {
    let detail = match res {
        Ok(d) => d.clone(),
        Err(st) => format!("REFUSED {:?}: {} | {what}", st.code(), st.message()),
    };
    if let Err(e) = enroll.store.audit_admin(who, call, &detail) {
        tracing::error!(error = %e, call, "could not be recorded in the audit log");
    }
}

pub struct EnrollmentService {
    pub enroll: Arc<Enroll>,
}

#[tonic::async_trait]
impl kiroku_proto::enrollment_server::Enrollment for EnrollmentService {
    async fn enroll(
        &self,
        req: Request<EnrollRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        let ip = req
            .remote_addr()
            .map(|a| a.ip())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let e = self.enroll.clone();
        if !e.refusals.allowed(ip, Instant::now()) {
            tracing::warn!(peer = %ip, "enrollment turned away: too many refusals from this address");
            return Err(Status::resource_exhausted(
                "too many refused enrollments from this address: wait ten minutes",
            ));
        }
        let r = req.into_inner();
        // Bounded blocking work: the rest wait here (within the call's
        // 30 s) rather than fill the blocking pool.
        let permit = e
            .working
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Status::unavailable("the collector is shutting down"))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let who = format!("enrollment/{ip}");
            let what = format!(
                "computer name {} token {} from {ip}",
                quote(&cut(&r.computer_name, SHOWN)),
                token_ref(&r.token)
            );
            // A success is audited inside (before the certificate is
            // handed out); a refusal here.
            let res = enroll_blocking(&e, ip, &who, &r);
            if let Err(st) = &res {
                if st.code() != tonic::Code::Unavailable {
                    e.refusals.refused(ip, Instant::now());
                }
                tracing::warn!(peer = %ip, code = ?st.code(), reason = %st.message(), "enrollment refused");
                let now = e.refusals.audit_now(Instant::now());
                if now.summary > 0 {
                    let summary = Ok(format!(
                        "{} refused enrollments in the previous ten minutes were not audited one by one (more than {} in ten minutes: see the collector's log)",
                        now.summary,
                        super::limit::MAX_AUDITED
                    ));
                    audit(&e, "enrollment", ENROLL, "", &summary);
                }
                if now.this {
                    audit(&e, &who, ENROLL, &what, &Err(st.clone()));
                }
            }
            res.map(Response::new)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
    }
}

/// Checks, issues, uses the token up and audits the enrollment; the
/// certificate is returned only once the audit entry is written (when it
/// cannot be, the token is released and the agent told to try again).
fn enroll_blocking(
    e: &Enroll,
    ip: IpAddr,
    who: &str,
    r: &EnrollRequest,
) -> Result<EnrollResponse, Status> {
    if !e.listening {
        return Err(Status::failed_precondition("enrollment is not configured"));
    }
    if r.computer_name.len() > MAX_NAME {
        return Err(Status::invalid_argument(format!(
            "the computer name is {} bytes long, more than {MAX_NAME}: set `[collector] enroll_name` on the agent",
            r.computer_name.len()
        )));
    }
    let now = crate::clock::now_ms();
    let token = match e.tokens.check(&r.token, now).map_err(internal)? {
        Ok(t) => t,
        Err(refusal @ Refusal::Used { .. }) => {
            return match repeated(e, ip, who, r)? {
                Some(resp) => Ok(resp),
                None => Err(Status::permission_denied(refusal.to_string())),
            };
        }
        Err(refusal) => return Err(Status::permission_denied(refusal.to_string())),
    };
    let Some(name) = agent_id_from_computer_name(&r.computer_name) else {
        return Err(Status::invalid_argument(format!(
            "no agent id can be made from the computer name {}: set `[collector] enroll_name` on the agent (letters, digits, '.', '-', '_')",
            quote(&cut(&r.computer_name, SHOWN))
        )));
    };
    let csr = check_csr(&r.csr_der).map_err(|err| Status::invalid_argument(err.to_string()))?;
    // A name is free when nobody has it, or when its agent was retired.
    let seen = e.tokens.enrolled(&name).map_err(internal)?;
    let known = e
        .store
        .meta
        .host(&name)
        .map_err(|err| Status::internal(err.to_string()))?
        .is_some();
    let retired_with = crate::agents::retired_cert(&e.store, &name).map_err(internal)?;
    let retired = retired_with.is_some();
    if (seen.is_some() || known) && !retired {
        return Err(Status::already_exists(Refusal::NameTaken(name).to_string()));
    }
    let group = (!token.group.is_empty()).then_some(token.group.as_str());
    let issued = e
        .issuer
        .issue(&csr, &name, group, e.validity)
        .map_err(|err| Status::internal(format!("issuing the certificate: {err}")))?;
    let enrolled = Enrolled {
        at_ms: now,
        serial: issued.serial_hex.clone(),
        batch: token.batch.clone(),
    };
    let agents = crate::agents::tree(&e.store).map_err(internal)?;
    let retired_key = crate::agents::retired_key(&name);
    let retired_marker = retired_with
        .as_deref()
        .map(|sha| (retired_key.as_str(), sha));
    if let Err(refusal) = e
        .tokens
        .commit(
            &r.token,
            &name,
            seen.as_ref(),
            &enrolled,
            now,
            &agents,
            retired_marker,
            (
                &kiroku_common::pki::enroll::csr_key_sha(&csr),
                &issued.chain_pem,
                issued.not_after_ms,
            ),
        )
        .map_err(internal)?
    {
        return Err(match refusal {
            Refusal::NameTaken(_) => Status::already_exists(refusal.to_string()),
            _ => Status::permission_denied(refusal.to_string()),
        });
    }
    // Known as this agent's certificate from now on: retiring the agent
    // revokes it even before its first connection.
    let undo = |st: Status| {
        if let Err(err) = e
            .tokens
            .release(&r.token, &name, seen.as_ref(), &agents, retired_marker)
        {
            tracing::error!(error = %format!("{err:#}"), agent = %name, "the token could not be released after a failed enrollment");
        }
        st
    };
    crate::agents::note_cert(&e.store, &name, &issued.der)
        .map_err(internal)
        .map_err(undo)?;
    if let Some(sha) = &retired_with {
        returned(e, &name, sha, &issued.der).map_err(undo)?;
    }
    let detail = format!(
        "enrolled agent {name} (computer name {}, agent {}) from {ip}, group {}: certificate serial {} sha256 {}, valid until {}; token {} of batch {}{}",
        quote(&cut(&r.computer_name, SHOWN)),
        quote(&cut(&r.agent_version, SHOWN)),
        if token.group.is_empty() {
            "(none)"
        } else {
            &token.group
        },
        issued.serial_hex,
        kiroku_common::sha256_hex(&issued.der),
        when(issued.not_after_ms),
        token_ref(&r.token),
        token.batch,
        if retired {
            "; the name was retired before"
        } else {
            ""
        },
    );
    if let Err(err) = e.store.audit_admin(who, ENROLL, &detail) {
        tracing::error!(error = %format!("{err:#}"), agent = %name, "the enrollment could not be recorded in the audit log: refused, token released");
        return Err(undo(Status::unavailable(format!(
            "the collector cannot record this enrollment in its audit log ({err:#}); the token was not used up: try again later"
        ))));
    }
    tracing::info!(agent = %name, group = %token.group, peer = %ip, "agent enrolled");
    Ok(EnrollResponse {
        agent_id: name,
        group: token.group,
        cert_chain_pem: issued.chain_pem,
        ca_pem: e.root_pem.clone(),
        not_after_ms: issued.not_after_ms,
    })
}

/// A used token asked again by the name and key it enrolled (the agent
/// never got the response): the same chain, audited; None otherwise.
fn repeated(
    e: &Enroll,
    ip: IpAddr,
    who: &str,
    r: &EnrollRequest,
) -> Result<Option<EnrollResponse>, Status> {
    let (Some(name), Ok(csr)) = (
        agent_id_from_computer_name(&r.computer_name),
        check_csr(&r.csr_der),
    ) else {
        return Ok(None);
    };
    let Some((chain_pem, not_after_ms)) = e
        .tokens
        .repeated(
            &r.token,
            &name,
            &kiroku_common::pki::enroll::csr_key_sha(&csr),
        )
        .map_err(internal)?
    else {
        return Ok(None);
    };
    let group = x509_parser::pem::Pem::iter_from_buffer(chain_pem.as_bytes())
        .next()
        .and_then(Result::ok)
        .and_then(|p| kiroku_common::pki::group_from_der(&p.contents).ok())
        .flatten()
        .unwrap_or_default();
    let detail = format!(
        "enrollment of agent {name} asked again from {ip} with the same token {} and key (its response was lost?): the same certificate returned, valid until {}",
        token_ref(&r.token),
        when(not_after_ms)
    );
    e.store
        .audit_admin(who, ENROLL, &detail)
        .map_err(|err| {
            Status::unavailable(format!(
                "the collector cannot record this enrollment in its audit log ({err:#}); try again later"
            ))
        })?;
    tracing::info!(agent = %name, peer = %ip, "enrollment asked again: the same certificate returned");
    Ok(Some(EnrollResponse {
        agent_id: name,
        group,
        cert_chain_pem: chain_pem,
        ca_pem: e.root_pem.clone(),
        not_after_ms,
    }))
}

/// A retired agent's name enrolled again (its retired marker removed with
/// the token): its host record is active again, and that is audited as
/// `AgentReturned`, as when a retired agent connects with a new
/// certificate.
fn returned(e: &Enroll, name: &str, retired_with: &str, der: &[u8]) -> Result<(), Status> {
    let mut host = e
        .store
        .meta
        .host(name)
        .map_err(|err| Status::internal(err.to_string()))?
        .unwrap_or_default();
    let detail = format!(
        "retired agent {name} enrolled again with a token (new certificate sha256 {}; retired with {retired_with}, reason {}): active again",
        kiroku_common::sha256_hex(der),
        quote(&host.retired_reason)
    );
    e.store
        .audit_admin(
            &format!("agent/{name}"),
            crate::store::audit::admin_call::AGENT_RETURNED,
            &detail,
        )
        .map_err(|err| {
            Status::unavailable(format!(
                "the collector cannot record this enrollment in its audit log ({err:#}); try again later"
            ))
        })?;
    if !host.agent_id.is_empty() && host.retired_at_ms != 0 {
        host.retired_at_ms = 0;
        host.retired_reason.clear();
        e.store
            .meta
            .put_host(&host)
            .map_err(|err| Status::internal(err.to_string()))?;
    }
    Ok(())
}

/// `AgentCerts`: renewal over mTLS. `None` without `[agents_ca]`.
pub struct AgentCertsService {
    pub enroll: Option<Arc<Enroll>>,
}

#[tonic::async_trait]
impl kiroku_proto::agent_certs_server::AgentCerts for AgentCertsService {
    async fn renew(&self, req: Request<RenewRequest>) -> Result<Response<EnrollResponse>, Status> {
        let caller = auth::caller(&req)?;
        let leaf = req
            .peer_certs()
            .and_then(|c| c.first().map(|d| d.as_ref().to_vec()))
            .unwrap_or_default();
        let Some(e) = self.enroll.clone() else {
            return Err(Status::failed_precondition(
                "this collector holds no agents' issuing CA ([agents_ca]), so it cannot renew certificates: renew by hand with `kiroku certs issue --role agent`",
            ));
        };
        let r = req.into_inner();
        tokio::task::spawn_blocking(move || {
            let who = caller.to_string();
            let what = format!("renewal for {who}");
            let mut out = None;
            let res = renew_blocking(&e, &caller, &leaf, &r).map(|(resp, d)| {
                out = Some(resp);
                d
            });
            if let Err(st) = &res {
                tracing::warn!(identity = %who, code = ?st.code(), reason = %st.message(), "certificate renewal refused");
            }
            audit(&e, &who, RENEW_AGENT_CERT, &what, &res);
            res.map(|_| Response::new(out.unwrap_or_default()))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
    }
}

fn renew_blocking(
    e: &Enroll,
    caller: &kiroku_common::pki::PeerIdentity,
    leaf: &[u8],
    r: &RenewRequest,
) -> Result<(EnrollResponse, String), Status> {
    if caller.role != Role::Agent {
        return Err(Status::permission_denied(format!(
            "{caller} is not an agent: only agents renew here"
        )));
    }
    if !e.agents_ca.issued(leaf) {
        return Err(Status::failed_precondition(format!(
            "{caller}'s certificate was not issued by this collector's agents' issuing CA (the root issued it), so the collector cannot renew it: issue a new one with `kiroku certs issue --role agent`"
        )));
    }
    let sha = kiroku_common::sha256_hex(leaf);
    if crate::agents::retired_cert(&e.store, &caller.name)
        .map_err(internal)?
        .is_some()
        && crate::agents::seen_certs(&e.store, &caller.name)
            .map_err(internal)?
            .iter()
            .any(|d| kiroku_common::sha256_hex(d) == sha)
    {
        return Err(Status::permission_denied(format!(
            "{caller} was retired (`kiroku agents retire`): its certificates are not renewed"
        )));
    }
    let (not_before, not_after) = x509_parser::parse_x509_certificate(leaf)
        .map(|(_, c)| {
            (
                c.validity().not_before.timestamp(),
                c.validity().not_after.timestamp(),
            )
        })
        .map_err(|err| Status::unauthenticated(format!("the client certificate: {err}")))?;
    let now_s = crate::clock::now_ms() / 1000;
    let from = renewable_from(not_before, not_after);
    if now_s < from {
        return Err(Status::resource_exhausted(format!(
            "{caller}'s certificate is not due for renewal: it is renewed from half its validity on, {} by the collector's clock (is this computer's clock ahead?)",
            when(from.saturating_mul(1000))
        )));
    }
    let group = kiroku_common::pki::group_from_der(leaf)
        .map_err(|err| Status::unauthenticated(err.to_string()))?;
    let csr = check_csr(&r.csr_der).map_err(|err| Status::invalid_argument(err.to_string()))?;
    let issued = e
        .issuer
        .issue(&csr, &caller.name, group.as_deref(), e.validity)
        .map_err(|err| Status::internal(format!("issuing the certificate: {err}")))?;
    crate::agents::note_cert(&e.store, &caller.name, &issued.der).map_err(internal)?;
    let old_serial = x509_parser::parse_x509_certificate(leaf)
        .map(|(_, c)| hex::encode(c.raw_serial()))
        .unwrap_or_default();
    let detail = format!(
        "renewed agent {}'s certificate: serial {old_serial} sha256 {sha} → serial {} sha256 {}, valid until {}",
        caller.name,
        issued.serial_hex,
        kiroku_common::sha256_hex(&issued.der),
        when(issued.not_after_ms)
    );
    tracing::info!(agent = %caller.name, "agent certificate renewed");
    Ok((
        EnrollResponse {
            agent_id: caller.name.clone(),
            group: group.unwrap_or_default(),
            cert_chain_pem: issued.chain_pem,
            ca_pem: e.root_pem.clone(),
            not_after_ms: issued.not_after_ms,
        },
        detail,
    ))
}

/// When a certificate valid from `not_before` to `not_after` (seconds)
/// may be renewed: from half its validity on (agents ask at two thirds by
/// their own clock; one whose clock runs ahead is refused rather than
/// given a new certificate every few seconds).
pub fn renewable_from(not_before: i64, not_after: i64) -> i64 {
    not_before.saturating_add(not_after.saturating_sub(not_before).max(0) / 2)
}

#[cfg(test)]
mod tests {
    use super::renewable_from;

    #[test]
    fn a_certificate_is_renewable_from_half_its_validity() {
        for (from, to, want) in [(0, 300, 150), (1000, 1000, 1000), (1000, 900, 1000)] {
            assert_eq!(renewable_from(from, to), want, "{from}..{to}");
        }
    }
}
