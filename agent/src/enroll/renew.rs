//! Renewal of the agent's certificate over its mTLS connection to the
//! collector (`AgentCerts.Renew`): due at two thirds of the certificate's
//! validity, for the same key (a CSR signed with it), no token. The new
//! chain replaces the certificate file atomically; the shipper's next
//! connection presents it (the running stream keeps the old one, valid for
//! a third of its life still). A certificate the collector cannot renew
//! (issued by the root, not the agents' issuing CA) is said once and asked
//! about again a day later. A renewal the collector says is not due yet
//! (its clock: from half the validity on), or a new certificate already
//! due by our clock, means a clock running ahead: asked again in an hour.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use kiroku_common::tls::TlsFiles;
use kiroku_proto::RenewRequest;
use kiroku_proto::agent_certs_client::AgentCertsClient;
use tonic::transport::Endpoint;

/// Longest sleep between two looks at the certificate (it may be replaced
/// by hand meanwhile).
const CHECK_EVERY: Duration = Duration::from_secs(3600);
const RETRY_MIN: Duration = Duration::from_secs(10);
const REFUSED_RETRY: Duration = Duration::from_secs(86_400);

/// Starts the renewal task.
pub fn spawn(tls: TlsFiles, endpoint: String, server_name: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let check = crate::test_hooks::renew_check_every().unwrap_or(CHECK_EVERY);
        loop {
            let wait = match due_in(&tls.cert) {
                Ok(d) if d.is_zero() => match renew(&tls, &endpoint, &server_name).await {
                    Ok(not_after) => {
                        tracing::info!(cert = %tls.cert.display(), not_after_ms = not_after, "certificate renewed; the next connection to the collector uses it");
                        if matches!(due_in(&tls.cert), Ok(d) if d.is_zero()) {
                            // Due at once by our clock: it runs ahead (or
                            // the collector's behind). Do not ask again
                            // every few seconds.
                            tracing::warn!(cert = %tls.cert.display(), "the renewed certificate is already due for renewal by this computer's clock: check the clock; asking again in an hour");
                            check.max(RETRY_MIN)
                        } else {
                            RETRY_MIN.min(check)
                        }
                    }
                    Err(Failure::TooEarly(st)) => {
                        tracing::warn!(cert = %tls.cert.display(), reason = %st.message(), "the collector says the certificate is not due for renewal yet: check this computer's clock; asking again in an hour");
                        check.max(RETRY_MIN)
                    }
                    Err(Failure::Refused(st)) => {
                        tracing::warn!(cert = %tls.cert.display(), code = ?st.code(), reason = %st.message(), "the collector does not renew this certificate; renew it by hand before it expires (`kiroku certs issue --role agent`), or enroll anew with a token");
                        REFUSED_RETRY
                    }
                    Err(Failure::Transient(e)) => {
                        tracing::warn!(cert = %tls.cert.display(), error = %format!("{e:#}"), "certificate renewal failed; retrying");
                        RETRY_MIN.max(check.min(Duration::from_secs(600)) / 10)
                    }
                },
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(cert = %tls.cert.display(), error = %format!("{e:#}"), "cannot read the certificate's validity for renewal");
                    check
                }
            };
            tokio::time::sleep(wait.min(check)).await;
        }
    })
}

/// Time until renewal is due (zero: now).
fn due_in(cert: &std::path::Path) -> anyhow::Result<Duration> {
    let pem = std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
    let (from, to) = validity(&super::files::first_der(&pem)?)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Ok(Duration::from_secs(
        u64::try_from(due_at(from, to) - now).unwrap_or(0),
    ))
}

/// notBefore and notAfter, in seconds since the epoch.
fn validity(der: &[u8]) -> anyhow::Result<(i64, i64)> {
    let (_, c) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| anyhow::anyhow!("the certificate does not parse: {e}"))?;
    let v = c.validity();
    Ok((v.not_before.timestamp(), v.not_after.timestamp()))
}

/// Renewal is due at two thirds of the validity.
pub(crate) fn due_at(not_before: i64, not_after: i64) -> i64 {
    not_before + (not_after - not_before).max(0) * 2 / 3
}

enum Failure {
    Refused(tonic::Status),
    /// The collector's clock says it is not due yet.
    TooEarly(tonic::Status),
    Transient(anyhow::Error),
}

/// Asks for and writes the new certificate; its notAfter (ms).
async fn renew(tls: &TlsFiles, endpoint: &str, server_name: &str) -> Result<i64, Failure> {
    let t = |e: anyhow::Error| Failure::Transient(e);
    let key_pem = std::fs::read_to_string(&tls.key)
        .with_context(|| format!("reading {}", tls.key.display()))
        .map_err(t)?;
    let key = rcgen::KeyPair::from_pem(&key_pem)
        .with_context(|| format!("{}: not a key rcgen reads", tls.key.display()))
        .map_err(t)?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .context("making the certificate signing request")
        .map_err(t)?;
    let config = tls.client_config(server_name).map_err(|e| t(e.into()))?;
    let channel = Endpoint::from_shared(endpoint.to_owned())
        .map_err(|e| t(e.into()))?
        .tls_config(config)
        .map_err(|e| t(e.into()))?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .map_err(|e| t(anyhow::Error::new(e).context("connecting to the collector")))?;
    let resp = match AgentCertsClient::new(channel)
        .renew(RenewRequest {
            csr_der: csr.der().to_vec(),
        })
        .await
    {
        Ok(r) => r.into_inner(),
        Err(st)
            if matches!(
                st.code(),
                tonic::Code::FailedPrecondition
                    | tonic::Code::PermissionDenied
                    | tonic::Code::Unimplemented
            ) =>
        {
            return Err(Failure::Refused(st));
        }
        Err(st) if st.code() == tonic::Code::ResourceExhausted => {
            return Err(Failure::TooEarly(st));
        }
        Err(st) => return Err(t(st.into())),
    };
    super::files::check_issued(&resp.cert_chain_pem, &key).map_err(t)?;
    super::files::replace_cert(&tls.cert, &resp.cert_chain_pem).map_err(t)?;
    Ok(resp.not_after_ms)
}

#[cfg(test)]
mod tests {
    use super::due_at;

    #[test]
    fn renewal_is_due_at_two_thirds() {
        for (from, to, want) in [
            (0, 300, 200),
            (1000, 1000, 1000),
            (1000, 900, 1000),
            (0, 90 * 86_400, 60 * 86_400),
        ] {
            assert_eq!(due_at(from, to), want, "{from}..{to}");
        }
    }
}
