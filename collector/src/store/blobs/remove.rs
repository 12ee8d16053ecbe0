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

    /// Which of `parts` some stored manifest names. Part blobs are cut
    /// from runs of base64 whatever their MIME role (`blobs/parts.rs`), so
    /// the index cannot tell whether another message still needs one (a
    /// large HTML body shared by a thousand copies of a newsletter names
    /// no attachment): every manifest is read. A purge does this once per
    /// call, for all the parts its removed manifests named; a manifest
    /// stored meanwhile renews its parts' time of use, which the removal
    /// checks under the lock.
    pub fn parts_named(
        &self,
        parts: &std::collections::HashSet<String>,
    ) -> Result<std::collections::HashSet<String>, BlobError> {
        let mut named = std::collections::HashSet::new();
        if parts.is_empty() {
            return Ok(named);
        }
        let mut dirs = vec![self.dir.clone()];
        while let Some(d) = dirs.pop() {
            let rd = match std::fs::read_dir(&d) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(&d)(e)),
            };
            for entry in rd {
                let entry = entry.map_err(io(&d))?;
                let path = entry.path();
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if entry.file_type().map_err(io(&path))?.is_dir() {
                    dirs.push(path);
                } else if let Some(sha) = name.strip_suffix(".krm")
                    && kiroku_common::is_sha256_hex(sha)
                {
                    for (p, _) in self.manifest_parts(sha)? {
                        if parts.contains(&p) {
                            named.insert(p);
                        }
                    }
                }
            }
        }
        Ok(named)
    }
}
