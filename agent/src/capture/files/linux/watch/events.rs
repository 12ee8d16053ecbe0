//! Kernel events turned into records: creates, writes (through the
//! coalescer), deletes, renames paired by cookie (moves out of or into the
//! tree become delete/create), queue overflows.

use kiroku_common::vocabulary::file_op;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use inotify::EventMask;

use super::super::HashPlan;
use super::super::coalesce::MovedFrom;
use super::super::emit::Emit;
use super::{Scan, Watcher};

impl Watcher {
    pub(super) fn handle(&mut self, ev: inotify::EventOwned, now: Instant) {
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
                self.emit_dir_created(&path, "directory");
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
            self.emit_delete(&path, is_dir);
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
    /// Returns the paths it recorded.
    pub(super) fn flush_path(
        &mut self,
        path: &Path,
        is_dir: bool,
        moved_to: Option<&Path>,
    ) -> Vec<PathBuf> {
        let ready = if is_dir {
            self.coalescer.take_under(path)
        } else {
            self.coalescer.take(path).into_iter().collect()
        };
        let mut flushed = Vec::with_capacity(ready.len());
        for r in ready {
            let now_at = moved_to.map(|to| match r.path.strip_prefix(path) {
                Ok(rest) if !rest.as_os_str().is_empty() => to.join(rest),
                _ => to.to_owned(),
            });
            flushed.push(r.path.clone());
            self.emit_ready(r, now_at);
        }
        flushed
    }

    /// A directory moved out of the watched tree takes its files with it:
    /// one delete for each file known below it (from the kept state, and
    /// those whose record was just flushed), before the directory's own.
    /// The kernel says nothing about them (their watches left with the
    /// directory), and the investigator would otherwise see them vanish
    /// without a trace.
    fn files_moved_out(&mut self, dir: &Path, flushed: Vec<PathBuf>) {
        let mut files: BTreeSet<PathBuf> = self
            .state
            .paths_under(&dir.display().to_string())
            .map(PathBuf::from)
            .collect();
        files.extend(flushed);
        for p in files {
            if self.exclude.path(&p) {
                continue;
            }
            self.emit_moved_with(&p, dir);
        }
    }

    pub(super) fn renamed(&mut self, from: MovedFrom, to: PathBuf) {
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
        self.emit_rename(&from.path, &to, from.is_dir);
    }

    pub(super) fn moved_in(&mut self, path: PathBuf, is_dir: bool, now: Instant) {
        if is_dir {
            self.emit_dir_created(&path, "directory moved into the watched tree");
            self.watch_tree(&path, Scan::Report, now);
        } else {
            self.coalescer.create(&path, now);
            self.coalescer.close_write(&path, now);
        }
    }

    pub(super) fn moved_out(&mut self, from: MovedFrom) {
        let flushed = self.flush_path(&from.path, from.is_dir, None);
        if from.is_dir {
            self.unwatch_under(&from.path);
            self.files_moved_out(&from.path, flushed);
        }
        self.emit_moved_away(&from.path, from.is_dir);
    }

    pub(super) fn overflow(&mut self) {
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
        self.emit_now(
            file_op::OVERFLOW,
            &root,
            |f| f.detail = detail,
            HashPlan::None,
        );
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
}
