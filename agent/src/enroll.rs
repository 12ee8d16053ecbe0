//! Enrollment and renewal of the agent's certificate (issue 22).
//!
//! Enrollment: an agent whose `[collector.tls] cert` and `key` do not exist
//! and that has a one-time token (`[collector] enroll_token` or
//! `enroll_token_file`, from `kiroku certs enroll-token`) generates its key
//! here (ECDSA P-256, never leaves the machine), sends a CSR with the token
//! and its computer name to the collector's enrollment listener
//! (`enroll_endpoint`: TLS that authenticates the collector with
//! `tls.ca`; no client certificate) and writes the key (private) and the
//! certificate chain it gets back, then starts as usual. The collector
//! names the agent (its computer name, sanitised, or `enroll_name`) and
//! puts the token's group in the certificate. Transient failures (the
//! collector unreachable) are retried with backoff; a refusal (token
//! unknown, used or expired, name taken) stops the agent with the
//! collector's reason and what to do.
//!
//! Renewal (`renew.rs`): at two thirds of the certificate's validity the
//! agent asks for a new certificate over its mTLS connection
//! (`AgentCerts.Renew`, no token), for the same key, and replaces the
//! certificate file atomically; the shipper's next connection presents it
//! (`shipper::TlsSource`).
//!
//! Files: the key is written to `<key>.enrolling` and the chain to
//! `<cert>.enrolling`, both synced, then renamed: key first, certificate
//! last, so a certificate file exists only with its key. A crash between
//! the two renames is finished at the next start (the key is there and
//! `<cert>.enrolling` too).

mod files;
#[cfg(windows)]
mod key_acl_windows;
mod renew;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use kiroku_proto::EnrollRequest;
use kiroku_proto::enrollment_client::EnrollmentClient;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::config::CollectorConfig;

pub use renew::spawn as spawn_renewal;

/// Longest accepted token (what `kiroku certs enroll-token` makes is far
/// shorter).
const MAX_TOKEN: usize = 256;
const BACKOFF_MIN: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Checks the enrollment settings of `[collector]`; the error names the
/// field.
pub fn check_config(c: &CollectorConfig) -> Result<(), (&'static str, String)> {
    if let Some(t) = &c.enroll_token
        && let Err(m) = check_token(t)
    {
        return Err(("collector.enroll_token", m));
    }
    let wants = c.enroll_token.is_some() || c.enroll_token_file.is_some();
    match &c.enroll_endpoint {
        Some(e) if !e.starts_with("https://") => {
            return Err((
                "collector.enroll_endpoint",
                format!(
                    "{e:?} is not an https:// address: give the collector's enrollment listener, e.g. \"https://collector.example:7444\" (its `[enroll] listen`)"
                ),
            ));
        }
        None if wants => {
            return Err((
                "collector.enroll_endpoint",
                "required with enroll_token / enroll_token_file: the collector's enrollment listener, e.g. \"https://collector.example:7444\" (its `[enroll] listen`)".to_owned(),
            ));
        }
        _ => {}
    }
    // Taken like a computer name: the collector sanitises it.
    if let Some(n) = &c.enroll_name
        && kiroku_common::pki::enroll::agent_id_from_computer_name(n).is_none()
    {
        return Err((
            "collector.enroll_name",
            format!("{n:?} leaves no agent id: use letters, digits, '.', '-' and '_'"),
        ));
    }
    Ok(())
}

fn check_token(t: &str) -> Result<(), String> {
    let t = t.trim();
    if t.is_empty() || t.len() > MAX_TOKEN || !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "not an enrollment token: paste one line of `kiroku certs enroll-token`'s output"
                .to_owned(),
        );
    }
    Ok(())
}

/// The token, from `enroll_token` or the first line of `enroll_token_file`.
fn token(c: &CollectorConfig) -> anyhow::Result<Option<String>> {
    if let Some(t) = &c.enroll_token {
        return Ok(Some(t.trim().to_owned()));
    }
    let Some(path) = &c.enroll_token_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading the enrollment token file {} ([collector] enroll_token_file)",
            path.display()
        )
    })?;
    let t = text.lines().next().unwrap_or("").trim().to_owned();
    check_token(&t).map_err(|m| anyhow::anyhow!("{}: {m}", path.display()))?;
    Ok(Some(t))
}

/// The agent id asked for: `enroll_name`, else this computer's name.
fn wanted_name(c: &CollectorConfig) -> String {
    c.enroll_name.clone().unwrap_or_else(computer_name)
}

/// This computer's name without its domain (the collector sanitises it).
fn computer_name() -> String {
    let full = sysinfo::System::host_name().unwrap_or_default();
    full.split('.').next().unwrap_or_default().to_owned()
}

/// Makes sure the agent has its certificate and key: nothing to do when
/// both exist; enrolls when neither does and a token is configured.
pub async fn ensure_enrolled(c: &CollectorConfig, server_name: &str) -> anyhow::Result<()> {
    let (cert, key) = (&c.tls.cert, &c.tls.key);
    files::finish_interrupted(cert, key)?;
    match (cert.exists(), key.exists()) {
        (true, true) => return Ok(()),
        (false, false) => {}
        (has_cert, _) => {
            let (there, missing) = if has_cert { (cert, key) } else { (key, cert) };
            anyhow::bail!(
                "{} exists but {} does not: give the agent both its certificate and its key ([collector.tls] cert, key), or remove {} to enroll anew with a token",
                there.display(),
                missing.display(),
                there.display()
            );
        }
    }
    let Some(token) = token(c)? else {
        anyhow::bail!(
            "the agent's certificate {} does not exist: issue one with `kiroku certs issue --role agent --name NAME` and copy it and its key there, or give a one-time token from `kiroku certs enroll-token` as `[collector] enroll_token` with `enroll_endpoint`",
            cert.display()
        );
    };
    let Some(endpoint) = &c.enroll_endpoint else {
        anyhow::bail!("[collector] enroll_endpoint is required to enroll");
    };
    let name = wanted_name(c);
    let key_pair = files::pending_key(key)?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key_pair)
        .context("making the certificate signing request")?;
    let req = EnrollRequest {
        token,
        csr_der: csr.der().to_vec(),
        computer_name: name.clone(),
        agent_version: kiroku_common::VERSION.to_owned(),
    };
    let ca = std::fs::read(&c.tls.ca).with_context(|| {
        format!(
            "reading the CA certificate {} ([collector.tls] ca), which authenticates the collector's enrollment listener: copy the Kiroku CA's ca.pem there",
            c.tls.ca.display()
        )
    })?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name(server_name.to_owned());
    tracing::info!(endpoint = %endpoint, name = %name, "no certificate yet: enrolling with the configured token");
    let mut backoff = BACKOFF_MIN;
    let resp = loop {
        match call(endpoint, &tls, req.clone()).await {
            Ok(r) => break r,
            Err(Failure::Refused(st)) => {
                // This key will not be enrolled: the next try makes a new one.
                let _ = std::fs::remove_file(pending(key));
                anyhow::bail!(
                    "the collector at {endpoint} refused the enrollment: {} ({:?}); {}",
                    st.message(),
                    st.code(),
                    what_to_do(st.code())
                )
            }
            Err(Failure::Transient(e)) => {
                tracing::warn!(endpoint = %endpoint, error = %format!("{e:#}"), retry_in_s = backoff.as_secs(), "enrollment failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    };
    files::check_issued(&resp.cert_chain_pem, &key_pair)?;
    files::write_enrolled(cert, key, &key_pair.serialize_pem(), &resp.cert_chain_pem)?;
    tracing::info!(
        agent_id = %resp.agent_id, group = %resp.group, cert = %cert.display(), key = %key.display(),
        "enrolled: certificate and key written"
    );
    Ok(())
}

fn what_to_do(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        AlreadyExists => {
            "another agent holds that name: retire it (`kiroku agents retire NAME --reason ...`) or set `[collector] enroll_name`"
        }
        PermissionDenied | Unauthenticated | NotFound => {
            "ask the administrator for a new token (`kiroku certs enroll-token`); each token enrolls one agent, once, before it expires"
        }
        ResourceExhausted => "too many attempts from this address: wait a few minutes",
        _ => "see the collector's log",
    }
}

enum Failure {
    /// The collector answered no: retrying does not help.
    Refused(tonic::Status),
    Transient(anyhow::Error),
}

async fn call(
    endpoint: &str,
    tls: &ClientTlsConfig,
    req: EnrollRequest,
) -> Result<kiroku_proto::EnrollResponse, Failure> {
    let channel = Endpoint::from_shared(endpoint.to_owned())
        .map_err(|e| Failure::Refused(tonic::Status::invalid_argument(e.to_string())))?
        .tls_config(tls.clone())
        .map_err(|e| Failure::Transient(e.into()))?
        .connect_timeout(Duration::from_secs(10))
        .timeout(CALL_TIMEOUT)
        .connect()
        .await
        .map_err(|e| Failure::Transient(anyhow::Error::new(e).context("connecting")))?;
    match EnrollmentClient::new(channel).enroll(req).await {
        Ok(r) => Ok(r.into_inner()),
        Err(st) if is_refusal(st.code()) => Err(Failure::Refused(st)),
        Err(st) => Err(Failure::Transient(st.into())),
    }
}

fn is_refusal(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        InvalidArgument
            | PermissionDenied
            | Unauthenticated
            | NotFound
            | AlreadyExists
            | FailedPrecondition
    )
}

/// `<path>.enrolling`: where a file is written before it is renamed.
fn pending(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".enrolling");
    PathBuf::from(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collector(extra: &str) -> CollectorConfig {
        let text = format!(
            "endpoint = \"https://c:7443\"\n{extra}\n[tls]\nca = \"ca.pem\"\ncert = \"a.pem\"\nkey = \"a.key\"\n"
        );
        toml::from_str(&text).expect("collector config")
    }

    #[test]
    fn enrollment_settings_are_checked_naming_the_field() {
        let cases: &[(&str, Option<&str>)] = &[
            ("", None),
            (
                "enroll_token = \"ket1-ab\"\nenroll_endpoint = \"https://c:7444\"",
                None,
            ),
            (
                "enroll_token_file = \"t.txt\"\nenroll_endpoint = \"https://c:7444\"",
                None,
            ),
            (
                "enroll_token = \"ket1-ab\"",
                Some("collector.enroll_endpoint"),
            ),
            (
                "enroll_token_file = \"t\"",
                Some("collector.enroll_endpoint"),
            ),
            (
                "enroll_token = \"ket1-ab\"\nenroll_endpoint = \"http://c:7444\"",
                Some("collector.enroll_endpoint"),
            ),
            (
                "enroll_token = \"\"\nenroll_endpoint = \"https://c:7444\"",
                Some("collector.enroll_token"),
            ),
            (
                "enroll_token = \"a b\"\nenroll_endpoint = \"https://c:7444\"",
                Some("collector.enroll_token"),
            ),
            ("enroll_name = \"PC 42\"", None),
            ("enroll_name = \"営業\"", Some("collector.enroll_name")),
        ];
        for (extra, want) in cases {
            let got = check_config(&collector(extra)).err().map(|(f, _)| f);
            assert_eq!(got, *want, "{extra:?}");
        }
    }

    #[test]
    fn enrolled_files_are_written_key_first_and_an_interrupted_pair_is_finished() {
        let dir =
            std::env::temp_dir().join(format!("kiroku-enroll-files-{}", rand::random::<u64>()));
        let (cert, key) = (dir.join("sub/agent.pem"), dir.join("sub/agent.key"));
        files::write_enrolled(&cert, &key, "KEY", "CHAIN").expect("write");
        assert_eq!(std::fs::read_to_string(&key).expect("key"), "KEY");
        assert_eq!(std::fs::read_to_string(&cert).expect("cert"), "CHAIN");
        assert!(!pending(&cert).exists() && !pending(&key).exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).expect("meta").permissions().mode();
            assert_eq!(mode & 0o077, 0, "{mode:o}");
        }
        // A crash after the key's rename: the certificate still pending.
        std::fs::rename(&cert, pending(&cert)).expect("rename");
        files::finish_interrupted(&cert, &key).expect("finish");
        assert_eq!(std::fs::read_to_string(&cert).expect("cert"), "CHAIN");
        files::replace_cert(&cert, "NEW").expect("replace");
        assert_eq!(std::fs::read_to_string(&cert).expect("cert"), "NEW");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_returned_certificate_must_be_for_our_key_and_an_agent() {
        let dir = std::env::temp_dir().join(format!("kiroku-enroll-chk-{}", rand::random::<u64>()));
        let pki = kiroku_common::pki::PkiDir::new(&dir);
        pki.init_ca("t").expect("ca");
        pki.init_agents_ca("a", 30).expect("agents ca");
        let issuer = kiroku_common::pki::enroll::AgentIssuer::new(
            std::fs::read_to_string(pki.agents_ca_cert()).expect("read"),
            std::fs::read_to_string(pki.agents_ca_key()).expect("read"),
        )
        .expect("issuer");
        let ours = rcgen::KeyPair::generate().expect("key");
        let other = rcgen::KeyPair::generate().expect("key");
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&ours)
            .expect("csr");
        let csr = kiroku_common::pki::enroll::check_csr(csr.der()).expect("csr");
        let issued = issuer
            .issue(&csr, "pc-1", None, Duration::from_secs(60))
            .expect("issue");
        files::check_issued(&issued.chain_pem, &ours).expect("ours");
        assert!(files::check_issued(&issued.chain_pem, &other).is_err());
        assert!(files::check_issued("junk", &ours).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
