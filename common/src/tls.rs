//! TLS material for tonic: the collector's server config (client
//! certificates required, signed by our CA) and the client config used by
//! agents and the CLI. Paths are named in every error.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source} (create it with `kiroku certs`)")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
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

    /// Server side: present our certificate, require a client certificate
    /// signed by the CA.
    pub fn server_config(&self) -> Result<ServerTlsConfig, TlsError> {
        let [ca, cert, key] = self.read()?;
        Ok(ServerTlsConfig::new()
            .identity(Identity::from_pem(cert, key))
            .client_ca_root(Certificate::from_pem(ca))
            .client_auth_optional(false))
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
