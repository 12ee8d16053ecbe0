//! SMTP peers for the tests: the aiosmtpd upstream, smtplib sends, and a
//! hand-driven SMTP conversation ([`Talk`]) for exact protocol checks.

use std::io::Read;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{Env, Proc, data_dir, free_port};

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
