//! Harness for the end-to-end tests: runs the real `kiroku`,
//! `kiroku-collector` and `kiroku-agent` binaries and real peers (aiosmtpd as
//! upstream, Python smtplib as client, Python grpcio) on free loopback ports
//! in a temp dir. Every process is killed when its guard drops; the temp
//! dir goes with the [`Env`].

pub mod bench;
pub mod enroll;
pub mod faultproxy;
pub mod journal_edit;
pub mod load;
pub mod mailcorpus;
pub mod mta;
pub mod netgen;
pub mod netns;
pub mod netrec;
pub mod reliability;
pub mod swarm;
// Issue 21: hand-made events shipped as an agent.
pub mod ship;
pub mod tsa;
pub mod wine;
// Issue 22: the Windows agent under Wine, started like `start_agent`.
pub mod winagent;

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kiroku_proto::query_client::QueryClient;
use kiroku_proto::{Event, SearchRequest, event::Kind};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

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

/// A port that was free a moment ago on 127.0.0.1, and that this test
/// process has not handed out before.
///
/// The tests of one binary run in parallel, and each picks its ports long
/// before its processes bind them (a collector's port when its `Env` is
/// made, then a Postfix is started first). The kernel may give a port that
/// was just released to the next `bind(0)`, so two tests could be handed the
/// same port; the second process to bind it then fails, and a wait for the
/// port finds the other test's listener there (a CI run on 2026-12-06 lost
/// a test to that: its agent shipped to another test's port). Remembering
/// the ports handed out closes that within the process; other processes'
/// listeners are caught by [`Proc::wait_port`].
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// The pids of the processes holding a socket that listens on TCP `port`
/// (IPv4 or IPv6), as far as /proc tells.
fn listeners_of(port: u16) -> Vec<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st ... uid timeout inode
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let listening = *state == "0A";
            let this_port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if listening && this_port == Some(port) {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    let mut owners = Vec::new();
    if inodes.is_empty() {
        return owners;
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return owners;
    };
    for proc_dir in procs.flatten() {
        let Some(pid) = proc_dir.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(proc_dir.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path())
                && inodes.iter().any(|i| link.as_os_str() == i.as_str())
            {
                owners.push(pid);
                break;
            }
        }
    }
    owners
}

/// Whether `pid` is `ancestor` or one of its descendants.
fn descends_from(mut pid: u32, ancestor: u32) -> bool {
    for _ in 0..64 {
        if pid == ancestor {
            return true;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // pid (comm) state ppid ...: comm may hold spaces and parentheses.
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
        else {
            return false;
        };
        if ppid <= 1 {
            return false;
        }
        pid = ppid;
    }
    false
}

/// A child process that is killed (SIGKILL) when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> anyhow::Result<Proc> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Proc {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
        })
    }

    /// `kill -9`: no chance to flush or say goodbye.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait (bounded) for a clean exit.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill9();
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The exit code, once the process has exited by itself.
    pub fn exit_code(&mut self) -> Option<i32> {
        self.child.try_wait().ok().flatten().and_then(|s| s.code())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the process's log contains `what`, for at most `within`.
    pub async fn wait_log(&self, what: &str, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        while !self.log_text().contains(what) {
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} log never said {what:?}:\n{}",
                self.name,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// Waits until `port` accepts connections or the process dies.
    pub fn wait_port(&mut self, port: u16) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if !self.is_running() {
                bail!("{} exited at start:\n{}", self.name, self.log_text());
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                // Someone listens: make sure it is this process (or a child
                // it started), not another test's or the machine's. If it is
                // not, this process is bound to fail on the port: wait for
                // that, so its log says why.
                let owners = listeners_of(port);
                if owners.is_empty() || owners.iter().any(|&o| descends_from(o, self.child.id())) {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    let comm = std::fs::read_to_string(format!("/proc/{}/comm", owners[0]))
                        .unwrap_or_default();
                    bail!(
                        "{}: port {port} is held by another process (pid {}, {}) that \
                         took it after the test chose it; run the test again",
                        self.name,
                        owners[0],
                        comm.trim()
                    );
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not listen on {port}:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
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

/// aiosmtpd on a free port, saving what it receives.
pub struct Upstream {
    pub port: u16,
    pub out: PathBuf,
    _proc: Proc,
}

impl Upstream {
    pub fn start(env: &Env) -> anyhow::Result<Upstream> {
        Upstream::start_with(env, &[])
    }

    /// With extra arguments to `upstream_smtp.py` (e.g. `--auth`).
    pub fn start_with(env: &Env, args: &[&str]) -> anyhow::Result<Upstream> {
        let port = free_port();
        let out = env.path().join(format!("upstream-{port}"));
        let mut p = Proc::spawn(
            "upstream smtp (aiosmtpd)",
            Command::new("python3")
                .arg(data_dir().join("upstream_smtp.py"))
                .arg(port.to_string())
                .arg(&out)
                .args(args),
            &env.path().join(format!("upstream-{port}.log")),
        )?;
        p.wait_port(port)?;
        Ok(Upstream {
            port,
            out,
            _proc: p,
        })
    }

    /// Kills the server (SIGKILL): the relay's connection to it drops.
    pub fn kill(&mut self) {
        self._proc.kill9();
    }

    /// Messages received so far, in order: (raw bytes, envelope JSON).
    pub fn messages(&self) -> Vec<(Vec<u8>, serde_json::Value)> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.out)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
            .into_iter()
            .map(|p| {
                let raw = std::fs::read(&p).unwrap_or_default();
                let env = std::fs::read_to_string(p.with_extension("json"))
                    .ok()
                    .and_then(|s| serde_json::from_str(&s).ok())
                    .unwrap_or_default();
                (raw, env)
            })
            .collect()
    }
}

/// Final reply of an SMTP transaction sent with Python's smtplib.
#[derive(Debug)]
pub struct Sent {
    pub code: u16,
    pub reply: String,
}

/// Sends `raw` with Python's smtplib to 127.0.0.1:`port`.
pub fn send_mail(port: u16, from: &str, rcpts: &[&str], raw: &[u8]) -> anyhow::Result<Sent> {
    let mut f = tempfile::NamedTempFile::new()?;
    std::io::Write::write_all(&mut f, raw)?;
    let mut child = Command::new("python3")
        .arg(data_dir().join("send_mail.py"))
        .arg(port.to_string())
        .arg(from)
        .arg(rcpts.join(","))
        .arg(f.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("smtplib client timed out");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut out = String::new();
    let mut err = String::new();
    child.stdout.take().map(|mut s| s.read_to_string(&mut out));
    child.stderr.take().map(|mut s| s.read_to_string(&mut err));
    let v: serde_json::Value = serde_json::from_str(out.trim())
        .with_context(|| format!("smtplib client failed: {out} {err}"))?;
    Ok(Sent {
        code: v["code"].as_u64().unwrap_or(0) as u16,
        reply: v["reply"].as_str().unwrap_or_default().to_owned(),
    })
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

/// A hand-driven SMTP conversation over plain TCP, for exact protocol
/// checks (pipelining, injection, abandoned transactions).
pub struct Talk {
    r: std::io::BufReader<TcpStream>,
    w: TcpStream,
}

impl Talk {
    /// Connects and reads the greeting.
    pub fn connect(port: u16) -> anyhow::Result<(Talk, (u16, String))> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut t = Talk {
            r: std::io::BufReader::new(s.try_clone()?),
            w: s,
        };
        let g = t.reply()?;
        Ok((t, g))
    }

    pub fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        std::io::Write::write_all(&mut self.w, bytes)?;
        Ok(())
    }

    /// One reply: (code, all lines joined by '\n'). Fails on EOF.
    pub fn reply(&mut self) -> anyhow::Result<(u16, String)> {
        use std::io::BufRead;
        let mut lines = Vec::new();
        loop {
            let mut l = String::new();
            if self.r.read_line(&mut l)? == 0 {
                bail!("connection closed (after {lines:?})");
            }
            let l = l.trim_end().to_owned();
            let last = l.as_bytes().get(3) != Some(&b'-');
            lines.push(l);
            if last {
                break;
            }
        }
        let code = lines[0].get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        Ok((code, lines.join("\n")))
    }

    pub fn cmd(&mut self, line: &str) -> anyhow::Result<(u16, String)> {
        self.send(format!("{line}\r\n").as_bytes())?;
        self.reply()
    }

    /// True when the server has sent something not read yet (waits at most
    /// 10 ms).
    pub fn pending(&self) -> bool {
        let mut b = [0u8; 1];
        let _ = self.w.set_read_timeout(Some(Duration::from_millis(10)));
        let ready = !self.r.buffer().is_empty() || matches!(self.w.peek(&mut b), Ok(n) if n > 0);
        let _ = self.w.set_read_timeout(Some(Duration::from_secs(60)));
        ready
    }

    /// True when the server closed the connection (EOF before any byte).
    pub fn closed(&mut self) -> bool {
        use std::io::BufRead;
        matches!(self.r.fill_buf(), Ok([]) | Err(_))
    }
}

/// Runs a client program (swaks, msmtp, curl) with a deadline; returns
/// (success, stdout + stderr).
pub fn run_client(cmd: &mut Command, stdin: Option<&[u8]>) -> anyhow::Result<(bool, String)> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    if let (Some(mut i), Some(data)) = (child.stdin.take(), stdin) {
        std::io::Write::write_all(&mut i, data)?;
    }
    // Drained while the child runs: output larger than a pipe's buffer
    // (64 KiB) would otherwise block the child until the deadline.
    fn drain<R: std::io::Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    }
    drop(child.stdin.take());
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{cmd:?} timed out");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    Ok((
        status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&err)
        ),
    ))
}

/// Whether the tests run as root (some need it: mounts, fanotify).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// A tmpfs mounted for a test (a stand-in removable volume); unmounted on
/// drop, also when the test fails. Needs root.
pub struct TmpfsMount(PathBuf);

impl TmpfsMount {
    pub fn mount(at: &Path) -> anyhow::Result<TmpfsMount> {
        Self::mount_sized(at, "8m")
    }

    /// Mounts a tmpfs of `size` (`mount -o size=`, e.g. "64m").
    pub fn mount_sized(at: &Path, size: &str) -> anyhow::Result<TmpfsMount> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "kiroku-test"])
            .arg(at)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "mount tmpfs on {}: {}",
            at.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(TmpfsMount(at.to_owned()))
    }

    /// Unmounts now; true when it worked.
    pub fn unmount(&mut self) -> bool {
        Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        if !self.unmount() {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Bytes available to unprivileged writers in the file system of `path`.
pub fn available(path: &Path) -> anyhow::Result<u64> {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("df {}: {text}", path.display()))
}

/// Fills the file system of `dir` with `ballast` files until `leave`
/// bytes are available (0: full, to the last block).
pub fn fill_disk(dir: &Path, leave: u64) -> anyhow::Result<()> {
    // Only ever a test tmpfs: never the machine's own disk by mistake.
    let fstype = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(dir)
        .output()?;
    let fstype = String::from_utf8_lossy(&fstype.stdout).trim().to_owned();
    anyhow::ensure!(
        fstype == "tmpfs",
        "refusing to fill {}: it is on {fstype:?}, not a test tmpfs",
        dir.display()
    );
    let path = dir.join("ballast");
    let avail = available(dir)?;
    let size = avail.saturating_sub(leave);
    let st = Command::new("fallocate")
        .args(["-l", &size.to_string()])
        .arg(&path)
        .status()?;
    anyhow::ensure!(st.success(), "fallocate {size} bytes at {}", path.display());
    if leave == 0 {
        // Whatever fallocate left (rounding): take it too.
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=4096"])
            .arg(format!("of={}", dir.join("ballast2").display()))
            .output();
    }
    Ok(())
}

/// Removes what [`fill_disk`] wrote in `dir`.
pub fn unfill_disk(dir: &Path) {
    for f in ["ballast", "ballast2"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_is_handed_out_once() {
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        let mut unique = ports.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ports.len());
    }

    /// A port someone else listens on is not taken for the started
    /// process's: the wait lasts until that process gives up.
    #[test]
    fn another_process_listening_is_not_taken_for_ours() -> anyhow::Result<()> {
        let held = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = held.local_addr()?.port();
        let dir = tempfile::tempdir()?;
        let mut p = Proc::spawn(
            "sleeper",
            Command::new("sleep").arg("1"),
            &dir.path().join("sleeper.log"),
        )?;
        let e = p
            .wait_port(port)
            .expect_err("the port is this test's, not the sleeper's");
        assert!(e.to_string().contains("sleeper exited at start"), "{e:#}");

        // Its own listener, in a child of the started process, is found.
        drop(held);
        let port = free_port();
        let mut q = Proc::spawn(
            "listener",
            Command::new("sh").arg("-c").arg(format!(
                "python3 -c 'import socket,time; s=socket.socket(); \
                 s.bind((\"127.0.0.1\", {port})); s.listen(); time.sleep(20)'; true"
            )),
            &dir.path().join("listener.log"),
        )?;
        let waited = q.wait_port(port);
        // The listener is the shell's child: end it too.
        let _ = Command::new("pkill")
            .args(["-KILL", "-P", &q.pid().to_string()])
            .status();
        waited
    }
}
