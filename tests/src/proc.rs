//! Processes and ports for the tests: free loopback ports handed out once
//! per test process, [`Proc`] (a child killed on drop, with its log and a
//! wait for its port that checks who listens), client programs run with a
//! deadline.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

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
    let l = bind_local().expect("free port");
    l.local_addr().map(|a| a.port()).expect("free port")
}

/// The ports [`free_port`] and [`bind_local`] handed out.
static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());

/// A listener of this test process on 127.0.0.1, on a port [`free_port`]
/// has not handed out (a plain `bind(0)` could take a port another test
/// was given and has not bound yet).
pub fn bind_local() -> std::io::Result<std::net::TcpListener> {
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = l.local_addr()?.port();
        if !given.contains(&port) {
            given.push(port);
            return Ok(l);
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

    /// Waits until `n` lines of the log contain each of `all`, for at most
    /// `within`; returns those lines.
    pub async fn wait_log_lines(
        &self,
        all: &[&str],
        n: usize,
        within: Duration,
    ) -> anyhow::Result<Vec<String>> {
        let deadline = Instant::now() + within;
        loop {
            let log = self.log_text();
            let lines: Vec<String> = log
                .lines()
                .filter(|l| all.iter().all(|w| l.contains(w)))
                .map(str::to_owned)
                .collect();
            if lines.len() >= n {
                return Ok(lines);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} log has {} of {n} lines with all of {all:?}:\n{log}",
                self.name,
                lines.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
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
