//! The rebuild thread: batches until caught up, then the carry-over and
//! the switch; pauses while the disk has no room, retries after a
//! failure, logs its progress; stopped when the index is dropped.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::carry_over::carry_over;
use super::{EventIndex, Job, RebuildState, SCHEMA_VERSION, Shared, Step};

/// Progress is logged this often.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// A paused rebuild checks for space this often.
const PAUSE_CHECK: Duration = Duration::from_secs(5);
/// After a failed batch or switch, the rebuild tries again after this.
const RETRY: Duration = Duration::from_secs(30);

/// The rebuild thread: batches until caught up, then the switch; pauses
/// while the disk has no room; logs progress every [`LOG_EVERY`].
pub(super) fn run(shared: &Shared, mut job: Job) {
    let mut logged = Instant::now();
    let mut last_state = RebuildState::Rebuilding;
    while !shared.stopped() {
        let (state, reason) = match job.step(shared) {
            Ok(Step::Batch) => {
                if let Some(d) = job.delay {
                    shared.sleep(d);
                }
                (RebuildState::Rebuilding, String::new())
            }
            Ok(Step::Paused(why)) => (RebuildState::PausedForSpace, why),
            Ok(Step::CaughtUp) => {
                match carry_over(shared, &job.building).and_then(|_| shared.switch()) {
                    Ok(aside) => {
                        let s = job.status(RebuildState::Done, String::new());
                        tracing::warn!(
                            index = %shared.path.display(), old = %aside.display(), events = s.events_done,
                            seconds = job.started.elapsed().as_secs(),
                            "index rebuilt for schema version {SCHEMA_VERSION}: queries use it now; the old index is kept (delete it once satisfied)"
                        );
                        shared.audit(
                            crate::store::audit::admin_call::INDEX_REBUILD_SWITCH,
                            &format!(
                                "index {} rebuilt for schema version {SCHEMA_VERSION} ({} events) serves queries now; the old one is kept at {}",
                                shared.path.display(),
                                s.events_done,
                                aside.display()
                            ),
                        );
                        shared.set_status(s);
                        return;
                    }
                    Err(e) => (
                        RebuildState::Failed,
                        format!("switching to the new index: {e}"),
                    ),
                }
            }
            Err(e) => (RebuildState::Failed, e.to_string()),
        };
        let status = job.status(state, reason);
        shared.set_status(status.clone());
        if state != last_state || logged.elapsed() >= LOG_EVERY {
            match state {
                RebuildState::Rebuilding => tracing::info!("{}", status.describe()),
                RebuildState::PausedForSpace => tracing::warn!("{}", status.describe()),
                _ => tracing::error!("{}", status.describe()),
            }
            logged = Instant::now();
            last_state = state;
        }
        match state {
            RebuildState::PausedForSpace => shared.sleep(PAUSE_CHECK),
            RebuildState::Failed => shared.sleep(RETRY),
            _ => {}
        }
        if job
            .building
            .writer
            .lock()
            .map(|w| w.is_none())
            .unwrap_or(true)
        {
            // A failed switch could not reopen the new index: nothing more
            // can be done in this process (the status says what failed).
            let reopened = shared
                .indexes
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .building
                .clone();
            match reopened {
                Some(b) => job.building = b,
                None => return,
            }
        }
    }
}

impl Drop for EventIndex {
    fn drop(&mut self) {
        // The rebuild thread stops at its next batch; what it committed is
        // where the next start resumes.
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}
