//! The switch: the finished index put in place of the old one under the
//! write lock, and a switch a crash interrupted between its two renames
//! finished at the next open.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{
    IndexError, Indexes, Progress, Shared, TantivyIndex, next_path, other, poisoned, sync_dir,
};

impl Shared {
    /// Puts the finished index in place of the old one (see the module
    /// documentation), under the write lock: no add or commit runs
    /// meanwhile, and none can reach the index being moved.
    pub(super) fn switch(&self) -> Result<PathBuf, IndexError> {
        // From here adds and commits wait until the switch is over; taking
        // the write lock once lets those already running finish. Queries
        // go on meanwhile: the merges still running in the new index, which
        // the switch must wait for (they write into its directory), can
        // take minutes after a large rebuild.
        struct Switching<'a>(&'a AtomicBool);
        impl Drop for Switching<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::SeqCst);
            }
        }
        self.switching.store(true, Ordering::SeqCst);
        let _switching = Switching(&self.switching);
        let building = self
            .indexes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .building
            .clone();
        let Some(building) = building else {
            return Err(other(&self.path, "no rebuild to finish".into()));
        };
        let next = building.path.clone();
        // The last commit, marked complete; then the writer is closed (it
        // holds the directory's lock and its path) once its merges are
        // done, no new one started.
        {
            let mut progress = Progress::of(&building).unwrap_or_default();
            progress.complete = true;
            building.set_progress(&progress);
            let mut w = building.writer.lock().map_err(|_| poisoned(&next))?;
            let Some(writer) = w.as_mut() else {
                return Err(other(&next, "the new index has no writer".into()));
            };
            writer.set_merge_policy(Box::new(tantivy::indexer::NoMergePolicy));
            building.commit_with(writer)?;
            if let Some(writer) = w.take()
                && let Err(e) = writer.wait_merging_threads()
            {
                // The commit above stands; a merge that failed only leaves
                // more segments.
                tracing::warn!(index = %next.display(), error = %e, "a merge of the rebuilt index failed");
            }
        }
        let mut ix = self.indexes.write().unwrap_or_else(|p| p.into_inner());
        let reopen_next = |ix: &mut Indexes| match TantivyIndex::open_current(&next) {
            Ok(b) => ix.building = Some(Arc::new(b)),
            Err(e) => {
                tracing::error!(index = %next.display(), error = %e, "cannot reopen the index being rebuilt");
                ix.building = None;
            }
        };
        let aside = self
            .path
            .with_extension(format!("pre-{}", kiroku_common::now_ms() / 1000));
        let parent = self.path.parent().unwrap_or(Path::new("."));
        if let Err(e) = std::fs::rename(&self.path, &aside) {
            reopen_next(&mut ix);
            return Err(other(
                &self.path,
                format!("moving the old index to {}: {e}", aside.display()),
            ));
        }
        if let Err(e) = std::fs::rename(&next, &self.path).and_then(|()| sync_dir(parent)) {
            if std::fs::rename(&aside, &self.path).is_ok() {
                reopen_next(&mut ix);
            }
            return Err(other(
                &self.path,
                format!(
                    "moving the rebuilt index {} into place: {e}",
                    next.display()
                ),
            ));
        }
        let fresh = TantivyIndex::open_current(&self.path).map_err(|e| {
            ix.building = None;
            other(
                &self.path,
                format!(
                    "the rebuilt index does not open ({e}); the old one is kept at {}. {}",
                    aside.display(),
                    crate::store::REPAIR_HINT
                ),
            )
        })?;
        fresh.set_progress_none();
        if let Some(h) = self
            .headroom
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            fresh.limit_merges(h);
        }
        ix.serving = Arc::new(fresh);
        ix.building = None;
        Ok(aside)
    }
}

/// A crash between the two renames of a switch leaves no index at `path`
/// but a complete successor beside it: move it in place. (`.rebuilding`
/// is where rebuilds at open, before background rebuilds, and `repair`
/// build.)
pub(super) fn finish_interrupted_switch(path: &Path) {
    if path.join("meta.json").exists() {
        return;
    }
    let rebuilding = path.with_extension("rebuilding");
    let next = next_path(path);
    let complete = |p: &Path| -> bool {
        if p == next {
            // Only a successor whose last commit says it is complete.
            tantivy::Index::open_in_dir(p)
                .and_then(|ix| ix.load_metas())
                .ok()
                .and_then(|m| serde_json::from_str::<Progress>(m.payload.as_deref()?).ok())
                .is_some_and(|p| p.complete)
        } else {
            p.join("meta.json").exists()
        }
    };
    for fresh in [next.clone(), rebuilding] {
        if !fresh.join("meta.json").exists() || !complete(&fresh) {
            continue;
        }
        let _ = std::fs::remove_dir_all(path);
        match std::fs::rename(&fresh, path) {
            Ok(()) => {
                tracing::warn!(index = %path.display(), "finished an index rebuild interrupted by a crash")
            }
            Err(e) => {
                tracing::error!(index = %path.display(), error = %e, "cannot finish an interrupted index rebuild")
            }
        }
        return;
    }
}
