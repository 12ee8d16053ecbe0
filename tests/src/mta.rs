//! Real MTAs as the relay's upstream: a private Postfix instance (its own
//! config, queue and log under the test's temp dir) listening on loopback
//! with STARTTLS, implicit TLS (smtps) and Cyrus SASL (sasldb). Mail stays
//! in Postfix's queue (`defer_transports`), so a test reads what Postfix
//! received with `postcat` by the queue id the relay recorded.
//!
//! Postfix needs root (it switches to the `postfix` user); tests call
//! [`Postfix::available`] and say why they skip otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{Env, free_port};

pub const USER: &str = "alice";
pub const PASSWORD: &str = "s3cret-Pa55";
/// Name in the Postfix certificate (and its SAN IP 127.0.0.1).
pub const TLS_NAME: &str = "upstream.test";
/// A domain Postfix accepts without AUTH; any other needs AUTH.
pub const LOCAL_DOMAIN: &str = "example.test";
pub const REFUSED_RCPT: &str = "nobody@example.test";
pub const REFUSED_SENDER: &str = "blocked@sender.test";
/// Subject marker refused by Postfix's header_checks at end-of-data.
pub const REFUSED_SUBJECT: &str = "REJECT-ME";

pub struct Postfix {
    pub dir: PathBuf,
    /// STARTTLS port (AUTH offered only after TLS).
    pub port: u16,
    /// Implicit TLS port (smtps).
    pub smtps: u16,
    /// PEM of the certificate Postfix presents (trust it as a CA).
    pub cert: PathBuf,
}

impl Postfix {
    /// Why Postfix tests cannot run here, if they cannot.
    pub fn unavailable() -> Option<String> {
        if !Path::new("/usr/sbin/postfix").exists() || !Path::new("/usr/sbin/saslpasswd2").exists()
        {
            return Some("postfix or sasl2-bin not installed (.ci/run installs them)".into());
        }
        let uid = Command::new("id").arg("-u").output().ok();
        let root = uid.is_some_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        (!root).then(|| "Postfix needs root to start".into())
    }

    pub fn start(env: &Env) -> anyhow::Result<Postfix> {
        Postfix::start_with_limit(env, 20_480_000)
    }

    /// With Postfix's `message_size_limit` set to `limit` bytes. Postfix
    /// needs fixed ports; one taken between choosing and binding (other
    /// tests run in parallel) means another try with fresh ports.
    pub fn start_with_limit(env: &Env, limit: u64) -> anyhow::Result<Postfix> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Postfix::start_in(env, &format!("postfix-{attempt}"), limit) {
                Err(e) if attempt < 4 && e.to_string().contains("Address already in use") => {
                    continue;
                }
                other => return other,
            }
        }
    }

    fn start_in(env: &Env, name: &str, limit: u64) -> anyhow::Result<Postfix> {
        let dir = env.path().join(name);
        for d in ["queue", "data", "sasl"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        // Postfix's processes run as user postfix: they must reach the dir.
        for p in [env.path(), &dir] {
            chmod(p, 0o755)?;
        }
        let (port, smtps) = (free_port(), free_port());
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        let ck = rcgen::generate_simple_self_signed(vec![TLS_NAME.into(), "127.0.0.1".into()])?;
        std::fs::write(&cert, ck.cert.pem())?;
        std::fs::write(&key, ck.signing_key.serialize_pem())?;
        let d = dir.display();
        std::fs::write(
            dir.join("main.cf"),
            format!(
                "compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = {TLS_NAME}
mydomain = {TLS_NAME}
mydestination =
mynetworks = 127.0.0.0/8
relay_domains = {LOCAL_DOMAIN}
relayhost = [127.0.0.1]:9
defer_transports = smtp relay
maillog_file = {d}/maillog
maillog_file_prefixes = {d}
alias_maps =
alias_database =
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
smtpd_sender_restrictions = check_sender_access texthash:{d}/senders
smtpd_recipient_restrictions = check_recipient_access texthash:{d}/recipients
header_checks = regexp:{d}/header_checks
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
cyrus_sasl_config_path = {d}/sasl
smtpd_sasl_local_domain = {TLS_NAME}
smtpd_tls_auth_only = yes
smtpd_tls_security_level = may
smtpd_tls_cert_file = {d}/cert.pem
smtpd_tls_key_file = {d}/key.pem
message_size_limit = {limit}
"
            ),
        )?;
        std::fs::write(
            dir.join("senders"),
            format!("{REFUSED_SENDER} REJECT 5.7.1 sender blocked by policy\n"),
        )?;
        std::fs::write(
            dir.join("recipients"),
            format!("{REFUSED_RCPT} REJECT 5.1.1 no such user here\n"),
        )?;
        std::fs::write(
            dir.join("header_checks"),
            format!("/^Subject: .*{REFUSED_SUBJECT}/ REJECT 5.7.1 content refused by policy\n"),
        )?;
        // Debian's master.cf with our listeners and no chroot (the
        // chroot would lack our private files).
        let stock = std::fs::read_to_string("/etc/postfix/master.cf")
            .context("reading /etc/postfix/master.cf")?;
        let mut master = String::new();
        for line in stock.lines() {
            if line.starts_with("smtp      inet") {
                master.push_str(&format!(
                    "127.0.0.1:{port} inet n - n - - smtpd\n127.0.0.1:{smtps} inet n - n - - smtpd\n  -o smtpd_tls_wrappermode=yes\n"
                ));
                continue;
            }
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() >= 8 && !line.starts_with('#') && !line.starts_with(' ') && f[4] == "y" {
                let mut f = f.clone();
                f[4] = "n";
                master.push_str(&f.join(" "));
            } else {
                master.push_str(line);
            }
            master.push('\n');
        }
        std::fs::write(dir.join("master.cf"), master)?;
        std::fs::write(
            dir.join("sasl/smtpd.conf"),
            format!(
                "pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: PLAIN LOGIN\nsasldb_path: {d}/sasldb2\n"
            ),
        )?;
        let mut child = Command::new("saslpasswd2")
            .args(["-f"])
            .arg(dir.join("sasldb2"))
            .args(["-p", "-c", "-u", TLS_NAME, USER])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .context("running saslpasswd2")?;
        if let Some(mut stdin) = child.stdin.take() {
            std::io::Write::write_all(&mut stdin, PASSWORD.as_bytes())?;
        }
        if !child.wait()?.success() {
            bail!("saslpasswd2 failed");
        }
        for p in ["sasldb2", "data"] {
            let st = Command::new("chown")
                .arg("postfix")
                .arg(dir.join(p))
                .status()?;
            if !st.success() {
                bail!("chown postfix {p} failed");
            }
        }
        let pf = Postfix {
            dir,
            port,
            smtps,
            cert,
        };
        let out = pf.postfix(&["start"])?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", smtps)).is_err()
        {
            if Instant::now() > deadline {
                bail!(
                    "postfix did not listen on {port}/{smtps}: {out}\n{}",
                    pf.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(pf)
    }

    fn postfix(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("postfix")
            .arg("-c")
            .arg(&self.dir)
            .args(args)
            .output()
            .context("running postfix")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            bail!("postfix {args:?} failed: {text}\n{}", self.log());
        }
        Ok(text)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }

    /// Header and body of queued message `id` as Postfix holds it (with its
    /// own Received: line first; lines end in LF).
    pub fn queued(&self, id: &str) -> anyhow::Result<String> {
        let out = Command::new("postcat")
            .arg("-c")
            .arg(&self.dir)
            .args(["-h", "-b", "-q", id])
            .output()?;
        if !out.status.success() {
            bail!("postcat -q {id}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "--- postfix maillog (last 40 lines, newest first) ---\n{}",
                tail.join("\n")
            );
        }
        let _ = Command::new("postfix")
            .arg("-c")
            .arg(&self.dir)
            .arg("stop")
            .output();
        // Make sure nothing outlives the test even if `stop` failed.
        let pid = std::fs::read_to_string(self.dir.join("queue/pid/master.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        if let Some(pid) = pid {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

fn chmod(p: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
}
