//! The collector's client-certificate verifier when an agents' issuing CA
//! exists (DESIGN.md, "Certificate custody"): the root CA, kept offline,
//! issues people's and the collector's certificates and the agents CA; the
//! agents CA, held by the collector, issues agents only.
//!
//! A client certificate is accepted when either
//! - the root signed it directly (any role; agents issued before the agents
//!   CA existed stay accepted until they expire or the root's revocation
//!   list names them), checked with no intermediate at all, so a
//!   certificate under any intermediate never passes as root-issued; or
//! - the configured agents CA signed it, the agents CA chaining to the root,
//!   checked with that CA (not whatever intermediate the client sends)
//!   against the agents' revocation list (and the root's list for the
//!   agents CA itself), and it carries the role `agent`. Any other role
//!   from the agents CA is refused: a stolen collector key mints agents,
//!   never investigators or admins.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::{TlsError, invalid, pem_certs};
use crate::pki::Role;

/// The agents' issuing CA as the collector's verifier sees it: its
/// certificate and its revocation list (which the collector writes).
#[derive(Debug, Clone)]
pub struct AgentsCaFiles {
    pub cert: PathBuf,
    pub crl: PathBuf,
}

/// See the module documentation.
#[derive(Debug)]
pub(super) struct ScopedVerifier {
    /// The root alone, with the root's list.
    root: Arc<dyn ClientCertVerifier>,
    /// The root as anchor, the agents' list (and the root's).
    agents: Arc<dyn ClientCertVerifier>,
    /// The agents CA certificate, the only intermediate used.
    agents_ca: Vec<CertificateDer<'static>>,
}

/// Why an agents-CA certificate of another role is refused.
#[derive(Debug)]
struct NotAnAgent(String);

impl std::fmt::Display for NotAnAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotAnAgent {}

pub(super) fn read_crls(
    path: &Path,
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    use rustls_pki_types::pem::PemObject;
    let crls: Result<Vec<_>, _> = CertificateRevocationListDer::pem_file_iter(path)
        .map_err(|e| invalid("revocation list", path, &e))?
        .collect();
    let crls = crls.map_err(|e| invalid("revocation list", path, &e))?;
    if crls.is_empty() {
        return Err(invalid("revocation list", path, &"no PEM X509 CRL in it"));
    }
    Ok(crls)
}

impl ScopedVerifier {
    pub(super) fn new(
        roots: Arc<rustls::RootCertStore>,
        root_crl: Option<&Path>,
        agents: &AgentsCaFiles,
    ) -> Result<ScopedVerifier, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let root_crls = root_crl.map(read_crls).transpose()?;
        let mut root = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        );
        if let Some(c) = &root_crls {
            root = root.with_crls(c.iter().cloned());
        }
        let root = root
            .build()
            .map_err(|e| invalid("CA certificate or revocation list", Path::new("(root)"), &e))?;
        let mut via = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider)
            .with_crls(read_crls(&agents.crl)?);
        via = match &root_crls {
            // The agent's certificate against the agents' list, the agents
            // CA against the root's: every link's status must be known.
            Some(c) => via.with_crls(c.iter().cloned()),
            // No root list: nothing can revoke the agents CA itself.
            None => via.only_check_end_entity_revocation(),
        };
        let via = via
            .build()
            .map_err(|e| invalid("agents' revocation list", &agents.crl, &e))?;
        let agents_ca = pem_certs("agents CA certificate", &agents.cert)?;
        Ok(ScopedVerifier {
            root,
            agents: via,
            agents_ca,
        })
    }
}

impl ClientCertVerifier for ScopedVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.root.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let root_err = match self.root.verify_client_cert(end_entity, &[], now) {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        match self
            .agents
            .verify_client_cert(end_entity, &self.agents_ca, now)
        {
            Ok(v) => match crate::pki::identity_from_der(end_entity.as_ref()) {
                Ok(id) if id.role == Role::Agent => Ok(v),
                Ok(id) => Err(refused(format!(
                    "the certificate of {id} was issued by the agents' issuing CA, which may issue agent certificates only (people's certificates come from the root CA)"
                ))),
                Err(e) => Err(refused(format!(
                    "a certificate from the agents' issuing CA without a Kiroku identity: {e}"
                ))),
            },
            // Neither CA issued it: the root's answer says so.
            Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
                Err(root_err)
            }
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.root.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.root.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.root.supported_verify_schemes()
    }
}

fn refused(message: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
        NotAnAgent(message),
    ))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::crl::{CrlSigner, Revoked};
    use crate::pki::{PkiDir, Role};
    use crate::tls::TlsFiles;

    fn chain(path: &Path) -> Vec<CertificateDer<'static>> {
        use rustls_pki_types::pem::PemObject;
        CertificateDer::pem_file_iter(path)
            .expect("open")
            .map(|c| c.expect("pem"))
            .collect()
    }

    fn verdict(v: &dyn ClientCertVerifier, path: &Path) -> Result<(), String> {
        let c = chain(path);
        v.verify_client_cert(&c[0], &c[1..], UnixTime::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// rustls/webpki with the agents CA as intermediate and two lists:
    /// who gets in, who does not, and that a new agents' list revokes.
    #[test]
    fn agents_ca_admits_agents_only_and_its_list_revokes() {
        let tmp = std::env::temp_dir().join(format!("kiroku-scoped-{}", rand::random::<u64>()));
        let pki = PkiDir::new(tmp.join("pki"));
        pki.init_ca("root").expect("root");
        // A legacy agent, issued by the root before the agents CA existed.
        let (legacy, _) = pki.issue(Role::Agent, "legacy", &[], 30).expect("legacy");
        pki.init_agents_ca("agents", 30).expect("agents ca");
        let (agent, _) = pki.issue(Role::Agent, "a1", &[], 30).expect("agent");
        let (agent2, _) = pki.issue(Role::Agent, "a2", &[], 30).expect("agent");
        let (admin, _) = pki.issue(Role::Admin, "boss", &[], 30).expect("admin");
        // An admin certificate the agents CA signed (a stolen collector key).
        let rogue = PkiDir::new(tmp.join("rogue"));
        std::fs::create_dir_all(&rogue.dir).expect("mkdir");
        std::fs::copy(pki.agents_ca_cert(), rogue.ca_cert()).expect("cp");
        std::fs::copy(pki.agents_ca_key(), rogue.ca_key()).expect("cp");
        let (evil, _) = rogue.issue(Role::Admin, "evil", &[], 30).expect("evil");
        let mut with_chain = std::fs::read(&evil).expect("read");
        with_chain.extend(std::fs::read(pki.agents_ca_cert()).expect("read"));
        std::fs::write(&evil, with_chain).expect("write");
        // Another root altogether.
        let other = PkiDir::new(tmp.join("other"));
        other.init_ca("other").expect("other");
        let (stranger, _) = other.issue(Role::Agent, "x", &[], 30).expect("x");

        let read_s = |p: PathBuf| std::fs::read_to_string(p).expect("read");
        let signer = CrlSigner::new(
            &read_s(pki.agents_ca_cert()),
            &read_s(pki.agents_ca_key()),
            "agents CA",
        )
        .expect("signer");
        let crl = pki.agents_crl();
        let now = crate::now_ms() / 1000;
        std::fs::write(&crl, signer.sign(&[], now, 30, 1).expect("sign")).expect("write");
        let files = TlsFiles {
            ca: pki.ca_cert(),
            cert: PathBuf::new(),
            key: PathBuf::new(),
        };
        let agents = AgentsCaFiles {
            cert: pki.agents_ca_cert(),
            crl: crl.clone(),
        };
        pki.write_crl(30).expect("root crl");
        for root_crl in [None, Some(pki.crl())] {
            let v = files
                .client_verifier_with(root_crl.as_deref(), Some(&agents))
                .expect("verifier");
            for ok in [&legacy, &agent, &agent2, &admin] {
                assert_eq!(verdict(&*v, ok), Ok(()), "{} {root_crl:?}", ok.display());
            }
            let e = verdict(&*v, &evil).expect_err("admin from the agents CA");
            assert!(e.contains("agent certificates only"), "{e}");
            assert!(verdict(&*v, &stranger).is_err());
        }
        // Without the agents CA configured, its agents are strangers.
        let plain = files.client_verifier(Some(&pki.crl())).expect("verifier");
        assert!(verdict(&*plain, &agent).is_err());
        assert_eq!(verdict(&*plain, &legacy), Ok(()));

        // Revoke a1 in the agents' list: a1 refused, a2 still in.
        let der = chain(&agent).remove(0);
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).expect("parse");
        let gone = Revoked {
            serial: cert.raw_serial().to_vec(),
            at_s: now,
        };
        std::fs::write(&crl, signer.sign(&[gone], now, 30, 2).expect("sign")).expect("write");
        let v = files
            .client_verifier_with(Some(&pki.crl()), Some(&agents))
            .expect("verifier");
        let e = verdict(&*v, &agent).expect_err("revoked");
        assert!(e.to_lowercase().contains("revoked"), "{e}");
        assert_eq!(verdict(&*v, &agent2), Ok(()));
        // The root's list revoking the agents CA itself shuts out its agents
        // (and only them).
        pki.revoke(&pki.agents_ca_cert(), 30)
            .expect("revoke agents CA");
        let v = files
            .client_verifier_with(Some(&pki.crl()), Some(&agents))
            .expect("verifier");
        assert!(verdict(&*v, &agent2).is_err());
        assert_eq!(verdict(&*v, &legacy), Ok(()));
        assert_eq!(verdict(&*v, &admin), Ok(()));
        std::fs::remove_dir_all(&tmp).ok();
    }
}
