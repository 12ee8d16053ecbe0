//! The collector's embedded store: one data directory holding
//! `blobs/` (content-addressed, zstd), `index/` (tantivy, also holds the
//! events themselves) and `meta/` (sled: per-stream high-water sequence
//! numbers, hosts). No external service.
//!
//! Architecture invariant: an event is acknowledged to its agent only after
//! its blob, its index commit and its high-water mark are all durable, in
//! that order. A crash in between at worst re-indexes an event under the
//! same id, which replaces rather than duplicates it.

pub mod audit;
pub mod blobs;
pub mod index;
pub mod meta;

use std::path::{Path, PathBuf};

use anyhow::Context;

pub struct Store {
    pub dir: PathBuf,
    pub blobs: blobs::BlobStore,
    pub meta: meta::MetaStore,
    pub index: index::EventIndex,
    pub audit: audit::AuditLog,
}

impl Store {
    pub fn open(dir: &Path) -> anyhow::Result<Store> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating collector data directory {}", dir.display()))?;
        Ok(Store {
            dir: dir.to_owned(),
            blobs: blobs::BlobStore::open(&dir.join("blobs"))?,
            meta: meta::MetaStore::open(&dir.join("meta"))?,
            index: index::EventIndex::open(&dir.join("index"))?,
            audit: audit::AuditLog::open(&dir.join("audit.log"))?,
        })
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
        let e = self.audit.record(identity, call, filter, results)?;
        self.meta.set_audit_head(e.seq, &e.hash)?;
        self.meta.flush()?;
        Ok(())
    }

    /// The newest `limit` audit entries since `from_ms`, with the chain
    /// checked against the head kept in the metadata.
    pub fn read_audit(
        &self,
        from_ms: i64,
        limit: usize,
    ) -> anyhow::Result<kiroku_proto::AuditResponse> {
        let head = self.meta.audit_head()?;
        let (entries, v) =
            self.audit
                .read(from_ms, limit, head.as_ref().map(|(s, h)| (*s, h.as_str())))?;
        Ok(kiroku_proto::AuditResponse {
            entries,
            total: v.entries,
            head_hash: v.head_hash,
            chain_ok: v.problem.is_empty(),
            problem: v.problem,
        })
    }
}
