//! A rebuild started: when the serving index is of an older schema, its
//! successor opened (resumed, or started over) and the job prepared, then
//! handed to the rebuild thread; the start recorded in the audit log.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::super::super::journal::{self, Journal};
use super::thread::run;
use super::{
    EventIndex, IndexError, Job, Progress, RebuildAudit, RebuildState, SCHEMA_VERSION,
    TantivyIndex, dir_bytes, next_path, other, read_version,
};

/// Events per batch (one commit each).
const BATCH: usize = 10_000;

impl EventIndex {
    /// Has a rebuild's start and switch recorded through `hook` (the store
    /// sets it to its audit log before [`EventIndex::start_rebuild`]).
    pub fn audit_rebuilds_with(&self, hook: RebuildAudit) {
        let _ = self.shared.audit.set(hook);
    }

    /// When the serving index is of an older schema: builds its successor
    /// from the journal `journal` in a background thread, resuming a
    /// rebuild a crash interrupted (see the module documentation). New
    /// events go into the new index from now on. Otherwise removes what an
    /// earlier rebuild may have left.
    pub fn start_rebuild(&self, journal: &Journal) -> Result<(), IndexError> {
        let Some(job) = self.prepare_rebuild(journal)? else {
            return Ok(());
        };
        self.shared.audit(
            crate::store::audit::admin_call::INDEX_REBUILD_START,
            &format!(
                "index {} rebuilding from schema version {} to {SCHEMA_VERSION}{}",
                self.shared.path.display(),
                job.from_version,
                match job.progress.events {
                    0 => String::new(),
                    n => format!(" (resumed after {n} events)"),
                }
            ),
        );
        let shared = self.shared.clone();
        std::thread::Builder::new()
            .name("index-rebuild".into())
            .spawn(move || run(&shared, job))
            .map_err(|e| other(&self.shared.path, format!("starting the rebuild: {e}")))?;
        Ok(())
    }

    /// The rebuild's job, its new index open and taking new events; None
    /// when no rebuild is needed.
    pub(super) fn prepare_rebuild(&self, journal: &Journal) -> Result<Option<Job>, IndexError> {
        let path = &self.shared.path;
        let next = next_path(path);
        let serving = self.serving();
        if serving.is_current() {
            if next.exists() {
                tracing::warn!(index = %next.display(), "removing the leftover of an index rebuild that is no longer needed");
                std::fs::remove_dir_all(&next)
                    .map_err(|e| other(&next, format!("removing it: {e}")))?;
            }
            return Ok(None);
        }
        let building = open_next(&next)?;
        let progress = Progress::of(&building).unwrap_or_default();
        let end = journal.end();
        let mut segments = Vec::new();
        let mut total_bytes = 0;
        for n in
            journal::segments(journal.dir()).map_err(|e| other(journal.dir(), e.to_string()))?
        {
            segments.push((n, total_bytes));
            total_bytes += if n == end.segment {
                end.offset
            } else {
                std::fs::metadata(journal.dir().join(format!("{n:020}.log"))).map_or(0, |m| m.len())
            };
        }
        let delay = crate::test_hooks::rebuild_delay();
        let job = Job {
            building: Arc::new(building),
            journal: journal.dir().to_owned(),
            progress,
            end,
            segments,
            total_bytes,
            events_total: serving.count(),
            old_bytes: dir_bytes(path),
            from_version: serving.version,
            batch: if delay.is_some() { 1 } else { BATCH },
            delay,
            started: Instant::now(),
            events_at_start: progress.events,
        };
        if let Some(h) = self
            .shared
            .headroom
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            job.building.limit_merges(h);
        }
        tracing::warn!(
            index = %path.display(), new = %next.display(), from_version = serving.version, to_version = SCHEMA_VERSION,
            resumed_at = ?progress.at, events_done = progress.events,
            "rebuilding the index from the journal in the background; the old index answers queries until the new one takes over"
        );
        self.shared
            .set_status(job.status(RebuildState::Rebuilding, String::new()));
        self.shared
            .indexes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .building = Some(job.building.clone());
        Ok(Some(job))
    }
}

/// Opens (resuming) or creates the successor at `next`; one of another
/// version or schema is started over.
fn open_next(next: &Path) -> Result<TantivyIndex, IndexError> {
    if next.join("meta.json").exists() {
        if read_version(next) == SCHEMA_VERSION {
            match TantivyIndex::open_current(next) {
                Ok(ix) => return Ok(ix),
                Err(e) => {
                    tracing::warn!(index = %next.display(), error = %e, "the interrupted index rebuild cannot be resumed; starting it over")
                }
            }
        } else {
            tracing::warn!(index = %next.display(), "the interrupted index rebuild was for another schema version; starting it over");
        }
    }
    if next.exists() {
        std::fs::remove_dir_all(next).map_err(|e| other(next, format!("removing it: {e}")))?;
    }
    TantivyIndex::open_current(next)
}
