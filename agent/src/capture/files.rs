//! File capture: create, modify, delete, rename/move and copies onto
//! removable media under the configured directories, as `FileEvent`s in
//! the buffer.
//!
//! Three stages, each owned by [`FileCapture`]:
//! 1. the watcher thread (`linux/watch.rs`: inotify and the mount table;
//!    `windows/watch.rs`: ReadDirectoryChangesW and drive polling) decides
//!    what happened (bursts coalesced, renames paired), and `emit.rs`
//!    turns that into the records both platforms send alike;
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
//! vanished or watches ran out; events the full buffer could not take are
//! counted into a `GapEvent` (`gaps.rs`).
//!
//! What changed while the agent was not running is reported at start by
//! the catch-up scan (`catchup.rs`, a fourth thread), against the last
//! known state of each file, which the writer updates in the same buffer
//! transaction as each record (`state.rs`).

mod catchup;
pub mod coalesce;
mod emit;
pub mod hasher;
pub mod state;

// The platform's watcher (issue 22): inotify, fanotify and the mount table
// on Linux; ReadDirectoryChangesW and drive polling on Windows. Both hand
// `Observed` records to the shared hasher and writer below.
#[cfg(target_os = "linux")]
pub mod linux;
#[cfg(target_os = "linux")]
use linux as platform;
// The Windows side's pure parts are compiled for the tests everywhere.
#[cfg(any(windows, test))]
pub mod windows;
use platform::watch;
#[cfg(windows)]
use windows as platform;

use kiroku_common::vocabulary::file_op;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use futures::StreamExt;
use kiroku_proto::Event;
use kiroku_proto::event::Kind;

use crate::buffer::Buffer;
use crate::capture::context::CaptureContext;
use crate::config::FilesConfig;
use crate::gaps::{Gaps, Missed, Source};
use hasher::{HashMemory, Hasher};
use state::{Change, FileState, Origin, Remembered};

/// What the watcher hands to the hasher.
pub(crate) struct Observed {
    /// Boxed: the channel below preallocates all its slots, and an inline
    /// `Event` (~1.3 KB) made 65,536 of them cost ~85 MB of RSS. Bare (no
    /// host identity, no custom fields: `CaptureContext::bare_event`) until
    /// the hasher hands it on, so a burst queued here holds one small
    /// record per file, not a copy of the host identity each.
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
    catchup: std::thread::JoinHandle<()>,
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
        gaps: Arc<Gaps>,
        ctx: Arc<CaptureContext>,
    ) -> anyhow::Result<FileCapture> {
        let mut exclude = coalesce::Exclusions::new(&cfg.exclude)
            .context("invalid pattern in files.exclude")?
            .with_tree(data_dir.to_owned());
        if let Ok(real) = std::fs::canonicalize(data_dir) {
            exclude = exclude.with_tree(real);
        }
        let memory = HashMemory::new(
            buffer.keyed_state("file_hashes"),
            buffer.keyed_state("file_hash_age"),
            cfg.hash_memory,
        )
        .context("opening the file hash memory in the agent buffer")?;
        let state = FileState::open(&buffer, cfg.state_max)
            .context("opening the file state memory in the agent buffer")?;
        let stop = Arc::new(AtomicBool::new(false));
        let (obs_tx, obs_rx) = std::sync::mpsc::sync_channel::<Observed>(65_536);
        let (ev_tx, ev_rx) = tokio::sync::mpsc::channel::<(Event, Change)>(1024);
        let (ctx2, obs_tx2, stamp) = (ctx.clone(), obs_tx.clone(), ctx.clone());
        let catchup = catchup::CatchUp {
            roots: cfg.watch.clone(),
            exclude: exclude.clone(),
            state: state.clone(),
            ctx: ctx.clone(),
            out: obs_tx.clone(),
            stop: stop.clone(),
            max: std::time::Duration::from_secs(cfg.catchup_max_secs),
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut w = watch::Watcher::new(
            cfg.clone(),
            ctx,
            obs_tx,
            stop.clone(),
            exclude,
            state.clone(),
        )
        .context("cannot start inotify (check fs.inotify.max_user_instances)")?;
        w.tell_when_watching(ready_tx);
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
                    let mut event = ctx2.bare_event(
                        String::new(),
                        Kind::File(kiroku_proto::FileEvent {
                            operation: file_op::WATCH_LOST.into(),
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
        let catchup = std::thread::Builder::new()
            .name("files-catchup".into())
            .spawn(move || catchup.run(ready_rx))
            .context("starting the file catch-up scan thread")?;
        let mut h = Hasher::new(cfg.hash_max_bytes, cfg.hash_rate_mb_per_sec);
        let hasher = std::thread::Builder::new()
            .name("files-hash".into())
            .spawn(move || {
                let mut memory = memory;
                for o in obs_rx {
                    let mut ev = finish(o, &mut h, &mut memory);
                    stamp.stamp(&mut ev.0);
                    if ev_tx.blocking_send(ev).is_err() {
                        return;
                    }
                }
            })
            .context("starting the file hasher thread")?;
        let writer = tokio::spawn(write(ev_rx, buffer, state, gaps));
        Ok(FileCapture {
            stop,
            watcher,
            hasher,
            catchup,
            writer,
        })
    }

    /// Stops watching, records what was pending and waits (bounded) until
    /// it is in the buffer.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let threads = tokio::task::spawn_blocking(move || {
            let _ = self.watcher.join();
            let _ = self.catchup.join();
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

/// Hashes or stats the file and completes the record; says what it
/// changes in the remembered state of files.
fn finish(o: Observed, h: &mut Hasher, memory: &mut HashMemory) -> (Event, Change) {
    let mut event = *o.event;
    let Some(Kind::File(f)) = event.kind.as_mut() else {
        return (event, Change::None);
    };
    let got = match &o.hash {
        HashPlan::None => {
            let change = change_of(f, false);
            return (event, change);
        }
        HashPlan::Stat(p) => Hasher::stat(p),
        HashPlan::Hash(p) => h.hash(p),
    };
    f.size = got.size;
    f.mtime_ms = got.mtime_ms;
    f.sha256 = got.sha256;
    if f.hash_skipped.is_empty() && matches!(o.hash, HashPlan::Hash(_)) {
        f.hash_skipped = got.skipped.clone();
    }
    // Gone, unreadable or not a regular file: nothing to remember.
    let is_file = !got.is_dir
        && !["deleted", "not a regular", "unreadable"]
            .iter()
            .any(|s| got.skipped.starts_with(s));
    let change = change_of(f, is_file);
    // What the scan found happened while the agent was down: its time is
    // the file's.
    if f.mechanism == "scan" && f.mtime_ms > 0 {
        event.observed_at_ms = f.mtime_ms;
    }
    let Some(Kind::File(f)) = event.kind.as_mut() else {
        return (event, change);
    };
    if f.sha256.is_empty() {
        return (event, change);
    }
    if f.operation == file_op::COPY_TO_REMOVABLE {
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
    (event, change)
}

/// What a completed record changes in the remembered state of files
/// (`state.rs`). Removable volumes are not remembered (the scan does not
/// walk them). `is_file`: the path is a regular file as hashed or stat'ed.
fn change_of(f: &kiroku_proto::FileEvent, is_file: bool) -> Change {
    let origin = if f.mechanism == "scan" {
        Origin::Scan
    } else {
        Origin::Watch
    };
    let state = || Remembered {
        size: f.size,
        mtime_ms: f.mtime_ms,
        origin,
        sha256: f.sha256.clone(),
    };
    if f.removable {
        return Change::None;
    }
    match f.operation.as_str() {
        file_op::CREATE | file_op::MODIFY if is_file => Change::Put {
            path: f.path.clone(),
            state: state(),
        },
        file_op::DELETE => Change::Remove {
            path: f.path.clone(),
            only_if_known: origin == Origin::Scan,
        },
        file_op::RENAME => Change::Rename {
            from: f.old_path.clone(),
            to: f.path.clone(),
            state: is_file.then(state),
        },
        _ => Change::None,
    }
}

/// Appends records to the buffer, several at once so they share fsyncs,
/// each with the state it leaves. What a full buffer cannot take is
/// counted into a gap record.
async fn write(
    rx: tokio::sync::mpsc::Receiver<(Event, Change)>,
    buffer: Arc<Buffer>,
    state: Arc<FileState>,
    gaps: Arc<Gaps>,
) {
    let mut results = tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(|(ev, change)| {
            let (buffer, state) = (buffer.clone(), state.clone());
            let path = match &ev.kind {
                Some(Kind::File(f)) => f.path.clone(),
                _ => String::new(),
            };
            let at = ev.observed_at_ms;
            async move {
                state
                    .record(&buffer, ev, change)
                    .await
                    .map_err(|e| (e, path, at))
            }
        })
        .buffer_unordered(WRITES_IN_FLIGHT);
    while let Some(r) = results.next().await {
        match r {
            Ok(_) => {}
            Err((e, path, _)) if e.refused_for_space() => {
                let missed = Missed {
                    path: Some(&path),
                    ..Default::default()
                };
                if let Err(e) = gaps.missed(Source::Files, missed).await {
                    tracing::error!(error = %e, path, "a file event could not be recorded or counted");
                }
            }
            Err((e, path, at)) => {
                tracing::error!(error = %e, path, observed_at_ms = at, "a file event could not be recorded");
            }
        }
    }
}
