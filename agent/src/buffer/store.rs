//! One sled generation of the buffer (`sled/` or `sled-<n>/`), how it is
//! opened, how a sled error is classified (damage or a resource that ran
//! out), and how a drained generation is replaced by a fresh one so that
//! the disk space sled never returns by itself is given back.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::BufferError;

/// sled's segment (io buffer) size. sled writes anything over a quarter of
/// it — a record with a large `body_text`, or a tree node consolidated
/// from many inline messages — as a separate file with its own fsyncs, so
/// the default 512 KiB made such writes common. 2 MiB measured fastest
/// here (`examples/buffer_latency.rs`: p50 per relayed 10 KB mail 1.02 →
/// 0.75 ms) for 1.5 MB more RSS after 3,000 mails (`examples/buffer_rss.rs`).
pub(super) const SEGMENT_SIZE: usize = 2 * 1024 * 1024;

/// The file naming the current generation: `KIROKU-GEN1 <n>`. Absent means
/// generation 0, the directory `sled` (the layout of every version before
/// generations existed, so such a buffer opens unchanged).
const GENERATION_FILE: &str = "generation";
const GENERATION_MAGIC: &str = "KIROKU-GEN1";

/// The trees of one generation.
pub(super) struct Store {
    pub path: PathBuf,
    pub generation: u64,
    pub db: sled::Db,
    pub queue: sled::Tree,
    pub inflight: sled::Tree,
    pub blobrefs: sled::Tree,
    pub smallblobs: sled::Tree,
    pub meta: sled::Tree,
    /// sled's size on disk when this generation was made fresh (what its
    /// live data costs), the base the next one is measured from; 0 for a
    /// generation opened as found (its live size is unknown).
    pub base_size: u64,
}

/// The directory of generation `n` under the data directory.
pub(super) fn generation_dir(dir: &Path, n: u64) -> PathBuf {
    if n == 0 {
        dir.join("sled")
    } else {
        dir.join(format!("sled-{n}"))
    }
}

/// The current generation number (0 when the file is absent).
pub(super) fn current_generation(dir: &Path) -> Result<u64, BufferError> {
    let path = dir.join(GENERATION_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(source) => return Err(BufferError::Io { path, source }),
    };
    let mut it = text.split_whitespace();
    match (it.next(), it.next().and_then(|n| n.parse().ok())) {
        (Some(GENERATION_MAGIC), Some(n)) => Ok(n),
        _ => Err(BufferError::Corrupt {
            path,
            key: "generation".into(),
            message: format!(
                "expected `{GENERATION_MAGIC} <number>`, found {:?}; restore it or name the sled directory to use",
                text.chars().take(40).collect::<String>()
            ),
        }),
    }
}

/// Points the buffer at generation `n` durably (temp file, fsync, rename,
/// directory fsync): the switch to a new generation is this one rename.
fn set_current_generation(dir: &Path, n: u64) -> std::io::Result<()> {
    replace_durably(
        &dir.join(GENERATION_FILE),
        &format!("{GENERATION_MAGIC} {n}"),
    )
}

/// Replaces the small file `path` with the line `line`, durably: a temp
/// file beside it, fsync, rename, then an fsync of its directory. A crash
/// leaves either the old content or the new, never a torn one.
pub(super) fn replace_durably(path: &Path, line: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    writeln!(f, "{line}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    match path.parent() {
        Some(dir) => crate::os::sync_dir(dir),
        None => Ok(()),
    }
}

/// Generation directories other than the current one: a drained old
/// generation (a crash after the switch, before its removal) or an
/// unfinished new one (a crash before the switch). Normally neither holds
/// a queued event (a switch happens only with the queue and in-flight
/// trees empty, under the buffer's write lock), but that is checked, not
/// assumed: a `generation` file restored from a backup, or an older agent
/// version run after a switch (it knows only `sled/`), leaves a stale
/// directory that holds mail.
fn stale_generations(dir: &Path, current: u64) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = if name == "sled" {
                0
            } else {
                name.strip_prefix("sled-")?.parse::<u64>().ok()?
            };
            (n != current && e.path().is_dir()).then(|| e.path())
        })
        .collect()
}

/// What became of the generation directories other than the current one:
/// a stale generation is removed only when it provably holds nothing to
/// ship (it opens, and its `queue` and `inflight` trees are empty).
/// Otherwise it is renamed `<name>.unshipped-<unix time>`, kept like a
/// damaged buffer moved aside (the raw messages it references stay in
/// `blobs/`), and described in the returned messages for the start record.
pub(super) fn settle_stale_generations(dir: &Path, current: u64) -> Vec<String> {
    let mut kept = Vec::new();
    for stale in stale_generations(dir, current) {
        match holds_records(&stale) {
            Ok(false) => {
                tracing::info!(path = %stale.display(), "removing a buffer generation left by an interrupted switch (it holds no queued events)");
                if let Err(e) = std::fs::remove_dir_all(&stale) {
                    tracing::warn!(path = %stale.display(), error = %e, "cannot remove an old buffer generation; it is retried at the next start");
                }
            }
            found => {
                let why = match found {
                    Ok(_) => "it holds events not yet acknowledged by the collector".to_owned(),
                    Err(e) => format!("it cannot be checked ({e})"),
                };
                let aside = PathBuf::from(format!(
                    "{}.unshipped-{}",
                    stale.display(),
                    kiroku_common::now_ms() / 1000
                ));
                let msg = format!(
                    "agent buffer generation {} is not the current one but {why}; kept as {} with the raw messages it references (was the agent downgraded, or its `generation` file restored?). Its events are not shipped: inspect it, then delete it",
                    stale.display(),
                    aside.display()
                );
                tracing::error!("{msg}");
                if let Err(e) = std::fs::rename(&stale, &aside) {
                    tracing::error!(path = %stale.display(), error = %e, "cannot rename a stale buffer generation aside; it is left where it is");
                }
                kept.push(msg);
            }
        }
    }
    kept
}

/// Whether a database directory holds queued or in-flight records.
fn holds_records(path: &Path) -> Result<bool, sled::Error> {
    let db = open_db(path, 1 << 20)?;
    Ok(!db.open_tree("queue")?.is_empty() || !db.open_tree("inflight")?.is_empty())
}

/// Directories a damaged buffer was moved to (`sled.broken-<time>`), or a
/// stale generation holding records (`.unshipped-<time>`): the
/// events in them may still reference raw messages in `blobs/`.
pub(super) fn moved_aside(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.contains(".broken-") || name.contains(".unshipped-")
        })
        .map(|e| e.path())
        .collect()
}

/// The segment size an existing database was created with, from sled's
/// refusal to open it with another ("... please change it back to N").
pub(super) fn created_with_segment_size(msg: &str) -> Option<usize> {
    msg.split("please change it back to ")
        .nth(1)?
        .trim()
        .parse()
        .ok()
}

/// sled could not take its file lock: another process has the database.
pub(super) fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// Whether a sled error proves the database damaged. Only sled's own
/// verdicts do (a checksum or format failure). An I/O error — no space
/// (ENOSPC, EDQUOT), EIO, a permission or read-only file system — says
/// the disk refused, not that the data is bad: the buffer is kept as it is
/// and opened again once the disk takes writes.
pub(super) fn is_damage(e: &sled::Error) -> bool {
    match e {
        sled::Error::Corruption { .. } => true,
        sled::Error::Unsupported(msg) => created_with_segment_size(msg).is_none(),
        _ => false,
    }
}

/// Whether an I/O error means a resource ran out or is refused (space,
/// quota, permission, a failing disk), as opposed to a bug.
pub(super) fn is_resource(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::StorageFull
            | K::QuotaExceeded
            | K::PermissionDenied
            | K::ReadOnlyFilesystem
            | K::FileTooLarge
    ) || matches!(
        e.raw_os_error(),
        Some(
            libc_errno::ENOSPC
                | libc_errno::EDQUOT
                | libc_errno::EIO
                | libc_errno::EPERM
                | libc_errno::EACCES
                | libc_errno::EROFS
        )
    )
}

/// The errno values [`is_resource`] names, without a libc dependency.
mod libc_errno {
    pub const EPERM: i32 = 1;
    pub const EIO: i32 = 5;
    pub const EACCES: i32 = 13;
    pub const ENOSPC: i32 = 28;
    pub const EROFS: i32 = 30;
    pub const EDQUOT: i32 = 122;
}

impl Store {
    /// Opens generation `n` in `dir`, waiting up to 5 s for sled's file
    /// lock (a previous handle in this process may still be closing).
    pub fn open(dir: &Path, n: u64, cache_bytes: u64) -> Result<Store, sled::Error> {
        let path = generation_dir(dir, n);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let db = loop {
            match open_db(&path, cache_bytes) {
                Err(e) if is_lock_error(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => break other?,
            }
        };
        Store::from_db(path, n, db, 0)
    }

    fn from_db(
        path: PathBuf,
        generation: u64,
        db: sled::Db,
        base_size: u64,
    ) -> Result<Store, sled::Error> {
        Ok(Store {
            queue: db.open_tree("queue")?,
            inflight: db.open_tree("inflight")?,
            blobrefs: db.open_tree("blobrefs")?,
            smallblobs: db.open_tree("smallblobs")?,
            meta: db.open_tree("meta")?,
            path,
            generation,
            db,
            base_size,
        })
    }

    /// Whether nothing is waiting to be shipped or settled.
    pub fn drained(&self) -> bool {
        self.queue.is_empty() && self.inflight.is_empty()
    }

    /// Copies everything this generation holds (bookkeeping, notes and
    /// capture sources' keyed state; the queue is empty) into a fresh
    /// generation `n + 1`, makes it durable and current, and returns it.
    /// The caller holds the buffer's write lock and removes this one. On
    /// an error nothing changed: the unfinished directory is removed and
    /// this generation stays current.
    pub fn successor(&self, dir: &Path, cache_bytes: u64) -> Result<Store, BufferError> {
        let n = self.generation + 1;
        let path = generation_dir(dir, n);
        let sled_err = |source| BufferError::Sled {
            path: path.clone(),
            source,
        };
        let _ = std::fs::remove_dir_all(&path);
        let build = || -> Result<Store, BufferError> {
            let db = open_db(&path, cache_bytes).map_err(sled_err)?;
            for name in self.db.tree_names() {
                let from = self.db.open_tree(&name).map_err(sled_err)?;
                let to = db.open_tree(&name).map_err(sled_err)?;
                let mut batch = sled::Batch::default();
                for kv in from.iter() {
                    let (k, v) = kv.map_err(sled_err)?;
                    batch.insert(k, v);
                }
                to.apply_batch(batch).map_err(sled_err)?;
            }
            db.flush().map_err(sled_err)?;
            // sled fsyncs its files; the directory entries of the new
            // generation's files must be durable too before the switch
            // names it, or a power loss could leave it naming an empty one.
            std::fs::File::open(&path)
                .and_then(|d| d.sync_all())
                .map_err(|source| BufferError::Io {
                    path: path.clone(),
                    source,
                })?;
            let size = db.size_on_disk().map_err(sled_err)?;
            let store = Store::from_db(path.clone(), n, db, size).map_err(sled_err)?;
            // The switch: from here on a restart opens the new generation.
            match set_current_generation(dir, n) {
                Ok(()) => Ok(store),
                // The rename took although a later fsync failed: the new
                // generation is current and must be kept.
                Err(_) if matches!(current_generation(dir), Ok(c) if c == n) => Ok(store),
                Err(source) => Err(BufferError::Io {
                    path: dir.join(GENERATION_FILE),
                    source,
                }),
            }
        };
        build().inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&path);
        })
    }
}

fn open_db(path: &Path, cache_bytes: u64) -> Result<sled::Db, sled::Error> {
    let open = |segment_size: usize| {
        sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .flush_every_ms(Some(1000))
            .segment_size(segment_size)
            .open()
    };
    match open(SEGMENT_SIZE) {
        // A buffer created with another segment size (sled cannot change
        // it in place) keeps the one it was made with.
        Err(sled::Error::Unsupported(msg)) if created_with_segment_size(&msg).is_some() => {
            open(created_with_segment_size(&msg).unwrap_or(SEGMENT_SIZE))
        }
        other => other,
    }
}
