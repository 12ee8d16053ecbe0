//! Change records turned into file records: creates and writes (through
//! the coalescer), deletes, renames paired by order (an old name whose new
//! half does not follow was a move out of the tree or to an excluded
//! name: a delete; a new name without an old one a move in: a create),
//! overflows of the system's change buffer.

use kiroku_common::vocabulary::file_op;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::super::super::HashPlan;
use super::super::coalesce::MovedFrom;
use super::super::emit::Emit;
use super::super::notify::{Action, Notice};
use super::Watcher;

/// Most entries reported from a directory that appeared with content (a
/// folder moved or extracted into the tree); the rest is left to the
/// catch-up scan at the next start.
const NEW_DIR_MAX: usize = 10_000;
/// Deletes remembered so that a directory's own removal does not report
/// its files again (cleared every few seconds, and when this many).
const RECENT_DELETES: usize = 100_000;

impl Watcher {
    pub(super) fn handle(&mut self, root: &Path, n: Notice, now: Instant) {
        let path = root.join(&n.name);
        match n.action {
            Action::Added => {
                let is_dir = path.is_dir();
                if self.excluded(&path, is_dir) {
                    return;
                }
                if is_dir {
                    self.dir_appeared(&path, "directory", now);
                } else {
                    self.coalescer.create(&path, now);
                }
            }
            Action::Modified => {
                // A directory's own "modified" is a change inside it.
                if path.is_dir() || self.excluded(&path, false) {
                    return;
                }
                self.coalescer.modify(&path, now);
            }
            Action::Removed => {
                if self.excluded(&path, false) {
                    return;
                }
                self.flush_path(&path, None);
                let is_dir = self.files_gone_with(&path);
                self.emit_delete(&path, is_dir);
                self.note_deleted(path);
            }
            Action::RenamedOld => {
                if self.excluded(&path, false) {
                    return;
                }
                self.cookie = self.cookie.wrapping_add(1);
                let from = MovedFrom {
                    path,
                    is_dir: false,
                };
                self.moves.moved_from(self.cookie, from, now);
            }
            Action::RenamedNew => {
                let is_dir = path.is_dir();
                if self.excluded(&path, is_dir) {
                    return;
                }
                match self.moves.moved_to(self.cookie) {
                    Some(from) => self.renamed(from.path, path, is_dir),
                    None => self.moved_in(path, is_dir, now),
                }
            }
        }
    }

    /// A removed path that was a directory with known files below it
    /// (from the kept state): a directory moved out of the tree is one
    /// notice, and its files would otherwise vanish without a trace. Each
    /// one not deleted by a notice of its own just before (a recursive
    /// delete reports every file first) gets a delete. True when there
    /// were any (the path was a directory).
    fn files_gone_with(&mut self, dir: &Path) -> bool {
        let known: Vec<PathBuf> = self
            .state
            .paths_under(&dir.display().to_string())
            .map(PathBuf::from)
            .collect();
        for p in &known {
            if self.recently_deleted.contains(p) || self.exclude.path(p) {
                continue;
            }
            self.emit_moved_with(p, dir);
        }
        !known.is_empty()
    }

    /// Remembers a delete for a little while (see `files_gone_with`).
    fn note_deleted(&mut self, path: PathBuf) {
        if self.recently_deleted.len() >= RECENT_DELETES {
            self.recently_deleted.clear();
        }
        self.recently_deleted.insert(path);
    }

    fn excluded(&self, path: &Path, is_dir: bool) -> bool {
        if is_dir {
            self.exclude.dir(path)
        } else {
            self.exclude.path(path)
        }
    }

    /// Reports what is pending for `path` and below before a delete or
    /// rename of it. `moved_to` is where the content is now, for hashing.
    pub(super) fn flush_path(&mut self, path: &Path, moved_to: Option<&Path>) {
        for r in self.coalescer.take_under(path) {
            let now_at = moved_to.map(|to| match r.path.strip_prefix(path) {
                Ok(rest) if !rest.as_os_str().is_empty() => to.join(rest),
                _ => to.to_owned(),
            });
            self.emit_ready(r, now_at);
        }
    }

    fn renamed(&mut self, from: PathBuf, to: PathBuf, is_dir: bool) {
        self.flush_path(&from, Some(&to));
        self.emit_rename(&from, &to, is_dir);
    }

    fn moved_in(&mut self, path: PathBuf, is_dir: bool, now: Instant) {
        if is_dir {
            self.dir_appeared(&path, "directory moved into the watched tree", now);
        } else {
            self.coalescer.create(&path, now);
            self.coalescer.close_write(&path, now);
        }
    }

    pub(super) fn moved_out(&mut self, from: PathBuf) {
        self.flush_path(&from, None);
        let is_dir = self.files_gone_with(&from);
        self.emit_moved_away(&from, is_dir);
        self.note_deleted(from);
    }

    /// A directory that appeared: its record, and what it already holds
    /// as created (the recursive watch covers it from now on; what was
    /// inside before the notice came has no notice of its own).
    fn dir_appeared(&mut self, dir: &Path, detail: &str, now: Instant) {
        self.emit_dir_created(dir, detail);
        let mut stack = vec![dir.to_owned()];
        let mut seen = 0usize;
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                seen += 1;
                if seen > NEW_DIR_MAX {
                    tracing::warn!(dir = %dir.display(), "a directory appeared with more than {NEW_DIR_MAX} entries: the rest are not recorded as created");
                    return;
                }
                let Ok(t) = e.file_type() else { continue };
                let p = e.path();
                if t.is_dir() {
                    if !self.exclude.dir(&p) {
                        self.emit_dir_created(&p, "directory");
                        stack.push(p);
                    }
                } else if !self.exclude.path(&p) {
                    // A create without close: probed like any write.
                    self.coalescer.create(&p, now);
                }
            }
        }
    }

    /// The system dropped changes below root `i`.
    pub(super) fn overflow(&mut self, i: usize) {
        let root = self.roots[i].path.clone();
        tracing::error!(root = %root.display(), "the change buffer of a watched root overflowed: file events were dropped");
        // Renames whose other half was dropped can never be paired.
        for f in self.moves.drain() {
            self.moved_out(f.path);
        }
        let detail = format!(
            "Windows' change buffer for {} overflowed (ReadDirectoryChangesW: ERROR_NOTIFY_ENUM_DIR) and dropped file events: operations below it around this time are missing from the record. To prevent it: exclude busy paths with files.exclude, or watch smaller trees.",
            root.display()
        );
        self.emit_now(
            file_op::OVERFLOW,
            &root,
            |f| f.detail = detail,
            HashPlan::None,
        );
    }
}
