//! The collector's embedded store: one data directory holding
//! `blobs/` (content-addressed, zstd), `index/` (tantivy, also holds the
//! events themselves) and `meta/` (sled: per-stream high-water sequence
//! numbers, hosts). No external service.
//!
//! Architecture invariant: an event is acknowledged to its agent only after
//! its blob, its index commit and its high-water mark are all durable, in
//! that order. A crash in between at worst re-indexes an event under the
//! same id, which replaces rather than duplicates it.

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
        })
    }
}
