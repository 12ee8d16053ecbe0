//! Harness for the end-to-end tests: runs the real `kiroku`,
//! `kiroku-collector` and `kiroku-agent` binaries and real peers (aiosmtpd as
//! upstream, Python smtplib as client, Python grpcio) on free loopback ports
//! in a temp dir. Every process is killed when its guard drops; the temp
//! dir goes with the [`Env`].

pub mod bench;
mod disk;
pub mod enroll;
pub mod faultproxy;
pub mod files;
pub mod journal_edit;
pub mod load;
pub mod mailcorpus;
pub mod mta;
pub mod netgen;
pub mod netns;
pub mod netrec;
mod proc;
pub mod reliability;
pub mod swarm;
// Issue 21: hand-made events shipped as an agent.
pub mod ship;
mod smtp;
pub mod tsa;
pub mod wine;
// Issue 22: the Windows agent under Wine, started like `start_agent`.
pub mod winagent;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::bail;
use kiroku_proto::query_client::QueryClient;
use kiroku_proto::{Event, SearchRequest, event::Kind};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

pub use disk::{TmpfsMount, available, fill_disk, unfill_disk};
pub use proc::{Proc, bind_local, free_port, is_root, run_client};
pub use smtp::{Sent, Talk, Upstream, send_mail};

/// Path of a workspace binary, next to the test executable's `deps/`.
/// `cargo test --workspace` builds them first because the agent and
/// collector packages have integration tests of their own.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run the tests with `cargo test --workspace`",
        p.display()
    );
    p
}

/// Path of a workspace example program (`target/<profile>/examples/`),
/// such as the collector's `bulk_load`; examples are built by `cargo test
/// --workspace` or `cargo build --examples`.
pub fn example_bin(name: &str) -> PathBuf {
    let p = bin_dir().join("examples").join(name);
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo build -p kiroku-collector --example {name}` (add --release for benchmarks)",
        p.display()
    );
    p
}

/// Fails unless the agent under test was built with its test hooks (a
/// test that sets a `KIROKU_TEST_*` knob would otherwise test nothing:
/// production builds ignore them).
pub fn ensure_test_hooks() -> anyhow::Result<()> {
    let out = Command::new(bin("kiroku-agent"))
        .arg("--version")
        .output()?;
    let version = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        version.contains("test hooks"),
        "{} was built without test hooks ({}): run the tests with scripts/test.sh or `cargo test --workspace --features kiroku-agent/test-hooks`",
        bin("kiroku-agent").display(),
        version.trim()
    );
    Ok(())
}

/// Fails unless the collector under test was built with its test hooks
/// (`--features kiroku-collector/test-hooks`; see
/// `collector/src/test_hooks.rs`).
pub fn ensure_collector_test_hooks() -> anyhow::Result<()> {
    let out = Command::new(bin("kiroku-collector"))
        .arg("--version")
        .output()?;
    let version = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        version.contains("test hooks"),
        "{} was built without test hooks ({}): run the tests with scripts/test.sh or `cargo test --workspace --features kiroku-agent/test-hooks,kiroku-collector/test-hooks`",
        bin("kiroku-collector").display(),
        version.trim()
    );
    Ok(())
}

fn bin_dir() -> PathBuf {
    // A benchmark built in release may take the binaries it does not
    // measure (the CLI for the PKI, the collector) from another profile
    // (`scripts/bench-winagent.sh`).
    if let Some(dir) = std::env::var_os("KIROKU_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // Tests run from target/<profile>/deps, harness binaries (benchmarks)
    // from target/<profile>.
    let mut dir = exe.parent().expect("target directory");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("target directory");
    }
    dir.to_owned()
}

/// Directory of test fixtures and peer scripts.
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data")
}

/// Additions to an agent's config and environment.
struct Extra<'a> {
    /// TOML inside `[smtp]`.
    smtp_extra: &'a str,
    /// TOML appended at the end.
    extra: &'a str,
    /// TOML inside `[collector]`.
    collector_extra: &'a str,
    envs: &'a [(&'a str, &'a str)],
    collector_port: u16,
    /// The agent binary (default: this build's `kiroku-agent`).
    program: Option<&'a Path>,
}

impl Extra<'_> {
    fn new(collector_port: u16) -> Extra<'static> {
        Extra {
            smtp_extra: "",
            extra: "",
            collector_extra: "",
            envs: &[],
            collector_port,
            program: None,
        }
    }
}

/// The variable parts of an agent config ([`Env::agent_toml`]).
pub(crate) struct AgentToml<'a> {
    pub collector_port: u16,
    /// TOML inside `[collector]`.
    pub collector_extra: &'a str,
    /// TOML inside `[smtp]`.
    pub smtp_extra: &'a str,
    /// TOML appended at the end.
    pub extra: &'a str,
}

/// What the agent does with mail.
pub enum Mode {
    CaptureOnly,
    Relay(u16),
}

/// A test installation: PKI, collector config, any number of agents.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub grpc: u16,
}

impl Env {
    pub fn new() -> anyhow::Result<Env> {
        let env = Env {
            dir: tempfile::Builder::new().prefix("kiroku-e2e-").tempdir()?,
            grpc: free_port(),
        };
        env.kiroku(&[
            "certs",
            "init",
            "--dir",
            env.pki().to_str().unwrap_or_default(),
        ])?;
        env.issue("collector", "localhost", &["127.0.0.1"])?;
        env.issue("investigator", "inv", &[])?;
        env.issue("admin", "boss", &[])?;
        Ok(env)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn pki(&self) -> PathBuf {
        self.path().join("pki")
    }

    /// Runs the `kiroku` CLI; returns stdout, fails with stderr.
    pub fn kiroku(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(bin("kiroku"))
            .args(args)
            .current_dir(self.path())
            .output()?;
        if !out.status.success() {
            bail!(
                "kiroku {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs the `kiroku` CLI against this collector with the certificate
    /// `pki/<cert>.pem` (e.g. `admin-boss`), failing or not; returns (exit
    /// code, stdout, stderr).
    pub fn cli_as(&self, cert: &str, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
        let cfg = self.path().join(format!("kiroku-{cert}.toml"));
        if !cfg.exists() {
            std::fs::write(
                &cfg,
                format!(
                    "endpoint = \"https://127.0.0.1:{}\"\nserver_name = \"localhost\"\n[tls]\nca = \"pki/ca.pem\"\ncert = \"pki/{cert}.pem\"\nkey = \"pki/{cert}.key\"\n",
                    self.grpc
                ),
            )?;
        }
        let out = Command::new(bin("kiroku"))
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .current_dir(self.path())
            .output()?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Runs the `kiroku` CLI against this collector as the investigator.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let cfg = self.path().join("kiroku-cli.toml");
        if !cfg.exists() {
            std::fs::write(
                &cfg,
                format!(
                    "endpoint = \"https://127.0.0.1:{}\"\nserver_name = \"localhost\"\n[tls]\nca = \"pki/ca.pem\"\ncert = \"pki/investigator-inv.pem\"\nkey = \"pki/investigator-inv.key\"\n",
                    self.grpc
                ),
            )?;
        }
        let cfg = cfg.to_string_lossy().into_owned();
        let mut all = vec!["--config", cfg.as_str()];
        all.extend_from_slice(args);
        self.kiroku(&all)
    }

    pub fn issue(
        &self,
        role: &str,
        name: &str,
        sans: &[&str],
    ) -> anyhow::Result<(PathBuf, PathBuf)> {
        let pki = self.pki();
        let mut args = vec![
            "certs",
            "issue",
            "--dir",
            pki.to_str().unwrap_or_default(),
            "--role",
            role,
            "--name",
            name,
        ];
        for s in sans {
            args.extend(["--san", s]);
        }
        self.kiroku(&args)?;
        Ok((
            pki.join(format!("{role}-{name}.pem")),
            pki.join(format!("{role}-{name}.key")),
        ))
    }

    /// The certificate of `role`/`name`, issued on first use (a test that
    /// acts as one identity over several connections).
    pub fn identity(&self, role: &str, name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        let pki = self.pki();
        let (cert, key) = (
            pki.join(format!("{role}-{name}.pem")),
            pki.join(format!("{role}-{name}.key")),
        );
        if cert.exists() && key.exists() {
            return Ok((cert, key));
        }
        self.issue(role, name, &[])
    }

    pub fn start_collector(&self) -> anyhow::Result<Proc> {
        self.start_collector_with("")
    }

    /// Like [`Env::start_collector`], with extra TOML appended to the
    /// collector config (e.g. an `[alerts]` section).
    pub fn start_collector_with(&self, extra: &str) -> anyhow::Result<Proc> {
        self.start_collector_full("", extra)
    }

    /// Like [`Env::start_collector_with`] with environment variables (test
    /// hooks such as `KIROKU_TEST_FAIL_ANALYSIS_COMMITS`).
    pub fn start_collector_with_env(
        &self,
        extra: &str,
        envs: &[(&str, &str)],
    ) -> anyhow::Result<Proc> {
        self.start_collector_in(Path::new("collector"), "", extra, None, envs)
    }

    /// Like [`Env::start_collector`], with top-level keys (`crl = ...`).
    pub fn start_collector_top(&self, top: &str) -> anyhow::Result<Proc> {
        self.start_collector_full(top, "")
    }

    /// Like [`Env::start_collector`], on an existing data directory (the
    /// query benchmark's bulk-loaded one), optionally another build of the
    /// collector (to compare before and after a change).
    pub fn start_collector_on(&self, data_dir: &Path, exe: Option<&Path>) -> anyhow::Result<Proc> {
        self.start_collector_in(data_dir, "", "", exe, &[])
    }

    /// Like [`Env::start_collector_on`] with environment variables (test
    /// hooks such as `KIROKU_TEST_REBUILD_DELAY_MS`).
    pub fn start_collector_on_env(
        &self,
        data_dir: &Path,
        envs: &[(&str, &str)],
    ) -> anyhow::Result<Proc> {
        self.start_collector_in(data_dir, "", "", None, envs)
    }

    /// With top-level keys (`crl = ...`) and extra sections alike.
    pub fn start_collector_full(&self, top: &str, extra: &str) -> anyhow::Result<Proc> {
        self.start_collector_in(Path::new("collector"), top, extra, None, &[])
    }

    fn start_collector_in(
        &self,
        data_dir: &Path,
        top: &str,
        extra: &str,
        exe: Option<&Path>,
        envs: &[(&str, &str)],
    ) -> anyhow::Result<Proc> {
        let pki = self.pki();
        let cfg = self.path().join("collector.toml");
        // The maintenance window is daily (default 03:00-06:00 in the host's
        // zone), so a suite run at that hour would see runs and their
        // summaries in every test: unless a test sets its own, the window
        // opens twelve hours from now.
        let extra = if extra.contains("[maintenance]") {
            extra.to_owned()
        } else {
            let hour = (kiroku_common::now_ms().rem_euclid(86_400_000) / 3_600_000 + 12) % 24;
            format!(
                "{extra}\n[maintenance]\nstart = \"{hour:02}:00\"\nend = \"{hour:02}:30\"\ntime_zone = \"UTC\"\n"
            )
        };
        std::fs::write(
            &cfg,
            format!(
                "listen = \"127.0.0.1:{}\"\ndata_dir = {:?}\n{top}\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n{extra}",
                self.grpc,
                data_dir,
                pki.join("ca.pem"),
                pki.join("collector-localhost.pem"),
                pki.join("collector-localhost.key"),
            ),
        )?;
        let mut p = Proc::spawn(
            "collector",
            Command::new(
                exe.map(Path::to_path_buf)
                    .unwrap_or_else(|| bin("kiroku-collector")),
            )
            .arg("--config")
            .arg(&cfg)
            .envs(envs.iter().copied()),
            &self.path().join("collector.log"),
        )?;
        p.wait_port(self.grpc)?;
        Ok(p)
    }

    /// Writes the agent's config (issuing its certificate once) and starts
    /// it. Waits for the SMTP port only: the collector may be down.
    pub fn start_agent(&self, name: &str, smtp: u16, mode: &Mode) -> anyhow::Result<Proc> {
        self.start_agent_with(name, smtp, mode, "")
    }

    /// Like [`Env::start_agent`], with extra TOML appended to the config.
    pub fn start_agent_with(
        &self,
        name: &str,
        smtp: u16,
        mode: &Mode,
        extra: &str,
    ) -> anyhow::Result<Proc> {
        self.start_agent_full(name, smtp, mode, "", extra)
    }

    /// Capture-only agent with `extra` TOML and environment variables
    /// (test hooks such as `KIROKU_TEST_FILES_PAUSE`).
    pub fn start_agent_with_env(
        &self,
        name: &str,
        smtp: u16,
        extra: &str,
        envs: &[(&str, &str)],
    ) -> anyhow::Result<Proc> {
        self.start_agent_envs(
            name,
            smtp,
            &Mode::CaptureOnly,
            Extra {
                extra,
                envs,
                ..Extra::new(self.grpc)
            },
        )
    }

    /// Like [`Env::start_agent`], with `smtp_extra` TOML inside `[smtp]`.
    pub fn start_agent_in_smtp(
        &self,
        name: &str,
        smtp: u16,
        mode: &Mode,
        smtp_extra: &str,
    ) -> anyhow::Result<Proc> {
        self.start_agent_full(name, smtp, mode, smtp_extra, "")
    }

    /// Like [`Env::start_agent`], with extra environment variables.
    pub fn start_agent_env(
        &self,
        name: &str,
        smtp: u16,
        mode: &Mode,
        envs: &[(&str, &str)],
    ) -> anyhow::Result<Proc> {
        self.start_agent_envs(
            name,
            smtp,
            mode,
            Extra {
                envs,
                ..Extra::new(self.grpc)
            },
        )
    }

    /// Like [`Env::start_agent`], shipping to 127.0.0.1:`collector_port`
    /// (e.g. a fault proxy in front of the collector).
    pub fn start_agent_via(
        &self,
        name: &str,
        smtp: u16,
        mode: &Mode,
        collector_port: u16,
    ) -> anyhow::Result<Proc> {
        self.start_agent_envs(name, smtp, mode, Extra::new(collector_port))
    }

    /// Like [`Env::start_agent_via`], with TOML added inside `[collector]`
    /// and at the end of the config.
    pub fn start_agent_via_with(
        &self,
        name: &str,
        smtp: u16,
        mode: &Mode,
        collector_port: u16,
        collector_extra: &str,
        extra: &str,
    ) -> anyhow::Result<Proc> {
        self.start_agent_envs(
            name,
            smtp,
            mode,
            Extra {
                collector_extra,
                extra,
                ..Extra::new(collector_port)
            },
        )
    }

    fn start_agent_full(
        &self,
        name: &str,
        smtp: u16,
        mode: &Mode,
        smtp_extra: &str,
        extra: &str,
    ) -> anyhow::Result<Proc> {
        self.start_agent_envs(
            name,
            smtp,
            mode,
            Extra {
                smtp_extra,
                extra,
                ..Extra::new(self.grpc)
            },
        )
    }

    /// Like [`Env::start_agent_in_smtp`], running the agent binary at
    /// `program` (benchmarks compare two builds side by side).
    pub fn start_agent_program(
        &self,
        program: &Path,
        name: &str,
        smtp: u16,
        mode: &Mode,
        smtp_extra: &str,
    ) -> anyhow::Result<Proc> {
        self.start_agent_envs(
            name,
            smtp,
            mode,
            Extra {
                smtp_extra,
                program: Some(program),
                ..Extra::new(self.grpc)
            },
        )
    }

    fn start_agent_envs(
        &self,
        name: &str,
        smtp: u16,
        mode: &Mode,
        x: Extra<'_>,
    ) -> anyhow::Result<Proc> {
        let Extra {
            smtp_extra,
            extra,
            collector_extra,
            envs,
            collector_port,
            program,
        } = x;
        if envs.iter().any(|(k, _)| k.starts_with("KIROKU_TEST_")) {
            ensure_test_hooks()?;
        }
        let pki = self.pki();
        if !pki.join(format!("agent-{name}.pem")).exists() {
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
                    collector_port,
                    collector_extra,
                    smtp_extra,
                    extra,
                },
                |p| format!("{p:?}"),
            ),
        )?;
        let mut p = Proc::spawn(
            &format!("agent {name}"),
            Command::new(program.map_or_else(|| bin("kiroku-agent"), Path::to_owned))
                .arg("--config")
                .arg(&cfg)
                .envs(envs.iter().copied()),
            &self.path().join(format!("agent-{name}.log")),
        )?;
        p.wait_port(smtp)?;
        Ok(p)
    }

    /// The agent config [`Env::start_agent`] writes; `path` renders a file
    /// path as a TOML string (the Windows agent gets `Z:\\…` paths, see
    /// `winagent.rs`).
    pub(crate) fn agent_toml(
        &self,
        name: &str,
        smtp: u16,
        mode: &Mode,
        t: AgentToml<'_>,
        path: impl Fn(&Path) -> String,
    ) -> String {
        let pki = self.pki();
        let mode = match mode {
            Mode::CaptureOnly => "mode = \"capture-only\"\n".to_owned(),
            Mode::Relay(port) => format!("mode = \"relay\"\nupstream = \"127.0.0.1:{port}\"\n"),
        };
        let AgentToml {
            collector_port,
            collector_extra,
            smtp_extra,
            extra,
        } = t;
        format!(
            "data_dir = \"agent-{name}\"\n[collector]\nendpoint = \"https://127.0.0.1:{}\"\nserver_name = \"localhost\"\n{collector_extra}[collector.tls]\nca = {}\ncert = {}\nkey = {}\n[smtp]\nlisten = [\"127.0.0.1:{smtp}\"]\n{mode}{smtp_extra}[custom]\ndepartment = \"finance\"\n{extra}",
            collector_port,
            path(&pki.join("ca.pem")),
            path(&pki.join(format!("agent-{name}.pem"))),
            path(&pki.join(format!("agent-{name}.key"))),
        )
    }

    /// A gRPC channel to the collector authenticated with `cert`/`key`.
    pub async fn channel(
        &self,
        cert: Option<(&Path, &Path)>,
        ca: Option<&Path>,
    ) -> anyhow::Result<Channel> {
        let ca_path = ca
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.pki().join("ca.pem"));
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(std::fs::read(ca_path)?))
            .domain_name("localhost");
        if let Some((c, k)) = cert {
            tls = tls.identity(Identity::from_pem(std::fs::read(c)?, std::fs::read(k)?));
        }
        Ok(
            Endpoint::from_shared(format!("https://127.0.0.1:{}", self.grpc))?
                .tls_config(tls)?
                .connect_timeout(Duration::from_secs(10))
                .timeout(Duration::from_secs(30))
                .connect()
                .await?,
        )
    }

    /// A channel with the admin certificate (`admin/boss`): may ingest,
    /// query and read the audit log.
    pub async fn admin(&self) -> anyhow::Result<Channel> {
        let pki = self.pki();
        self.channel(
            Some((&pki.join("admin-boss.pem"), &pki.join("admin-boss.key"))),
            None,
        )
        .await
    }

    pub async fn investigator(&self) -> anyhow::Result<QueryClient<Channel>> {
        let pki = self.pki();
        let ch = self
            .channel(
                Some((
                    &pki.join("investigator-inv.pem"),
                    &pki.join("investigator-inv.key"),
                )),
                None,
            )
            .await?;
        Ok(QueryClient::new(ch).max_decoding_message_size(64 << 20))
    }

    /// Polls Search until exactly `n` events match (or more appear), up to
    /// `within`.
    pub async fn wait_for(
        &self,
        req: SearchRequest,
        n: usize,
        within: Duration,
    ) -> anyhow::Result<Vec<Event>> {
        let deadline = Instant::now() + within;
        let mut last = Vec::new();
        loop {
            let page = SearchRequest {
                page_size: 1000,
                ..req.clone()
            };
            if let Ok(mut q) = self.investigator().await
                && let Ok(r) = q.search(page).await
            {
                last = r.into_inner().events;
                if last.len() >= n {
                    return Ok(last);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "expected {n} events for {req:?}, found {}\n{}",
                    last.len(),
                    self.log_tails()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last lines of every process log in the test's directory
    /// (collector, agents, upstreams), so a wait that timed out on a CI
    /// machine says what the processes were doing.
    pub fn log_tails(&self) -> String {
        const LINES: usize = 40;
        let mut logs: Vec<PathBuf> = std::fs::read_dir(self.path())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        let mut out = String::new();
        for p in logs {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(LINES);
            out.push_str(&format!(
                "--- last {} lines of {}\n",
                lines.len() - from,
                p.display()
            ));
            for l in &lines[from..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// Every event matching `req`, streamed (no page limit).
    pub async fn search_all(&self, req: SearchRequest) -> anyhow::Result<Vec<Event>> {
        let mut q = self.investigator().await?;
        let mut stream = q.search_stream(req).await?.into_inner();
        let mut events = Vec::new();
        while let Some(e) = stream.message().await? {
            events.push(e);
        }
        Ok(events)
    }

    pub async fn raw(&self, event_id: &str) -> anyhow::Result<Vec<u8>> {
        let mut q = self.investigator().await?;
        let mut s = q
            .get_raw(kiroku_proto::GetRawRequest {
                event_id: event_id.into(),
            })
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(c) = s.message().await? {
            out.extend_from_slice(&c.data);
        }
        Ok(out)
    }
}

/// The email part of an event (panics when it is not a mail).
pub fn email(e: &Event) -> &kiroku_proto::EmailEvent {
    match &e.kind {
        Some(Kind::Email(m)) => m,
        _ => panic!("event {} is not an email", e.event_id),
    }
}

/// Replaces the file at `path` with `contents` as editors and
/// configuration tools do: written to a temporary file beside it, then
/// renamed over it. A process polling the file sees the old content or
/// the new, never an empty or half-written file (which `std::fs::write`,
/// truncating first, may show it).
pub fn replace_file(path: &Path, contents: impl AsRef<[u8]>) -> std::io::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".new");
    let tmp = path.with_file_name(name);
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}

/// Records that a test could not run here (a peer is missing) so the
/// suite's summary counts it as skipped, not passed.
pub fn skip(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why}");
    if let Ok(path) = std::env::var("KIROKU_SKIP_LOG")
        && let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(path)
    {
        let _ = std::io::Write::write_all(&mut f, format!("{test}: {why}\n").as_bytes());
    }
}
