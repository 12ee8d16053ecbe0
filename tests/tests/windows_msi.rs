//! The MSI (issue 22, `packaging/windows/`): built with wixl by
//! `build-msi.sh` from the debug exe, installed, upgraded and removed with
//! Wine's `msiexec /qn` in the shared Wine prefix.
//!
//! What runs here: the files land in Program Files; the msiexec
//! properties reach `C:\ProgramData\Kiroku\agent.toml` through the
//! `config write` custom action (run by Wine's msiexec as on Windows) and
//! the installed exe accepts the result (`--check`); the service is
//! registered with the SCM (Wine's registry); an upgrade keeps the
//! configuration and the buffer and leaves one product; a configuration the
//! agent would refuse fails the install and leaves nothing installed;
//! uninstall removes the exe and the service and keeps ProgramData.
//! Windows Installer's own rules (signature checks, UAC, GPO assignment)
//! are not Wine's: those need a real Windows machine.
//!
//! The exe needs the test-only ProcessPrng shim under Wine (see
//! `tests/src/wine.rs`); the installed copy in Program Files finds it in
//! the prefix's system32, where this test puts it — the MSI itself
//! carries no shim.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, bail};
use kiroku_proto::SearchRequest;
use kiroku_tests::wine::{TARGET, Wine, win_path};
use kiroku_tests::{Env, free_port, send_mail};

/// msiexec runs one installation at a time per prefix: the tests take
/// turns.
static PREFIX: Mutex<()> = Mutex::new(());

const CONFIG: &str = "drive_c/ProgramData/Kiroku/agent.toml";
const EXE: &str = "drive_c/Program Files/Kiroku/kiroku-agent.exe";
const SERVICE_KEY: &str = r"HKLM\System\CurrentControlSet\Services\KirokuAgent";
const UNINSTALL_KEY: &str = r"HKLM\Software\Microsoft\Windows\CurrentVersion\Uninstall";

fn wine_or_skip(test: &str) -> Option<&'static Wine> {
    match Wine::get() {
        Ok(w) if which("wixl") && which("msibuild") => Some(w),
        Ok(_) => {
            kiroku_tests::skip(
                test,
                "wixl or msibuild missing: apt-get install wixl msitools",
            );
            None
        }
        Err(why) => {
            kiroku_tests::skip(test, &why);
            None
        }
    }
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// The repository root (tests/ is one level down).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_owned)
        .unwrap_or_default()
}

/// Builds the MSI of `version` from the debug exe into `out`, with
/// `baked` properties (`--property`).
fn build_msi(wine: &Wine, version: &str, out: &Path, baked: &[&str]) -> anyhow::Result<PathBuf> {
    let exe = wine
        .bin_dir
        .parent()
        .and_then(Path::parent)
        .map(|target| target.join(TARGET).join("debug").join("kiroku-agent.exe"))
        .context("target dir")?;
    let o = Command::new(root().join("packaging/windows/build-msi.sh"))
        .arg("--exe")
        .arg(&exe)
        .args(["--version", version, "--out"])
        .arg(out)
        .args(baked.iter().flat_map(|p| ["--property", p]))
        // As given, so the installed exe can be compared byte for byte
        // (the stripping is checked by `msi_and_exe_are_signed`).
        .env("KIROKU_MSI_NO_STRIP", "1")
        .output()?;
    if !o.status.success() {
        bail!(
            "build-msi.sh failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let msi = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    anyhow::ensure!(
        msi.ends_with(format!("kiroku-agent-{version}-x64.msi")) && msi.is_file(),
        "build-msi.sh printed {msi:?}"
    );
    Ok(msi)
}

/// Runs a Windows built-in (`msiexec`, `reg`) in the prefix; (exit code,
/// stdout).
fn builtin(wine: &Wine, program: &str, args: &[&str]) -> anyhow::Result<(i32, String)> {
    let mut c = wine.command(Path::new(program));
    c.args(args);
    let out = output_timeout(c, Duration::from_secs(120))?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

/// `msiexec /qn` with a verbose log next to the MSI; fails with the log's
/// error lines unless the exit code is `want_ok`'s.
fn msiexec(wine: &Wine, op: &str, msi: &Path, props: &[String]) -> anyhow::Result<i32> {
    let log = msi.with_extension(format!("{}.log", op.trim_start_matches('/')));
    let mut args = vec![
        op.to_owned(),
        win_path(msi),
        "/qn".to_owned(),
        "/l*v".to_owned(),
        win_path(&log),
    ];
    args.extend(props.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _) = builtin(wine, "msiexec", &args)?;
    Ok(code)
}

/// Runs `c` to its end, killing it after `limit`. Output is read until
/// the program has exited and then for at most two more seconds: the
/// first Wine program of a prefix starts `wineserver` and `explorer.exe`,
/// which inherit its stdout and hold the pipe open as long as the prefix
/// lives.
fn output_timeout(mut c: Command, limit: Duration) -> anyhow::Result<std::process::Output> {
    use std::io::Read as _;
    use std::process::Stdio;
    use std::sync::{Arc, Mutex as StdMutex};
    type Sink = Arc<StdMutex<(Vec<u8>, bool)>>;
    let mut child = c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let read = |mut r: Box<dyn std::io::Read + Send>| -> Sink {
        let sink: Sink = Arc::default();
        let to = sink.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                let n = r.read(&mut buf).unwrap_or(0);
                let mut s = to.lock().unwrap_or_else(|e| e.into_inner());
                if n == 0 {
                    s.1 = true;
                    return;
                }
                s.0.extend_from_slice(&buf[..n]);
            }
        });
        sink
    };
    let out = child.stdout.take().map(|o| read(Box::new(o)));
    let err = child.stderr.take().map(|e| read(Box::new(e)));
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{c:?} did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let grace = std::time::Instant::now() + Duration::from_secs(2);
    let take = |sink: Option<Sink>| {
        let Some(sink) = sink else {
            return Vec::new();
        };
        loop {
            let s = sink.lock().unwrap_or_else(|e| e.into_inner());
            if s.1 || std::time::Instant::now() > grace {
                return s.0.clone();
            }
            drop(s);
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    Ok(std::process::Output {
        status,
        stdout: take(out),
        stderr: take(err),
    })
}

fn reg_query(wine: &Wine, key: &str) -> anyhow::Result<Option<String>> {
    let (code, out) = builtin(wine, "reg", &["query", key, "/s"])?;
    Ok((code == 0).then_some(out))
}

/// The Kiroku Agent products under the Uninstall key: (product code,
/// DisplayVersion), one per installed product.
fn installed_products(wine: &Wine) -> anyhow::Result<Vec<(String, String)>> {
    let all = reg_query(wine, UNINSTALL_KEY)?.unwrap_or_default();
    let mut products = Vec::new();
    let (mut code, mut name, mut version) = (String::new(), false, String::new());
    for line in all.lines().chain(std::iter::once("HKEY_END")) {
        if line.starts_with("HKEY_") {
            if name {
                products.push((code.clone(), version.clone()));
            }
            code = line.rsplit('\\').next().unwrap_or_default().to_owned();
            (name, version) = (false, String::new());
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["DisplayName", "REG_SZ", "Kiroku", "Agent"] => name = true,
            ["DisplayVersion", "REG_SZ", v] => version = (*v).to_owned(),
            _ => {}
        }
    }
    products.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(products)
}

fn installed_versions(wine: &Wine) -> anyhow::Result<Vec<String>> {
    Ok(installed_products(wine)?.into_iter().map(|p| p.1).collect())
}

/// Leaves the prefix without a Kiroku install (whatever a previous run
/// that failed half-way left, every product code of it).
fn clean(wine: &Wine) -> anyhow::Result<()> {
    for (code, _) in installed_products(wine)? {
        builtin(wine, "msiexec", &["/x", &code, "/qn"])?;
    }
    let data = wine.prefix.join("drive_c/ProgramData/Kiroku");
    if data.exists() {
        std::fs::remove_dir_all(&data)?;
    }
    Ok(())
}

/// The test-only shim where every exe of the prefix finds it.
fn shim_in_system32(wine: &Wine) -> anyhow::Result<()> {
    let to = wine
        .prefix
        .join("drive_c/windows/system32/bcryptprimitives.dll");
    if !to.exists() {
        std::fs::copy(wine.bin_dir.join("bcryptprimitives.dll"), &to)
            .with_context(|| format!("copying the shim to {}", to.display()))?;
    }
    Ok(())
}

fn props(pairs: &[(&str, &str)]) -> Vec<String> {
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

#[test]
fn msi_installs_upgrades_and_uninstalls() -> anyhow::Result<()> {
    let Some(wine) = wine_or_skip("msi_installs_upgrades_and_uninstalls") else {
        return Ok(());
    };
    let _turn = PREFIX.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::Builder::new().prefix("kiroku-msi-").tempdir()?;
    // v1 carries the mail server as a built-in default (what a Group
    // Policy assignment, which passes no properties, would use).
    let v1 = build_msi(
        wine,
        "0.1.0",
        &tmp.path().join("v1"),
        &["SMTP_UPSTREAM=smtp.example.co.jp:587"],
    )?;
    let v2 = build_msi(wine, "0.1.1", &tmp.path().join("v2"), &[])?;
    shim_in_system32(wine)?;
    let _kill = WineServerKill(wine);
    clean(wine)?;

    // Install with the properties of a silent deployment; the service is
    // registered but not started (START_SERVICE=0; the start is
    // msi_service_runs_and_ships_mail's).
    let code = msiexec(
        wine,
        "/i",
        &v1,
        &props(&[
            ("COLLECTOR", "https://collector.example.co.jp:7443"),
            ("CA_FILE", r"C:\Kiroku certs\ca.pem"),
            ("CERT_FILE", r"C:\Kiroku certs\pc-0001.pem"),
            ("KEY_FILE", r"C:\Kiroku certs\pc-0001.key"),
            ("SMTP_LISTEN", "127.0.0.1:2525,127.0.0.1:587"),
            ("START_SERVICE", "0"),
        ]),
    )?;
    assert_eq!(code, 0, "msiexec /i {}", v1.display());
    let exe = wine.prefix.join(EXE);
    let built = std::fs::read(
        wine.bin_dir
            .parent()
            .context("bin")?
            .parent()
            .context("t")?
            .join(TARGET)
            .join("debug")
            .join("kiroku-agent.exe"),
    )?;
    assert_eq!(
        std::fs::read(&exe)?,
        built,
        "the installed exe is the built one"
    );

    let config = wine.prefix.join(CONFIG);
    let text = std::fs::read_to_string(&config)
        .with_context(|| format!("{} after the install", config.display()))?;
    for want in [
        r#"endpoint = "https://collector.example.co.jp:7443""#,
        r#"ca = 'C:\Kiroku certs\ca.pem'"#,
        r#"cert = 'C:\Kiroku certs\pc-0001.pem'"#,
        r#"key = 'C:\Kiroku certs\pc-0001.key'"#,
        r#"listen = ["127.0.0.1:2525", "127.0.0.1:587"]"#,
        r#"upstream = "smtp.example.co.jp:587""#,
        r#"mode = "relay""#,
        r#"data_dir = 'C:\ProgramData\Kiroku\agent'"#,
    ] {
        assert!(text.contains(want), "{want} not in agent.toml:\n{text}");
    }
    // The installed agent reads it (as the service will).
    let check = output_timeout(
        {
            let mut c = wine.command(&exe);
            c.args(["--config", r"C:\ProgramData\Kiroku\agent.toml", "--check"]);
            c
        },
        Duration::from_secs(60),
    )?;
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success() && said.contains("agent.toml: configuration"),
        "--check: {said}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // The service is registered, automatic, with the config's path.
    let service = reg_query(wine, SERVICE_KEY)?.context("the KirokuAgent service key")?;
    assert!(
        service.contains(r"C:\Program Files\Kiroku\kiroku-agent.exe")
            && service.contains(r"service run --config")
            && service.contains(r"C:\ProgramData\Kiroku\agent.toml"),
        "{service}"
    );
    assert!(
        service
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["Start", "REG_DWORD", "0x2"]),
        "auto start: {service}"
    );
    assert_eq!(installed_versions(wine)?, ["0.1.0"]);

    // The buffer and an administrator's edit survive an upgrade without
    // properties.
    let buffer = wine.prefix.join("drive_c/ProgramData/Kiroku/agent/marker");
    std::fs::create_dir_all(buffer.parent().context("dir")?)?;
    std::fs::write(&buffer, b"buffered events")?;
    let edited = format!("{text}\n[custom]\nsite = \"tokyo-hq\"\n");
    std::fs::write(&config, &edited)?;
    let code = msiexec(wine, "/i", &v2, &props(&[("START_SERVICE", "0")]))?;
    assert_eq!(code, 0, "msiexec /i {} (upgrade)", v2.display());
    assert_eq!(
        installed_versions(wine)?,
        ["0.1.1"],
        "one product after the upgrade"
    );
    assert!(exe.is_file(), "the exe after the upgrade");
    assert!(
        reg_query(wine, SERVICE_KEY)?.is_some(),
        "the service after the upgrade"
    );
    assert_eq!(std::fs::read_to_string(&config)?, edited);
    assert_eq!(std::fs::read(&buffer)?, b"buffered events");

    // An upgrade with a property changes that setting only.
    let code = msiexec(
        wine,
        "/i",
        &v2,
        &props(&[
            ("COLLECTOR", "https://new.example.co.jp:7443"),
            ("START_SERVICE", "0"),
        ]),
    )?;
    assert_eq!(code, 0, "msiexec /i {} (reinstall)", v2.display());
    let now = std::fs::read_to_string(&config)?;
    assert!(
        now.contains("https://new.example.co.jp:7443") && now.contains("tokyo-hq"),
        "{now}"
    );

    // Uninstall: the exe and the service go, ProgramData stays.
    let code = msiexec(wine, "/x", &v2, &[])?;
    assert_eq!(code, 0, "msiexec /x");
    assert!(!exe.exists(), "the exe after uninstall");
    assert!(
        reg_query(wine, SERVICE_KEY)?.is_none(),
        "the service after uninstall"
    );
    assert!(installed_versions(wine)?.is_empty());
    assert!(config.is_file() && buffer.is_file(), "ProgramData is kept");

    // A configuration the agent would refuse (relay mode without a mail
    // server) fails the install, and nothing is left installed.
    clean(wine)?;
    let code = msiexec(
        wine,
        "/i",
        &v2,
        &props(&[
            ("COLLECTOR", "https://c.example:7443"),
            ("START_SERVICE", "0"),
        ]),
    )?;
    assert_ne!(code, 0, "an install without SMTP_UPSTREAM must fail");
    assert!(!exe.exists(), "rolled back");
    assert!(!config.exists(), "no half-written configuration");
    // The reason, where the README sends the administrator.
    let why = std::fs::read_to_string(
        wine.prefix
            .join("drive_c/ProgramData/Kiroku/logs/config-write.log"),
    )?;
    assert!(
        why.contains("smtp.upstream") && why.contains("SMTP_UPSTREAM"),
        "{why}"
    );
    assert!(installed_versions(wine)?.is_empty());
    clean(wine)?;
    Ok(())
}

/// Ends every Wine process of the prefix at the end of a test (a service
/// left running by a failed assertion included): only this test binary
/// uses the prefix while it holds [`PREFIX`].
struct WineServerKill<'a>(&'a Wine);

impl Drop for WineServerKill<'_> {
    fn drop(&mut self) {
        let _ = Command::new("wineserver")
            .arg("-k")
            .env("WINEPREFIX", &self.0.prefix)
            .status();
    }
}

/// What the service and msiexec said, for a failure message.
fn service_diagnostics(wine: &Wine, msi: &Path) -> String {
    let mut out = String::new();
    let logs = wine.prefix.join("drive_c/ProgramData/Kiroku/logs");
    for entry in std::fs::read_dir(&logs).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        out += &format!("--- {}:\n{text}\n", entry.path().display());
    }
    if let Ok(Some(key)) = reg_query(wine, SERVICE_KEY) {
        out += &format!("--- {SERVICE_KEY}:\n{key}\n");
    }
    let log = msi.with_extension("i.log");
    let text = std::fs::read(&log).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Service") || l.contains("rror"))
        .collect();
    out += &format!(
        "--- {} (service and error lines):\n{}\n",
        log.display(),
        lines.join("\n")
    );
    let config = wine.prefix.join(CONFIG);
    out += &format!(
        "--- agent.toml:\n{}",
        std::fs::read_to_string(config).unwrap_or_default()
    );
    out
}

/// The command lines of this machine's processes (a Windows program under
/// Wine shows its Windows command line).
fn linux_processes() -> Vec<String> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(raw) = std::fs::read(entry.path().join("cmdline")) {
            let line = String::from_utf8_lossy(&raw).replace('\0', " ");
            all.push(line.trim().to_owned());
        }
    }
    all
}

/// A `cmd.exe` in the prefix waiting on its input (see
/// msi_service_runs_and_ships_mail); killed when dropped.
struct Keeper(std::process::Child);

impl Keeper {
    fn start(wine: &Wine) -> anyhow::Result<Keeper> {
        let mut c = wine.command(Path::new("cmd.exe"));
        c.arg("/k")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        Ok(Keeper(c.spawn()?))
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn listening(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    )
    .is_ok()
}

fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + within;
    while !cond() {
        if std::time::Instant::now() > deadline {
            bail!("{what}: not within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(())
}

/// The service the MSI registers and starts (START_SERVICE defaults to 1)
/// runs the agent from the configuration the properties wrote: it listens,
/// a mail sent to it reaches a Linux collector over mTLS, it logs to
/// ProgramData; uninstall stops it.
#[test]
fn msi_service_runs_and_ships_mail() -> anyhow::Result<()> {
    let Some(wine) = wine_or_skip("msi_service_runs_and_ships_mail") else {
        return Ok(());
    };
    let _turn = PREFIX.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::Builder::new().prefix("kiroku-msi-").tempdir()?;
    let msi = build_msi(wine, "0.1.0", tmp.path(), &[])?;
    shim_in_system32(wine)?;
    let _kill = WineServerKill(wine);
    clean(wine)?;

    // Under Wine a service lives only while an ordinary program runs in
    // the prefix (when the last one exits, wineserver ends services.exe and
    // its services with it, ~3 s later): a console waiting on its input
    // keeps the prefix up, as a logged-on session does on Windows.
    let _session = Keeper::start(wine)?;
    let env = Env::new()?;
    let _collector = env.start_collector()?;
    let (cert, key) = env.issue("agent", "pc-msi", &[])?;
    let smtp = free_port();
    let code = msiexec(
        wine,
        "/i",
        &msi,
        &props(&[
            ("COLLECTOR", &format!("https://127.0.0.1:{}", env.grpc)),
            ("SERVER_NAME", "localhost"),
            ("CA_FILE", &win_path(&env.pki().join("ca.pem"))),
            ("CERT_FILE", &win_path(&cert)),
            ("KEY_FILE", &win_path(&key)),
            ("SMTP_LISTEN", &format!("127.0.0.1:{smtp}")),
            ("SMTP_MODE", "capture-only"),
        ]),
    )?;
    assert_eq!(code, 0, "msiexec /i {}", msi.display());
    if let Err(e) = wait_until("the service's SMTP port", Duration::from_secs(90), || {
        listening(smtp)
    }) {
        bail!("{e}\n{}", service_diagnostics(wine, &msi));
    }

    let raw = b"From: msi@example.com\r\nTo: bob@example.org\r\nSubject: installed by msiexec\r\n\r\nhello\r\n";
    let sent = send_mail(smtp, "msi@example.com", &["bob@example.org"], raw)?;
    assert_eq!(sent.code, 250, "{sent:?}");
    let events = tokio::runtime::Runtime::new()?.block_on(env.wait_for(
        SearchRequest {
            sender: "msi@example.com".into(),
            ..Default::default()
        },
        1,
        Duration::from_secs(60),
    ))?;
    assert_eq!(events.len(), 1);
    // It is the service the MSI registered (the SCM's command line), not a
    // console agent.
    let service = format!(
        r"{} service run --config C:\ProgramData\Kiroku\agent.toml",
        r"C:\Program Files\Kiroku\kiroku-agent.exe"
    );
    // It logs where the README says (host's service, ProgramData\Kiroku\logs).
    let logs = wine.prefix.join("drive_c/ProgramData/Kiroku/logs");
    let logged = std::fs::read_dir(&logs)
        .with_context(|| logs.display().to_string())?
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().starts_with("kiroku-agent."));
    assert!(logged, "no kiroku-agent.<date>.log in {}", logs.display());
    assert!(
        linux_processes().contains(&service),
        "no process {service:?} among {:?}",
        linux_processes()
    );

    let code = msiexec(wine, "/x", &msi, &[])?;
    assert_eq!(code, 0, "msiexec /x");
    wait_until("the service stopped", Duration::from_secs(30), || {
        !listening(smtp)
    })?;
    assert!(!wine.prefix.join(EXE).exists());
    assert!(reg_query(wine, SERVICE_KEY)?.is_none());
    clean(wine)?;
    Ok(())
}

/// `build-msi.sh` signs the exe before packaging it and the MSI after
/// (osslsigncode, a throw-away code-signing certificate): both signatures
/// verify against it. No Wine needed.
#[test]
fn msi_and_exe_are_signed() -> anyhow::Result<()> {
    let test = "msi_and_exe_are_signed";
    if !(which("wixl")
        && which("msibuild")
        && which("msiextract")
        && which("osslsigncode")
        && which("openssl"))
    {
        kiroku_tests::skip(
            test,
            "wixl, msitools, osslsigncode or openssl missing: apt-get install wixl msitools osslsigncode",
        );
        return Ok(());
    }
    let exe = root()
        .join("target")
        .join(TARGET)
        .join("debug")
        .join("kiroku-agent.exe");
    if !exe.is_file() {
        kiroku_tests::skip(
            test,
            &format!(
                "{} is missing: cargo build --target {TARGET} -p kiroku-agent",
                exe.display()
            ),
        );
        return Ok(());
    }
    let tmp = tempfile::Builder::new().prefix("kiroku-sign-").tempdir()?;
    let d = tmp.path();
    let run = |c: &mut Command| -> anyhow::Result<String> {
        let o = c.current_dir(d).output()?;
        anyhow::ensure!(
            o.status.success(),
            "{c:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    };
    run(Command::new("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "cs.key",
        "-out",
        "cs.pem",
        "-days",
        "2",
        "-subj",
        "/CN=Kiroku test code signing",
        "-addext",
        "extendedKeyUsage=codeSigning",
    ]))?;
    std::fs::write(d.join("cs.pass"), "test-pass\n")?;
    run(Command::new("openssl").args([
        "pkcs12",
        "-export",
        "-inkey",
        "cs.key",
        "-in",
        "cs.pem",
        "-out",
        "cs.p12",
        "-passout",
        "file:cs.pass",
    ]))?;
    let out = run(Command::new(root().join("packaging/windows/build-msi.sh"))
        .arg("--exe")
        .arg(&exe)
        .args(["--out", "out"])
        .env("KIROKU_SIGN_PKCS12", d.join("cs.p12"))
        .env("KIROKU_SIGN_PASS_FILE", d.join("cs.pass")))?;
    let msi = PathBuf::from(out.trim());
    run(Command::new("msiextract").arg("-C").arg("x").arg(&msi))?;
    let packaged = d.join("x/Kiroku/kiroku-agent.exe");
    assert!(
        std::fs::metadata(&packaged)?.len() < std::fs::metadata(&exe)?.len(),
        "the packaged exe is stripped of its debug sections"
    );
    for signed in [msi.clone(), packaged] {
        let said = run(Command::new("osslsigncode")
            .args(["verify", "-CAfile", "cs.pem", "-in"])
            .arg(&signed))?;
        assert!(
            said.contains("Signature verification: ok")
                && said.contains("Kiroku test code signing"),
            "{}: {said}",
            signed.display()
        );
    }
    // The unsigned build is not signed (the check can fail).
    let plain = run(Command::new(root().join("packaging/windows/build-msi.sh"))
        .arg("--exe")
        .arg(&exe)
        .args(["--out", "plain"]))?;
    let o = Command::new("osslsigncode")
        .args(["verify", "-CAfile", "cs.pem", "-in", plain.trim()])
        .current_dir(d)
        .output()?;
    assert!(!o.status.success(), "an unsigned MSI verified");
    Ok(())
}
