//! The collector's evidence signing key, and the check of a signature by
//! anyone holding only the CA certificate.
//!
//! The key is ECDSA P-256 with SHA-256, signatures DER-encoded (the form
//! `openssl dgst -sha256 -verify signer.pub -signature x.sig x` checks, so a
//! bundle can be checked without Kiroku). Its certificate is issued by the
//! Kiroku CA with `kiroku certs issue --role signer --name <collector>`:
//! identity `kiroku://signer/<name>`, extended key usage documentSigning
//! only, so it can never pass a TLS handshake or a role check.
//!
//! Rotation: every signed object carries its signer certificate. A new
//! certificate in the configuration signs from then on; older objects keep
//! verifying with their own, as long as the CA issued it. Expiry is checked
//! at the time the object says it was signed (a checkpoint's `at_ms`),
//! not today, so an old checkpoint does not stop verifying when its
//! certificate ages out; the RFC 3161 time stamp is what proves that time.
//! Architecture invariant: nothing in a signed object is trusted before its
//! certificate has been checked against the CA given by the verifier.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kiroku_common::pki::{PeerIdentity, Role};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

/// id-kp-documentSigning as the DER content of its OID, for webpki.
const DOCUMENT_SIGNING_OID_DER: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x24];

/// The algorithms a signer certificate's key may use. Kiroku issues
/// ECDSA P-256; Ed25519 is accepted for keys made by other tools.
static SIGNATURE_ALGS: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ED25519,
];

/// Why the signing key could not be loaded (at collector start).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is readable by group or others (mode {mode:04o}); the checkpoint signing key must be private: chmod 600 {path}"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{path}: {message}")]
    BadKey { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    BadCert { path: PathBuf, message: String },
    #[error(
        "{cert}: the certificate does not belong to the key {key} (a signature made with the key does not verify with it)"
    )]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("signing failed")]
    Sign,
}

/// Why a signature does not hold. `finding()` gives the word `verify`
/// reports it under.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("unsigned")]
    Unsigned,
    #[error("the CA certificate cannot be read: {0}")]
    BadCa(String),
    #[error("the signer certificate cannot be read: {0}")]
    BadCert(String),
    #[error(
        "the signer certificate was not issued by this CA for document signing (or was not valid at {at}): {reason}"
    )]
    UnknownSigner { at: String, reason: String },
    #[error("the certificate is {0}, not a signer (kiroku://signer/<name>)")]
    NotSigner(String),
    #[error("the signature does not match the signed bytes and the signer certificate")]
    BadSignature,
}

impl SignatureError {
    /// The `VerifyFinding.what` this problem is reported under.
    pub fn finding(&self) -> &'static str {
        match self {
            SignatureError::Unsigned => "unsigned",
            SignatureError::BadSignature => "bad_signature",
            SignatureError::BadCa(_) => "bad_ca",
            SignatureError::BadCert(_)
            | SignatureError::UnknownSigner { .. }
            | SignatureError::NotSigner(_) => "unknown_signer",
        }
    }
}

/// The collector's signing key and its certificate, loaded once at start.
pub struct Signer {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    cert_der: Vec<u8>,
    identity: PeerIdentity,
    cert_path: PathBuf,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("identity", &self.identity)
            .field("cert", &self.cert_path)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Loads `key` (PKCS#8 PEM, ECDSA P-256, mode 0600 or stricter) and
    /// `cert` (PEM, role signer), and checks that they belong together.
    pub fn load(cert: &Path, key: &Path) -> Result<Signer, KeyError> {
        check_private(key)?;
        let bad_key = |message: String| KeyError::BadKey {
            path: key.to_owned(),
            message,
        };
        let der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad_key(e.to_string()))?;
        let PrivateKeyDer::Pkcs8(pkcs8) = der else {
            return Err(bad_key(
                "not a PKCS#8 key (\"BEGIN PRIVATE KEY\"); issue one with `kiroku certs issue --role signer` or convert it with `openssl pkcs8 -topk8 -nocrypt`".into(),
            ));
        };
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_ASN1_SIGNING,
            pkcs8.secret_pkcs8_der(),
            &rng,
        )
        .map_err(|e| bad_key(format!("not an ECDSA P-256 key: {e}")))?;

        let bad_cert = |message: String| KeyError::BadCert {
            path: cert.to_owned(),
            message,
        };
        let cert_der = CertificateDer::from_pem_file(cert)
            .map_err(|e| bad_cert(e.to_string()))?
            .to_vec();
        let identity = kiroku_common::pki::identity_from_der(&cert_der)
            .map_err(|e| bad_cert(e.to_string()))?;
        if identity.role != Role::Signer {
            return Err(bad_cert(format!(
                "the certificate is {identity}, not a signer; issue one with `kiroku certs issue --role signer --name <collector>`"
            )));
        }
        let signer = Signer {
            key: pair,
            rng,
            cert_der,
            identity,
            cert_path: cert.to_owned(),
        };
        let probe = b"kiroku signer key check";
        let sig = signer.sign(probe)?;
        if signature_holds(probe, &sig, &signer.cert_der).is_err() {
            return Err(KeyError::Mismatch {
                cert: cert.to_owned(),
                key: key.to_owned(),
            });
        }
        Ok(signer)
    }

    /// An ECDSA P-256 SHA-256 signature (DER) over `bytes`.
    pub fn sign(&self, bytes: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.key
            .sign(&self.rng, bytes)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| KeyError::Sign)
    }

    /// The signer certificate (DER), carried by every signed object.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The signer certificate as PEM (a bundle's `ca-chain/signer.pem`).
    pub fn cert_pem(&self) -> String {
        cert_pem(&self.cert_der)
    }

    /// `signer/<name>` from the certificate.
    pub fn identity(&self) -> &PeerIdentity {
        &self.identity
    }

    /// Where the certificate was read from (for messages).
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// Checks at start that the CA the collector trusts issued this
    /// certificate, so a misconfiguration shows now and not at `verify`.
    pub fn check_issued_by(&self, ca_pem: &[u8]) -> Result<(), SignatureError> {
        chain_to_ca(&self.cert_der, ca_pem, None).map(|_| ())
    }
}

/// A DER certificate as PEM text.
pub fn cert_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Checks `sig` over `bytes` with `cert_der`, and that `cert_der` is a
/// signer certificate the CA in `ca_pem` issued. The certificate's validity
/// period is not checked against today (see the module documentation);
/// use [`verify_at`] where the signed object says when it was signed.
pub fn verify(
    bytes: &[u8],
    sig: &[u8],
    cert_der: &[u8],
    ca_pem: &[u8],
) -> Result<PeerIdentity, SignatureError> {
    verify_at(bytes, sig, cert_der, ca_pem, None)
}

/// [`verify`], with the certificate required to be valid at `at_ms` (ms
/// since the epoch), the time the signed object says it was signed.
pub fn verify_at(
    bytes: &[u8],
    sig: &[u8],
    cert_der: &[u8],
    ca_pem: &[u8],
    at_ms: Option<i64>,
) -> Result<PeerIdentity, SignatureError> {
    if sig.is_empty() {
        return Err(SignatureError::Unsigned);
    }
    let identity = chain_to_ca(cert_der, ca_pem, at_ms)?;
    signature_holds(bytes, sig, cert_der)?;
    Ok(identity)
}

/// The certificate's identity, once webpki has found it issued by one of
/// the CA certificates in `ca_pem` for document signing.
fn chain_to_ca(
    cert_der: &[u8],
    ca_pem: &[u8],
    at_ms: Option<i64>,
) -> Result<PeerIdentity, SignatureError> {
    let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(ca_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| SignatureError::BadCa(e.to_string()))?;
    if cas.is_empty() {
        return Err(SignatureError::BadCa("no certificate in it".into()));
    }
    let anchors = cas
        .iter()
        .map(|c| {
            webpki::anchor_from_trusted_cert(c)
                .map(|a| a.to_owned())
                .map_err(|e| SignatureError::BadCa(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let der = CertificateDer::from(cert_der);
    let ee = webpki::EndEntityCert::try_from(&der)
        .map_err(|e| SignatureError::BadCert(e.to_string()))?;
    let at = match at_ms {
        Some(ms) => UnixTime::since_unix_epoch(Duration::from_millis(ms.max(0).unsigned_abs())),
        None => not_before(cert_der)?,
    };
    let at_text = time_text(at);
    ee.verify_for_usage(
        SIGNATURE_ALGS,
        &anchors,
        &[],
        at,
        webpki::KeyUsage::required(DOCUMENT_SIGNING_OID_DER),
        None,
        None,
    )
    .map_err(|e| SignatureError::UnknownSigner {
        at: at_text,
        reason: e.to_string(),
    })?;
    let identity = kiroku_common::pki::identity_from_der(cert_der)
        .map_err(|e| SignatureError::BadCert(e.to_string()))?;
    if identity.role != Role::Signer {
        return Err(SignatureError::NotSigner(identity.to_string()));
    }
    Ok(identity)
}

/// Does `sig` verify over `bytes` with the certificate's public key?
fn signature_holds(bytes: &[u8], sig: &[u8], cert_der: &[u8]) -> Result<(), SignatureError> {
    let der = CertificateDer::from(cert_der);
    let ee = webpki::EndEntityCert::try_from(&der)
        .map_err(|e| SignatureError::BadCert(e.to_string()))?;
    // The key type picks the algorithm; the others refuse the key.
    if SIGNATURE_ALGS
        .iter()
        .any(|alg| ee.verify_signature(*alg, bytes, sig).is_ok())
    {
        Ok(())
    } else {
        Err(SignatureError::BadSignature)
    }
}

/// One second into the certificate's validity: the time webpki checks a
/// chain at when the signed object states none.
fn not_before(cert_der: &[u8]) -> Result<UnixTime, SignatureError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| SignatureError::BadCert(e.to_string()))?;
    let secs = cert.validity().not_before.timestamp().saturating_add(1);
    Ok(UnixTime::since_unix_epoch(Duration::from_secs(
        secs.max(0).unsigned_abs(),
    )))
}

fn time_text(t: UnixTime) -> String {
    let secs = i64::try_from(t.as_secs()).unwrap_or(i64::MAX);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{secs} s after the epoch"))
}

/// Refuses a key file group or others may read: a signing key anyone on
/// the host can copy signs forgeries.
fn check_private(path: &Path) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiroku_common::pki::PkiDir;

    struct Pki {
        dir: tempfile::TempDir,
    }

    impl Pki {
        fn new() -> Pki {
            let dir = tempfile::tempdir().expect("tempdir");
            PkiDir::new(dir.path()).init_ca("test CA").expect("ca");
            Pki { dir }
        }
        fn pki(&self) -> PkiDir {
            PkiDir::new(self.dir.path())
        }
        fn ca_pem(&self) -> Vec<u8> {
            std::fs::read(self.pki().ca_cert()).expect("ca")
        }
        fn issue(&self, role: Role, name: &str) -> (PathBuf, PathBuf) {
            self.pki().issue(role, name, &[], 30).expect("issue")
        }
        fn signer(&self, name: &str) -> Signer {
            let (c, k) = self.issue(Role::Signer, name);
            Signer::load(&c, &k).expect("load")
        }
    }

    #[test]
    fn signature_verifies_against_the_ca_and_nothing_else() {
        let pki = Pki::new();
        let other = Pki::new();
        let s = pki.signer("c1");
        let msg = b"checkpoint 1";
        let sig = s.sign(msg).expect("sign");
        let id = verify(msg, &sig, s.cert_der(), &pki.ca_pem()).expect("verifies");
        assert_eq!(id.to_string(), "signer/c1");
        s.check_issued_by(&pki.ca_pem()).expect("issued by");

        let cases: Vec<(&str, Result<PeerIdentity, SignatureError>, &str)> = vec![
            (
                "other bytes",
                verify(b"checkpoint 2", &sig, s.cert_der(), &pki.ca_pem()),
                "bad_signature",
            ),
            (
                "damaged signature",
                verify(msg, &flip(&sig), s.cert_der(), &pki.ca_pem()),
                "bad_signature",
            ),
            (
                "no signature",
                verify(msg, &[], s.cert_der(), &pki.ca_pem()),
                "unsigned",
            ),
            (
                "another CA",
                verify(msg, &sig, s.cert_der(), &other.ca_pem()),
                "unknown_signer",
            ),
        ];
        for (what, got, want) in cases {
            let e = got.expect_err(what);
            assert_eq!(e.finding(), want, "{what}: {e}");
        }
        // Checked at a time the certificate was valid, and at one it was not.
        let now = kiroku_common::now_ms();
        verify_at(msg, &sig, s.cert_der(), &pki.ca_pem(), Some(now)).expect("now");
        let later = now + 40 * 86_400_000;
        let e = verify_at(msg, &sig, s.cert_der(), &pki.ca_pem(), Some(later)).expect_err("late");
        assert_eq!(e.finding(), "unknown_signer", "{e}");
    }

    #[test]
    fn rotated_keys_both_verify_and_a_forged_signer_does_not() {
        let pki = Pki::new();
        let old = pki.signer("c1-2026");
        let new = pki.signer("c1-2027");
        let (a, b) = (b"old checkpoint".as_slice(), b"new checkpoint".as_slice());
        let (sa, sb) = (old.sign(a).expect("sign"), new.sign(b).expect("sign"));
        verify(a, &sa, old.cert_der(), &pki.ca_pem()).expect("old verifies");
        verify(b, &sb, new.cert_der(), &pki.ca_pem()).expect("new verifies");
        // A signature by one key under the other's certificate is not one.
        let e = verify(a, &sa, new.cert_der(), &pki.ca_pem()).expect_err("swapped");
        assert_eq!(e, SignatureError::BadSignature);
        // A signer certificate from a CA the verifier does not trust.
        let rogue = Pki::new().signer("c1-2026");
        let sr = rogue.sign(a).expect("sign");
        let e = verify(a, &sr, rogue.cert_der(), &pki.ca_pem()).expect_err("rogue");
        assert!(matches!(e, SignatureError::UnknownSigner { .. }), "{e}");
    }

    #[test]
    fn only_a_private_signer_key_with_its_own_certificate_loads() {
        use std::os::unix::fs::PermissionsExt;
        let pki = Pki::new();
        let (cert, key) = pki.issue(Role::Signer, "c1");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let e = Signer::load(&cert, &key).expect_err("group-readable");
        assert!(
            matches!(e, KeyError::Permissions { mode: 0o640, .. }),
            "{e}"
        );
        assert!(e.to_string().contains(&key.display().to_string()), "{e}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        Signer::load(&cert, &key).expect("private key loads");

        // An agent certificate (a TLS client identity) is not a signer.
        let (acert, akey) = pki.issue(Role::Agent, "a1");
        let e = Signer::load(&acert, &akey).expect_err("agent cert");
        assert!(e.to_string().contains("not a signer"), "{e}");
        // Another signer's certificate with this key.
        let (cert2, _) = pki.issue(Role::Signer, "c2");
        let e = Signer::load(&cert2, &key).expect_err("mismatch");
        assert!(matches!(e, KeyError::Mismatch { .. }), "{e}");
        // A signer certificate never passes webpki as a TLS client.
        let der = CertificateDer::from_pem_file(&cert).expect("pem");
        let ee = webpki::EndEntityCert::try_from(&der).expect("ee");
        let ca = CertificateDer::from_pem_slice(&pki.ca_pem()).expect("ca");
        let anchors = [webpki::anchor_from_trusted_cert(&ca).expect("anchor")];
        let now = UnixTime::now();
        for usage in [
            webpki::KeyUsage::client_auth(),
            webpki::KeyUsage::server_auth(),
        ] {
            assert!(
                ee.verify_for_usage(SIGNATURE_ALGS, &anchors, &[], now, usage, None, None)
                    .is_err()
            );
        }
    }

    #[test]
    fn the_oid_webpki_checks_is_the_one_certificates_carry() {
        let oid = x509_parser::oid_registry::Oid::from(kiroku_common::pki::DOCUMENT_SIGNING_OID)
            .expect("oid");
        assert_eq!(oid.as_bytes(), DOCUMENT_SIGNING_OID_DER);
    }

    #[test]
    fn pem_of_a_certificate_reads_back() {
        let pki = Pki::new();
        let s = pki.signer("c1");
        let back = CertificateDer::from_pem_slice(s.cert_pem().as_bytes()).expect("pem");
        assert_eq!(back.as_ref(), s.cert_der());
    }

    fn flip(b: &[u8]) -> Vec<u8> {
        let mut v = b.to_vec();
        let i = v.len() / 2;
        v[i] ^= 0x40;
        v
    }
}
