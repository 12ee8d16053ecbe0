//! S/MIME and PGP: whether a mail is signed or encrypted, and who signed
//! it when the signer's certificate travels in the message.
//!
//! - `multipart/signed` with `protocol="application/pkcs7-signature"` (or
//!   a `application/(x-)pkcs7-signature` part): S/MIME signed; with
//!   `application/pgp-signature`: PGP signed.
//! - `application/(x-)pkcs7-mime`: `smime-type=enveloped-data` is
//!   encrypted, `signed-data` signed; without the parameter the CMS
//!   content type in the bytes decides.
//! - `multipart/encrypted` (`application/pgp-encrypted`) or an armoured
//!   `BEGIN PGP MESSAGE` in the body: PGP encrypted; `BEGIN PGP SIGNED
//!   MESSAGE`: PGP signed.
//!
//! The signer: the certificates in a CMS SignedData (`certificates`) are
//! found by parsing each DER SEQUENCE in the signature with `x509-parser`
//! (a full CMS parser is not needed to read them); the end-entity one (not
//! a CA) is the signer: its e-mail address and common name.

use x509_parser::prelude::*;

use super::read::{Content, Walked};

pub const SMIME_SIGNED: &str = "smime-signed";
pub const SMIME_ENCRYPTED: &str = "smime-encrypted";
pub const PGP_SIGNED: &str = "pgp-signed";
pub const PGP_ENCRYPTED: &str = "pgp-encrypted";

/// OIDs of CMS content types, DER-encoded (1.2.840.113549.1.7.2 and .3).
const OID_SIGNED_DATA: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02,
];
const OID_ENVELOPED_DATA: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03,
];

/// What the mail's structure says.
#[derive(Debug, Default, PartialEq)]
pub struct Crypto {
    pub tags: Vec<&'static str>,
    pub signer: String,
}

impl Crypto {
    fn tag(&mut self, t: &'static str) {
        if !self.tags.contains(&t) {
            self.tags.push(t);
        }
    }
}

fn is_pkcs7_signature(t: &str) -> bool {
    matches!(
        t,
        "application/pkcs7-signature" | "application/x-pkcs7-signature"
    )
}

fn is_pkcs7_mime(t: &str) -> bool {
    matches!(t, "application/pkcs7-mime" | "application/x-pkcs7-mime")
}

/// Classifies a walked message (and its text body, for inline PGP).
pub fn classify(w: &Walked, body_text: &str) -> Crypto {
    let mut c = Crypto::default();
    match w.content_type.as_str() {
        "multipart/signed" if is_pkcs7_signature(&w.protocol) => c.tag(SMIME_SIGNED),
        "multipart/signed" if w.protocol == "application/pgp-signature" => c.tag(PGP_SIGNED),
        "multipart/encrypted" if w.protocol == "application/pgp-encrypted" => c.tag(PGP_ENCRYPTED),
        _ => {}
    }
    for leaf in &w.leaves {
        let t = leaf.content_type.as_str();
        let bytes = match &leaf.content {
            Content::Whole(d) => d.as_slice(),
            Content::TooLarge { head, .. } => head.as_slice(),
        };
        if is_pkcs7_signature(t) {
            c.tag(SMIME_SIGNED);
            if c.signer.is_empty() {
                c.signer = signer(bytes).unwrap_or_default();
            }
        } else if is_pkcs7_mime(t) {
            let enveloped = match leaf.smime_type.as_str() {
                "enveloped-data" | "authenveloped-data" => true,
                "signed-data" | "certs-only" => false,
                _ => cms_type(bytes) == Some(OID_ENVELOPED_DATA),
            };
            if enveloped {
                c.tag(SMIME_ENCRYPTED);
            } else {
                c.tag(SMIME_SIGNED);
                if c.signer.is_empty() {
                    c.signer = signer(bytes).unwrap_or_default();
                }
            }
        } else if t == "application/pgp-signature" {
            c.tag(PGP_SIGNED);
        } else if t == "application/pgp-encrypted" {
            c.tag(PGP_ENCRYPTED);
        }
    }
    if body_text.contains("-----BEGIN PGP MESSAGE-----") {
        c.tag(PGP_ENCRYPTED);
    }
    if body_text.contains("-----BEGIN PGP SIGNED MESSAGE-----") {
        c.tag(PGP_SIGNED);
    }
    c
}

/// The content type OID of a CMS ContentInfo (its first OID).
fn cms_type(der: &[u8]) -> Option<&'static [u8]> {
    let head = &der[..der.len().min(32)];
    [OID_SIGNED_DATA, OID_ENVELOPED_DATA]
        .into_iter()
        .find(|oid| head.windows(oid.len()).any(|w| w == *oid))
}

/// The signer of a CMS SignedData: its end-entity certificate's e-mail
/// address and common name ("Alice Example <alice@corp.example>").
pub fn signer(der: &[u8]) -> Option<String> {
    let mut certs = Vec::new();
    let mut i = 0;
    while i + 4 < der.len() && certs.len() < 16 {
        // A certificate is a SEQUENCE with a long-form length.
        if der[i] == 0x30
            && matches!(der[i + 1], 0x81..=0x83)
            && let Ok((_, cert)) = X509Certificate::from_der(&der[i..])
        {
            let len = cert.as_ref().len();
            certs.push(cert);
            i += len.max(1);
            continue;
        }
        i += 1;
    }
    let leaf = certs
        .iter()
        .find(|c| !c.is_ca())
        .or_else(|| certs.first())?;
    let cn = leaf
        .subject()
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    let email = leaf
        .subject_alternative_name()
        .ok()
        .flatten()
        .and_then(|san| {
            san.value.general_names.iter().find_map(|n| match n {
                GeneralName::RFC822Name(e) => Some((*e).to_owned()),
                _ => None,
            })
        })
        .or_else(|| {
            leaf.subject()
                .iter_email()
                .next()
                .and_then(|a| a.as_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    Some(match (cn.is_empty(), email.is_empty()) {
        (false, false) => format!("{cn} <{email}>"),
        (true, false) => email,
        (false, true) => cn,
        (true, true) => leaf.subject().to_string(),
    })
}

#[cfg(test)]
mod tests;
