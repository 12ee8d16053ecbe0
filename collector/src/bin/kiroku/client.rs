//! How the CLI reaches the collector: endpoint and TLS files from flags,
//! environment, a CLI config file, or the quickstart's `kiroku-data/cli.toml`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use kiroku_common::tls::TlsFiles;
use kiroku_proto::query_client::QueryClient;
use serde::{Deserialize, Serialize};
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, Endpoint};

/// The CLI's config file (written by `kiroku quickstart`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CliConfig {
    /// `https://host:port` of the collector.
    pub endpoint: String,
    /// Name to verify in the collector's certificate.
    #[serde(default)]
    pub server_name: Option<String>,
    /// CA, and an investigator or admin certificate and key.
    pub tls: TlsFiles,
    /// The time zone times are shown and read in (an IANA name such as
    /// `Asia/Tokyo`); `--tz` overrides it, and without it the `TZ`
    /// variable, then the system's zone, apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// Where quickstart leaves the CLI config by default.
pub const DEFAULT_CLI_CONFIG: &str = "kiroku-data/cli.toml";

#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    /// CLI config file (endpoint and TLS files).
    #[arg(long, global = true, env = "KIROKU_CLI_CONFIG")]
    pub config: Option<PathBuf>,
    /// Collector endpoint, e.g. https://collector.example:7443.
    #[arg(long, global = true, env = "KIROKU_COLLECTOR")]
    pub collector: Option<String>,
    /// CA certificate (PEM).
    #[arg(long, global = true, env = "KIROKU_CA")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) with role investigator or admin.
    #[arg(long, global = true, env = "KIROKU_CERT")]
    pub cert: Option<PathBuf>,
    /// Client key (PEM).
    #[arg(long, global = true, env = "KIROKU_KEY")]
    pub key: Option<PathBuf>,
}

impl ConnectArgs {
    /// The CLI config file: `--config` (or `KIROKU_CLI_CONFIG`), else
    /// quickstart's when it exists, else none.
    pub fn config_file(&self) -> anyhow::Result<Option<CliConfig>> {
        Ok(match &self.config {
            Some(p) => Some(load(p)?),
            None if Path::new(DEFAULT_CLI_CONFIG).exists() => {
                Some(load(Path::new(DEFAULT_CLI_CONFIG))?)
            }
            None => None,
        })
    }

    fn resolve(&self) -> anyhow::Result<CliConfig> {
        let from_file = self.config_file()?;
        let endpoint = self
            .collector
            .clone()
            .or_else(|| from_file.as_ref().map(|c| c.endpoint.clone()))
            .context("no collector given: use --collector https://HOST:PORT (or KIROKU_COLLECTOR, or --config FILE from `kiroku quickstart`)")?;
        let pick = |flag: &Option<PathBuf>, f: fn(&TlsFiles) -> &PathBuf, what: &str| {
            flag.clone()
                .or_else(|| from_file.as_ref().map(|c| f(&c.tls).clone()))
                .with_context(|| {
                    format!(
                        "no {what} given: use --{what} FILE (or KIROKU_{}, or --config)",
                        what.to_uppercase()
                    )
                })
        };
        Ok(CliConfig {
            tls: TlsFiles {
                ca: pick(&self.ca, |t| &t.ca, "ca")?,
                cert: pick(&self.cert, |t| &t.cert, "cert")?,
                key: pick(&self.key, |t| &t.key, "key")?,
            },
            timezone: from_file.as_ref().and_then(|c| c.timezone.clone()),
            server_name: from_file.and_then(|c| c.server_name),
            endpoint,
        })
    }

    pub async fn query(&self) -> anyhow::Result<QueryClient<Channel>> {
        Ok(QueryClient::new(self.channel().await?)
            .accept_compressed(CompressionEncoding::Zstd)
            .max_decoding_message_size(64 * 1024 * 1024))
    }

    /// The Admin service (retention, holds, maintenance, agents).
    pub async fn admin(&self) -> anyhow::Result<kiroku_proto::admin_client::AdminClient<Channel>> {
        Ok(
            kiroku_proto::admin_client::AdminClient::new(self.channel().await?)
                .accept_compressed(CompressionEncoding::Zstd)
                .max_decoding_message_size(64 * 1024 * 1024),
        )
    }

    /// The EnrollAdmin service (enrollment tokens).
    pub async fn enroll_admin(
        &self,
    ) -> anyhow::Result<kiroku_proto::enroll_admin_client::EnrollAdminClient<Channel>> {
        Ok(kiroku_proto::enroll_admin_client::EnrollAdminClient::new(
            self.channel().await?,
        ))
    }

    async fn channel(&self) -> anyhow::Result<Channel> {
        let cfg = self.resolve()?;
        let server_name = cfg
            .server_name
            .clone()
            .unwrap_or_else(|| kiroku_common::endpoint_host(&cfg.endpoint));
        let tls = cfg.tls.client_config(&server_name)?;
        let channel = Endpoint::from_shared(cfg.endpoint.clone())
            .with_context(|| format!("invalid collector endpoint {:?}", cfg.endpoint))?
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(10))
            .connect()
            .await
            .with_context(|| format!("cannot connect to the collector at {}", cfg.endpoint))?;
        Ok(channel)
    }
}

fn load(p: &Path) -> anyhow::Result<CliConfig> {
    let mut c: CliConfig = kiroku_common::config::load_toml(p)?;
    c.tls = c.tls.resolved(p);
    Ok(c)
}
