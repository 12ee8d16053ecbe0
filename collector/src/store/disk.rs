//! Keeps the collector's disk from filling, and keeps the audit log
//! writable when it fills anyway.
//!
//! [`DiskGuard`] is the free-space reserve (`min_free_bytes`): while the
//! fullest file system of the data directory has less than that available,
//! everything that grows the store waits — ingest (batches refused, never
//! acknowledged; agents keep buffering and resend), blob uploads (refused
//! as `Unavailable`; the agent keeps the blob and uploads it again) and
//! index merges (none are started; they resume with the next commit once
//! space is back). Blob uploads in progress hold a [`Reservation`] of their
//! size, so concurrent uploads cannot together run past the reserve.
//!
//! [`AuditReserve`] is a small file (`audit.reserve`) of allocated space
//! that only the audit log uses: when the disk has nearly nothing left
//! (another process filled it, or a volume smaller than the reserve), a
//! piece of it is given back before each audit entry, so investigators
//! can still query — reading is all that is left to do — and every query
//! is still recorded. It is filled up again once space returns.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Subdirectories of the data directory that the guard watches besides it.
const STORE_PARTS: [&str; 4] = ["meta", "index", "journal", "blobs"];

pub struct DiskGuard {
    dir: PathBuf,
    min_free: AtomicU64,
    /// Bytes promised to blob uploads in progress.
    reserved: Arc<AtomicU64>,
    state: Mutex<GuardState>,
}

#[derive(Default)]
struct GuardState {
    paused: Option<String>,
    logged: Option<Instant>,
}

/// Space promised to one blob upload; given back when dropped.
pub struct Reservation {
    bytes: u64,
    reserved: Arc<AtomicU64>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.reserved.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

impl DiskGuard {
    pub(super) fn new(dir: &Path) -> DiskGuard {
        DiskGuard {
            dir: dir.to_owned(),
            min_free: AtomicU64::new(0),
            reserved: Arc::default(),
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

    /// Bytes that may still be written before the reserve is reached (what
    /// uploads in progress will write counted as written); `None` when the
    /// file system cannot tell.
    pub fn headroom(&self) -> Option<u64> {
        let (avail, _) = self.fullest().ok()?;
        Some(
            avail
                .saturating_sub(self.min_free.load(Ordering::Relaxed))
                .saturating_sub(self.reserved.load(Ordering::SeqCst)),
        )
    }

    /// Bytes a purge's scratch (a journal segment written again before it
    /// replaces the old one) may still write: down to half the reserve,
    /// which ingest may not touch, so retention frees space exactly when
    /// ingest is paused for it. `None` when the file system cannot tell.
    pub fn scratch_room(&self) -> Option<u64> {
        let (avail, _) = self.fullest().ok()?;
        Some(
            avail
                .saturating_sub(self.min_free.load(Ordering::Relaxed) / 2)
                .saturating_sub(self.reserved.load(Ordering::SeqCst)),
        )
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
        self.admit(need, false).map(drop)
    }

    /// Like [`DiskGuard::check`], and the `need` bytes stay promised (to a
    /// blob upload) until the returned reservation is dropped.
    pub fn reserve(&self, need: u64) -> Result<Reservation, String> {
        self.admit(need, true)
            .map(|r| r.unwrap_or_else(|| self.promise(0)))
    }

    fn promise(&self, bytes: u64) -> Reservation {
        self.reserved.fetch_add(bytes, Ordering::SeqCst);
        Reservation {
            bytes,
            reserved: self.reserved.clone(),
        }
    }

    fn admit(&self, need: u64, keep: bool) -> Result<Option<Reservation>, String> {
        let min_free = self.min_free.load(Ordering::Relaxed);
        let (avail, fullest) = match self.fullest() {
            Ok(a) => a,
            // Cannot tell: let the write itself fail if it must.
            Err(_) => return Ok(keep.then(|| self.promise(need))),
        };
        // Under the lock, so that two uploads cannot both take the last room.
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let promised = self.reserved.load(Ordering::SeqCst);
        if avail >= min_free.saturating_add(promised).saturating_add(need) {
            if st.paused.take().is_some() {
                tracing::info!(data_dir = %self.dir.display(), available_mb = avail / 1_000_000, "disk space is back: ingest resumed");
            }
            return Ok(keep.then(|| self.promise(need)));
        }
        let why = if avail >= min_free {
            format!(
                "{} kB free, not enough for {} kB more (and {} kB of uploads in progress) above the reserve of {} MB (min_free_bytes)",
                avail / 1000,
                need.div_ceil(1000),
                promised.div_ceil(1000),
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
            "collector ingest paused: {} has {why}; agents keep buffering and resend (events and blobs). Free disk space there (or lower min_free_bytes) and ingest resumes by itself",
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
        // Only a shortage of the reserve itself pauses ingest; a blob too
        // large for what is left above it is refused on its own.
        if avail < min_free.saturating_add(promised) || need == 0 {
            st.paused = Some(msg.clone());
        }
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

/// Size of the audit log's own reserve.
const AUDIT_RESERVE: u64 = 16 << 20;
/// Given back from the reserve at a time, when less than
/// [`AUDIT_LOW_WATER`] is free: room for thousands of audit entries and
/// the metadata writes that follow them (the low-water mark is below the
/// piece, so one piece lasts until it is used up).
const AUDIT_PIECE: u64 = 2 << 20;
const AUDIT_LOW_WATER: u64 = 1 << 20;

/// The audit log's reserve file (see the module documentation).
pub struct AuditReserve {
    path: PathBuf,
    disk: Arc<DiskGuard>,
    /// Current size of the file.
    size: Mutex<u64>,
}

impl AuditReserve {
    /// Opens `audit.reserve` in `dir`, creating or refilling it when there
    /// is room. Never fails: without it, queries on a full disk are refused
    /// as before, and that is logged.
    pub(super) fn open(dir: &Path, disk: Arc<DiskGuard>) -> AuditReserve {
        let path = dir.join("audit.reserve");
        let size = std::fs::metadata(&path).map_or(0, |m| m.len());
        let r = AuditReserve {
            path,
            disk,
            size: Mutex::new(size),
        };
        r.refill();
        r
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, u64> {
        self.size.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Before an audit entry: gives a piece of the reserve back when the
    /// disk has almost nothing free, or fills the reserve up again when
    /// space has returned.
    pub fn make_room(&self) {
        let Ok(avail) = self.disk.available() else {
            return;
        };
        let mut size = self.lock();
        if avail < AUDIT_LOW_WATER {
            if *size == 0 {
                tracing::error!(reserve = %self.path.display(), available = avail, "disk full and the audit log's reserve is used up: queries are refused until space is freed");
                return;
            }
            let new = size.saturating_sub(AUDIT_PIECE);
            match std::fs::OpenOptions::new()
                .write(true)
                .open(&self.path)
                .and_then(|f| f.set_len(new))
            {
                Ok(()) => {
                    tracing::warn!(
                        reserve = %self.path.display(), left = new, available = avail,
                        "disk full: the audit log writes into its own reserve so queries can go on; free disk space"
                    );
                    *size = new;
                }
                Err(e) => {
                    tracing::error!(reserve = %self.path.display(), error = %e, "cannot give back the audit log's reserve")
                }
            }
        } else if *size < AUDIT_RESERVE {
            drop(size);
            self.refill();
        }
    }

    /// Allocates the reserve up to its full size, only out of space above
    /// the ingest reserve (it is never what fills the disk).
    fn refill(&self) {
        let mut size = self.lock();
        if *size >= AUDIT_RESERVE {
            return;
        }
        let Some(room) = self.disk.headroom() else {
            return;
        };
        if room < AUDIT_RESERVE - *size {
            return;
        }
        let grown = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.path)
            .and_then(|f| {
                allocate(&f, AUDIT_RESERVE)?;
                f.sync_all()
            });
        match grown {
            Ok(()) => {
                if *size > 0 {
                    tracing::info!(reserve = %self.path.display(), "the audit log's reserve is full again");
                }
                *size = AUDIT_RESERVE;
            }
            Err(e) => {
                tracing::warn!(reserve = %self.path.display(), error = %e, "cannot allocate the audit log's reserve; on a full disk queries will be refused")
            }
        }
    }

    /// The reserve's current size in bytes.
    pub fn size(&self) -> u64 {
        *self.lock()
    }
}

/// Allocates real blocks (not a sparse file) for the first `len` bytes.
fn allocate(f: &std::fs::File, len: u64) -> std::io::Result<()> {
    match rustix::fs::fallocate(f, rustix::fs::FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::OPNOTSUPP) => {
            // A file system without fallocate: write the zeros.
            use std::io::{Seek, SeekFrom, Write};
            let mut f = f;
            f.seek(SeekFrom::Start(0))?;
            let zeros = vec![0u8; 64 << 10];
            let mut left = len;
            while left > 0 {
                let n = left.min(zeros.len() as u64) as usize;
                f.write_all(&zeros[..n])?;
                left -= n as u64;
            }
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_in_progress_count_against_the_reserve() {
        let dir = tempfile::tempdir().expect("tempdir");
        let guard = DiskGuard::new(dir.path());
        let Ok(avail) = guard.available() else {
            return;
        };
        const GB: u64 = 1 << 30;
        if avail < 2 * GB {
            return; // Not enough room to tell apart from other writers.
        }
        // A gigabyte above the reserve: one 600 MB upload fits, a second
        // one alongside does not, and fits again once the first is done.
        guard.set_min_free(avail - GB);
        let first = guard.reserve(600 << 20).expect("first upload fits");
        assert!(guard.reserve(600 << 20).is_err());
        assert!(guard.headroom().is_some_and(|h| h < 500 << 20));
        drop(first);
        assert!(guard.reserve(600 << 20).is_ok());
        // A blob too big for what is left is refused without pausing ingest.
        assert!(guard.reserve(2 * GB).is_err());
        assert!(guard.paused().is_none());
        assert!(guard.check(0).is_ok());
    }
}
