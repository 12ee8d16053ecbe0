//! The maintenance window (issue 19): a daily run that verifies the
//! journal chain, repairs what is safe online, marks and purges expired
//! events, resumes where it stopped, and ends each window with a summary
//! to the administrators.
//!
//! - `window.rs`: `[maintenance] start/end/time_zone`, the window a
//!   moment is in and the next one;
//! - `state.rs`: what survives a restart (meta tree `maintenance`);
//! - `run.rs` (+ `seek.rs`, `retain.rs`): one window's part of a run;
//! - `summary.rs`: severity, text and alert of a finished part;
//! - `rpc.rs`: `Maintenance` (status|start|stop), `MaintenanceReports`.
//!
//! The scheduler (a task ticking every second on `clock::now_ms`) starts
//! one automatic run per window: when the window opens, or at start-up if
//! the collector was down at its start and the window is still open (the
//! run a crash or shutdown interrupted in the window resumes too); none
//! when the collector is back after the window. A run passes the journal
//! from its cursor to the head taken when it began, across as many
//! windows as it needs, and the next one starts from the beginning.
//!
//! Protect mode: after more than 24 h without a heartbeat (written every
//! minute) or after a start that found no clean-shutdown flag, the next
//! run verifies and repairs but marks and purges nothing, and its summary
//! says why. It stays pending until a run's window part has ended (not
//! cut by a shutdown or crash).

pub mod retain;
pub mod rpc;
mod run;
mod seek;
pub mod state;
pub mod summary;
pub mod window;

use std::sync::{Arc, Mutex};

use kiroku_proto::MaintenanceReport;

use crate::alerts::Alerting;
use crate::clock;
use crate::holds::Holds;
use crate::retention::Retention;
use crate::store::Store;
use crate::store::audit::COLLECTOR_IDENTITY;
pub use run::End;
use state::{RunState, State};
pub use window::{MaintenanceConfig, Schedule, Window};

/// Audit log call names (kind admin).
pub const CALL_START: &str = "MaintenanceStart";
pub const CALL_STOP: &str = "MaintenanceStop";
/// A run's window part began or ended; detail: its summary line.
pub const CALL_RUN: &str = "MaintenanceRun";

const HOUR_MS: i64 = 3_600_000;
/// Down longer than this (no heartbeat): the next run is in protect mode.
pub const PROTECT_AFTER_MS: i64 = 24 * HOUR_MS;
const HEARTBEAT_MS: i64 = 60_000;

struct Running {
    run_id: String,
    stop: Arc<Mutex<Option<End>>>,
    window: Option<Window>,
    thread: std::thread::JoinHandle<()>,
}

#[derive(Default)]
struct Ctl {
    running: Option<Running>,
    shutting_down: bool,
    last_heartbeat: i64,
}

/// The maintenance handle: the scheduler, the run in progress, status.
pub struct Maintenance {
    store: Arc<Store>,
    alerting: Arc<Alerting>,
    retention: Arc<Retention>,
    holds: Arc<Holds>,
    marks: crate::retention::marks::Marks,
    schedule: Schedule,
    state: State,
    stale_after_ms: i64,
    ctl: Mutex<Ctl>,
}

impl Maintenance {
    /// Reads the schedule and the state left by the last process: decides
    /// protect mode (unclean shutdown, or down more than 24 h), closes a
    /// window part a crash left open, clears the clean-shutdown flag.
    pub fn open(
        store: Arc<Store>,
        alerting: Arc<Alerting>,
        retention: Arc<Retention>,
        holds: Arc<Holds>,
        cfg: &MaintenanceConfig,
        stale_after_ms: i64,
    ) -> anyhow::Result<Arc<Maintenance>> {
        let schedule = Schedule::from_config(cfg).map_err(anyhow::Error::msg)?;
        let state = State::open(&store.meta)?;
        let marks = crate::retention::marks::Marks::open(&store.meta)?;
        let m = Maintenance {
            marks,
            store,
            alerting,
            retention,
            holds,
            schedule,
            state,
            stale_after_ms,
            ctl: Mutex::default(),
        };
        m.opened()?;
        Ok(Arc::new(m))
    }

    fn show(&self, ms: i64) -> String {
        self.schedule.show(ms)
    }

    fn opened(&self) -> anyhow::Result<()> {
        let now = clock::now_ms();
        let clean = self.state.take_clean()?;
        let mut reasons = Vec::new();
        if let Some(hb) = self.state.heartbeat()? {
            if !clean {
                reasons.push(format!(
                    "the collector restarted after an unclean shutdown (a crash, kill -9 or power loss; last heartbeat {})",
                    self.show(hb)
                ));
            }
            if now - hb > PROTECT_AFTER_MS {
                reasons.push(format!(
                    "the collector was not running for {} hours (last heartbeat {}), more than 24 hours",
                    (now - hb + HOUR_MS / 2) / HOUR_MS,
                    self.show(hb)
                ));
            }
            if let Some(mut part) = self.state.part()? {
                // A window part a crash cut short: closed as it stood.
                part.ended_ms = hb.max(part.started_ms);
                part.stopped_because =
                    "crash: the collector stopped without a clean shutdown".into();
                part.severity = summary::severity(&part).into();
                let run = self.state.run()?;
                self.state.close_part(&part, run.as_ref())?;
                self.audit_part(&part, "ended");
                let body = summary::text(&part, &|ms| self.show(ms));
                self.alerting.notify(&summary::alert(&part, body));
                tracing::warn!(run = %part.run_id, to_leaf = part.to_leaf, "a maintenance run was interrupted by a crash; it resumes where it stopped");
            }
        }
        if !reasons.is_empty() {
            let mut why = reasons.join("; and ");
            if let Some(old) = self.state.protect()? {
                why = format!("{old}; and {why}");
            }
            tracing::warn!(reason = %why, "the next maintenance run is in protect mode: it verifies and repairs, and purges nothing");
            self.state.set_protect(Some(&why))?;
        }
        self.state.set_heartbeat(now)?;
        self.lock().last_heartbeat = now;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ctl> {
        self.ctl.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The scheduler: ticks every second until [`Maintenance::shutdown`].
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let m = self.clone();
        tokio::spawn(async move {
            let mut first = true;
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                let m2 = m.clone();
                let f = first;
                let go = tokio::task::spawn_blocking(move || m2.tick(f)).await;
                first = false;
                match go {
                    Ok(Ok(true)) => {}
                    Ok(Ok(false)) => return,
                    Ok(Err(e)) => {
                        tracing::error!(error = %format!("{e:#}"), "maintenance scheduler");
                        m.store.exit_if_meta_failed();
                    }
                    Err(e) => tracing::error!(error = %e, "maintenance scheduler"),
                }
            }
        })
    }

    /// One scheduler tick; false once shutting down.
    fn tick(self: &Arc<Self>, first: bool) -> anyhow::Result<bool> {
        let now = clock::now_ms();
        {
            let mut c = self.lock();
            if c.shutting_down {
                return Ok(false);
            }
            if now - c.last_heartbeat >= HEARTBEAT_MS || now < c.last_heartbeat {
                c.last_heartbeat = now;
                drop(c);
                self.state.set_heartbeat(now)?;
            }
        }
        if self.reap() {
            return Ok(true);
        }
        let Some(w) = self.schedule.window_at(now) else {
            return Ok(true);
        };
        if self.state.last_window()? == Some(w.day) {
            return Ok(true);
        }
        // The first tick of a process inside a window: the window began
        // while the collector was down (or starting).
        let trigger = if first { "startup" } else { "scheduled" };
        if let Err(e) = self.start_run(trigger, Some(w), COLLECTOR_IDENTITY) {
            tracing::error!(error = %e, "the scheduled maintenance run could not start");
        }
        Ok(true)
    }

    /// Drops a finished run's handle; true while one is running.
    fn reap(&self) -> bool {
        let mut c = self.lock();
        match &c.running {
            Some(r) if r.thread.is_finished() => {
                if let Some(r) = c.running.take() {
                    let _ = r.thread.join();
                }
                false
            }
            Some(_) => true,
            None => false,
        }
    }

    /// Starts (or resumes) a run now: `window` bounds it (None: a manual
    /// run outside the window, until the end of the store or a stop).
    pub fn start_run(
        self: &Arc<Self>,
        trigger: &str,
        window: Option<Window>,
        by: &str,
    ) -> Result<String, String> {
        let mut c = self.lock();
        if c.shutting_down {
            return Err("the collector is shutting down".into());
        }
        if let Some(r) = &c.running
            && !r.thread.is_finished()
        {
            return Err(format!("run {} is already in progress", r.run_id));
        }
        let now = clock::now_ms();
        let setup = || -> anyhow::Result<(RunState, MaintenanceReport)> {
            let protect = self.state.protect()?;
            let mut run = match self.state.run()? {
                Some(r) => r,
                None => {
                    // The head, taken between two commit groups: every
                    // event before it is in the index too.
                    let head = {
                        let _group = self.store.index.write_group();
                        self.store.journal.head()
                    };
                    RunState {
                        run_id: format!("m-{now}"),
                        started_ms: now,
                        end_leaf: head.next_leaf,
                        ..RunState::default()
                    }
                }
            };
            run.windows += 1;
            let report = MaintenanceReport {
                run_id: run.run_id.clone(),
                started_ms: now,
                trigger: trigger.into(),
                protect: protect.is_some(),
                protect_reason: protect.unwrap_or_default(),
                from_leaf: run.next_leaf,
                to_leaf: run.next_leaf,
                windows: run.windows,
                ..MaintenanceReport::default()
            };
            self.state.save_progress(&run, &report)?;
            Ok((run, report))
        };
        let (run, report) = setup().map_err(|e| format!("{e:#}"))?;
        self.audit_part(&report, "started");
        tracing::info!(run = %run.run_id, trigger, by, from_leaf = run.next_leaf, end_leaf = run.end_leaf, protect = report.protect, "maintenance run started");
        let stop = Arc::new(Mutex::new(None));
        let m = self.clone();
        let stop2 = stop.clone();
        let run_id = run.run_id.clone();
        let thread = std::thread::Builder::new()
            .name("maintenance".into())
            .spawn(move || m.run_part(run, report, window, stop2))
            .map_err(|e| format!("cannot start the maintenance thread: {e}"))?;
        c.running = Some(Running {
            run_id: run_id.clone(),
            stop,
            window,
            thread,
        });
        Ok(run_id)
    }

    fn run_part(
        &self,
        run: RunState,
        report: MaintenanceReport,
        window: Option<Window>,
        stop: Arc<Mutex<Option<End>>>,
    ) {
        let should_stop = move || {
            if let Some(e) = stop.lock().unwrap_or_else(|p| p.into_inner()).clone() {
                return Some(e);
            }
            window
                .filter(|w| clock::now_ms() >= w.end_ms)
                .map(|_| End::WindowEnd)
        };
        let env = run::Env {
            store: &self.store,
            retention: &self.retention,
            holds: &self.holds,
            marks: &self.marks,
            state: &self.state,
            should_stop: &should_stop,
        };
        let mut part = run::Part::new(env, run, report);
        let end = match part.go() {
            Ok(end) => end,
            Err(e) => {
                part.problem(format!(
                    "the run stopped on an error: {e:#}; it resumes at leaf {} in the next window (check the collector log)",
                    part.run.next_leaf
                ));
                End::Stopped("an error".into())
            }
        };
        if end == End::Complete && !part.report.protect {
            // Segments whose purged records still wait for their stubs
            // (large ones are rewritten once a quarter is purged, or now).
            match self.store.compact_purged() {
                Ok(c) => {
                    part.report.bytes_freed += c.journal_bytes_freed + c.blob_bytes_freed;
                }
                Err(e) => part.problem(format!(
                    "purged records could not be compacted at the end of the run: {e:#}; the next run tries again (check free space and the collector log)"
                )),
            }
        }
        if let Err(e) = self.finish(&part, &end, window) {
            tracing::error!(error = %format!("{e:#}"), "the maintenance summary could not be kept");
            self.store.exit_if_meta_failed();
        }
    }

    /// Closes a window's part: summary kept, audited, sent.
    fn finish(
        &self,
        part: &run::Part<'_>,
        end: &End,
        window: Option<Window>,
    ) -> anyhow::Result<()> {
        let now = clock::now_ms();
        let mut r = part.summarised();
        r.ended_ms = now;
        r.complete = *end == End::Complete;
        r.stopped_because = end.describe();
        r.to_leaf = part.run.next_leaf;
        let silent = crate::agents::stale(&self.store, now, self.stale_after_ms);
        r.stale_agents =
            summary::stale_lines(&silent, now, self.stale_after_ms, &|ms| self.show(ms));
        r.severity = summary::severity(&r).into();
        self.state
            .close_part(&r, (!r.complete).then_some(&part.run))?;
        let served = *end != End::Shutdown;
        // Protect mode ends only with a part that did its work: the whole
        // store, or a window's worth of it. A part stopped at once (by an
        // admin or an error) leaves the next run in protect mode too.
        let protect_served = *end == End::Complete || (*end == End::WindowEnd && r.verified > 0);
        if r.protect && protect_served {
            self.state.set_protect(None)?;
        }
        if let Some(w) = window
            && served
        {
            self.state.set_last_window(w.day)?;
        }
        self.audit_part(&r, "ended");
        let body = summary::text(&r, &|ms| self.show(ms));
        tracing::info!(run = %r.run_id, severity = %r.severity, verified = r.verified, repaired = r.repaired, marked = r.marked, purged = r.purged, stopped = %r.stopped_because, "maintenance window part ended");
        self.alerting.notify(&summary::alert(&r, body));
        Ok(())
    }

    fn audit_part(&self, r: &MaintenanceReport, what: &str) {
        let detail = format!(
            "run {} {what} ({}, window {}): leaves {}..{}, verified {}, repaired {}, marked {}, purged {}, held back {}, bytes freed {}{}{}{}",
            r.run_id,
            r.trigger,
            r.windows,
            r.from_leaf,
            r.to_leaf,
            r.verified,
            r.repaired,
            r.marked,
            r.purged,
            r.held_back,
            r.bytes_freed,
            if r.protect {
                format!(", PROTECT MODE because {}", r.protect_reason)
            } else {
                String::new()
            },
            if r.stopped_because.is_empty() {
                String::new()
            } else {
                format!(", {}", r.stopped_because)
            },
            if r.severity.is_empty() {
                String::new()
            } else {
                format!(", severity {}", r.severity)
            },
        );
        if let Err(e) = self
            .store
            .audit_admin(COLLECTOR_IDENTITY, CALL_RUN, &detail)
        {
            tracing::error!(error = %e, "the maintenance run could not be recorded in the audit log");
        }
    }

    /// Asks the run in progress to stop after its batch.
    pub fn stop(&self, by: &str) -> Result<String, String> {
        let c = self.lock();
        match &c.running {
            Some(r) if !r.thread.is_finished() => {
                *r.stop.lock().unwrap_or_else(|p| p.into_inner()) = Some(End::Stopped(by.into()));
                Ok(format!(
                    "run {} stops after its current batch; it resumes there in the next window (or at `kiroku maintenance start`)",
                    r.run_id
                ))
            }
            _ => Err("no maintenance run is in progress".into()),
        }
    }

    /// Shutdown: the run stops after its batch (resumed in the next
    /// window), the scheduler ends. Waits for the run's thread.
    pub async fn shutdown(self: &Arc<Self>) {
        let running = {
            let mut c = self.lock();
            c.shutting_down = true;
            c.running.take()
        };
        if let Some(r) = running {
            *r.stop.lock().unwrap_or_else(|p| p.into_inner()) = Some(End::Shutdown);
            let _ = tokio::task::spawn_blocking(move || r.thread.join()).await;
        }
    }

    /// The last thing a clean shutdown does: the next start is not in
    /// protect mode for a crash.
    pub fn mark_clean(&self) {
        if let Err(e) = self.state.set_clean(clock::now_ms()) {
            tracing::error!(error = %e, "the clean shutdown could not be recorded; the next maintenance run will be in protect mode");
        }
    }

    /// "running", "stopping" or "idle", and the window of the run.
    fn run_state(&self) -> (&'static str, Option<Window>) {
        let c = self.lock();
        match &c.running {
            Some(r) if !r.thread.is_finished() => {
                let stopping = r.stop.lock().unwrap_or_else(|p| p.into_inner()).is_some();
                (if stopping { "stopping" } else { "running" }, r.window)
            }
            _ => ("idle", None),
        }
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn holds(&self) -> &Arc<Holds> {
        &self.holds
    }

    pub fn marks(&self) -> &crate::retention::marks::Marks {
        &self.marks
    }
}

#[cfg(test)]
mod tests;
