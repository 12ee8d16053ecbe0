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
mod disk;
pub mod index;
pub mod journal;
pub mod meta;
pub mod purge;
pub mod repair;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

pub use disk::{AuditReserve, DiskGuard, Reservation};

pub struct Store {
    pub dir: PathBuf,
    pub journal: journal::Journal,
    pub blobs: blobs::BlobStore,
    pub meta: meta::MetaStore,
    pub index: index::EventIndex,
    /// What analysis derived from stored content, and its queue
    /// (`analysis/store.rs`).
    pub analysis: crate::analysis::store::AnnotationStore,
    /// Issue 20: mails' downstream fates joined from MTA logs
    /// (`delivery/store.rs`).
    pub delivery: crate::delivery::DeliveryStore,
    /// Shared with the index, which records its rebuilds in it.
    pub audit: Arc<audit::AuditLog>,
    pub disk: Arc<DiskGuard>,
    /// Space set aside so that queries can still be audited on a full disk.
    pub audit_reserve: AuditReserve,
    /// The journal's layout: held for reading by whoever keeps journal
    /// positions across reads (verify, export, proofs, checkpoints, the
    /// index rebuild), for writing by a purge's segment rewrite (rename and
    /// the ledger's positions re-found), so no reader sees offsets move.
    layout: std::sync::RwLock<()>,
    /// Bumped by every segment rewrite: positions taken under an earlier
    /// value may have moved.
    layout_generation: std::sync::atomic::AtomicU64,
    /// One purge at a time (`store/purge.rs`).
    purging: std::sync::Mutex<()>,
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
        let disk = Arc::new(DiskGuard::new(dir));
        // Merges write a whole new segment before the old ones go: never
        // below the reserve.
        let room = disk.clone();
        index.limit_merges(Arc::new(move || room.headroom()));
        let meta = meta::MetaStore::open(&dir.join("meta"))?;
        let analysis = crate::analysis::store::AnnotationStore::open(&meta)?;
        let delivery = crate::delivery::DeliveryStore::open(&meta)?;
        index.set_derived(crate::delivery::derived_source(
            analysis.derived_source(),
            delivery.clone(),
        ));
        let (audit, opened) = audit::AuditLog::open(&dir.join("audit.log"), meta.audit_head()?)?;
        let keeper = meta.clone();
        audit.keep_head_with(Box::new(move |seq, hash| {
            keeper
                .set_audit_head(seq, hash)
                .and_then(|()| keeper.flush())
                .map_err(|e| e.to_string())
        }));
        let audit = Arc::new(audit);
        let log = audit.clone();
        index.audit_rebuilds_with(Box::new(move |call, detail| {
            if let Err(e) = log.append_admin(audit::COLLECTOR_IDENTITY, call, detail) {
                tracing::error!(error = %e, call, "the index rebuild could not be recorded in the audit log");
            }
        }));
        let store = Store {
            dir: dir.to_owned(),
            journal,
            blobs: blobs::BlobStore::open(&dir.join("blobs"))?,
            meta,
            index,
            analysis,
            delivery,
            audit,
            audit_reserve: AuditReserve::open(dir, disk.clone()),
            disk,
            layout: std::sync::RwLock::new(()),
            layout_generation: std::sync::atomic::AtomicU64::new(0),
            purging: std::sync::Mutex::new(()),
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
        // A purge a crash cut short is finished before anything else
        // reads the journal (`store/purge.rs`). When an index rebuild is
        // about to start (an index of an older schema serves), every
        // purged record is made a stub first (`force`): the rebuild reads
        // the journal and must not find a purged event whole. Otherwise
        // large segments keep waiting for their rewrite, as in a run.
        let rebuild_due = store.index.require_current("a purge").is_err();
        let mut finished = purge::PurgeReport::default();
        store
            .finish_purges(&mut finished, rebuild_due)
            .context("finishing a purge cut short")?;
        if finished.journal_bytes_freed > 0 || finished.index_deleted > 0 {
            tracing::warn!(
                index_deleted = finished.index_deleted,
                journal_bytes_freed = finished.journal_bytes_freed,
                "finished a purge that a stop or crash had cut short"
            );
        }
        // An index of an older schema keeps serving while its successor is
        // built from the journal (`store/index/rebuild.rs`).
        store.index.start_rebuild(&store.journal)?;
        Ok(store)
    }

    /// Holds the journal's layout for reading: offsets read under it do
    /// not move (see `layout`). Hold it across a whole pass that keeps
    /// positions between reads; a purge's rewrite waits for it.
    pub fn layout_read(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.layout.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds the journal's layout for a rewrite (`store/purge.rs`); the
    /// generation moves on with it.
    pub(crate) fn layout_write(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        let g = self.layout.write().unwrap_or_else(|p| p.into_inner());
        self.layout_generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        g
    }

    /// One purge at a time: held by a purge from its tombstones to its
    /// rewrite, and by maintenance's online index repair (which must not
    /// take an event a purge has dropped from the index but not yet
    /// stubbed in the journal for one missing from the index).
    pub(crate) fn purge_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.purging.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The layout's generation: journal positions taken under one value
    /// hold while it does not change (for a reader that cannot keep
    /// [`Store::layout_read`] across its steps, like the checkpoint
    /// writer, which waits for a time stamp in between).
    pub fn layout_generation(&self) -> u64 {
        self.layout_generation
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Chains stored annotations into the journal: an `AnnotationMark`
    /// with the SHA-256 of their encoding as the annotation store holds it
    /// (the annotations themselves stay out of the journal).
    pub fn mark_annotations(&self, marks: Vec<kiroku_proto::AnnotationMark>) -> anyhow::Result<()> {
        if marks.is_empty() {
            return Ok(());
        }
        // One append (one fdatasync) for a whole batch of analysed mail.
        self.journal.append_entries(
            marks
                .into_iter()
                .map(kiroku_proto::journal_entry::Entry::Annotations)
                .collect(),
        )?;
        Ok(())
    }

    /// The mark of annotations as the annotation store holds them: their
    /// event and the SHA-256 of their encoding.
    pub fn annotation_mark(a: &kiroku_proto::Annotations) -> kiroku_proto::AnnotationMark {
        use prost::Message;
        kiroku_proto::AnnotationMark {
            event_id: a.event_id.clone(),
            annotations_sha256: journal::entry::sha256(&a.encode_to_vec()).to_vec(),
        }
    }

    /// The journal leaf of event `event_id` (what a Merkle inclusion proof
    /// is about): none for an unknown event or one journalled before the
    /// journal was chained (issue 18). Read from the index.
    pub fn leaf_of(&self, event_id: &str) -> anyhow::Result<Option<u64>> {
        Ok(self.index.provenance(event_id)?.and_then(|p| p.leaf))
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
        // On a full disk the audit log (and its head in the metadata)
        // writes into space given back from its own reserve.
        self.audit_reserve.make_room();
        self.audit
            .record(identity, call, filter, results, |seq, hash| {
                self.meta
                    .set_audit_head(seq, hash)
                    .and_then(|()| self.meta.flush())
                    .map_err(|e| e.to_string())
            })?;
        Ok(())
    }

    /// Records an administrative action in the audit log (kind `admin`;
    /// see [`audit::AuditLog::append_admin`]), durable with its head in the
    /// metadata, writing into the audit reserve on a full disk.
    pub fn audit_admin(
        &self,
        identity: &str,
        call: &str,
        detail: &str,
    ) -> anyhow::Result<kiroku_proto::AuditEntry> {
        self.audit_reserve.make_room();
        Ok(self.audit.append_admin(identity, call, detail)?)
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
    /// `kind`: `query`, `admin`, or empty for both.
    pub fn read_audit(
        &self,
        from_ms: i64,
        limit: usize,
        kind: &str,
    ) -> anyhow::Result<kiroku_proto::AuditResponse> {
        let (entries, v) = self.audit.read(from_ms, limit, kind, || {
            self.meta.audit_head().ok().flatten()
        })?;
        Ok(kiroku_proto::AuditResponse {
            entries,
            total: v.entries,
            head_hash: v.head_hash,
            chain_ok: v.problem.is_empty(),
            problem: v.problem,
        })
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
