//! One step of a rebuild: the next batch read from the journal and
//! committed into the new index with the progress it reached, unless the
//! disk has no room left above the reserve; and what the job reports.

use kiroku_proto::Event;

use super::super::super::journal::{self, Provenance};
use super::{
    DerivedSource, IndexError, Job, Progress, RebuildState, RebuildStatus, SCHEMA_VERSION, Shared,
    Step, TantivyIndex, dir_bytes, other,
};

/// Room kept free beyond the estimate of what the rebuild still writes.
const MARGIN: u64 = 64 << 20;

impl TantivyIndex {
    pub(super) fn set_progress(&self, p: &Progress) {
        *self.payload.lock().unwrap_or_else(|p| p.into_inner()) = serde_json::to_string(p).ok();
    }

    pub(super) fn set_progress_none(&self) {
        *self.payload.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Adds a batch from the journal and commits it with the progress it
    /// reached, under one hold of the writer (a rollback of the
    /// committer's cannot drop it in between).
    fn add_and_commit(
        &self,
        events: Vec<(Event, Provenance)>,
        progress: &Progress,
        derive: Option<&DerivedSource>,
    ) -> Result<(), IndexError> {
        let (events, provenance): (Vec<Event>, Vec<Provenance>) = events.into_iter().unzip();
        self.with_writer(|w| {
            self.add_with(w, &events, derive, Some(&provenance))?;
            self.set_progress(progress);
            self.commit_with(w)
        })?;
        self.reader.reload().map_err(|e| self.terr(e))
    }
}

impl Job {
    fn percent(&self) -> f64 {
        if self.progress.complete || self.progress.at >= self.end || self.total_bytes == 0 {
            return 100.0;
        }
        let seg_start = self
            .segments
            .iter()
            .find(|(n, _)| *n == self.progress.at.segment)
            .map_or(self.total_bytes, |(_, b)| *b);
        let done = seg_start + self.progress.at.offset;
        (done as f64 * 100.0 / self.total_bytes as f64).min(99.9)
    }

    pub(super) fn status(&self, state: RebuildState, reason: String) -> RebuildStatus {
        let secs = self.started.elapsed().as_secs_f64();
        RebuildStatus {
            state,
            events_done: self.progress.events,
            events_total: self.events_total,
            percent: if state == RebuildState::Done {
                100.0
            } else {
                self.percent()
            },
            events_per_second: if secs > 0.0 {
                (self.progress.events - self.events_at_start) as f64 / secs
            } else {
                0.0
            },
            from_version: self.from_version,
            to_version: SCHEMA_VERSION,
            reason,
        }
    }

    /// Adds the next batch from the journal, unless the disk has no room
    /// for the rest of the rebuild above the reserve.
    pub(super) fn step(&mut self, shared: &Shared) -> Result<Step, IndexError> {
        if self.progress.at >= self.end {
            return Ok(Step::CaughtUp);
        }
        if let Some(room) = shared.headroom() {
            let need = self
                .old_bytes
                .saturating_sub(dir_bytes(&self.building.path))
                .saturating_add(MARGIN);
            if room < need {
                return Ok(Step::Paused(format!(
                    "it needs about {} MB more on the disk of {} above the free-space reserve (min_free_bytes), and {} MB are left; free disk space and it resumes by itself (ingest goes on meanwhile)",
                    need.div_ceil(1_000_000),
                    self.building.path.display(),
                    room / 1_000_000
                )));
            }
        }
        let (events, at) =
            journal::read_events(&self.journal, self.progress.at, self.end, self.batch)
                .map_err(|e| other(&self.journal, e.to_string()))?;
        let progress = Progress {
            at,
            events: self.progress.events + events.len() as u64,
            complete: false,
        };
        self.building
            .add_and_commit(events, &progress, shared.derived().as_ref())?;
        self.progress = progress;
        Ok(Step::Batch)
    }
}
