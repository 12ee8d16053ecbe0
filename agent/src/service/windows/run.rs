//! The service's entry: `kiroku-agent service run` hands this thread to the
//! SCM's dispatcher, which calls [`service_main`] on its own thread. That
//! runs [`crate::run_until`] (the agent's one main) with the SCM's Stop,
//! Preshutdown or Shutdown control as the shutdown trigger, reporting
//! StopPending with a growing checkpoint while the agent drains, so the
//! SCM keeps waiting, and Stopped when it is done.
//!
//! A stop is graceful within [`STOP_DEADLINE`]: the agent closes its
//! listeners, finishes the SMTP sessions under way and stops its capture
//! (its own bound is 30 s for a configuration reload); past the deadline
//! the service reports Stopped anyway and the process ends, which loses
//! nothing: every accepted mail and event is in the crash-safe buffer
//! already (that is the buffer's promise for a `kill -9`).
// `define_windows_service!` expands to the unsafe FFI trampoline.
#![allow(unsafe_code)]

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Duration;

use windows_service::service::{
    ServiceControl, ServiceControlAccept, ServiceExitCode, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};

use super::super::SERVICE_NAME;
use super::{eventlog, log};

/// The longest graceful stop before the service reports Stopped anyway.
pub const STOP_DEADLINE: Duration = Duration::from_secs(25);
/// How often StopPending / StartPending is re-reported with the next
/// checkpoint, and the wait hint given with it.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
const WAIT_HINT: Duration = Duration::from_secs(10);

/// Service-specific exit codes (`sc query` shows them).
const EXIT_CONFIG: u32 = 2;
const EXIT_FAILED: u32 = 1;

/// The configuration the dispatcher's thread reads (set before the
/// dispatcher starts; the SCM passes no argument of ours).
static CONFIG: OnceLock<PathBuf> = OnceLock::new();

windows_service::define_windows_service!(ffi_service_main, service_main);

/// `kiroku-agent service run`: blocks until the service stopped.
pub fn dispatch(config: Option<PathBuf>) -> ExitCode {
    let config = config.unwrap_or_else(|| super::paths().config());
    let _ = CONFIG.set(config);
    match windows_service::service_dispatcher::start(SERVICE_NAME, ffi_service_main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "kiroku-agent: `service run` is started by the service control manager \
                 (`kiroku-agent service start`); to run the agent in this console use \
                 `kiroku-agent --config <file>` ({e})"
            );
            ExitCode::from(2)
        }
    }
}

fn service_main(_arguments: Vec<OsString>) {
    let paths = super::paths();
    log::init(&paths.log_dir());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let handler = move |control| match control {
        ServiceControl::Stop | ServiceControl::Preshutdown | ServiceControl::Shutdown => {
            stop_tx.send_replace(true);
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    };
    let status = match service_control_handler::register(SERVICE_NAME, handler) {
        Ok(s) => s,
        Err(e) => {
            eventlog::report(
                eventlog::Level::Error,
                &format!("cannot register the service control handler: {e}"),
            );
            return;
        }
    };
    let report = Reporter { status };
    report.set(ServiceState::StartPending, 1, ServiceExitCode::NO_ERROR);
    let exit = run(&report, stop_rx);
    report.set(ServiceState::Stopped, 0, exit);
}

/// Loads the configuration, runs the agent until the SCM stops it.
fn run(report: &Reporter, stop_rx: tokio::sync::watch::Receiver<bool>) -> ServiceExitCode {
    let config = CONFIG
        .get()
        .cloned()
        .unwrap_or_else(|| super::paths().config());
    let (cfg, file) = match crate::reload::ConfigFile::load(&config) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(config = %config.display(), "the agent cannot start: {e:#}");
            return ServiceExitCode::ServiceSpecific(EXIT_CONFIG);
        }
    };
    if let Err(e) = prepare_data_dir(&cfg.data_dir) {
        tracing::error!(data_dir = %cfg.data_dir.display(), "the agent cannot start: {e:#}");
        return ServiceExitCode::ServiceSpecific(EXIT_CONFIG);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ServiceExitCode::ServiceSpecific(EXIT_FAILED);
        }
    };
    rt.block_on(async {
        let mut stopped = stop_rx.clone();
        // Polled here rather than spawned: the agent's future need not be
        // Send, and dropping it is the abort past the deadline.
        let agent = crate::run_until(cfg, file, async move {
            let _ = stopped.wait_for(|s| *s).await;
        });
        tokio::pin!(agent);
        report.set(ServiceState::Running, 0, ServiceExitCode::NO_ERROR);
        eventlog::report(
            eventlog::Level::Information,
            &format!(
                "kiroku-agent {} started (configuration {})",
                kiroku_common::VERSION,
                config.display()
            ),
        );
        let mut stop_rx = stop_rx;
        let ended = tokio::select! {
            r = &mut agent => Some(r),
            _ = stop_rx.wait_for(|s| *s) => None,
        };
        let result = match ended {
            Some(r) => r,
            None => {
                tracing::info!("the service control manager asked the agent to stop");
                drain(report, agent).await
            }
        };
        match result {
            Ok(()) => ServiceExitCode::NO_ERROR,
            Err(e) => {
                tracing::error!("the agent stopped on an error: {e:#}");
                ServiceExitCode::ServiceSpecific(EXIT_FAILED)
            }
        }
    })
}

/// Waits for the stopping agent, telling the SCM it progresses, for at
/// most [`STOP_DEADLINE`].
async fn drain(
    report: &Reporter,
    mut agent: std::pin::Pin<&mut impl std::future::Future<Output = anyhow::Result<()>>>,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + STOP_DEADLINE;
    let mut checkpoint = 1;
    loop {
        report.set(
            ServiceState::StopPending,
            checkpoint,
            ServiceExitCode::NO_ERROR,
        );
        checkpoint += 1;
        match tokio::time::timeout(PROGRESS_EVERY, agent.as_mut()).await {
            Ok(r) => return r,
            Err(_) if tokio::time::Instant::now() < deadline => continue,
            Err(_) => {
                tracing::warn!(
                    "the agent had not stopped {} s after the stop request; stopping the \
                     service anyway (everything accepted is in the buffer)",
                    STOP_DEADLINE.as_secs()
                );
                return Ok(());
            }
        }
    }
}

/// A data directory the service makes gets the restricted ACL (the default
/// one is below `%ProgramData%\Kiroku`, made so by `service install`).
fn prepare_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    if dir.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    super::acl::restrict_to_system_and_admins(dir)
        .with_context(|| format!("limiting {} to SYSTEM and Administrators", dir.display()))
}

/// Reports the service's state to the SCM.
struct Reporter {
    status: service_control_handler::ServiceStatusHandle,
}

impl Reporter {
    fn set(&self, state: ServiceState, checkpoint: u32, exit_code: ServiceExitCode) {
        let controls_accepted = match state {
            ServiceState::Running => {
                ServiceControlAccept::STOP
                    | ServiceControlAccept::PRESHUTDOWN
                    | ServiceControlAccept::SHUTDOWN
            }
            _ => ServiceControlAccept::empty(),
        };
        let pending = matches!(
            state,
            ServiceState::StartPending | ServiceState::StopPending
        );
        let status = ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: state,
            controls_accepted,
            exit_code,
            checkpoint,
            wait_hint: if pending { WAIT_HINT } else { Duration::ZERO },
            process_id: None,
        };
        if let Err(e) = self.status.set_service_status(status) {
            tracing::warn!("cannot report the service state {state:?}: {e}");
        }
    }
}
