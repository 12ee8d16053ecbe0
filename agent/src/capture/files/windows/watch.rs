//! The Windows watcher thread: a recursive `ReadDirectoryChangesW` watch
//! per root (`files.watch`, `files.removable_roots` and every removable
//! drive while it is present), changes turned into records through the
//! shared coalescer and rename pairing, overflows and lost roots reported
//! as records, removable drives found by polling the drive letters.
//!
//! Why the Windows API directly and not the `notify` crate: file capture
//! needs the overflow signal itself (`ERROR_NOTIFY_ENUM_DIR` or a read
//! that returns nothing → an `overflow` gap record naming the root), the
//! old/new halves of a rename as the system pairs them (back to back in
//! one buffer), and a stop that cancels the read in flight; `notify`
//! folds these into its own event model (a rescan flag, renames it pairs
//! by guesswork on other platforms) and runs its own thread. The calls are
//! few and live in `sys.rs`.
//!
//! Close-then-hash without a close event: Windows reports writes
//! (`FILE_ACTION_MODIFIED`) but never the close. A file quiet for
//! `files.coalesce_ms` is probed by opening it for reading with sharing
//! limited to readers (deny-write); if that fails with a sharing
//! violation, a process still holds it open for writing and it is probed
//! again every second until it opens (then hashed) or until the hold
//! (30 s) passes (then recorded unhashed, "still open for writing"). This
//! is the same protocol the Linux watcher answers from `/proc`
//! (`Coalescer::unconfirmed`/`writer`), with the re-probe standing in for
//! the close. A writer that shares write access with others is not seen
//! by the probe: its file is hashed after the quiet window, as on Linux
//! for a truncate by path.
//!
//! Records say `mechanism = "ReadDirectoryChangesW"`, `uid = -1`, no
//! process and an empty user: the API does not tell who acted.

mod events;
mod volumes;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use kiroku_proto::FileEvent;

use super::Observed;
use super::catchup::Watching;
use super::coalesce::{Coalescer, Exclusions, MovePairs};
use super::drives::Drive;
use super::emit::{Emit, Emitter};
use super::notify;
use super::paths::{is_under, volume_root};
use super::state::FileState;
use super::sys::{self, DirWatch, Taken};
use crate::capture::context::CaptureContext;
use crate::config::FilesConfig;

/// The `mechanism` of the records.
pub(super) const MECHANISM: &str = "ReadDirectoryChangesW";
/// How long a rename's old half waits for its new half (the system
/// queues them back to back; this covers a read that splits the pair).
const MOVE_GRACE: Duration = Duration::from_millis(200);
/// A file held open for writing is reported after this long anyway.
const MAX_HOLD: Duration = Duration::from_secs(30);
/// Missing roots are tried again, and watched ones checked, this often.
const RETRY: Duration = Duration::from_secs(5);
/// Drive letters are polled this often for removable drives.
const DRIVE_POLL: Duration = Duration::from_secs(2);
/// Files held open for writing are probed again this often.
const REPROBE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RootKind {
    /// From `files.watch`.
    Configured,
    /// From `files.removable_roots`: a directory that stands for removable
    /// media (what is written below it is a copy to removable media).
    RemovableRoot,
    /// A removable drive (`E:\`) while it is present.
    Drive,
}

/// The removable medium a root stands for.
#[derive(Debug, Clone)]
struct Medium {
    device: String,
    label: String,
}

struct Root {
    path: PathBuf,
    kind: RootKind,
    watch: Option<DirWatch>,
    /// The last attempt found nothing there.
    absent: bool,
    /// Files below it are on removable media.
    medium: Option<Medium>,
    /// For drives: which one.
    drive: Option<Drive>,
}

pub(in crate::capture::files) struct Watcher {
    cfg: FilesConfig,
    /// Builds the records and sends them to the hasher.
    emit: Emitter,
    exclude: Exclusions,
    roots: Vec<Root>,
    coalescer: Coalescer,
    moves: MovePairs,
    /// The rename pairing's cookie: Windows pairs halves by order, so each
    /// old half gets a fresh number and the next new half asks for it.
    cookie: u32,
    drives: Vec<Drive>,
    last_drive_poll: Instant,
    last_retry: Instant,
    last_probe: Instant,
    scans: Option<std::sync::mpsc::Sender<Watching>>,
    /// The last known state of files: a directory removed from the tree
    /// takes the files known below it with it.
    state: Arc<FileState>,
    /// Paths deleted in the last few seconds (`events.rs`).
    recently_deleted: HashSet<PathBuf>,
}

impl Watcher {
    pub(in crate::capture::files) fn new(
        cfg: FilesConfig,
        ctx: Arc<CaptureContext>,
        out: SyncSender<Observed>,
        stop: Arc<AtomicBool>,
        exclude: Exclusions,
        state: Arc<FileState>,
    ) -> std::io::Result<Watcher> {
        let window = Duration::from_millis(cfg.coalesce_ms);
        let mut roots = Vec::new();
        for p in &cfg.watch {
            roots.push(Root::new(p.clone(), RootKind::Configured, None));
        }
        for p in &cfg.removable_roots {
            let medium = Medium {
                device: "removable root".into(),
                label: String::new(),
            };
            roots.push(Root::new(p.clone(), RootKind::RemovableRoot, Some(medium)));
        }
        let now = Instant::now();
        Ok(Watcher {
            cfg,
            emit: Emitter::new(MECHANISM, ctx, out, stop),
            exclude,
            roots,
            coalescer: Coalescer::new(window, MAX_HOLD.max(window * 4)),
            moves: MovePairs::new(MOVE_GRACE),
            cookie: 0,
            drives: Vec::new(),
            last_drive_poll: now,
            last_retry: now,
            last_probe: now,
            scans: None,
            state,
            recently_deleted: HashSet::new(),
        })
    }

    /// Who to tell when the initial watches are in place and when a root
    /// appears later.
    pub(in crate::capture::files) fn tell_when_watching(
        &mut self,
        scans: std::sync::mpsc::Sender<Watching>,
    ) {
        self.scans = Some(scans);
    }

    /// Runs until the stop flag is set, then reports what is pending and
    /// cancels the reads in flight.
    pub(in crate::capture::files) fn run(mut self) {
        sys::quiet_drive_errors();
        self.start_watching();
        while !self.emit.stopped() {
            self.step();
        }
        for f in self.moves.drain() {
            self.moved_out(f.path);
        }
        for r in self.coalescer.drain() {
            self.emit_ready(r, None);
        }
        // Dropping the watches cancels their reads.
        self.roots.clear();
        tracing::info!("file capture stopped");
    }

    fn start_watching(&mut self) {
        for i in 0..self.roots.len() {
            self.watch_root(i, true);
        }
        if self.cfg.removable_auto {
            self.poll_drives("present when the agent started");
        }
        let roots = self.roots.iter().filter(|r| r.watch.is_some()).count();
        if self.cfg.removable_auto {
            let removable_drives = self.drives.len();
            tracing::info!(roots, removable_drives, "file capture watching");
        } else {
            tracing::info!(
                roots,
                "file capture watching (removable drives not looked for: files.removable_auto = false)"
            );
        }
        let missing = self
            .roots
            .iter()
            .filter(|r| r.kind == RootKind::Configured && r.absent)
            .map(|r| r.path.clone())
            .collect();
        self.tell(Watching::Started {
            since_ms: kiroku_common::now_ms(),
            missing,
        });
    }

    /// One turn: waits for a root's changes (or the next deadline) and
    /// handles what is due.
    fn step(&mut self) {
        let now = Instant::now();
        let mut wake = now + Duration::from_millis(500);
        for d in [self.coalescer.next_deadline(), self.moves.next_deadline()]
            .into_iter()
            .flatten()
        {
            wake = wake.min(d);
        }
        let (handles, which): (Vec<_>, Vec<usize>) = self
            .roots
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.watch.as_ref().map(|w| (w.handle(), i)))
            .unzip();
        if let Some(k) = sys::wait_any(&handles, wake.saturating_duration_since(now))
            && let Some(&i) = which.get(k)
        {
            self.take(i);
        }
        let now = Instant::now();
        for f in self.moves.expired(now) {
            self.moved_out(f.path);
        }
        self.probe_writers(now);
        for r in self.coalescer.due(now) {
            self.emit_ready(r, None);
        }
        if self.cfg.removable_auto && now >= self.last_drive_poll + DRIVE_POLL {
            self.last_drive_poll = now;
            self.poll_drives("");
        }
        if now >= self.last_retry + RETRY {
            self.last_retry = now;
            self.recently_deleted.clear();
            self.check_roots();
        }
    }

    /// The completed read of root `i`.
    fn take(&mut self, i: usize) {
        let Some(w) = self.roots[i].watch.as_mut() else {
            return;
        };
        match w.take() {
            Taken::Changes(buf) => {
                let (notices, bad) = notify::decode(&buf);
                if bad > 0 {
                    tracing::warn!(records = bad, root = %self.roots[i].path.display(), "change records that could not be decoded were skipped");
                }
                let root = self.roots[i].path.clone();
                let now = Instant::now();
                for n in notices {
                    self.handle(&root, n, now);
                }
            }
            Taken::Overflow => {
                // A root deleted under its watch ends the same way.
                if self.roots[i].path.is_dir() {
                    self.overflow(i);
                } else {
                    self.root_lost(i, "is gone (deleted, renamed or its drive removed)");
                }
            }
            Taken::Lost(e) => {
                let why = format!("can no longer be watched ({e})");
                self.root_lost(i, &why);
            }
        }
    }

    /// Files quiet for the window without a close: are they still held
    /// open for writing? Asked once after the window, then every second
    /// for those that were.
    fn probe_writers(&mut self, now: Instant) {
        for p in self.coalescer.unconfirmed(now) {
            let open = held_for_writing(&p);
            self.coalescer.writer(&p, open);
        }
        if now < self.last_probe + REPROBE {
            return;
        }
        self.last_probe = now;
        for p in self.coalescer.held() {
            if !held_for_writing(&p) {
                self.coalescer.writer(&p, false);
            }
        }
    }

    fn tell(&self, w: Watching) {
        if let Some(s) = &self.scans {
            let _ = s.send(w);
        }
    }
}

impl Emit for Watcher {
    fn emitter(&mut self) -> &mut Emitter {
        &mut self.emit
    }

    /// The innermost removable root or drive holding the path, if any;
    /// else its drive letter or share.
    fn place(&self, path: &Path, f: &mut FileEvent) {
        let text = path.display().to_string();
        let medium = self
            .roots
            .iter()
            .filter(|r| r.medium.is_some())
            .filter(|r| is_under(&text, &r.path.display().to_string()))
            .max_by_key(|r| r.path.as_os_str().len());
        match medium {
            Some(r) => {
                f.volume = r.path.display().to_string();
                f.removable = true;
                if let Some(m) = &r.medium {
                    f.device = m.device.clone();
                    f.volume_label = m.label.clone();
                }
            }
            None => f.volume = volume_root(&text),
        }
    }
}

impl Root {
    fn new(path: PathBuf, kind: RootKind, medium: Option<Medium>) -> Root {
        Root {
            path,
            kind,
            watch: None,
            absent: false,
            medium,
            drive: None,
        }
    }
}

/// Whether a process holds `path` open for writing: opening it for
/// reading while denying writers fails with a sharing violation then. A
/// file that is gone or unreadable is not held (its record says so).
fn held_for_writing(path: &Path) -> bool {
    use std::os::windows::fs::OpenOptionsExt;
    const FILE_SHARE_READ: u32 = 1;
    const ERROR_SHARING_VIOLATION: i32 = 32;
    match std::fs::OpenOptions::new()
        .read(true)
        .share_mode(FILE_SHARE_READ)
        .open(path)
    {
        Ok(_) => false,
        Err(e) => e.raw_os_error() == Some(ERROR_SHARING_VIOLATION),
    }
}
