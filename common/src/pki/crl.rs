//! Revocation lists of a CA whose key is at hand: the agents' issuing CA
//! the collector holds signs the agents' list with these (retiring an
//! agent), and reads back the list it wrote.

use rcgen::{Issuer, KeyPair, SerialNumber};

use super::PkiError;

/// One revoked certificate of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// The certificate's serial number, as encoded (big-endian bytes).
    pub serial: Vec<u8>,
    /// When it was revoked, seconds since the epoch.
    pub at_s: i64,
}

/// A CA certificate and its key, checked to belong together.
pub struct CrlSigner {
    issuer: Issuer<'static, KeyPair>,
    /// The CA's subject (DER), what its certificates name as issuer.
    subject: Vec<u8>,
}

impl CrlSigner {
    /// `what` names the files in errors.
    pub fn new(cert_pem: &str, key_pem: &str, what: &str) -> Result<CrlSigner, PkiError> {
        let bad = |message: String| PkiError::BadCert {
            what: what.to_owned(),
            message,
        };
        let key = KeyPair::from_pem(key_pem)?;
        let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
            .map_err(|e| bad(e.to_string()))?;
        let (_, cert) =
            x509_parser::parse_x509_certificate(&pem.contents).map_err(|e| bad(e.to_string()))?;
        if cert
            .tbs_certificate
            .subject_pki
            .subject_public_key
            .data
            .as_ref()
            != key.public_key_raw()
        {
            return Err(bad(
                "the key does not belong to the certificate (give the key made with it)".into(),
            ));
        }
        if !cert.is_ca() {
            return Err(bad("not a CA certificate".into()));
        }
        let subject = cert.tbs_certificate.subject.as_raw().to_vec();
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(CrlSigner { issuer, subject })
    }

    /// Whether this CA signed the certificate `der` (by the issuer name it
    /// carries; the certificate was verified when it connected).
    pub fn issued(&self, der: &[u8]) -> bool {
        x509_parser::parse_x509_certificate(der)
            .is_ok_and(|(_, c)| c.tbs_certificate.issuer.as_raw() == self.subject.as_slice())
    }

    /// A list (PEM) revoking `revoked` (reason: cessation of operation),
    /// valid from a few minutes ago until `days` from `now_s`, numbered
    /// `number` (must increase from one list to the next).
    pub fn sign(
        &self,
        revoked: &[Revoked],
        now_s: i64,
        days: u32,
        number: u64,
    ) -> Result<String, PkiError> {
        let at = |s: i64| {
            time::OffsetDateTime::from_unix_timestamp(s).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        };
        let now = at(now_s);
        let params = rcgen::CertificateRevocationListParams {
            this_update: now - time::Duration::minutes(5),
            next_update: now + time::Duration::days(i64::from(days.max(1))),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|r| rcgen::RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&r.serial),
                    revocation_time: at(r.at_s),
                    reason_code: Some(rcgen::RevocationReason::CessationOfOperation),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }
}

/// What a list (PEM) revokes, and its `nextUpdate` (seconds).
pub fn read(pem: &[u8], what: &str) -> Result<(Vec<Revoked>, Option<i64>), PkiError> {
    use x509_parser::prelude::FromDer;
    let bad = |message: String| PkiError::BadCert {
        what: what.to_owned(),
        message,
    };
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| bad(e.to_string()))?;
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(&pem.contents)
        .map_err(|e| bad(e.to_string()))?;
    let revoked = crl
        .iter_revoked_certificates()
        .map(|r| Revoked {
            serial: r.raw_serial().to_vec(),
            at_s: r.revocation_date.timestamp(),
        })
        .collect();
    Ok((revoked, crl.next_update().map(|t| t.timestamp())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{PkiDir, Role};

    #[test]
    fn a_list_signed_here_reads_back() {
        let dir = std::env::temp_dir().join(format!("kiroku-crl-test-{}", rand::random::<u64>()));
        let pki = PkiDir::new(&dir);
        pki.init_ca("root").expect("root");
        pki.init_agents_ca("agents", 30).expect("agents ca");
        let read_s = |p: std::path::PathBuf| std::fs::read_to_string(p).expect("read");
        let signer = CrlSigner::new(
            &read_s(pki.agents_ca_cert()),
            &read_s(pki.agents_ca_key()),
            "agents CA",
        )
        .expect("signer");
        // The root's key does not belong to the agents CA certificate.
        assert!(CrlSigner::new(&read_s(pki.agents_ca_cert()), &read_s(pki.ca_key()), "x").is_err());
        let (agent, _) = pki.issue(Role::Agent, "a1", &[], 30).expect("agent");
        let (admin, _) = pki.issue(Role::Admin, "boss", &[], 30).expect("admin");
        let der = |p: &std::path::Path| {
            x509_parser::pem::parse_x509_pem(&std::fs::read(p).expect("read"))
                .expect("pem")
                .1
                .contents
        };
        assert!(signer.issued(&der(&agent)));
        assert!(!signer.issued(&der(&admin)));
        let agent_der = der(&agent);
        let (_, cert) = x509_parser::parse_x509_certificate(&agent_der).expect("parse");
        let gone = Revoked {
            serial: cert.raw_serial().to_vec(),
            at_s: 1_700_000_000,
        };
        let pem = signer
            .sign(std::slice::from_ref(&gone), 1_700_000_100, 30, 7)
            .expect("sign");
        let (back, next) = read(pem.as_bytes(), "list").expect("read");
        assert_eq!(back, vec![gone]);
        assert_eq!(next, Some(1_700_000_100 + 30 * 86_400));
        std::fs::remove_dir_all(&dir).ok();
    }
}
