//! Raw message content: spooling a message as it arrives (hashed on the
//! way, in memory up to [`INLINE_MAX`], else a file), and the blob
//! directory `blobs/<sha256>` of content-addressed files that events in
//! the queue reference.
//!
//! Invariant: a blob file is removed only when the last queued or
//! in-flight event referencing it is acknowledged ([`Buffer::ack`]), or at
//! open when no generation and no moved-aside buffer can reference it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Buffer, BufferError};

/// Raw content kept with an event (content-addressed by SHA-256).
pub enum Blob {
    /// Content already in memory (small messages, refused data).
    Bytes(Arc<[u8]>),
    /// Content streamed to a file in the blob directory as it arrived.
    Spooled(Spooled),
}

impl From<Arc<[u8]>> for Blob {
    fn from(b: Arc<[u8]>) -> Blob {
        Blob::Bytes(b)
    }
}

impl From<Vec<u8>> for Blob {
    fn from(b: Vec<u8>) -> Blob {
        Blob::Bytes(b.into())
    }
}

impl From<&[u8]> for Blob {
    fn from(b: &[u8]) -> Blob {
        Blob::Bytes(b.into())
    }
}

/// Raw messages up to this size are kept in memory while they arrive and
/// stored inside sled with their event (one fsync); larger ones go to a
/// spool file in the blob directory as they arrive.
pub const INLINE_MAX: usize = 64 * 1024;

/// A message being captured while it arrives, hashed on the way: in memory
/// up to [`INLINE_MAX`], then in a file in the blob directory, so a message
/// of any size costs bounded memory.
pub struct Spool {
    pub(super) mem: Vec<u8>,
    pub(super) inline_max: usize,
    pub(super) file: Option<tokio::io::BufWriter<tokio::fs::File>>,
    pub(super) path: PathBuf,
    pub(super) hasher: sha2::Sha256,
    pub(super) size: u64,
}

impl Spool {
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), BufferError> {
        use sha2::Digest;
        use tokio::io::AsyncWriteExt;
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| BufferError::Io { path, source }
        };
        if self.file.is_none() {
            if self.mem.len() + chunk.len() <= self.inline_max {
                self.mem.extend_from_slice(chunk);
                return Ok(());
            }
            let f = tokio::fs::File::create(&self.path)
                .await
                .map_err(io(&self.path))?;
            let mut f = tokio::io::BufWriter::with_capacity(64 * 1024, f);
            f.write_all(&std::mem::take(&mut self.mem))
                .await
                .map_err(io(&self.path))?;
            self.file = Some(f);
        }
        if let Some(f) = self.file.as_mut() {
            f.write_all(chunk).await.map_err(io(&self.path))?;
        }
        Ok(())
    }

    /// Completes the content: a spool file is flushed and fsynced. It is
    /// then ready to be referenced by [`Buffer::begin`].
    pub async fn finish(mut self) -> Result<Spooled, BufferError> {
        use sha2::Digest;
        use tokio::io::AsyncWriteExt;
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| BufferError::Io { path, source }
        };
        let sha = hex::encode(std::mem::take(&mut self.hasher).finalize());
        let Some(mut file) = self.file.take() else {
            self.path = PathBuf::new();
            return Ok(Spooled {
                sha256: sha,
                size: self.size,
                path: PathBuf::new(),
                inline: Some(std::mem::take(&mut self.mem).into()),
            });
        };
        file.flush().await.map_err(io(&self.path))?;
        file.get_ref().sync_all().await.map_err(io(&self.path))?;
        Ok(Spooled {
            sha256: sha,
            size: self.size,
            path: std::mem::take(&mut self.path),
            inline: None,
        })
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Captured content not yet referenced by an event: in memory (small) or
/// in an fsynced spool file. Dropped unreferenced, its file is removed.
pub struct Spooled {
    pub sha256: String,
    pub size: u64,
    pub(super) path: PathBuf,
    pub(super) inline: Option<Arc<[u8]>>,
}

impl Spooled {
    /// The content when it is small enough to be held in memory.
    pub fn bytes(&self) -> Option<&Arc<[u8]>> {
        self.inline.as_ref()
    }

    /// Where the content is, for parsing it into the record, when it is
    /// not in memory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Spooled {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Where a blob's content is, for the shipper.
pub enum BlobSource {
    /// Stored inline (small): the content.
    Bytes(Vec<u8>),
    /// A file and its size.
    File(tokio::fs::File, u64),
}

impl Buffer {
    pub(super) fn blob_path(&self, sha: &str) -> PathBuf {
        self.blob_dir.join(sha)
    }

    /// Writes a blob file durably (temp file, fsync, rename, fsync dir)
    /// unless it exists already. Returns the bytes it added. Caller holds
    /// `blob_lock`.
    pub(super) fn write_blob(&self, sha: &str, raw: &[u8]) -> Result<u64, BufferError> {
        let path = self.blob_path(sha);
        if path.exists() {
            return Ok(0);
        }
        let tmp = self.blob_dir.join(format!("{sha}.tmp"));
        let io = |source| BufferError::Io {
            path: path.clone(),
            source,
        };
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(raw)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(e));
        }
        // The rename becomes durable with the next flush, which the caller
        // awaits before anyone relies on the blob.
        self.blob_dir_dirty.store(true, Ordering::SeqCst);
        Ok(raw.len() as u64)
    }

    /// Moves a spooled file to its content address (or drops it when that
    /// content is there already). Returns the sha and the bytes it added.
    /// Caller holds `blob_lock`.
    pub(super) fn adopt_blob(&self, mut sp: Spooled) -> Result<(String, u64), BufferError> {
        let sha = std::mem::take(&mut sp.sha256);
        let path = self.blob_path(&sha);
        let from = std::mem::take(&mut sp.path);
        if path.exists() {
            let _ = std::fs::remove_file(&from);
            return Ok((sha, 0));
        }
        std::fs::rename(&from, &path).map_err(|source| BufferError::Io {
            path: path.clone(),
            source,
        })?;
        // Durable with the flush that follows in `begin`.
        self.blob_dir_dirty.store(true, Ordering::SeqCst);
        Ok((sha, sp.size))
    }

    /// At open, before anything is spooled: removes partial files (`.tmp`,
    /// `.spool`) and blob files nothing references (a crash between the
    /// file write and the reference, or between unreference and delete).
    /// While a moved-aside buffer (`*.broken-*`) exists, its events may
    /// still reference any blob, so unreferenced blobs are kept (and
    /// said so) until an operator has dealt with it.
    pub(super) fn collect_orphan_blobs(&self, refs: &sled::Tree) -> Result<(), BufferError> {
        let aside = super::store::moved_aside(&self.dir);
        let entries = std::fs::read_dir(&self.blob_dir).map_err(|source| BufferError::Io {
            path: self.blob_dir.clone(),
            source,
        })?;
        let mut kept = 0u64;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !kiroku_common::is_sha256_hex(&name) {
                if name.ends_with(".tmp") || name.ends_with(".spool") {
                    let _ = std::fs::remove_file(e.path());
                }
                continue;
            }
            let referenced = refs
                .contains_key(name.as_bytes())
                .map_err(|e| self.sled_err(e))?;
            if referenced {
                continue;
            }
            if aside.is_empty() {
                let _ = std::fs::remove_file(e.path());
            } else {
                kept += 1;
            }
        }
        if kept > 0 {
            tracing::warn!(
                blobs = kept, moved_aside = ?aside,
                "raw messages in the blob directory are not referenced by the current buffer but are kept: a moved-aside buffer may reference them. Recover its events, or delete the moved-aside directory, and they are collected at the next start"
            );
        }
        Ok(())
    }
}
