//! RFC 3161 time stamps of checkpoints: the request sent to a Time-Stamp
//! Authority over HTTP POST (`application/timestamp-query`), and the check
//! of the token it returns.
//!
//! A token is a CMS SignedData whose content is a TSTInfo. It holds when:
//! the TSTInfo's messageImprint is SHA-256 of exactly the checkpoint bytes;
//! the signed attributes carry the TSTInfo content type and the digest of
//! the TSTInfo; and one certificate in the token, chaining to the TSA CA
//! the verifier names with the timeStamping extended key usage at the
//! token's genTime, signed those attributes. A token made for any other
//! bytes fails on the imprint, whoever signed it.
//!
//! The time stamp is what anchors a checkpoint outside the collector: with
//! it, even someone holding the collector's signing key cannot sign a
//! rewritten history under an earlier date.

use std::time::Duration;

use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerInfo};
use der::asn1::{Int, OctetString};
use der::oid::ObjectIdentifier;
use der::{Any, Decode, Encode};
use rustls_pki_types::{CertificateDer, UnixTime};
use sha2::{Digest, Sha256};
use x509_tsp::{MessageImprint, TimeStampReq, TimeStampResp, TspVersion, TstInfo};

const ID_SHA_256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const ID_SHA_384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const ID_SHA_512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");
const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const ID_CT_TST_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");
const ID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const ID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
/// id-kp-timeStamping (1.3.6.1.5.5.7.3.8) as DER content, for webpki.
const TIME_STAMPING_OID_DER: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x08];

/// The key types a TSA signs with.
static TSA_SIGNATURE_ALGS: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512,
    webpki::ring::ED25519,
];

/// How long a TSA may take to answer.
pub const TSA_TIMEOUT: Duration = Duration::from_secs(20);

/// Why no time stamp was obtained (the checkpoint is stored without one,
/// and says so in the log).
#[derive(Debug, thiserror::Error)]
pub enum TsaError {
    #[error("time-stamp request to {url} failed: {message}")]
    Http { url: String, message: String },
    #[error("the time-stamp authority {url} refused the request: {message}")]
    Refused { url: String, message: String },
    #[error("the time-stamp authority {url} answered with a token that does not hold: {problem}")]
    BadToken {
        url: String,
        problem: TimestampError,
    },
    #[error("encoding the time-stamp request: {0}")]
    Encode(String),
}

/// Why a time-stamp token does not hold for given bytes. Reported by
/// `verify` as `bad_timestamp`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    #[error("the token is not an RFC 3161 time-stamp token: {0}")]
    Malformed(String),
    #[error("the token stamps SHA-256 {got}, not these bytes (SHA-256 {want})")]
    ImprintMismatch { want: String, got: String },
    #[error("the token stamps a {0} digest; only SHA-256 is accepted")]
    ImprintAlgorithm(String),
    #[error("the token answers another request (nonce differs)")]
    NonceMismatch,
    #[error("the TSA CA certificate cannot be read: {0}")]
    BadCa(String),
    #[error(
        "no certificate in the token is a time-stamping certificate of the TSA CA that signed it: {0}"
    )]
    Untrusted(String),
    #[error(
        "the checkpoint says it was made at {claimed_ms} ms but the time stamp was made at {stamped_ms} ms (more than {tolerance_ms} ms apart): its time was changed after it was stamped"
    )]
    TimeMismatch {
        claimed_ms: i64,
        stamped_ms: i64,
        tolerance_ms: i64,
    },
}

/// What a token that holds says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeStamp {
    /// genTime, ms since the epoch.
    pub at_ms: i64,
    /// The signing TSA certificate's subject.
    pub tsa: String,
    /// The token's serial number (hex).
    pub serial: String,
}

/// A DER TimeStampReq for SHA-256 `digest`, asking for the TSA's
/// certificate in the token (so the token checks with the TSA CA alone).
pub fn request(digest: &[u8; 32], nonce: &[u8]) -> Result<Vec<u8>, TsaError> {
    let enc = |e: der::Error| TsaError::Encode(e.to_string());
    let req = TimeStampReq {
        version: TspVersion::V1,
        message_imprint: MessageImprint {
            hash_algorithm: x509_cert::spki::AlgorithmIdentifier {
                oid: ID_SHA_256,
                parameters: Some(Any::null()),
            },
            hashed_message: OctetString::new(digest.to_vec()).map_err(enc)?,
        },
        req_policy: None,
        nonce: Some(Int::new(nonce).map_err(enc)?),
        cert_req: true,
        extensions: None,
    };
    req.to_der().map_err(enc)
}

/// A positive 64-bit nonce in minimal DER integer form.
fn new_nonce() -> [u8; 8] {
    let mut n: [u8; 8] = rand::random();
    n[0] = (n[0] & 0x7f) | 0x01;
    n
}

/// The client of one TSA.
#[derive(Clone)]
pub struct TsaClient {
    url: String,
    http: reqwest::Client,
    /// The TSA CA (PEM): tokens are checked before they are kept.
    ca_pem: Vec<u8>,
}

impl TsaClient {
    pub fn new(url: &str, ca_pem: Vec<u8>) -> Result<TsaClient, TsaError> {
        let http = reqwest::Client::builder()
            .timeout(TSA_TIMEOUT)
            .build()
            .map_err(|e| TsaError::Http {
                url: url.to_owned(),
                message: e.to_string(),
            })?;
        Ok(TsaClient {
            url: url.to_owned(),
            http,
            ca_pem,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// A token over SHA-256(`data`), checked against the TSA CA.
    pub async fn stamp(&self, data: &[u8]) -> Result<(Vec<u8>, TimeStamp), TsaError> {
        let digest: [u8; 32] = Sha256::digest(data).into();
        let nonce = new_nonce();
        let http_err = |message: String| TsaError::Http {
            url: self.url.clone(),
            message,
        };
        let resp = self
            .http
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/timestamp-query")
            .body(request(&digest, &nonce)?)
            .send()
            .await
            .map_err(|e| http_err(e.to_string()))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| http_err(e.to_string()))?;
        if !status.is_success() {
            return Err(http_err(format!("HTTP {status}")));
        }
        let token = token_of_response(&body).map_err(|message| TsaError::Refused {
            url: self.url.clone(),
            message,
        })?;
        let bad = |problem| TsaError::BadToken {
            url: self.url.clone(),
            problem,
        };
        let (ts, tst) = check_token(&token, data, &self.ca_pem).map_err(bad)?;
        if tst.nonce.as_ref().map(|n| n.as_bytes()) != Some(&nonce[..]) {
            return Err(bad(TimestampError::NonceMismatch));
        }
        Ok((token, ts))
    }
}

/// The token (DER) of a granted TimeStampResp; otherwise why not.
fn token_of_response(body: &[u8]) -> Result<Vec<u8>, String> {
    use cmpv2::status::PkiStatus;
    let resp = TimeStampResp::from_der(body).map_err(|e| format!("not a TimeStampResp: {e}"))?;
    match resp.status.status {
        PkiStatus::Accepted | PkiStatus::GrantedWithMods => {}
        other => {
            let text = resp
                .status
                .status_string
                .as_ref()
                .map(|t| {
                    t.iter()
                        .map(|s| s.as_str().to_owned())
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .unwrap_or_default();
            return Err(format!("status {other:?} {text}"));
        }
    }
    let token = resp
        .time_stamp_token
        .ok_or_else(|| "granted without a token".to_owned())?;
    token.to_der().map_err(|e| e.to_string())
}

/// Checks `token` as a time stamp of exactly `data` by a TSA the CA in
/// `tsa_ca_pem` certified for time stamping.
pub fn verify_token(
    token: &[u8],
    data: &[u8],
    tsa_ca_pem: &[u8],
) -> Result<TimeStamp, TimestampError> {
    check_token(token, data, tsa_ca_pem).map(|(ts, _)| ts)
}

fn check_token(
    token: &[u8],
    data: &[u8],
    tsa_ca_pem: &[u8],
) -> Result<(TimeStamp, TstInfo), TimestampError> {
    let bad =
        |what: &str, e: &dyn std::fmt::Display| TimestampError::Malformed(format!("{what}: {e}"));
    let ci = ContentInfo::from_der(token).map_err(|e| bad("ContentInfo", &e))?;
    if ci.content_type != ID_SIGNED_DATA {
        return Err(TimestampError::Malformed(format!(
            "content type {} is not SignedData",
            ci.content_type
        )));
    }
    let sd: SignedData = ci.content.decode_as().map_err(|e| bad("SignedData", &e))?;
    if sd.encap_content_info.econtent_type != ID_CT_TST_INFO {
        return Err(TimestampError::Malformed(format!(
            "signed content type {} is not TSTInfo",
            sd.encap_content_info.econtent_type
        )));
    }
    let tst_der = sd
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or_else(|| TimestampError::Malformed("no TSTInfo in the token".into()))?
        .decode_as::<OctetString>()
        .map_err(|e| bad("TSTInfo octets", &e))?
        .into_bytes();
    let tst = TstInfo::from_der(&tst_der).map_err(|e| bad("TSTInfo", &e))?;

    let imprint = &tst.message_imprint;
    if imprint.hash_algorithm.oid != ID_SHA_256 {
        return Err(TimestampError::ImprintAlgorithm(
            imprint.hash_algorithm.oid.to_string(),
        ));
    }
    let want = Sha256::digest(data);
    if imprint.hashed_message.as_bytes() != want.as_slice() {
        return Err(TimestampError::ImprintMismatch {
            want: hex::encode(want),
            got: hex::encode(imprint.hashed_message.as_bytes()),
        });
    }

    let generated = tst.gen_time.to_unix_duration();
    let at = UnixTime::since_unix_epoch(generated);
    let anchors = tsa_anchors(tsa_ca_pem)?;
    let certs: Vec<Vec<u8>> = sd
        .certificates
        .as_ref()
        .map(|set| {
            set.0
                .iter()
                .filter_map(|c| match c {
                    cms::cert::CertificateChoices::Certificate(c) => c.to_der().ok(),
                    cms::cert::CertificateChoices::Other(_) => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let mut why = String::from("the token carries no certificate (request it with certReq)");
    for si in sd.signer_infos.0.iter() {
        let signed = match signed_attributes(si, &tst_der) {
            Ok(s) => s,
            Err(e) => {
                why = e;
                continue;
            }
        };
        for der in &certs {
            match signed_by(der, &signed, si.signature.as_bytes(), &anchors, at) {
                Ok(tsa) => {
                    let ts = TimeStamp {
                        at_ms: i64::try_from(generated.as_millis()).unwrap_or(i64::MAX),
                        tsa,
                        serial: hex::encode(tst.serial_number.as_bytes()),
                    };
                    return Ok((ts, tst));
                }
                Err(e) => why = e,
            }
        }
    }
    Err(TimestampError::Untrusted(why))
}

/// The DER of a SignerInfo's signed attributes (what its signature covers),
/// once they are found to name the TSTInfo content type and carry the
/// TSTInfo's digest.
fn signed_attributes(si: &SignerInfo, tst_der: &[u8]) -> Result<Vec<u8>, String> {
    let attrs = si
        .signed_attrs
        .as_ref()
        .ok_or_else(|| "the signer info has no signed attributes".to_owned())?;
    let value_of = |oid: ObjectIdentifier| -> Result<&Any, String> {
        attrs
            .iter()
            .find(|a| a.oid == oid)
            .and_then(|a| a.values.iter().next())
            .ok_or_else(|| format!("the signed attributes lack {oid}"))
    };
    let ct: ObjectIdentifier = value_of(ID_CONTENT_TYPE)?
        .decode_as()
        .map_err(|e| format!("content-type attribute: {e}"))?;
    if ct != ID_CT_TST_INFO {
        return Err(format!("the signed content type is {ct}, not TSTInfo"));
    }
    let md: OctetString = value_of(ID_MESSAGE_DIGEST)?
        .decode_as()
        .map_err(|e| format!("message-digest attribute: {e}"))?;
    let alg = match si.digest_alg.oid {
        o if o == ID_SHA_256 => &ring::digest::SHA256,
        o if o == ID_SHA_384 => &ring::digest::SHA384,
        o if o == ID_SHA_512 => &ring::digest::SHA512,
        o => return Err(format!("unsupported digest algorithm {o}")),
    };
    if ring::digest::digest(alg, tst_der).as_ref() != md.as_bytes() {
        return Err("the signed digest is not that of the TSTInfo (the token was altered)".into());
    }
    attrs.to_der().map_err(|e| e.to_string())
}

fn tsa_anchors(
    ca_pem: &[u8],
) -> Result<Vec<rustls_pki_types::TrustAnchor<'static>>, TimestampError> {
    use rustls_pki_types::pem::PemObject;
    let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(ca_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TimestampError::BadCa(e.to_string()))?;
    if cas.is_empty() {
        return Err(TimestampError::BadCa("no certificate in it".into()));
    }
    cas.iter()
        .map(|c| {
            webpki::anchor_from_trusted_cert(c)
                .map(|a| a.to_owned())
                .map_err(|e| TimestampError::BadCa(e.to_string()))
        })
        .collect()
}

/// The subject of `cert_der` when it is a time-stamping certificate of the
/// TSA CA valid at `at` and its key made `signature` over `signed`.
fn signed_by(
    cert_der: &[u8],
    signed: &[u8],
    signature: &[u8],
    anchors: &[rustls_pki_types::TrustAnchor<'_>],
    at: UnixTime,
) -> Result<String, String> {
    let der = CertificateDer::from(cert_der);
    let ee = webpki::EndEntityCert::try_from(&der).map_err(|e| e.to_string())?;
    if !TSA_SIGNATURE_ALGS
        .iter()
        .any(|alg| ee.verify_signature(*alg, signed, signature).is_ok())
    {
        return Err("the signature does not verify with the certificate in the token".into());
    }
    ee.verify_for_usage(
        TSA_SIGNATURE_ALGS,
        anchors,
        &[],
        at,
        webpki::KeyUsage::required(TIME_STAMPING_OID_DER),
        None,
        None,
    )
    .map_err(|e| {
        format!("the signing certificate is not a time-stamping certificate of the TSA CA: {e}")
    })?;
    let subject = x509_parser::parse_x509_certificate(cert_der)
        .map(|(_, c)| c.subject().to_string())
        .unwrap_or_default();
    Ok(subject)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_der_with_the_digest_and_nonce() {
        let digest = [7u8; 32];
        let nonce = new_nonce();
        let der = request(&digest, &nonce).expect("encode");
        let back = TimeStampReq::from_der(&der).expect("decode");
        assert_eq!(back.message_imprint.hashed_message.as_bytes(), &digest);
        assert_eq!(back.message_imprint.hash_algorithm.oid, ID_SHA_256);
        assert_eq!(back.nonce.as_ref().map(|n| n.as_bytes()), Some(&nonce[..]));
        assert!(back.cert_req);
    }

    #[test]
    fn garbage_is_no_token() {
        let cases: [&[u8]; 3] = [b"", b"\x30\x03\x02\x01\x01", b"not der at all"];
        for c in cases {
            let e = verify_token(c, b"x", b"").expect_err("garbage");
            assert!(matches!(e, TimestampError::Malformed(_)), "{e}");
        }
    }
}
