//! Watches: the configured roots, the trees below them, roots that are
//! missing or lost (retried, and noticed early through a watch on their
//! nearest existing parent), and the kernel's watch limit.

use kiroku_common::vocabulary::file_op;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use inotify::{WatchDescriptor, WatchMask};

use super::super::HashPlan;
use super::super::catchup::Watching;
use super::super::emit::Emit;
use super::{Dir, ENOSPC_REPORT_EVERY, MASK, RETRY, RootKind, Scan, Watcher};

/// What wakes the retry of a missing root: an entry appearing in (or
/// renamed into, or made accessible in) its nearest existing parent, or
/// that parent going away.
const PARENT_MASK: WatchMask = WatchMask::CREATE
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::ATTRIB)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF)
    .union(WatchMask::ONLYDIR);

impl Watcher {
    pub(super) fn root_index(&self, path: &Path) -> Option<usize> {
        self.roots.iter().position(|r| r.watched && r.path == path)
    }

    pub(super) fn watch_root(&mut self, i: usize, first: bool) {
        let path = self.roots[i].path.clone();
        let kind = self.roots[i].kind;
        match self.add_watch(&path) {
            Ok(()) => {
                self.roots[i].watched = true;
                self.roots[i].absent = false;
                self.watch_tree(&path, Scan::Silent, Instant::now());
                if !first {
                    self.root_back(&path, kind);
                }
            }
            Err(e) => {
                self.roots[i].absent = e.kind() == std::io::ErrorKind::NotFound;
                if kind == RootKind::Configured && first {
                    self.emit_cannot_watch(&path, &e, RETRY);
                }
            }
        }
    }

    /// A root that was missing or lost is watched (again): the end of the
    /// gap is a record, and what is in the root is scanned (files never
    /// seen are recorded as created, known ones compared) since the watch
    /// only sees what happens from now on.
    pub(super) fn root_back(&mut self, path: &Path, kind: RootKind) {
        tracing::info!(root = %path.display(), "watching again");
        if kind != RootKind::Configured {
            return; // Absent removable roots are normal, never a gap.
        }
        let since_ms = kiroku_common::now_ms();
        self.emit_watched_again(path);
        self.tell(Watching::Appeared {
            root: path.to_owned(),
            since_ms,
        });
    }

    /// Tries again the roots that are not watched, then follows the
    /// nearest existing parent of those still missing.
    pub(super) fn retry_roots(&mut self) {
        // A parent watched only now says nothing of what appeared before
        // its watch existed: try the roots again until no new parent
        // watch was needed (bounded by the depth of the missing paths).
        for _ in 0..16 {
            for i in 0..self.roots.len() {
                if !self.roots[i].watched && self.roots[i].kind != RootKind::Volume {
                    self.watch_root(i, false);
                }
            }
            if !self.watch_parents() {
                break;
            }
        }
    }

    /// Keeps a watch (on the second inotify instance) on the nearest
    /// existing parent of each root that is not watched: the directory
    /// appearing, or a missing parent of it, wakes [`Watcher::retry_roots`].
    /// True when it added a watch.
    pub(super) fn watch_parents(&mut self) -> bool {
        let Some(parents) = self.parents.as_mut() else {
            return false;
        };
        let wanted: HashSet<PathBuf> = self
            .roots
            .iter()
            .filter(|r| !r.watched && r.kind != RootKind::Volume)
            .filter_map(|r| r.path.ancestors().skip(1).find(|a| a.is_dir()))
            .map(Path::to_owned)
            .collect();
        self.parent_watches.retain(|dir, wd| {
            let keep = wanted.contains(dir);
            if !keep {
                let _ = parents.watches().remove(wd.clone());
            }
            keep
        });
        let mut added = false;
        for dir in wanted {
            if self.parent_watches.contains_key(&dir) {
                continue;
            }
            match parents.watches().add(&dir, PARENT_MASK) {
                Ok(wd) => {
                    self.parent_watches.insert(dir, wd);
                    added = true;
                }
                Err(e) => {
                    tracing::debug!(dir = %dir.display(), error = %e, "cannot watch the parent of a missing root: it is retried every 30 s");
                }
            }
        }
        added
    }

    /// Something changed in the parent of a missing root: retry at once.
    pub(super) fn parents_changed(&mut self, buf: &mut [u8]) {
        let Some(parents) = self.parents.as_mut() else {
            return;
        };
        loop {
            match parents.read_events(buf) {
                Ok(mut evs) => {
                    if evs.next().is_none() {
                        break;
                    }
                    // Drain what is queued; what happened does not matter.
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        self.retry_now = true;
    }

    pub(super) fn root_lost(&mut self, i: usize, why: &str) {
        let root = &mut self.roots[i];
        root.watched = false;
        let path = root.path.clone();
        let kind = root.kind;
        if kind == RootKind::Volume {
            // The unmount is reported from the mount table.
            return;
        }
        self.emit_root_lost(&path, why, RETRY);
        // The main loop then follows its nearest existing parent.
        self.retry_now = true;
    }

    pub(super) fn add_watch(&mut self, dir: &Path) -> std::io::Result<()> {
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
    pub(super) fn watch_tree(&mut self, top: &Path, scan: Scan, now: Instant) {
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
                        self.emit_dir_created(&p, "directory");
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
    pub(super) fn unwatch_under(&mut self, dir: &Path) {
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

    pub(super) fn report_enospc(&mut self, now: Instant) {
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
        self.emit_now(
            file_op::WATCH_LOST,
            &root,
            |f| f.detail = detail,
            HashPlan::None,
        );
    }
}
