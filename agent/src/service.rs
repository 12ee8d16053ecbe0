//! The agent as a Windows service (issue 22): the `kiroku-agent service …`
//! commands, the default Windows paths, and (on Windows only) the service
//! control manager (SCM) glue in [`windows`].
//!
//! # Command line
//! ```text
//! kiroku-agent service install [--config <PATH>]   register (or update) the service
//! kiroku-agent service uninstall                   stop it if running, unregister it
//! kiroku-agent service start                       start it and wait until it runs
//! kiroku-agent service stop                        stop it and wait until it stopped
//! kiroku-agent service run [--config <PATH>]       the SCM's entry (what install registers)
//! ```
//! `install` registers service `KirokuAgent` ("Kiroku Agent"), started
//! automatically at boot as LocalSystem, restarted by the SCM when it fails
//! (the agent exits with status 75 when its buffer needs a restart), with
//! the command line `"<this exe>" service run --config "<config>"`. It is
//! idempotent: run again (an upgrade), it updates the registration. It also
//! creates the directories below with their ACL and registers the event
//! log source. `uninstall` never removes `%ProgramData%\Kiroku`: the buffer
//! and the logs survive an uninstall or an upgrade.
//!
//! # Default paths on Windows ([`WindowsPaths`])
//! - configuration: `%ProgramData%\Kiroku\agent.toml` (also what a plain
//!   `kiroku-agent` without `--config` reads on Windows);
//! - data directory (buffer), for `data_dir` in the config:
//!   `%ProgramData%\Kiroku\agent`;
//! - logs: `%ProgramData%\Kiroku\logs\kiroku-agent.<YYYY-MM-DD>.log`, one
//!   file a day, 14 kept; errors also go to the Windows event log
//!   (Application, source `KirokuAgent`).
//!
//! `%ProgramData%\Kiroku` and everything below it is limited to SYSTEM and
//! Administrators (a protected DACL, [`KIROKU_DIR_SDDL`]), so the buffer,
//! the logs and a private key kept there are not readable by the PC's user.
//!
//! Architecture invariant: the service runs the same [`crate::run_until`]
//! as the console agent; only the stop trigger (the SCM's Stop/Shutdown
//! control instead of Ctrl+C) and the log destination differ. On Linux the
//! commands exist but say that the agent runs under systemd there.

mod paths;
#[cfg(windows)]
mod windows;

pub use paths::WindowsPaths;

/// The service's key name in the SCM (`sc query KirokuAgent`).
pub const SERVICE_NAME: &str = "KirokuAgent";
/// The name services.msc shows.
pub const DISPLAY_NAME: &str = "Kiroku Agent";
/// The description services.msc shows.
pub const DESCRIPTION: &str = "Kiroku endpoint agent: records outgoing mail (SMTP relay), file \
     activity and host identity, buffers it and ships it to the Kiroku collector over mutual TLS.";
/// The DACL of `%ProgramData%\Kiroku`: protected (no inheritance from
/// ProgramData, which lets Users read), full access for SYSTEM (SY) and the
/// Administrators group (BA), inherited by files and folders below
/// (OICI).
pub const KIROKU_DIR_SDDL: &str = "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)";

/// `kiroku-agent service …`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ServiceCommand {
    /// Register the Windows service (or update its registration), create
    /// %ProgramData%\Kiroku with an ACL for SYSTEM and Administrators only,
    /// register the event log source. Run as Administrator.
    Install {
        /// The configuration the service reads
        /// [default: %ProgramData%\Kiroku\agent.toml].
        #[arg(short, long)]
        config: Option<std::path::PathBuf>,
    },
    /// Stop the service if it runs and unregister it; %ProgramData%\Kiroku
    /// (buffer, logs, configuration) is kept.
    Uninstall,
    /// Start the service and wait until it runs.
    Start,
    /// Stop the service and wait until it has stopped.
    Stop,
    /// The service's entry point, started by the service control manager.
    #[command(hide = true)]
    Run {
        #[arg(short, long)]
        config: Option<std::path::PathBuf>,
    },
}

/// Runs a `service` command; the exit status of `kiroku-agent`.
#[cfg(windows)]
pub fn command(cmd: ServiceCommand) -> std::process::ExitCode {
    windows::command(cmd)
}

/// Runs a `service` command; the exit status of `kiroku-agent`.
#[cfg(not(windows))]
pub fn command(_cmd: ServiceCommand) -> std::process::ExitCode {
    eprintln!(
        "kiroku-agent: `service` manages the Windows service; on Linux the agent runs under \
         systemd (packaging/systemd/)"
    );
    std::process::ExitCode::from(2)
}

/// The configuration file read when none is given: `%ProgramData%\Kiroku\
/// agent.toml` on Windows, none elsewhere (Linux needs `--config`).
#[cfg(windows)]
pub fn default_config() -> Option<std::path::PathBuf> {
    Some(windows::paths().config())
}

/// The configuration file read when none is given: `%ProgramData%\Kiroku\
/// agent.toml` on Windows, none elsewhere (Linux needs `--config`).
#[cfg(not(windows))]
pub fn default_config() -> Option<std::path::PathBuf> {
    None
}
