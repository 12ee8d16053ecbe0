//! The records a platform watcher sends to the hasher, built one way on
//! every platform.
//!
//! Both watchers (`linux/watch.rs`, `windows/watch.rs`) decide *what*
//! happened; this module says how that becomes a `FileEvent`: the fields
//! every record has (`uid = -1`, the watcher's mechanism, an empty user,
//! no host identity until the hasher stamps it), the operation and hash
//! plan of a coalesced write, the wording of the records both platforms
//! send (renames, deletes, new directories, roots that cannot be watched,
//! are lost or are watched again), and the blocking send to the hasher.
//!
//! What differs stays with the platform, behind [`Emit`]: where a path
//! lies ([`Emit::place`]: the mount table on Linux, removable roots and
//! drives on Windows) and who wrote a file ([`Emit::attribute`]: fanotify
//! on Linux, nothing on Windows).
//!
//! Invariant: the send blocks when the hasher is behind, so the kernel's
//! (or the system's) change queue fills and overflows, and that is
//! recorded, rather than memory growing unbounded here. A hasher that has
//! gone sets the stop flag, which ends the watcher's loop.

use kiroku_common::vocabulary::file_op;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::time::Duration;

use kiroku_proto::event::Kind;
use kiroku_proto::{Event, FileEvent};

use super::coalesce::{Ready, WriteOp};
use super::{HashPlan, Observed};
use crate::capture::context::CaptureContext;

/// A watcher's end of the queue to the hasher.
pub(super) struct Emitter {
    /// The `mechanism` of the records (`inotify`, `ReadDirectoryChangesW`).
    mechanism: &'static str,
    ctx: Arc<CaptureContext>,
    out: SyncSender<Observed>,
    stop: Arc<AtomicBool>,
    /// Records sent since [`Emitter::take_sent`] last asked.
    sent: u64,
}

impl Emitter {
    pub(super) fn new(
        mechanism: &'static str,
        ctx: Arc<CaptureContext>,
        out: SyncSender<Observed>,
        stop: Arc<AtomicBool>,
    ) -> Emitter {
        Emitter {
            mechanism,
            ctx,
            out,
            stop,
            sent: 0,
        }
    }

    /// The capture is stopping (asked to, or the hasher is gone).
    pub(super) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Records sent since the last call (how the watcher tells a burst).
    // Only the Linux watcher asks (it gives memory back after a burst).
    #[cfg_attr(windows, allow(dead_code))]
    pub(super) fn take_sent(&mut self) -> u64 {
        std::mem::take(&mut self.sent)
    }

    /// What every record of this watcher says before the platform adds
    /// where the path lies: the API does not say who acted.
    fn file(&self, op: &str, path: &Path) -> FileEvent {
        FileEvent {
            operation: op.to_owned(),
            path: path.display().to_string(),
            uid: -1,
            mechanism: self.mechanism.into(),
            coalesced: 1,
            ..Default::default()
        }
    }

    /// The record, bare: stamped with the host identity when it leaves
    /// the queue (`Observed`).
    fn event(&self, f: FileEvent) -> Event {
        let mut ev = self.ctx.bare_event(String::new(), Kind::File(f));
        // The watcher does not say who acted; the agent's own account did not.
        ev.user.clear();
        ev
    }

    fn send(&mut self, o: Observed) {
        self.sent += 1;
        // Blocks when the hasher is behind (the module's invariant).
        if self.out.send(o).is_err() {
            self.stop.store(true, Ordering::Relaxed);
        }
    }
}

/// A platform watcher as a source of records: it owns an [`Emitter`] and
/// says what only it knows; the provided methods build and send.
pub(super) trait Emit {
    fn emitter(&mut self) -> &mut Emitter;

    /// Fills the volume fields of the record for `path` (`volume`,
    /// `removable`, and for removable media `device`, `volume_label`).
    fn place(&self, path: &Path, f: &mut FileEvent);

    /// Names the writer of a coalesced write, when the platform knows it
    /// (`content` is where the file is now); the default knows nobody.
    fn attribute(&mut self, _r: &Ready, _content: &Path, _event: &mut Event) {}

    /// A record stamped now, with the volume the path lies on; `fill`
    /// comes last and may override any field.
    fn emit_now(
        &mut self,
        op: &str,
        path: &Path,
        fill: impl FnOnce(&mut FileEvent),
        hash: HashPlan,
    ) {
        let mut f = self.emitter().file(op, path);
        self.place(path, &mut f);
        fill(&mut f);
        let emitter = self.emitter();
        let event = emitter.event(f);
        emitter.send(Observed {
            event: Box::new(event),
            hash,
        });
    }

    /// A coalesced record; `now_at` is where the content is now when the
    /// file was renamed before its record went out.
    fn emit_ready(&mut self, r: Ready, now_at: Option<PathBuf>) {
        let content = now_at.unwrap_or_else(|| r.path.clone());
        let mut f = self.emitter().file("", &r.path);
        self.place(&r.path, &mut f);
        let mut event = self.emitter().event(f);
        self.attribute(&r, &content, &mut event);
        if let Some(Kind::File(f)) = event.kind.as_mut() {
            coalesced(f, &r);
        }
        let hash = if r.closed {
            HashPlan::Hash(content)
        } else {
            HashPlan::Stat(content)
        };
        self.emitter().send(Observed {
            event: Box::new(event),
            hash,
        });
    }

    /// `path` was deleted (a directory when `is_dir`).
    fn emit_delete(&mut self, path: &Path, is_dir: bool) {
        let detail = if is_dir { "directory" } else { "" };
        self.emit_now(
            file_op::DELETE,
            path,
            |f| f.detail = detail.into(),
            HashPlan::None,
        );
    }

    /// `path` left the watched tree, or was renamed to an excluded name.
    fn emit_moved_away(&mut self, path: &Path, is_dir: bool) {
        let detail = if is_dir {
            "directory moved away (out of the watched tree, or to an excluded name)"
        } else {
            "moved away (out of the watched tree, or to an excluded name)"
        };
        self.emit_now(
            file_op::DELETE,
            path,
            |f| f.detail = detail.into(),
            HashPlan::None,
        );
    }

    /// `file`, known below `dir`, left with it: the system reports only
    /// the directory, and the file would otherwise vanish without a trace.
    fn emit_moved_with(&mut self, file: &Path, dir: &Path) {
        let detail = format!(
            "moved away with its directory {} (out of the watched tree, or to an excluded name)",
            dir.display()
        );
        self.emit_now(file_op::DELETE, file, |f| f.detail = detail, HashPlan::None);
    }

    /// `from` was renamed to `to`: a file's content is hashed again (the
    /// hash memory learns the new path), a directory's only stat'ed.
    fn emit_rename(&mut self, from: &Path, to: &Path, is_dir: bool) {
        let old = from.display().to_string();
        let plan = if is_dir {
            HashPlan::Stat(to.to_owned())
        } else {
            HashPlan::Hash(to.to_owned())
        };
        self.emit_now(
            file_op::RENAME,
            to,
            |f| {
                f.old_path = old;
                if is_dir {
                    f.detail = "directory".into();
                }
            },
            plan,
        );
    }

    /// A directory that appeared (`detail` says how).
    fn emit_dir_created(&mut self, dir: &Path, detail: &str) {
        self.emit_now(
            file_op::CREATE,
            dir,
            |f| f.detail = detail.into(),
            HashPlan::Stat(dir.to_owned()),
        );
    }

    /// A `files.watch` root that cannot be watched at start; the watcher
    /// tries again every `retry`.
    fn emit_cannot_watch(&mut self, root: &Path, e: &std::io::Error, retry: Duration) {
        let detail = format!(
            "cannot watch {}: {e}. File operations below it are not recorded. Create the directory or give the agent access (or fix files.watch); the agent tries again every {} s.",
            root.display(),
            retry.as_secs()
        );
        tracing::error!(root = %root.display(), error = %e, "cannot watch a files.watch root");
        self.emit_now(
            file_op::WATCH_LOST,
            root,
            |f| f.detail = detail,
            HashPlan::None,
        );
    }

    /// A watched root that no longer is (`why` completes the sentence
    /// "<root> …"); the watcher tries again every `retry`.
    fn emit_root_lost(&mut self, root: &Path, why: &str, retry: Duration) {
        let detail = format!(
            "{} {why}: file operations below it are no longer recorded. The agent tries to watch it again every {} s; restore the directory (or fix files.watch).",
            root.display(),
            retry.as_secs()
        );
        tracing::error!(root = %root.display(), "{why}");
        self.emit_now(
            file_op::WATCH_LOST,
            root,
            |f| f.detail = detail,
            HashPlan::None,
        );
    }

    /// The end of a root's gap: it is watched again, and the catch-up
    /// scan (asked by the watcher) reports what it holds now.
    fn emit_watched_again(&mut self, root: &Path) {
        let detail = format!(
            "{} is watched again: file operations below it are recorded from now on. What it holds now was scanned: files not recorded before are recorded as created and changed ones as modified (mechanism = \"scan\"); files created and removed again while it was not watched left no trace.",
            root.display()
        );
        self.emit_now(
            file_op::WATCH_RESTORED,
            root,
            |f| f.detail = detail,
            HashPlan::None,
        );
    }
}

/// What a coalesced write says: how many events it merged, the operation
/// (a write closed on removable media is a copy to it), and why an
/// unclosed file is not hashed. `f.removable` is already filled.
fn coalesced(f: &mut FileEvent, r: &Ready) {
    f.coalesced = r.count;
    f.operation = match (r.op, f.removable && r.closed) {
        (_, true) => file_op::COPY_TO_REMOVABLE,
        (WriteOp::Create, false) => file_op::CREATE,
        (WriteOp::Modify, false) => file_op::MODIFY,
    }
    .into();
    if !r.closed {
        f.hash_skipped = "still open for writing".into();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn coalesced_operation() {
        use WriteOp::{Create, Modify};
        const OPEN: &str = "still open for writing";
        // (op, closed, removable) → (operation, hash_skipped)
        let cases = [
            (Create, true, false, file_op::CREATE, ""),
            (Modify, true, false, file_op::MODIFY, ""),
            (Create, true, true, file_op::COPY_TO_REMOVABLE, ""),
            (Modify, true, true, file_op::COPY_TO_REMOVABLE, ""),
            (Create, false, true, file_op::CREATE, OPEN),
            (Modify, false, false, file_op::MODIFY, OPEN),
        ];
        for (op, closed, removable, want, skipped) in cases {
            let r = Ready {
                path: PathBuf::from("/w/a"),
                op,
                count: 7,
                closed,
                first: Instant::now(),
            };
            let mut f = FileEvent {
                removable,
                ..Default::default()
            };
            coalesced(&mut f, &r);
            let case = format!("{op:?} closed={closed} removable={removable}");
            assert_eq!(f.operation, want, "{case}");
            assert_eq!(f.hash_skipped, skipped, "{case}");
            assert_eq!(f.coalesced, 7, "{case}");
        }
    }
}
