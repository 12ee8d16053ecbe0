//! The agent's key and certificate files as enrollment and renewal write
//! them: each written to `<file>.enrolling`, synced, then renamed over;
//! the key (private: mode 0600 on Unix; on Windows a protected DACL for
//! SYSTEM, Administrators and the creating account, [`key_sddl`]) before
//! the certificate. The temporary key file is always created new (a
//! stale one is removed first; a file or link planted in between makes
//! the write fail rather than be followed).

use std::io::Write;
use std::path::Path;

use anyhow::Context;

use super::pending;

/// Finishes an enrollment a crash cut between its two renames: the key is
/// in place, the certificate still at `<cert>.enrolling`.
pub fn finish_interrupted(cert: &Path, key: &Path) -> anyhow::Result<()> {
    let tmp = pending(cert);
    if !cert.exists() && key.exists() && tmp.exists() {
        std::fs::rename(&tmp, cert)
            .with_context(|| format!("renaming {} to {}", tmp.display(), cert.display()))?;
        tracing::info!(cert = %cert.display(), "finished an enrollment interrupted before its certificate was in place");
    }
    Ok(())
}

/// The key to enroll: the one at `<key>.enrolling` when an earlier
/// attempt left it (its response may have been lost: the collector
/// returns the same certificate for the same token, name and key), else a
/// new P-256 key written there (private, synced) before it is sent.
pub fn pending_key(key: &Path) -> anyhow::Result<rcgen::KeyPair> {
    let tmp = pending(key);
    if let Ok(pem) = std::fs::read_to_string(&tmp) {
        match rcgen::KeyPair::from_pem(&pem) {
            Ok(k) => {
                tracing::info!(key = %tmp.display(), "enrolling with the key of an earlier attempt");
                return Ok(k);
            }
            Err(e) => {
                tracing::warn!(key = %tmp.display(), error = %e, "an earlier attempt's key does not load: making a new one")
            }
        }
    }
    if let Some(dir) = key.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the directory {}", dir.display()))?;
    }
    let k = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .context("generating the agent's key")?;
    write_synced(&tmp, k.serialize_pem().as_bytes(), true)?;
    Ok(k)
}

/// Checks what the collector returned: PEM certificates, the first for
/// our key, role agent.
pub fn check_issued(chain_pem: &str, key: &rcgen::KeyPair) -> anyhow::Result<()> {
    let leaf = first_der(chain_pem.as_bytes())?;
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).map_err(|e| {
        anyhow::anyhow!("the collector returned a certificate that does not parse: {e}")
    })?;
    use rcgen::PublicKeyData;
    if cert.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
        anyhow::bail!("the collector returned a certificate for another key (not this agent's)");
    }
    let id = kiroku_common::pki::identity_from_der(&leaf)?;
    if id.role != kiroku_common::pki::Role::Agent {
        anyhow::bail!(
            "the collector returned a {} certificate, not an agent's",
            id.role
        );
    }
    Ok(())
}

/// The DER of the first certificate in `pem`.
pub fn first_der(pem: &[u8]) -> anyhow::Result<Vec<u8>> {
    match x509_parser::pem::Pem::iter_from_buffer(pem).next() {
        Some(Ok(p)) => Ok(p.contents),
        Some(Err(e)) => anyhow::bail!("not a PEM certificate: {e}"),
        None => anyhow::bail!("no PEM certificate"),
    }
}

/// Writes a fresh enrollment's key and certificate chain.
pub fn write_enrolled(
    cert: &Path,
    key: &Path,
    key_pem: &str,
    chain_pem: &str,
) -> anyhow::Result<()> {
    for p in [cert, key] {
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the directory {}", dir.display()))?;
        }
    }
    let (key_tmp, cert_tmp) = (pending(key), pending(cert));
    write_synced(&key_tmp, key_pem.as_bytes(), true)?;
    write_synced(&cert_tmp, chain_pem.as_bytes(), false)?;
    std::fs::rename(&key_tmp, key)
        .with_context(|| format!("renaming {} to {}", key_tmp.display(), key.display()))?;
    std::fs::rename(&cert_tmp, cert)
        .with_context(|| format!("renaming {} to {}", cert_tmp.display(), cert.display()))?;
    sync_dir(cert);
    Ok(())
}

/// Replaces the certificate (renewal: same key).
pub fn replace_cert(cert: &Path, chain_pem: &str) -> anyhow::Result<()> {
    let tmp = pending(cert);
    write_synced(&tmp, chain_pem.as_bytes(), false)?;
    std::fs::rename(&tmp, cert)
        .with_context(|| format!("renaming {} to {}", tmp.display(), cert.display()))?;
    sync_dir(cert);
    Ok(())
}

/// The security descriptor of the agent's key file on Windows (SDDL): a
/// protected DACL (`P`: nothing inherited) with full access for SYSTEM,
/// Administrators and, when known, the account that creates it. Pure, so
/// it is unit-tested on Linux too.
#[cfg_attr(not(windows), allow(dead_code))]
pub fn key_sddl(user_sid: Option<&str>) -> String {
    let mut s = String::from("D:P(A;;FA;;;SY)(A;;FA;;;BA)");
    if let Some(sid) = user_sid.filter(|s| {
        s.starts_with("S-1-")
            && s.bytes()
                .all(|b| b.is_ascii_digit() || b == b'-' || b == b'S')
    }) && sid != "S-1-5-18"
    {
        s.push_str(&format!("(A;;FA;;;{sid})"));
    }
    s
}

fn open_private_new(path: &Path) -> std::io::Result<std::fs::File> {
    #[cfg(windows)]
    {
        super::key_acl_windows::create_new_private(path)
    }
    #[cfg(not(windows))]
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        kiroku_common::os::create_private(&mut opts).open(path)
    }
}

fn write_synced(path: &Path, data: &[u8], private: bool) -> anyhow::Result<()> {
    let opened = if private {
        // A stale temporary key (an earlier attempt) is removed, never
        // reused with other permissions; the new one is created new.
        let _ = std::fs::remove_file(path);
        open_private_new(path)
    } else {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
    };
    let mut f = opened.with_context(|| format!("writing {}", path.display()))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

fn sync_dir(file: &Path) {
    #[cfg(unix)]
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    #[cfg(not(unix))]
    let _ = file;
}

#[cfg(test)]
mod tests {
    use super::key_sddl;

    #[test]
    fn the_key_dacl_is_protected_and_names_system_admins_and_the_creator() {
        for (sid, want) in [
            (None, "D:P(A;;FA;;;SY)(A;;FA;;;BA)"),
            (Some("S-1-5-18"), "D:P(A;;FA;;;SY)(A;;FA;;;BA)"),
            (
                Some("S-1-5-21-1-2-3-1001"),
                "D:P(A;;FA;;;SY)(A;;FA;;;BA)(A;;FA;;;S-1-5-21-1-2-3-1001)",
            ),
            (Some("S-1-5-21)(A;;FA;;;WD"), "D:P(A;;FA;;;SY)(A;;FA;;;BA)"),
        ] {
            assert_eq!(key_sddl(sid), want, "{sid:?}");
        }
    }
}
