//! Who wrote a file, when the agent is privileged: a fanotify group
//! (`CAP_SYS_ADMIN`) marks the same directories inotify watches and reports
//! `FAN_CLOSE_WRITE` with the writer's pid. The watcher keeps the last
//! writer per path for a short while and puts it on the record it emits for
//! that close (`mechanism = "fanotify"`, pid, process, exe, uid, user).
//!
//! Best effort by design: without the privilege, or when a mark fails, the
//! record stays an inotify one (`uid = -1`). Deletes and renames are not
//! attributed (that needs fanotify's directory-entry events, Linux 5.1+ with
//! `FAN_REPORT_DFID_NAME`, not built).

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiroku_proto::FileEvent;
use nix::sys::fanotify::{EventFFlags, Fanotify, InitFlags, MarkFlags, MaskFlags};

/// The process that closed a file after writing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub pid: u32,
    pub process: String,
    pub exe: String,
    pub uid: Option<u32>,
}

/// How long a writer is remembered for its path (longer than any
/// coalescing window plus the hold of a file open for writing).
const REMEMBER: Duration = Duration::from_secs(120);
const MAX_REMEMBERED: usize = 50_000;
/// How much earlier than a record's first inotify event its writer's
/// fanotify event may have been read.
const SLACK: Duration = Duration::from_secs(1);

pub struct Attribution {
    fan: Fanotify,
    recent: HashMap<PathBuf, (Instant, Actor)>,
    own_pid: i32,
    mark_failures: u64,
}

impl Attribution {
    /// Fails without `CAP_SYS_ADMIN` (EPERM) or on kernels without fanotify.
    pub fn init() -> nix::Result<Attribution> {
        let fan = Fanotify::init(
            InitFlags::FAN_CLASS_NOTIF | InitFlags::FAN_CLOEXEC | InitFlags::FAN_NONBLOCK,
            EventFFlags::O_RDONLY | EventFFlags::O_LARGEFILE | EventFFlags::O_CLOEXEC,
        )?;
        Ok(Attribution {
            fan,
            recent: HashMap::new(),
            own_pid: std::process::id() as i32,
            mark_failures: 0,
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fan.as_fd()
    }

    /// Marks `dir` for close-after-write of its files. Failures only cost
    /// attribution there; they are counted and logged once.
    pub fn mark_dir(&mut self, dir: &Path) {
        let r = std::fs::File::open(dir)
            .map_err(|e| e.to_string())
            .and_then(|d| {
                self.fan
                    .mark(
                        MarkFlags::FAN_MARK_ADD,
                        MaskFlags::FAN_CLOSE_WRITE | MaskFlags::FAN_EVENT_ON_CHILD,
                        &d,
                        None::<&Path>,
                    )
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = r {
            if self.mark_failures == 0 {
                tracing::warn!(dir = %dir.display(), error = %e, "fanotify mark failed: writes there are recorded without their process");
            }
            self.mark_failures += 1;
        }
    }

    /// Reads every queued notification.
    pub fn read(&mut self) {
        loop {
            let events = match self.fan.read_events() {
                Ok(evs) if !evs.is_empty() => evs,
                Ok(_) => return,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::EAGAIN) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "reading fanotify events failed");
                    return;
                }
            };
            let now = Instant::now();
            for ev in events {
                let Some(fd) = ev.fd() else {
                    tracing::warn!(
                        "fanotify queue overflow: some writes are recorded without their process"
                    );
                    continue;
                };
                if ev.pid() == self.own_pid || !ev.mask().contains(MaskFlags::FAN_CLOSE_WRITE) {
                    continue;
                }
                let Ok(path) = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                else {
                    continue;
                };
                let actor = actor(ev.pid().max(0) as u32);
                self.remember(path, actor, now);
            }
        }
    }

    fn remember(&mut self, path: PathBuf, actor: Actor, now: Instant) {
        if self.recent.len() >= MAX_REMEMBERED {
            self.recent.retain(|_, (at, _)| now < *at + REMEMBER);
        }
        self.recent.insert(path, (now, actor));
    }

    /// Forgets writers too old to name any record and gives back the
    /// memory a burst left in the table (called when the watcher is idle).
    pub fn compact(&mut self, now: Instant) {
        self.recent.retain(|_, (at, _)| now < *at + REMEMBER);
        if self.recent.capacity() > 4 * self.recent.len().max(256) {
            self.recent.shrink_to_fit();
        }
    }

    /// Forgets the writer of `path` once a record named it: the next
    /// record of that path needs a close of its own anyway, and a burst of
    /// files must not keep 20,000 entries alive for two minutes.
    pub fn forget(&mut self, path: &Path) {
        self.recent.remove(path);
    }

    /// The last writer of `path`, if it closed it no earlier than `since`
    /// (the record's first kernel event, give or take `SLACK`: both queues
    /// are read in the same loop, fanotify first): an older writer is not
    /// the one this record is about.
    pub fn writer_of(&self, path: &Path, since: Instant) -> Option<&Actor> {
        self.recent
            .get(path)
            .filter(|(at, _)| *at + SLACK >= since && at.elapsed() < REMEMBER)
            .map(|(_, a)| a)
    }
}

/// What /proc says about `pid` (the process may be gone already: then the
/// pid alone).
pub fn actor(pid: u32) -> Actor {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let process = std::fs::read_to_string(proc.join("comm"))
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_default();
    let exe = std::fs::read_link(proc.join("exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let uid = std::fs::read_to_string(proc.join("status"))
        .ok()
        .and_then(|s| real_uid(&s));
    Actor {
        pid,
        process,
        exe,
        uid,
    }
}

/// The real uid from the `Uid:` line of /proc/<pid>/status.
fn real_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|u| u.parse().ok())
}

/// Puts the writer on a record.
pub fn attribute(f: &mut FileEvent, a: &Actor) {
    f.mechanism = "fanotify".into();
    f.pid = a.pid;
    f.process = a.process.clone();
    f.exe = a.exe.clone();
    f.uid = a.uid.map(i64::from).unwrap_or(-1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_described_from_proc() {
        let me = actor(std::process::id());
        assert_eq!(me.pid, std::process::id());
        assert!(!me.process.is_empty() && !me.exe.is_empty(), "{me:?}");
        assert!(me.uid.is_some());
        assert_eq!(
            real_uid("Name:\tx\nUid:\t1000\t1000\t1000\t1000\n"),
            Some(1000)
        );
        assert_eq!(real_uid("Name:\tx\n"), None);
    }
}
