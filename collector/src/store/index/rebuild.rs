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

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use kiroku_proto::Event;

use super::super::journal::{self, Journal, Position, Provenance};
use super::{
    DerivedSource, EventIndex, Headroom, IndexError, Indexes, SCHEMA_VERSION, TantivyIndex,
};

/// The file in an index directory that holds its schema version.
const VERSION_FILE: &str = "kiroku-schema";
/// Events per batch (one commit each).
const BATCH: usize = 10_000;
/// Room kept free beyond the estimate of what the rebuild still writes.
const MARGIN: u64 = 64 << 20;
/// Progress is logged this often.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// A paused rebuild checks for space this often.
const PAUSE_CHECK: Duration = Duration::from_secs(5);
/// After a failed batch or switch, the rebuild tries again after this.
const RETRY: Duration = Duration::from_secs(30);

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

/// What a rebuild is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RebuildState {
    Rebuilding,
    /// Waiting for free space above the reserve.
    PausedForSpace,
    Done,
    /// A batch or the switch failed; it is tried again.
    Failed,
}

impl RebuildState {
    pub fn name(self) -> &'static str {
        match self {
            RebuildState::Rebuilding => "rebuilding",
            RebuildState::PausedForSpace => "paused for disk space",
            RebuildState::Done => "done",
            RebuildState::Failed => "failed",
        }
    }
}

/// Where a rebuild stands (`kiroku hosts`, `ListHosts`, the log).
#[derive(Clone, Debug, PartialEq)]
pub struct RebuildStatus {
    pub state: RebuildState,
    /// Events re-indexed from the journal, and about how many there are
    /// (the old index's count).
    pub events_done: u64,
    pub events_total: u64,
    /// Of the journal read, 0–100.
    pub percent: f64,
    pub events_per_second: f64,
    pub from_version: u32,
    pub to_version: u32,
    /// Why it is paused or what failed; empty otherwise.
    pub reason: String,
}

impl RebuildStatus {
    /// One line for people.
    pub fn describe(&self) -> String {
        let head = format!(
            "index rebuild for schema version {} (from {}): {}, {} of about {} events ({:.0}%)",
            self.to_version,
            self.from_version,
            self.state.name(),
            self.events_done,
            self.events_total.max(self.events_done),
            self.percent
        );
        let tail = match self.state {
            RebuildState::Rebuilding => format!(
                ", {:.0} events/s; queries are answered from the previous index meanwhile (new events appear in searches once it is done)",
                self.events_per_second
            ),
            RebuildState::Done => "; queries use the new index".into(),
            RebuildState::PausedForSpace | RebuildState::Failed => format!(": {}", self.reason),
        };
        head + &tail
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

    /// Puts the finished index in place of the old one (see the module
    /// documentation), under the write lock: no add or commit runs
    /// meanwhile, and none can reach the index being moved.
    fn switch(&self) -> Result<PathBuf, IndexError> {
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

fn other(path: &Path, message: String) -> IndexError {
    IndexError::Other {
        path: path.to_owned(),
        message,
    }
}

fn poisoned(path: &Path) -> IndexError {
    super::poisoned(path)
}

/// A crash between the two renames of a switch leaves no index at `path`
/// but a complete successor beside it: move it in place. (`.rebuilding`
/// is where rebuilds at open, before background rebuilds, and `repair`
/// build.)
fn finish_interrupted_switch(path: &Path) {
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

impl TantivyIndex {
    fn set_progress(&self, p: &Progress) {
        *self.payload.lock().unwrap_or_else(|p| p.into_inner()) = serde_json::to_string(p).ok();
    }

    fn set_progress_none(&self) {
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

    fn status(&self, state: RebuildState, reason: String) -> RebuildStatus {
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

/// Events the old index answers that the journal replay did not bring
/// into the new one (a record the journal lost to damage, an event of a
/// data directory older than the journal): copied from the old index's
/// stored events before the switch, so the switch never loses what
/// queries found before it. Their event ids are read from the old index's
/// term dictionary and looked up in the new one; only missing ones are
/// decoded. Returns how many were copied (logged: `repair` writes them to
/// the journal).
fn carry_over(shared: &Shared, building: &TantivyIndex) -> Result<u64, IndexError> {
    let old = shared
        .indexes
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .serving
        .clone();
    let terr = |e: tantivy::TantivyError| other(&old.path, e.to_string());
    let io = |e: std::io::Error| other(&old.path, format!("reading event ids: {e}"));
    building.commit()?;
    let fresh = building.reader.searcher();
    let searcher = old.reader.searcher();
    let (mut batch, mut copied) = (Vec::new(), 0u64);
    let derive = shared.derived();
    for seg in searcher.segment_readers() {
        let ids = seg.inverted_index(old.f.event_id).map_err(terr)?;
        let mut terms = ids.terms().stream().map_err(io)?;
        while terms.advance() {
            let Ok(id) = std::str::from_utf8(terms.key()) else {
                continue;
            };
            let t = tantivy::Term::from_field_text(building.f.event_id, id);
            if fresh.doc_freq(&t).map_err(terr)? > 0 {
                continue;
            }
            if let Some(e) = old.get(id)? {
                batch.push(e);
            }
            if batch.len() >= 10_000 {
                building.add(&batch, derive.as_ref(), None)?;
                copied += batch.len() as u64;
                batch.clear();
            }
        }
    }
    if !batch.is_empty() {
        building.add(&batch, derive.as_ref(), None)?;
        copied += batch.len() as u64;
    }
    if copied > 0 {
        building.commit()?;
        tracing::warn!(
            index = %shared.path.display(), events = copied,
            "events the old index held but the journal did not were copied into the rebuilt index; run `kiroku-collector repair` to write them to the journal"
        );
    }
    Ok(copied)
}

/// The rebuild thread: batches until caught up, then the switch; pauses
/// while the disk has no room; logs progress every [`LOG_EVERY`].
fn run(shared: &Shared, mut job: Job) {
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

#[cfg(test)]
mod tests;
