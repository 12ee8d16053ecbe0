//! A purge's last step: the blobs its events named, removed once no live
//! (indexed) event names them, unless an agent claimed them in the last
//! [`BLOB_GRACE_MS`] (told the collector holds them, or uploaded them
//! for an event not shipped yet; `MetaStore::claim_blob`, and the time
//! the blob was last written or reused). A removed manifest's attachment
//! blobs are checked the same way in turn. Blobs spared stay candidates
//! for the next purge.

use super::state::State;
use super::{BLOB_GRACE_MS, PurgeReport};
use crate::store::Store;

impl Store {
    /// `pending`: the records not yet stubs; a blob one of them names
    /// waits (it is not unreferenced until the journal no longer holds the
    /// event).
    pub(super) fn sweep_blobs(
        &self,
        st: &State,
        pending: &[super::Pending],
        report: &mut PurgeReport,
    ) -> anyhow::Result<()> {
        let waiting: std::collections::HashSet<&str> =
            pending.iter().map(|p| p.blob.as_str()).collect();
        let mut queue: Vec<String> = st
            .blobs()?
            .into_iter()
            .filter(|b| !waiting.contains(b.as_str()))
            .collect();
        if queue.is_empty() {
            return Ok(());
        }
        // A candidate another stored manifest still names stays (a part
        // spared by an earlier purge is a candidate again). Parts of
        // manifests removed now wait for a second look at every manifest
        // (`BlobStore::parts_named`), then go the same way.
        let set: std::collections::HashSet<String> = queue.iter().cloned().collect();
        let named = self.blobs.parts_named(&set)?;
        for p in &named {
            st.remove_blob(p)?;
        }
        queue.retain(|b| !named.contains(b));
        let mut parts: Vec<String> = Vec::new();
        let mut parts_checked = false;
        loop {
            let Some(sha) = queue.pop() else {
                if parts.is_empty() || parts_checked {
                    break;
                }
                let set: std::collections::HashSet<String> = parts.drain(..).collect();
                let named = self.blobs.parts_named(&set)?;
                for p in set {
                    if named.contains(&p) {
                        st.remove_blob(&p)?;
                    } else {
                        queue.push(p);
                    }
                }
                parts_checked = true;
                continue;
            };
            if !kiroku_common::is_sha256_hex(&sha) {
                st.remove_blob(&sha)?;
                continue;
            }
            let mut live_err = None;
            let mut recent = false;
            let removed = self.blobs.remove_if(&sha, || {
                // Under the blob store's lock: a claim or a reuse written
                // before this point is seen (see `ingest.rs` `held_for`).
                let now = crate::clock::now_ms();
                let claimed = match self.meta.blob_claimed_ms(&sha) {
                    Ok(c) => c,
                    Err(e) => {
                        live_err = Some(e.to_string());
                        return true;
                    }
                };
                let used = self.blobs.last_used_ms(&sha);
                recent = [claimed, used]
                    .into_iter()
                    .flatten()
                    .any(|t| now.saturating_sub(t) < BLOB_GRACE_MS);
                if recent {
                    return true;
                }
                match self.index.by_hash(&sha, 1) {
                    Ok((events, _)) => !events.is_empty(),
                    Err(e) => {
                        live_err = Some(e.to_string());
                        true
                    }
                }
            })?;
            if let Some(e) = live_err {
                // Kept as a candidate: the next purge asks again.
                tracing::warn!(sha256 = %sha, error = %e, "cannot tell whether a purged event's blob is still named by a live event; kept for now");
                continue;
            }
            match removed {
                Some(r) => {
                    report.blobs_removed += 1;
                    report.blob_bytes_freed += r.bytes;
                    self.meta.unclaim_blob(&sha)?;
                    for p in r.parts {
                        st.add_blob(&p)?;
                        if parts_checked {
                            // A manifest found only now: its parts wait
                            // for the next purge's look.
                            continue;
                        }
                        parts.push(p);
                    }
                    st.remove_blob(&sha)?;
                }
                None if recent && self.blobs.has(&sha) => {
                    report.blobs_spared += 1;
                }
                // Still named by a live event, or not stored: not ours.
                None => st.remove_blob(&sha)?,
            }
        }
        self.meta.flush()?;
        Ok(())
    }
}
