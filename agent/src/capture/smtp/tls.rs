//! Byte streams of the relay (plain TCP or TLS, on either side) and the
//! rustls configurations: verified or opportunistic towards the upstream,
//! our certificate towards clients that ask for STARTTLS.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Anything the relay can speak SMTP over.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// One side of a relayed connection: buffered for reading, writes pass
/// straight through.
pub type Conn = BufReader<Box<dyn Io>>;

pub fn conn(io: impl Io + 'static) -> Conn {
    BufReader::with_capacity(16 * 1024, Box::new(io))
}

/// A stand-in while a stream is taken out for a TLS handshake.
pub fn placeholder() -> Conn {
    conn(tokio::io::duplex(1).0)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Client-side TLS towards the upstream.
#[derive(Clone)]
pub struct UpstreamTls {
    verified: TlsConnector,
    /// The real (WebPKI) verifier, consulted but not enforced in
    /// opportunistic mode.
    webpki: Arc<dyn ServerCertVerifier>,
    name: ServerName<'static>,
}

impl UpstreamTls {
    /// `ca`: PEM bundle to trust instead of the system roots.
    pub fn new(ca: Option<&Path>, name: &str) -> anyhow::Result<UpstreamTls> {
        let mut roots = RootCertStore::empty();
        match ca {
            Some(path) => {
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                    .and_then(|it| it.collect::<Result<_, _>>())
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "cannot read smtp.upstream_ca {}: {e} (give a PEM file of CA certificates)",
                            path.display()
                        )
                    })?;
                if certs.is_empty() {
                    anyhow::bail!(
                        "smtp.upstream_ca {} holds no PEM certificate",
                        path.display()
                    );
                }
                for c in certs {
                    roots.add(c).map_err(|e| {
                        anyhow::anyhow!("smtp.upstream_ca {}: bad certificate: {e}", path.display())
                    })?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for e in &found.errors {
                    tracing::warn!(error = %e, "reading the system's CA certificates");
                }
                let (added, _ignored) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    tracing::warn!(
                        "no system CA certificates found; verified upstream TLS will fail (install ca-certificates or set smtp.upstream_ca)"
                    );
                }
            }
        }
        let roots = Arc::new(roots);
        let verified = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        let webpki: Arc<dyn ServerCertVerifier> =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| anyhow::anyhow!("upstream TLS verifier: {e}"))?;
        let name = ServerName::try_from(name.to_owned()).map_err(|e| {
            anyhow::anyhow!("smtp.upstream_tls_name {name:?} is not a valid DNS name or IP: {e}")
        })?;
        Ok(UpstreamTls {
            verified: TlsConnector::from(Arc::new(verified)),
            webpki,
            name,
        })
    }

    /// Runs the TLS handshake over `io`. Returns the new stream and a
    /// description for the record.
    pub async fn handshake(
        &self,
        io: Box<dyn Io>,
        verify: bool,
    ) -> std::io::Result<(Box<dyn Io>, String)> {
        if verify {
            let s = self.verified.connect(self.name.clone(), io).await?;
            let desc = describe(
                s.get_ref().1.protocol_version(),
                s.get_ref().1.negotiated_cipher_suite(),
            );
            return Ok((Box::new(s), desc));
        }
        // Opportunistic: the certificate is checked and the result noted,
        // but a failure does not stop the handshake (RFC 7435). A config
        // per connection carries that connection's result.
        let verdict = Arc::new(AtomicBool::new(false));
        let cfg = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Noting {
                inner: self.webpki.clone(),
                passed: verdict.clone(),
            }))
            .with_no_client_auth();
        let s = TlsConnector::from(Arc::new(cfg))
            .connect(self.name.clone(), io)
            .await?;
        let mut desc = describe(
            s.get_ref().1.protocol_version(),
            s.get_ref().1.negotiated_cipher_suite(),
        );
        if !verdict.load(Ordering::SeqCst) {
            desc.push_str(" unverified");
        }
        Ok((Box::new(s), desc))
    }
}

/// Server-side TLS offered to clients.
pub fn acceptor(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| anyhow::anyhow!("cannot read smtp.tls_cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("smtp.tls_cert {} holds no PEM certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("cannot read smtp.tls_key {}: {e}", key.display()))?;
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            anyhow::anyhow!("smtp.tls_cert / smtp.tls_key do not make a usable pair: {e}")
        })?;
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

pub async fn accept(
    acceptor: &TlsAcceptor,
    io: Box<dyn Io>,
) -> std::io::Result<(Box<dyn Io>, String)> {
    let s = acceptor.accept(io).await?;
    let desc = describe(
        s.get_ref().1.protocol_version(),
        s.get_ref().1.negotiated_cipher_suite(),
    );
    Ok((Box::new(s), desc))
}

fn describe(
    v: Option<rustls::ProtocolVersion>,
    cs: Option<rustls::SupportedCipherSuite>,
) -> String {
    format!(
        "{} {}",
        v.map(|v| format!("{v:?}")).unwrap_or_default(),
        cs.map(|c| format!("{:?}", c.suite())).unwrap_or_default()
    )
}

/// Opportunistic TLS (RFC 7435): the real verifier is asked and its answer
/// noted, but any certificate is accepted, so the session is at least
/// encrypted against passive listeners. Handshake signatures are still
/// checked, so the handshake itself is sound.
#[derive(Debug)]
struct Noting {
    inner: Arc<dyn ServerCertVerifier>,
    passed: Arc<AtomicBool>,
}

impl ServerCertVerifier for Noting {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ok = self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .is_ok();
        self.passed.store(ok, Ordering::SeqCst);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
