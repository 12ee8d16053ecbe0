//! File capture: create, modify, delete, rename/move and copies onto
//! removable media under the configured directories, as `FileEvent`s in
//! the buffer.
//!
//! Three stages, each owned by [`FileCapture`]:
//! 1. the watcher thread (`watch.rs`) reads inotify and the mount table and
//!    decides what happened (bursts coalesced, renames paired);
//! 2. the hasher thread hashes closed files (size-capped, rate-limited),
//!    turns writes on removable volumes into `copy_to_removable` with the
//!    path this agent last saw with the same content (`source_path`), and
//!    remembers hash → path for files elsewhere;
//! 3. an async task appends the records to the buffer (durable on return).
//!
//! inotify does not report who acted: its records carry `mechanism =
//! "inotify"`, `uid = -1`, no process and an empty user. When the agent is
//! privileged, fanotify names the writer of created/modified files and
//! copies to removable media (`mechanism = "fanotify"`, pid, process, exe,
//! uid, user); deletes and renames stay unattributed. Gaps are records too:
//! `overflow` when the kernel dropped events, `watch_lost` when a root
//! vanished or watches ran out.

pub mod coalesce;
pub mod fanotify;
pub mod hasher;
pub mod volumes;
mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use futures::StreamExt;
use kiroku_proto::Event;
use kiroku_proto::event::Kind;

use crate::buffer::{Buffer, BufferError};
use crate::capture::context::CaptureContext;
use crate::config::FilesConfig;
use hasher::{HashMemory, Hasher};

/// Environment variable naming a file: while it exists, the watcher stops
/// reading kernel events (tests use it to overflow the kernel queue
/// without changing system settings). Tests only.
pub const TEST_PAUSE_ENV: &str = "KIROKU_TEST_FILES_PAUSE";

/// What the watcher hands to the hasher.
pub(crate) struct Observed {
    /// Boxed: the channel below preallocates all its slots, and an inline
    /// `Event` (~1.3 KB) made 65,536 of them cost ~85 MB of RSS.
    pub event: Box<Event>,
    pub hash: HashPlan,
}

/// What to read from the file system before the record goes out.
pub(crate) enum HashPlan {
    None,
    /// Size and modification time.
    Stat(PathBuf),
    /// Content hash too (the file was closed after writing).
    Hash(PathBuf),
}

/// The running file capture; [`FileCapture::stop`] ends it.
pub struct FileCapture {
    stop: Arc<AtomicBool>,
    watcher: std::thread::JoinHandle<()>,
    hasher: std::thread::JoinHandle<()>,
    writer: tokio::task::JoinHandle<()>,
}

/// Records in the buffer at once (their fsyncs are shared).
const WRITES_IN_FLIGHT: usize = 64;

impl FileCapture {
    /// Starts watching. Fails only on what the operator must fix (bad
    /// exclusion patterns, no inotify); a missing root is a `watch_lost`
    /// record instead, so mail capture and the other roots keep running.
    /// `data_dir` (the agent's own) is never recorded.
    pub fn start(
        cfg: FilesConfig,
        data_dir: &std::path::Path,
        buffer: Arc<Buffer>,
        ctx: Arc<CaptureContext>,
    ) -> anyhow::Result<FileCapture> {
        let mut exclude = coalesce::Exclusions::new(&cfg.exclude)
            .context("invalid pattern in files.exclude")?
            .with_tree(data_dir.to_owned());
        if let Ok(real) = std::fs::canonicalize(data_dir) {
            exclude = exclude.with_tree(real);
        }
        let memory = HashMemory::new(
            buffer.aux_tree("file_hashes")?,
            buffer.aux_tree("file_hash_age")?,
            cfg.hash_memory,
        )
        .context("opening the file hash memory in the agent buffer")?;
        let stop = Arc::new(AtomicBool::new(false));
        let (obs_tx, obs_rx) = std::sync::mpsc::sync_channel::<Observed>(65_536);
        let (ev_tx, ev_rx) = tokio::sync::mpsc::channel::<Event>(1024);
        let (ctx2, obs_tx2) = (ctx.clone(), obs_tx.clone());
        let w = watch::Watcher::new(cfg.clone(), ctx, obs_tx, stop.clone(), exclude)
            .context("cannot start inotify (check fs.inotify.max_user_instances)")?;
        let watcher = std::thread::Builder::new()
            .name("files-watch".into())
            .spawn(move || {
                let run = std::panic::AssertUnwindSafe(|| w.run());
                if let Err(panic) = std::panic::catch_unwind(run) {
                    // Never a silent end: the gap is a record.
                    let why = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    tracing::error!(error = %why, "file capture failed and stopped");
                    let mut event = ctx2.event(
                        String::new(),
                        Kind::File(kiroku_proto::FileEvent {
                            operation: "watch_lost".into(),
                            uid: -1,
                            mechanism: "inotify".into(),
                            detail: format!(
                                "file capture stopped after an internal error ({why}): nothing is recorded until the agent restarts. Restart kiroku-agent and report the error with its log."
                            ),
                            ..Default::default()
                        }),
                    );
                    event.user.clear();
                    let _ = obs_tx2.send(Observed {
                        event: Box::new(event),
                        hash: HashPlan::None,
                    });
                }
            })
            .context("starting the file watcher thread")?;
        let mut h = Hasher::new(cfg.hash_max_bytes, cfg.hash_rate_mb_per_sec);
        let hasher = std::thread::Builder::new()
            .name("files-hash".into())
            .spawn(move || {
                let mut memory = memory;
                for o in obs_rx {
                    let ev = finish(o, &mut h, &mut memory);
                    if ev_tx.blocking_send(ev).is_err() {
                        return;
                    }
                }
            })
            .context("starting the file hasher thread")?;
        let writer = tokio::spawn(write(ev_rx, buffer));
        Ok(FileCapture {
            stop,
            watcher,
            hasher,
            writer,
        })
    }

    /// Stops watching, records what was pending and waits (bounded) until
    /// it is in the buffer.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let threads = tokio::task::spawn_blocking(move || {
            let _ = self.watcher.join();
            let _ = self.hasher.join();
        });
        let all = async {
            let _ = threads.await;
            let _ = self.writer.await;
        };
        if tokio::time::timeout(std::time::Duration::from_secs(10), all)
            .await
            .is_err()
        {
            tracing::warn!("file capture did not finish writing within 10 s of stopping");
        }
    }
}

/// Hashes or stats the file and completes the record.
fn finish(o: Observed, h: &mut Hasher, memory: &mut HashMemory) -> Event {
    let mut event = *o.event;
    let Some(Kind::File(f)) = event.kind.as_mut() else {
        return event;
    };
    let got = match &o.hash {
        HashPlan::None => return event,
        HashPlan::Stat(p) => Hasher::stat(p),
        HashPlan::Hash(p) => h.hash(p),
    };
    f.size = got.size;
    f.mtime_ms = got.mtime_ms;
    f.sha256 = got.sha256;
    if f.hash_skipped.is_empty() && matches!(o.hash, HashPlan::Hash(_)) {
        f.hash_skipped = got.skipped;
    }
    if f.sha256.is_empty() {
        return event;
    }
    if f.operation == "copy_to_removable" {
        match memory.get(&f.sha256) {
            Ok(Some(src)) => f.source_path = src,
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "file hash memory unreadable"),
        }
    } else if !f.removable
        && let Err(e) = memory.put(&f.sha256, &f.path)
    {
        tracing::warn!(error = %e, "file hash memory not updated");
    }
    event
}

/// Appends records to the buffer, several at once so they share fsyncs.
async fn write(rx: tokio::sync::mpsc::Receiver<Event>, buffer: Arc<Buffer>) {
    let mut full_reported = false;
    let mut results = tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(|ev| {
            let buffer = buffer.clone();
            async move { buffer.append(&ev, None).await.map_err(|e| (e, ev)) }
        })
        .buffer_unordered(WRITES_IN_FLIGHT);
    while let Some(r) = results.next().await {
        match r {
            Ok(_) => full_reported = false,
            Err((e @ BufferError::Full { .. }, _)) => {
                if !full_reported {
                    tracing::error!(error = %e, "file events are being dropped");
                    full_reported = true;
                }
            }
            Err((e, ev)) => {
                tracing::error!(error = %e, observed_at_ms = ev.observed_at_ms, "a file event could not be recorded");
            }
        }
    }
}
