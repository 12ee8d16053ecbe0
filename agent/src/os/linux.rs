//! [`super`] on Linux: `std::os::unix` and rustix.

use std::fs::{File, Metadata};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use super::FileId;

/// The identity of an open file.
pub fn file_id(file: &File) -> std::io::Result<FileId> {
    Ok(id_of(&file.metadata()?))
}

/// The identity of the file at `path` (links followed).
pub fn path_id(path: &Path) -> std::io::Result<FileId> {
    Ok(id_of(&std::fs::metadata(path)?))
}

fn id_of(m: &Metadata) -> FileId {
    FileId {
        dev: m.dev(),
        ino: m.ino(),
    }
}

/// Reads at `offset` without moving a cursor anyone relies on.
pub fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    file.read_at(buf, offset)
}

/// The device (file system) of a file or directory.
pub fn device_of(m: &Metadata) -> Option<u64> {
    Some(m.dev())
}

/// Free bytes for an unprivileged writer on the file system of `dir`.
pub fn free_space(dir: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// The configuration reload signal: SIGHUP.
pub struct Hangup(tokio::signal::unix::Signal);

impl Hangup {
    /// Installs the handler (SIGHUP's default action ends the process).
    pub fn install() -> std::io::Result<Hangup> {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).map(Hangup)
    }

    /// The next signal; None when the handler is gone.
    pub async fn recv(&mut self) -> Option<()> {
        self.0.recv().await
    }
}

// Issue 22 (relay lane): durable directory entries.
/// Makes the entries of `dir` (a file just created or renamed in it)
/// durable: fsync of the directory.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
