//! The agent's durable buffer: a sled database used as a write-once,
//! read-sequentially queue of events keyed by sequence number, with a
//! separate record of what the collector has acknowledged.
//!
//! Layout under the agent's data directory (an on-disk boundary):
//! - `sled/`, a sled database with trees
//!   - `queue`:    seq (u64 BE) → prost-encoded `Event`, ready to ship;
//!   - `inflight`: id (u64 BE) → `Event` recorded before the upstream answered;
//!   - `blobrefs`: sha256 hex → number of queued/in-flight events using it;
//!   - `smallblobs`: sha256 hex → raw messages up to [`INLINE_MAX`] bytes,
//!     written in the same transaction (and the same fsync) as their event;
//!   - `meta`:     `stream_id`, `next_seq`, and `note/<name>` notes of what
//!     could not be recorded (pending gap records, see `gaps.rs`);
//! - `sequence`: the highest durable sequence number, written once a second
//!   outside sled, so a damaged sled log (which sled silently cuts at the
//!   damage) is noticed and numbers are never reused;
//!   - `file_hashes`, `file_hash_age`: file capture's hash → path memory
//!     (see `capture/files/hashes.rs`), not part of the queue;
//! - `blobs/<sha256>`: larger raw messages, content-addressed plain files
//!   (fsynced before the event that references them is recorded). Keeping
//!   them out of sled halves sled's memory under a backlog (measured with
//!   `examples/buffer_rss.rs`) and lets large messages bypass it; small ones
//!   inline save a file create, an fsync and a directory fsync per mail.
//!
//! Architecture invariant: nothing is removed from `queue` except by
//! [`Buffer::ack`] with a sequence number the collector acknowledged, and
//! every write that the SMTP relay relies on is flushed (fsync) before the
//! call returns — except [`Buffer::settle`], whose flush the caller runs
//! with [`Buffer::make_durable`]; the shipper never sees an event before
//! it is durable. On open, left-over in-flight records (a crash between
//! "recorded" and "upstream answered") move to the queue with outcome
//! `unknown`: a crash never leaves no record.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use kiroku_proto::Event;
use prost::Message;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use tokio::sync::Notify;

#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error(
        "agent buffer is full ({used} of {max} bytes on disk); new events are refused until the collector catches up (raise buffer.max_bytes or check the collector connection)"
    )]
    Full { used: u64, max: u64 },
    #[error("agent buffer {path}: {source}")]
    Sled { path: PathBuf, source: sled::Error },
    #[error("agent buffer {path}: corrupt entry {key}: {message}")]
    Corrupt {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("agent buffer {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("agent buffer {path}: background task failed: {message}")]
    Task { path: PathBuf, message: String },
}

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
    mem: Vec<u8>,
    inline_max: usize,
    file: Option<tokio::io::BufWriter<tokio::fs::File>>,
    path: PathBuf,
    hasher: sha2::Sha256,
    size: u64,
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

impl Drop for Buffer {
    fn drop(&mut self) {
        self.persist_seq();
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
    path: PathBuf,
    inline: Option<Arc<[u8]>>,
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

/// Handle of an event recorded before its outcome is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InflightId(u64);

/// An outcome committed by [`Buffer::settle`], not yet on disk.
#[derive(Debug)]
#[must_use = "the outcome is not durable until `Buffer::make_durable` returns"]
pub struct Settled {
    seq: u64,
}

/// Backlog figures for logs and the hosts view.
#[derive(Debug, Clone, Copy, Default)]
pub struct Backlog {
    pub queued: usize,
    pub inflight: usize,
    pub bytes_on_disk: u64,
}

pub struct Buffer {
    path: PathBuf,
    db: sled::Db,
    queue: sled::Tree,
    inflight: sled::Tree,
    blob_dir: PathBuf,
    /// Serialises "ensure file + reference" against "unreference + delete
    /// file" for the same content.
    blob_lock: Mutex<()>,
    blob_bytes: AtomicU64,
    blobrefs: sled::Tree,
    smallblobs: sled::Tree,
    /// Raw messages up to this size are stored inline ([`INLINE_MAX`]).
    inline_max: AtomicU64,
    meta: sled::Tree,
    stream_id: String,
    max_bytes: u64,
    appended: Notify,
    /// Group commit: writers take a ticket after their write; one flush
    /// covers every ticket taken before it started.
    flush_tickets: AtomicU64,
    flushed_upto: AtomicU64,
    flush_lock: tokio::sync::Mutex<()>,
    flush_done: Notify,
    /// A blob file was renamed into place since the last flush: the blob
    /// directory needs an fsync too.
    blob_dir_dirty: std::sync::atomic::AtomicBool,
    /// Highest sequence number known to be on disk. The shipper never reads
    /// past it: an event shipped before it is durable here could, after a
    /// crash, come back under another sequence number and be mistaken for
    /// a duplicate of what the collector already stored.
    durable_seq: AtomicU64,
    /// The durable sequence number last written to the side file
    /// (`<dir>/sequence`), which outlives damage to sled's log.
    seq_mark: AtomicU64,
    seq_file: PathBuf,
    /// Damage found at open (what was lost), for the agent to report.
    damage: Option<String>,
    /// The first I/O error sled reported: sled refuses every write after
    /// one, even once space is back, so the agent must restart.
    failed: Mutex<Option<String>>,
}

/// The side file: `KIROKU-SEQ1 <stream_id> <highest durable seq>`. sled
/// treats a damaged spot in its log as the end of the log and silently
/// drops everything after it; this file, written at most once a second
/// from the durable sequence number, is how such a loss is noticed (and
/// sequence numbers are never reused after it).
const SEQ_MAGIC: &str = "KIROKU-SEQ1";

fn read_seq_file(path: &Path) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut it = text.split_whitespace();
    (it.next()? == SEQ_MAGIC).then_some(())?;
    let stream = it.next()?.to_owned();
    let seq = it.next()?.parse().ok()?;
    Some((stream, seq))
}

/// sled's segment (io buffer) size. sled writes anything over a quarter of
/// it — a record with a large `body_text`, or a tree node consolidated
/// from many inline messages — as a separate file with its own fsyncs, so
/// the default 512 KiB made such writes common. 2 MiB measured fastest
/// here (`examples/buffer_latency.rs`: p50 per relayed 10 KB mail 1.02 →
/// 0.75 ms) for 1.5 MB more RSS after 3,000 mails (`examples/buffer_rss.rs`).
const SEGMENT_SIZE: usize = 2 * 1024 * 1024;

/// The segment size an existing database was created with, from sled's
/// refusal to open it with another ("... please change it back to N").
fn created_with_segment_size(msg: &str) -> Option<usize> {
    msg.split("please change it back to ")
        .nth(1)?
        .trim()
        .parse()
        .ok()
}

const NEXT_SEQ: &[u8] = b"next_seq";
const STREAM_ID: &[u8] = b"stream_id";

/// The result of a closure run inside a buffer transaction.
pub type TxResult<T> = Result<T, ConflictableTransactionError<String>>;

/// When a [`Buffer::note`] must be on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Before `note` returns (one group-committed flush).
    Now,
    /// Within a second (sled's own flush), or with the next flush.
    Soon,
}

/// Notes live in `meta` under their own prefix, apart from the queue's
/// bookkeeping (`next_seq`, `stream_id`).
fn note_key(key: &str) -> String {
    format!("note/{key}")
}

impl Buffer {
    /// Opens (or creates) the buffer in `dir`. If sled cannot open its
    /// database, it is moved aside (`sled.broken-<unix time>`) with a clear
    /// log line and a fresh one is created, so the agent keeps recording.
    pub fn open(dir: &Path, max_bytes: u64, cache_bytes: u64) -> Result<Arc<Buffer>, BufferError> {
        let blob_dir = dir.join("blobs");
        std::fs::create_dir_all(&blob_dir).map_err(|source| BufferError::Io {
            path: blob_dir.clone(),
            source,
        })?;
        let path = &dir.join("sled");
        let db = match Self::open_db_waiting(path, cache_bytes) {
            Ok(db) => db,
            Err(e) if is_lock_error(&e) => {
                // Never move aside a buffer another process is using.
                return Err(BufferError::Io {
                    path: path.to_owned(),
                    source: std::io::Error::other(
                        "the buffer is in use by another process: is another kiroku-agent running with the same data_dir? Stop it or give this one its own data_dir",
                    ),
                });
            }
            Err(e) => {
                let aside = PathBuf::from(format!(
                    "{}.broken-{}",
                    path.display(),
                    kiroku_common::now_ms() / 1000
                ));
                tracing::error!(
                    path = %path.display(), moved_to = %aside.display(), error = %e,
                    "agent buffer cannot be opened; moving it aside and starting a new one (inspect or delete the old directory)"
                );
                std::fs::rename(path, &aside).map_err(|io| BufferError::Sled {
                    path: path.to_owned(),
                    source: sled::Error::Io(io),
                })?;
                Self::open_db(path, cache_bytes)?
            }
        };
        let err = |source| BufferError::Sled {
            path: path.to_owned(),
            source,
        };
        let tree = |name: &str| db.open_tree(name).map_err(err);
        let (queue, inflight, blobrefs, smallblobs, meta) = (
            tree("queue")?,
            tree("inflight")?,
            tree("blobrefs")?,
            tree("smallblobs")?,
            tree("meta")?,
        );
        let stream_id = match meta.get(STREAM_ID).map_err(err)? {
            Some(v) => String::from_utf8_lossy(&v).into_owned(),
            None => {
                // A new buffer incarnation: the collector de-duplicates per
                // (agent, stream), so a wiped buffer never collides with the
                // sequence numbers of its predecessor.
                let id = format!("{:016x}", rand::random::<u64>());
                meta.insert(STREAM_ID, id.as_bytes()).map_err(err)?;
                db.flush().map_err(err)?;
                id
            }
        };
        let buffer = Buffer {
            path: path.to_owned(),
            db,
            queue,
            inflight,
            blob_dir,
            blob_lock: Mutex::new(()),
            blob_bytes: AtomicU64::new(0),
            blobrefs,
            smallblobs,
            inline_max: AtomicU64::new(INLINE_MAX as u64),
            meta,
            stream_id,
            max_bytes,
            appended: Notify::new(),
            flush_tickets: AtomicU64::new(0),
            flushed_upto: AtomicU64::new(0),
            flush_lock: tokio::sync::Mutex::new(()),
            flush_done: Notify::new(),
            blob_dir_dirty: std::sync::atomic::AtomicBool::new(false),
            durable_seq: AtomicU64::new(0),
            seq_mark: AtomicU64::new(0),
            seq_file: dir.join("sequence"),
            damage: None,
            failed: Mutex::new(None),
        };
        let mut buffer = buffer;
        buffer.damage = buffer.check_sequence()?;
        buffer.recover_inflight()?;
        buffer.collect_orphan_blobs()?;
        let last = buffer
            .queue
            .last()
            .map_err(|e| buffer.sled_err(e))?
            .map(|(k, _)| read_u64(Some(&k)))
            .unwrap_or(0);
        buffer.durable_seq.store(last, Ordering::SeqCst);
        let buffer = Arc::new(buffer);
        let weak = Arc::downgrade(&buffer);
        // The side file follows the durable sequence number, once a second,
        // for as long as the buffer is open.
        let _ = std::thread::Builder::new()
            .name("kiroku-buffer-seq".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    let Some(b) = weak.upgrade() else { break };
                    b.persist_seq();
                }
            });
        Ok(buffer)
    }

    /// Damage found when the buffer was opened: which sequence numbers were
    /// lost. `None` for a sound buffer.
    pub fn damage(&self) -> Option<&str> {
        self.damage.as_deref()
    }

    /// The buffer's directory.
    pub fn dir(&self) -> &Path {
        &self.path
    }

    /// The I/O error that broke sled, if one did (see the `failed` field).
    pub fn failed(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Compares sled's next sequence number with the side file. If sled's
    /// log ends before a number that was already durable, records after a
    /// damaged spot were dropped: say so, and continue numbering after the
    /// lost ones so none is ever reused (the collector would take a reused
    /// number for a duplicate).
    fn check_sequence(&self) -> Result<Option<String>, BufferError> {
        let next = read_u64(
            self.meta
                .get(NEXT_SEQ)
                .map_err(|e| self.sled_err(e))?
                .as_deref(),
        )
        .max(1);
        self.seq_mark.store(next - 1, Ordering::SeqCst);
        let Some((stream, mark)) = read_seq_file(&self.seq_file) else {
            return Ok(None);
        };
        if stream != self.stream_id || mark < next {
            return Ok(None);
        }
        let msg = format!(
            "agent buffer {} is damaged: sled's log ends before sequence number {mark}, which was durable; events {next}..={mark} that were not yet acknowledged by the collector are lost. The buffer keeps working and numbering continues at {}; check the disk",
            self.path.display(),
            mark + 1
        );
        tracing::error!("{msg}");
        self.meta
            .insert(NEXT_SEQ, &(mark + 1).to_be_bytes())
            .map_err(|e| self.sled_err(e))?;
        self.db.flush().map_err(|e| self.sled_err(e))?;
        self.seq_mark.store(mark, Ordering::SeqCst);
        Ok(Some(msg))
    }

    /// Writes the durable sequence number to the side file if it moved.
    fn persist_seq(&self) {
        let seq = self.durable_seq.load(Ordering::SeqCst);
        if seq <= self.seq_mark.load(Ordering::SeqCst) {
            return;
        }
        let tmp = self.seq_file.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            writeln!(f, "{SEQ_MAGIC} {} {seq}", self.stream_id)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.seq_file)?;
            if let Some(dir) = self.seq_file.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        match write() {
            Ok(()) => {
                self.seq_mark.fetch_max(seq, Ordering::SeqCst);
            }
            Err(e) => {
                tracing::warn!(path = %self.seq_file.display(), error = %e, "cannot write the buffer's sequence file")
            }
        }
    }

    /// Opens sled, waiting up to 5 s for its file lock (a previous handle in
    /// this process may still be closing).
    fn open_db_waiting(path: &Path, cache_bytes: u64) -> Result<sled::Db, BufferError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match Self::open_db(path, cache_bytes) {
                Err(e) if is_lock_error(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }

    fn open_db(path: &Path, cache_bytes: u64) -> Result<sled::Db, BufferError> {
        let open = |segment_size: usize| {
            sled::Config::new()
                .path(path)
                .cache_capacity(cache_bytes)
                .flush_every_ms(Some(1000))
                .segment_size(segment_size)
                .open()
        };
        let result = match open(SEGMENT_SIZE) {
            // A buffer created with another segment size (sled cannot
            // change it in place) keeps the one it was made with.
            Err(sled::Error::Unsupported(msg)) if created_with_segment_size(&msg).is_some() => {
                open(created_with_segment_size(&msg).unwrap_or(SEGMENT_SIZE))
            }
            other => other,
        };
        result.map_err(|source| BufferError::Sled {
            path: path.to_owned(),
            source,
        })
    }

    /// Changes the inline threshold (benchmarks compare the two paths).
    pub fn set_inline_max(&self, bytes: usize) {
        self.inline_max.store(bytes as u64, Ordering::Relaxed);
    }

    /// A tree of the buffer's database for a capture source's own small
    /// state (file capture: `file_hashes`, `file_hash_age`). Written without
    /// the buffer's fsync guarantees: sled flushes it within a second.
    pub fn aux_tree(&self, name: &str) -> Result<sled::Tree, BufferError> {
        self.db.open_tree(name).map_err(|e| self.sled_err(e))
    }

    /// Identifies this buffer incarnation towards the collector.
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }

    fn sled_err(&self, source: sled::Error) -> BufferError {
        if matches!(source, sled::Error::Io(_)) {
            let mut f = self.failed.lock().unwrap_or_else(|p| p.into_inner());
            if f.is_none() {
                *f = Some(source.to_string());
            }
        }
        BufferError::Sled {
            path: self.path.clone(),
            source,
        }
    }

    fn tx_err(&self, e: TransactionError<String>) -> BufferError {
        match e {
            TransactionError::Storage(source) => self.sled_err(source),
            TransactionError::Abort(message) => BufferError::Corrupt {
                path: self.path.clone(),
                key: "transaction".into(),
                message,
            },
        }
    }

    fn check_space(&self) -> Result<(), BufferError> {
        let used = self.db.size_on_disk().map_err(|e| self.sled_err(e))?
            + self.blob_bytes.load(Ordering::Relaxed);
        if used >= self.max_bytes {
            return Err(BufferError::Full {
                used,
                max: self.max_bytes,
            });
        }
        Ok(())
    }

    /// fsync everything written so far (the blob directory, then sled).
    /// Group commit: concurrent callers share flushes, so N sessions
    /// finishing together cost one round of fsyncs, not N.
    async fn flush(&self) -> Result<(), BufferError> {
        // Every write of this caller happened before this ticket.
        let ticket = self.flush_tickets.fetch_add(1, Ordering::SeqCst) + 1;
        loop {
            if self.flushed_upto.load(Ordering::SeqCst) >= ticket {
                return Ok(());
            }
            let done = self.flush_done.notified();
            let Ok(_leader) = self.flush_lock.try_lock() else {
                // Another caller is flushing; its flush may not cover our
                // ticket, so check again when it ends.
                done.await;
                continue;
            };
            // Writes of every ticket taken so far are complete: one flush
            // covers them all.
            let upto = self.flush_tickets.load(Ordering::SeqCst);
            let result = self.flush_now().await;
            if result.is_ok() {
                self.flushed_upto.fetch_max(upto, Ordering::SeqCst);
            }
            self.flush_done.notify_waiters();
            result?;
        }
    }

    async fn flush_now(&self) -> Result<(), BufferError> {
        let db = self.db.clone();
        let dir = self
            .blob_dir_dirty
            .swap(false, Ordering::SeqCst)
            .then(|| self.blob_dir.clone());
        let task = move || -> Result<(), (Option<std::io::Error>, Option<sled::Error>)> {
            if let Some(dir) = &dir {
                std::fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| (Some(e), None))?;
            }
            db.flush().map_err(|e| (None, Some(e)))?;
            Ok(())
        };
        match tokio::task::spawn_blocking(task).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err((Some(source), _))) => {
                self.blob_dir_dirty.store(true, Ordering::SeqCst);
                Err(BufferError::Io {
                    path: self.blob_dir.clone(),
                    source,
                })
            }
            Ok(Err((None, Some(e)))) => Err(self.sled_err(e)),
            Ok(Err((None, None))) => Ok(()),
            Err(e) => Err(BufferError::Task {
                path: self.path.clone(),
                message: e.to_string(),
            }),
        }
    }

    /// Starts spooling a message to the blob directory. Refused when the
    /// buffer is full (one message may then overshoot the bound).
    pub async fn spool(&self) -> Result<Spool, BufferError> {
        self.check_space()?;
        let name = format!("{:016x}.spool", rand::random::<u64>());
        let path = self.blob_dir.join(name);
        Ok(Spool {
            mem: Vec::new(),
            inline_max: self.inline_max.load(Ordering::Relaxed) as usize,
            file: None,
            path,
            hasher: Default::default(),
            size: 0,
        })
    }

    /// Records `event` (and its raw blob, if any) durably *before* its
    /// outcome is known. Returns once it is on disk.
    pub async fn begin(
        self: &Arc<Self>,
        event: &Event,
        raw: Option<Blob>,
    ) -> Result<InflightId, BufferError> {
        self.check_space()?;
        let id = self.db.generate_id().map_err(|e| self.sled_err(e))?;
        let bytes = event.encode_to_vec();
        let this = self.clone();
        let task = move || -> Result<(), BufferError> {
            let _guard = this.blob_lock.lock().unwrap_or_else(|p| p.into_inner());
            // (sha, content to store inline with the event)
            let (sha, inline): (Option<String>, Option<Arc<[u8]>>) = match raw {
                None => (None, None),
                Some(Blob::Bytes(raw)) => {
                    let sha = kiroku_common::sha256_hex(&raw);
                    if raw.len() as u64 <= this.inline_max.load(Ordering::Relaxed) {
                        (Some(sha), Some(raw))
                    } else {
                        this.write_blob(&sha, &raw)?;
                        (Some(sha), None)
                    }
                }
                Some(Blob::Spooled(mut sp)) => match sp.inline.take() {
                    Some(raw) => (Some(std::mem::take(&mut sp.sha256)), Some(raw)),
                    None => (Some(this.adopt_blob(sp)?), None),
                },
            };
            (&this.inflight, &this.blobrefs, &this.smallblobs)
                .transaction(|(inflight, blobrefs, smallblobs)| -> TxResult<()> {
                    if let Some(sha) = &sha {
                        let refs = read_u64(blobrefs.get(sha.as_bytes())?.as_deref());
                        blobrefs.insert(sha.as_bytes(), &(refs + 1).to_be_bytes())?;
                        if let Some(raw) = &inline
                            && refs == 0
                        {
                            smallblobs.insert(sha.as_bytes(), raw.as_ref())?;
                        }
                    }
                    inflight.insert(&id.to_be_bytes(), bytes.as_slice())?;
                    Ok(())
                })
                .map_err(|e| this.tx_err(e))
        };
        self.blocking(task).await?;
        self.flush().await?;
        Ok(InflightId(id))
    }

    /// Runs a buffer job (sled transactions, file I/O) on the blocking
    /// pool; a job that panicked is a `Task` error naming the buffer.
    async fn blocking<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> Result<T, BufferError> + Send + 'static,
    ) -> Result<T, BufferError> {
        tokio::task::spawn_blocking(job)
            .await
            .map_err(|e| BufferError::Task {
                path: self.path.clone(),
                message: e.to_string(),
            })?
    }

    fn blob_path(&self, sha: &str) -> PathBuf {
        self.blob_dir.join(sha)
    }

    /// Writes a blob file durably (temp file, fsync, rename, fsync dir)
    /// unless it exists already. Caller holds `blob_lock`.
    fn write_blob(&self, sha: &str, raw: &[u8]) -> Result<(), BufferError> {
        let path = self.blob_path(sha);
        if path.exists() {
            return Ok(());
        }
        let tmp = self.blob_dir.join(format!("{sha}.tmp"));
        let io = |source| BufferError::Io {
            path: path.clone(),
            source,
        };
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(raw).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        // The rename becomes durable with the next flush, which the caller
        // awaits before anyone relies on the blob.
        self.blob_dir_dirty.store(true, Ordering::SeqCst);
        self.blob_bytes
            .fetch_add(raw.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Moves a spooled file to its content address (or drops it when that
    /// content is there already). Caller holds `blob_lock`.
    fn adopt_blob(&self, mut sp: Spooled) -> Result<String, BufferError> {
        let sha = std::mem::take(&mut sp.sha256);
        let path = self.blob_path(&sha);
        let from = std::mem::take(&mut sp.path);
        if path.exists() {
            let _ = std::fs::remove_file(&from);
            return Ok(sha);
        }
        let io = |source| BufferError::Io {
            path: path.clone(),
            source,
        };
        std::fs::rename(&from, &path).map_err(io)?;
        // Durable with the flush that follows in `begin`.
        self.blob_dir_dirty.store(true, Ordering::SeqCst);
        self.blob_bytes.fetch_add(sp.size, Ordering::Relaxed);
        Ok(sha)
    }

    /// Removes blob files nobody references (left by a crash between the
    /// file write and the reference, or between unreference and delete).
    fn collect_orphan_blobs(&self) -> Result<(), BufferError> {
        let entries = std::fs::read_dir(&self.blob_dir).map_err(|source| BufferError::Io {
            path: self.blob_dir.clone(),
            source,
        })?;
        let mut bytes = 0;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let referenced = kiroku_common::is_sha256_hex(&name)
                && self
                    .blobrefs
                    .contains_key(name.as_bytes())
                    .map_err(|e| self.sled_err(e))?;
            if referenced {
                bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
            } else {
                let _ = std::fs::remove_file(e.path());
            }
        }
        self.blob_bytes.store(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// Completes an in-flight record with `update` (the outcome) and queues
    /// it for shipping under the next sequence number. Durable on return.
    pub async fn finish(
        &self,
        id: InflightId,
        update: impl FnOnce(&mut Event),
    ) -> Result<u64, BufferError> {
        let settled = self.settle(id, update)?;
        self.make_durable(settled).await
    }

    /// The first half of [`Buffer::finish`]: the outcome is committed (in
    /// memory; the shipper does not see it yet) but not flushed. A crash
    /// before [`Buffer::make_durable`] returns leaves the in-flight record,
    /// recovered with outcome `unknown`. The relay uses it to send its
    /// reply while the flush runs.
    pub fn settle(
        &self,
        id: InflightId,
        update: impl FnOnce(&mut Event),
    ) -> Result<Settled, BufferError> {
        let key = id.0.to_be_bytes();
        let Some(bytes) = self.inflight.get(key).map_err(|e| self.sled_err(e))? else {
            return Err(BufferError::Corrupt {
                path: self.path.clone(),
                key: format!("inflight/{}", id.0),
                message: "in-flight record vanished".into(),
            });
        };
        let mut event = self.decode(&bytes, &format!("inflight/{}", id.0))?;
        update(&mut event);
        let seq = self.move_to_queue(&key, &event)?;
        Ok(Settled { seq })
    }

    /// The second half of [`Buffer::finish`]: flushes (group commit) and
    /// hands the event to the shipper. Returns its sequence number.
    pub async fn make_durable(&self, settled: Settled) -> Result<u64, BufferError> {
        let Settled { seq } = settled;
        self.flush().await?;
        // One flush covers every transaction committed before it, and
        // sequence numbers are assigned in commit order.
        self.durable_seq.fetch_max(seq, Ordering::SeqCst);
        self.appended.notify_one();
        Ok(seq)
    }

    /// Records an event whose outcome is already known. Durable on return.
    pub async fn append(
        self: &Arc<Self>,
        event: &Event,
        raw: Option<Blob>,
    ) -> Result<u64, BufferError> {
        let id = self.begin(event, raw).await?;
        self.finish(id, |_| {}).await
    }

    /// Whether the buffer is at its bound (`max_bytes`): new records are
    /// then refused with [`BufferError::Full`].
    pub fn is_full(&self) -> bool {
        matches!(self.check_space(), Err(BufferError::Full { .. }))
    }

    /// Records `event` unless `decide` says not to, in one transaction with
    /// what `decide` writes to `aux` (a capture source's own tree, e.g. file
    /// capture's last known state of each file), so the record and that
    /// state are durable together or not at all. `decide` may run more
    /// than once (transaction retries) and must only touch `aux`. Returns
    /// the sequence number (None: not recorded) and what `decide` returned.
    /// Durable on return.
    pub async fn append_with<T, F>(
        self: &Arc<Self>,
        event: Event,
        aux: sled::Tree,
        decide: F,
    ) -> Result<(Option<u64>, T), BufferError>
    where
        T: Send + 'static,
        F: Fn(&sled::transaction::TransactionalTree) -> TxResult<(bool, T)> + Send + 'static,
    {
        self.check_space()?;
        let this = self.clone();
        let task = move || -> Result<(Option<u64>, T), BufferError> {
            (&this.queue, &this.meta, &aux)
                .transaction(|(queue, meta, aux)| {
                    let (record, t) = decide(aux)?;
                    if !record {
                        return Ok((None, t));
                    }
                    Ok((Some(this.queue_in_tx(queue, meta, &event)?), t))
                })
                .map_err(|e| this.tx_err(e))
        };
        let (seq, t) = self.blocking(task).await?;
        if let Some(seq) = seq {
            self.make_durable(Settled { seq }).await?;
        }
        Ok((seq, t))
    }

    /// Updates a small note kept in the `meta` tree under `key` (e.g. a
    /// pending gap record) with `update` (old value → new value), outside
    /// the bound: notes are how the agent remembers what it could not
    /// record. With [`Durability::Now`] it is on disk on return; with
    /// [`Durability::Soon`] sled writes it within a second.
    pub async fn note(
        &self,
        key: &str,
        durability: Durability,
        update: impl Fn(Option<&[u8]>) -> Vec<u8>,
    ) -> Result<(), BufferError> {
        let key = note_key(key);
        self.meta
            .update_and_fetch(key.as_bytes(), |old| Some(update(old)))
            .map_err(|e| self.sled_err(e))?;
        if durability == Durability::Now {
            self.flush().await?;
        }
        Ok(())
    }

    /// Turns the note under `key` into a queued event (`make` builds it
    /// from the note; None leaves the note) and removes the note, in one
    /// transaction. Refused with [`BufferError::Full`] while the buffer is
    /// at its bound. Returns the event's sequence number, None when there
    /// was no note. Durable on return.
    pub async fn take_note(
        &self,
        key: &str,
        make: impl Fn(&[u8]) -> Option<Event>,
    ) -> Result<Option<u64>, BufferError> {
        let key = note_key(key);
        if !self
            .meta
            .contains_key(key.as_bytes())
            .map_err(|e| self.sled_err(e))?
        {
            return Ok(None);
        }
        self.check_space()?;
        let seq = (&self.queue, &self.meta)
            .transaction(|(queue, meta)| -> TxResult<Option<u64>> {
                let Some(note) = meta.get(key.as_bytes())? else {
                    return Ok(None);
                };
                let Some(event) = make(&note) else {
                    return Ok(None);
                };
                meta.remove(key.as_bytes())?;
                Ok(Some(self.queue_in_tx(queue, meta, &event)?))
            })
            .map_err(|e| self.tx_err(e))?;
        if let Some(seq) = seq {
            self.make_durable(Settled { seq }).await?;
        }
        Ok(seq)
    }

    /// Inside a transaction: queues `event` under the next sequence number.
    fn queue_in_tx(
        &self,
        queue: &sled::transaction::TransactionalTree,
        meta: &sled::transaction::TransactionalTree,
        event: &Event,
    ) -> TxResult<u64> {
        let seq = read_u64(meta.get(NEXT_SEQ)?.as_deref()).max(1);
        let mut e = event.clone();
        e.seq = seq;
        e.stream_id = self.stream_id.clone();
        queue.insert(&seq.to_be_bytes(), e.encode_to_vec())?;
        meta.insert(NEXT_SEQ, &(seq + 1).to_be_bytes())?;
        Ok(seq)
    }

    fn move_to_queue(&self, inflight_key: &[u8], event: &Event) -> Result<u64, BufferError> {
        let (queue, inflight, meta) = (&self.queue, &self.inflight, &self.meta);
        (queue, inflight, meta)
            .transaction(|(queue, inflight, meta)| -> TxResult<u64> {
                let seq = self.queue_in_tx(queue, meta, event)?;
                inflight.remove(inflight_key)?;
                Ok(seq)
            })
            .map_err(|e| self.tx_err(e))
    }

    /// Moves every in-flight record left by a crash to the queue. Their
    /// outcome stays `unknown` (the proto default): we cannot know whether
    /// the upstream took the mail.
    fn recover_inflight(&self) -> Result<(), BufferError> {
        let mut n = 0;
        for item in self.inflight.iter() {
            let (k, v) = item.map_err(|e| self.sled_err(e))?;
            let event = self.decode(&v, "inflight")?;
            let seq = self.move_to_queue(&k, &event)?;
            tracing::warn!(
                seq,
                "recovered a mail recorded before a crash; its delivery outcome is unknown"
            );
            n += 1;
        }
        if n > 0 {
            self.db.flush().map_err(|e| self.sled_err(e))?;
        }
        Ok(())
    }

    fn decode(&self, bytes: &[u8], key: &str) -> Result<Event, BufferError> {
        Event::decode(bytes).map_err(|e| BufferError::Corrupt {
            path: self.path.clone(),
            key: key.to_owned(),
            message: e.to_string(),
        })
    }

    /// Up to `max_events` queued events after `after_seq`, stopping once
    /// `max_bytes` of encoded events are collected (at least one is returned).
    pub fn read_batch(
        &self,
        after_seq: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Vec<Event>, BufferError> {
        let mut out = Vec::new();
        let mut bytes = 0;
        let durable = self.durable_seq.load(Ordering::SeqCst);
        if after_seq >= durable {
            return Ok(out);
        }
        for item in self
            .queue
            .range((after_seq + 1).to_be_bytes()..=durable.to_be_bytes())
        {
            let (k, v) = item.map_err(|e| self.sled_err(e))?;
            if !out.is_empty() && (out.len() >= max_events || bytes + v.len() > max_bytes) {
                break;
            }
            bytes += v.len();
            out.push(self.decode(&v, &format!("queue/{}", read_u64(Some(&k))))?);
        }
        Ok(out)
    }

    /// A blob still referenced by a queued event: its bytes when stored
    /// inline, else its file, opened, with its size.
    pub async fn blob_file(&self, sha256: &str) -> Result<Option<BlobSource>, BufferError> {
        if !kiroku_common::is_sha256_hex(sha256) {
            return Ok(None);
        }
        if let Some(v) = self
            .smallblobs
            .get(sha256.as_bytes())
            .map_err(|e| self.sled_err(e))?
        {
            return Ok(Some(BlobSource::Bytes(v.to_vec())));
        }
        let path = self.blob_path(sha256);
        let io = |source| BufferError::Io {
            path: path.clone(),
            source,
        };
        match tokio::fs::File::open(&path).await {
            Ok(f) => {
                let size = f.metadata().await.map_err(io)?.len();
                Ok(Some(BlobSource::File(f, size)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    /// The raw bytes of a blob still referenced by a queued event.
    pub fn blob(&self, sha256: &str) -> Result<Option<Vec<u8>>, BufferError> {
        if !kiroku_common::is_sha256_hex(sha256) {
            return Ok(None);
        }
        if let Some(v) = self
            .smallblobs
            .get(sha256.as_bytes())
            .map_err(|e| self.sled_err(e))?
        {
            return Ok(Some(v.to_vec()));
        }
        match std::fs::read(self.blob_path(sha256)) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(BufferError::Io {
                path: self.blob_path(sha256),
                source,
            }),
        }
    }

    /// Drops every queued event up to and including `seq`: the collector has
    /// stored them durably. Blobs no longer referenced go with them.
    pub async fn ack(self: &Arc<Self>, seq: u64) -> Result<usize, BufferError> {
        let this = self.clone();
        let removed = self.blocking(move || this.ack_blocking(seq)).await?;
        if removed > 0 {
            self.flush().await?;
        }
        Ok(removed)
    }

    fn ack_blocking(&self, seq: u64) -> Result<usize, BufferError> {
        let mut removed = 0;
        let keys: Vec<sled::IVec> = self
            .queue
            .range(..=seq.to_be_bytes())
            .keys()
            .collect::<Result<_, _>>()
            .map_err(|e| self.sled_err(e))?;
        for k in keys {
            let Some(v) = self.queue.get(&k).map_err(|e| self.sled_err(e))? else {
                continue;
            };
            let event = self.decode(&v, "queue")?;
            let sha = raw_sha(&event);
            let _guard = self.blob_lock.lock().unwrap_or_else(|p| p.into_inner());
            let unreferenced = (&self.queue, &self.blobrefs, &self.smallblobs)
                .transaction(|(queue, blobrefs, smallblobs)| -> TxResult<bool> {
                    queue.remove(&k)?;
                    let Some(sha) = &sha else { return Ok(false) };
                    let refs = read_u64(blobrefs.get(sha.as_bytes())?.as_deref());
                    if refs <= 1 {
                        blobrefs.remove(sha.as_bytes())?;
                        // Inline content goes with its last reference.
                        return Ok(smallblobs.remove(sha.as_bytes())?.is_none());
                    }
                    blobrefs.insert(sha.as_bytes(), &(refs - 1).to_be_bytes())?;
                    Ok(false)
                })
                .map_err(|e| self.tx_err(e))?;
            // Deleting before the sled flush is safe: the collector has this
            // event (and its blob) durably, so it is never shipped again.
            if let (true, Some(sha)) = (unreferenced, &sha) {
                let path = self.blob_path(sha);
                let len = path.metadata().map(|m| m.len()).unwrap_or(0);
                if std::fs::remove_file(&path).is_ok() {
                    self.blob_bytes.fetch_sub(len, Ordering::Relaxed);
                }
            }
            removed += 1;
        }
        Ok(removed)
    }

    /// Resolves when an event was queued since the last call.
    pub async fn appended(&self) {
        self.appended.notified().await;
    }

    pub fn backlog(&self) -> Backlog {
        Backlog {
            queued: self.queue.len(),
            inflight: self.inflight.len(),
            bytes_on_disk: self.db.size_on_disk().unwrap_or(0)
                + self.blob_bytes.load(Ordering::Relaxed),
        }
    }
}

/// The raw-message blob an event references, if any.
pub fn raw_sha(event: &Event) -> Option<String> {
    match &event.kind {
        Some(kiroku_proto::event::Kind::Email(m)) if !m.raw_sha256.is_empty() => {
            Some(m.raw_sha256.clone())
        }
        _ => None,
    }
}

/// sled could not take its file lock: another process has the database.
fn is_lock_error(e: &BufferError) -> bool {
    matches!(e, BufferError::Sled { source: sled::Error::Io(io), .. }
        if io.to_string().contains("could not acquire lock"))
}

fn read_u64(v: Option<&[u8]>) -> u64 {
    v.and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiroku_proto::{EmailEvent, Outcome, event::Kind};

    fn mail(raw: &[u8]) -> Event {
        Event {
            kind: Some(Kind::Email(EmailEvent {
                raw_sha256: kiroku_common::sha256_hex(raw),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn outcome(e: &Event) -> i32 {
        match &e.kind {
            Some(Kind::Email(m)) => m.outcome,
            _ => -1,
        }
    }

    #[tokio::test]
    async fn append_read_ack_and_blob_refcounts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = Buffer::open(dir.path(), u64::MAX, 1 << 20).expect("open");
        let raw = b"Subject: x\r\n\r\nbody\r\n";
        let s1 = b
            .append(&mail(raw), Some(raw[..].into()))
            .await
            .expect("append");
        let s2 = b
            .append(&mail(raw), Some(raw[..].into()))
            .await
            .expect("append");
        assert_eq!((s1, s2), (1, 2));
        let batch = b.read_batch(0, 10, 1 << 20).expect("read");
        assert_eq!(batch.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(b.read_batch(1, 10, 1 << 20).expect("read").len(), 1);
        let sha = kiroku_common::sha256_hex(raw);
        assert_eq!(b.ack(1).await.expect("ack"), 1);
        assert!(
            b.blob(&sha).expect("blob").is_some(),
            "still referenced by seq 2"
        );
        b.ack(2).await.expect("ack");
        assert!(b.blob(&sha).expect("blob").is_none());
        assert_eq!(b.backlog().queued, 0);
    }

    #[tokio::test]
    async fn inflight_survives_reopen_with_unknown_outcome() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("buf");
        let stream_id;
        {
            let b = Buffer::open(&path, u64::MAX, 1 << 20).expect("open");
            stream_id = b.stream_id().to_owned();
            let done = b
                .begin(&mail(b"a"), Some(b"a"[..].into()))
                .await
                .expect("begin");
            b.begin(&mail(b"b"), Some(b"b"[..].into()))
                .await
                .expect("begin");
            b.finish(done, |e| {
                if let Some(Kind::Email(m)) = &mut e.kind {
                    m.outcome = Outcome::Delivered as i32;
                }
            })
            .await
            .expect("finish");
        }
        let b = Buffer::open(&path, u64::MAX, 1 << 20).expect("reopen");
        assert_eq!(b.stream_id(), stream_id, "stream id is stable");
        let batch = b.read_batch(0, 10, 1 << 20).expect("read");
        assert_eq!(batch.len(), 2);
        assert_eq!(outcome(&batch[0]), Outcome::Delivered as i32);
        assert_eq!(outcome(&batch[1]), Outcome::Unknown as i32);
        assert_eq!(b.backlog().inflight, 0);
    }

    #[tokio::test]
    async fn small_messages_are_stored_inline_large_ones_as_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = Buffer::open(&dir.path().join("buf"), u64::MAX, 1 << 20).expect("open");
        let files = || {
            std::fs::read_dir(dir.path().join("buf").join("blobs"))
                .expect("blobs dir")
                .count()
        };
        let small = vec![b'a'; INLINE_MAX];
        let large = vec![b'b'; INLINE_MAX + 1];
        let mut shas = Vec::new();
        for raw in [&small, &large, &small] {
            let mut sp = b.spool().await.expect("spool");
            for chunk in raw.chunks(1000) {
                sp.write(chunk).await.expect("write");
            }
            let sp = sp.finish().await.expect("finish");
            assert_eq!(sp.sha256, kiroku_common::sha256_hex(raw));
            assert_eq!(sp.bytes().is_some(), raw.len() <= INLINE_MAX);
            shas.push(sp.sha256.clone());
            b.append(&mail(raw), Some(Blob::Spooled(sp)))
                .await
                .expect("append");
        }
        assert_eq!(files(), 1, "only the large message has a file");
        assert_eq!(b.blob(&shas[0]).expect("blob"), Some(small.clone()));
        assert_eq!(b.blob(&shas[1]).expect("blob"), Some(large.clone()));
        assert!(matches!(
            b.blob_file(&shas[0]).await.expect("source"),
            Some(BlobSource::Bytes(v)) if v == small
        ));
        // The first small event goes; its content stays for the third.
        b.ack(1).await.expect("ack");
        assert_eq!(b.blob(&shas[0]).expect("blob"), Some(small.clone()));
        b.ack(3).await.expect("ack");
        assert_eq!(b.blob(&shas[0]).expect("blob"), None);
        assert_eq!(b.blob(&shas[1]).expect("blob"), None);
        assert_eq!(files(), 0);
    }

    #[tokio::test]
    async fn a_buffer_made_with_the_old_segment_size_still_opens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("buf");
        let old_default = 512 * 1024;
        {
            let db = sled::Config::new()
                .path(path.join("sled"))
                .segment_size(old_default)
                .open()
                .expect("old db");
            db.insert(STREAM_ID, &b"0123456789abcdef"[..])
                .expect("insert");
            db.open_tree("meta")
                .expect("meta")
                .insert(STREAM_ID, &b"0123456789abcdef"[..])
                .expect("insert");
            db.flush().expect("flush");
        }
        let b = Buffer::open(&path, u64::MAX, 1 << 20).expect("opens with its own segment size");
        assert_eq!(
            b.stream_id(),
            "0123456789abcdef",
            "the same buffer, not a new one"
        );
        assert_eq!(
            created_with_segment_size(
                "cannot change the io buffer size across restarts. please change it back to 524288"
            ),
            Some(524288)
        );
    }

    #[tokio::test]
    async fn damage_that_sled_silently_cuts_is_detected_and_numbers_are_not_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("buf");
        let last = {
            let b = Buffer::open(&path, u64::MAX, 1 << 20).expect("open");
            let mut last = 0;
            for i in 0..300 {
                let e = Event {
                    event_id: format!("e{i}"),
                    user: "x".repeat(200),
                    ..Default::default()
                };
                last = b.append(&e, None).await.expect("append");
            }
            assert!(b.damage().is_none());
            last
        };
        // Flip bytes in the middle of sled's log, as a bad disk would.
        let db = path.join("sled").join("db");
        let mut bytes = std::fs::read(&db).expect("read");
        let mid = bytes.len() / 2;
        for b in &mut bytes[mid..mid + 16] {
            *b ^= 0x55;
        }
        std::fs::write(&db, &bytes).expect("write");
        let b = Buffer::open(&path, u64::MAX, 1 << 20).expect("reopen");
        let read = b.read_batch(0, 10_000, usize::MAX).expect("read");
        assert!(
            read.len() < 300,
            "sled cut its log at the damage ({} left)",
            read.len()
        );
        let damage = b.damage().expect("the loss is detected").to_owned();
        assert!(damage.contains(&format!("..={last}")), "{damage}");
        let next = b
            .append(&Event::default(), None)
            .await
            .expect("append after damage");
        // (An in-flight record the cut log brought back may take `last + 1`.)
        assert!(
            next > last,
            "sequence numbers are not reused: {next} after {damage}"
        );
        drop(b);
        let b = Buffer::open(&path, u64::MAX, 1 << 20).expect("reopen again");
        assert!(b.damage().is_none(), "reported once");
    }

    #[tokio::test]
    async fn a_buffer_in_use_is_refused_not_moved_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("buf");
        let first = Buffer::open(&path, u64::MAX, 1 << 20).expect("open");
        let id = first.stream_id().to_owned();
        // sled's lock is per process (flock on an fd): take it from a child.
        let mut child = std::process::Command::new("flock")
            .args(["-x", "-o"])
            .arg(path.join("sled").join("db"))
            .args(["sleep", "30"])
            .spawn()
            .expect("flock");
        drop(first);
        std::thread::sleep(std::time::Duration::from_millis(300));
        let err = Buffer::open(&path, u64::MAX, 1 << 20).err();
        let _ = child.kill();
        let _ = child.wait();
        let err = err.expect("a locked buffer must not open").to_string();
        assert!(err.contains("in use by another process"), "{err}");
        assert!(
            !std::fs::read_dir(dir.path().join("buf"))
                .expect("dir")
                .flatten()
                .any(|e| e.file_name().to_string_lossy().contains("broken")),
            "moved aside"
        );
        let again = Buffer::open(&path, u64::MAX, 1 << 20).expect("reopen once free");
        assert_eq!(again.stream_id(), id);
    }

    #[tokio::test]
    async fn shipper_never_sees_events_that_are_not_yet_durable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = Buffer::open(dir.path(), u64::MAX, 1 << 20).expect("open");
        // Queued in memory, not yet flushed (what finish() does before its
        // flush returns).
        let seq = b.move_to_queue(b"none", &mail(b"early")).expect("queue");
        assert!(b.read_batch(0, 10, 1 << 20).expect("read").is_empty());
        let seq2 = b.append(&mail(b"later"), None).await.expect("append");
        let got: Vec<u64> = b
            .read_batch(0, 10, 1 << 20)
            .expect("read")
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(got, vec![seq, seq2], "one flush makes both durable");
    }

    #[tokio::test]
    async fn orphan_blob_files_are_collected_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let b = Buffer::open(dir.path(), u64::MAX, 1 << 20).expect("open");
            b.append(&mail(b"kept"), Some(b"kept"[..].into()))
                .await
                .expect("append");
        }
        let orphan = dir
            .path()
            .join("blobs")
            .join(kiroku_common::sha256_hex(b"orphan"));
        std::fs::write(&orphan, b"orphan").expect("write");
        std::fs::write(dir.path().join("blobs/x.tmp"), b"partial").expect("write");
        let b = Buffer::open(dir.path(), u64::MAX, 1 << 20).expect("reopen");
        assert!(!orphan.exists());
        assert!(!dir.path().join("blobs/x.tmp").exists());
        let kept = kiroku_common::sha256_hex(b"kept");
        assert_eq!(b.blob(&kept).expect("blob").as_deref(), Some(&b"kept"[..]));
        assert!(b.backlog().bytes_on_disk >= 4);
    }

    #[tokio::test]
    async fn full_buffer_refuses_new_events() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = Buffer::open(dir.path(), 1, 1 << 20).expect("open");
        let err = b
            .append(&mail(b"x"), Some(b"x"[..].into()))
            .await
            .expect_err("full");
        assert!(matches!(err, BufferError::Full { .. }), "{err}");
    }
}
