//! The collector's configuration file (TOML). Every field is documented
//! here; `packaging/collector.example.toml` is a filled-in copy.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use kiroku_common::mail::InternalDomains;
use kiroku_common::tls::TlsFiles;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    /// gRPC listen address (mTLS only).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Data directory of the embedded store.
    pub data_dir: PathBuf,
    /// CA, server certificate (role `collector`) and key.
    pub tls: TlsFiles,
    /// Certificate revocation list (PEM) written by `kiroku certs revoke`;
    /// reloaded when it changes, no restart needed.
    #[serde(default)]
    pub crl: Option<PathBuf>,
    /// Largest blob (raw message) accepted, in bytes.
    #[serde(default = "default_max_blob")]
    pub max_blob_bytes: u64,
    /// Hosts whose clock differs from the collector's by more than this
    /// (milliseconds) are flagged in `kiroku hosts` and their events tagged
    /// `clock-skew`.
    #[serde(default = "default_clock_threshold")]
    pub clock_offset_threshold_ms: i64,
    /// Free-space reserve of every file system the data directory spans
    /// (it, and its meta, index, journal and blobs parts if mounted apart), in bytes:
    /// below it ingest pauses (batches and blob uploads refused, agents
    /// keep buffering and resend; index merges wait) instead of filling
    /// the disk, and resumes by itself once space returns. `kiroku hosts`
    /// shows the pause. The audit log keeps a reserve of its own
    /// (`audit.reserve`, see `store::disk`) so queries go on regardless.
    #[serde(default = "default_min_free")]
    pub min_free_bytes: u64,
    /// Alert rules and notifications (see `crate::alerts::AlertsConfig`);
    /// without it no alert fires.
    #[serde(default)]
    pub alerts: Option<crate::alerts::AlertsConfig>,
    /// The organisation's own mail domains (each with its subdomains),
    /// e.g. `["corp.example", "corp-jp.example"]`. Mail to any other
    /// domain is external: `kiroku search --external` / `--internal` /
    /// `--direction`, `kiroku report exfil --recipients`, and the default
    /// of the alert rules that compare with internal domains
    /// (`external_attachment`, `mail_rate`; a rule's own list overrides
    /// it). Applied when a query runs, so a change holds for mail stored
    /// before it too. Empty: nothing is known to be internal, and those
    /// filters say so.
    #[serde(default)]
    pub internal_domains: Vec<String>,
    /// Analysis of stored mail (attached messages, TNEF, archives, types,
    /// S/MIME and PGP, attachment text): see `crate::analysis::AnalysisConfig`.
    #[serde(default)]
    pub analysis: crate::analysis::AnalysisConfig,
    /// Signed (and optionally time-stamped) Merkle checkpoints of the
    /// journal: see `crate::integrity::checkpoint::CheckpointConfig`.
    /// Absent: every 10 minutes, unsigned (said loudly at start).
    #[serde(default)]
    pub checkpoint: crate::integrity::checkpoint::CheckpointConfig,
    /// How long events are kept: `[retention] policy = "retention.toml"`
    /// (see `crate::retention::RetentionConfig`). Absent: the built-in
    /// defaults (every kind kept for years).
    #[serde(default)]
    pub retention: crate::retention::RetentionConfig,
    /// The daily maintenance window (`start`, `end`, `time_zone`): see
    /// `crate::maintenance::MaintenanceConfig`. Absent: 03:00–06:00 in
    /// the host's zone.
    #[serde(default)]
    pub maintenance: crate::maintenance::MaintenanceConfig,
    /// The agents' issuing CA the collector holds (`kiroku certs
    /// agents-ca`): see `crate::agents::AgentsCaConfig`. With it, agents'
    /// certificates from that CA are accepted (role agent only) and
    /// `kiroku agents retire` revokes through its revocation list.
    #[serde(default)]
    pub agents_ca: Option<crate::agents::AgentsCaConfig>,
    /// Silent agents: see `crate::agents::AgentsConfig`.
    #[serde(default)]
    pub agents: crate::agents::AgentsConfig,
    /// Enrollment of agents with one-time tokens (issue 22): the
    /// enrollment listener and the validity of the certificates it and
    /// renewal issue; see `crate::enroll::EnrollConfig`. Needs
    /// `[agents_ca]`.
    #[serde(default)]
    pub enroll: Option<crate::enroll::EnrollConfig>,
}

pub const DEFAULT_CLOCK_THRESHOLD_MS: i64 = 2000;

fn default_clock_threshold() -> i64 {
    DEFAULT_CLOCK_THRESHOLD_MS
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7443))
}
fn default_min_free() -> u64 {
    256 * 1024 * 1024
}
fn default_max_blob() -> u64 {
    256 * 1024 * 1024
}

impl CollectorConfig {
    pub fn load(path: &Path) -> anyhow::Result<CollectorConfig> {
        let mut cfg: CollectorConfig = kiroku_common::config::load_toml(path)?;
        cfg.data_dir = kiroku_common::config::resolve_relative(path, &cfg.data_dir);
        cfg.tls = cfg.tls.resolved(path);
        cfg.crl = cfg
            .crl
            .map(|c| kiroku_common::config::resolve_relative(path, &c));
        if let Some(a) = &mut cfg.alerts {
            a.resolve(path);
        }
        cfg.retention.resolve(path);
        cfg.internal()
            .map_err(|m| anyhow::anyhow!("{}: field `internal_domains`: {m}", path.display()))?;
        if let Some(a) = &mut cfg.agents_ca {
            a.resolve(path);
        }
        cfg.agents
            .check()
            .map_err(|m| anyhow::anyhow!("{}: {m}", path.display()))?;
        cfg.checkpoint
            .resolve(path)
            .map_err(|m| anyhow::anyhow!("{}: [checkpoint] {m}", path.display()))?;
        crate::maintenance::Schedule::from_config(&cfg.maintenance)
            .map_err(|m| anyhow::anyhow!("{}: {m}", path.display()))?;
        Ok(cfg)
    }

    /// `internal_domains` checked and normalised.
    pub fn internal(&self) -> Result<InternalDomains, String> {
        InternalDomains::new(&self.internal_domains)
    }
}
