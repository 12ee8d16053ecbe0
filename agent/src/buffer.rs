//! The agent's durable buffer: what capture sources recorded, kept on the
//! agent's disk until the collector has acknowledged it.
//!
//! # Interface (modelled on Vector's `disk_v2` buffer)
//! - the **writer** (`buffer/writer.rs`), for capture sources: spool a
//!   message as it arrives ([`Buffer::spool`]), record an event before its
//!   outcome is known ([`Buffer::begin`], then [`Buffer::settle`] /
//!   [`Buffer::make_durable`] or [`Buffer::finish`]), record one whose
//!   outcome is known ([`Buffer::append`]), record one together with a
//!   change to a source's keyed state ([`Buffer::append_with`]), and keep
//!   small notes of what could not be recorded ([`Buffer::note`],
//!   [`Buffer::take_note`]);
//! - the **reader** (`buffer/reader.rs`), for the shipper: batches of
//!   durable events after a sequence number, byte for byte as queued
//!   ([`Buffer::read_recorded`]), the
//!   raw content they reference ([`Buffer::blob_file`]);
//! - the **ledger** (`buffer/ledger.rs`): the acknowledged position
//!   ([`Buffer::ack`]), the durable position, and the bytes the buffer
//!   holds, which is what `buffer.max_bytes` bounds;
//! - **keyed state** (`buffer/keyed.rs`): a capture source's own small
//!   key → value memory (file capture's last known state of each file),
//!   written in the same transaction as a record when they must agree;
//! - the **chain** (`buffer/chain.rs`): the stream hash chain every queued
//!   event carries (`Event.prev_hash`), its head for `Status`
//!   ([`Buffer::chain_head`]), and the collector's signed checkpoints the
//!   agent keeps ([`Buffer::keep_checkpoint`]).
//!
//! Behind them: `buffer/store.rs` (one sled generation: opening it, damage
//! versus an I/O error, a fresh generation), `buffer/blobs.rs` (spools and
//! blob files) and `buffer/upkeep.rs` (the maintenance thread: reopen
//! after a write error, a fresh generation once drained). No sled type is
//! visible outside this module.
//!
//! # Layout under the agent's data directory (an on-disk boundary)
//! - `sled/` (generation 0) or `sled-<n>/`, the current generation named by
//!   the file `generation` (`KIROKU-GEN1 <n>`; absent: 0, the layout of
//!   versions before generations, which opens unchanged). A sled database
//!   with trees
//!   - `queue`:    seq (u64 BE) → prost-encoded `Event`, ready to ship
//!     byte for byte as stored (the stream chain hashes these bytes);
//!   - `inflight`: id (u64 BE) → `Event` recorded before the upstream answered;
//!   - `blobrefs`: sha256 hex → number of queued/in-flight events using it;
//!   - `smallblobs`: sha256 hex → raw messages up to [`INLINE_MAX`] bytes,
//!     written in the same transaction (and the same fsync) as their event;
//!   - `meta`:     `stream_id`, `next_seq`, `chain_head` (the newest
//!     queued event: seq u64 BE + SHA-256 of its queued bytes, 40 bytes),
//!     `chain_restart` (why the next event starts the chain again, until
//!     one takes it), and `note/<name>` notes of what could not be
//!     recorded (pending gap records, see `gaps.rs`);
//!   - `checkpoints`: checkpoint number (u64 BE) → the collector's encoded
//!     `SignedCheckpoint` (`Ack.checkpoint`), the newest
//!     [`CHECKPOINTS_KEPT`];
//!   - any other tree: a capture source's keyed state (`file_state`,
//!     `file_state_roots`, `file_hashes`, `file_hash_age`).
//! - `sequence`: the highest durable sequence number, written once a second
//!   outside sled, so a damaged sled log (which sled silently cuts at the
//!   damage) is noticed and numbers are never reused;
//! - `blobs/<sha256>`: larger raw messages, content-addressed plain files
//!   (fsynced before the event that references them is recorded), and
//!   `blobs/*.spool` while a message arrives. Keeping them out of sled
//!   halves sled's memory under a backlog (measured with
//!   `examples/buffer_rss.rs`) and lets large messages bypass it; small
//!   ones inline save a file create, an fsync and a directory fsync per mail;
//! - `sled.broken-<unix time>`: a generation sled itself declared damaged
//!   (a checksum or format error), moved aside at open.
//!
//! # Invariants
//! - Nothing is removed from `queue` except by [`Buffer::ack`] with a
//!   sequence number the collector acknowledged, and every write the SMTP
//!   relay relies on is flushed (fsync) before the call returns — except
//!   [`Buffer::settle`], whose flush the caller runs with
//!   [`Buffer::make_durable`]. The shipper never sees an event before it is
//!   durable. On open, left-over in-flight records (a crash between
//!   "recorded" and "upstream answered") move to the queue with outcome
//!   `unknown`: a crash never leaves no record.
//! - The bound (`buffer.max_bytes`) is on what the buffer logically holds —
//!   the encoded queued and in-flight events plus the raw content they
//!   reference, counted by the ledger and recounted at open — never on
//!   sled's file sizes, which do not shrink: it clears as soon as the
//!   collector acknowledges. New records are also refused while the file
//!   system has less than `buffer.min_free_bytes` free (statvfs), so sled
//!   never has to write into a full disk.
//! - An I/O error (no space, quota, EIO, permission) is never taken for
//!   damage: nothing is moved aside or deleted for it. sled refuses every
//!   write after one (it poisons its handle); the buffer then refuses new
//!   records ([`BufferError::Unavailable`], the relay answers 451), says so
//!   in [`Buffer::problem`] (reported to the collector in `Status`), and
//!   reopens the same database by itself once the file system has room
//!   again, keeping running. Only a database sled declares damaged is moved
//!   aside (`sled.broken-*`), reported in the next start record, and no
//!   blob is deleted while a moved-aside buffer exists.
//! - sled never gives disk space back: when the queue and in-flight trees
//!   are empty and sled has grown well past its live data (or the disk is
//!   short of space), everything it still holds (bookkeeping, notes, keyed
//!   state) is copied to a fresh generation, which becomes current with
//!   one atomic rename of `generation`, and the old directory is removed.
//!   Stream id, sequence numbers and the chain head carry over (they are
//!   in `meta`): to the collector it is the same stream, its chain unbroken.
//! - The stream hash chain: the one place a sequence number is assigned
//!   (`queue_in_tx`, inside the queueing sled transaction) also sets the
//!   event's `prev_hash` to the SHA-256 of the previous queued event's
//!   bytes and moves `chain_head` to this one, so the queued bytes are
//!   final once durable and never edited after: the shipper sends them as
//!   they are (`Batch.recorded`), and a note about them (a raw message the
//!   agent lost) travels beside them. Every path (append, finish, notes,
//!   keyed-state records, in-flight recovery after a crash) goes through
//!   it; concurrent writers are ordered by sled's transactions, as their
//!   sequence numbers are. The chain starts again, with `prev_hash` empty
//!   and `chain_restart` saying why, only after the buffer lost events: a
//!   damaged database moved aside (the new database is a new stream; the
//!   reason names the old one), a stale generation kept aside unshipped,
//!   or sled's log cut short at a damaged spot (`sequence` check). The
//!   reason waits in `meta` until the next event takes it, so a restart in
//!   between keeps it. `Status` reports the head of the newest durable
//!   event; the collector checks each event it later receives against it.

mod blobs;
mod chain;
mod keyed;
mod ledger;
mod reader;
mod store;
#[cfg(feature = "test-hooks")]
mod tamper;
#[cfg(test)]
mod tests;
mod upkeep;
mod writer;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use kiroku_proto::Event;
use prost::Message;
use tokio::sync::Notify;

pub use blobs::{Blob, BlobSource, INLINE_MAX, Spool, Spooled};
pub use chain::{CHECKPOINTS_KEPT, ChainHead};
pub use keyed::{KeyedState, StateTx, TxError, TxResult};
pub use ledger::Backlog;
pub use reader::Recorded;
pub use writer::{Durability, InflightId, Settled};

use ledger::Ledger;
use store::Store;

#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error(
        "agent buffer is full ({used} of {max} bytes held); new events are refused until the collector catches up (raise buffer.max_bytes or check the collector connection)"
    )]
    Full { used: u64, max: u64 },
    #[error(
        "agent disk is full: {free} bytes free on the file system of {path}, less than buffer.min_free_bytes ({reserve}); new mail is refused with 451 until space is freed there (nothing buffered is lost)"
    )]
    DiskFull {
        path: PathBuf,
        free: u64,
        reserve: u64,
    },
    #[error(
        "agent buffer {path} cannot be written ({why}); new mail is refused with 451 until it can — free space or fix the disk under it, the agent reopens the buffer by itself (nothing buffered is lost)"
    )]
    Unavailable { path: PathBuf, why: String },
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

impl BufferError {
    /// Whether the buffer refused for want of space or a writable disk
    /// (the relay answers 451 "agent disk full / buffer unwritable") rather
    /// than for its own bound ([`BufferError::Full`]) or a bug.
    pub fn unwritable(&self) -> bool {
        match self {
            BufferError::DiskFull { .. } | BufferError::Unavailable { .. } => true,
            BufferError::Io { source, .. } => store::is_resource(source),
            BufferError::Sled {
                source: sled::Error::Io(io),
                ..
            } => store::is_resource(io),
            _ => false,
        }
    }

    /// Whether a new record was refused for space (the bound or the disk):
    /// a capture source that cannot refuse counts it as a gap.
    pub fn refused_for_space(&self) -> bool {
        matches!(self, BufferError::Full { .. }) || self.unwritable()
    }
}

/// Bounds of the buffer (`[buffer]` in the agent configuration).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// What the buffer may hold, in bytes (`buffer.max_bytes`).
    pub max_bytes: u64,
    /// Free space kept on the file system (`buffer.min_free_bytes`).
    pub min_free_bytes: u64,
    /// sled's page cache (`buffer.cache_bytes`).
    pub cache_bytes: u64,
}

/// The database, when the buffer could open it.
enum Slot {
    Open(Store),
    /// Not open (yet, or again): why, for errors and the status.
    Closed(String),
}

pub struct Buffer {
    /// The data directory.
    dir: PathBuf,
    blob_dir: PathBuf,
    limits: Limits,
    /// The current generation. Every operation holds the read lock while
    /// it touches sled, so a reopen or a generation switch (write lock)
    /// never races a write into the database being replaced.
    slot: Arc<RwLock<Slot>>,
    /// Bumped when a failed database is reopened: a write made before
    /// that may be lost, so a flush that spans it reports an error.
    reopens: AtomicU64,
    /// The stream this buffer ships as: from its database, or before that
    /// could be opened from the `sequence` side file (so the shipper can
    /// connect and report why the buffer is closed). Empty when neither
    /// is known yet.
    stream_id: RwLock<String>,
    /// Whether `stream_id` came from an opened database (then every later
    /// generation or reopen must carry the same).
    stream_confirmed: AtomicBool,
    ledger: Ledger,
    /// Serialises "ensure file + reference" against "unreference + delete
    /// file" for the same content.
    blob_lock: Mutex<()>,
    /// Raw messages up to this size are stored inline ([`INLINE_MAX`]).
    inline_max: AtomicU64,
    appended: Notify,
    /// Group commit: writers take a ticket after their write; one flush
    /// covers every ticket taken before it started.
    flush_tickets: AtomicU64,
    flushed_upto: AtomicU64,
    flush_lock: tokio::sync::Mutex<()>,
    flush_done: Notify,
    /// A blob file was renamed into place since the last flush: the blob
    /// directory needs an fsync too.
    blob_dir_dirty: AtomicBool,
    /// Damage found at open (what was lost or moved aside), for the agent
    /// to report in its start record.
    damage: Mutex<Option<String>>,
    /// The I/O error that made sled refuse writes (it poisons its handle),
    /// until the database is reopened.
    failed: Mutex<Option<String>>,
    /// In-flight records whose session will still settle them: a reopen
    /// recovers only the others (their session gave up).
    live_inflight: Mutex<HashSet<u64>>,
    /// When maintenance last tried a reopen or a new generation.
    last_attempt: Mutex<Option<std::time::Instant>>,
    /// Set when reopening found the database damaged: only a restart (which
    /// moves it aside) lets the agent record again.
    needs_restart: Mutex<Option<String>>,
    /// Why the stream's hash chain must start again (events were lost or
    /// set aside), until the database being made current records it in
    /// its `meta` for the next event (see `buffer/chain.rs`).
    chain_break: Mutex<Option<String>>,
}

const NEXT_SEQ: &[u8] = b"next_seq";
const STREAM_ID: &[u8] = b"stream_id";

/// How often the maintenance thread runs (sequence file, reopen, new
/// generation).
const MAINTAIN_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

impl Drop for Buffer {
    fn drop(&mut self) {
        self.persist_seq();
    }
}

impl Buffer {
    /// Opens (or creates) the buffer in `dir` with no free-space reserve
    /// (tests, examples).
    pub fn open(dir: &Path, max_bytes: u64, cache_bytes: u64) -> Result<Arc<Buffer>, BufferError> {
        Self::open_with(
            dir,
            Limits {
                max_bytes,
                min_free_bytes: 0,
                cache_bytes,
            },
        )
    }

    /// Opens (or creates) the buffer in `dir`. A database sled declares
    /// damaged is moved aside (`sled.broken-<unix time>`) and a fresh one
    /// created, so the agent keeps recording. A database that cannot be
    /// opened for an I/O reason (a full disk) is kept as it is: the buffer
    /// starts closed, refuses records, and opens it as soon as it can.
    /// Errors: another process holds the buffer, or the directory itself
    /// is unusable.
    pub fn open_with(dir: &Path, limits: Limits) -> Result<Arc<Buffer>, BufferError> {
        let blob_dir = dir.join("blobs");
        std::fs::create_dir_all(&blob_dir).map_err(|source| BufferError::Io {
            path: blob_dir.clone(),
            source,
        })?;
        let generation = store::current_generation(dir)?;
        let unshipped = store::settle_stale_generations(dir, generation);
        let buffer = Buffer {
            dir: dir.to_owned(),
            blob_dir,
            limits,
            slot: Arc::new(RwLock::new(Slot::Closed("not opened yet".into()))),
            reopens: AtomicU64::new(0),
            stream_id: RwLock::new(String::new()),
            stream_confirmed: AtomicBool::new(false),
            ledger: Ledger::new(dir.join("sequence")),
            blob_lock: Mutex::new(()),
            inline_max: AtomicU64::new(INLINE_MAX as u64),
            appended: Notify::new(),
            flush_tickets: AtomicU64::new(0),
            flushed_upto: AtomicU64::new(0),
            flush_lock: tokio::sync::Mutex::new(()),
            flush_done: Notify::new(),
            blob_dir_dirty: AtomicBool::new(false),
            damage: Mutex::new((!unshipped.is_empty()).then(|| unshipped.join("; "))),
            failed: Mutex::new(None),
            live_inflight: Mutex::new(HashSet::new()),
            last_attempt: Mutex::new(None),
            needs_restart: Mutex::new(None),
            chain_break: Mutex::new(None),
        };
        if !unshipped.is_empty() {
            buffer.break_chain(format!(
                "events of the agent's buffer were set aside unshipped: {}",
                unshipped.join("; ")
            ));
        }
        let path = store::generation_dir(dir, generation);
        let opened = match Store::open(dir, generation, limits.cache_bytes) {
            Err(e) if store::is_lock_error(&e) => {
                // Never move aside a buffer another process is using.
                return Err(BufferError::Io {
                    path,
                    source: std::io::Error::other(
                        "the buffer is in use by another process: is another kiroku-agent running with the same data_dir? Stop it or give this one its own data_dir",
                    ),
                });
            }
            Err(e) if store::is_damage(&e) => buffer.move_aside(generation, &e)?,
            other => other,
        };
        match opened {
            Ok(store) => buffer.activate(store, true)?,
            Err(e) => buffer.fail_closed(format!("cannot open {}: {e}", path.display())),
        }
        if !buffer.is_open()
            && let Some(stream) = buffer.ledger.side_file_stream()
        {
            *buffer.stream_id.write().unwrap_or_else(|p| p.into_inner()) = stream;
        }
        let buffer = Arc::new(buffer);
        let weak = Arc::downgrade(&buffer);
        // The side file follows the durable sequence number, a failed
        // database is reopened and a drained one replaced, for as long as
        // the buffer is open.
        let _ = std::thread::Builder::new()
            .name("kiroku-buffer".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(MAINTAIN_EVERY);
                    let Some(b) = weak.upgrade() else { break };
                    b.maintain();
                }
            });
        Ok(buffer)
    }

    /// Moves a database sled declared damaged aside and opens a fresh one
    /// in its place. The blobs its events reference stay (see
    /// `collect_orphan_blobs`), and the start record says what happened.
    fn move_aside(
        &self,
        generation: u64,
        e: &sled::Error,
    ) -> Result<Result<Store, sled::Error>, BufferError> {
        let path = store::generation_dir(&self.dir, generation);
        let aside = PathBuf::from(format!(
            "{}.broken-{}",
            path.display(),
            kiroku_common::now_ms() / 1000
        ));
        let msg = format!(
            "agent buffer {} is damaged ({e}); moved aside to {} with the raw messages its events reference kept in {}; events in it that the collector had not acknowledged are not shipped. Inspect it, then delete it",
            path.display(),
            aside.display(),
            self.blob_dir.display()
        );
        tracing::error!("{msg}");
        std::fs::rename(&path, &aside).map_err(|source| BufferError::Io {
            path: path.clone(),
            source,
        })?;
        let ended = match self.ledger.side_file_stream() {
            Some(stream) => format!("stream {stream} ended there and "),
            None => String::new(),
        };
        self.break_chain(format!(
            "the agent's buffer was declared damaged and moved aside: {ended}its events not yet acknowledged by the collector are lost ({msg})"
        ));
        let mut damage = self.damage.lock().unwrap_or_else(|p| p.into_inner());
        *damage = Some(match damage.take() {
            Some(earlier) => format!("{earlier}; {msg}"),
            None => msg,
        });
        drop(damage);
        Ok(Store::open(&self.dir, generation, self.limits.cache_bytes))
    }

    /// Makes an opened database current: its stream id, the sequence check,
    /// in-flight records nobody will settle, the ledger's counts, and (at
    /// the process's start) orphan blobs. An I/O error leaves the buffer
    /// closed (and the database as it is), to be retried.
    fn activate(&self, store: Store, at_start: bool) -> Result<(), BufferError> {
        match self.prepare(&store, at_start) {
            Ok(()) => {
                *self.slot.write().unwrap_or_else(|p| p.into_inner()) = Slot::Open(store);
                *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = None;
                Ok(())
            }
            Err(e) if e.unwritable() => {
                self.fail_closed(format!("cannot open {}: {e}", store.path.display()));
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn prepare(&self, store: &Store, at_start: bool) -> Result<(), BufferError> {
        let err = |source| BufferError::Sled {
            path: store.path.clone(),
            source,
        };
        let stream_id = match store.meta.get(STREAM_ID).map_err(err)? {
            Some(v) => String::from_utf8_lossy(&v).into_owned(),
            None => {
                // A new buffer incarnation: the collector de-duplicates per
                // (agent, stream), so a wiped buffer never collides with the
                // sequence numbers of its predecessor.
                let id = format!("{:016x}", rand::random::<u64>());
                store.meta.insert(STREAM_ID, id.as_bytes()).map_err(err)?;
                store.db.flush().map_err(err)?;
                id
            }
        };
        let known = self.stream_id();
        if self.stream_confirmed.load(Ordering::SeqCst) && known != stream_id {
            return Err(BufferError::Corrupt {
                path: store.path.clone(),
                key: "meta/stream_id".into(),
                message: format!("reopened with stream {stream_id}, was {known}"),
            });
        }
        *self.stream_id.write().unwrap_or_else(|p| p.into_inner()) = stream_id.clone();
        self.stream_confirmed.store(true, Ordering::SeqCst);
        if let Some(d) = self.ledger.check_sequence(store, &stream_id)? {
            self.break_chain(d.clone());
            *self.damage.lock().unwrap_or_else(|p| p.into_inner()) = Some(d);
        }
        let pending = self
            .chain_break
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(why) = pending {
            self.restart_chain(store, &why)?;
            *self.chain_break.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        self.recover_inflight(store)?;
        if at_start {
            self.collect_orphan_blobs(&store.blobrefs)?;
        }
        self.ledger.recount(store, &self.blob_dir)?;
        Ok(())
    }

    /// Notes that the stream's hash chain must start again, and why (several
    /// reasons at one open are joined).
    fn break_chain(&self, why: String) {
        let mut pending = self.chain_break.lock().unwrap_or_else(|p| p.into_inner());
        *pending = Some(match pending.take() {
            Some(earlier) => format!("{earlier}; {why}"),
            None => why,
        });
    }

    /// The buffer is closed (not open, or sled refused a write): records
    /// are refused until it reopens.
    fn fail_closed(&self, why: String) {
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        // Said once per cause, not at every retry.
        if failed.as_deref() != Some(why.as_str()) {
            tracing::error!(
                buffer = %self.dir.display(), error = %why,
                "the agent buffer cannot be written: new mail is refused with 451 and file events are counted as gaps until it can. Nothing buffered is deleted or moved; the agent reopens the buffer by itself once the disk takes writes (free space on it)"
            );
        }
        *failed = Some(why.clone());
        drop(failed);
        let mut slot = self.slot.write().unwrap_or_else(|p| p.into_inner());
        if matches!(*slot, Slot::Closed(_)) {
            *slot = Slot::Closed(why);
        }
    }

    /// Runs `f` on the current generation under the read lock, or refuses
    /// with [`BufferError::Unavailable`] while the buffer is closed.
    fn with_store<T>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, BufferError>,
    ) -> Result<T, BufferError> {
        let slot = self.slot.read().unwrap_or_else(|p| p.into_inner());
        match &*slot {
            Slot::Open(store) => f(store),
            Slot::Closed(why) => Err(BufferError::Unavailable {
                path: self.dir.clone(),
                why: why.clone(),
            }),
        }
    }

    /// Damage found when the buffer was opened: which sequence numbers were
    /// lost, or what was moved aside. `None` for a sound buffer.
    pub fn damage(&self) -> Option<String> {
        self.damage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The buffer's (data) directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The I/O error that closed the buffer, while it is closed.
    pub fn failed(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Why only a restart of the process lets the buffer record again (a
    /// reopen found the database damaged); `None` otherwise — every I/O
    /// error is recovered in-process.
    pub fn needs_restart(&self) -> Option<String> {
        self.needs_restart
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// What keeps the buffer from taking new records right now, in a
    /// sentence for logs and the collector (`Status`); `None` when it takes
    /// them.
    pub fn problem(&self) -> Option<String> {
        if let Some(why) = self.failed() {
            return Some(format!(
                "buffer unwritable ({why}): mail refused with 451 until it can be written"
            ));
        }
        match self.check_space() {
            Ok(()) => None,
            Err(e) => Some(e.to_string()),
        }
    }

    /// Changes the inline threshold (benchmarks compare the two paths).
    pub fn set_inline_max(&self, bytes: usize) {
        self.inline_max.store(bytes as u64, Ordering::Relaxed);
    }

    /// Identifies this buffer incarnation towards the collector; empty
    /// while unknown (a new buffer whose database could not be created).
    pub fn stream_id(&self) -> String {
        self.stream_id
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Resolves once the buffer has a stream id to ship as.
    pub async fn stream_known(&self) {
        while self.stream_id().is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// Whether the database is open (it may still refuse writes, see
    /// [`Buffer::problem`]).
    pub fn is_open(&self) -> bool {
        matches!(
            *self.slot.read().unwrap_or_else(|p| p.into_inner()),
            Slot::Open(_)
        )
    }

    /// Resolves once the database has been opened.
    pub async fn opened(&self) {
        while !self.is_open() {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// Converts a sled error; an I/O error closes the buffer until it is
    /// reopened (sled refuses every later write on that handle anyway).
    fn sled_err(&self, source: sled::Error) -> BufferError {
        if let sled::Error::Io(io) = &source {
            let mut f = self.failed.lock().unwrap_or_else(|p| p.into_inner());
            if f.is_none() {
                tracing::error!(
                    buffer = %self.dir.display(), error = %io,
                    "the agent buffer could not write: new mail is refused with 451 until the disk takes writes again; the buffer is reopened by itself then (nothing buffered is deleted or moved)"
                );
                *f = Some(io.to_string());
            }
        }
        BufferError::Sled {
            path: self.dir.clone(),
            source,
        }
    }

    /// Refuses a write while sled is known to refuse it.
    fn writable(&self) -> Result<(), BufferError> {
        match self.failed() {
            Some(why) => Err(BufferError::Unavailable {
                path: self.dir.clone(),
                why,
            }),
            None => Ok(()),
        }
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
                path: self.dir.clone(),
                message: e.to_string(),
            })?
    }

    fn decode(&self, bytes: &[u8], key: &str) -> Result<Event, BufferError> {
        Event::decode(bytes).map_err(|e| BufferError::Corrupt {
            path: self.dir.clone(),
            key: key.to_owned(),
            message: e.to_string(),
        })
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

fn read_u64(v: Option<&[u8]>) -> u64 {
    v.and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}
