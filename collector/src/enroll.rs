//! Certificate enrollment (issue 22): one-time tokens, the enrollment
//! listener, and renewal.
//!
//! - Tokens (`enroll/tokens.rs`): `kiroku certs enroll-token --group G
//!   --count N --expires 7d` asks the collector (`EnrollAdmin`, admins
//!   only, on the main mTLS listener) for N random tokens
//!   (`ket1-<128 bits hex>`), stored hashed with their group, expiry and
//!   batch; each enrolls one agent once.
//! - The enrollment listener (`[enroll] listen`, its own port): TLS with
//!   the collector's server certificate, no client certificate (the main
//!   listener refuses clients without one), serving only
//!   `Enrollment.Enroll`: the token, a CSR and the computer name. The
//!   collector checks the token, the CSR (signature, key type), derives
//!   the agent id from the computer name (`agent_id_from_computer_name`)
//!   and refuses a name already enrolled or known (not made unique: two
//!   PCs under one name would be one agent in every search, so the admin
//!   decides — rename, `enroll_name`, or retire the old one), signs the
//!   certificate with the agents' issuing CA (`[agents_ca]`, required:
//!   the root never signs online), uses the token up and records the name
//!   in one transaction, and returns the chain and the root. Limits:
//!   requests of at most 64 KiB, 4 concurrent per connection, 30 s each
//!   (10 s for the TLS handshake), `max_connections` connections at once
//!   (`enroll/listen.rs`), each closed after a minute (HTTP/2 keepalive
//!   every 30 s), 4 enrollments worked on at once,
//!   and an address refused `max_refusals_per_ip` times in ten minutes is
//!   turned away (`enroll/limit.rs`).
//! - Renewal (`AgentCerts.Renew`, role agent, main listener): an agent
//!   whose certificate the agents' CA issued gets a new one with the same
//!   name and group (from its current certificate, not from the request).
//!   The new certificate is noted as the agent's (`agents::note_cert`), so
//!   retiring the agent revokes it too.
//!
//! - Token administration (`enroll/admin.rs`, admins): creating batches,
//!   listing them with each token's state (`kiroku certs enroll-tokens`),
//!   revoking unused tokens (`kiroku certs revoke-enroll-tokens`).
//!
//! Every enrollment, renewal, token batch and revocation, and every
//! refusal of one, is in the audit log (`admin_call::ENROLL`,
//! `RENEW_AGENT_CERT`, `ENROLL_TOKENS`, `REVOKE_ENROLL_TOKENS`).

pub mod admin;
pub mod limit;
pub mod listen;
pub mod rpc;
pub mod tokens;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::store::Store;

/// `[enroll]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollConfig {
    /// Address of the enrollment listener (TLS, no client certificate),
    /// e.g. "0.0.0.0:7444". Agents' `[collector] enroll_endpoint`.
    pub listen: SocketAddr,
    /// Validity of certificates issued by enrollment and renewal (agents
    /// renew at two thirds of it).
    #[serde(default = "default_days")]
    pub agent_cert_days: u32,
    /// Refused enrollments from one address within ten minutes after which
    /// it is turned away for the rest of them.
    #[serde(default = "default_refusals")]
    pub max_refusals_per_ip: u32,
    /// Connections open at once on the enrollment listener, all addresses
    /// together; more wait until one closes.
    #[serde(default = "default_connections")]
    pub max_connections: usize,
}

fn default_connections() -> usize {
    256
}

/// Longest validity `agent_cert_days` may ask for (ten years).
const MAX_DAYS: u32 = 3650;

fn default_days() -> u32 {
    365
}
fn default_refusals() -> u32 {
    20
}

/// Largest request on the enrollment listener.
const MAX_REQUEST: usize = 64 * 1024;
/// Enrollments worked on at once (key checks, signing, sled): the rest
/// wait, within the request's 30 s.
const MAX_ENROLLING: usize = 4;
/// A connection to the enrollment listener is closed after this long
/// (one enrollment needs one call), with [`MAX_AGE_GRACE`] for a call in
/// progress.
const MAX_AGE: Duration = Duration::from_secs(60);
const MAX_AGE_GRACE: Duration = Duration::from_secs(30);

/// What enrollment and renewal share.
pub struct Enroll {
    pub store: Arc<Store>,
    pub tokens: tokens::Tokens,
    pub issuer: kiroku_common::pki::enroll::AgentIssuer,
    /// Tells whether the agents' CA issued a certificate.
    pub agents_ca: Arc<crate::agents::AgentsCa>,
    pub root_pem: String,
    pub validity: Duration,
    pub refusals: limit::Refusals,
    /// Whether the enrollment listener runs (tokens are of no use without).
    pub listening: bool,
    /// Bounds the enrollments worked on at once ([`MAX_ENROLLING`]).
    pub working: Arc<tokio::sync::Semaphore>,
}

impl Enroll {
    /// Opens what enrollment needs; None without `[agents_ca]` (then the
    /// calls say how to set it up), an error when `[enroll]` is given
    /// without it.
    pub fn open(
        cfg: &crate::config::CollectorConfig,
        store: &Arc<Store>,
        agents_ca: Option<Arc<crate::agents::AgentsCa>>,
    ) -> anyhow::Result<Option<Arc<Enroll>>> {
        let (Some(ca_cfg), Some(agents_ca)) = (&cfg.agents_ca, agents_ca) else {
            if cfg.enroll.is_some() {
                anyhow::bail!(
                    "[enroll] needs the agents' issuing CA, which signs the enrolled agents' certificates: create it with `kiroku certs agents-ca` on the root CA's workstation and configure [agents_ca] (cert, key, crl)"
                );
            }
            return Ok(None);
        };
        let read = |p: &std::path::Path| {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
        };
        let issuer = kiroku_common::pki::enroll::AgentIssuer::new(
            read(&ca_cfg.cert)?,
            read(&ca_cfg.key)?,
        )
        .with_context(|| format!("loading the agents' issuing CA {}", ca_cfg.cert.display()))?;
        let days = cfg
            .enroll
            .as_ref()
            .map_or(default_days(), |e| e.agent_cert_days);
        if !(1..=MAX_DAYS).contains(&days) {
            anyhow::bail!(
                "[enroll] agent_cert_days = {days} is out of range: 1 to {MAX_DAYS} (certificates are also cut at the agents' CA's own end)"
            );
        }
        let validity = crate::test_hooks::agent_cert_secs()
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(u64::from(days) * 86_400));
        Ok(Some(Arc::new(Enroll {
            store: store.clone(),
            tokens: tokens::Tokens::open(&store.meta)?,
            issuer,
            agents_ca,
            root_pem: read(&cfg.tls.ca)?,
            validity,
            refusals: limit::Refusals::new(
                cfg.enroll
                    .as_ref()
                    .map_or(default_refusals(), |e| e.max_refusals_per_ip),
            ),
            listening: cfg.enroll.is_some(),
            working: Arc::new(tokio::sync::Semaphore::new(MAX_ENROLLING)),
        })))
    }
}

/// Starts the enrollment listener when `[enroll]` is configured; it stops
/// when `stop` resolves.
pub async fn start_listener(
    cfg: &crate::config::CollectorConfig,
    enroll: Option<Arc<Enroll>>,
    tls: Arc<crate::listener::TlsSource>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let (Some(ec), Some(enroll)) = (&cfg.enroll, enroll) else {
        return Ok(None);
    };
    tls.server_only()
        .context("the enrollment listener's TLS configuration (the collector's cert and key)")?;
    let listener = tokio::net::TcpListener::bind(ec.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} for enrollment (change `[enroll] listen` in the config)",
                ec.listen
            )
        })?;
    let service =
        kiroku_proto::enrollment_server::EnrollmentServer::new(rpc::EnrollmentService { enroll })
            .max_decoding_message_size(MAX_REQUEST);
    let server = tonic::transport::Server::builder()
        .concurrency_limit_per_connection(4)
        .max_concurrent_streams(4)
        .timeout(Duration::from_secs(30))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .tcp_keepalive(Some(Duration::from_secs(60)))
        .max_connection_age(MAX_AGE)
        .max_connection_age_grace(MAX_AGE_GRACE)
        .add_service(service);
    tracing::info!(listen = %ec.listen, "enrollment listener (TLS, token; no client certificate)");
    let incoming = listen::handshaken(listen::incoming(listener, ec.max_connections), tls);
    Ok(Some(tokio::spawn(async move {
        if let Err(e) = server.serve_with_incoming_shutdown(incoming, stop).await {
            tracing::error!(error = %e, "the enrollment listener stopped");
        }
    })))
}
