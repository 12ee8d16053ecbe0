//! `kiroku quickstart`: everything a first-time user needs in one command.
//! Creates a data directory with a CA and certificates (once), writes
//! configs for a collector, an agent and this CLI, starts the collector and
//! the agent on loopback, and says how to send a mail and find it. Ctrl-C
//! stops both.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use kiroku_common::pki::{PkiDir, Role};
use tokio::process::{Child, Command};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Data directory (PKI, configs, collector store, agent buffer, logs).
    #[arg(long, default_value = "kiroku-data")]
    data_dir: PathBuf,
    /// Relay mail to this upstream MTA (host:port) instead of capture-only.
    #[arg(long)]
    upstream: Option<String>,
    /// SMTP listen address of the agent.
    #[arg(long, default_value = "127.0.0.1:2525")]
    smtp: SocketAddr,
    /// gRPC listen address of the collector.
    #[arg(long, default_value = "127.0.0.1:7443")]
    grpc: SocketAddr,
    /// Agent id (default: this host's name).
    #[arg(long)]
    agent_name: Option<String>,
}

fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.is_empty() {
        "agent-1".into()
    } else {
        name
    }
}

fn issue_once(pki: &PkiDir, role: Role, name: &str, sans: &[String]) -> anyhow::Result<()> {
    if !pki.cert(role, name).exists() {
        pki.issue(role, name, sans, 825)?;
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&a.data_dir)
        .with_context(|| format!("cannot create {}", a.data_dir.display()))?;
    let data = std::fs::canonicalize(&a.data_dir)?;
    let pki = PkiDir::new(data.join("pki"));
    if !pki.ca_cert().exists() {
        pki.init_ca("Kiroku quickstart CA")?;
        println!("created a CA in {}", pki.dir.display());
    }
    // Agents' certificates come from an issuing CA the collector holds
    // (it signs the agents' revocation list when an agent is retired);
    // people's from the root (DESIGN.md, "Certificate custody").
    if !pki.has_agents_ca() {
        pki.init_agents_ca("Kiroku quickstart agents CA", 1825)?;
    }
    let agent = a.agent_name.clone().unwrap_or_else(host_name);
    let collector_sans = vec![
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
        a.grpc.ip().to_string(),
    ];
    issue_once(&pki, Role::Collector, "localhost", &collector_sans)?;
    issue_once(&pki, Role::Agent, &agent, &[])?;
    issue_once(&pki, Role::Investigator, "investigator", &[])?;
    issue_once(&pki, Role::Admin, "admin", &[])?;
    // Checkpoints are signed from the first start (README, "Signed
    // checkpoints of the journal").
    issue_once(&pki, Role::Signer, "localhost", &[])?;

    let endpoint = format!("https://{}", a.grpc);
    let tls = |role: Role, name: &str| {
        format!(
            "[{{section}}]\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
            pki.ca_cert(),
            pki.cert(role, name),
            pki.key(role, name)
        )
    };
    let collector_toml = data.join("collector.toml");
    write(
        &collector_toml,
        &format!(
            "# Written by `kiroku quickstart`.\nlisten = \"{}\"\ndata_dir = {:?}\n\n{}\n[checkpoint]\nsigning_cert = {:?}\nsigning_key = {:?}\n\n[agents_ca]\ncert = {:?}\nkey = {:?}\ncrl = {:?}\n",
            a.grpc,
            data.join("collector"),
            tls(Role::Collector, "localhost").replace("{section}", "tls"),
            pki.cert(Role::Signer, "localhost"),
            pki.key(Role::Signer, "localhost"),
            pki.agents_ca_cert(),
            pki.agents_ca_key(),
            pki.agents_crl(),
        ),
    )?;
    let (mode, upstream) = match &a.upstream {
        Some(u) => ("relay", format!("upstream = {u:?}\n")),
        None => ("capture-only", String::new()),
    };
    let agent_toml = data.join("agent.toml");
    write(
        &agent_toml,
        &format!(
            "# Written by `kiroku quickstart`.\ndata_dir = {:?}\n\n[collector]\nendpoint = \"{endpoint}\"\nserver_name = \"localhost\"\n\n{}\n[smtp]\nlisten = [\"{}\"]\nmode = \"{mode}\"\n{upstream}\n# What this host talks to (README, \"Network activity\").\n[network]\nenabled = true\n",
            data.join("agent"),
            tls(Role::Agent, &agent).replace("{section}", "collector.tls"),
            a.smtp
        ),
    )?;
    let cli_toml = data.join("cli.toml");
    write(
        &cli_toml,
        &format!(
            "# Written by `kiroku quickstart`.\nendpoint = \"{endpoint}\"\nserver_name = \"localhost\"\n\n{}",
            tls(Role::Investigator, "investigator").replace("{section}", "tls")
        ),
    )?;

    let bin_dir = std::env::current_exe()?
        .parent()
        .map(Path::to_path_buf)
        .context("cannot locate the kiroku binaries")?;
    let mut collector = spawn(
        &bin_dir,
        "kiroku-collector",
        &collector_toml,
        &data.join("collector.log"),
    )?;
    wait_ready(
        a.grpc,
        &mut collector,
        "collector",
        &data.join("collector.log"),
    )
    .await?;
    let mut agent_child = spawn(
        &bin_dir,
        "kiroku-agent",
        &agent_toml,
        &data.join("agent.log"),
    )?;
    wait_ready(a.smtp, &mut agent_child, "agent", &data.join("agent.log")).await?;

    let mode_text = match &a.upstream {
        Some(u) => format!("relaying to {u}"),
        None => "capture-only: mail is recorded, not delivered".into(),
    };
    let cli_hint = if Path::new(super::client::DEFAULT_CLI_CONFIG)
        == cli_toml
            .strip_prefix(std::env::current_dir()?)
            .unwrap_or(&cli_toml)
    {
        String::new()
    } else {
        format!(
            "   (outside this directory: export KIROKU_CLI_CONFIG={})\n",
            cli_toml.display()
        )
    };
    println!(
        "\nKiroku is running.\n\
         \x20 SMTP capture  {smtp}  ({mode_text})\n\
         \x20 collector     {endpoint}  (store: {store})\n\
         \x20 logs          {logs}/collector.log, agent.log\n\n\
         Send a test mail through the agent, for example:\n\
         \x20 swaks --server {smtp} --from alice@example.com --to bob@example.org --header 'Subject: hello' --attach /etc/hostname\n\
         \x20 python3 -c \"import smtplib; smtplib.SMTP('{ip}', {port}).sendmail('alice@example.com', ['bob@example.org'], 'Subject: hello\\r\\n\\r\\nhi\\r\\n')\"\n\n\
         Find it and download the original:\n\
         \x20 kiroku search --sender alice@example.com\n\
         \x20 kiroku show EVENT_ID\n\
         \x20 kiroku raw EVENT_ID -o mail.eml\n{cli_hint}\n\
         Press Ctrl-C to stop.",
        smtp = a.smtp,
        ip = a.smtp.ip(),
        port = a.smtp.port(),
        store = data.join("collector").display(),
        logs = data.display(),
    );

    let outcome = tokio::select! {
        _ = kiroku_common::shutdown_signal() => Ok(()),
        s = collector.wait() => Err(anyhow::anyhow!("the collector exited ({s:?}); see {}", data.join("collector.log").display())),
        s = agent_child.wait() => Err(anyhow::anyhow!("the agent exited ({s:?}); see {}", data.join("agent.log").display())),
    };
    println!("stopping…");
    stop(&mut agent_child).await;
    stop(&mut collector).await;
    outcome
}

fn spawn(bin_dir: &Path, name: &str, config: &Path, log: &Path) -> anyhow::Result<Child> {
    let exe = bin_dir.join(name);
    if !exe.exists() {
        anyhow::bail!(
            "{} not found; build every binary first: cargo build --release --workspace",
            exe.display()
        );
    }
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    Command::new(&exe)
        .arg("--config")
        .arg(config)
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))
}

async fn wait_ready(
    addr: SocketAddr,
    child: &mut Child,
    what: &str,
    log: &Path,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait()? {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(10).collect();
            anyhow::bail!(
                "the {what} exited at start ({status}); last lines of {}:\n{}",
                log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(
                "the {what} did not start listening on {addr} within 30 s; see {}",
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// SIGTERM, then SIGKILL after 10 s.
async fn stop(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_ok()
        {
            return;
        }
    }
    let _ = child.kill().await;
}
