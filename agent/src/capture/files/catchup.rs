//! The catch-up scan at start: what changed in the watched roots while the
//! agent was not running, from the last known state of each file
//! (`state.rs`).
//!
//! It runs on its own thread once the watcher has its watches (so nothing
//! is missed between the two), walks each `files.watch` root (not following
//! symlinks, not crossing into other file systems, skipping
//! `files.exclude`), and reports files that are new (`create`), changed
//! (`modify`, size or mtime differ) or gone (`delete`), with `mechanism =
//! "scan"`; create/modify take the file's mtime as their time. Files whose
//! mtime is after the watches began are left to the watcher. Records go
//! through the same hasher and writer as the watcher's, and the writer
//! drops one that leaves a file exactly as the other mechanism already
//! recorded it. The first scan of a root records nothing: it remembers
//! what is there (a new agent does not report a whole disk as created).
//!
//! A configured root that does not exist is remembered as known and empty:
//! when it appears (the watcher tells, `Watching::Appeared`, while running;
//! or it is there at the next start) the same thread scans it, so files
//! written into it before its watch existed are recorded as created, and
//! files with kept state are compared as at start. Only a root that existed
//! when first watched (one added to the configuration) is learned silently.
//!
//! Bounded: memory by the directory stack, time by `files.catchup_max_secs`
//! (a cut-short scan is an `overflow` record saying where it stopped);
//! progress is logged every 10 s. Mail capture never waits on it.

use kiroku_common::vocabulary::file_op;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use kiroku_proto::FileEvent;
use kiroku_proto::event::Kind;

use super::coalesce::Exclusions;
use super::hasher::mtime_ms;
use super::state::FileState;
use super::{HashPlan, Observed};
use crate::capture::context::CaptureContext;

/// What the scan does with what it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// First scan of a root: remember, record nothing.
    Baseline,
    /// Report what changed since the remembered state.
    Report,
}

/// One walk of a root.
#[derive(Clone, Copy)]
struct Walk<'a> {
    root: &'a Path,
    pass: Pass,
    /// Unix ms: files changed since are the watcher's.
    watching_since: i64,
    deadline: Instant,
    why: &'a Occasion,
}

/// What the watcher tells the scan.
#[derive(Debug)]
pub(super) enum Watching {
    /// The initial watches are in place since `since_ms` (Unix ms);
    /// `missing` configured roots do not exist.
    Started {
        since_ms: i64,
        missing: Vec<PathBuf>,
    },
    /// A configured root that was missing or lost is watched since
    /// `since_ms`.
    Appeared { root: PathBuf, since_ms: i64 },
}

/// How one scan went, for its log line.
#[derive(Debug, Default)]
struct Tally {
    checked: u64,
    created: u64,
    modified: u64,
    deleted: u64,
    untracked: u64,
}

pub(super) struct CatchUp {
    pub roots: Vec<PathBuf>,
    pub exclude: Exclusions,
    pub state: Arc<FileState>,
    pub ctx: Arc<CaptureContext>,
    pub out: SyncSender<Observed>,
    pub stop: Arc<AtomicBool>,
    pub max: Duration,
}

const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Why a root is scanned: its log line and what its records say.
struct Occasion {
    done: &'static str,
    changed: &'static str,
    deleted: &'static str,
}

const AT_START: Occasion = Occasion {
    done: "file catch-up scan done",
    changed: "detected at start by the catch-up scan: changed while the agent was not running; the time is the file's mtime (approximate)",
    deleted: "detected at start by the catch-up scan: deleted while the agent was not running; the time is when the agent noticed",
};

const ROOT_APPEARED: Occasion = Occasion {
    done: "file catch-up scan of a watch root that appeared done",
    changed: "detected by the catch-up scan of a watch root that was missing or lost and appeared: changed before the root was watched; the time is the file's mtime (approximate)",
    deleted: "detected by the catch-up scan of a watch root that was missing or lost and appeared: deleted while the root was not watched; the time is when the agent noticed",
};

impl CatchUp {
    /// Waits until the watcher has its watches, scans every root, then
    /// scans the roots that appear later until the agent stops.
    pub fn run(self, watching: Receiver<Watching>) {
        let (since_ms, missing) = loop {
            match watching.recv_timeout(Duration::from_millis(200)) {
                Ok(Watching::Started { since_ms, missing }) => break (since_ms, missing),
                Ok(Watching::Appeared { .. }) => {}
                Err(RecvTimeoutError::Timeout) if !self.stop.load(Ordering::Relaxed) => {}
                Err(_) => return,
            }
        };
        for root in &missing {
            // Nothing is there: whatever appears there later is new.
            let key = root.display().to_string();
            if !self.state.root_known(&key) {
                self.state.root_done(&key, kiroku_common::now_ms());
            }
        }
        self.state.count();
        let deadline = Instant::now() + self.max;
        for root in &self.roots {
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            if missing.contains(root) {
                continue; // Scanned when it appears.
            }
            if !self.scan_root(root, since_ms, deadline, &AT_START) {
                break;
            }
        }
        while !self.stop.load(Ordering::Relaxed) {
            match watching.recv_timeout(Duration::from_millis(200)) {
                Ok(Watching::Appeared { root, since_ms }) => {
                    let deadline = Instant::now() + self.max;
                    self.scan_root(&root, since_ms, deadline, &ROOT_APPEARED);
                }
                Ok(Watching::Started { .. }) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Scans one root: reports what changed since its kept state, or only
    /// learns it if it never had a first scan. False when cut short
    /// (`files.catchup_max_secs`, or the agent stopping).
    fn scan_root(&self, root: &Path, since_ms: i64, deadline: Instant, why: &Occasion) -> bool {
        let started = Instant::now();
        let Ok(meta) = std::fs::metadata(root) else {
            // A missing root is the watcher's `watch_lost`; its files
            // are not reported deleted one by one.
            return true;
        };
        let key = root.display().to_string();
        let pass = if self.state.root_known(&key) {
            Pass::Report
        } else {
            Pass::Baseline
        };
        let mut tally = Tally::default();
        let walk = Walk {
            root,
            pass,
            watching_since: since_ms,
            deadline,
            why,
        };
        let complete = self.scan(&walk, &meta, &mut tally);
        if complete && pass == Pass::Report {
            self.deleted(&key, deadline, why, &mut tally);
        }
        if complete && pass == Pass::Baseline {
            self.state.root_done(&key, kiroku_common::now_ms());
        }
        if tally.untracked > 0 {
            self.gap(
                root,
                format!(
                    "the catch-up scan found {} files the agent does not track (files.state_max = {} reached): changes made to them while they were not watched are not reported. Raise files.state_max or watch fewer directories.",
                    tally.untracked,
                    self.state.tracked()
                ),
            );
        }
        tracing::info!(
            root = %root.display(),
            pass = ?pass,
            checked = tally.checked,
            created = tally.created,
            modified = tally.modified,
            deleted = tally.deleted,
            untracked = tally.untracked,
            complete,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "{}",
            why.done
        );
        if !complete && !self.stop.load(Ordering::Relaxed) {
            self.gap(
                root,
                format!(
                    "the catch-up scan stopped after files.catchup_max_secs = {} s, having checked {} files: changes made while they were not watched to files it did not reach are not reported. Raise files.catchup_max_secs or watch fewer directories.",
                    self.max.as_secs(),
                    tally.checked
                ),
            );
        }
        complete
    }

    /// Walks `root`; false when cut short (deadline or stop).
    fn scan(&self, walk: &Walk<'_>, root_meta: &std::fs::Metadata, tally: &mut Tally) -> bool {
        let Walk {
            root,
            pass,
            watching_since,
            deadline,
            why,
        } = *walk;
        let dev = crate::os::device_of(root_meta);
        let mut stack = vec![root.to_owned()];
        let mut next_progress = Instant::now() + PROGRESS_EVERY;
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if self.stop.load(Ordering::Relaxed) {
                    return false;
                }
                let now = Instant::now();
                if now >= deadline {
                    return false;
                }
                if now >= next_progress {
                    next_progress = now + PROGRESS_EVERY;
                    tracing::info!(root = %root.display(), checked = tally.checked, created = tally.created, modified = tally.modified, "file catch-up scan in progress");
                }
                let Ok(t) = e.file_type() else { continue };
                let p = e.path();
                if t.is_dir() {
                    if !self.exclude.dir(&p)
                        && let Ok(m) = e.metadata()
                        && crate::os::device_of(&m) == dev
                    {
                        stack.push(p);
                    }
                    continue;
                }
                if !t.is_file() || self.exclude.path(&p) {
                    continue;
                }
                let Ok(m) = e.metadata() else { continue };
                tally.checked += 1;
                let (size, mtime) = (m.len(), mtime_ms(&m));
                let path = p.display().to_string();
                if pass == Pass::Baseline {
                    self.state.baseline(&path, size, mtime);
                    continue;
                }
                // Changed since the watches began: the watcher reports it.
                if mtime >= watching_since {
                    continue;
                }
                let op = match self.state.get(&path) {
                    Some(r) if r.unchanged(size, mtime) => continue,
                    Some(_) => {
                        tally.modified += 1;
                        file_op::MODIFY
                    }
                    None if !self.state.has_room() => {
                        tally.untracked += 1;
                        continue;
                    }
                    None => {
                        tally.created += 1;
                        file_op::CREATE
                    }
                };
                self.emit(op, &p, why.changed, HashPlan::Hash(p.clone()));
            }
        }
        true
    }

    /// Remembered files under `root` that no longer exist.
    fn deleted(&self, root: &str, deadline: Instant, why: &Occasion, tally: &mut Tally) {
        for path in self.state.paths_under(root) {
            if self.stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
                return;
            }
            let p = PathBuf::from(&path);
            if self.exclude.path(&p) {
                continue;
            }
            if let Err(e) = std::fs::symlink_metadata(&p)
                && e.kind() == std::io::ErrorKind::NotFound
            {
                tally.deleted += 1;
                self.emit(file_op::DELETE, &p, why.deleted, HashPlan::None);
            }
        }
    }

    fn emit(&self, op: &str, path: &Path, detail: &str, hash: HashPlan) {
        // Stamped with the host identity when it leaves the queue.
        let mut event = self.ctx.bare_event(
            String::new(),
            Kind::File(FileEvent {
                operation: op.into(),
                path: path.display().to_string(),
                uid: -1,
                mechanism: "scan".into(),
                coalesced: 1,
                detail: detail.into(),
                ..Default::default()
            }),
        );
        // Nothing tells who acted while the agent was down.
        event.user.clear();
        if self
            .out
            .send(Observed {
                event: Box::new(event),
                hash,
            })
            .is_err()
        {
            self.stop.store(true, Ordering::Relaxed);
        }
    }

    /// A gap in what the scan could report, as the watcher's gaps are.
    fn gap(&self, root: &Path, detail: String) {
        tracing::warn!(root = %root.display(), "{detail}");
        self.emit(file_op::OVERFLOW, root, &detail, HashPlan::None);
    }
}
