//! Whether any process holds a file open for writing, from `/proc`: asked
//! only for files written without a close seen once they are quiet for the
//! coalesce window (`truncate(2)` by path is a lone `IN_MODIFY`, while a
//! writer that pauses still holds its descriptor). One pass over every
//! process's descriptors answers for a whole batch of files.
//!
//! Best effort: a process whose descriptors cannot be read (another user's,
//! when the agent is not root) makes the answer unknown for the batch, and
//! the caller keeps waiting for the close, as before this check existed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// `O_ACCMODE` bits of `flags:` in `/proc/<pid>/fdinfo/<fd>`.
const ACCMODE: u32 = 0o3;
const O_RDONLY: u32 = 0o0;

/// The files of `paths` some process has open for writing, or None when
/// that cannot be known (see the module doc).
pub(super) fn open_for_writing(paths: &[PathBuf]) -> Option<HashSet<PathBuf>> {
    let own = std::process::id();
    // The agent's own descriptors are the hasher's reads, never writes.
    open_for_writing_in(Path::new("/proc"), paths, |pid| pid != own)
}

/// Like [`open_for_writing`], over the processes `look_at` accepts.
fn open_for_writing_in(
    proc: &Path,
    paths: &[PathBuf],
    look_at: impl Fn(u32) -> bool,
) -> Option<HashSet<PathBuf>> {
    let wanted: HashSet<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let mut found = HashSet::new();
    for entry in std::fs::read_dir(proc).ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if !look_at(pid) {
            continue;
        }
        let fds = match std::fs::read_dir(entry.path().join("fd")) {
            Ok(fds) => fds,
            // Exited meanwhile: nothing held.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(_) => return None,
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if !wanted.contains(target.as_path()) || found.contains(&target) {
                continue;
            }
            let info = entry.path().join("fdinfo").join(fd.file_name());
            if writable(&std::fs::read_to_string(info).unwrap_or_default()) {
                found.insert(target);
            }
        }
    }
    Some(found)
}

/// Whether an fdinfo text says the descriptor was opened for writing.
fn writable(fdinfo: &str) -> bool {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        .is_some_and(|flags| flags & ACCMODE != O_RDONLY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn fdinfo_flags() {
        for (text, want) in [
            ("pos:\t0\nflags:\t0100000\nmnt_id:\t1\n", false),
            ("pos:\t0\nflags:\t0100001\n", true),
            ("pos:\t0\nflags:\t02100002\n", true),
            ("pos:\t0\n", false),
        ] {
            assert_eq!(writable(text), want, "{text:?}");
        }
    }

    #[test]
    fn finds_writers_but_not_readers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (w, r, idle) = (
            dir.path().join("w"),
            dir.path().join("r"),
            dir.path().join("idle"),
        );
        let mut writer = std::fs::File::create(&w).expect("create");
        writer.write_all(b"x").expect("write");
        std::fs::write(&r, b"r").expect("write");
        std::fs::write(&idle, b"i").expect("write");
        let _reader = std::fs::File::open(&r).expect("open");
        // This test process holds them (only its own descriptors are
        // looked at, readable without privileges).
        let me = std::process::id();
        let got = open_for_writing_in(Path::new("/proc"), &[w.clone(), r, idle], |p| p == me)
            .expect("this process's descriptors are readable");
        assert_eq!(got, HashSet::from([w]));
    }
}
