//! The Windows agent under Wine: its host identity record, shipped to a
//! Linux collector, has the Windows facts (computer name as Wine reports
//! it, OS version and build, MachineGuid, interfaces, time zone), and the
//! agent runs as a Windows service: `kiroku-agent service install`,
//! `start` (the service ships its records), `stop` (graceful: the agent's
//! own stop path runs, the process ends), `uninstall` (gone from the SCM,
//! `%ProgramData%\Kiroku` kept) — against Wine's service control manager.
//!
//! What Wine does not show: the ACL on `%ProgramData%\Kiroku` (Wine
//! accepts SetNamedSecurityInfoW but does not enforce ACLs between Linux
//! processes), the restart-on-failure actions (Wine's SCM lacks
//! ChangeServiceConfig2 failure actions: `install` warns), Windows' stop
//! timeout at system shutdown, AD domain membership and more than one
//! logon session. Those need a real Windows PC.
//!
//! Skipped (with the reason, never passed) when Wine or the exe is
//! missing: see `kiroku_tests::wine`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kiroku_proto::{HostIdentity, SearchRequest, event::Kind};
use kiroku_tests::winagent::{WinAgent, stop_windows, wine_pids};
use kiroku_tests::wine::{Wine, win_path};
use kiroku_tests::{Env, Mode, free_port, skip};

/// The service test installs `KirokuAgent` in the shared prefix: the
/// identity test must not run beside it (an installed auto-start service
/// starts with the next Wine session).
static SERIAL: Mutex<()> = Mutex::new(());

fn wine_or_skip(test: &str) -> Option<&'static Wine> {
    match Wine::get() {
        Ok(w) => Some(w),
        Err(why) => {
            skip(test, &why);
            None
        }
    }
}

/// Runs a Windows program of the prefix (`hostname.exe`, `sc.exe`) or the
/// agent with `args`, bounded in time.
fn run(wine: &Wine, exe: &Path, args: &[&str]) -> anyhow::Result<Output> {
    let mut child = wine
        .command(exe)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            anyhow::bail!("{} {args:?} did not finish within 120 s", exe.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(child.wait_with_output()?)
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The identity records (`host_change`) of `agent`, at least `n`.
async fn identities(env: &Env, agent: &str, n: usize) -> anyhow::Result<Vec<HostIdentity>> {
    let req = SearchRequest {
        agent_id: agent.into(),
        kind: "host_change".into(),
        ..Default::default()
    };
    let ev = env.wait_for(req, n, Duration::from_secs(90)).await?;
    Ok(ev
        .into_iter()
        .filter_map(|e| match e.kind {
            Some(Kind::HostChange(h)) => h.identity,
            _ => None,
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn windows_host_identity_has_the_windows_facts() -> anyhow::Result<()> {
    let Some(wine) = wine_or_skip("windows_host_identity_has_the_windows_facts") else {
        return Ok(());
    };
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let env = Env::new()?;
    let _collector = env.start_collector()?;
    let smtp = free_port();
    let mut agent = env.start_windows_agent(wine, "pc-host", smtp, &Mode::CaptureOnly)?;
    let ids = identities(&env, "pc-host", 1).await?;
    let id = ids.first().cloned().unwrap_or_default();
    stop_windows(&mut agent, Duration::from_secs(30));

    // The computer name as Wine reports it to Windows programs.
    let out = run(wine, Path::new("hostname.exe"), &[])?;
    let wine_name = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(!wine_name.is_empty(), "hostname.exe: {}", text(&out));
    assert!(
        id.hostname.eq_ignore_ascii_case(&wine_name),
        "hostname {:?}, Wine says {wine_name:?}: {id:?}",
        id.hostname
    );
    assert!(
        id.fqdn
            .to_lowercase()
            .starts_with(&wine_name.to_lowercase()),
        "{id:?}"
    );
    // OS: "… Windows … (build N)", kernel "10.0.N" from the registry.
    assert!(
        id.os.contains("Windows") && id.os.contains("(build "),
        "{id:?}"
    );
    let kernel: Vec<&str> = id.kernel.split('.').collect();
    assert!(
        kernel.len() >= 3 && kernel.iter().all(|p| p.parse::<u32>().is_ok()),
        "{id:?}"
    );
    assert!(id.os.contains(kernel[2]), "the build is in both: {id:?}");
    // MachineGuid: 8-4-4-4-12 hex digits.
    let groups: Vec<usize> = id.machine_id.split('-').map(str::len).collect();
    assert_eq!(groups, [8, 4, 4, 4, 12], "{id:?}");
    assert!(
        id.machine_id
            .chars()
            .all(|c| c == '-' || c.is_ascii_hexdigit()),
        "{id:?}"
    );
    // Interfaces with addresses (Wine lists the Linux host's).
    assert!(id.interfaces.iter().any(|i| !i.ips.is_empty()), "{id:?}");
    // The zone: an IANA name with the Linux host's offset now.
    let zone =
        kiroku_common::zone::lookup(&id.time_zone).map_err(|e| anyhow::anyhow!("{e}: {id:?}"))?;
    let linux = kiroku_common::zone::lookup(&kiroku_common::zone::system_zone_name())
        .unwrap_or(kiroku_common::zone::TimeZone::UTC);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let offset = |tz| {
        kiroku_common::zone::format_ms(now_ms, tz)
            .rsplit(' ')
            .next()
            .map(str::to_owned)
    };
    assert_eq!(offset(&zone), offset(&linux), "zone {:?}", id.time_zone);
    assert_eq!(id.agent_version, kiroku_common::VERSION, "{id:?}");
    eprintln!("Windows host identity under Wine: {id:#?}");
    Ok(())
}

/// The service's log files in the prefix (name → length), to read only
/// what this test's run added.
fn log_dir(wine: &Wine) -> PathBuf {
    wine.prefix.join("drive_c/ProgramData/Kiroku/logs")
}

fn log_sizes(dir: &Path) -> HashMap<PathBuf, u64> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.path(), e.metadata().ok()?.len())))
        .collect()
}

fn log_since(dir: &Path, before: &HashMap<PathBuf, u64>) -> String {
    let mut files: Vec<PathBuf> = log_sizes(dir).into_keys().collect();
    files.sort();
    files
        .iter()
        .filter_map(|f| {
            let all = std::fs::read(f).ok()?;
            let from = (before.get(f).copied().unwrap_or(0) as usize).min(all.len());
            Some(String::from_utf8_lossy(&all[from..]).into_owned())
        })
        .collect()
}

/// Uninstalls the service whatever happens in the test, so no auto-start
/// service is left in the shared prefix.
struct Installed<'a>(&'a Wine);

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        let _ = run(self.0, &self.0.agent_exe(), &["service", "uninstall"]);
    }
}

/// A Wine program that waits (cmd.exe reading its open stdin), holding
/// the prefix's session open until dropped.
struct Session(std::process::Child);

impl Session {
    fn hold(wine: &Wine) -> anyhow::Result<Session> {
        let child = wine
            .command(Path::new("cmd.exe"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        Ok(Session(child))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while !done() {
        anyhow::ensure!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn windows_service_installs_starts_stops_and_uninstalls() -> anyhow::Result<()> {
    let Some(wine) = wine_or_skip("windows_service_installs_starts_stops_and_uninstalls") else {
        return Ok(());
    };
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let env = Env::new()?;
    let _collector = env.start_collector()?;
    let smtp = free_port();
    let cfg = env.windows_agent_config("pc-svc", smtp, &Mode::CaptureOnly, &WinAgent::default())?;
    // The service starts in C:\windows\system32: an absolute data_dir.
    let toml = std::fs::read_to_string(&cfg)?.replacen(
        "data_dir = \"agent-pc-svc\"",
        &format!(
            "data_dir = {:?}",
            win_path(&env.path().join("agent-pc-svc"))
        ),
        1,
    );
    std::fs::write(&cfg, toml)?;
    let exe = wine.agent_exe();
    let logs = log_dir(wine);
    let before = log_sizes(&logs);

    // Wine boots the prefix (and starts its auto-start services, ours
    // included once installed, as Windows does at boot) whenever a program
    // starts after the session ended (~3 s after the last program): keep
    // one session for the whole test, so each step sees only its own doing.
    let _session = Session::hold(wine)?;
    // A service left by an interrupted run would start with the prefix.
    run(wine, &exe, &["service", "uninstall"])?;
    let out = run(
        wine,
        &exe,
        &["service", "install", "--config", &win_path(&cfg)],
    )?;
    let _installed = Installed(wine);
    assert!(out.status.success(), "install: {}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("service KirokuAgent installed") && said.contains("service run --config"),
        "{said}"
    );
    assert!(logs.is_dir(), "install makes {}", logs.display());
    assert!(
        wine.prefix
            .join("drive_c/ProgramData/Kiroku/agent")
            .is_dir(),
        "install makes the data folder"
    );
    let q = run(wine, Path::new("sc.exe"), &["query", "KirokuAgent"])?;
    assert!(
        String::from_utf8_lossy(&q.stdout).contains("STOPPED"),
        "{}",
        text(&q)
    );
    // Installing again updates the registration (an MSI upgrade does).
    let again = run(
        wine,
        &exe,
        &["service", "install", "--config", &win_path(&cfg)],
    )?;
    assert!(
        again.status.success() && String::from_utf8_lossy(&again.stdout).contains("updated"),
        "{}",
        text(&again)
    );

    let started = Instant::now();
    let out = run(wine, &exe, &["service", "start"])?;
    assert!(
        out.status.success(),
        "start: {}\nservice log:\n{}",
        text(&out),
        log_since(&logs, &before)
    );
    let q = run(wine, Path::new("sc.exe"), &["query", "KirokuAgent"])?;
    assert!(
        String::from_utf8_lossy(&q.stdout).contains("RUNNING"),
        "{}",
        text(&q)
    );
    // The service is the agent: it listens and ships its start record.
    wait_until("the service's SMTP port", Duration::from_secs(60), || {
        std::net::TcpStream::connect(("127.0.0.1", smtp)).is_ok()
    })?;
    let ids = identities(&env, "pc-svc", 1).await?;
    assert!(!ids[0].hostname.is_empty(), "{ids:?}");
    eprintln!("service running and shipping after {:?}", started.elapsed());
    assert!(
        !wine_pids("kiroku-agent.exe").is_empty(),
        "a kiroku-agent.exe process runs"
    );

    let stopping = Instant::now();
    let out = run(wine, &exe, &["service", "stop"])?;
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("stopped"),
        "stop: {}",
        text(&out)
    );
    eprintln!("service stop took {:?}", stopping.elapsed());
    wait_until(
        "the service process to end",
        Duration::from_secs(30),
        || wine_pids("kiroku-agent.exe").is_empty(),
    )?;
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", smtp)).is_err(),
        "the listener is closed"
    );
    // Graceful: the SCM's stop ran the agent's own stop path, in the
    // service's log file under ProgramData.
    let log = log_since(&logs, &before);
    for line in [
        "kiroku-agent",
        "the service control manager asked the agent to stop",
        "kiroku-agent stopping",
    ] {
        assert!(
            log.contains(line),
            "{line:?} not in the service log:\n{log}"
        );
    }
    assert!(!log.contains("ERROR"), "{log}");

    let out = run(wine, &exe, &["service", "uninstall"])?;
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("uninstalled"),
        "uninstall: {}",
        text(&out)
    );
    let q = run(wine, Path::new("sc.exe"), &["query", "KirokuAgent"])?;
    assert!(
        !String::from_utf8_lossy(&q.stdout).contains("KirokuAgent")
            || String::from_utf8_lossy(&q.stdout).contains("1060"),
        "gone: {}",
        text(&q)
    );
    assert!(logs.is_dir(), "uninstall keeps ProgramData\\Kiroku");
    // Uninstalling what is not installed is not an error (MSI repairs).
    let out = run(wine, &exe, &["service", "uninstall"])?;
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("not installed"),
        "{}",
        text(&out)
    );
    Ok(())
}
