//! The analysis workers: a small pool of threads that takes queued events
//! off the annotation store's queue, analyses them, and re-indexes them
//! with their derived fields, off the ingest path.
//!
//! Per batch: take up to [`BATCH`] queued events not taken by another
//! worker; for each, skip the analysis when its annotations are of the
//! current version (a crash after they were stored, a resent event) or
//! run [`analyse`](super::analyse), evaluate the sensitive-content rules
//! on what it found, and store the annotations; then re-index the batch
//! under the index's group lock and commit; then remove the queue entries
//! and flush the meta store; then hand the alerts to the notifiers. A
//! crash anywhere before the flush leaves the entries queued: the next
//! start redoes them (without firing twice: the alerts are logged in the
//! same flush as the annotations that mark the work done).
//!
//! Alerts are never lost to a failed batch: the annotations and correlator
//! marks written before the failure keep the retry from firing them again,
//! so each alert is marked *held* in the meta store as it is logged
//! ([`Alerting::hold`]). A failed batch keeps its alerts for the next
//! successful batch of any worker to dispatch; held alerts left by a crash
//! are dispatched at start-up.
//!
//! An event's annotations are written only under [`Shared::annotating`],
//! held from storing them through the PPAP pairing and [`super::ppap::apply`]:
//! two workers pairing with the same mail would otherwise each
//! read-modify-write its annotations and lose the other's tag or link.
//!
//! Below the free-space reserve the workers wait, as ingest does. A
//! failure of the store (I/O error) leaves the batch queued and pauses the
//! worker ([`RETRY`]); it resumes by itself.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiroku_proto::{Alert, Event};

use super::store::Pending;
use super::{Limits, VERSION, analyse};
use crate::alerts::Alerting;
use crate::store::Store;

/// Events one worker takes at a time (one index commit).
pub const BATCH: usize = 32;
/// Pause after a failure of the store or index.
const RETRY: Duration = Duration::from_secs(10);
/// Progress is logged this often while events wait.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The running pool; stops its threads when dropped (after their batch).
pub struct Workers {
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

struct Shared {
    store: Arc<Store>,
    alerting: Arc<Alerting>,
    limits: Limits,
    busy: Mutex<HashSet<String>>,
    /// Held across storing an event's annotations, its PPAP pairing and
    /// the tags and links that adds (see the module documentation).
    annotating: Mutex<()>,
    /// Alerts of failed batches, dispatched after the next successful one.
    undispatched: Mutex<Vec<(Vec<u8>, Alert)>>,
    stop: AtomicBool,
    last_log: Mutex<Instant>,
}

impl Workers {
    /// Starts `n` worker threads (at least one).
    pub fn start(
        store: Arc<Store>,
        alerting: Arc<Alerting>,
        limits: Limits,
        n: usize,
    ) -> std::io::Result<Workers> {
        let shared = Arc::new(Shared {
            store,
            alerting,
            limits,
            busy: Mutex::default(),
            annotating: Mutex::default(),
            undispatched: Mutex::default(),
            stop: AtomicBool::new(false),
            last_log: Mutex::new(Instant::now()),
        });
        dispatch_held(&shared);
        let pending = shared.store.analysis.pending();
        tracing::info!(
            workers = n.max(1),
            pending,
            version = VERSION,
            "analysis workers started"
        );
        shared
            .store
            .analysis
            .progress
            .workers
            .store(n.max(1) as u64, Ordering::Relaxed);
        let mut threads = Vec::new();
        for i in 0..n.max(1) {
            let s = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("analysis-{i}"))
                    .spawn(move || run(&s))?,
            );
        }
        Ok(Workers { shared, threads })
    }

    /// Events analysed and re-indexed so far, and waiting.
    pub fn status(&self) -> (u64, usize) {
        (
            self.shared
                .store
                .analysis
                .progress
                .analysed
                .load(Ordering::Relaxed),
            self.shared.store.analysis.pending(),
        )
    }

    /// Stops the threads after the batch in hand and waits for them.
    pub fn stop(mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.store.analysis.notify();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.shared
            .store
            .analysis
            .progress
            .workers
            .store(0, Ordering::Relaxed);
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.store.analysis.notify();
    }
}

/// A worker thread: [`work`] under a supervisor, so that a panic that
/// escapes it (none should: each event's analysis and each batch are
/// caught) restarts the loop instead of ending the thread. Counted and
/// shown in the analysis status.
fn run(s: &Shared) {
    loop {
        match std::panic::catch_unwind(AssertUnwindSafe(|| work(s))) {
            Ok(()) => return,
            Err(p) => {
                s.store
                    .analysis
                    .progress
                    .restarts
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(panic = %super::panic_message(p.as_ref()), "an analysis worker panicked; restarted in {} s", RETRY.as_secs());
                if s.stop.load(Ordering::SeqCst) {
                    return;
                }
                s.store.analysis.wait(RETRY);
            }
        }
    }
}

fn work(s: &Shared) {
    if crate::test_hooks::analysis_paused() {
        while !s.stop.load(Ordering::SeqCst) {
            s.store.analysis.wait(Duration::from_millis(200));
        }
        return;
    }
    while !s.stop.load(Ordering::SeqCst) {
        // Below the free-space reserve analysis waits like ingest does (it
        // writes annotations and index segments); it resumes by itself.
        if let Err(why) = s.store.disk.check(0) {
            tracing::debug!(reason = %why, "analysis paused: disk below the reserve");
            s.store.analysis.wait(RETRY);
            continue;
        }
        let batch = match take(s) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "analysis queue not readable; retrying in {} s", RETRY.as_secs());
                s.store.analysis.wait(RETRY);
                continue;
            }
        };
        if batch.is_empty() {
            s.store.analysis.wait(Duration::from_secs(1));
            continue;
        }
        // A panic outside an event's analysis (each of those is caught in
        // `process`) must not kill the worker either: the batch stays
        // queued, its events are released, and the worker goes on as if
        // restarted.
        let mut alerts = Vec::new();
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| process(s, &batch, &mut alerts)))
            .unwrap_or_else(|p| {
                s.store
                    .analysis
                    .progress
                    .restarts
                    .fetch_add(1, Ordering::Relaxed);
                Err(anyhow::anyhow!(
                    "the analysis worker panicked outside an event's analysis ({}); restarted",
                    super::panic_message(p.as_ref())
                ))
            });
        release(s, &batch);
        if let Err(e) = result {
            // Logged and held: dispatched after the next successful batch.
            lock(&s.undispatched).extend(alerts);
            s.store
                .analysis
                .progress
                .failed_batches
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, events = batch.len(), "analysis batch failed; it stays queued and is retried in {} s", RETRY.as_secs());
            s.store.exit_if_meta_failed();
            s.store.analysis.wait(RETRY);
        }
        log_progress(s);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Dispatches the alerts a crash left held (see the module documentation).
/// Not by an engine without rules (`reanalyse`, which has no notifiers
/// either): those stay held for the collector.
fn dispatch_held(s: &Shared) {
    if s.alerting.rules().rules.is_empty() {
        return;
    }
    match s.alerting.take_held() {
        Ok(held) if held.is_empty() => {}
        Ok(held) => {
            tracing::info!(
                alerts = held.len(),
                "dispatching alerts logged before the last stop but not yet notified"
            );
            s.alerting.unhold(&held);
            s.alerting.dispatch(held);
        }
        Err(e) => {
            tracing::error!(error = %e, "held alerts not readable; they stay in the replay log")
        }
    }
}

/// Takes a batch of queued events no other worker holds.
fn take(s: &Shared) -> Result<Vec<Pending>, super::store::AnnotationError> {
    let mut busy = s.busy.lock().unwrap_or_else(|p| p.into_inner());
    let batch = s.store.analysis.next_batch(BATCH, &busy)?;
    busy.extend(batch.iter().map(|p| p.event_id.clone()));
    Ok(batch)
}

fn release(s: &Shared, batch: &[Pending]) {
    let mut busy = s.busy.lock().unwrap_or_else(|p| p.into_inner());
    for p in batch {
        busy.remove(&p.event_id);
    }
}

fn log_progress(s: &Shared) {
    let mut last = s.last_log.lock().unwrap_or_else(|p| p.into_inner());
    if last.elapsed() < LOG_EVERY {
        return;
    }
    *last = Instant::now();
    let pending = s.store.analysis.pending();
    tracing::info!(
        analysed = s.store.analysis.progress.analysed.load(Ordering::Relaxed),
        reindexed = s.store.analysis.progress.reindexed.load(Ordering::Relaxed),
        pending,
        "analysis progress"
    );
}

/// Analyses (or finds analysed) and re-indexes one batch; see the module
/// documentation for the order. The alerts logged are put in `alerts`
/// (held), for the caller to keep when this fails.
fn process(
    s: &Shared,
    batch: &[Pending],
    alerts: &mut Vec<(Vec<u8>, Alert)>,
) -> anyhow::Result<()> {
    let mut events: Vec<Event> = Vec::new();
    let mut relinked: Vec<String> = Vec::new();
    // Marks of the annotations stored, journalled together after the loop
    // (before the queue entries go, so a stored analysis is always marked).
    let mut marks = Vec::new();
    let held = |fired: Vec<(Vec<u8>, Alert)>, alerts: &mut Vec<_>| -> anyhow::Result<()> {
        let r = s.alerting.hold(&fired);
        alerts.extend(fired);
        r.map_err(anyhow::Error::msg)
    };
    // A failure part-way still marks what was stored before it (a retry
    // finds those annotations current and does not store them again).
    let looped = (|| -> anyhow::Result<()> {
        for p in batch {
            let Some(e) = s.store.index.get(&p.event_id)? else {
                tracing::warn!(event_id = %p.event_id, "queued for analysis but not in the index; skipped (a rebuild or `reanalyse` brings it back)");
                continue;
            };
            let before = s.store.analysis.annotations(&e.event_id)?;
            let mut indexed = before.as_ref().is_some_and(adds_to_index);
            // The analysis itself runs outside the lock; storing its result,
            // pairing and applying the pair's tags and links inside. A panic
            // in one mail's analysis (a reader's bug on a hostile file) is
            // recorded in its annotations as a failed analysis, so that its
            // queue entry leaves like any other and the worker goes on with
            // the next mail.
            let fresh = match &before {
                Some(a) if !s.limits.redo(a) => None,
                _ => Some(
                    match std::panic::catch_unwind(AssertUnwindSafe(|| {
                        analyse(&e, &s.store.blobs, &s.store.analysis, &s.limits)
                    })) {
                        Ok(done) => done?,
                        Err(p) => {
                            let why = super::panic_message(p.as_ref());
                            s.store
                                .analysis
                                .progress
                                .panics
                                .fetch_add(1, Ordering::Relaxed);
                            tracing::error!(event_id = %e.event_id, panic = %why, "the analysis of this mail panicked; recorded as failed in its annotations, the worker goes on (please report this with the mail)");
                            super::failed(&e, &why)
                        }
                    },
                ),
            };
            let _annotating = lock(&s.annotating);
            let ann = match fresh {
                None => s
                    .store
                    .analysis
                    .annotations(&e.event_id)?
                    .or(before)
                    .unwrap_or_default(),
                Some(mut ann) => {
                    let fired = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        s.alerting.evaluate_derived(&e, &mut ann)
                    }));
                    match fired {
                        Ok(fired) => held(fired.map_err(anyhow::Error::msg)?, alerts)?,
                        Err(p) => {
                            s.store
                                .analysis
                                .progress
                                .panics
                                .fetch_add(1, Ordering::Relaxed);
                            tracing::error!(event_id = %e.event_id, panic = %super::panic_message(p.as_ref()), "the rules on files inside this mail panicked; its sensitive-file alerts are skipped, the worker goes on (please report this with the mail)");
                        }
                    }
                    // Tags and links the alerts gave the earlier annotations
                    // (read again: a partner may have added some meanwhile).
                    if let Some(old) = s.store.analysis.annotations(&e.event_id)? {
                        super::ppap::carry_over(&old, &mut ann);
                    }
                    s.store.analysis.put_annotations(&ann)?;
                    marks.push(crate::store::Store::annotation_mark(&ann));
                    s.store
                        .analysis
                        .progress
                        .analysed
                        .fetch_add(1, Ordering::Relaxed);
                    indexed |= adds_to_index(&ann);
                    ann
                }
            };
            // Encrypted attachments and PPAP pairs, once the annotations are
            // stored (a pair links two stored annotations): ppap.rs. Also for
            // annotations stored before a crash (their pairing may not have
            // been): idempotent, nothing fires twice. The events it changes
            // (this one too) are re-indexed below.
            // The alert hook is contained the same way: its panic costs this
            // mail's encrypted-attachment and PPAP alerts (logged), not the
            // worker.
            let hook = std::panic::catch_unwind(AssertUnwindSafe(|| s.alerting.analysed(&e, &ann)));
            match hook {
                Ok(done) => {
                    let done = done.map_err(anyhow::Error::msg)?;
                    held(done.alerts, alerts)?;
                    relinked.extend(super::ppap::apply(&s.store.analysis, &done.derived)?);
                }
                Err(p) => {
                    s.store
                        .analysis
                        .progress
                        .panics
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::error!(event_id = %e.event_id, panic = %super::panic_message(p.as_ref()), "the alert rules on this mail's analysis panicked; its encrypted-attachment and PPAP alerts are skipped, the worker goes on (please report this with the mail)");
                }
            }
            drop(_annotating);
            // A mail in which analysis found nothing to index (no file inside
            // an attachment, no derived tag, no text) keeps the document it
            // was indexed with at ingest: no second add and commit for it.
            if indexed {
                events.push(e);
            }
        }
        Ok(())
    })();
    s.store.mark_annotations(marks)?;
    looped?;
    // Both mails of a PPAP pair get new tags (the partner analysed
    // earlier, this one after its own annotations): re-indexed.
    for id in relinked {
        if !events.iter().any(|e| e.event_id == id)
            && let Some(e) = s.store.index.get(&id)?
        {
            events.push(e);
        }
    }
    if !events.is_empty() {
        let _group = s.store.index.write_group();
        s.store
            .index
            .add(&events)
            .and_then(|()| {
                if crate::test_hooks::fail_analysis_commit() {
                    return Err(crate::store::index::IndexError::Other {
                        path: "analysis re-index".into(),
                        message: "test hook: index commit failed".into(),
                    });
                }
                s.store.index.commit()
            })
            .inspect_err(|_| {
                let _ = s.store.index.rollback();
            })?;
    }
    s.store
        .analysis
        .progress
        .reindexed
        .fetch_add(events.len() as u64, Ordering::Relaxed);
    s.store.analysis.done(batch)?;
    s.store.meta.flush()?;
    // This batch's alerts and those of earlier failed batches: their
    // events' annotations are durable now.
    let mut out = std::mem::take(alerts);
    out.append(&mut lock(&s.undispatched));
    s.alerting.unhold(&out);
    s.alerting.dispatch(out);
    Ok(())
}

/// Whether annotations add anything to the event's index document (see
/// `store::index::schema::add_derived`).
fn adds_to_index(a: &kiroku_proto::Annotations) -> bool {
    !a.tags.is_empty()
        || a.attachments
            .iter()
            .any(|f| !f.path.is_empty() || !f.members.is_empty() || f.text_bytes > 0)
}
