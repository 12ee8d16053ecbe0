//! Kiroku's private PKI: a CA, and certificates that carry a role and a name
//! as a URI SAN `kiroku://<role>/<name>`. The collector derives every
//! caller's identity from the verified client certificate with
//! [`identity_from_der`]; nothing in a payload is trusted for it.

pub mod crl;
pub mod enroll;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};

/// URI scheme of the identity SAN.
pub const SAN_SCHEME: &str = "kiroku://";

/// Prefix of the second URI SAN an agent certificate may carry: the agent's
/// group (`kiroku://group/<group>`), which the collector stamps on every
/// event of the agent (retention overrides by group). It is in the
/// certificate so that an agent cannot move itself to another group.
pub const GROUP_URI_PREFIX: &str = "kiroku://group/";

/// id-kp-documentSigning (RFC 9336, 1.3.6.1.5.5.7.3.36): the only extended
/// key usage of a signer certificate. Standard tools name it, and rustls
/// refuses such a certificate for TLS (it lacks clientAuth and serverAuth).
pub const DOCUMENT_SIGNING_OID: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 3, 36];

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} already exists; refusing to overwrite it (remove it first to start over)")]
    Exists { path: PathBuf },
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("invalid certificate {what}: {message}")]
    BadCert { what: String, message: String },
    #[error("invalid name {0:?}: use 1 to 64 characters from letters, digits, '.', '-' and '_'")]
    BadName(String),
    #[error("unknown role {0:?}: expected agent, investigator, admin, collector or signer")]
    BadRole(String),
    #[error("invalid group {0:?}: use 1 to 64 characters from letters, digits, '.', '-' and '_'")]
    BadGroup(String),
    #[error("a group is for agent certificates only, not for role {0}")]
    GroupNotAgent(Role),
}

/// What a certificate's holder may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Ships its own events (Ingest only).
    Agent,
    /// Reads (Query only).
    Investigator,
    /// Both, plus administration.
    Admin,
    /// The collector's server certificate.
    Collector,
    /// The collector's checkpoint and manifest signing key (issue 18). Its
    /// certificate carries only the document-signing purpose, never client
    /// or server authentication, and no service admits the role: a signer
    /// key can sign evidence but can never open a connection.
    Signer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Investigator => "investigator",
            Role::Admin => "admin",
            Role::Collector => "collector",
            Role::Signer => "signer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = PkiError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "agent" => Ok(Role::Agent),
            "investigator" => Ok(Role::Investigator),
            "admin" => Ok(Role::Admin),
            "collector" => Ok(Role::Collector),
            "signer" => Ok(Role::Signer),
            other => Err(PkiError::BadRole(other.to_owned())),
        }
    }
}

/// Role and name proven by a verified certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerIdentity {
    pub role: Role,
    pub name: String,
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.role, self.name)
    }
}

/// Names become file names and event-id prefixes: keep them plain.
pub fn validate_name(name: &str) -> Result<(), PkiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(PkiError::BadName(name.to_owned()))
    }
}

/// Files of a PKI directory.
#[derive(Debug, Clone)]
pub struct PkiDir {
    pub dir: PathBuf,
}

impl PkiDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        PkiDir { dir: dir.into() }
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn cert(&self, role: Role, name: &str) -> PathBuf {
        self.dir.join(format!("{role}-{name}.pem"))
    }
    pub fn key(&self, role: Role, name: &str) -> PathBuf {
        self.dir.join(format!("{role}-{name}.key"))
    }

    /// Creates a new CA. Refuses to overwrite an existing one.
    pub fn init_ca(&self, common_name: &str) -> Result<(), PkiError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| PkiError::Io {
            path: self.dir.clone(),
            source,
        })?;
        for p in [self.ca_cert(), self.ca_key()] {
            if p.exists() {
                return Err(PkiError::Exists { path: p });
            }
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "Kiroku");
        params.distinguished_name = dn;
        // Path length 1: the root signs the agents' issuing CA, which
        // signs only end entities. (Roots made before issue 19 say 0;
        // webpki, which checks every client chain, does not apply a trust
        // anchor's own constraints, so their agents CA works too.)
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, 3650);
        let cert = params.self_signed(&key)?;
        write_private(&self.ca_key(), key.serialize_pem().as_bytes())?;
        write_file(&self.ca_cert(), cert.pem().as_bytes())?;
        Ok(())
    }

    /// Issues a key and certificate for `role`/`name`, signed by the CA
    /// (an agent's by the agents' issuing CA when this directory has one:
    /// see [`PkiDir::issue_with`]). `extra_sans` are DNS names or IP
    /// addresses the holder serves under (used for the collector's server
    /// certificate).
    pub fn issue(
        &self,
        role: Role,
        name: &str,
        extra_sans: &[String],
        days: u32,
    ) -> Result<(PathBuf, PathBuf), PkiError> {
        self.issue_with(role, name, extra_sans, days, None)
    }

    /// [`PkiDir::issue`] with an agent's group, carried as a second URI SAN
    /// `kiroku://group/<group>` (agents only). An agent certificate is
    /// signed by the agents' issuing CA (`agents-ca.pem`/`agents-ca.key`,
    /// made by [`PkiDir::init_agents_ca`]) when the directory holds one,
    /// and its file then holds the chain (the agent's certificate, then the
    /// agents CA's), which the agent presents; otherwise, and for every
    /// other role, by the root CA.
    pub fn issue_with(
        &self,
        role: Role,
        name: &str,
        extra_sans: &[String],
        days: u32,
        group: Option<&str>,
    ) -> Result<(PathBuf, PathBuf), PkiError> {
        validate_name(name)?;
        if let Some(g) = group {
            if role != Role::Agent {
                return Err(PkiError::GroupNotAgent(role));
            }
            validate_group(g)?;
        }
        let (cert_path, key_path) = (self.cert(role, name), self.key(role, name));
        for p in [&cert_path, &key_path] {
            if p.exists() {
                return Err(PkiError::Exists { path: p.clone() });
            }
        }
        let by_agents_ca = role == Role::Agent && self.has_agents_ca();
        let (ca_cert, ca_key) = if by_agents_ca {
            (self.agents_ca_cert(), self.agents_ca_key())
        } else {
            (self.ca_cert(), self.ca_key())
        };
        let ca_key_pem = read_string(&ca_key)?;
        let ca_cert_pem = read_string(&ca_cert)?;
        let ca_key = KeyPair::from_pem(&ca_key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&ca_cert_pem, ca_key)?;

        let mut params = leaf_params(role, name, extra_sans, group)?;
        set_validity(&mut params, days);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        let mut pem = cert.pem();
        if by_agents_ca {
            // The chain the agent presents: its certificate, then the CA
            // that signed it (the collector trusts only the root).
            if !pem.ends_with('\n') {
                pem.push('\n');
            }
            pem.push_str(&ca_cert_pem);
        }
        write_private(&key_path, key.serialize_pem().as_bytes())?;
        write_file(&cert_path, pem.as_bytes())?;
        Ok((cert_path, key_path))
    }
}

/// The agents' issuing CA (DESIGN.md, "Certificate custody"): an
/// intermediate CA the root signs, whose key the collector holds online to
/// sign agents' certificates and the agents' revocation list. The root
/// stays offline.
impl PkiDir {
    pub fn agents_ca_cert(&self) -> PathBuf {
        self.dir.join("agents-ca.pem")
    }
    pub fn agents_ca_key(&self) -> PathBuf {
        self.dir.join("agents-ca.key")
    }
    /// The agents' revocation list as the collector writes it (the
    /// collector's `[agents_ca] crl`; quickstart puts it here).
    pub fn agents_crl(&self) -> PathBuf {
        self.dir.join("agents-crl.pem")
    }

    /// Whether this directory holds an agents' issuing CA (certificate and
    /// key).
    pub fn has_agents_ca(&self) -> bool {
        self.agents_ca_cert().exists() && self.agents_ca_key().exists()
    }

    /// Creates the agents' issuing CA, signed by the root (which must be in
    /// this directory): a CA certificate that may sign only end-entity
    /// certificates (path length 0) and revocation lists (keyCertSign,
    /// cRLSign), valid for `days`. Refuses to overwrite an existing one.
    pub fn init_agents_ca(
        &self,
        common_name: &str,
        days: u32,
    ) -> Result<(PathBuf, PathBuf), PkiError> {
        let (cert_path, key_path) = (self.agents_ca_cert(), self.agents_ca_key());
        for p in [&cert_path, &key_path] {
            if p.exists() {
                return Err(PkiError::Exists { path: p.clone() });
            }
        }
        let root_key = KeyPair::from_pem(&read_string(&self.ca_key())?)?;
        let issuer = Issuer::from_ca_cert_pem(&read_string(&self.ca_cert())?, root_key)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationalUnitName, "agents-ca");
        dn.push(DnType::OrganizationName, "Kiroku");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, days);
        let cert = params.signed_by(&key, &issuer)?;
        write_private(&key_path, key.serialize_pem().as_bytes())?;
        write_file(&cert_path, cert.pem().as_bytes())?;
        Ok((cert_path, key_path))
    }
}

impl PkiDir {
    pub fn crl(&self) -> PathBuf {
        self.dir.join("crl.pem")
    }

    fn revoked_list(&self) -> PathBuf {
        self.dir.join("revoked.txt")
    }

    /// Revokes the certificate in `cert_pem` (one issued by this CA: a
    /// person's, the collector's, an agent's from before the agents CA, or
    /// the agents' issuing CA itself): adds its serial number to
    /// `revoked.txt` and writes a new `crl.pem`, signed by the CA, valid
    /// for `days`. Revoking twice is harmless. An agent certificate from
    /// the agents' issuing CA is refused: the collector revokes those
    /// (`kiroku agents retire`). Returns the CRL's path and what was
    /// revoked (the identity, or the CA's name).
    pub fn revoke(&self, cert_pem: &Path, days: u32) -> Result<(PathBuf, String), PkiError> {
        let pem = std::fs::read(cert_pem).map_err(|source| PkiError::Io {
            path: cert_pem.to_owned(),
            source,
        })?;
        let bad = |message: String| PkiError::BadCert {
            what: cert_pem.display().to_string(),
            message,
        };
        let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).map_err(|e| bad(e.to_string()))?;
        let (_, cert) =
            x509_parser::parse_x509_certificate(&pem.contents).map_err(|e| bad(e.to_string()))?;
        let root_pem = std::fs::read(self.ca_cert()).map_err(|source| PkiError::Io {
            path: self.ca_cert(),
            source,
        })?;
        let (_, root_pem) =
            x509_parser::pem::parse_x509_pem(&root_pem).map_err(|e| bad(e.to_string()))?;
        let (_, root) = x509_parser::parse_x509_certificate(&root_pem.contents)
            .map_err(|e| bad(e.to_string()))?;
        if cert.issuer() != root.subject() {
            let identity = identity_from_der(&pem.contents)
                .map(|i| i.to_string())
                .unwrap_or_else(|_| "it".into());
            return Err(bad(format!(
                "{identity} was issued by {}, not by this CA ({}); an agent certificate from the agents' issuing CA is revoked by the collector: `kiroku agents retire NAME --reason ...`",
                cert.issuer(),
                root.subject()
            )));
        }
        let identity = match identity_from_der(&pem.contents) {
            Ok(id) => id.to_string(),
            Err(_) if cert.is_ca() => format!("the CA {}", cert.subject()),
            Err(e) => return Err(e),
        };
        let serial = hex::encode(cert.raw_serial());
        let list = self.revoked_list();
        let mut serials = self.revoked_serials()?;
        if !serials.contains(&serial) {
            serials.push(serial);
        }
        write_file(&list, format!("{}\n", serials.join("\n")).as_bytes())?;
        Ok((self.write_crl(days)?, identity))
    }

    /// Serial numbers (hex) listed in `revoked.txt`; none when it is absent.
    fn revoked_serials(&self) -> Result<Vec<String>, PkiError> {
        let list = self.revoked_list();
        match std::fs::read_to_string(&list) {
            Ok(t) => Ok(t
                .lines()
                .map(|l| l.trim().to_owned())
                .filter(|l| !l.is_empty())
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(PkiError::Io { path: list, source }),
        }
    }

    /// Writes `crl.pem` listing every serial in `revoked.txt` (none: an
    /// empty list), signed by the CA, valid for `days`.
    pub fn write_crl(&self, days: u32) -> Result<PathBuf, PkiError> {
        let serials = self.revoked_serials()?;
        let ca_key = KeyPair::from_pem(&read_string(&self.ca_key())?)?;
        let issuer = Issuer::from_ca_cert_pem(&read_string(&self.ca_cert())?, ca_key)?;
        let now = time::OffsetDateTime::now_utc();
        let revoked_certs = serials
            .iter()
            .filter_map(|s| hex::decode(s).ok())
            .map(|b| rcgen::RevokedCertParams {
                serial_number: SerialNumber::from_slice(&b),
                revocation_time: now,
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect();
        let params = rcgen::CertificateRevocationListParams {
            this_update: now - time::Duration::minutes(5),
            next_update: now + time::Duration::days(i64::from(days.max(1))),
            // Increases with every CRL this CA writes.
            crl_number: SerialNumber::from(now.unix_timestamp().unsigned_abs()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&issuer)?;
        let path = self.crl();
        let tmp = path.with_extension("pem.tmp");
        write_file(&tmp, crl.pem()?.as_bytes())?;
        std::fs::rename(&tmp, &path).map_err(|source| PkiError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }
}

/// The parameters of an end-entity certificate for `role`/`name` (with an
/// agent's `group`): identity URI SAN first, key usages by role. Validity
/// and serial are the caller's (`set_validity`).
pub(crate) fn leaf_params(
    role: Role,
    name: &str,
    extra_sans: &[String],
    group: Option<&str>,
) -> Result<CertificateParams, PkiError> {
    let mut sans: Vec<String> = vec![];
    if role == Role::Collector {
        sans.push(name.to_owned());
    }
    sans.extend(extra_sans.iter().cloned());
    let mut params = CertificateParams::new(sans)?;
    // The identity first: collectors before issue 19 take the first
    // `kiroku://` URI as the identity.
    let uri = format!("{SAN_SCHEME}{role}/{name}");
    params.subject_alt_names.push(SanType::URI(uri.try_into()?));
    if let Some(g) = group {
        let uri = format!("{GROUP_URI_PREFIX}{g}");
        params.subject_alt_names.push(SanType::URI(uri.try_into()?));
    }
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationalUnitName, role.as_str());
    dn.push(DnType::OrganizationName, "Kiroku");
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = match role {
        // Signatures that stand as evidence: nonRepudiation
        // (contentCommitment) beside digitalSignature, nothing for key
        // exchange.
        Role::Signer => vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::ContentCommitment,
        ],
        _ => vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ],
    };
    params.extended_key_usages = match role {
        Role::Collector => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Role::Signer => vec![ExtendedKeyUsagePurpose::Other(
            DOCUMENT_SIGNING_OID.to_vec(),
        )],
        _ => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn set_validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    // A little slack for clocks that lag the issuing host.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days));
    params.serial_number = Some(SerialNumber::from(rand::random::<u64>() >> 1));
}

fn read_string(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write_file(path: &Path, data: &[u8]) -> Result<(), PkiError> {
    std::fs::write(path, data).map_err(|source| PkiError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), PkiError> {
    use std::io::Write;
    let mut f = crate::os::create_private(std::fs::OpenOptions::new().write(true).create_new(true))
        .open(path)
        .map_err(|source| PkiError::Io {
            path: path.to_owned(),
            source,
        })?;
    f.write_all(data).map_err(|source| PkiError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Extracts the Kiroku identity from a DER certificate. The certificate
/// must already have been verified against the CA (rustls does that during
/// the handshake); this only reads the URI SAN.
pub fn identity_from_der(der: &[u8]) -> Result<PeerIdentity, PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| PkiError::BadCert {
        what: "(DER)".into(),
        message: e.to_string(),
    })?;
    let sans = cert
        .subject_alternative_name()
        .map_err(|e| PkiError::BadCert {
            what: "subjectAltName".into(),
            message: e.to_string(),
        })?;
    let uri = sans
        .into_iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .find_map(|gn| match gn {
            x509_parser::extensions::GeneralName::URI(u)
                if u.starts_with(SAN_SCHEME) && !u.starts_with(GROUP_URI_PREFIX) =>
            {
                Some(u.to_string())
            }
            _ => None,
        })
        .ok_or_else(|| PkiError::BadCert {
            what: "subjectAltName".into(),
            message: format!(
                "no {SAN_SCHEME}<role>/<name> URI; issue it with `kiroku certs issue`"
            ),
        })?;
    parse_identity_uri(&uri)
}

/// Parses `kiroku://<role>/<name>`.
pub fn parse_identity_uri(uri: &str) -> Result<PeerIdentity, PkiError> {
    let rest = uri.strip_prefix(SAN_SCHEME).unwrap_or(uri);
    let (role, name) = rest.split_once('/').ok_or_else(|| PkiError::BadCert {
        what: "identity URI".into(),
        message: format!("{uri:?} is not {SAN_SCHEME}<role>/<name>"),
    })?;
    validate_name(name)?;
    Ok(PeerIdentity {
        role: role.parse()?,
        name: name.to_owned(),
    })
}

/// Groups are names like agent names.
pub fn validate_group(group: &str) -> Result<(), PkiError> {
    validate_name(group).map_err(|_| PkiError::BadGroup(group.to_owned()))
}

/// The agent group a DER certificate carries (`kiroku://group/<group>`),
/// if any. Like [`identity_from_der`], for a certificate already verified.
pub fn group_from_der(der: &[u8]) -> Result<Option<String>, PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| PkiError::BadCert {
        what: "(DER)".into(),
        message: e.to_string(),
    })?;
    let sans = cert
        .subject_alternative_name()
        .map_err(|e| PkiError::BadCert {
            what: "subjectAltName".into(),
            message: e.to_string(),
        })?;
    let mut groups = sans
        .into_iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|gn| match gn {
            x509_parser::extensions::GeneralName::URI(u) => u.strip_prefix(GROUP_URI_PREFIX),
            _ => None,
        });
    let Some(group) = groups.next() else {
        return Ok(None);
    };
    if groups.next().is_some() {
        return Err(PkiError::BadCert {
            what: "subjectAltName".into(),
            message: format!("more than one {GROUP_URI_PREFIX}<group> URI"),
        });
    }
    validate_group(group)?;
    Ok(Some(group.to_owned()))
}

/// Reads the identity out of a PEM certificate file.
pub fn identity_from_pem_file(path: &Path) -> Result<PeerIdentity, PkiError> {
    let pem = std::fs::read(path).map_err(|source| PkiError::Io {
        path: path.to_owned(),
        source,
    })?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).map_err(|e| PkiError::BadCert {
        what: path.display().to_string(),
        message: e.to_string(),
    })?;
    identity_from_der(&pem.contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificate_carries_role_and_name() {
        let dir = tempfile_dir();
        let pki = PkiDir::new(&dir);
        pki.init_ca("test CA").expect("init");
        assert!(matches!(pki.init_ca("again"), Err(PkiError::Exists { .. })));
        for role in [
            Role::Agent,
            Role::Investigator,
            Role::Admin,
            Role::Collector,
            Role::Signer,
        ] {
            let (cert, _) = pki
                .issue(role, "host-1.example", &["127.0.0.1".into()], 30)
                .expect("issue");
            let id = identity_from_pem_file(&cert).expect("identity");
            assert_eq!(
                id,
                PeerIdentity {
                    role,
                    name: "host-1.example".into()
                }
            );
        }
        assert!(matches!(
            pki.issue(Role::Agent, "../evil", &[], 30),
            Err(PkiError::BadName(_))
        ));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn signer_certificate_signs_documents_and_nothing_else() {
        let dir = tempfile_dir();
        let pki = PkiDir::new(&dir);
        pki.init_ca("test CA").expect("init");
        let (cert, _) = pki.issue(Role::Signer, "c1", &[], 30).expect("issue");
        let pem = std::fs::read(&cert).expect("read");
        let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).expect("pem");
        let (_, x) = x509_parser::parse_x509_certificate(&pem.contents).expect("der");
        let eku = x
            .extended_key_usage()
            .expect("eku parses")
            .expect("eku present")
            .value;
        assert!(!eku.client_auth && !eku.server_auth && !eku.any);
        let oid =
            x509_parser::oid_registry::Oid::from(&[1, 3, 6, 1, 5, 5, 7, 3, 36][..]).expect("oid");
        assert_eq!(eku.other, vec![oid]);
        assert_eq!(
            identity_from_der(&pem.contents).expect("id").role,
            Role::Signer
        );
        assert_eq!("signer".parse::<Role>().expect("parse"), Role::Signer);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn group_is_carried_beside_the_identity() {
        let dir = tempfile_dir();
        let pki = PkiDir::new(&dir);
        pki.init_ca("test CA").expect("init");
        let (cert, _) = pki
            .issue_with(Role::Agent, "a1", &[], 30, Some("sales"))
            .expect("issue");
        let der = first_der(&cert);
        assert_eq!(
            identity_from_der(&der).expect("id"),
            PeerIdentity {
                role: Role::Agent,
                name: "a1".into()
            }
        );
        assert_eq!(group_from_der(&der).expect("group"), Some("sales".into()));
        let (plain, _) = pki.issue(Role::Agent, "a2", &[], 30).expect("issue");
        assert_eq!(group_from_der(&first_der(&plain)).expect("group"), None);
        for bad in ["../x", "", "a b", ".hidden"] {
            assert!(
                matches!(
                    pki.issue_with(Role::Agent, "a3", &[], 30, Some(bad)),
                    Err(PkiError::BadGroup(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            pki.issue_with(Role::Admin, "root", &[], 30, Some("sales")),
            Err(PkiError::GroupNotAgent(Role::Admin))
        ));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn agents_ca_signs_agents_only_and_the_file_holds_the_chain() {
        let dir = tempfile_dir();
        let pki = PkiDir::new(&dir);
        pki.init_ca("test CA").expect("init");
        assert!(!pki.has_agents_ca());
        pki.init_agents_ca("agents CA", 365).expect("agents ca");
        assert!(pki.has_agents_ca());
        assert!(matches!(
            pki.init_agents_ca("again", 365),
            Err(PkiError::Exists { .. })
        ));
        let ca = x509_parser::pem::Pem::iter_from_buffer(
            &std::fs::read(pki.agents_ca_cert()).expect("read"),
        )
        .next()
        .expect("one")
        .expect("pem");
        let (_, ca) = x509_parser::parse_x509_certificate(&ca.contents).expect("der");
        let bc = ca.basic_constraints().expect("bc").expect("present").value;
        assert!(bc.ca);
        assert_eq!(bc.path_len_constraint, Some(0));
        let ku = ca.key_usage().expect("ku").expect("present").value;
        assert!(ku.key_cert_sign() && ku.crl_sign() && !ku.digital_signature());

        let (agent, _) = pki
            .issue_with(Role::Agent, "a1", &[], 30, Some("ops"))
            .expect("agent");
        let chain = all_ders(&agent);
        assert_eq!(chain.len(), 2, "agent certificate then the agents CA");
        let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).expect("leaf");
        assert_eq!(leaf.issuer(), ca.subject());
        let (admin, _) = pki.issue(Role::Admin, "boss", &[], 30).expect("admin");
        let chain = all_ders(&admin);
        assert_eq!(chain.len(), 1, "people's certificates come from the root");
        let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).expect("leaf");
        assert_ne!(leaf.issuer(), ca.subject());
        std::fs::remove_dir_all(&dir).ok();
    }

    fn all_ders(path: &Path) -> Vec<Vec<u8>> {
        x509_parser::pem::Pem::iter_from_buffer(&std::fs::read(path).expect("read"))
            .map(|p| p.expect("pem").contents)
            .collect()
    }

    fn first_der(path: &Path) -> Vec<u8> {
        all_ders(path).remove(0)
    }

    #[test]
    fn identity_uri_parsing() {
        let cases = [
            ("kiroku://agent/a1", Some((Role::Agent, "a1"))),
            ("kiroku://admin/root.x", Some((Role::Admin, "root.x"))),
            ("kiroku://wizard/x", None),
            ("kiroku://agent/", None),
            ("kiroku://agent", None),
        ];
        for (uri, want) in cases {
            let got = parse_identity_uri(uri).ok().map(|i| (i.role, i.name));
            assert_eq!(got, want.map(|(r, n)| (r, n.to_owned())), "{uri}");
        }
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("kiroku-pki-test-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }
}
