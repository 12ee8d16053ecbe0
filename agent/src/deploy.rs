//! `kiroku-agent config write`: how deployment settings reach the agent's
//! configuration file (issue 22). The MSI (`packaging/windows/`, a deferred
//! custom action right after its files are installed) and
//! `packaging/windows/install.ps1` both run the installed exe with the
//! settings they were given, so there is one implementation of "put these
//! values into agent.toml", tested here on Linux.
//!
//! Each [`Setting`] is one msiexec property (`COLLECTOR=…`), one
//! install.ps1 parameter (`-Collector …`), one flag of this command
//! (`--collector …`) and one key of agent.toml (`collector.endpoint`); the
//! table [`SETTINGS`] is the only place the three names meet.
//!
//! Invariants:
//! - An empty value is "not given" (an MSI property that was not set
//!   expands to ""), never "clear this key".
//! - A setting not given leaves the file's key as it is; when no given
//!   value changes anything, the file is not rewritten at all, so an
//!   upgrade without properties keeps a hand-edited file byte for byte.
//! - What is written parses as an [`AgentConfig`] (the same check as the
//!   agent's start), else nothing is written and the error names the key
//!   and the property that sets it.
//! - The file is replaced atomically (a temporary file, then a rename).
//!
//! A rewritten file loses its comments (it is re-serialised from a TOML
//! table; the workspace has no format-preserving TOML editor, and a file
//! the installer manages is better plain).

use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Parser;

use crate::config::AgentConfig;

/// How a setting's text becomes a TOML value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string.
    Text,
    /// A list of strings separated by `,`, `;` or spaces (addresses).
    Addresses,
    /// A list of paths separated by `;` (as in `PATH`; paths may hold
    /// commas and spaces).
    Paths,
}

/// One deployment setting and its names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The msiexec property (`COLLECTOR`); the flag is its lower-case,
    /// dashed form (`--collector`), the install.ps1 parameter its
    /// CamelCase form (`-Collector`).
    pub property: &'static str,
    /// The dotted key in agent.toml.
    pub key: &'static str,
    pub kind: Kind,
}

/// Every setting the installers take, in the order they are documented.
#[rustfmt::skip]
pub const SETTINGS: &[Setting] = &[
    Setting { property: "COLLECTOR",         key: "collector.endpoint",        kind: Kind::Text },
    Setting { property: "SERVER_NAME",       key: "collector.server_name",     kind: Kind::Text },
    Setting { property: "CA_FILE",           key: "collector.tls.ca",          kind: Kind::Text },
    Setting { property: "CERT_FILE",         key: "collector.tls.cert",        kind: Kind::Text },
    Setting { property: "KEY_FILE",          key: "collector.tls.key",         kind: Kind::Text },
    Setting { property: "ENROLL_TOKEN",      key: "collector.enroll_token",    kind: Kind::Text },
    Setting { property: "ENROLL_ENDPOINT",   key: "collector.enroll_endpoint", kind: Kind::Text },
    Setting { property: "SMTP_LISTEN",       key: "smtp.listen",               kind: Kind::Addresses },
    Setting { property: "SMTP_MODE",         key: "smtp.mode",                 kind: Kind::Text },
    Setting { property: "SMTP_UPSTREAM",     key: "smtp.upstream",             kind: Kind::Text },
    Setting { property: "SMTP_UPSTREAM_TLS", key: "smtp.upstream_tls",         kind: Kind::Text },
    Setting { property: "FILES_WATCH",       key: "files.watch",               kind: Kind::Paths },
    Setting { property: "DATA_DIR",          key: "data_dir",                  kind: Kind::Text },
];

impl Setting {
    /// `--collector` for `COLLECTOR`.
    pub fn flag(&self) -> String {
        format!("--{}", self.property.to_ascii_lowercase().replace('_', "-"))
    }

    fn value(&self, text: &str) -> toml::Value {
        let list = |parts: Vec<&str>| {
            toml::Value::Array(
                parts
                    .into_iter()
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(|p| toml::Value::String(p.to_owned()))
                    .collect(),
            )
        };
        match self.kind {
            Kind::Text => toml::Value::String(text.trim().to_owned()),
            Kind::Addresses => list(text.split([',', ';', ' ']).collect()),
            Kind::Paths => list(text.split(';').collect()),
        }
    }
}

/// `kiroku-agent config write`: writes the given deployment settings into
/// the agent's configuration file, creating it when it does not exist.
#[derive(Debug, Parser)]
#[command(name = "kiroku-agent config write")]
pub struct WriteArgs {
    /// The agent configuration file to create or update.
    #[arg(long, env = "KIROKU_AGENT_CONFIG")]
    pub config: PathBuf,
    /// `https://host:port` of the collector (msiexec COLLECTOR).
    #[arg(long)]
    pub collector: Option<String>,
    /// Name in the collector's certificate, when it differs (SERVER_NAME).
    #[arg(long)]
    pub server_name: Option<String>,
    /// CA certificate file (CA_FILE).
    #[arg(long)]
    pub ca_file: Option<String>,
    /// This agent's certificate file (CERT_FILE).
    #[arg(long)]
    pub cert_file: Option<String>,
    /// This agent's private key file (KEY_FILE).
    #[arg(long)]
    pub key_file: Option<String>,
    /// One-time enrollment token from `kiroku certs enroll-token`
    /// (ENROLL_TOKEN); used when the certificate files do not exist yet.
    #[arg(long)]
    pub enroll_token: Option<String>,
    /// `https://host:port` of the collector's enrollment listener
    /// (ENROLL_ENDPOINT).
    #[arg(long)]
    pub enroll_endpoint: Option<String>,
    /// SMTP listen addresses, comma separated (SMTP_LISTEN).
    #[arg(long)]
    pub smtp_listen: Option<String>,
    /// relay (a new file's default) or capture-only (SMTP_MODE).
    #[arg(long)]
    pub smtp_mode: Option<String>,
    /// The mail server mail is relayed to, host:port (SMTP_UPSTREAM).
    #[arg(long)]
    pub smtp_upstream: Option<String>,
    /// TLS to it: off, opportunistic, required, implicit (SMTP_UPSTREAM_TLS).
    #[arg(long)]
    pub smtp_upstream_tls: Option<String>,
    /// Directories whose files are recorded, `;` separated (FILES_WATCH).
    #[arg(long)]
    pub files_watch: Option<String>,
    /// The buffer's directory (DATA_DIR); default: `agent` next to the
    /// configuration file.
    #[arg(long)]
    pub data_dir: Option<String>,
}

impl WriteArgs {
    /// The settings given with a non-empty value, in [`SETTINGS`] order.
    pub fn given(&self) -> Vec<(Setting, String)> {
        let values = [
            &self.collector,
            &self.server_name,
            &self.ca_file,
            &self.cert_file,
            &self.key_file,
            &self.enroll_token,
            &self.enroll_endpoint,
            &self.smtp_listen,
            &self.smtp_mode,
            &self.smtp_upstream,
            &self.smtp_upstream_tls,
            &self.files_watch,
            &self.data_dir,
        ];
        SETTINGS
            .iter()
            .zip(values)
            .filter_map(|(s, v)| {
                let v = v.as_deref().map(str::trim).unwrap_or_default();
                (!v.is_empty()).then(|| (*s, v.to_owned()))
            })
            .collect()
    }
}

/// What [`write`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Updated,
    Unchanged,
}

/// Runs `kiroku-agent config write …` when those are the first two
/// arguments (`args` without the program name), else `None` and the
/// agent's own command line applies. Kept out of the agent's `Cli` so that
/// the deployment step stays one self-contained module.
pub fn dispatch(args: &[OsString]) -> Option<std::process::ExitCode> {
    if args.len() < 2 || args[0] != "config" || args[1] != "write" {
        return None;
    }
    let parsed = WriteArgs::parse_from(
        std::iter::once(OsString::from("kiroku-agent config write")).chain(args[2..].to_vec()),
    );
    Some(match write(&parsed.config, &parsed.given()) {
        Ok(outcome) => {
            let what = match outcome {
                Outcome::Created => "written",
                Outcome::Updated => "updated",
                Outcome::Unchanged => "unchanged",
            };
            println!("{}: {what}", parsed.config.display());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kiroku-agent config write: {e:#}");
            note_failure(&parsed.config, &e);
            std::process::ExitCode::from(2)
        }
    })
}

/// Windows Installer does not keep a custom action's output: the reason a
/// `config write` failed is appended to `logs/config-write.log` next to the
/// configuration file (best effort), where the MSI's failure (exit 1603,
/// "WriteConfig returned actual error code 2" in its log) sends the reader.
fn note_failure(config: &Path, e: &anyhow::Error) {
    let dir = config.parent().unwrap_or(Path::new(".")).join("logs");
    let line = format!(
        "{} kiroku-agent config write {}: {e:#}\n",
        jiff::Timestamp::now(),
        config.display()
    );
    let _ = std::fs::create_dir_all(&dir).and_then(|()| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("config-write.log"))?
            .write_all(line.as_bytes())
    });
}

/// Writes `given` into the configuration file at `path` (see the module's
/// invariants).
pub fn write(path: &Path, given: &[(Setting, String)]) -> anyhow::Result<Outcome> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut table = match &existing {
        Some(text) => text.parse::<toml::Table>().with_context(|| {
            format!(
                "{} is not valid TOML; fix or remove it and install again",
                path.display()
            )
        })?,
        None => fresh(path),
    };
    let mut changed = existing.is_none();
    for (setting, text) in given {
        changed |= set(&mut table, setting.key, setting.value(text));
    }
    if !changed {
        return Ok(Outcome::Unchanged);
    }
    let text = format!("{HEADER}{}", toml::to_string(&table)?);
    AgentConfig::parse(path, &text).map_err(|e| {
        anyhow::anyhow!(
            "{e:#}\nNothing was written. The installer settings are: {}",
            SETTINGS
                .iter()
                .map(|s| format!("{} ({})", s.property, s.key))
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    replace(path, &text)?;
    Ok(match existing {
        Some(_) => Outcome::Updated,
        None => Outcome::Created,
    })
}

const HEADER: &str = "\
# kiroku-agent configuration, written by `kiroku-agent config write` (the MSI
# or install.ps1; see packaging/agent.example.toml for every setting).
# Edit freely: a later install or upgrade changes only the settings given to
# it, and rewrites this file (without its comments) only when one changes.

";

/// A new file's contents before the given settings: the buffer and the
/// certificate files next to the configuration file, and the relay mode
/// (the agent's own default is capture-only, which on an employee's PC
/// would swallow mail: an installer must name the mail server, or choose
/// capture-only explicitly).
fn fresh(path: &Path) -> toml::Table {
    let dir = path.parent().unwrap_or(Path::new("."));
    let text = |p: PathBuf| toml::Value::String(p.display().to_string());
    let mut table = toml::Table::new();
    set(&mut table, "data_dir", text(dir.join("agent")));
    set(&mut table, "smtp.mode", "relay".into());
    for (key, file) in [
        ("ca", "ca.pem"),
        ("cert", "agent.pem"),
        ("key", "agent.key"),
    ] {
        let key = format!("collector.tls.{key}");
        set(&mut table, &key, text(dir.join("certs").join(file)));
    }
    table
}

/// Sets the dotted `key` (creating its tables); whether anything changed.
fn set(table: &mut toml::Table, key: &str, value: toml::Value) -> bool {
    let mut parts: Vec<&str> = key.split('.').collect();
    let Some(last) = parts.pop() else {
        return false;
    };
    let mut at = table;
    for part in parts {
        let entry = at
            .entry(part.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(inner) = entry else {
            return false;
        };
        at = inner;
    }
    if at.get(last) == Some(&value) {
        return false;
    }
    at.insert(last.to_owned(), value);
    true
}

/// Replaces `path` with `text` atomically, creating its directory.
fn replace(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".new");
    let tmp = PathBuf::from(tmp_name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    let mut file = kiroku_common::os::create_private(&mut options)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    drop(file);
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

#[cfg(test)]
mod tests;
