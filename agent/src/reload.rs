//! Configuration reload without a restart: on SIGHUP, and when the config
//! file changes (checked every second, applied once it has been still for
//! [`SETTLE`]).
//!
//! A reload reads the file, parses and checks it exactly as at start
//! ([`AgentConfig::parse`]) and reads what it names (the upstream's CA, the
//! STARTTLS certificate and key, the agent's smarthost password). If any of
//! that fails, nothing changes: the running configuration stays and the
//! error names the file, the line and the field. Otherwise it applies:
//!
//! - `[smtp]` (upstream, its TLS and credentials, the client-side
//!   STARTTLS certificate, policies, timeouts, limits): new sessions use
//!   the new settings, sessions in progress finish with the ones they
//!   started with (`capture/smtp.rs`, `Live`);
//! - `[files]` (roots, exclusions, every other file capture setting):
//!   file capture stops and starts again (`reload/files.rs`); a root added
//!   by the reload is learned, not reported, as at a first start;
//! - `[custom]`: events stamped from then on carry the new fields;
//! - `[[mta_log]]`: handed to the hook the MTA log capture registers
//!   ([`MtaLogHook`]);
//! - `[network]`: the network capture stops and starts again with the new
//!   settings (`reload/network.rs`); flows in progress continue (their
//!   state is in the buffer), no second `open` is written.
//!
//! Every other changed setting (`smtp.listen`, `smtp.max_connections`,
//! `data_dir`, `[buffer]`, `[collector]`, `[host]`) keeps its running value
//! and is named in a warning, at each reload, until the agent restarts.
//! Each reload, applied or refused, is logged with the file's SHA-256; the
//! SHA-256 of the file in force is in the agent's `Status` to the collector
//! (`Status.config_sha256`).
//!
//! - `reload/diff.rs` — what changed, live or restart; a field's line.
//! - `reload/files.rs` — file capture restarted with new settings.

mod diff;
pub mod files;
pub mod network;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use diff::{Changes, changes, field_error, is_live, line_of, one_line};
pub use network::{NetworkSlot, network_hook};

use crate::capture::context::CaptureContext;
use crate::capture::smtp::Live;
use crate::config::AgentConfig;

/// How often the config file is checked for a change.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long a changed file must stay unchanged before it is read (an
/// editor writing it in several steps).
const SETTLE: Duration = Duration::from_millis(300);

/// The config file the agent was started from: its path and the SHA-256 of
/// the bytes parsed.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub sha256: String,
}

impl ConfigFile {
    /// Reads, parses and checks `path`.
    pub fn load(path: &Path) -> anyhow::Result<(AgentConfig, ConfigFile)> {
        let bytes =
            std::fs::read(path).map_err(|source| kiroku_common::config::ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
        let cfg = parse(path, &bytes)?;
        Ok((
            cfg,
            ConfigFile {
                path: path.to_owned(),
                sha256: kiroku_common::sha256_hex(&bytes),
            },
        ))
    }
}

fn parse(path: &Path, bytes: &[u8]) -> anyhow::Result<AgentConfig> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "invalid config file {}: not UTF-8 text ({e}); save it as UTF-8",
            path.display()
        )
    })?;
    AgentConfig::parse(path, text)
}

/// The SHA-256 (hex) of the config file in force, for `Status` (the
/// shipper reports a change at once).
#[derive(Debug, Default)]
pub struct ConfigDigest {
    sha256: RwLock<String>,
    changed: tokio::sync::Notify,
}

impl ConfigDigest {
    pub fn new(sha256: String) -> Arc<ConfigDigest> {
        Arc::new(ConfigDigest {
            sha256: RwLock::new(sha256),
            changed: tokio::sync::Notify::new(),
        })
    }

    pub fn get(&self) -> String {
        match self.sha256.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Resolves after the next change (or at once, if one happened since
    /// the last call).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    fn set(&self, sha256: String) {
        match self.sha256.write() {
            Ok(mut s) => *s = sha256,
            Err(poisoned) => *poisoned.into_inner() = sha256,
        }
        self.changed.notify_one();
    }
}

/// Applies a reloaded `[[mta_log]]` list: registered by the MTA log
/// capture. Gets the new configuration; an error refuses that part (it is
/// logged; the rest of the reload stands).
pub type MtaLogHook = Box<dyn Fn(&AgentConfig) -> anyhow::Result<()> + Send + Sync>;

/// The hook that hands a reloaded `[[mta_log]]` list to the running MTA
/// log capture (`capture/mtalog.rs`: followers of entries no longer listed
/// stop, new ones start, the others go on undisturbed).
pub fn mta_log_hook(
    capture: Arc<std::sync::Mutex<Option<crate::capture::mtalog::MtaLogCapture>>>,
) -> MtaLogHook {
    Box::new(move |cfg: &AgentConfig| {
        let mut guard = match capture.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        match guard.as_mut() {
            Some(c) => c.apply(&cfg.mta_log),
            None => Ok(()),
        }
    })
}

/// What a reload can change, and the configurations it compares.
pub struct Reloader {
    file: PathBuf,
    /// The configuration the agent started with: settings that need a
    /// restart keep these values.
    started: AgentConfig,
    /// The last configuration applied.
    applied: AgentConfig,
    /// SHA-256 of the content last tried (applied or refused): a file
    /// rewritten with the same content is not reloaded again.
    tried: String,
    digest: Arc<ConfigDigest>,
    smtp: Option<Arc<Live>>,
    ctx: Arc<CaptureContext>,
    files: Arc<files::FilesRunner>,
    mta_log: Option<MtaLogHook>,
    network: Option<MtaLogHook>,
}

/// Why a reload ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Sighup,
    FileChanged,
}

impl Trigger {
    fn name(self) -> &'static str {
        match self {
            Trigger::Sighup => "SIGHUP",
            Trigger::FileChanged => "file changed",
        }
    }
}

/// The SIGHUP handler, installed as soon as the agent starts: SIGHUP's
/// default action ends the process, and a reload signal sent while the
/// agent opens its buffer must not. The signals received before the
/// reloader runs are kept (one reload).
pub fn hangup_signal() -> Option<crate::os::Hangup> {
    match crate::os::Hangup::install() {
        Ok(s) => Some(s),
        Err(e) if e.kind() == std::io::ErrorKind::Unsupported => None,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; the config file is still checked for changes every second");
            None
        }
    }
}

/// The next SIGHUP (never, without a handler).
async fn next_hup(hup: &mut Option<crate::os::Hangup>) {
    match hup.as_mut() {
        Some(h) => {
            if h.recv().await.is_none() {
                // The handler is gone: no more SIGHUPs to wait for.
                *hup = None;
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// What a file looks like without reading it: a change of any of these
/// starts a reload.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    let id = crate::os::path_id(path).ok()?;
    Some(Stamp {
        dev: id.dev,
        ino: id.ino,
        len: m.len(),
        mtime_ns: crate::os::mtime_ns(&m),
    })
}

impl Reloader {
    pub fn new(
        file: ConfigFile,
        cfg: AgentConfig,
        smtp: Option<Arc<Live>>,
        ctx: Arc<CaptureContext>,
        files: Arc<files::FilesRunner>,
    ) -> Reloader {
        Reloader {
            file: file.path,
            started: cfg.clone(),
            applied: cfg,
            tried: file.sha256.clone(),
            digest: ConfigDigest::new(file.sha256),
            smtp,
            ctx,
            files,
            mta_log: None,
            network: None,
        }
    }

    /// The SHA-256 of the file in force, shared with the shipper.
    pub fn digest(&self) -> Arc<ConfigDigest> {
        self.digest.clone()
    }

    /// Registers what applies a changed `[[mta_log]]` list.
    pub fn on_mta_log(&mut self, hook: MtaLogHook) {
        self.mta_log = Some(hook);
    }

    /// Registers what applies a changed `[network]` section.
    pub fn on_network(&mut self, hook: MtaLogHook) {
        self.network = Some(hook);
    }

    /// Reloads on SIGHUP (`hup`, from [`hangup_signal`]) and when the
    /// file changes, until `stop` resolves (agent shutdown; a reload in
    /// progress finishes first).
    pub async fn run(
        mut self,
        hup: Option<crate::os::Hangup>,
        mut stop: tokio::sync::oneshot::Receiver<()>,
    ) {
        let mut hup = hup;
        let mut seen = stamp(&self.file);
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut trigger = tokio::select! {
                _ = &mut stop => return,
                _ = tick.tick() => Trigger::FileChanged,
                _ = next_hup(&mut hup) => Trigger::Sighup,
            };
            if trigger == Trigger::FileChanged {
                let now = stamp(&self.file);
                if now == seen {
                    continue;
                }
                // Let a writer finish: read once the file is still. A
                // SIGHUP meanwhile (the usual "edit, then signal") makes
                // it a SIGHUP reload.
                let mut settled = now;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(SETTLE) => {}
                        _ = next_hup(&mut hup) => {
                            trigger = Trigger::Sighup;
                            settled = stamp(&self.file);
                            break;
                        }
                    }
                    let again = stamp(&self.file);
                    if again == settled {
                        break;
                    }
                    settled = again;
                }
                seen = settled;
                if seen.is_none() && trigger == Trigger::FileChanged {
                    tracing::warn!(file = %self.file.display(), "the config file is gone; the running configuration stays (put the file back, or send SIGHUP once it is)");
                    continue;
                }
            } else {
                seen = stamp(&self.file);
            }
            self.reload(trigger).await;
        }
    }

    /// Reads the file and applies it, or keeps the running configuration
    /// and logs why. Returns whether it was applied.
    pub async fn reload(&mut self, trigger: Trigger) -> bool {
        let why = trigger.name();
        let file = self.file.display().to_string();
        let bytes = match std::fs::read(&self.file) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(
                    file,
                    trigger = why,
                    "configuration NOT reloaded, the running configuration stays: cannot read config file {file}: {e}"
                );
                return false;
            }
        };
        let sha256 = kiroku_common::sha256_hex(&bytes);
        if trigger == Trigger::FileChanged && sha256 == self.tried {
            return false;
        }
        self.tried = sha256.clone();
        let cfg = match parse(&self.file, &bytes) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(
                    file,
                    sha256,
                    trigger = why,
                    "configuration NOT reloaded, the running configuration stays: {}",
                    one_line(&format!("{e:#}"))
                );
                return false;
            }
        };
        match self.apply(cfg).await {
            Ok(applied) => {
                let restart = changes(&self.started, &self.applied).restart;
                self.digest.set(sha256.clone());
                let applied = if applied.is_empty() {
                    "nothing".to_owned()
                } else {
                    applied.join(", ")
                };
                tracing::info!(
                    file,
                    sha256,
                    trigger = why,
                    applied,
                    "configuration reloaded"
                );
                if !restart.is_empty() {
                    tracing::warn!(
                        file,
                        "changed settings that need a restart of the agent to take effect, still running with the values it started with: {}",
                        restart.join(", ")
                    );
                }
                true
            }
            Err(e) => {
                tracing::error!(
                    file,
                    sha256,
                    trigger = why,
                    "configuration NOT reloaded, the running configuration stays: {}",
                    one_line(&format!("{e:#}"))
                );
                false
            }
        }
    }

    /// Puts the live settings of `cfg` in force; returns the fields it
    /// changed. What can fail (reading the files `[smtp]` names) is done
    /// before anything changes. A file capture that cannot start with the
    /// new `[files]` keeps its previous settings and the error is logged,
    /// the rest stands.
    async fn apply(&mut self, mut cfg: AgentConfig) -> anyhow::Result<Vec<String>> {
        let live = changes(&self.applied, &cfg).live;
        // Always rebuilt (not only when `[smtp]` changed): a SIGHUP is how
        // a rotated password file or certificate is read again.
        let smtp = match &self.smtp {
            Some(handle) => Some(handle.current().reconfigured(cfg.smtp.clone())?),
            None => None,
        };
        let has = |key: &str| {
            live.iter()
                .any(|f| f == key || f.starts_with(&format!("{key}.")))
        };
        if let (Some(handle), Some(smtp)) = (&self.smtp, smtp) {
            handle.replace(smtp);
        }
        if has("custom") {
            self.ctx.set_custom(cfg.custom.clone());
        }
        let mut applied = live.clone();
        if has("files")
            && let Err(e) = self.files.apply(cfg.files.clone()).await
        {
            tracing::error!(error = %format!("{e:#}"), "the new [files] settings could not be applied; file capture keeps its previous settings");
            applied.retain(|f| !(f == "files" || f.starts_with("files.")));
            cfg.files = self.applied.files.clone();
        }
        if has("mta_log") {
            match &self.mta_log {
                Some(hook) => {
                    // Stopping a follower joins its thread.
                    if let Err(e) = tokio::task::block_in_place(|| hook(&cfg)) {
                        tracing::error!(error = %format!("{e:#}"), "the new [[mta_log]] settings could not be applied; the MTA log followers keep their previous settings");
                        applied.retain(|f| !(f == "mta_log" || f.starts_with("mta_log")));
                        cfg.mta_log = self.applied.mta_log.clone();
                    }
                }
                None => tracing::warn!(
                    "[[mta_log]] changed but this agent has no MTA log capture running to apply it to: restart the agent"
                ),
            }
        }
        if has("network") {
            match &self.network {
                // Stopping the capture joins its thread.
                Some(hook) => {
                    if let Err(e) = tokio::task::block_in_place(|| hook(&cfg)) {
                        tracing::error!(error = %format!("{e:#}"), "the new [network] settings could not be applied; network capture keeps its previous settings");
                        applied.retain(|f| !(f == "network" || f.starts_with("network.")));
                        cfg.network = self.applied.network.clone();
                    }
                }
                None => tracing::warn!(
                    "[network] changed but this agent has no network capture to apply it to: restart the agent"
                ),
            }
        }
        self.applied = cfg;
        Ok(applied)
    }
}
