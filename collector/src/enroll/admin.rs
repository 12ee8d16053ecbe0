//! `EnrollAdmin` (main listener, admins only): creating token batches,
//! listing them with each token's state, and revoking unused tokens.
//! Creations and revocations, refusals included, are audited
//! (`ENROLL_TOKENS`, `REVOKE_ENROLL_TOKENS`) as admin entries; a listing
//! is audited as a query (`ListEnrollTokens`), refusals included.

use std::collections::BTreeMap;
use std::sync::Arc;

use kiroku_common::pki::{PeerIdentity, Role};
use kiroku_common::quote::quote;
use kiroku_proto::{
    CreateEnrollTokensRequest, CreateEnrollTokensResponse, EnrollTokenBatch, EnrollTokenInfo,
    ListEnrollTokensRequest, ListEnrollTokensResponse, RevokeEnrollTokensRequest,
    RevokeEnrollTokensResponse,
};
use tonic::{Request, Response, Status};

use super::Enroll;
use super::limit::cut;
use super::rpc::internal;
use super::tokens::{State, TOKEN_PREFIX, Which, when};
use crate::auth;
use crate::query::{audit_entry, refuse_entry};
use crate::store::audit::admin_call::{ENROLL_TOKENS, REVOKE_ENROLL_TOKENS};

/// The query audit entries' call for `kiroku certs enroll-tokens`.
const LIST_ENROLL_TOKENS: &str = "ListEnrollTokens";

/// Longest token life an admin may ask for.
const MAX_EXPIRES_S: i64 = 365 * 86_400;
/// Most tokens in one call.
const MAX_COUNT: u32 = 10_000;
/// Most tokens named in one revocation (a batch has at most `MAX_COUNT`).
const MAX_NAMED: usize = 10_000;
/// Longest revocation reason kept (bytes).
const MAX_REASON: usize = 1024;
/// Longest note kept with a batch (bytes).
const MAX_NOTE: usize = 1024;
/// Most of a caller's text shown in a refusal's audit entry (bytes): a
/// refused call (a non-admin's included) must not fill the audit log.
const SHOWN: usize = 128;

/// A batch id as given, checked: 12 hex digits. Never echoed when it is
/// not one (a token pasted in the wrong place is a secret).
fn batch_id(batch: &str) -> Result<&str, Status> {
    let b = batch.trim();
    if b.len() == 12 && b.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Ok(b);
    }
    Err(Status::invalid_argument(if b.starts_with(TOKEN_PREFIX) {
        "--batch was given a token, not a batch id: give the token with --token (batch ids are 12 hex digits, as `kiroku certs enroll-tokens` lists them)"
    } else {
        "--batch is not a batch id (12 hex digits, as `kiroku certs enroll-tokens` lists them)"
    }))
}

/// A batch id for an audit entry: itself when it is one, else only that
/// it was not.
fn shown_batch(batch: &str) -> String {
    match batch_id(batch) {
        Ok(b) => b.to_owned(),
        Err(_) if batch.is_empty() => String::new(),
        Err(_) => "(not a batch id)".to_owned(),
    }
}

/// `EnrollAdmin`: token batches, admins only.
pub struct EnrollAdminService {
    pub store: Arc<crate::store::Store>,
    pub enroll: Option<Arc<Enroll>>,
}

/// Runs `f` (the call's work: its response and the audit detail) off the
/// async threads and audits its outcome as `call`. When a success cannot
/// be audited, the caller gets `unaudited` instead of the response.
async fn audited<R: Send + 'static>(
    store: Arc<crate::store::Store>,
    caller: PeerIdentity,
    call: &'static str,
    what: String,
    unaudited: &'static str,
    f: impl FnOnce() -> Result<(R, String), Status> + Send + 'static,
) -> Result<Response<R>, Status> {
    tokio::task::spawn_blocking(move || {
        let res = f();
        let detail = match &res {
            Ok((_, d)) => d.clone(),
            Err(st) => format!("REFUSED {:?}: {} | {what}", st.code(), st.message()),
        };
        if let Err(e) = store.audit_admin(&caller.to_string(), call, &detail) {
            tracing::error!(error = %e, call, "could not be recorded in the audit log");
            if res.is_ok() {
                return Err(Status::internal(unaudited));
            }
        }
        res.map(|(r, _)| Response::new(r))
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))?
}

/// The enrollment set-up, for an admin: refused for anyone else, and when
/// this collector does not enroll agents.
fn for_admin<'a>(
    enroll: Option<&'a Enroll>,
    caller: &PeerIdentity,
    what: &str,
) -> Result<&'a Enroll, Status> {
    if caller.role != Role::Admin {
        return Err(Status::permission_denied(format!(
            "{caller} may not {what}: admins only"
        )));
    }
    enroll.filter(|e| e.listening).ok_or_else(|| {
        Status::failed_precondition(
            "this collector does not enroll agents: configure [agents_ca] (cert, key, crl) and [enroll] listen = \"0.0.0.0:7444\", then restart it",
        )
    })
}

#[tonic::async_trait]
impl kiroku_proto::enroll_admin_server::EnrollAdmin for EnrollAdminService {
    async fn create_enroll_tokens(
        &self,
        req: Request<CreateEnrollTokensRequest>,
    ) -> Result<Response<CreateEnrollTokensResponse>, Status> {
        let caller = auth::caller(&req)?;
        let r = req.into_inner();
        let what = format!(
            "{} tokens group {} expiring in {} s note {}",
            r.count,
            quote(&cut(&r.group, SHOWN)),
            r.expires_in_s,
            quote(&cut(&r.note, SHOWN))
        );
        let enroll = self.enroll.clone();
        let who = caller.clone();
        audited(
            self.store.clone(),
            caller,
            ENROLL_TOKENS,
            what,
            "the token batch could not be recorded in the audit log; the tokens are not handed out",
            move || create(enroll.as_deref(), &who, &r),
        )
        .await
    }

    async fn list_enroll_tokens(
        &self,
        req: Request<ListEnrollTokensRequest>,
    ) -> Result<Response<ListEnrollTokensResponse>, Status> {
        let caller = auth::caller(&req)?;
        let r = req.into_inner();
        // A listing is a query: audited like one (`kiroku audit --kind
        // query`), refusals included, before it is answered.
        let filter = format!("batch {}", quote(&shown_batch(&r.batch)));
        let enroll = self.enroll.clone();
        let who = caller.clone();
        let listed = tokio::task::spawn_blocking(move || {
            let e = for_admin(enroll.as_deref(), &who, "list enrollment tokens")?;
            list(e, &r.batch)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        let store = self.store.clone();
        match listed {
            Ok(resp) => {
                let n = (resp.batches.len() + resp.tokens.len()) as u64;
                audit_entry(store, caller.to_string(), LIST_ENROLL_TOKENS, filter, n).await?;
                Ok(Response::new(resp))
            }
            Err(st) => Err(refuse_entry(store, &caller, LIST_ENROLL_TOKENS, filter, st).await),
        }
    }

    async fn revoke_enroll_tokens(
        &self,
        req: Request<RevokeEnrollTokensRequest>,
    ) -> Result<Response<RevokeEnrollTokensResponse>, Status> {
        let caller = auth::caller(&req)?;
        let r = req.into_inner();
        let what = format!(
            "batch {} and {} tokens, reason {}",
            quote(&shown_batch(&r.batch)),
            r.tokens.len(),
            quote(&cut(&r.reason, SHOWN))
        );
        let enroll = self.enroll.clone();
        let who = caller.clone();
        audited(
            self.store.clone(),
            caller,
            REVOKE_ENROLL_TOKENS,
            what,
            "the tokens were revoked, but the revocation could not be recorded in the audit log: see the collector's log",
            move || revoke(enroll.as_deref(), &who, &r),
        )
        .await
    }
}

fn create(
    enroll: Option<&Enroll>,
    caller: &PeerIdentity,
    r: &CreateEnrollTokensRequest,
) -> Result<(CreateEnrollTokensResponse, String), Status> {
    let e = for_admin(enroll, caller, "create enrollment tokens")?;
    if !r.group.is_empty() {
        kiroku_common::pki::validate_group(&r.group)
            .map_err(|err| Status::invalid_argument(err.to_string()))?;
    }
    if r.note.len() > MAX_NOTE {
        return Err(Status::invalid_argument(format!(
            "--note is longer than {MAX_NOTE} bytes"
        )));
    }
    if !(1..=MAX_COUNT).contains(&r.count) {
        return Err(Status::invalid_argument(format!(
            "--count {} is out of range: 1 to {MAX_COUNT}",
            r.count
        )));
    }
    if !(1..=MAX_EXPIRES_S).contains(&r.expires_in_s) {
        return Err(Status::invalid_argument(format!(
            "--expires of {} s is out of range: 1 s to 365 days",
            r.expires_in_s
        )));
    }
    let now = crate::clock::now_ms();
    let expires_ms = now + r.expires_in_s * 1000;
    let (tokens, batch) = e
        .tokens
        .create(
            &r.group,
            r.count,
            expires_ms,
            &caller.to_string(),
            &r.note,
            now,
        )
        .map_err(internal)?;
    let detail = format!(
        "created {} enrollment tokens, batch {batch}, group {}, expiring {}, note {}",
        tokens.len(),
        if r.group.is_empty() {
            "(none)"
        } else {
            &r.group
        },
        when(expires_ms),
        quote(&r.note)
    );
    Ok((
        CreateEnrollTokensResponse {
            tokens,
            expires_ms,
            batch,
        },
        detail,
    ))
}

/// The batches with their counts; the tokens of `batch` when given.
fn list(e: &Enroll, batch: &str) -> Result<ListEnrollTokensResponse, Status> {
    let now = crate::clock::now_ms();
    let only = if batch.is_empty() {
        None
    } else {
        Some(batch_id(batch)?)
    };
    let listed = e.tokens.list(only).map_err(internal)?;
    if only.is_some() && listed.is_empty() {
        return Err(Status::not_found(format!(
            "no batch {batch} of enrollment tokens (`kiroku certs enroll-tokens` lists the batches)"
        )));
    }
    let mut batches: BTreeMap<(i64, String), EnrollTokenBatch> = BTreeMap::new();
    let mut tokens = Vec::new();
    for l in listed {
        let rec = &l.rec;
        let b = batches
            .entry((rec.created_ms, rec.batch.clone()))
            .or_insert_with(|| EnrollTokenBatch {
                batch: rec.batch.clone(),
                group: rec.group.clone(),
                note: rec.note.clone(),
                created_ms: rec.created_ms,
                created_by: rec.created_by.clone(),
                expires_ms: rec.expires_ms,
                ..Default::default()
            });
        let state = rec.state(now);
        match state {
            State::Unused => b.unused += 1,
            State::Used => b.used += 1,
            State::Expired => b.expired += 1,
            State::Revoked => b.revoked += 1,
        }
        if only.is_some() {
            tokens.push(EnrollTokenInfo {
                token_ref: l.token_ref,
                batch: rec.batch.clone(),
                state: state.name().into(),
                used_by: rec.used_by.clone(),
                used_ms: rec.used_ms,
                revoked_ms: rec.revoked_ms,
                revoked_by: rec.revoked_by.clone(),
                revoke_reason: rec.revoke_reason.clone(),
                expires_ms: rec.expires_ms,
            });
        }
    }
    Ok(ListEnrollTokensResponse {
        batches: batches.into_values().collect(),
        tokens,
    })
}

fn revoke(
    enroll: Option<&Enroll>,
    caller: &PeerIdentity,
    r: &RevokeEnrollTokensRequest,
) -> Result<(RevokeEnrollTokensResponse, String), Status> {
    let e = for_admin(enroll, caller, "revoke enrollment tokens")?;
    let reason = r.reason.trim();
    if reason.is_empty() {
        return Err(Status::invalid_argument(
            "--reason is required: say why the tokens are revoked (it is kept with them and audited)",
        ));
    }
    if reason.len() > MAX_REASON {
        return Err(Status::invalid_argument(format!(
            "--reason is longer than {MAX_REASON} bytes"
        )));
    }
    let which = match (r.batch.is_empty(), r.tokens.is_empty()) {
        (false, true) => Which::Batch(batch_id(&r.batch)?),
        (true, false) if r.tokens.len() <= MAX_NAMED => Which::Tokens(&r.tokens),
        (true, false) => {
            return Err(Status::invalid_argument(format!(
                "more than {MAX_NAMED} tokens named: revoke their batch instead (--batch)"
            )));
        }
        _ => {
            return Err(Status::invalid_argument(
                "give either --batch or --token (one or more), not both",
            ));
        }
    };
    let now = crate::clock::now_ms();
    let done = e
        .tokens
        .revoke(&which, &caller.to_string(), reason, now)
        .map_err(internal)?;
    let scope = match which {
        Which::Batch(b) => format!("batch {b}"),
        Which::Tokens(_) => "named tokens".to_owned(),
    };
    let detail = format!(
        "revoked {} enrollment tokens of {scope} ({}), {} not revoked, reason {}",
        done.revoked.len(),
        done.revoked.join(" "),
        done.not_revoked.len(),
        quote(reason)
    );
    Ok((
        RevokeEnrollTokensResponse {
            revoked: u32::try_from(done.revoked.len()).unwrap_or(u32::MAX),
            not_revoked: done.not_revoked,
        },
        detail,
    ))
}
