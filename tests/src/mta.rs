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

/// Skips the calling test (loudly, counted as skipped) when the peer
/// (`Postfix`, `Exim`, `OpenSmtpd`) cannot run here.
#[macro_export]
macro_rules! need_peer {
    ($peer:ty) => {
        if let Some(why) = <$peer>::unavailable() {
            fn here() {}
            let name = std::any::type_name_of_val(&here).trim_end_matches("::here");
            $crate::skip(name, &why);
            return Ok(());
        }
    };
}

/// A small test message with a dot-stuffed line (`.leading dot line`).
pub fn message(subject: &str, to: &str) -> Vec<u8> {
    format!(
        "From: Alice <alice@sender.test>\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{subject}@sender.test>\r\n\r\nBody of {subject}.\r\n.leading dot line\r\n"
    )
    .into_bytes()
}

/// The one mail record with `subject` (waits up to 30 s).
pub async fn one(env: &Env, subject: &str) -> anyhow::Result<kiroku_proto::EmailEvent> {
    let ev = env
        .wait_for(
            kiroku_proto::SearchRequest {
                subject: subject.into(),
                ..Default::default()
            },
            1,
            Duration::from_secs(30),
        )
        .await?;
    assert_eq!(ev.len(), 1, "one record for {subject}");
    Ok(crate::email(&ev[0]).clone())
}

/// swaks to 127.0.0.1:`port`, message on stdin, optional AUTH
/// (mechanism, user, password).
pub fn swaks(port: u16, to: &str, auth: Option<(&str, &str, &str)>) -> Command {
    let mut c = Command::new("swaks");
    c.args(["--server", &format!("127.0.0.1:{port}")])
        .args(["--from", "alice@sender.test", "--to", to])
        .args(["--helo", "desk.sender.test"])
        .args(["--data", "-"]);
    if let Some((mech, user, pw)) = auth {
        c.args(["--auth", mech, "--auth-user", user, "--auth-password", pw]);
    }
    c
}

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
        (!crate::is_root()).then(|| "Postfix needs root to start".into())
    }

    pub fn start(env: &Env) -> anyhow::Result<Postfix> {
        Postfix::start_with_limit(env, 20_480_000)
    }

    /// With Postfix's `message_size_limit` set to `limit` bytes. Postfix
    /// needs fixed ports; one taken between choosing and binding (other
    /// tests run in parallel) means another try with fresh ports.
    pub fn start_with_limit(env: &Env, limit: u64) -> anyhow::Result<Postfix> {
        Postfix::start_with_main_cf(env, limit, "")
    }

    /// Postfix refusing every line that ends in a bare LF, also from
    /// loopback (`smtpd_forbid_bare_newline = reject`, no exclusions): a
    /// bare LF that reached it would fail the message with 550.
    pub fn start_refusing_bare_lf(env: &Env) -> anyhow::Result<Postfix> {
        Postfix::start_with_main_cf(
            env,
            20_480_000,
            "smtpd_forbid_bare_newline = reject\nsmtpd_forbid_bare_newline_exclusions =\n",
        )
    }

    /// With `extra` appended to main.cf (a parameter set again there
    /// overrides the one above it: Postfix takes the last).
    pub fn start_with_extra(env: &Env, extra: &str) -> anyhow::Result<Postfix> {
        Postfix::start_with_main_cf(env, 20_480_000, extra)
    }

    /// With `extra` appended to main.cf.
    fn start_with_main_cf(env: &Env, limit: u64, extra: &str) -> anyhow::Result<Postfix> {
        retry_port_clash(|attempt| {
            Postfix::start_in(env, &format!("postfix-{attempt}"), limit, extra)
        })
    }

    fn start_in(env: &Env, name: &str, limit: u64, extra: &str) -> anyhow::Result<Postfix> {
        // Postfix's processes run as user postfix: they must reach the dir.
        let dir = peer_dir(env, name, &["queue", "data", "sasl"])?;
        let (port, smtps) = (free_port(), free_port());
        let cert = upstream_cert(&dir)?;
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
{extra}"
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

    /// The messages in Postfix's queue (`postqueue -j`: one JSON object
    /// each, with `queue_id`, `sender`, `recipients`).
    pub fn queue(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let out = Command::new("postqueue")
            .arg("-c")
            .arg(&self.dir)
            .arg("-j")
            .output()?;
        if !out.status.success() {
            bail!("postqueue -j: {}", String::from_utf8_lossy(&out.stderr));
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).context("postqueue -j output"))
            .collect()
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

/// Starts a peer on fresh ports, again with others if one was taken
/// between choosing and binding (tests run in parallel).
fn retry_port_clash<T>(mut start: impl FnMut(usize) -> anyhow::Result<T>) -> anyhow::Result<T> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match start(attempt) {
            Err(e) if attempt < 4 && e.to_string().contains("Address already in use") => continue,
            other => return other,
        }
    }
}

/// `<env>/<name>` with `subdirs`, reachable by a peer's own users.
fn peer_dir(env: &Env, name: &str, subdirs: &[&str]) -> anyhow::Result<PathBuf> {
    let dir = env.path().join(name);
    for d in subdirs {
        std::fs::create_dir_all(dir.join(d))?;
    }
    for p in [env.path(), &dir] {
        chmod(p, 0o755)?;
    }
    Ok(dir)
}

/// A self-signed certificate for [`TLS_NAME`] and 127.0.0.1 as
/// `dir/cert.pem` and `dir/key.pem`; returns the certificate's path.
fn upstream_cert(dir: &Path) -> anyhow::Result<PathBuf> {
    let ck = rcgen::generate_simple_self_signed(vec![TLS_NAME.into(), "127.0.0.1".into()])?;
    let cert = dir.join("cert.pem");
    std::fs::write(&cert, ck.cert.pem())?;
    std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem())?;
    Ok(cert)
}

fn chmod(p: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
}

/// A private Exim 4 as the relay's upstream: its own configuration, spool
/// and logs under the test's temp dir, listening on loopback with STARTTLS
/// and implicit TLS, AUTH PLAIN and LOGIN (offered only after TLS), and
/// ACLs for the same refusals as [`Postfix`]. Mail stays in Exim's queue
/// (`queue_only`); a test reads it back with `exim -Mvh`/`-Mvb` by the
/// queue id the relay recorded.
///
/// Debian's Postfix and Exim packages exclude each other, so
/// `scripts/test.sh` unpacks Exim's packages (without installing them)
/// under `target/peers/exim` and adds the `Debian-exim` user the binary
/// is built for. `KIROKU_EXIM` names another exim binary.
pub struct Exim {
    pub dir: PathBuf,
    /// STARTTLS port.
    pub port: u16,
    /// Implicit TLS port.
    pub smtps: u16,
    pub cert: PathBuf,
    bin: PathBuf,
    child: std::process::Child,
}

impl Exim {
    fn binary() -> PathBuf {
        if let Some(p) = std::env::var_os("KIROKU_EXIM") {
            return PathBuf::from(p);
        }
        let unpacked =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/peers/exim/usr/sbin/exim4");
        if unpacked.exists() {
            return unpacked;
        }
        PathBuf::from("/usr/sbin/exim4")
    }

    /// Why Exim tests cannot run here, if they cannot.
    pub fn unavailable() -> Option<String> {
        let bin = Exim::binary();
        if !bin.exists() {
            return Some(format!(
                "no exim binary at {} (scripts/test.sh unpacks Debian's exim4-daemon-light there)",
                bin.display()
            ));
        }
        if !crate::is_root() {
            return Some("Exim needs root to start".into());
        }
        let user = Command::new("id").arg("Debian-exim").output().ok();
        (!user.is_some_and(|o| o.status.success()))
            .then(|| "user Debian-exim missing (scripts/test.sh adds it)".into())
    }

    pub fn start(env: &Env) -> anyhow::Result<Exim> {
        retry_port_clash(|attempt| Exim::start_in(env, &format!("exim-{attempt}")))
    }

    fn start_in(env: &Env, name: &str) -> anyhow::Result<Exim> {
        let dir = peer_dir(env, name, &["spool", "log"])?;
        let (port, smtps) = (free_port(), free_port());
        let cert = upstream_cert(&dir)?;
        let bin = Exim::binary();
        // Exim's expansion syntax is full of braces: placeholders instead
        // of format!.
        let conf = r#"exim_path = @BIN@
spool_directory = @DIR@/spool
log_file_path = @DIR@/log/%slog
primary_hostname = @NAME@
daemon_smtp_ports = @PORT@ : @SMTPS@
tls_on_connect_ports = @SMTPS@
local_interfaces = 127.0.0.1
keep_environment =
queue_only = true
message_size_limit = 20M
tls_advertise_hosts = *
tls_certificate = @DIR@/cert.pem
tls_privatekey = @DIR@/key.pem
acl_smtp_mail = acl_mail
acl_smtp_rcpt = acl_rcpt
acl_smtp_data = acl_data

begin acl
acl_mail:
  deny senders = @REFUSED_SENDER@
       message = 5.7.1 sender blocked by policy
  accept
acl_rcpt:
  deny recipients = @REFUSED_RCPT@
       message = 5.1.1 no such user here
  accept domains = @LOCAL@
  accept authenticated = *
  deny message = 5.7.1 relay not permitted
acl_data:
  deny condition = ${if match{$h_subject:}{@REFUSED_SUBJECT@}}
       message = 5.7.1 content refused by policy
  accept

begin routers
begin transports

begin authenticators
plain:
  driver = plaintext
  public_name = PLAIN
  server_prompts = :
  server_condition = ${if and {{eq{$auth2}{@USER@}}{eq{$auth3}{@PASSWORD@}}}}
  server_set_id = $auth2
  server_advertise_condition = ${if def:tls_in_cipher}
login:
  driver = plaintext
  public_name = LOGIN
  server_prompts = <| Username: | Password:
  server_condition = ${if and {{eq{$auth1}{@USER@}}{eq{$auth2}{@PASSWORD@}}}}
  server_set_id = $auth1
  server_advertise_condition = ${if def:tls_in_cipher}
"#
        .replace("@BIN@", &bin.display().to_string())
        .replace("@DIR@", &dir.display().to_string())
        .replace("@NAME@", TLS_NAME)
        .replace("@PORT@", &port.to_string())
        .replace("@SMTPS@", &smtps.to_string())
        .replace("@REFUSED_SENDER@", REFUSED_SENDER)
        .replace("@REFUSED_RCPT@", REFUSED_RCPT)
        .replace("@LOCAL@", LOCAL_DOMAIN)
        .replace("@REFUSED_SUBJECT@", REFUSED_SUBJECT)
        .replace("@USER@", USER)
        .replace("@PASSWORD@", PASSWORD);
        std::fs::write(dir.join("exim.conf"), conf)?;
        for p in ["spool", "log", "key.pem"] {
            let st = Command::new("chown")
                .arg("Debian-exim:Debian-exim")
                .arg(dir.join(p))
                .status()?;
            if !st.success() {
                bail!("chown Debian-exim {p} failed");
            }
        }
        let child = Command::new(&bin)
            .arg("-C")
            .arg(dir.join("exim.conf"))
            .arg("-bdf")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr.log"))?)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut ex = Exim {
            dir,
            port,
            smtps,
            cert,
            bin,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", smtps)).is_err()
        {
            if Instant::now() > deadline || ex.child.try_wait()?.is_some() {
                bail!("exim did not listen on {port}/{smtps}:\n{}", ex.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(ex)
    }

    /// Exim's main, reject and panic logs and its stderr.
    pub fn log(&self) -> String {
        ["log/mainlog", "log/rejectlog", "log/paniclog", "stderr.log"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Header and body of queued message `id` as Exim holds it (its own
    /// Received: line first).
    pub fn queued(&self, id: &str) -> anyhow::Result<String> {
        let mut text = String::new();
        for part in ["-Mvh", "-Mvb"] {
            let out = Command::new(&self.bin)
                .arg("-C")
                .arg(self.dir.join("exim.conf"))
                .args([part, id])
                .output()?;
            if !out.status.success() {
                bail!("exim {part} {id}: {}", String::from_utf8_lossy(&out.stderr));
            }
            text.push_str(&String::from_utf8_lossy(&out.stdout));
        }
        Ok(text)
    }
}

impl Drop for Exim {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- exim logs ---\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private OpenSMTPD as the relay's upstream, plain SMTP only: Debian
/// 12's OpenSMTPD 6.8 cannot do TLS with OpenSSL 3 (upstream issues
/// OpenSMTPD#1171 and #1239), so STARTTLS is tested against [`Postfix`]
/// and [`Exim`]. It does not advertise PIPELINING, which makes it the
/// upstream that proves the relay never pipelines to a server that did
/// not offer it. Mail to [`LOCAL_DOMAIN`] is accepted and stays queued
/// (its relay target is a closed port); any other domain is refused at
/// RCPT with `550 Invalid recipient`.
///
/// Its spool and control-socket paths are compiled in (/var/spool/smtpd,
/// /run), so each instance runs in its own mount namespace (`unshare -m`)
/// with private directories bound over them. Like [`Exim`], its Debian
/// package is unpacked by `scripts/test.sh` under `target/peers/opensmtpd`
/// (it excludes Postfix) and its users and chroot directory are added.
pub struct OpenSmtpd {
    pub dir: PathBuf,
    pub port: u16,
    child: std::process::Child,
}

impl OpenSmtpd {
    fn binary() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/peers/opensmtpd/usr/sbin/smtpd")
    }

    /// Why OpenSMTPD tests cannot run here, if they cannot.
    pub fn unavailable() -> Option<String> {
        let bin = OpenSmtpd::binary();
        if !bin.exists() {
            return Some(format!(
                "no smtpd at {} (scripts/test.sh unpacks Debian's opensmtpd there)",
                bin.display()
            ));
        }
        if !crate::is_root() {
            return Some("OpenSMTPD needs root to start".into());
        }
        for user in ["opensmtpd", "opensmtpq"] {
            let ok = Command::new("id")
                .arg(user)
                .output()
                .is_ok_and(|o| o.status.success());
            if !ok {
                return Some(format!("user {user} missing (scripts/test.sh adds it)"));
            }
        }
        for d in ["/var/lib/opensmtpd/empty", "/var/spool/smtpd"] {
            if !Path::new(d).is_dir() {
                return Some(format!("{d} missing (scripts/test.sh creates it)"));
            }
        }
        None
    }

    pub fn start(env: &Env) -> anyhow::Result<OpenSmtpd> {
        let dir = env.path().join("opensmtpd");
        for d in ["spool", "run"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        chmod(&dir.join("spool"), 0o711)?;
        for p in [env.path(), &dir] {
            chmod(p, 0o755)?;
        }
        let port = free_port();
        std::fs::write(
            dir.join("smtpd.conf"),
            format!(
                "listen on 127.0.0.1 port {port} hostname {TLS_NAME}\n\
                 action \"out\" relay host smtp://127.0.0.1:9\n\
                 match from any for domain \"{LOCAL_DOMAIN}\" action \"out\"\n"
            ),
        )?;
        let d = dir.display();
        let child = Command::new("unshare")
            .args(["-m", "sh", "-c"])
            .arg(format!(
                "mount --bind {d}/spool /var/spool/smtpd && mount --bind {d}/run /run && exec {} -d -f {d}/smtpd.conf",
                OpenSmtpd::binary().display()
            ))
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(dir.join("smtpd.log"))?)
            .stderr(std::fs::File::create(dir.join("stderr.log"))?)
            .spawn()
            .context("starting OpenSMTPD in its own mount namespace (unshare -m)")?;
        let mut s = OpenSmtpd { dir, port, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline || s.child.try_wait()?.is_some() {
                bail!("OpenSMTPD did not listen on {port}:\n{}", s.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(s)
    }

    pub fn log(&self) -> String {
        ["smtpd.log", "stderr.log"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Queued message `id` as OpenSMTPD holds it (its own Received: line
    /// first, lines ending in LF).
    pub fn queued(&self, id: &str) -> anyhow::Result<String> {
        let bucket = id.get(..2).unwrap_or(id);
        let p = self
            .dir
            .join("spool/queue")
            .join(bucket)
            .join(id)
            .join("message");
        std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    }
}

impl Drop for OpenSmtpd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- OpenSMTPD log ---\n{}", self.log());
        }
        // smtpd's own processes (it forks several, privilege-separated)
        // stop when their parent does; SIGTERM lets it tell them.
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
