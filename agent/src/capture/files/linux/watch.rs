//! The inotify watcher thread: recursive watches over the configured roots,
//! the removable roots and every removable volume mounted while it runs;
//! kernel events turned into records (via the coalescer and the rename
//! pairing); queue overflows and lost watches reported as records, never
//! dropped silently; the mount table followed through `/proc/self/mountinfo`
//! (which signals `POLLPRI` when it changes).
//!
//! inotify does not tell which process or user acted: records say
//! `mechanism = "inotify"`, `uid = -1`, unless the fanotify side
//! (`fanotify.rs`, privileged agents only) saw who closed the file after
//! writing it.
//!
//! Split by concern: `events.rs` (kernel events → records), `roots.rs`
//! (watches, missing and lost roots), `mounts.rs` (removable volumes).

mod events;
mod mounts;
mod roots;

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use inotify::{Inotify, WatchDescriptor, WatchMask};
use kiroku_proto::event::Kind;
use kiroku_proto::{Event, FileEvent};
use rustix::event::{PollFd, PollFlags};

use super::catchup::Watching;
use super::coalesce::{Coalescer, Exclusions, MovePairs, Ready};
use super::emit::{Emit, Emitter};
use super::fanotify::{self, Attribution};
use super::state::FileState;
use super::volumes::{Mount, System, volume_of};
use super::{Observed, writers};
use crate::capture::context::CaptureContext;
use crate::config::FilesConfig;

const MASK: WatchMask = WatchMask::CREATE
    .union(WatchMask::DELETE)
    .union(WatchMask::MODIFY)
    .union(WatchMask::CLOSE_WRITE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF)
    .union(WatchMask::DONT_FOLLOW)
    .union(WatchMask::ONLYDIR)
    .union(WatchMask::EXCL_UNLINK);

/// How long a `MOVED_FROM` waits for its `MOVED_TO` (the kernel queues
/// them back to back; this only covers a read that splits the pair).
const MOVE_GRACE: Duration = Duration::from_millis(200);
/// A file open for writing is reported after this long even if it is not
/// closed (a log file written for hours still shows up).
const MAX_HOLD: Duration = Duration::from_secs(30);
const RETRY: Duration = Duration::from_secs(30);
const ENOSPC_REPORT_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RootKind {
    /// From `files.watch`.
    Configured,
    /// From `files.removable_roots` (absent ones are normal).
    RemovableRoot,
    /// A removable volume's mount point.
    Volume,
}

#[derive(Debug)]
struct Root {
    path: PathBuf,
    kind: RootKind,
    watched: bool,
    /// The last attempt to watch it found nothing there (not another
    /// error): whatever appears there later is new.
    absent: bool,
    /// A mount id for volumes.
    mount_id: u32,
}

#[derive(Debug)]
struct Dir {
    path: PathBuf,
}

/// Whether files found by a directory walk are reported as created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Initial watches: what exists is not news.
    Silent,
    /// A directory that just appeared: what is inside was created (before
    /// its watch existed).
    Report,
}

/// Which of the watcher's descriptors have something to read.
#[derive(Debug, Default)]
struct Readiness {
    inotify: bool,
    mounts: bool,
    fan: bool,
    parents: bool,
}

pub(in crate::capture::files) struct Watcher {
    cfg: FilesConfig,
    /// Builds the records and sends them to the hasher.
    emit: Emitter,
    inotify: Inotify,
    dirs: HashMap<WatchDescriptor, Dir>,
    roots: Vec<Root>,
    exclude: Exclusions,
    coalescer: Coalescer,
    moves: MovePairs,
    sys: System,
    mounts: Vec<Mount>,
    mountinfo: Option<std::fs::File>,
    pause: Option<PathBuf>,
    /// Directories not watched for lack of kernel watches since the last
    /// report, and when that was.
    enospc: (u64, Option<Instant>),
    last_retry: Instant,
    /// Writers of files, when fanotify is available.
    fan: Option<Attribution>,
    /// The catch-up scan: told when the initial watches are in place and
    /// when a missing or lost root is watched again.
    scans: Option<std::sync::mpsc::Sender<Watching>>,
    /// The last known state of files (a directory moved out of the tree
    /// takes the files known below it with it).
    state: Arc<FileState>,
    /// A second inotify instance watching the nearest existing parent of
    /// each root that is not watched, so its appearance is noticed at once
    /// rather than at the next retry (None: inotify instances ran out).
    parents: Option<Inotify>,
    parent_watches: HashMap<PathBuf, WatchDescriptor>,
    /// Something appeared near a missing root: retry roots now.
    retry_now: bool,
    /// When the watcher last gave back memory a burst left behind.
    last_compact: Instant,
    /// Until when memory is given back to the system after a burst.
    trim_until: Option<Instant>,
}

/// How often an idle watcher gives back memory left from a burst.
const COMPACT_EVERY: Duration = Duration::from_secs(5);
/// Records within one compaction interval that make a burst: memory is
/// then given back to the system (`memory::trim`) at every idle interval
/// for [`TRIM_FOR`], while the hasher and the buffer writer catch up and
/// free what the burst queued.
const BURST: u64 = 1000;
const TRIM_FOR: Duration = Duration::from_secs(90);

impl Watcher {
    pub(in crate::capture::files) fn new(
        cfg: FilesConfig,
        ctx: Arc<CaptureContext>,
        out: SyncSender<Observed>,
        stop: Arc<AtomicBool>,
        exclude: Exclusions,
        state: Arc<FileState>,
    ) -> std::io::Result<Watcher> {
        let inotify = Inotify::init()?;
        let window = Duration::from_millis(cfg.coalesce_ms);
        let mut roots: Vec<Root> = Vec::new();
        for p in &cfg.watch {
            roots.push(Root {
                path: p.clone(),
                kind: RootKind::Configured,
                watched: false,
                absent: false,
                mount_id: 0,
            });
        }
        for p in &cfg.removable_roots {
            roots.push(Root {
                path: p.clone(),
                kind: RootKind::RemovableRoot,
                watched: false,
                absent: false,
                mount_id: 0,
            });
        }
        // A test build's hook only (`test_hooks.rs`); None in production.
        let pause = crate::test_hooks::files_pause();
        let parents = Inotify::init()
            .inspect_err(|e| {
                tracing::warn!(error = %e, "no second inotify instance: a missing files.watch root is noticed only at the next retry (every 30 s)");
            })
            .ok();
        Ok(Watcher {
            cfg,
            emit: Emitter::new("inotify", ctx, out, stop),
            inotify,
            dirs: HashMap::new(),
            roots,
            exclude,
            coalescer: Coalescer::new(window, MAX_HOLD.max(window * 4)),
            moves: MovePairs::new(MOVE_GRACE),
            sys: System::default(),
            mounts: Vec::new(),
            mountinfo: None,
            pause,
            enospc: (0, None),
            last_retry: Instant::now(),
            fan: None,
            scans: None,
            state,
            parents,
            parent_watches: HashMap::new(),
            retry_now: false,
            last_compact: Instant::now(),
            trim_until: None,
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

    /// Runs until the stop flag is set, then reports what is pending.
    pub(in crate::capture::files) fn run(mut self) {
        self.start_watching();
        let mut buf = vec![0u8; 64 * 1024];
        while !self.emit.stopped() {
            self.step(&mut buf);
        }
        for f in self.moves.drain() {
            self.moved_out(f);
        }
        for r in self.coalescer.drain() {
            self.emit_ready(r, None);
        }
        tracing::info!("file capture stopped");
    }

    /// Opens the mount table and fanotify, watches the roots and the
    /// removable volumes, and tells the catch-up scan.
    fn start_watching(&mut self) {
        self.mountinfo = match std::fs::File::open("/proc/self/mountinfo") {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::error!(error = %e, "cannot read /proc/self/mountinfo: removable media are not detected");
                None
            }
        };
        self.fan = match Attribution::init() {
            Ok(a) => {
                tracing::info!(
                    "fanotify available: writes are recorded with their process and user"
                );
                Some(a)
            }
            Err(e) => {
                tracing::info!(error = %e, "fanotify unavailable (needs CAP_SYS_ADMIN): file records carry no process or user (inotify only)");
                None
            }
        };
        self.mounts = self.read_mounts();
        for i in 0..self.roots.len() {
            self.watch_root(i, true);
        }
        let initial: Vec<Mount> = self.mounts.clone();
        for m in &initial {
            self.volume_appeared(m, "mounted before the agent started");
        }
        self.report_enospc(Instant::now());
        tracing::info!(
            directories = self.dirs.len(),
            roots = self.roots.iter().filter(|r| r.watched).count(),
            "file capture watching"
        );
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
        // Follows the parents of missing roots (and catches one that
        // appeared since its first try).
        self.retry_roots();
    }

    /// One turn of the loop: waits for the kernel (or the next deadline)
    /// and handles what is due.
    fn step(&mut self, buf: &mut [u8]) {
        let paused = self.pause.as_ref().is_some_and(|p| p.exists());
        let now = Instant::now();
        let mut wake = now + Duration::from_millis(500);
        for d in [self.coalescer.next_deadline(), self.moves.next_deadline()]
            .into_iter()
            .flatten()
        {
            wake = wake.min(d);
        }
        let timeout = if paused {
            Duration::from_millis(50)
        } else {
            wake.saturating_duration_since(now)
        };
        let ready = self.poll(timeout, paused);
        // Writers first, so records emitted below can name them.
        if ready.fan
            && let Some(a) = self.fan.as_mut()
        {
            a.read();
        }
        if ready.inotify {
            self.read(buf);
        }
        if ready.mounts {
            self.mounts_changed();
        }
        if ready.parents {
            self.parents_changed(buf);
        }
        let now = Instant::now();
        if !paused {
            for f in self.moves.expired(now) {
                self.moved_out(f);
            }
        }
        self.check_writers(now);
        for r in self.coalescer.due(now) {
            self.emit_ready(r, None);
        }
        if self.retry_now || now >= self.last_retry + RETRY {
            self.retry_now = false;
            self.last_retry = now;
            self.retry_roots();
        }
        self.report_enospc(now);
        self.compact(now);
    }

    /// Files written without a close seen, quiet for the window: complete
    /// unless a process still holds them open for writing (`writers.rs`).
    fn check_writers(&mut self, now: Instant) {
        let unconfirmed = self.coalescer.unconfirmed(now);
        if unconfirmed.is_empty() {
            return;
        }
        let writers = writers::open_for_writing(&unconfirmed);
        for p in &unconfirmed {
            // Unknown: wait for the close (or the hold), as for a writer.
            let open = writers.as_ref().is_none_or(|w| w.contains(p));
            self.coalescer.writer(p, open);
        }
    }

    /// When idle, gives back the memory a burst left in the watcher's
    /// tables and, through the allocator, to the system.
    fn compact(&mut self, now: Instant) {
        if now < self.last_compact + COMPACT_EVERY || !self.coalescer.is_empty() {
            return;
        }
        self.last_compact = now;
        self.coalescer.compact();
        self.moves.compact();
        if let Some(a) = self.fan.as_mut() {
            a.compact(now);
        }
        if self.emit.take_sent() >= BURST {
            self.trim_until = Some(now + TRIM_FOR);
        }
        match self.trim_until {
            Some(until) if now <= until => crate::memory::trim(),
            Some(_) => self.trim_until = None,
            None => {}
        }
    }

    fn tell(&self, w: Watching) {
        if let Some(s) = &self.scans {
            let _ = s.send(w);
        }
    }

    /// Waits for any of the watcher's descriptors.
    fn poll(&mut self, timeout: Duration, paused: bool) -> Readiness {
        let ts = rustix::event::Timespec::try_from(timeout).unwrap_or_default();
        let ino = self.inotify.as_fd();
        let fan = self.fan.as_ref().map(|a| a.fd());
        let parents = self.parents.as_ref().map(|p| p.as_fd());
        let mut fds = Vec::with_capacity(4);
        let mut slots = [None; 4];
        if !paused {
            slots[0] = Some(fds.len());
            fds.push(PollFd::new(&ino, PollFlags::IN));
        }
        if let Some(m) = &self.mountinfo {
            slots[1] = Some(fds.len());
            fds.push(PollFd::new(m, PollFlags::PRI));
        }
        if let Some(f) = &fan
            && !paused
        {
            slots[2] = Some(fds.len());
            fds.push(PollFd::new(f, PollFlags::IN));
        }
        if let Some(p) = &parents {
            slots[3] = Some(fds.len());
            fds.push(PollFd::new(p, PollFlags::IN));
        }
        if let Err(e) = rustix::event::poll(&mut fds, Some(&ts)) {
            if e != rustix::io::Errno::INTR {
                tracing::warn!(error = %e, "poll on inotify failed");
                std::thread::sleep(Duration::from_millis(100));
            }
            return Readiness::default();
        }
        let ready = |slot: Option<usize>, flags: PollFlags| {
            slot.and_then(|i| fds.get(i))
                .is_some_and(|f| f.revents().intersects(flags))
        };
        Readiness {
            inotify: ready(slots[0], PollFlags::IN | PollFlags::ERR),
            mounts: ready(slots[1], PollFlags::PRI | PollFlags::ERR),
            fan: ready(slots[2], PollFlags::IN | PollFlags::ERR),
            parents: ready(slots[3], PollFlags::IN | PollFlags::ERR),
        }
    }

    fn read(&mut self, buf: &mut [u8]) {
        loop {
            let events: Vec<inotify::EventOwned> = match self.inotify.read_events(buf) {
                Ok(evs) => evs.map(|e| e.to_owned()).collect(),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!(error = %e, "reading inotify events failed");
                    return;
                }
            };
            if events.is_empty() {
                return;
            }
            let now = Instant::now();
            for ev in events {
                self.handle(ev, now);
            }
        }
    }
}

impl Emit for Watcher {
    fn emitter(&mut self) -> &mut Emitter {
        &mut self.emit
    }

    /// The mounted volume the path lies on. Only a mounted volume is
    /// removable media: a plain directory under a removable root (nothing
    /// mounted there) lies on the volume below it, which `volume_of`
    /// already classified.
    fn place(&self, path: &Path, f: &mut FileEvent) {
        if let Some(m) = volume_of(&self.mounts, path) {
            f.volume = m.mount_point.display().to_string();
            f.removable = m.removable;
            if m.removable {
                f.device = m.source.clone();
                f.volume_label = m.label.clone();
            }
        }
    }

    /// The writer fanotify saw close the file (at its old or its current
    /// path), forgotten once it is named.
    fn attribute(&mut self, r: &Ready, content: &Path, event: &mut Event) {
        let Some(a) = self.fan.as_mut() else {
            return;
        };
        let Some(w) = a
            .writer_of(&r.path, r.first)
            .or_else(|| a.writer_of(content, r.first))
            .cloned()
        else {
            return;
        };
        a.forget(&r.path);
        a.forget(content);
        if let Some(Kind::File(f)) = event.kind.as_mut() {
            fanotify::attribute(f, &w);
            if let Some(uid) = w.uid {
                event.user = crate::capture::host::user_name(uid);
            }
        }
    }
}
