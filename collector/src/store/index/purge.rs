//! Dropping purged events from the index (issue 19): their documents
//! deleted and committed, then the segments holding deleted documents
//! merged so that the space is really given back (tantivy only frees a
//! deleted document's bytes when its segment is merged).

use tantivy::Term;

use super::{EventIndex, IndexError, TantivyIndex};

/// What [`EventIndex::purge`] did.
#[derive(Debug, Default, Clone, Copy)]
pub struct IndexPurge {
    /// Documents gone (count before minus after).
    pub deleted: u64,
    /// Segments merged to drop deleted documents.
    pub merged_segments: u64,
}

impl EventIndex {
    /// Deletes the documents of `ids` and commits (durable), then merges
    /// the segments that hold deleted documents when `merge` says the
    /// merge's bytes fit (it is given their size on disk). Refused during
    /// a rebuild (`index.next/`): the purge waits for it to finish.
    pub fn purge(
        &self,
        ids: &[String],
        merge: impl FnOnce(u64) -> bool,
    ) -> Result<IndexPurge, IndexError> {
        let serving = {
            let ix = self.indexes();
            if ix.building.is_some() {
                return Err(IndexError::Other {
                    path: ix.serving.path.clone(),
                    message: "an index rebuild is in progress; purged events are dropped from the index once it has finished".into(),
                });
            }
            ix.serving.clone()
        };
        let deleted = {
            let _group = self.write_group();
            serving.delete(ids)?
        };
        // The merge runs without the group lock: ingest goes on meanwhile.
        let merged_segments = serving.merge_deleted(merge)?;
        Ok(IndexPurge {
            deleted,
            merged_segments,
        })
    }
}

impl TantivyIndex {
    /// Deletes the documents of `ids` and commits; returns how many went.
    fn delete(&self, ids: &[String]) -> Result<u64, IndexError> {
        let before = self.count();
        self.with_writer(|w| {
            for id in ids {
                w.delete_term(Term::from_field_text(self.f.event_id, id));
            }
            self.commit_with(w)
        })?;
        self.reader.reload().map_err(|e| self.terr(e))?;
        Ok(before.saturating_sub(self.count()))
    }

    /// Merges the segments holding deleted documents when `merge` allows
    /// their size; returns how many were merged.
    fn merge_deleted(&self, merge: impl FnOnce(u64) -> bool) -> Result<u64, IndexError> {
        let searcher = self.reader.searcher();
        let segs: Vec<_> = searcher
            .segment_readers()
            .iter()
            .filter(|s| s.num_deleted_docs() > 0)
            .map(|s| s.segment_id())
            .collect();
        if segs.is_empty() {
            return Ok(0);
        }
        let bytes = super::merges::segments_bytes(&self.path, &segs);
        if !merge(bytes) {
            tracing::info!(index = %self.path.display(), segments = segs.len(), bytes, "purged documents stay in their index segments until there is room to merge them");
            return Ok(0);
        }
        // Started under the writer's lock, waited for without it.
        let pending = self.with_writer(|w| Ok(w.merge(&segs)))?;
        let merged = match pending.wait() {
            Ok(_) => segs.len() as u64,
            // A segment already being merged by the merge policy: that
            // merge drops the deleted documents as well.
            Err(e) => {
                tracing::info!(index = %self.path.display(), error = %e, "merging the segments of purged documents was not done now (a merge in progress takes them)");
                0
            }
        };
        self.reader.reload().map_err(|e| self.terr(e))?;
        Ok(merged)
    }
}
