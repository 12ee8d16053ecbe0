//! The agent's key and certificate files as enrollment and renewal write
//! them: each written to `<file>.enrolling`, synced, then renamed over;
//! the key (private: mode 0600 on Unix; on Windows the data directory's
//! ACL protects it) before the certificate.

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

fn write_synced(path: &Path, data: &[u8], private: bool) -> anyhow::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    if private {
        // A stale temporary key (an earlier attempt) is replaced, never
        // reused with wider permissions.
        let _ = std::fs::remove_file(path);
        kiroku_common::os::create_private(&mut opts);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
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
