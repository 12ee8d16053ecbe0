//! The collector's embedded store: one data directory holding
//! `journal/` (the append-only event journal: the copy of record),
//! `blobs/` (content-addressed, zstd), `index/` (tantivy, derived from the
//! journal and rebuildable from it) and `meta/` (sled: per-stream
//! high-water sequence numbers, hosts). No external service.
//!
//! Architecture invariant: an event is acknowledged to its agent only after
//! its blob, its journal record, its index commit and its high-water mark
//! are all durable, in that order. A crash in between at worst journals or
//! re-indexes an event again under the same id; readers of the journal and
//! the index replace by id rather than duplicate.

pub mod audit;
pub mod blobs;
pub mod index;
pub mod journal;
pub mod meta;
pub mod repair;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

pub struct Store {
    pub dir: PathBuf,
    pub journal: journal::Journal,
    pub blobs: blobs::BlobStore,
    pub meta: meta::MetaStore,
    pub index: index::EventIndex,
    pub audit: audit::AuditLog,
    pub disk: DiskGuard,
}

/// How to repair a data directory whose index does not open.
pub const REPAIR_HINT: &str = "stop the collector and run `kiroku-collector --config <collector.toml> repair`: it checks every part of the data directory and rebuilds the index from the event journal";

impl Store {
    pub fn open(dir: &Path) -> anyhow::Result<Store> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating collector data directory {}", dir.display()))?;
        let journal = journal::Journal::open(&dir.join("journal"))?;
        let index = index::EventIndex::open(&dir.join("index"))
            .with_context(|| format!("the index does not open; {REPAIR_HINT}"))?;
        let meta = meta::MetaStore::open(&dir.join("meta"))?;
        let (audit, opened) = audit::AuditLog::open(&dir.join("audit.log"), meta.audit_head()?)?;
        let store = Store {
            dir: dir.to_owned(),
            journal,
            blobs: blobs::BlobStore::open(&dir.join("blobs"))?,
            meta,
            index,
            audit,
            disk: DiskGuard::new(dir),
        };
        store.audit_opened(opened)?;
        if store.journal.is_empty() && store.index.count() > 0 {
            // A data directory from before the journal existed: its events
            // are only in the index. Copy them out once.
            let n = store.index.count();
            tracing::warn!(
                events = n,
                "writing the event journal from the index (first start of this version)"
            );
            let mut batch = Vec::new();
            store.index.for_each_stored(|e| {
                batch.push(e);
                if batch.len() >= 10_000 {
                    store.journal.append(&batch)?;
                    batch.clear();
                }
                Ok(())
            })?;
            store.journal.append(&batch)?;
            tracing::info!(events = n, journal = %store.journal.dir().display(), "event journal written");
        }
        Ok(store)
    }

    /// Records a query in the audit log and its new head in the metadata
    /// (so a log cut short is detected), both durable.
    pub fn audit_query(
        &self,
        identity: &str,
        call: &str,
        filter: &str,
        results: u64,
    ) -> anyhow::Result<()> {
        self.audit
            .record(identity, call, filter, results, |seq, hash| {
                self.meta
                    .set_audit_head(seq, hash)
                    .and_then(|()| self.meta.flush())
                    .map_err(|e| e.to_string())
            })?;
        Ok(())
    }

    /// What the audit log's check at open found: new damage is logged as
    /// an error and recorded in the log itself (kept, never cut); the head
    /// in the metadata is brought up to the log's.
    fn audit_opened(&self, opened: audit::Opened) -> anyhow::Result<()> {
        let path = self.dir.join("audit.log");
        if opened.known_problems > 0 {
            tracing::warn!(path = %path.display(), breaks = opened.known_problems, "the audit log holds damage found and recorded at an earlier start; it is kept as evidence (`kiroku audit` shows it)");
        }
        if !opened.new_problems.is_empty() {
            let what = audit::describe(&opened.new_problems);
            tracing::error!(path = %path.display(), problem = %what, "the audit log was tampered with or damaged; it is kept as it is, the damage is recorded in it, and new entries continue after it (`kiroku audit` reports it)");
            self.audit_query(audit::COLLECTOR_IDENTITY, audit::TAMPER_CALL, &what, 0)
                .context("recording the audit log's damage in it")?;
            return Ok(());
        }
        let (seq, hash) = self.audit.head();
        if seq > 0 && self.meta.audit_head()? != Some((seq, hash.clone())) {
            self.meta.set_audit_head(seq, &hash)?;
            self.meta.flush()?;
        }
        Ok(())
    }

    /// The newest `limit` audit entries since `from_ms`, with the chain
    /// checked against the head the collector holds and the one kept in
    /// the metadata.
    pub fn read_audit(
        &self,
        from_ms: i64,
        limit: usize,
    ) -> anyhow::Result<kiroku_proto::AuditResponse> {
        let (entries, v) = self
            .audit
            .read(from_ms, limit, || self.meta.audit_head().ok().flatten())?;
        Ok(kiroku_proto::AuditResponse {
            entries,
            total: v.entries,
            head_hash: v.head_hash,
            chain_ok: v.problem.is_empty(),
            problem: v.problem,
        })
    }
}

/// Keeps the collector's disk from filling: ingest pauses while the data
/// directory's file system has less than `min_free` bytes available, and
/// resumes by itself once space returns. Agents keep buffering meanwhile
/// (their batches are refused, never acknowledged).
/// Subdirectories of the data directory that the guard watches besides it.
const STORE_PARTS: [&str; 4] = ["meta", "index", "journal", "blobs"];

pub struct DiskGuard {
    dir: PathBuf,
    min_free: AtomicU64,
    state: Mutex<GuardState>,
}

#[derive(Default)]
struct GuardState {
    paused: Option<String>,
    logged: Option<Instant>,
}

impl DiskGuard {
    fn new(dir: &Path) -> DiskGuard {
        DiskGuard {
            dir: dir.to_owned(),
            min_free: AtomicU64::new(0),
            state: Mutex::new(GuardState::default()),
        }
    }

    pub fn set_min_free(&self, bytes: u64) {
        self.min_free.store(bytes, Ordering::Relaxed);
    }

    /// Bytes available to the collector in the data directory's file system.
    pub fn available(&self) -> std::io::Result<u64> {
        Ok(self.fullest()?.0)
    }

    /// The store directory with the least space available, and that space.
    /// The parts of the data directory (metadata, index, journal, blobs)
    /// may be separate volumes; the fullest one decides.
    fn fullest(&self) -> std::io::Result<(u64, PathBuf)> {
        let mut best: Option<(u64, PathBuf)> = None;
        for d in
            std::iter::once(self.dir.clone()).chain(STORE_PARTS.iter().map(|p| self.dir.join(p)))
        {
            let st = match rustix::fs::statvfs(&d) {
                Ok(st) => st,
                Err(_) if d != self.dir => continue,
                Err(e) => return Err(e.into()),
            };
            let avail = st.f_bavail.saturating_mul(st.f_frsize);
            if best.as_ref().is_none_or(|(a, _)| avail < *a) {
                best = Some((avail, d));
            }
        }
        best.ok_or_else(|| std::io::Error::other("no store directory"))
    }

    /// Ok when `need` more bytes can be written without going below the
    /// reserve; otherwise ingest is paused and the message says why and
    /// what to do.
    pub fn check(&self, need: u64) -> Result<(), String> {
        let min_free = self.min_free.load(Ordering::Relaxed);
        let (avail, fullest) = match self.fullest() {
            Ok(a) => a,
            // Cannot tell: let the write itself fail if it must.
            Err(_) => return Ok(()),
        };
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if avail >= min_free.saturating_add(need) {
            if st.paused.take().is_some() {
                tracing::info!(data_dir = %self.dir.display(), available_mb = avail / 1_000_000, "disk space is back: ingest resumed");
            }
            return Ok(());
        }
        let why = if avail >= min_free {
            format!(
                "{} kB free, not enough for {} kB more above the reserve of {} MB (min_free_bytes)",
                avail / 1000,
                need.div_ceil(1000),
                min_free / 1_000_000
            )
        } else {
            format!(
                "{} MB free, below the reserve of {} MB (min_free_bytes)",
                avail / 1_000_000,
                min_free / 1_000_000
            )
        };
        let msg = format!(
            "collector ingest paused: {} has {why}; agents keep buffering and resend. Free disk space there (or lower min_free_bytes) and ingest resumes by itself",
            fullest.display(),
        );
        let log_now = st
            .logged
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(30))
            || st.paused.is_none();
        if log_now {
            tracing::error!("{msg}");
            st.logged = Some(Instant::now());
        }
        st.paused = Some(msg.clone());
        Err(msg)
    }

    /// Why ingest is paused, if it is.
    pub fn paused(&self) -> Option<String> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .paused
            .clone()
    }
}

impl Store {
    /// Ends the process when the metadata store met an I/O error (a full
    /// or failing disk under it): sled refuses every write after one, even
    /// once space is back, so going on would refuse all ingest and every
    /// audited query forever. A restart (systemd: `Restart=always`)
    /// reopens it at its last durable state; nothing acknowledged is lost,
    /// and agents resend what was not acknowledged.
    pub fn exit_if_meta_failed(&self) {
        if let Some(why) = self.meta.failed() {
            tracing::error!(
                meta = %self.dir.join("meta").display(),
                error = %why,
                "the collector's metadata store failed to write and cannot continue in this process; exiting (status 75) so the service manager restarts it. Check free space and the disk under it; nothing acknowledged is lost"
            );
            std::process::exit(75);
        }
    }
}
