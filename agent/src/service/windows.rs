//! [`super`] on Windows: the `service` commands against the service control
//! manager, through the `windows-service` crate (safe wrappers; the few raw
//! Win32 calls of this concern are in `acl` and `eventlog`).

mod acl;
mod eventlog;
mod folders;
mod log;
mod run;

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use windows_service::service::{
    ServiceAccess, ServiceAction, ServiceActionType, ServiceErrorControl, ServiceFailureActions,
    ServiceFailureResetPeriod, ServiceInfo, ServiceStartType, ServiceState, ServiceType,
};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};

use super::{DESCRIPTION, DISPLAY_NAME, SERVICE_NAME, ServiceCommand, WindowsPaths};

/// How long `start` and `stop` wait for the service to get there.
const WAIT_FOR_STATE: Duration = Duration::from_secs(60);

/// Win32 error: the service does not exist.
const ERROR_SERVICE_DOES_NOT_EXIST: i32 = 1060;

pub fn command(cmd: ServiceCommand) -> ExitCode {
    let result = match cmd {
        ServiceCommand::Install { config } => install(config),
        ServiceCommand::Uninstall => uninstall(),
        ServiceCommand::Start => start(),
        ServiceCommand::Stop => stop(),
        ServiceCommand::Run { config } => return run::dispatch(config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiroku-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The agent's folders below ProgramData as Windows knows it (the
/// environment variable only when Windows cannot say).
pub fn paths() -> WindowsPaths {
    folders::program_data()
        .map(|pd| WindowsPaths::new(&pd))
        .unwrap_or_else(WindowsPaths::from_env)
}

/// The service's command line after the exe: `service run --config <c>`.
pub fn launch_arguments(config: &Path) -> Vec<OsString> {
    vec![
        "service".into(),
        "run".into(),
        "--config".into(),
        config.as_os_str().to_owned(),
    ]
}

fn install(config: Option<PathBuf>) -> anyhow::Result<()> {
    let paths = paths();
    let config = config.unwrap_or_else(|| paths.config());
    // The service starts in %SystemRoot%\System32: a relative path would not
    // name the file the administrator meant.
    let config = std::path::absolute(&config)
        .with_context(|| format!("making {} absolute", config.display()))?;
    let exe = std::env::current_exe().context("finding this program's own path")?;
    for dir in [paths.root(), paths.data_dir(), paths.log_dir()] {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating {} (run as Administrator)", dir.display()))?;
    }
    acl::restrict_to_system_and_admins(&paths.root()).with_context(|| {
        format!(
            "limiting {} to SYSTEM and Administrators (run as Administrator)",
            paths.root().display()
        )
    })?;
    let manager = manager(ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE)?;
    let info = ServiceInfo {
        name: SERVICE_NAME.into(),
        display_name: DISPLAY_NAME.into(),
        service_type: ServiceType::OWN_PROCESS,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: exe.clone(),
        launch_arguments: launch_arguments(&config),
        dependencies: vec![],
        // LocalSystem: the account that owns %ProgramData%\Kiroku.
        account_name: None,
        account_password: None,
    };
    let access = ServiceAccess::CHANGE_CONFIG | ServiceAccess::QUERY_CONFIG;
    let (service, verb) = match manager.open_service(SERVICE_NAME, access) {
        Ok(service) => {
            service
                .change_config(&info)
                .with_context(|| format!("updating the service {SERVICE_NAME}"))?;
            (service, "updated")
        }
        Err(e) if is_missing(&e) => (
            manager
                .create_service(&info, access)
                .with_context(|| format!("creating the service {SERVICE_NAME}"))?,
            "installed",
        ),
        Err(e) => {
            return Err(e).with_context(|| format!("opening the service {SERVICE_NAME}"));
        }
    };
    service
        .set_description(DESCRIPTION)
        .context("setting the service's description")?;
    // Restart after a failure (the buffer watchdog's exit 75, a crash):
    // 10 s, 10 s, then every minute; the count resets after a day.
    let restart = |secs| ServiceAction {
        action_type: ServiceActionType::Restart,
        delay: Duration::from_secs(secs),
    };
    let failure = ServiceFailureActions {
        reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(86_400)),
        reboot_msg: None,
        command: None,
        actions: Some(vec![restart(10), restart(10), restart(60)]),
    };
    if let Err(e) = service
        .update_failure_actions(failure)
        .and_then(|()| service.set_failure_actions_on_non_crash_failures(true))
    {
        // Not fatal: the service runs; it is only not restarted by itself.
        eprintln!("kiroku-agent: warning: cannot set the service's restart-on-failure: {e}");
    }
    if let Err(e) = eventlog::register_source() {
        eprintln!(
            "kiroku-agent: warning: cannot register the event log source {SERVICE_NAME}: {e:#}"
        );
    }
    println!(
        "service {SERVICE_NAME} {verb}: {} service run --config {}",
        exe.display(),
        config.display()
    );
    println!(
        "data in {} (SYSTEM and Administrators only), logs in {}",
        paths.root().display(),
        paths.log_dir().display()
    );
    if !config.exists() {
        println!(
            "note: {} does not exist yet; write it before `kiroku-agent service start`",
            config.display()
        );
    }
    Ok(())
}

fn uninstall() -> anyhow::Result<()> {
    let manager = manager(ServiceManagerAccess::CONNECT)?;
    let access = ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE;
    let service = match manager.open_service(SERVICE_NAME, access) {
        Ok(s) => s,
        Err(e) if is_missing(&e) => {
            println!("service {SERVICE_NAME} is not installed");
            return Ok(());
        }
        Err(e) => return Err(e).with_context(|| format!("opening the service {SERVICE_NAME}")),
    };
    let state = service
        .query_status()
        .with_context(|| format!("asking the state of {SERVICE_NAME}"))?
        .current_state;
    if state != ServiceState::Stopped {
        stop_and_wait(&service)?;
    }
    service
        .delete()
        .with_context(|| format!("deleting the service {SERVICE_NAME}"))?;
    if let Err(e) = eventlog::unregister_source() {
        eprintln!("kiroku-agent: warning: {e:#}");
    }
    println!(
        "service {SERVICE_NAME} uninstalled; {} (buffer, logs, configuration) is kept",
        paths().root().display()
    );
    Ok(())
}

fn start() -> anyhow::Result<()> {
    let service = open(ServiceAccess::QUERY_STATUS | ServiceAccess::START)?;
    if service.query_status()?.current_state == ServiceState::Running {
        println!("service {SERVICE_NAME} is already running");
        return Ok(());
    }
    service
        .start::<&OsStr>(&[])
        .with_context(|| format!("starting the service {SERVICE_NAME}"))?;
    let state = wait_for(&service, |s| {
        s == ServiceState::Running || s == ServiceState::Stopped
    })?;
    if state != ServiceState::Running {
        anyhow::bail!(
            "the service {SERVICE_NAME} stopped while starting: see the Application event log \
             (source {SERVICE_NAME}) and {}",
            paths().log_dir().display()
        );
    }
    println!("service {SERVICE_NAME} running");
    Ok(())
}

fn stop() -> anyhow::Result<()> {
    let service = open(ServiceAccess::QUERY_STATUS | ServiceAccess::STOP)?;
    if service.query_status()?.current_state == ServiceState::Stopped {
        println!("service {SERVICE_NAME} is not running");
        return Ok(());
    }
    stop_and_wait(&service)?;
    println!("service {SERVICE_NAME} stopped");
    Ok(())
}

fn stop_and_wait(service: &windows_service::service::Service) -> anyhow::Result<()> {
    // A stop already under way (StopPending) refuses another stop control.
    if let Err(e) = service.stop()
        && service.query_status()?.current_state != ServiceState::StopPending
    {
        return Err(e).with_context(|| format!("stopping the service {SERVICE_NAME}"));
    }
    wait_for(service, |s| s == ServiceState::Stopped)?;
    Ok(())
}

/// Polls the service's state until `done` says so, for [`WAIT_FOR_STATE`].
fn wait_for(
    service: &windows_service::service::Service,
    done: impl Fn(ServiceState) -> bool,
) -> anyhow::Result<ServiceState> {
    let deadline = Instant::now() + WAIT_FOR_STATE;
    loop {
        let state = service
            .query_status()
            .with_context(|| format!("asking the state of {SERVICE_NAME}"))?
            .current_state;
        if done(state) {
            return Ok(state);
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "the service {SERVICE_NAME} is still {state:?} after {} s",
                WAIT_FOR_STATE.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn manager(access: ServiceManagerAccess) -> anyhow::Result<ServiceManager> {
    ServiceManager::local_computer(None::<&str>, access)
        .context("connecting to the service control manager (run as Administrator)")
}

fn open(access: ServiceAccess) -> anyhow::Result<windows_service::service::Service> {
    let manager = manager(ServiceManagerAccess::CONNECT)?;
    manager.open_service(SERVICE_NAME, access).map_err(|e| {
        if is_missing(&e) {
            anyhow::anyhow!(
                "the service {SERVICE_NAME} is not installed: run `kiroku-agent service install`"
            )
        } else {
            anyhow::Error::new(e).context(format!("opening the service {SERVICE_NAME}"))
        }
    })
}

fn is_missing(e: &windows_service::Error) -> bool {
    matches!(e, windows_service::Error::Winapi(io)
        if io.raw_os_error() == Some(ERROR_SERVICE_DOES_NOT_EXIST))
}
