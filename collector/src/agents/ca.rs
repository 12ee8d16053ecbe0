//! The agents' issuing CA as the collector holds it: its key signs the
//! agents' revocation list, which the collector writes (created empty at
//! start when absent, renewed a week before its `nextUpdate`, and one
//! serial longer for every retired agent). The listener reloads the file
//! within seconds of a change and cuts the live connections it now refuses.
//!
//! The list itself is the state: a new one is the old one's entries plus
//! the new serial, written to a temporary file, synced, renamed over the
//! old and the directory synced, so a crash leaves the old or the new list,
//! never half of one. A list that does not read is never replaced (what it
//! revokes would be lost): the error names the file.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use kiroku_common::pki::crl::{CrlSigner, Revoked};

use super::AgentsCaConfig;

/// Days a list written here is valid (`nextUpdate`).
const CRL_DAYS: u32 = 30;
/// A list is renewed when it expires within this many seconds.
const RENEW_BEFORE_S: i64 = 7 * 86_400;

pub struct AgentsCa {
    crl: PathBuf,
    /// The root's revocation list (the collector's `crl`), read to see
    /// whether a root-issued agent is revoked already.
    root_crl: Option<PathBuf>,
    signer: CrlSigner,
    /// Serialises writers; the last list number written.
    last_number: Mutex<u64>,
}

impl AgentsCa {
    /// Loads the CA (certificate and key, checked to belong together) and
    /// makes sure its list exists and is not about to expire.
    pub fn open(cfg: &AgentsCaConfig, root_crl: Option<&Path>) -> anyhow::Result<AgentsCa> {
        let read = |p: &Path, what: &str| {
            std::fs::read_to_string(p).with_context(|| {
                format!(
                    "reading the agents' issuing CA {what} {} ([agents_ca]; create it with `kiroku certs agents-ca`)",
                    p.display()
                )
            })
        };
        let what = format!(
            "the agents' issuing CA {} with key {}",
            cfg.cert.display(),
            cfg.key.display()
        );
        let signer = CrlSigner::new(
            &read(&cfg.cert, "certificate")?,
            &read(&cfg.key, "key")?,
            &what,
        )?;
        let ca = AgentsCa {
            crl: cfg.crl.clone(),
            root_crl: root_crl.map(Path::to_path_buf),
            signer,
            last_number: Mutex::new(0),
        };
        ca.renew_if_due()?;
        Ok(ca)
    }

    /// The list's path.
    pub fn crl_path(&self) -> &Path {
        &self.crl
    }

    /// Whether this CA issued the certificate `der`.
    pub fn issued(&self, der: &[u8]) -> bool {
        self.signer.issued(der)
    }

    /// Whether the root's revocation list names the serial (no list: no).
    pub fn root_revoked(&self, serial: &[u8]) -> anyhow::Result<bool> {
        let Some(path) = &self.root_crl else {
            return Ok(false);
        };
        let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let what = format!("the revocation list {}", path.display());
        let (revoked, _) = kiroku_common::pki::crl::read(&pem, &what)?;
        Ok(revoked.iter().any(|r| r.serial == serial))
    }

    /// What the list revokes now, and its `nextUpdate` (seconds); nothing
    /// when it does not exist yet.
    fn current(&self) -> anyhow::Result<Option<(Vec<Revoked>, Option<i64>)>> {
        match std::fs::read(&self.crl) {
            Ok(pem) => {
                let what = format!("the agents' revocation list {}", self.crl.display());
                Ok(Some(kiroku_common::pki::crl::read(&pem, &what).with_context(|| {
                    "it is not replaced while it does not read (what it revokes would be lost): restore it from a backup"
                })?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", self.crl.display())),
        }
    }

    /// Writes the list anew when it is missing or expires within a week.
    pub fn renew_if_due(&self) -> anyhow::Result<()> {
        let mut last = self.lock();
        let now_s = kiroku_common::now_ms() / 1000;
        let revoked = match self.current()? {
            None => Vec::new(),
            Some((_, Some(next))) if next - now_s > RENEW_BEFORE_S => return Ok(()),
            Some((revoked, _)) => revoked,
        };
        self.write(&mut last, &revoked, now_s)?;
        tracing::info!(crl = %self.crl.display(), revoked = revoked.len(), "agents' revocation list written");
        Ok(())
    }

    /// Revokes the certificate with serial number `serial` (as encoded).
    /// Returns whether it was not revoked before.
    pub fn revoke(&self, serial: &[u8]) -> anyhow::Result<bool> {
        let mut last = self.lock();
        let now_s = kiroku_common::now_ms() / 1000;
        let mut revoked = self.current()?.map(|c| c.0).unwrap_or_default();
        if revoked.iter().any(|r| r.serial == serial) {
            return Ok(false);
        }
        revoked.push(Revoked {
            serial: serial.to_vec(),
            at_s: now_s,
        });
        self.write(&mut last, &revoked, now_s)?;
        Ok(true)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, u64> {
        self.last_number.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Signs and writes the list (crash-safe: temporary file, sync,
    /// rename, directory sync), under the lock (`last`: the last list
    /// number).
    fn write(&self, last: &mut u64, revoked: &[Revoked], now_s: i64) -> anyhow::Result<()> {
        use std::io::Write;
        // Increasing across restarts too (time-based), and within a second.
        *last = (*last + 1).max(u64::try_from(kiroku_common::now_ms()).unwrap_or(0));
        let number = *last;
        let pem = self.signer.sign(revoked, now_s, CRL_DAYS, number)?;
        let tmp = self.crl.with_extension("pem.tmp");
        let mut f =
            std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(pem.as_bytes())
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.crl)
            .with_context(|| format!("renaming {} to {}", tmp.display(), self.crl.display()))?;
        if let Some(dir) = self.crl.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .with_context(|| format!("syncing {}", dir.display()))?;
        }
        Ok(())
    }
}
