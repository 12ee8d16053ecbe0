//! Issuing an agent's certificate for a key the agent made itself
//! (enrollment and renewal, issue 22): the collector, which holds the
//! agents' issuing CA (DESIGN.md, "Certificate custody"), checks the
//! agent's certificate signing request (its signature, its key type) and
//! signs a certificate with role agent, the name the collector chose and
//! the group of the token, exactly as `kiroku certs issue --role agent`
//! would (`leaf_params`). The CSR's own names and extensions are ignored:
//! only its public key is taken.

use std::time::Duration;

use rcgen::{CertificateSigningRequestParams, Issuer, KeyPair, SerialNumber};
use rustls_pki_types::CertificateSigningRequestDer;

use super::{PkiError, Role, leaf_params, validate_group, validate_name};

/// Largest CSR accepted (an EC or Ed25519 one is a few hundred bytes).
pub const MAX_CSR_BYTES: usize = 16 * 1024;

/// The agents' issuing CA, in memory.
pub struct AgentIssuer {
    cert_pem: String,
    key_pem: String,
}

/// A certificate issued for an agent.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The agent's certificate, then the agents' CA.
    pub chain_pem: String,
    pub der: Vec<u8>,
    pub serial_hex: String,
    pub not_after_ms: i64,
}

/// Why a CSR is refused.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    #[error("the certificate signing request is {0} bytes, more than {MAX_CSR_BYTES}")]
    TooLarge(usize),
    #[error("the certificate signing request does not parse or its signature does not verify: {0}")]
    Invalid(String),
    #[error(
        "the key type of the certificate signing request is not accepted ({0}): use ECDSA P-256 or P-384, or Ed25519"
    )]
    KeyType(String),
}

impl AgentIssuer {
    /// From the CA's certificate and key (PEM); checks that they load.
    pub fn new(cert_pem: String, key_pem: String) -> Result<AgentIssuer, PkiError> {
        let issuer = AgentIssuer { cert_pem, key_pem };
        issuer.issuer()?;
        Ok(issuer)
    }

    /// The agents' CA's own notAfter.
    fn not_after(&self) -> Option<time::OffsetDateTime> {
        let (_, pem) = x509_parser::pem::parse_x509_pem(self.cert_pem.as_bytes()).ok()?;
        let (_, cert) = x509_parser::parse_x509_certificate(&pem.contents).ok()?;
        time::OffsetDateTime::from_unix_timestamp(cert.validity().not_after.timestamp()).ok()
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, PkiError> {
        let key = KeyPair::from_pem(&self.key_pem)?;
        Ok(Issuer::from_ca_cert_pem(&self.cert_pem, key)?)
    }

    /// Signs an agent certificate for the key of `csr_der` (checked with
    /// [`check_csr`]), named `name`, in `group`, valid for `validity`.
    pub fn issue(
        &self,
        csr: &CertificateSigningRequestParams,
        name: &str,
        group: Option<&str>,
        validity: Duration,
    ) -> Result<Issued, PkiError> {
        validate_name(name)?;
        if let Some(g) = group {
            validate_group(g)?;
        }
        let mut params = leaf_params(Role::Agent, name, &[], group)?;
        let now = time::OffsetDateTime::now_utc();
        let secs = i64::try_from(validity.as_secs()).unwrap_or(i64::MAX / 2);
        // Slack for clocks that lag the collector's: an hour, or a tenth of
        // a short validity.
        params.not_before = now - time::Duration::seconds((secs / 10).clamp(0, 3600));
        params.not_after = now + time::Duration::seconds(secs);
        // Never beyond the agents' CA itself: a certificate that outlives
        // its issuer would be refused from then on anyway.
        if let Some(ca_end) = self.not_after()
            && params.not_after > ca_end
        {
            params.not_after = ca_end;
        }
        let serial = rand::random::<u64>() >> 1;
        params.serial_number = Some(SerialNumber::from(serial));
        let cert = params.signed_by(&csr.public_key, &self.issuer()?)?;
        let mut chain = cert.pem();
        if !chain.ends_with('\n') {
            chain.push('\n');
        }
        chain.push_str(&self.cert_pem);
        let serial_hex = hex::encode(SerialNumber::from(serial).as_ref());
        Ok(Issued {
            chain_pem: chain,
            der: cert.der().to_vec(),
            serial_hex,
            not_after_ms: params.not_after.unix_timestamp() * 1000,
        })
    }
}

/// Parses a CSR and verifies its signature (proof that the requester holds
/// the key) and that its key is of an accepted type.
pub fn check_csr(der: &[u8]) -> Result<CertificateSigningRequestParams, CsrError> {
    if der.len() > MAX_CSR_BYTES {
        return Err(CsrError::TooLarge(der.len()));
    }
    let csr = CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(der))
        .map_err(|e| CsrError::Invalid(e.to_string()))?;
    // rcgen names the CSR's signature algorithm; the key itself is what
    // must be of an accepted type: its SubjectPublicKeyInfo (algorithm
    // and, for EC, the curve).
    let alg = csr.public_key.algorithm();
    let ok = [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_ED25519,
    ]
    .contains(&alg);
    if !ok {
        return Err(CsrError::KeyType(format!("{alg:?}")));
    }
    spki_key_type(der)?;
    Ok(csr)
}

/// The CSR's key, from its SubjectPublicKeyInfo: EC on P-256 or P-384,
/// or Ed25519.
fn spki_key_type(der: &[u8]) -> Result<&'static str, CsrError> {
    use x509_parser::prelude::FromDer;
    let (_, req) = x509_parser::certification_request::X509CertificationRequest::from_der(der)
        .map_err(|e| CsrError::Invalid(e.to_string()))?;
    let spki = &req.certification_request_info.subject_pki.algorithm;
    let alg = spki.algorithm.to_id_string();
    let curve = spki
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    match (alg.as_str(), curve.as_deref()) {
        ("1.2.840.10045.2.1", Some("1.2.840.10045.3.1.7")) => Ok("EC P-256"),
        ("1.2.840.10045.2.1", Some("1.3.132.0.34")) => Ok("EC P-384"),
        ("1.3.101.112", _) => Ok("Ed25519"),
        (a, c) => Err(CsrError::KeyType(format!(
            "key algorithm {a}{}",
            c.map(|c| format!(", curve {c}")).unwrap_or_default()
        ))),
    }
}

/// The SHA-256 (hex) of a CSR's public key: which key an enrollment was
/// for.
pub fn csr_key_sha(csr: &CertificateSigningRequestParams) -> String {
    use rcgen::PublicKeyData;
    crate::sha256_hex(csr.public_key.der_bytes())
}

/// The agent id for a computer name: letters, digits, '.', '-' and '_'
/// kept (other characters become '-'), lower case (Windows computer names
/// are case-insensitive), no leading '.' or '-', at most 64 characters.
/// None when nothing is left.
pub fn agent_id_from_computer_name(name: &str) -> Option<String> {
    let mapped: String = name
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = mapped.trim_start_matches(['.', '-']);
    let cut: String = trimmed.chars().take(64).collect();
    let cut = cut.trim_end_matches(['.', '-']).to_owned();
    (validate_name(&cut).is_ok() && cut.bytes().any(|b| b.is_ascii_alphanumeric())).then_some(cut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{PkiDir, group_from_der, identity_from_der};

    #[test]
    fn computer_names_become_agent_ids() {
        let cases = [
            ("DESKTOP-AB12CD", Some("desktop-ab12cd")),
            ("pc 42", Some("pc-42")),
            ("ＰＣ-日本", None),
            ("営業-PC01", Some("pc01")),
            ("..hidden", Some("hidden")),
            ("", None),
            ("---", None),
            ("a_b.c", Some("a_b.c")),
        ];
        for (input, want) in cases {
            assert_eq!(
                agent_id_from_computer_name(input).as_deref(),
                want,
                "{input:?}"
            );
        }
        let long = "x".repeat(100);
        assert_eq!(
            agent_id_from_computer_name(&long).map(|s| s.len()),
            Some(64)
        );
    }

    #[test]
    fn a_csr_becomes_an_agent_certificate_of_the_agents_ca() {
        let dir =
            std::env::temp_dir().join(format!("kiroku-enroll-test-{}", rand::random::<u64>()));
        let pki = PkiDir::new(&dir);
        pki.init_ca("test CA").expect("init");
        pki.init_agents_ca("agents CA", 30).expect("agents ca");
        let issuer = AgentIssuer::new(
            std::fs::read_to_string(pki.agents_ca_cert()).expect("read"),
            std::fs::read_to_string(pki.agents_ca_key()).expect("read"),
        )
        .expect("issuer");
        let key = KeyPair::generate().expect("key");
        let csr = rcgen::CertificateParams::new(vec!["evil.example".into()])
            .expect("params")
            .serialize_request(&key)
            .expect("csr");
        let checked = check_csr(csr.der()).expect("valid csr");
        let issued = issuer
            .issue(&checked, "pc-1", Some("sales"), Duration::from_secs(3600))
            .expect("issue");
        let id = identity_from_der(&issued.der).expect("id");
        assert_eq!((id.role, id.name.as_str()), (Role::Agent, "pc-1"));
        assert_eq!(
            group_from_der(&issued.der).expect("g").as_deref(),
            Some("sales")
        );
        let (_, x) = x509_parser::parse_x509_certificate(&issued.der).expect("parse");
        use rcgen::PublicKeyData;
        assert_eq!(
            x.public_key().subject_public_key.data.as_ref(),
            key.der_bytes()
        );
        assert_eq!(hex::encode(x.raw_serial()), issued.serial_hex);
        let names: Vec<String> = x
            .subject_alternative_name()
            .expect("san")
            .expect("present")
            .value
            .general_names
            .iter()
            .map(|g| g.to_string())
            .collect();
        assert!(!names.iter().any(|n| n.contains("evil")), "{names:?}");
        assert_eq!(
            x509_parser::pem::Pem::iter_from_buffer(issued.chain_pem.as_bytes()).count(),
            2
        );

        // Longer than the agents' CA lives: cut at its end.
        let long = issuer
            .issue(&checked, "pc-1", None, Duration::from_secs(1000 * 86_400))
            .expect("issue");
        let ca_end = issuer.not_after().expect("ca end").unix_timestamp() * 1000;
        assert_eq!(long.not_after_ms, ca_end);
        assert!(issued.not_after_ms < ca_end);

        // The key type comes from the key (SubjectPublicKeyInfo).
        for (alg, want) in [
            (&rcgen::PKCS_ECDSA_P256_SHA256, "EC P-256"),
            (&rcgen::PKCS_ECDSA_P384_SHA384, "EC P-384"),
            (&rcgen::PKCS_ED25519, "Ed25519"),
        ] {
            let k = KeyPair::generate_for(alg).expect("key");
            let c = rcgen::CertificateParams::default()
                .serialize_request(&k)
                .expect("csr");
            assert_eq!(spki_key_type(c.der()).expect("type"), want);
        }

        // A CSR whose signature does not verify: one byte of it changed.
        let mut bad = csr.der().to_vec();
        let n = bad.len();
        bad[n - 3] ^= 0x55;
        assert!(matches!(check_csr(&bad), Err(CsrError::Invalid(_))));
        assert!(matches!(
            check_csr(&[0u8; 20_000]),
            Err(CsrError::TooLarge(_))
        ));
        std::fs::remove_dir_all(&dir).ok();
    }
}
