//! Starting the cross-built Windows agent (`kiroku-agent.exe`) under Wine
//! in an [`Env`], with the same config [`Env::start_agent`] writes — file
//! paths as `Z:\…` ([`win_path`]) — so a Windows test reads like its Linux
//! twin:
//!
//! ```ignore
//! let wine = match Wine::get() {
//!     Ok(w) => w,
//!     Err(why) => return Ok(kiroku_tests::skip("my_test", &why)),
//! };
//! let env = Env::new()?;
//! let _collector = env.start_collector()?;
//! let mut agent = env.start_windows_agent(wine, "pc-w", smtp, &Mode::Relay(up))?;
//! // ... agent.kill9() is a real `kill -9` of the Windows process;
//! // stop_windows(&mut agent) is a graceful Ctrl+C.
//! ```
//!
//! Processes: `wine64 x.exe` execs the Wine preloader and then runs the
//! Windows program in that same Linux process (checked: `/proc/<pid>/exe`
//! of the spawned child is `wine64-preloader` and its command line is the
//! exe), so the [`Proc`]'s pid IS the Windows process: `kill9` (SIGKILL)
//! kills it without any chance to flush, exactly as on Linux. Wine's own
//! helpers (`wineserver`, `services.exe`, `winedevice.exe`, …) belong to
//! the shared prefix and exit by themselves ~3 s after its last program.
//!
//! The exe is the plain debug build `scripts/test.sh` makes (no
//! `test-hooks`): `KIROKU_TEST_*` knobs are refused here rather than
//! silently ignored.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::wine::{Wine, win_path};
use crate::{AgentToml, Env, Mode, Proc};

/// Additions to the Windows agent's config and start (all optional:
/// `WinAgent::default()` is the plain [`Env::start_agent`] config).
#[derive(Debug, Default, Clone, Copy)]
pub struct WinAgent<'a> {
    /// TOML inside `[smtp]`.
    pub smtp_extra: &'a str,
    /// TOML inside `[collector]` (e.g. an `enroll_token`).
    pub collector_extra: &'a str,
    /// TOML appended at the end (e.g. a `[files]` section; write Windows
    /// paths with [`win_path`] and TOML-quote them with `{:?}`).
    pub extra: &'a str,
    /// Environment variables for the Windows process (Wine passes the
    /// Unix environment through).
    pub envs: &'a [(&'a str, &'a str)],
    /// Ship to 127.0.0.1:this instead of the Env's collector port.
    pub collector_port: Option<u16>,
    /// Do not issue `agent-<name>.pem/.key` (enrollment: the agent makes
    /// its own key and gets the certificate at those paths).
    pub no_cert: bool,
    /// Arguments before `--config` (e.g. a subcommand).
    pub args: &'a [&'a str],
    /// Do not wait for the SMTP port (a start that is expected to fail, or
    /// a subcommand that does not listen).
    pub no_wait: bool,
}

/// How long a Windows agent may take to listen: Wine starts slowly on a
/// busy machine (a prefix's first start takes seconds; `Wine::get` does
/// that one up front).
const LISTEN_WITHIN: Duration = Duration::from_secs(90);

impl Env {
    /// Writes the Windows agent's config `agent-<name>.toml` — the same
    /// config as [`Env::start_agent`], paths as `Z:\…` — issuing its
    /// certificate once (unless `x.no_cert`). Returns the Linux path of the
    /// config; hand `win_path` of it to the exe.
    pub fn windows_agent_config(
        &self,
        name: &str,
        smtp: u16,
        mode: &Mode,
        x: &WinAgent<'_>,
    ) -> anyhow::Result<PathBuf> {
        let pki = self.pki();
        if !x.no_cert && !pki.join(format!("agent-{name}.pem")).exists() {
            self.issue("agent", name, &[])?;
        }
        let cfg = self.path().join(format!("agent-{name}.toml"));
        std::fs::write(
            &cfg,
            self.agent_toml(
                name,
                smtp,
                mode,
                AgentToml {
                    collector_port: x.collector_port.unwrap_or(self.grpc),
                    collector_extra: x.collector_extra,
                    smtp_extra: x.smtp_extra,
                    extra: x.extra,
                },
                |p| format!("{:?}", win_path(p)),
            ),
        )?;
        Ok(cfg)
    }

    /// Starts the Windows agent under Wine with the [`Env::start_agent`]
    /// config and waits for its SMTP port (127.0.0.1:`smtp`). Log:
    /// `agent-<name>.log` in the Env, as on Linux.
    pub fn start_windows_agent(
        &self,
        wine: &Wine,
        name: &str,
        smtp: u16,
        mode: &Mode,
    ) -> anyhow::Result<Proc> {
        self.start_windows_agent_with(wine, name, smtp, mode, &WinAgent::default())
    }

    /// Like [`Env::start_windows_agent`], with additions.
    pub fn start_windows_agent_with(
        &self,
        wine: &Wine,
        name: &str,
        smtp: u16,
        mode: &Mode,
        x: &WinAgent<'_>,
    ) -> anyhow::Result<Proc> {
        if let Some((k, _)) = x.envs.iter().find(|(k, _)| k.starts_with("KIROKU_TEST_")) {
            bail!(
                "{k}: the Windows agent exe is built without test hooks (scripts/test.sh: `cargo build --target x86_64-pc-windows-gnu -p kiroku-agent`); a test knob would be ignored"
            );
        }
        let cfg = self.windows_agent_config(name, smtp, mode, x)?;
        let mut cmd = wine.command(&wine.agent_exe());
        cmd.args(x.args)
            .arg("--config")
            .arg(win_path(&cfg))
            .current_dir(self.path())
            .envs(x.envs.iter().copied());
        let mut p = Proc::spawn(
            &format!("windows agent {name}"),
            &mut cmd,
            &self.path().join(format!("agent-{name}.log")),
        )?;
        if !x.no_wait {
            wait_listening(&mut p, smtp, LISTEN_WITHIN)?;
        }
        Ok(p)
    }
}

/// Waits until 127.0.0.1:`port` accepts connections, failing early when
/// the process exits.
pub fn wait_listening(p: &mut Proc, port: u16, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if !p.is_running() {
            bail!("{} exited at start:\n{}", p.name, p.log_text());
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not listen on {port} within {within:?}:\n{}",
                p.name,
                p.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Stops a Windows program under Wine gracefully: SIGINT, which Wine
/// delivers to the program as a console Ctrl+C (the agent's shutdown
/// signal, `kiroku_common::os`), then waits up to `within` for it to
/// exit; kills it (SIGKILL) after that. Returns whether it exited by
/// itself.
pub fn stop_windows(p: &mut Proc, within: Duration) -> bool {
    let _ = Command::new("kill")
        .arg("-INT")
        .arg(p.pid().to_string())
        .status();
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if !p.is_running() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    p.kill9();
    false
}

/// The Linux pids of the Windows program `exe_name` (e.g.
/// `kiroku-agent.exe`) running under Wine, from `/proc/*/cmdline` — to
/// check no stray copy survived a test.
pub fn wine_pids(exe_name: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(Path::new("/proc").join(pid.to_string()).join("cmdline"))
                .map(|c| {
                    c.split(|b| *b == 0)
                        .next()
                        .is_some_and(|a0| String::from_utf8_lossy(a0).ends_with(exe_name))
                })
                .unwrap_or(false)
        })
        .collect()
}
