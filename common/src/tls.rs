//! TLS material: the collector's rustls server config (client certificates
//! required, signed by our CA, checked against the revocation list) and the
//! tonic client config used by agents and the CLI. Paths are named in every
//! error.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

mod agents_ca;

pub use agents_ca::AgentsCaFiles;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source} (create it with `kiroku certs`)")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {path}: {message}")]
    Invalid {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
}

/// Paths of the three PEM files every party needs.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// CA certificate that signed every Kiroku certificate.
    pub ca: PathBuf,
    /// This party's certificate.
    pub cert: PathBuf,
    /// This party's private key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// Resolves relative paths against the config file's directory.
    pub fn resolved(&self, config_path: &Path) -> TlsFiles {
        TlsFiles {
            ca: crate::config::resolve_relative(config_path, &self.ca),
            cert: crate::config::resolve_relative(config_path, &self.cert),
            key: crate::config::resolve_relative(config_path, &self.key),
        }
    }

    /// Reads (CA, certificate, key) PEM bytes.
    fn read(&self) -> Result<[Vec<u8>; 3], TlsError> {
        let read = |what, path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                what,
                path: path.to_owned(),
                source,
            })
        };
        Ok([
            read("CA certificate", &self.ca)?,
            read("certificate", &self.cert)?,
            read("private key", &self.key)?,
        ])
    }

    /// The verifier of client certificates: signed by the CA, and not
    /// listed in the CRL in `crl` (PEM, from `kiroku certs revoke`) when
    /// given. The collector keeps it to check the certificates of live
    /// connections again when the CA or the CRL changes.
    pub fn client_verifier(
        &self,
        crl: Option<&Path>,
    ) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
        self.client_verifier_with(crl, None)
    }

    /// [`TlsFiles::client_verifier`], and with `agents` (the agents'
    /// issuing CA and its revocation list) agents' certificates from that
    /// CA too, while every other role is accepted only from the root
    /// (`tls/agents_ca.rs`).
    pub fn client_verifier_with(
        &self,
        crl: Option<&Path>,
        agents: Option<&AgentsCaFiles>,
    ) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for c in pem_certs("CA certificate", &self.ca)? {
            roots
                .add(c)
                .map_err(|e| invalid("CA certificate", &self.ca, &e))?;
        }
        if let Some(agents) = agents {
            return Ok(Arc::new(agents_ca::ScopedVerifier::new(
                roots.into(),
                crl,
                agents,
            )?));
        }
        let mut builder = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.into(),
            rustls::crypto::ring::default_provider().into(),
        );
        if let Some(crl) = crl {
            builder = builder.with_crls(agents_ca::read_crls(crl)?);
        }
        builder
            .build()
            .map_err(|e| invalid("CA certificate or revocation list", &self.ca, &e))
    }

    /// Server side as a rustls config for our own acceptor: TLS 1.2 and
    /// 1.3 only (rustls has nothing older), client certificates checked by
    /// `verifier` (see [`TlsFiles::client_verifier`]); ALPN h2 for gRPC.
    pub fn server_rustls(
        &self,
        verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    ) -> Result<rustls::ServerConfig, TlsError> {
        use rustls_pki_types::PrivateKeyDer;
        use rustls_pki_types::pem::PemObject;
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| invalid("private key", &self.key, &e))?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(
            rustls::crypto::ring::default_provider().into(),
        )
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("TLS setup for", &self.cert, &e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(pem_certs("certificate", &self.cert)?, key)
        .map_err(|e| invalid("certificate and key", &self.cert, &e))?;
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(cfg)
    }

    /// Client side: verify the server against the CA as `server_name`,
    /// present our certificate.
    pub fn client_config(&self, server_name: &str) -> Result<ClientTlsConfig, TlsError> {
        let [ca, cert, key] = self.read()?;
        Ok(ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .identity(Identity::from_pem(cert, key))
            .domain_name(server_name.to_owned()))
    }

    /// Our own identity (role and name) as carried in our certificate.
    pub fn own_identity(&self) -> Result<crate::pki::PeerIdentity, crate::pki::PkiError> {
        crate::pki::identity_from_pem_file(&self.cert)
    }
}

fn invalid(what: &'static str, path: &Path, e: &dyn std::fmt::Display) -> TlsError {
    TlsError::Invalid {
        what,
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// Every certificate in a PEM file (at least one).
fn pem_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, TlsError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let all: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| invalid(what, path, &e))?
        .collect();
    let all = all.map_err(|e| invalid(what, path, &e))?;
    if all.is_empty() {
        return Err(invalid(what, path, &"no PEM certificate in it"));
    }
    Ok(all)
}

/// When a revocation list (PEM) says it should be replaced by a newer one
/// (its `nextUpdate`), in ms since the epoch; `None` when it names no
/// such time or does not parse.
pub fn crl_next_update_ms(path: &Path) -> Option<i64> {
    use rustls_pki_types::CertificateRevocationListDer;
    use rustls_pki_types::pem::PemObject;
    let der = CertificateRevocationListDer::pem_file_iter(path)
        .ok()?
        .next()?
        .ok()?;
    use x509_parser::prelude::FromDer;
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(&der).ok()?;
    let next = crl.next_update()?;
    Some(next.timestamp().saturating_mul(1000))
}
