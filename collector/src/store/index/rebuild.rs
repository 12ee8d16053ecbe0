//! An index of an older schema, rebuilt from the journal in the background
//! while it keeps serving queries.
//!
//! Every index carries its schema version in a file `kiroku-schema` (none:
//! version 1, the indexes of bdddeb9 and before). At open, an index of
//! another version — or whose tantivy schema differs from the current one
//! — is opened read-only under its own schema and serves queries
//! (`index/legacy.rs` refuses what it cannot answer); the collector listens
//! at once. [`EventIndex::start_rebuild`] then builds `index.next/` from
//! the journal (the copy of record) in a thread, a batch per commit, each
//! commit carrying the journal position it reached (the tantivy commit
//! payload), and from then on new events go into `index.next/` (they are
//! in the journal too: re-adding replaces by `event_id`). Once it reaches
//! where the journal ended when it began (everything after that went into
//! it directly), it commits a last time marked complete and switches:
//! `index/` → `index.pre-<unix time>/` (kept), `index.next/` → `index/`,
//! both renames under the lock that the committer's writes take, then
//! queries see the new index.
//!
//! Crash-safe: a crash during the rebuild leaves `index/` as it was and
//! `index.next/` with its last commit, from whose position the next start
//! resumes; a crash between the two renames leaves no `index/` and a
//! complete `index.next/`, which the next open moves into place. An
//! `index.next/` of another version or schema is started over.
//!
//! Free space: the new index needs about the old one's size again. Before
//! each batch the rebuild checks that what it still has to write fits
//! above the collector's free-space reserve (`DiskGuard::headroom`);
//! otherwise it pauses, says why in its status, and resumes by itself when
//! space returns — it never takes ingest's room.
//!
//! `rebuild.rs` holds the state a rebuild shares with the index (`Shared`),
//! its job and its progress, and the schema version file. The work is in
//! `rebuild/`: `start.rs` (what `EventIndex` starts, the job prepared),
//! `job.rs` (one batch from the journal), `thread.rs` (the rebuild thread),
//! `carry_over.rs` (what only the old index held), `switch.rs` (the new
//! index put in place, a switch a crash interrupted finished);
//! `status.rs` is what `ListHosts` shows.

mod carry_over;
mod job;
mod start;
mod status;
mod switch;
mod thread;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::super::journal::Position;
use super::{
    DerivedSource, EventIndex, Headroom, IndexError, Indexes, SCHEMA_VERSION, TantivyIndex,
};
pub use status::{RebuildState, RebuildStatus};
use switch::finish_interrupted_switch;

/// The file in an index directory that holds its schema version.
const VERSION_FILE: &str = "kiroku-schema";

/// The schema version of the index at `path` (1 when it has no version
/// file: written before versions existed).
pub(super) fn read_version(path: &Path) -> u32 {
    std::fs::read_to_string(path.join(VERSION_FILE))
        .ok()
        .and_then(|s| s.split_whitespace().find_map(|w| w.parse::<u32>().ok()))
        .unwrap_or(1)
}

/// Records that the index at `path` is of schema `version` (durably).
pub(super) fn write_version(path: &Path, version: u32) -> Result<(), IndexError> {
    let err = |e: std::io::Error| IndexError::Other {
        path: path.to_owned(),
        message: format!("writing {VERSION_FILE}: {e}"),
    };
    let tmp = path.join(format!("{VERSION_FILE}.tmp"));
    std::fs::write(&tmp, format!("kiroku index schema {version}\n")).map_err(err)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(err)?;
    std::fs::rename(&tmp, path.join(VERSION_FILE)).map_err(err)?;
    sync_dir(path).map_err(err)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all())
}

/// The directory the successor of the index at `path` is built in.
fn next_path(path: &Path) -> PathBuf {
    path.with_extension("next")
}

/// Bytes of the files directly in `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// A rebuild's progress, in the commit payload of `index.next/`.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct Progress {
    /// The journal position up to which events are in the index.
    at: Position,
    /// Events added from the journal so far.
    events: u64,
    /// The last commit: the index is ready to take over.
    complete: bool,
}

impl Progress {
    fn of(ix: &TantivyIndex) -> Option<Progress> {
        let p = ix.payload.lock().unwrap_or_else(|p| p.into_inner());
        serde_json::from_str(p.as_deref()?).ok()
    }
}

/// The state an [`EventIndex`] shares with its rebuild thread.
pub(super) struct Shared {
    path: PathBuf,
    pub(super) indexes: RwLock<Indexes>,
    pub(super) headroom: Mutex<Option<Headroom>>,
    /// Where every index (the one being rebuilt too) gets an event's
    /// derived fields: the annotation store, never a new analysis.
    derived: RwLock<Option<DerivedSource>>,
    status: Mutex<Option<RebuildStatus>>,
    stop: AtomicBool,
    /// Set while the switch runs: adds and commits wait for it (see
    /// `EventIndex::writing`), queries do not.
    pub(super) switching: AtomicBool,
    /// Records a rebuild starting and switching over in the audit log:
    /// (admin call, detail). See [`EventIndex::audit_rebuilds_with`].
    audit: std::sync::OnceLock<RebuildAudit>,
}

/// Records an admin action: (call, detail).
pub type RebuildAudit = Box<dyn Fn(&str, &str) + Send + Sync>;

impl Shared {
    pub(super) fn new(path: &Path, serving: TantivyIndex) -> Shared {
        Shared {
            path: path.to_owned(),
            indexes: RwLock::new(Indexes {
                serving: Arc::new(serving),
                building: None,
            }),
            headroom: Mutex::new(None),
            derived: RwLock::new(None),
            status: Mutex::new(None),
            stop: AtomicBool::new(false),
            switching: AtomicBool::new(false),
            audit: std::sync::OnceLock::new(),
        }
    }

    fn audit(&self, call: &str, detail: &str) {
        if let Some(hook) = self.audit.get() {
            hook(call, detail);
        }
    }

    /// Opens the index at `path`: of the current schema for reading and
    /// writing, or of an older one for reading only.
    pub(super) fn open(path: &Path) -> Result<Shared, IndexError> {
        finish_interrupted_switch(path);
        let exists = path.join("meta.json").exists();
        if !exists || read_version(path) == SCHEMA_VERSION {
            match TantivyIndex::open_current(path) {
                Err(IndexError::Tantivy {
                    source: tantivy::TantivyError::SchemaError(_),
                    ..
                }) => {}
                r => return r.map(|ix| Shared::new(path, ix)),
            }
        }
        let old = TantivyIndex::open_legacy(path)?;
        tracing::warn!(
            index = %path.display(), version = old.version, current = SCHEMA_VERSION,
            "the index was written under another schema: it serves queries as it is while its successor is rebuilt from the journal"
        );
        Ok(Shared::new(path, old))
    }

    pub(super) fn derived(&self) -> Option<DerivedSource> {
        self.derived
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(super) fn set_derived(&self, source: DerivedSource) {
        *self.derived.write().unwrap_or_else(|p| p.into_inner()) = Some(source);
    }

    pub(super) fn status(&self) -> Option<RebuildStatus> {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_status(&self, s: RebuildStatus) {
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = Some(s);
    }

    fn headroom(&self) -> Option<u64> {
        let h = self
            .headroom
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        h.and_then(|h| h())
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Sleeps `d`, or less when the index is closed meanwhile.
    fn sleep(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.stopped() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50).min(d));
        }
    }
}

fn other(path: &Path, message: String) -> IndexError {
    IndexError::Other {
        path: path.to_owned(),
        message,
    }
}

fn poisoned(path: &Path) -> IndexError {
    super::poisoned(path)
}

/// What one step of a rebuild did.
#[derive(Debug, PartialEq)]
pub(super) enum Step {
    /// A batch was added.
    Batch,
    /// Not enough free space (why).
    Paused(String),
    /// The journal is read up to where it ended when the rebuild began.
    CaughtUp,
}

/// A rebuild in progress.
pub(super) struct Job {
    building: Arc<TantivyIndex>,
    journal: PathBuf,
    progress: Progress,
    /// Where the journal ended when the rebuild began: every later event
    /// went into the new index directly.
    end: Position,
    /// Journal bytes before each segment's start, to measure the progress.
    segments: Vec<(u64, u64)>,
    total_bytes: u64,
    events_total: u64,
    old_bytes: u64,
    from_version: u32,
    batch: usize,
    delay: Option<Duration>,
    started: Instant,
    events_at_start: u64,
}

#[cfg(test)]
mod tests;
