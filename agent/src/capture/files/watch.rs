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

use std::collections::HashMap;
use std::io::{Read, Seek};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use kiroku_proto::FileEvent;
use kiroku_proto::event::Kind;
use rustix::event::{PollFd, PollFlags};

use super::coalesce::{Coalescer, Exclusions, MovePairs, MovedFrom, Ready, WriteOp};
use super::fanotify::{Attribution, attribute};
use super::volumes::{Mount, System, volume_of};
use super::{HashPlan, Observed, TEST_PAUSE_ENV};
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

pub(super) struct Watcher {
    cfg: FilesConfig,
    ctx: Arc<CaptureContext>,
    out: SyncSender<Observed>,
    stop: Arc<AtomicBool>,
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
    /// Told when the initial watches are in place (Unix ms), for the
    /// catch-up scan.
    ready: Option<std::sync::mpsc::Sender<i64>>,
}

impl Watcher {
    pub(super) fn new(
        cfg: FilesConfig,
        ctx: Arc<CaptureContext>,
        out: SyncSender<Observed>,
        stop: Arc<AtomicBool>,
        exclude: Exclusions,
    ) -> std::io::Result<Watcher> {
        let inotify = Inotify::init()?;
        let window = Duration::from_millis(cfg.coalesce_ms);
        let mut roots: Vec<Root> = Vec::new();
        for p in &cfg.watch {
            roots.push(Root {
                path: p.clone(),
                kind: RootKind::Configured,
                watched: false,
                mount_id: 0,
            });
        }
        for p in &cfg.removable_roots {
            roots.push(Root {
                path: p.clone(),
                kind: RootKind::RemovableRoot,
                watched: false,
                mount_id: 0,
            });
        }
        let pause = std::env::var_os(TEST_PAUSE_ENV).map(PathBuf::from);
        if let Some(p) = &pause {
            tracing::warn!(
                pause_file = %p.display(),
                "{TEST_PAUSE_ENV} is set: file capture stops reading kernel events while that file exists (tests only)"
            );
        }
        Ok(Watcher {
            cfg,
            ctx,
            out,
            stop,
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
            ready: None,
        })
    }

    /// Who to tell when the initial watches are in place.
    pub(super) fn tell_when_watching(&mut self, ready: std::sync::mpsc::Sender<i64>) {
        self.ready = Some(ready);
    }

    /// Runs until the stop flag is set, then reports what is pending.
    pub(super) fn run(mut self) {
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
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(kiroku_common::now_ms());
        }
        let mut buf = vec![0u8; 64 * 1024];
        while !self.stop.load(Ordering::Relaxed) {
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
            let (readable, mounts_changed, fan) = self.poll(timeout, paused);
            // Writers first, so records emitted below can name them.
            if fan && let Some(a) = self.fan.as_mut() {
                a.read();
            }
            if readable {
                self.read(&mut buf);
            }
            if mounts_changed {
                self.mounts_changed();
            }
            let now = Instant::now();
            if !paused {
                for f in self.moves.expired(now) {
                    self.moved_out(f);
                }
            }
            for r in self.coalescer.due(now) {
                self.emit_ready(r, None);
            }
            if now >= self.last_retry + RETRY {
                self.last_retry = now;
                for i in 0..self.roots.len() {
                    if !self.roots[i].watched && self.roots[i].kind != RootKind::Volume {
                        self.watch_root(i, false);
                    }
                }
            }
            self.report_enospc(now);
        }
        for f in self.moves.drain() {
            self.moved_out(f);
        }
        for r in self.coalescer.drain() {
            self.emit_ready(r, None);
        }
        tracing::info!("file capture stopped");
    }

    /// Waits for (inotify readable, mount table changed, fanotify readable).
    fn poll(&mut self, timeout: Duration, paused: bool) -> (bool, bool, bool) {
        let ts = rustix::event::Timespec::try_from(timeout).unwrap_or_default();
        let ino = self.inotify.as_fd();
        let fan = self.fan.as_ref().map(|a| a.fd());
        let mut fds = Vec::with_capacity(3);
        let mut slots = [None; 3];
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
        if let Err(e) = rustix::event::poll(&mut fds, Some(&ts)) {
            if e != rustix::io::Errno::INTR {
                tracing::warn!(error = %e, "poll on inotify failed");
                std::thread::sleep(Duration::from_millis(100));
            }
            return (false, false, false);
        }
        let ready = |slot: Option<usize>, flags: PollFlags| {
            slot.and_then(|i| fds.get(i))
                .is_some_and(|f| f.revents().intersects(flags))
        };
        (
            ready(slots[0], PollFlags::IN | PollFlags::ERR),
            ready(slots[1], PollFlags::PRI | PollFlags::ERR),
            ready(slots[2], PollFlags::IN | PollFlags::ERR),
        )
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

    // ------------------------------------------------------------ events --

    fn handle(&mut self, ev: inotify::EventOwned, now: Instant) {
        if ev.mask.contains(EventMask::Q_OVERFLOW) {
            self.overflow();
            return;
        }
        let Some(dir) = self.dirs.get(&ev.wd) else {
            return; // A watch we already dropped.
        };
        let dir_path = dir.path.clone();
        if ev.mask.contains(EventMask::IGNORED) {
            self.dirs.remove(&ev.wd);
            if let Some(i) = self.root_index(&dir_path)
                && !self.dirs.values().any(|d| d.path == dir_path)
            {
                self.root_lost(
                    i,
                    "is no longer watched (deleted, or its filesystem was unmounted)",
                );
            }
            return;
        }
        if ev
            .mask
            .intersects(EventMask::DELETE_SELF | EventMask::UNMOUNT)
        {
            return; // IN_IGNORED follows; the parent reports the delete.
        }
        if ev.mask.contains(EventMask::MOVE_SELF) {
            if let Some(i) = self.root_index(&dir_path) {
                self.unwatch_under(&dir_path);
                self.root_lost(i, "was moved or renamed");
            }
            return;
        }
        let Some(name) = ev.name else { return };
        let path = dir_path.join(name);
        let is_dir = ev.mask.contains(EventMask::ISDIR);
        let excluded = if is_dir {
            self.exclude.dir(&path)
        } else {
            self.exclude.path(&path)
        };
        if excluded {
            return;
        }
        if ev.mask.contains(EventMask::CREATE) {
            if is_dir {
                self.emit_now(
                    "create",
                    &path,
                    |f| f.detail = "directory".into(),
                    HashPlan::Stat(path.clone()),
                );
                self.watch_tree(&path, Scan::Report, now);
            } else {
                self.coalescer.create(&path, now);
            }
        } else if ev.mask.contains(EventMask::MODIFY) {
            self.coalescer.modify(&path, now);
        } else if ev.mask.contains(EventMask::CLOSE_WRITE) {
            self.coalescer.close_write(&path, now);
        } else if ev.mask.contains(EventMask::DELETE) {
            self.flush_path(&path, is_dir, None);
            self.emit_now(
                "delete",
                &path,
                |f| {
                    if is_dir {
                        f.detail = "directory".into();
                    }
                },
                HashPlan::None,
            );
        } else if ev.mask.contains(EventMask::MOVED_FROM) {
            self.moves
                .moved_from(ev.cookie, MovedFrom { path, is_dir }, now);
        } else if ev.mask.contains(EventMask::MOVED_TO) {
            match self.moves.moved_to(ev.cookie) {
                Some(from) => self.renamed(from, path),
                None => self.moved_in(path, is_dir, now),
            }
        }
    }

    /// Reports what is pending for `path` (and below, for a directory)
    /// before a delete or rename of it. `moved_to` is where the content is
    /// now, for hashing.
    fn flush_path(&mut self, path: &Path, is_dir: bool, moved_to: Option<&Path>) {
        let ready = if is_dir {
            self.coalescer.take_under(path)
        } else {
            self.coalescer.take(path).into_iter().collect()
        };
        for r in ready {
            let now_at = moved_to.map(|to| match r.path.strip_prefix(path) {
                Ok(rest) if !rest.as_os_str().is_empty() => to.join(rest),
                _ => to.to_owned(),
            });
            self.emit_ready(r, now_at);
        }
    }

    fn renamed(&mut self, from: MovedFrom, to: PathBuf) {
        self.flush_path(&from.path, from.is_dir, Some(&to));
        if from.is_dir {
            for d in self.dirs.values_mut() {
                if let Ok(rest) = d.path.strip_prefix(&from.path) {
                    d.path = if rest.as_os_str().is_empty() {
                        to.clone()
                    } else {
                        to.join(rest)
                    };
                }
            }
        }
        let old = from.path.display().to_string();
        let plan = if from.is_dir {
            HashPlan::Stat(to.clone())
        } else {
            HashPlan::Hash(to.clone())
        };
        self.emit_now(
            "rename",
            &to,
            |f| {
                f.old_path = old;
                if from.is_dir {
                    f.detail = "directory".into();
                }
            },
            plan,
        );
    }

    fn moved_in(&mut self, path: PathBuf, is_dir: bool, now: Instant) {
        if is_dir {
            self.emit_now(
                "create",
                &path,
                |f| f.detail = "directory moved into the watched tree".into(),
                HashPlan::Stat(path.clone()),
            );
            self.watch_tree(&path, Scan::Report, now);
        } else {
            self.coalescer.create(&path, now);
            self.coalescer.close_write(&path, now);
        }
    }

    fn moved_out(&mut self, from: MovedFrom) {
        self.flush_path(&from.path, from.is_dir, None);
        if from.is_dir {
            self.unwatch_under(&from.path);
        }
        let detail = if from.is_dir {
            "directory moved away (out of the watched tree, or to an excluded name)"
        } else {
            "moved away (out of the watched tree, or to an excluded name)"
        };
        self.emit_now(
            "delete",
            &from.path,
            |f| f.detail = detail.into(),
            HashPlan::None,
        );
    }

    fn overflow(&mut self) {
        let max = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "?".into());
        tracing::error!(
            max_queued_events = %max,
            "inotify queue overflow: the kernel dropped file events"
        );
        // Renames whose other half was dropped can never be paired.
        for f in self.moves.drain() {
            self.moved_out(f);
        }
        let detail = format!(
            "the kernel's inotify queue overflowed (fs.inotify.max_queued_events = {max}) and dropped file events: operations around this time are missing from the record. The agent re-added watches for directories created meanwhile. To prevent it: raise fs.inotify.max_queued_events (sysctl), exclude busy paths with files.exclude, or watch fewer directories."
        );
        let root = self
            .roots
            .iter()
            .find(|r| r.watched)
            .map(|r| r.path.clone())
            .unwrap_or_default();
        self.emit_now("overflow", &root, |f| f.detail = detail, HashPlan::None);
        // Directories created while events were lost have no watch yet.
        let now = Instant::now();
        let watched: Vec<PathBuf> = self
            .roots
            .iter()
            .filter(|r| r.watched)
            .map(|r| r.path.clone())
            .collect();
        for r in watched {
            self.watch_tree(&r, Scan::Silent, now);
        }
    }

    // ----------------------------------------------------------- watches --

    fn root_index(&self, path: &Path) -> Option<usize> {
        self.roots.iter().position(|r| r.watched && r.path == path)
    }

    fn watch_root(&mut self, i: usize, first: bool) {
        let path = self.roots[i].path.clone();
        let kind = self.roots[i].kind;
        match self.add_watch(&path) {
            Ok(()) => {
                self.roots[i].watched = true;
                self.watch_tree(&path, Scan::Silent, Instant::now());
                if !first {
                    tracing::info!(root = %path.display(), "watching again");
                }
            }
            Err(e) => {
                if kind == RootKind::Configured && first {
                    let detail = format!(
                        "cannot watch {}: {e}. File operations below it are not recorded. Create the directory or give the agent access (or fix files.watch); the agent tries again every 30 s.",
                        path.display()
                    );
                    tracing::error!(root = %path.display(), error = %e, "cannot watch a files.watch root");
                    self.emit_now("watch_lost", &path, |f| f.detail = detail, HashPlan::None);
                }
            }
        }
    }

    fn root_lost(&mut self, i: usize, why: &str) {
        let root = &mut self.roots[i];
        root.watched = false;
        let path = root.path.clone();
        let kind = root.kind;
        if kind == RootKind::Volume {
            // The unmount is reported from the mount table.
            return;
        }
        let detail = format!(
            "{} {why}: file operations below it are no longer recorded. The agent tries to watch it again every 30 s; restore the directory (or fix files.watch).",
            path.display()
        );
        tracing::error!(root = %path.display(), "{why}");
        self.emit_now("watch_lost", &path, |f| f.detail = detail, HashPlan::None);
    }

    fn add_watch(&mut self, dir: &Path) -> std::io::Result<()> {
        match self.inotify.watches().add(dir, MASK) {
            Ok(wd) => {
                if let Some(a) = self.fan.as_mut() {
                    a.mark_dir(dir);
                }
                self.dirs.insert(
                    wd,
                    Dir {
                        path: dir.to_owned(),
                    },
                );
                Ok(())
            }
            Err(e) => {
                if e.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()) {
                    self.enospc.0 += 1;
                }
                Err(e)
            }
        }
    }

    /// Watches `top` and every directory below it (not following symlinks,
    /// skipping excluded ones). With [`Scan::Report`] whatever is found is
    /// reported as created.
    fn watch_tree(&mut self, top: &Path, scan: Scan, now: Instant) {
        let mut stack = vec![top.to_owned()];
        while let Some(dir) = stack.pop() {
            if dir != top && self.exclude.dir(&dir) {
                continue;
            }
            if let Err(e) = self.add_watch(&dir) {
                tracing::debug!(dir = %dir.display(), error = %e, "cannot watch directory");
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let Ok(t) = e.file_type() else { continue };
                let p = e.path();
                if t.is_dir() {
                    if scan == Scan::Report && !self.exclude.dir(&p) {
                        self.emit_now(
                            "create",
                            &p,
                            |f| f.detail = "directory".into(),
                            HashPlan::Stat(p.clone()),
                        );
                    }
                    stack.push(p);
                } else if scan == Scan::Report && !self.exclude.path(&p) {
                    self.coalescer.create(&p, now);
                    self.coalescer.close_write(&p, now);
                }
            }
        }
    }

    /// Drops the watches of `dir` and below (moved out of the tree: the
    /// kernel's watches follow the inodes, our paths would be wrong).
    fn unwatch_under(&mut self, dir: &Path) {
        let wds: Vec<WatchDescriptor> = self
            .dirs
            .iter()
            .filter(|(_, d)| d.path.starts_with(dir))
            .map(|(w, _)| w.clone())
            .collect();
        for wd in wds {
            self.dirs.remove(&wd);
            let _ = self.inotify.watches().remove(wd);
        }
    }

    fn report_enospc(&mut self, now: Instant) {
        let (n, last) = self.enospc;
        if n == 0 || last.is_some_and(|t| now < t + ENOSPC_REPORT_EVERY) {
            return;
        }
        self.enospc = (0, Some(now));
        let max = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "?".into());
        let detail = format!(
            "{n} directories could not be watched: the kernel's limit of inotify watches per user is reached (fs.inotify.max_user_watches = {max}). File operations in them are not recorded. Raise fs.inotify.max_user_watches (sysctl) or exclude large trees with files.exclude."
        );
        tracing::error!(directories = n, max_user_watches = %max, "out of inotify watches");
        let root = self
            .roots
            .first()
            .map(|r| r.path.clone())
            .unwrap_or_default();
        self.emit_now("watch_lost", &root, |f| f.detail = detail, HashPlan::None);
    }

    // ------------------------------------------------------------ mounts --

    fn read_mounts(&mut self) -> Vec<Mount> {
        let Some(f) = self.mountinfo.as_mut() else {
            return Vec::new();
        };
        let mut text = String::new();
        if f.rewind()
            .and_then(|_| f.read_to_string(&mut text))
            .is_err()
        {
            return self.mounts.clone();
        }
        self.sys.mounts(&text, &self.cfg.removable_roots)
    }

    fn mounts_changed(&mut self) {
        let new = self.read_mounts();
        let old = std::mem::replace(&mut self.mounts, new.clone());
        for m in &old {
            if !new.iter().any(|n| n.mount_id == m.mount_id) {
                self.volume_gone(m);
            }
        }
        for m in &new {
            if !old.iter().any(|o| o.mount_id == m.mount_id) {
                self.volume_appeared(m, "");
            }
        }
    }

    fn volume_appeared(&mut self, m: &Mount, when: &str) {
        let under_root = self
            .cfg
            .removable_roots
            .iter()
            .any(|r| m.mount_point.starts_with(r));
        let wanted = m.removable && (self.cfg.removable_auto || under_root);
        if !wanted {
            // A filesystem mounted inside a watched tree is watched too.
            let inside = self
                .roots
                .iter()
                .any(|r| r.watched && m.mount_point.starts_with(&r.path));
            if inside && !when.is_empty() {
                return; // Covered by the initial walk.
            }
            if inside {
                self.watch_tree(&m.mount_point, Scan::Silent, Instant::now());
            }
            return;
        }
        if self.exclude.dir(&m.mount_point) {
            return;
        }
        self.roots.push(Root {
            path: m.mount_point.clone(),
            kind: RootKind::Volume,
            watched: true,
            mount_id: m.mount_id,
        });
        self.watch_tree(&m.mount_point, Scan::Silent, Instant::now());
        let mut detail = format!("removable ({}), {}", m.removable_reason, m.fstype);
        if !when.is_empty() {
            detail.push_str(&format!("; {when}"));
        }
        tracing::info!(volume = %m.mount_point.display(), device = %m.source, "removable volume mounted");
        self.emit_now(
            "volume_mounted",
            &m.mount_point.clone(),
            |f| f.detail = detail,
            HashPlan::None,
        );
    }

    fn volume_gone(&mut self, m: &Mount) {
        let Some(i) = self
            .roots
            .iter()
            .position(|r| r.kind == RootKind::Volume && r.mount_id == m.mount_id)
        else {
            return;
        };
        self.roots.remove(i);
        self.flush_path(&m.mount_point, true, None);
        tracing::info!(volume = %m.mount_point.display(), device = %m.source, "removable volume unmounted");
        let (point, source, label, fstype) = (
            m.mount_point.clone(),
            m.source.clone(),
            m.label.clone(),
            m.fstype.clone(),
        );
        // The mount is gone from the table: describe it from what we knew.
        let ev = self.file_event("volume_unmounted", &point, |f| {
            f.volume = point.display().to_string();
            f.removable = true;
            f.device = source;
            f.volume_label = label;
            f.detail = fstype;
        });
        self.send(Observed {
            event: Box::new(ev),
            hash: HashPlan::None,
        });
    }

    // ----------------------------------------------------------- records --

    /// A record stamped now, with the volume the path lies on.
    fn file_event(
        &self,
        op: &str,
        path: &Path,
        fill: impl FnOnce(&mut FileEvent),
    ) -> kiroku_proto::Event {
        let mut f = FileEvent {
            operation: op.to_owned(),
            path: path.display().to_string(),
            uid: -1,
            mechanism: "inotify".into(),
            coalesced: 1,
            ..Default::default()
        };
        if let Some(m) = volume_of(&self.mounts, path) {
            f.volume = m.mount_point.display().to_string();
            f.removable = m.removable;
            if m.removable {
                f.device = m.source.clone();
                f.volume_label = m.label.clone();
            }
        }
        if self.cfg.removable_roots.iter().any(|r| path.starts_with(r)) {
            f.removable = true;
        }
        fill(&mut f);
        let mut ev = self.ctx.event(String::new(), Kind::File(f));
        // inotify does not say who acted; the agent's own account did not.
        ev.user.clear();
        ev
    }

    fn emit_now(
        &mut self,
        op: &str,
        path: &Path,
        fill: impl FnOnce(&mut FileEvent),
        hash: HashPlan,
    ) {
        let event = self.file_event(op, path, fill);
        self.send(Observed {
            event: Box::new(event),
            hash,
        });
    }

    /// A coalesced record; `now_at` is where the content is now when the
    /// file was renamed before its record went out.
    fn emit_ready(&mut self, r: Ready, now_at: Option<PathBuf>) {
        let content = now_at.unwrap_or_else(|| r.path.clone());
        let mut event = self.file_event("", &r.path, |_| {});
        let writer = self
            .fan
            .as_ref()
            .and_then(|a| {
                a.writer_of(&r.path, r.first)
                    .or_else(|| a.writer_of(&content, r.first))
            })
            .cloned();
        if let (Some(w), Some(Kind::File(f))) = (&writer, event.kind.as_mut()) {
            attribute(f, w);
            if let Some(uid) = w.uid {
                event.user = crate::capture::host::user_name(uid);
            }
        }
        if let Some(Kind::File(f)) = event.kind.as_mut() {
            f.coalesced = r.count;
            f.operation = match (r.op, f.removable && r.closed) {
                (_, true) => "copy_to_removable",
                (WriteOp::Create, false) => "create",
                (WriteOp::Modify, false) => "modify",
            }
            .into();
            if !r.closed {
                f.hash_skipped = "still open for writing".into();
            }
        }
        let hash = if r.closed {
            HashPlan::Hash(content)
        } else {
            HashPlan::Stat(content)
        };
        self.send(Observed {
            event: Box::new(event),
            hash,
        });
    }

    fn send(&mut self, o: Observed) {
        // Blocks when the hasher is behind: the kernel queue then fills and
        // an overflow is reported, rather than memory growing unbounded.
        if self.out.send(o).is_err() {
            self.stop.store(true, Ordering::Relaxed);
        }
    }
}
