//! The mount table followed through `/proc/self/mountinfo`: removable
//! volumes watched while mounted, their mounts and unmounts recorded.

use kiroku_common::vocabulary::file_op;
use std::io::{Read, Seek};
use std::time::Instant;

use super::super::HashPlan;
use super::super::emit::Emit;
use super::super::volumes::Mount;
use super::{Root, RootKind, Scan, Watcher};

impl Watcher {
    pub(super) fn read_mounts(&mut self) -> Vec<Mount> {
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

    pub(super) fn mounts_changed(&mut self) {
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

    pub(super) fn volume_appeared(&mut self, m: &Mount, when: &str) {
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
            absent: false,
            mount_id: m.mount_id,
        });
        self.watch_tree(&m.mount_point, Scan::Silent, Instant::now());
        let mut detail = format!("removable ({}), {}", m.removable_reason, m.fstype);
        if !when.is_empty() {
            detail.push_str(&format!("; {when}"));
        }
        tracing::info!(volume = %m.mount_point.display(), device = %m.source, "removable volume mounted");
        self.emit_now(
            file_op::VOLUME_MOUNTED,
            &m.mount_point.clone(),
            |f| f.detail = detail,
            HashPlan::None,
        );
    }

    pub(super) fn volume_gone(&mut self, m: &Mount) {
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
        self.emit_now(
            file_op::VOLUME_UNMOUNTED,
            &point,
            |f| {
                f.volume = point.display().to_string();
                f.removable = true;
                f.device = source;
                f.volume_label = label;
                f.detail = fstype;
            },
            HashPlan::None,
        );
    }
}
