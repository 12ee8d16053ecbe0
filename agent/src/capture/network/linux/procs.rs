//! Socket owners from `/proc/<pid>/fd` (`socket:[inode]` links) and the
//! process's `comm`, `exe`, `cmdline`, `status` (uid) and start time.
//!
//! The kernel has no inode → process index: the only way is to read every
//! process's fd table. So the map is rebuilt by a full scan only when
//! asked about inodes it does not know (and that no earlier scan failed
//! to find), and at most once per `min_interval` (the agent: 900 ms). Measured
//! (`measure_proc_scan_with_300_processes`, debug build, 2 shared cores,
//! Linux 6.18): 300 processes holding 1,873 fds: 14.7 ms median per scan
//! (`find /proc/[0-9]*/fd -lname 'socket:*'` takes 42 ms for the same),
//! so at most ~1.5 % of a core at one scan per second. An inode asked
//! about within the interval stays unresolved until the caller asks again
//! after it (the caller keeps asking for sockets still without owner).
//! Processes are described once per (pid, start time) and cached; a pid
//! reused by a new process has a new start time and is read again.
//!
//! What it cannot see: without CAP_SYS_PTRACE (or root) only the agent
//! user's own processes' fd tables are readable; a socket shared by
//! several processes (inherited over fork) is given to the lowest pid; a
//! socket whose process exited before the scan has no owner.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::capture::network::platform::{Owner, ProcessTable};

/// Longest command line kept (cut on a character boundary).
pub const CMDLINE_MAX: usize = 1024;

/// How long a uid that did not resolve to a name stays unresolved.
const USER_RETRY: Duration = Duration::from_secs(60);

/// The agent's rescan interval: a little under the default dump interval
/// (1 s). The runner asks once per dump; with exactly 1 s a dump whose
/// timer fired a millisecond early found the scan not due, so scans ran
/// every other dump and connections of under ~2 s went without an owner
/// (seen in the swarm test). Still at most one scan per dump.
const AGENT_MIN_INTERVAL: Duration = Duration::from_millis(900);

pub fn open() -> io::Result<Box<dyn ProcessTable>> {
    Ok(Box::new(Procs::open(
        Path::new("/proc"),
        AGENT_MIN_INTERVAL,
    )?))
}

pub struct Procs {
    root: PathBuf,
    min_interval: Duration,
    /// socket inode → pid, from the last scan.
    sockets: HashMap<u64, u32>,
    /// Inodes asked about before the last scan that it did not find (the
    /// process is gone or unreadable, or a kernel socket): they do not
    /// trigger scans again, or an ownerless socket would cost a scan
    /// every interval for its whole life.
    unresolved: HashSet<u64>,
    /// pid → (start time in ticks, description).
    described: HashMap<u32, (u64, Owner)>,
    last_scan: Option<Instant>,
    boot_ms: i64,
    ticks: u64,
    users: HashMap<u32, (String, Instant)>,
    /// Full scans done and the time the last one took.
    pub scans: u64,
    pub last_scan_cost: Duration,
}

impl Procs {
    pub fn open(root: &Path, min_interval: Duration) -> io::Result<Procs> {
        let stat = root.join("stat");
        let text = fs::read_to_string(&stat).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("reading {} failed: {e} (is /proc mounted?)", stat.display()),
            )
        })?;
        let btime = boot_time(&text).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} has no btime line", stat.display()),
            )
        })?;
        Ok(Procs {
            root: root.to_path_buf(),
            min_interval,
            sockets: HashMap::new(),
            unresolved: HashSet::new(),
            described: HashMap::new(),
            last_scan: None,
            boot_ms: btime.saturating_mul(1000),
            ticks: rustix::param::clock_ticks_per_second().max(1),
            users: HashMap::new(),
            scans: 0,
            last_scan_cost: Duration::ZERO,
        })
    }

    /// Rebuilds the inode → pid map from every `/proc/<pid>/fd`, and
    /// describes the processes that own sockets (new ones only).
    pub fn scan(&mut self) {
        let started = Instant::now();
        let mut sockets = HashMap::with_capacity(self.sockets.len());
        let mut owners = HashSet::new();
        let Ok(dir) = fs::read_dir(&self.root) else {
            return;
        };
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
                continue; // exited, or not ours to read
            };
            for fd in fds.flatten() {
                let Ok(link) = fs::read_link(fd.path()) else {
                    continue;
                };
                if let Some(inode) = link.to_str().and_then(socket_inode) {
                    owners.insert(pid);
                    sockets
                        .entry(inode)
                        .and_modify(|p: &mut u32| *p = (*p).min(pid))
                        .or_insert(pid);
                }
            }
        }
        self.described.retain(|pid, _| owners.contains(pid));
        for pid in owners {
            let dir = self.root.join(pid.to_string());
            let Some(start) = fs::read_to_string(dir.join("stat"))
                .ok()
                .as_deref()
                .and_then(start_ticks)
            else {
                continue;
            };
            if self.described.get(&pid).is_some_and(|(s, _)| *s == start) {
                continue;
            }
            let owner = self.describe(pid, &dir, start);
            self.described.insert(pid, (start, owner));
        }
        self.sockets = sockets;
        self.last_scan = Some(Instant::now());
        self.scans += 1;
        self.last_scan_cost = started.elapsed();
    }

    fn describe(&mut self, pid: u32, dir: &Path, start: u64) -> Owner {
        let name = fs::read_to_string(dir.join("comm"))
            .unwrap_or_default()
            .trim_end()
            .to_string();
        let exe = fs::read_link(dir.join("exe"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let cmdline = fs::read(dir.join("cmdline"))
            .map(|b| cmdline(&b))
            .unwrap_or_default();
        let uid = fs::read_to_string(dir.join("status"))
            .ok()
            .as_deref()
            .and_then(real_uid)
            .unwrap_or(u32::MAX);
        let user = if uid == u32::MAX {
            String::new()
        } else {
            self.user_name(uid)
        };
        Owner {
            pid,
            name,
            exe,
            cmdline,
            uid,
            user,
            started_ms: self.boot_ms + (start.saturating_mul(1000) / self.ticks) as i64,
        }
    }
}

impl ProcessTable for Procs {
    fn owners(&mut self, inodes: &[u64]) -> HashMap<u64, Owner> {
        let unknown = |i: &u64| *i != 0 && !self.sockets.contains_key(i);
        let fresh = inodes
            .iter()
            .any(|i| unknown(i) && !self.unresolved.contains(i));
        let due = self
            .last_scan
            .is_none_or(|t| t.elapsed() >= self.min_interval);
        if fresh && due {
            self.scan();
            let sockets = &self.sockets;
            self.unresolved = inodes
                .iter()
                .copied()
                .filter(|i| *i != 0 && !sockets.contains_key(i))
                .collect();
        }
        inodes
            .iter()
            .filter_map(|i| {
                let pid = self.sockets.get(i)?;
                let (_, owner) = self.described.get(pid)?;
                Some((*i, owner.clone()))
            })
            .collect()
    }

    fn alive(&mut self, pid: u32) -> bool {
        self.root.join(pid.to_string()).exists()
    }

    fn user_name(&mut self, uid: u32) -> String {
        if let Some((name, at)) = self.users.get(&uid)
            && (!name.is_empty() || at.elapsed() < USER_RETRY)
        {
            return name.clone();
        }
        // getpwuid_r: NSS, so directory users resolve like for `ls -l`.
        let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_default();
        self.users.insert(uid, (name.clone(), Instant::now()));
        name
    }

    fn limits(&self) -> Vec<String> {
        let status = fs::read_to_string(self.root.join("self/status")).unwrap_or_default();
        limits_for(&status)
    }
}

const CAP_DAC_OVERRIDE: u32 = 1;
const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_SYS_PTRACE: u32 = 19;

/// Another user's `/proc/<pid>/fd` is mode 0500 (opening it needs
/// CAP_DAC_READ_SEARCH or CAP_DAC_OVERRIDE) and its links are read under
/// a ptrace access check (CAP_SYS_PTRACE): checked with `setpriv
/// --bounding-set=-...` as root on 6.18 — without either, `ls -l` of a
/// nobody process's fd directory fails.
fn limits_for(status: &str) -> Vec<String> {
    let cap = |bit: u32| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
            .is_some_and(|set| set & (1u64 << bit) != 0)
    };
    let mut missing = Vec::new();
    if !cap(CAP_DAC_READ_SEARCH) && !cap(CAP_DAC_OVERRIDE) {
        missing.push("CAP_DAC_READ_SEARCH");
    }
    if !cap(CAP_SYS_PTRACE) {
        missing.push("CAP_SYS_PTRACE");
    }
    if missing.is_empty() {
        return Vec::new();
    }
    vec![format!(
        "sockets of other users' processes have no owner found: reading their /proc/<pid>/fd needs {}",
        missing.join(" and ")
    )]
}

/// `socket:[12345]` → 12345.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// `btime` (seconds since the epoch) from /proc/stat.
fn boot_time(stat: &str) -> Option<i64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// Field 22 of /proc/<pid>/stat (start time in clock ticks since boot).
/// The command name (field 2) can hold spaces and parentheses: fields
/// are counted after its last ')'.
fn start_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The real uid (first of `Uid:`) from /proc/<pid>/status.
fn real_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Arguments joined by spaces (NUL separated in /proc), cut to
/// [`CMDLINE_MAX`] bytes on a character boundary.
fn cmdline(raw: &[u8]) -> String {
    let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
    let text: String = String::from_utf8_lossy(raw).replace('\0', " ");
    if text.len() <= CMDLINE_MAX {
        return text;
    }
    let mut cut = CMDLINE_MAX;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text[..cut].to_string()
}

#[cfg(test)]
#[path = "procs_tests.rs"]
mod tests;
