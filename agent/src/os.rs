//! The agent's OS layer for what the shared core needs (issue 22): file
//! identity and positional reads (the MTA log follower, config reload),
//! the volume a directory is on (the catch-up scan stays on one), free
//! disk space (the buffer's reserve) and the reload signal. Each OS gives
//! the same functions in its own file; nothing else in the core carries a
//! `#[cfg]` for these. The capture parts that differ entirely (file
//! watching, the loopback peer, host identity, network capture, the
//! service) have their own `linux`/`windows` modules next to them.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::*;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::*;

/// A file's identity on its machine: device (volume) and inode (file
/// index). Two paths with the same identity are the same file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

/// Modification time in nanoseconds since the Unix epoch (0 when the
/// platform does not tell).
pub fn mtime_ns(m: &std::fs::Metadata) -> i128 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i128)
}
