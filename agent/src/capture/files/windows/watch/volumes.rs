//! Roots: watched at start, lost and watched again (checked every 5 s),
//! and removable drives found by polling the drive letters
//! (`drives.rs` decides, `sys.rs` asks Windows).

use kiroku_common::vocabulary::file_op;
use std::path::PathBuf;

use super::super::super::HashPlan;
use super::super::catchup::Watching;
use super::super::drives::{self, Drive};
use super::super::emit::Emit;
use super::super::sys::{DirWatch, Win32Drives};
use super::{Medium, RETRY, Root, RootKind, Watcher};

impl Watcher {
    pub(super) fn watch_root(&mut self, i: usize, first: bool) {
        let path = self.roots[i].path.clone();
        let kind = self.roots[i].kind;
        match DirWatch::open(&path) {
            Ok(w) => {
                self.roots[i].watch = Some(w);
                self.roots[i].absent = false;
                if !first {
                    self.root_back(i);
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

    fn root_back(&mut self, i: usize) {
        let path = self.roots[i].path.clone();
        tracing::info!(root = %path.display(), "watching again");
        if self.roots[i].kind != RootKind::Configured {
            return; // Absent removable roots are normal, never a gap.
        }
        let since_ms = kiroku_common::now_ms();
        self.emit_watched_again(&path);
        self.tell(Watching::Appeared {
            root: path,
            since_ms,
        });
    }

    /// Root `i` is no longer watched.
    pub(super) fn root_lost(&mut self, i: usize, why: &str) {
        let root = &mut self.roots[i];
        root.watch = None;
        let (path, kind) = (root.path.clone(), root.kind);
        self.flush_path(&path, None);
        if kind != RootKind::Configured {
            // A removable root or drive that went away: normal.
            tracing::info!(root = %path.display(), "{why}");
            return;
        }
        self.emit_root_lost(&path, why, RETRY);
    }

    /// Watched roots still there? Missing ones there now?
    pub(super) fn check_roots(&mut self) {
        for i in 0..self.roots.len() {
            if self.roots[i].kind == RootKind::Drive {
                continue; // The drive poll follows those.
            }
            if self.roots[i].watch.is_some() {
                if !self.roots[i].path.is_dir() {
                    self.root_lost(i, "is gone (deleted, renamed or its drive removed)");
                }
            } else {
                self.watch_root(i, false);
            }
        }
    }

    /// Drives that appeared or went since the last poll.
    pub(super) fn poll_drives(&mut self, when: &str) {
        let now = drives::removable_drives(&Win32Drives);
        let (gone, appeared) = drives::changes(&self.drives, &now);
        self.drives = now;
        for d in gone {
            self.drive_gone(&d);
        }
        for d in appeared {
            self.drive_appeared(d, when);
        }
    }

    fn drive_appeared(&mut self, d: Drive, when: &str) {
        let path = PathBuf::from(&d.root);
        if self.exclude.dir(&path) {
            return;
        }
        let medium = Medium {
            device: d.device(),
            label: d.label.clone(),
        };
        let mut root = Root::new(path.clone(), RootKind::Drive, Some(medium));
        root.drive = Some(d.clone());
        match DirWatch::open(&path) {
            Ok(w) => root.watch = Some(w),
            Err(e) => {
                tracing::warn!(drive = %d.root, error = %e, "cannot watch a removable drive");
                return;
            }
        }
        self.roots.push(root);
        let mut detail = format!("removable (drive type removable), {}", d.fs);
        if !when.is_empty() {
            detail.push_str(&format!("; {when}"));
        }
        tracing::info!(drive = %d.root, label = %d.label, device = %d.device(), "removable drive appeared");
        self.emit_now(
            file_op::VOLUME_MOUNTED,
            &path,
            |f| f.detail = detail,
            HashPlan::None,
        );
    }

    fn drive_gone(&mut self, d: &Drive) {
        let Some(i) = self
            .roots
            .iter()
            .position(|r| r.kind == RootKind::Drive && r.drive.as_ref() == Some(d))
        else {
            return;
        };
        let path = self.roots[i].path.clone();
        self.flush_path(&path, None);
        tracing::info!(drive = %d.root, device = %d.device(), "removable drive removed");
        // Described from what was known while it was there: recorded
        // before its root goes.
        self.emit_now(
            file_op::VOLUME_UNMOUNTED,
            &path,
            |f| f.detail = d.fs.clone(),
            HashPlan::None,
        );
        self.roots.remove(i);
    }
}
