//! Agents as accounts (issue 19): the agents' issuing CA the collector
//! holds (`agents/ca.rs`: its revocation list, written and signed here),
//! retiring an agent (`agents/rpc.rs`), and silent agents ([`stale`]).
//!
//! The meta tree `agents` keeps, per agent id, the DER of the certificate
//! it last connected with (`cert\0<id>`: what `RetireAgent` revokes), of
//! every certificate it used (`seen\0<id>\0<sha256>`: all revoked at
//! retirement when the agents' CA issued them, all refused after it), and
//! the SHA-256 of the certificate it was retired with (`retired\0<id>`: a
//! connection with that certificate is refused even in the seconds before
//! the new revocation list is in force).

pub mod ca;
pub mod rpc;

use kiroku_proto::HostInfo;
use serde::{Deserialize, Serialize};

use crate::store::Store;

pub use ca::AgentsCa;

/// Opens the configured agents' issuing CA (writing its revocation list
/// when there is none) and renews its list hourly as needed; none without
/// `[agents_ca]`.
pub fn open_ca(
    cfg: &crate::config::CollectorConfig,
) -> anyhow::Result<Option<std::sync::Arc<AgentsCa>>> {
    let Some(c) = &cfg.agents_ca else {
        return Ok(None);
    };
    let ca = std::sync::Arc::new(AgentsCa::open(c, cfg.crl.as_deref())?);
    let renew = ca.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
        tick.tick().await;
        loop {
            tick.tick().await;
            let ca = renew.clone();
            match tokio::task::spawn_blocking(move || ca.renew_if_due()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %format!("{e:#}"), "the agents' revocation list could not be renewed")
                }
                Err(e) => tracing::error!(error = %e, "renewing the agents' revocation list"),
            }
        }
    });
    Ok(Some(ca))
}

/// `[agents_ca]`: the agents' issuing CA (`kiroku certs agents-ca`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentsCaConfig {
    /// Its certificate (`agents-ca.pem`).
    pub cert: std::path::PathBuf,
    /// Its key (`agents-ca.key`), kept online by the collector: it signs
    /// the agents' revocation list.
    pub key: std::path::PathBuf,
    /// The agents' revocation list the collector writes (created empty
    /// when absent, renewed before it expires). Publish it wherever agent
    /// certificates are checked.
    pub crl: std::path::PathBuf,
}

impl AgentsCaConfig {
    pub fn resolve(&mut self, config_path: &std::path::Path) {
        for p in [&mut self.cert, &mut self.key, &mut self.crl] {
            *p = kiroku_common::config::resolve_relative(config_path, p);
        }
    }

    /// What the client-certificate verifier needs.
    pub fn files(&self) -> kiroku_common::tls::AgentsCaFiles {
        kiroku_common::tls::AgentsCaFiles {
            cert: self.cert.clone(),
            crl: self.crl.clone(),
        }
    }
}

/// `[agents]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentsConfig {
    /// An agent not seen for this long is silent: listed in the
    /// maintenance summary and by `kiroku hosts --stale`. `30d`, `12h`,
    /// `2w`.
    #[serde(default = "default_stale_after")]
    pub stale_after: String,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        AgentsConfig {
            stale_after: default_stale_after(),
        }
    }
}

fn default_stale_after() -> String {
    "30d".into()
}

impl AgentsConfig {
    /// `stale_after` in milliseconds (checked at load).
    pub fn stale_after_ms(&self) -> i64 {
        parse_span(&self.stale_after).unwrap_or(DEFAULT_STALE_MS)
    }

    pub fn check(&self) -> Result<(), String> {
        parse_span(&self.stale_after)
            .map(|_| ())
            .map_err(|e| format!("[agents] stale_after: {e}"))
    }
}

const DAY_MS: i64 = 24 * 3600 * 1000;
const DEFAULT_STALE_MS: i64 = 30 * DAY_MS;

/// A span such as `30d`, `12h`, `90m`, `45s`, `2w` or `250ms` in
/// milliseconds (positive).
pub fn parse_span(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?} has no unit: write e.g. 30d, 12h, 90m, 45s or 2w"))?;
    let (n, unit) = t.split_at(split);
    let n: i64 = n
        .parse()
        .map_err(|_| format!("{s:?}: expected a whole number then a unit, e.g. 30d"))?;
    let unit_ms = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => DAY_MS,
        "w" => 7 * DAY_MS,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?} (use ms, s, m, h, d or w)"
            ));
        }
    };
    match n.checked_mul(unit_ms) {
        Some(ms) if ms > 0 => Ok(ms),
        _ => Err(format!("{s:?}: must be more than zero and less than ages")),
    }
}

/// The agents not seen for at least `after_ms` at `now_ms` (the collector's
/// clock, `clock::now_ms`), longest silent first: not connected now, not
/// retired. Hosts never seen (`last_seen_ms` 0) count as silent since the
/// epoch. A failure to read the host records is logged and gives none.
pub fn stale(store: &Store, now_ms: i64, after_ms: i64) -> Vec<HostInfo> {
    match store.meta.hosts() {
        Ok(hosts) => stale_among(hosts, now_ms, after_ms),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the host records to list silent agents");
            Vec::new()
        }
    }
}

/// [`stale`] over given host records.
pub fn stale_among(hosts: Vec<HostInfo>, now_ms: i64, after_ms: i64) -> Vec<HostInfo> {
    let mut v: Vec<HostInfo> = hosts
        .into_iter()
        .filter(|h| {
            !h.connected
                && h.retired_at_ms == 0
                && now_ms.saturating_sub(h.last_seen_ms) >= after_ms
        })
        .collect();
    v.sort_by_key(|h| (h.last_seen_ms, h.agent_id.clone()));
    v
}

const TREE: &str = "agents";

/// The meta tree `agents` (enrollment clears a retired marker in the same
/// transaction as it uses up its token).
pub fn tree(store: &Store) -> anyhow::Result<sled::Tree> {
    Ok(store.meta.tree(TREE)?)
}

fn cert_key(agent_id: &str) -> String {
    format!("cert\0{agent_id}")
}

pub fn retired_key(agent_id: &str) -> String {
    format!("retired\0{agent_id}")
}

fn seen_prefix(agent_id: &str) -> String {
    format!("seen\0{agent_id}\0")
}

/// Keeps the certificate (DER) `agent_id` connected with, for
/// `RetireAgent`: as its current one, and among every one it used
/// (`seen\0<id>\0<sha256>`). Only written when new.
pub fn note_cert(store: &Store, agent_id: &str, der: &[u8]) -> anyhow::Result<()> {
    let tree = store.meta.tree(TREE)?;
    let key = cert_key(agent_id);
    if tree.get(&key)?.as_deref() != Some(der) {
        tree.insert(key, der)?;
    }
    let seen = format!(
        "{}{}",
        seen_prefix(agent_id),
        kiroku_common::sha256_hex(der)
    );
    if !tree.contains_key(&seen)? {
        tree.insert(seen, der)?;
    }
    Ok(())
}

/// Every certificate (DER) `agent_id` has connected with.
pub fn seen_certs(store: &Store, agent_id: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    store
        .meta
        .tree(TREE)?
        .scan_prefix(seen_prefix(agent_id))
        .values()
        .map(|v| Ok(v?.to_vec()))
        .collect()
}

/// Whether `agent_id` connected with the certificate whose SHA-256 is
/// `sha` before.
fn seen(store: &Store, agent_id: &str, sha: &str) -> anyhow::Result<bool> {
    Ok(store
        .meta
        .tree(TREE)?
        .contains_key(format!("{}{sha}", seen_prefix(agent_id)))?)
}

/// The certificate (DER) `agent_id` last connected with.
pub fn cert_of(store: &Store, agent_id: &str) -> anyhow::Result<Option<Vec<u8>>> {
    Ok(store
        .meta
        .tree(TREE)?
        .get(cert_key(agent_id))?
        .map(|v| v.to_vec()))
}

/// Notes that `agent_id` was retired with the certificate whose SHA-256
/// is `cert_sha` (hex).
pub fn note_retired(store: &Store, agent_id: &str, cert_sha: &str) -> anyhow::Result<()> {
    let tree = store.meta.tree(TREE)?;
    tree.insert(retired_key(agent_id), cert_sha.as_bytes())?;
    tree.flush()?;
    Ok(())
}

fn clear_retired(store: &Store, agent_id: &str) -> anyhow::Result<()> {
    store.meta.tree(TREE)?.remove(retired_key(agent_id))?;
    Ok(())
}

/// The SHA-256 (hex) of the certificate `agent_id` was retired with.
pub fn retired_cert(store: &Store, agent_id: &str) -> anyhow::Result<Option<String>> {
    Ok(store
        .meta
        .tree(TREE)?
        .get(retired_key(agent_id))?
        .map(|v| String::from_utf8_lossy(&v).into_owned()))
}

/// At an agent's Hello, before its host record is updated: a retired
/// agent's certificates — the one it was retired with and any other it
/// used before — are refused (also in the seconds before the new
/// revocation list is in force); a retired agent back with a certificate
/// never seen before (issued anew) is active again, and that is audited;
/// the certificate is kept for `RetireAgent`.
pub fn on_connect(
    store: &Store,
    id: &kiroku_common::pki::PeerIdentity,
    der: &[u8],
) -> Result<(), tonic::Status> {
    use tonic::Status;
    if id.role != kiroku_common::pki::Role::Agent || der.is_empty() {
        return Ok(());
    }
    let internal = |e: anyhow::Error| Status::internal(format!("{e:#}"));
    let sha = kiroku_common::sha256_hex(der);
    if let Some(retired_with) = retired_cert(store, &id.name).map_err(internal)? {
        // Any certificate it used before its retirement stays refused,
        // not only the one revoked: only a new one brings it back.
        if retired_with == sha || seen(store, &id.name, &sha).map_err(internal)? {
            tracing::warn!(identity = %id, "refused: this agent was retired, and this certificate is one it used before");
            return Err(Status::permission_denied(format!(
                "{id} was retired (`kiroku agents retire`) and its certificates revoked; issue a new certificate to bring it back"
            )));
        }
        let mut host = store
            .meta
            .host(&id.name)
            .map_err(|e| Status::internal(e.to_string()))?
            .unwrap_or_default();
        let detail = format!(
            "retired agent {id} connected with a new certificate (sha256 {sha}; retired with {retired_with}, reason {}): active again",
            kiroku_common::quote::quote(&host.retired_reason)
        );
        store
            .audit_admin(
                &id.to_string(),
                crate::store::audit::admin_call::AGENT_RETURNED,
                &detail,
            )
            .map_err(|e| {
                Status::unavailable(format!(
                    "the collector cannot record this agent in its audit log ({e:#}); try again later"
                ))
            })?;
        host.retired_at_ms = 0;
        host.retired_reason.clear();
        if !host.agent_id.is_empty() {
            store
                .meta
                .put_host(&host)
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        clear_retired(store, &id.name).map_err(internal)?;
    }
    note_cert(store, &id.name, der).map_err(internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans() {
        let cases = [
            ("30d", Some(30 * DAY_MS)),
            ("12h", Some(12 * 3_600_000)),
            (" 2w ", Some(14 * DAY_MS)),
            ("90m", Some(90 * 60_000)),
            ("45s", Some(45_000)),
            ("0d", None),
            ("30", None),
            ("d", None),
            ("3y", None),
            ("-1d", None),
            ("99999999999999999d", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_span(s).ok(), want, "{s}");
        }
    }

    #[test]
    fn stale_are_silent_unconnected_and_not_retired() {
        let host = |id: &str, seen: i64, connected: bool, retired: i64| HostInfo {
            agent_id: id.into(),
            last_seen_ms: seen,
            connected,
            retired_at_ms: retired,
            ..Default::default()
        };
        let now = 100 * DAY_MS;
        let hosts = vec![
            host("recent", now - DAY_MS, false, 0),
            host("old", now - 40 * DAY_MS, false, 0),
            host("older", now - 60 * DAY_MS, false, 0),
            host("old-but-connected", now - 40 * DAY_MS, true, 0),
            host("old-retired", now - 40 * DAY_MS, false, now - DAY_MS),
            host("exactly", now - 30 * DAY_MS, false, 0),
        ];
        let got: Vec<String> = stale_among(hosts, now, 30 * DAY_MS)
            .into_iter()
            .map(|h| h.agent_id)
            .collect();
        assert_eq!(got, vec!["older", "old", "exactly"]);
    }
}
