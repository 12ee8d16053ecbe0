//! A local RFC 3161 Time-Stamp Authority for the checkpoint tests:
//! `tests/data/tsa/tsa_server.py` (OpenSSL's `openssl ts -reply` behind a
//! small HTTP responder) on a free loopback port, with its own CA.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::{Env, Proc, data_dir, free_port};

/// The running TSA; killed when dropped.
pub struct Tsa {
    pub port: u16,
    /// Its working directory: `ca.pem` (the TSA CA), `tsa.pem`, `tsa.cnf`.
    pub dir: PathBuf,
    _proc: Proc,
}

/// Whether `openssl` (with its `ts` command) can run here.
pub fn openssl_present() -> bool {
    Command::new("openssl")
        .args(["ts", "-help"])
        .output()
        .is_ok_and(|o| o.status.success() || !o.stderr.is_empty())
}

impl Tsa {
    pub fn start(env: &Env) -> anyhow::Result<Tsa> {
        let port = free_port();
        let dir = env.path().join("tsa");
        let mut p = Proc::spawn(
            "tsa (openssl ts)",
            Command::new("python3")
                .arg(data_dir().join("tsa/tsa_server.py"))
                .arg(port.to_string())
                .arg(&dir),
            &env.path().join("tsa.log"),
        )?;
        p.wait_port(port)?;
        Ok(Tsa {
            port,
            dir,
            _proc: p,
        })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// The TSA's CA certificate (PEM).
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A time-stamp token (DER) over SHA-256 of `data`, asked of this TSA
    /// with OpenSSL's own client side (`openssl ts -query`), as any other
    /// party could get one.
    pub fn token_for(&self, data: &[u8], work: &Path) -> anyhow::Result<Vec<u8>> {
        let (d, q, r, t) = (
            work.join("stamp.data"),
            work.join("stamp.tsq"),
            work.join("stamp.tsr"),
            work.join("stamp.tok"),
        );
        std::fs::write(&d, data)?;
        run(Command::new("openssl")
            .args(["ts", "-query", "-sha256", "-cert", "-data"])
            .arg(&d)
            .arg("-out")
            .arg(&q))?;
        let post = format!(
            "import sys, urllib.request\nreq = urllib.request.Request({:?}, data=open(sys.argv[1], 'rb').read(), headers={{'Content-Type': 'application/timestamp-query'}})\nopen(sys.argv[2], 'wb').write(urllib.request.urlopen(req, timeout=30).read())\n",
            self.url()
        );
        run(Command::new("python3").arg("-c").arg(post).arg(&q).arg(&r))?;
        run(Command::new("openssl")
            .args(["ts", "-reply", "-in"])
            .arg(&r)
            .args(["-token_out", "-out"])
            .arg(&t))?;
        std::fs::read(&t).with_context(|| format!("reading {}", t.display()))
    }
}

/// Runs a command; fails with its output when it does not succeed.
pub fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
