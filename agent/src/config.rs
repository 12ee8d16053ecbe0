//! The agent's configuration file (TOML). Every field is documented here,
//! or next to its component (`[smtp]`: `capture/smtp/config.rs`);
//! `packaging/agent.example.toml` is a filled-in copy.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiroku_common::tls::TlsFiles;
use serde::{Deserialize, Serialize};

pub use crate::capture::smtp::config::{
    BareLineEndings, SmtpConfig, SmtpMode, UpstreamAuth, UpstreamTls,
};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Directory of the durable buffer (sled database).
    pub data_dir: PathBuf,
    pub collector: CollectorConfig,
    #[serde(default)]
    pub smtp: SmtpConfig,
    #[serde(default)]
    pub buffer: BufferConfig,
    #[serde(default)]
    pub host: HostConfig,
    /// File capture; absent: off.
    #[serde(default)]
    pub files: Option<FilesConfig>,
    /// Operator-defined key/values attached to every event.
    #[serde(default)]
    pub custom: BTreeMap<String, String>,
    /// Issue 20: the mail server's own logs to follow (`[[mta_log]]`, see
    /// `capture/mtalog.rs`); none: off.
    #[serde(default)]
    pub mta_log: Vec<crate::capture::mtalog::MtaLogConfig>,
    /// Issue 21: network activity (`[network]`, see
    /// `capture/network/config.rs`); absent: off.
    #[serde(default)]
    pub network: crate::capture::network::NetworkConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    /// `https://host:port` of the collector's gRPC endpoint.
    pub endpoint: String,
    /// Name to verify in the collector's certificate (defaults to the
    /// endpoint's host).
    #[serde(default)]
    pub server_name: Option<String>,
    /// Seconds between HTTP/2 keep-alive pings on the connection to the
    /// collector; a ping unanswered for two thirds of this (at least one
    /// second) ends the connection and the agent reconnects. This is how
    /// a path that silently drops everything (a NAT or firewall that forgot
    /// the flow) is noticed.
    #[serde(default = "default_keepalive")]
    pub keepalive_secs: u64,
    /// CA, certificate and key of this agent (role `agent`).
    pub tls: TlsFiles,
    /// Enrollment (issue 22, `crate::enroll`): when `tls.cert` and `tls.key`
    /// do not exist, the agent generates its key, enrolls with this
    /// one-time token (from `kiroku certs enroll-token`) at
    /// `enroll_endpoint`, writes both files and starts. `tls.ca` must
    /// exist (it authenticates the collector). Ignored once enrolled.
    #[serde(default)]
    pub enroll_token: Option<String>,
    /// The token in a file instead (first line; takes effect when
    /// `enroll_token` is absent).
    #[serde(default)]
    pub enroll_token_file: Option<PathBuf>,
    /// `https://host:port` of the collector's enrollment listener
    /// (`[enroll] listen` in the collector's config).
    #[serde(default)]
    pub enroll_endpoint: Option<String>,
    /// The name to enroll under instead of this computer's name; the
    /// collector makes the agent id of either (sanitised, lower case).
    #[serde(default)]
    pub enroll_name: Option<String>,
    /// Renewal of an enrolled certificate over the mTLS connection, at two
    /// thirds of its validity (default true).
    #[serde(default = "default_true")]
    pub renew: bool,
}

fn resolve_opt(config: &Path, p: &mut Option<PathBuf>) {
    if let Some(v) = p.as_mut() {
        *v = kiroku_common::config::resolve_relative(config, v);
    }
}

fn default_keepalive() -> u64 {
    30
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    /// Bound of the buffer in bytes: what it holds (the events not yet
    /// acknowledged by the collector and the raw messages they reference),
    /// not the size of its files. What happens to new mail when it is
    /// reached is `when_full`; nothing already buffered is ever dropped to
    /// make room, and the bound clears as soon as the collector has
    /// acknowledged.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Free space kept on the file system of `data_dir`: below it new mail
    /// is refused with `451 4.3.1` (agent disk full) and file events are
    /// counted as gaps, until space is freed, so the buffer never has to
    /// write into a full disk. 0 disables the check (a write that then
    /// fails for want of space has the same effect until space returns).
    #[serde(default = "default_min_free")]
    pub min_free_bytes: u64,
    /// What the SMTP relay does while the buffer is at `max_bytes`:
    /// `"refuse"` (default): new mail gets `452 4.3.1` so clients retry
    /// later and nothing passes unrecorded; `"relay_unrecorded"`: mail
    /// keeps flowing to the upstream without being recorded, each one
    /// counted (sender, recipients, outcome) and reported as a `gap` record
    /// once the buffer has room again. File events cannot be refused: under
    /// either policy they are counted into a `gap` record the same way.
    /// Capture-only mode has nothing to relay and always refuses.
    #[serde(default)]
    pub when_full: WhenFull,
    /// sled page cache in bytes (sled's default of 1 GiB is far too big for
    /// an endpoint agent).
    #[serde(default = "default_cache")]
    pub cache_bytes: u64,
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            max_bytes: default_max_bytes(),
            min_free_bytes: default_min_free(),
            when_full: WhenFull::default(),
            cache_bytes: default_cache(),
        }
    }
}

/// The full-buffer policy (`buffer.when_full`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Refuse new mail with a temporary error (452 4.3.1).
    #[default]
    Refuse,
    /// Relay new mail unrecorded; count it and report the gap.
    RelayUnrecorded,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// DNS / AD domain to report when the host does not tell.
    #[serde(default)]
    pub domain: Option<String>,
}

/// File capture (`[files]`). Off without the section, and off when `watch`
/// is empty and removable-media handling is off too (`removable_auto =
/// false`, `removable_roots = []`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    /// Directories watched recursively (absolute, or relative to the config
    /// file). New subdirectories are watched as they appear.
    #[serde(default)]
    pub watch: Vec<PathBuf>,
    /// Glob patterns of paths not recorded (`**/*.swp`, `**/.cache/**`).
    /// A pattern ending in `/**` also keeps the matching directory itself
    /// from being watched.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Files larger than this are not hashed (`hash_skipped` says so).
    #[serde(default = "default_hash_max")]
    pub hash_max_bytes: u64,
    /// Hashing reads at most this many MiB per second (0 = unlimited), so a
    /// bulk copy does not take a whole core.
    #[serde(default = "default_hash_rate")]
    pub hash_rate_mb_per_sec: u64,
    /// Kernel events on one file within this many milliseconds of each
    /// other become one record (`coalesced` counts them).
    #[serde(default = "default_coalesce_ms")]
    pub coalesce_ms: u64,
    /// Directories under which mounted volumes count as removable media
    /// (watched recursively, with every volume mounted below them).
    #[serde(default = "default_removable_roots")]
    pub removable_roots: Vec<PathBuf>,
    /// Also watch volumes mounted elsewhere whose block device is removable
    /// (`/sys/block/<dev>/removable`) or attached over USB.
    #[serde(default = "default_true")]
    pub removable_auto: bool,
    /// Most content hashes remembered (hash → path) to name the source of a
    /// copy to removable media; kept in the agent's buffer database.
    #[serde(default = "default_hash_memory")]
    pub hash_memory: u64,
    /// Most files whose last known state (size, mtime, SHA-256) the agent
    /// keeps, in its buffer database (about 100 bytes each), so that the
    /// catch-up scan at start can report what changed while it was not
    /// running. Files beyond it are not tracked; the scan says so.
    #[serde(default = "default_state_max")]
    pub state_max: u64,
    /// Longest the catch-up scan at start may run, in seconds; if it is cut
    /// short, a record says where it stopped.
    #[serde(default = "default_catchup_max_secs")]
    pub catchup_max_secs: u64,
}

impl Default for FilesConfig {
    fn default() -> Self {
        FilesConfig {
            watch: Vec::new(),
            exclude: Vec::new(),
            hash_max_bytes: default_hash_max(),
            hash_rate_mb_per_sec: default_hash_rate(),
            coalesce_ms: default_coalesce_ms(),
            removable_roots: default_removable_roots(),
            removable_auto: true,
            hash_memory: default_hash_memory(),
            state_max: default_state_max(),
            catchup_max_secs: default_catchup_max_secs(),
        }
    }
}

impl FilesConfig {
    /// Whether there is anything to watch.
    pub fn enabled(&self) -> bool {
        !self.watch.is_empty() || self.removable_auto || !self.removable_roots.is_empty()
    }
}

fn default_hash_max() -> u64 {
    1024 * 1024 * 1024
}
fn default_hash_rate() -> u64 {
    64
}
fn default_coalesce_ms() -> u64 {
    500
}
fn default_removable_roots() -> Vec<PathBuf> {
    vec![PathBuf::from("/media"), PathBuf::from("/run/media")]
}
fn default_true() -> bool {
    true
}
fn default_hash_memory() -> u64 {
    100_000
}
fn default_state_max() -> u64 {
    1_000_000
}
fn default_catchup_max_secs() -> u64 {
    600
}

fn default_max_bytes() -> u64 {
    2 * 1024 * 1024 * 1024
}
fn default_min_free() -> u64 {
    8 * 1024 * 1024
}
fn default_cache() -> u64 {
    16 * 1024 * 1024
}

impl AgentConfig {
    /// What `--check` warns about without refusing the configuration: the
    /// state of the machine rather than the file, which the running agent
    /// reports and recovers from by itself (a missing `files.watch` root is
    /// a `watch_lost` record, watched as soon as it appears).
    pub fn warnings(&self) -> Vec<String> {
        let Some(files) = &self.files else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, root) in files.watch.iter().enumerate() {
            let problem = match std::fs::metadata(root) {
                Ok(m) if m.is_dir() => continue,
                Ok(_) => "is not a directory".to_owned(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => "does not exist".to_owned(),
                Err(e) => format!("cannot be read ({e})"),
            };
            out.push(format!(
                "field `files.watch[{i}]`: {} {problem}: nothing below it is recorded until it can be watched (the agent records a `watch_lost` event at start, watches for the directory to appear and then records what is in it). Create it, give the agent access, or remove it from files.watch.",
                root.display()
            ));
        }
        out
    }

    /// Loads and checks the config; relative paths are resolved against the
    /// config file's directory.
    pub fn load(path: &Path) -> anyhow::Result<AgentConfig> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            kiroku_common::config::ConfigError::Read {
                path: path.to_owned(),
                source,
            }
        })?;
        AgentConfig::parse(path, &text)
    }

    /// Parses and checks `text`, the content of the config file `path`
    /// (a reload parses exactly the bytes it hashed). A check that fails
    /// names the file, the line and the field (`crate::reload::line_of`);
    /// TOML's own errors carry their line and column.
    pub fn parse(path: &Path, text: &str) -> anyhow::Result<AgentConfig> {
        let mut cfg: AgentConfig =
            toml::from_str(text).map_err(|e| kiroku_common::config::ConfigError::Parse {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        let bad =
            |field: &str, message: String| crate::reload::field_error(path, text, field, message);
        cfg.data_dir = kiroku_common::config::resolve_relative(path, &cfg.data_dir);
        cfg.collector.tls = cfg.collector.tls.resolved(path);
        resolve_opt(path, &mut cfg.collector.enroll_token_file);
        crate::enroll::check_config(&cfg.collector).map_err(|(field, m)| bad(field, m))?;
        if cfg.smtp.mode == SmtpMode::Relay && cfg.smtp.upstream.is_none() {
            return Err(bad(
                "smtp.upstream",
                "required when smtp.mode = \"relay\" (set it to host:port of your mail server, or use mode = \"capture-only\")".to_owned(),
            ));
        }
        let resolve = |p: &mut Option<PathBuf>| {
            if let Some(v) = p.as_mut() {
                *v = kiroku_common::config::resolve_relative(path, v);
            }
        };
        resolve(&mut cfg.smtp.upstream_ca);
        resolve(&mut cfg.smtp.tls_cert);
        resolve(&mut cfg.smtp.tls_key);
        if let Some(files) = cfg.files.as_mut() {
            for p in files
                .watch
                .iter_mut()
                .chain(files.removable_roots.iter_mut())
            {
                *p = kiroku_common::config::resolve_relative(path, p);
            }
            for (i, pattern) in files.exclude.iter().enumerate() {
                if let Err(e) = globset::Glob::new(pattern) {
                    return Err(bad(
                        &format!("files.exclude[{i}]"),
                        format!(
                            "{pattern:?}: {e} (use globs such as \"**/*.swp\" or \"**/.cache/**\")"
                        ),
                    ));
                }
            }
            if files.coalesce_ms == 0 || files.coalesce_ms > 60_000 {
                return Err(bad(
                    "files.coalesce_ms",
                    format!(
                        "{} is out of range, use 1 to 60000 (milliseconds; default 500)",
                        files.coalesce_ms
                    ),
                ));
            }
        }
        // Issue 20: [[mta_log]] paths.
        for m in cfg.mta_log.iter_mut() {
            m.path = kiroku_common::config::resolve_relative(path, &m.path);
        }
        crate::capture::mtalog::validate(&cfg.mta_log).map_err(|e| {
            // "field `mta_log[i].path`: …": with its line.
            let e = e.to_string();
            match e.strip_prefix("field `").and_then(|r| r.split_once("`: ")) {
                Some((field, message)) => bad(field, message.to_owned()),
                None => anyhow::anyhow!("invalid config file {}: {e}", path.display()),
            }
        })?;
        // Issue 21: [network].
        if let Err((field, message)) = crate::capture::network::validate::validate(&cfg.network) {
            return Err(bad(&field, message));
        }
        if cfg.buffer.when_full == WhenFull::RelayUnrecorded && cfg.smtp.mode != SmtpMode::Relay {
            tracing::warn!(
                "buffer.when_full = \"relay_unrecorded\" has no effect on mail in capture-only mode (nothing to relay): a full buffer refuses mail with 452"
            );
        }
        if let Some(a) = cfg.smtp.upstream_auth.as_mut() {
            a.password_file = kiroku_common::config::resolve_relative(path, &a.password_file);
        }
        if cfg.smtp.tls_cert.is_some() != cfg.smtp.tls_key.is_some() {
            return Err(bad(
                "smtp.tls_cert",
                "give both smtp.tls_cert and smtp.tls_key (PEM certificate and its key) to offer STARTTLS to clients, or neither".to_owned(),
            ));
        }
        if !(1..=3600).contains(&cfg.collector.keepalive_secs) {
            return Err(bad(
                "collector.keepalive_secs",
                format!(
                    "{} is out of range, use 1 to 3600 (seconds; default 30)",
                    cfg.collector.keepalive_secs
                ),
            ));
        }
        if cfg.smtp.listen.is_empty() {
            return Err(bad(
                "smtp.listen",
                "give at least one address, e.g. [\"127.0.0.1:2525\"]".to_owned(),
            ));
        }
        Ok(cfg)
    }

    /// Server name to verify in the collector's certificate.
    pub fn server_name(&self) -> String {
        if let Some(n) = &self.collector.server_name {
            return n.clone();
        }
        kiroku_common::endpoint_host(&self.collector.endpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packaged_example_is_a_valid_config() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/agent.example.toml");
        let cfg = AgentConfig::load(&p).expect("packaging/agent.example.toml must load");
        assert_eq!(cfg.smtp.upstream_tls, UpstreamTls::Required);
        assert_eq!(cfg.smtp.bare_line_endings, BareLineEndings::Reject);
        let files = cfg.files.expect("the example has a [files] section");
        assert_eq!(
            files.watch,
            vec![PathBuf::from("/home"), PathBuf::from("/srv/share")]
        );
        assert!(files.enabled() && files.removable_auto);
    }

    #[test]
    fn unknown_keys_are_refused_with_the_file_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("agent.toml");
        std::fs::write(
            &p,
            "data_dir = \"d\"\nbogus = 1\n[collector]\nendpoint = \"https://x:1\"\n[collector.tls]\nca=\"a\"\ncert=\"b\"\nkey=\"c\"\n",
        )
        .expect("write");
        let err = AgentConfig::load(&p).expect_err("must fail").to_string();
        assert!(err.contains("agent.toml") && err.contains("bogus"), "{err}");
    }

    #[test]
    fn bare_line_endings_values() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("agent.toml");
        let base = "data_dir = \"d\"\n[collector]\nendpoint = \"https://x:1\"\n[collector.tls]\nca=\"a\"\ncert=\"b\"\nkey=\"c\"\n[smtp]\n";
        for (value, want) in [
            ("", Some(BareLineEndings::Reject)),
            (
                "bare_line_endings = \"reject\"\n",
                Some(BareLineEndings::Reject),
            ),
            (
                "bare_line_endings = \"normalise\"\n",
                Some(BareLineEndings::Normalise),
            ),
            (
                "bare_line_endings = \"normalize\"\n",
                Some(BareLineEndings::Normalise),
            ),
            ("bare_line_endings = \"accept\"\n", None),
        ] {
            std::fs::write(&p, format!("{base}{value}")).expect("write");
            match (AgentConfig::load(&p), want) {
                (Ok(cfg), Some(w)) => assert_eq!(cfg.smtp.bare_line_endings, w, "{value}"),
                (Err(e), None) => {
                    let e = format!("{e:#}");
                    assert!(
                        e.contains("bare_line_endings") || e.contains("accept"),
                        "{e}"
                    );
                }
                (got, _) => panic!("{value}: {:?}", got.map(|c| c.smtp.bare_line_endings)),
            }
        }
    }
}
