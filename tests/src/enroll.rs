//! Enrollment helpers (issue 22) shared by `tests/tests/enrollment.rs` and
//! `tests/tests/windows_enroll.rs`: a collector with the agents' issuing
//! CA and an enrollment listener, tokens made with the real CLI, an agent
//! config with a token and no certificate, the admin audit log.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{Env, Proc, free_port};

/// A collector set up for enrollment.
pub struct Enrolling {
    pub collector: Proc,
    /// The enrollment listener's port.
    pub port: u16,
}

/// Creates the agents' issuing CA in the test PKI and starts the collector
/// with it and `[enroll] listen` on a free port, with `envs` (test hooks).
pub fn start_collector(env: &Env, envs: &[(&str, &str)]) -> anyhow::Result<Enrolling> {
    let pki = env.pki();
    let dir = pki.to_str().unwrap_or_default();
    env.kiroku(&["certs", "agents-ca", "--dir", dir])?;
    env.kiroku(&["certs", "revoke", "--dir", dir])?;
    let port = free_port();
    let top = format!("crl = {:?}\n", pki.join("crl.pem"));
    let section = format!(
        "[agents_ca]\ncert = {:?}\nkey = {:?}\ncrl = {:?}\n[enroll]\nlisten = \"127.0.0.1:{port}\"\n",
        pki.join("agents-ca.pem"),
        pki.join("agents-ca.key"),
        pki.join("agents-crl.pem")
    );
    let collector = if envs.is_empty() {
        env.start_collector_full(&top, &section)?
    } else {
        // No root revocation list then (`start_collector_with_env` takes
        // no top-level keys); the agents' list is the one that matters.
        env.start_collector_with_env(&section, envs)?
    };
    wait_tcp(port)?;
    Ok(Enrolling { collector, port })
}

fn wait_tcp(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the enrollment listener on port {port} did not open"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// `kiroku certs enroll-token ARGS` as `admin-boss` (or `cert`): the
/// tokens printed, or the CLI's error.
pub fn tokens(env: &Env, cert: &str, args: &[&str]) -> anyhow::Result<Vec<String>> {
    let mut all = vec!["certs", "enroll-token"];
    all.extend_from_slice(args);
    let (code, out, err) = env.cli_as(cert, &all)?;
    anyhow::ensure!(code == 0, "kiroku certs enroll-token {args:?}: {err}");
    Ok(out.lines().map(str::to_owned).collect())
}

/// The admin entries of the audit log.
pub fn admin_audit(env: &Env) -> anyhow::Result<Vec<serde_json::Value>> {
    let (code, out, err) = env.cli_as(
        "admin-boss",
        &["audit", "--kind", "admin", "--json", "--limit", "1000"],
    )?;
    anyhow::ensure!(code == 0, "kiroku audit: {err}");
    out.lines()
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect::<anyhow::Result<Vec<_>>>()
}

/// The details of the admin audit entries with `call`.
pub fn calls(audit: &[serde_json::Value], call: &str) -> Vec<String> {
    audit
        .iter()
        .filter(|e| e["call"] == call)
        .map(|e| e["detail"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Where an enrolling agent's files go: `<dir>/agent.pem`, `agent.key`.
pub fn agent_files(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("agent.pem"), dir.join("agent.key"))
}

/// The `[collector]` keys of an enrolling agent (inside the section,
/// before `[collector.tls]`).
pub fn collector_keys(token: &str, port: u16, name: Option<&str>) -> String {
    let mut s =
        format!("enroll_token = {token:?}\nenroll_endpoint = \"https://127.0.0.1:{port}\"\n");
    if let Some(n) = name {
        s.push_str(&format!("enroll_name = {n:?}\n"));
    }
    s
}

/// Waits for `p` to exit; its code.
pub fn wait_exit(p: &mut Proc, within: Duration) -> anyhow::Result<i32> {
    let deadline = Instant::now() + within;
    loop {
        if !p.is_running() {
            return Ok(p.exit_code().unwrap_or(-1));
        }
        anyhow::ensure!(Instant::now() < deadline, "still running after {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The identity (role, name) and group of the first certificate in `pem`.
pub fn cert_identity(pem: &Path) -> anyhow::Result<(String, String, Option<String>)> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let der = CertificateDer::pem_file_iter(pem)?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{}: no certificate", pem.display()))??;
    let id = kiroku_common::pki::identity_from_der(der.as_ref())?;
    let group = kiroku_common::pki::group_from_der(der.as_ref())?;
    Ok((id.role.to_string(), id.name, group))
}

/// Writes the config of a Linux agent `tag` that enrolls (`keys`: from
/// [`collector_keys`]) with its files in `<env>/<tag>/`, capture-only on
/// `smtp`, and starts it (not waiting: it may be refused and exit).
pub fn spawn_agent(
    env: &Env,
    tag: &str,
    keys: &str,
    smtp: u16,
    envs: &[(&str, &str)],
) -> anyhow::Result<(Proc, PathBuf)> {
    let dir = env.path().join(tag);
    std::fs::create_dir_all(&dir)?;
    let (cert, key) = agent_files(&dir);
    let cfg = dir.join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = {:?}\n[collector]\nendpoint = \"https://127.0.0.1:{}\"\nserver_name = \"localhost\"\n{keys}[collector.tls]\nca = {:?}\ncert = {cert:?}\nkey = {key:?}\n[smtp]\nlisten = [\"127.0.0.1:{smtp}\"]\nmode = \"capture-only\"\n",
            dir.join("data"),
            env.grpc,
            env.pki().join("ca.pem"),
        ),
    )?;
    let p = Proc::spawn(
        &format!("agent {tag}"),
        std::process::Command::new(crate::bin("kiroku-agent"))
            .arg("--config")
            .arg(&cfg)
            .envs(envs.iter().copied()),
        &dir.join("agent.log"),
    )?;
    Ok((p, dir))
}
