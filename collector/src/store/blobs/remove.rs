//! Removing blobs nothing live names any more (issue 19, a purge's last
//! step; `store/purge.rs` decides which). A blob used recently is spared:
//! an agent may just have been told it is held (`MissingBlobs`) or have
//! uploaded it for an event not shipped yet, and a message being stored
//! may reuse an attachment blob (its time of use is renewed then, and the
//! store holds the blob store's lock while it writes).

use std::path::Path;

use super::{BlobError, BlobStore, io};

/// What removing one blob freed.
#[derive(Debug, Default, Clone)]
pub struct Removed {
    /// Bytes on disk given back.
    pub bytes: u64,
    /// The attachment blobs a removed manifest named (candidates for
    /// removal in turn).
    pub parts: Vec<String>,
}

/// Sets a file's modification time to now: the blob's last use.
pub(super) fn touch(path: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(path) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

impl BlobStore {
    /// When blob `sha` (whole or its manifest) was last written or reused
    /// (ms since the epoch), if it is stored.
    pub fn last_used_ms(&self, sha: &str) -> Option<i64> {
        [self.path(sha).ok()?, self.manifest_path(sha).ok()?]
            .iter()
            .find_map(|p| p.metadata().ok())
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }

    /// Removes blob `sha` (the whole blob or its manifest; the attachment
    /// blobs a manifest names are returned, not removed) when `still_wanted`
    /// says no under the store's lock, so no store in between reuses it.
    /// Nothing stored: `Ok(None)`.
    pub fn remove_if(
        &self,
        sha: &str,
        still_wanted: impl FnOnce() -> bool,
    ) -> Result<Option<Removed>, BlobError> {
        let _gc = self.gc.write().unwrap_or_else(|p| p.into_inner());
        if still_wanted() {
            return Ok(None);
        }
        let mut out = Removed::default();
        let whole = self.path(sha)?;
        let manifest = self.manifest_path(sha)?;
        if manifest.exists() {
            out.parts = self
                .manifest_parts(sha)?
                .into_iter()
                .map(|(p, _)| p)
                .collect();
        }
        let mut found = false;
        for p in [whole, manifest] {
            let Ok(m) = p.metadata() else {
                continue;
            };
            std::fs::remove_file(&p).map_err(io(&p))?;
            if let Some(parent) = p.parent() {
                std::fs::File::open(parent)
                    .and_then(|d| d.sync_all())
                    .map_err(io(parent))?;
            }
            out.bytes += m.len();
            found = true;
        }
        Ok(found.then_some(out))
    }
}
