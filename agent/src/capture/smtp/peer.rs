//! Who is on the other end of an SMTP connection from this host: the local
//! user owning the client socket and, when we may read it, the process
//! (the application: Outlook, Thunderbird, a script). Each OS finds them
//! its own way behind the same [`lookup`]: `linux.rs` through /proc,
//! `windows.rs` through the IP Helper's TCP tables with owning PIDs (the
//! pure decoding of those tables is `tcp_table.rs`, tested on every
//! platform). Best effort: `None` when the socket or its owner is not
//! found.

#[cfg(target_os = "linux")]
mod linux;
// Compiled everywhere so its tests run on the Linux CI; used on Windows.
#[cfg_attr(not(windows), allow(dead_code))]
mod tcp_table;
#[cfg(windows)]
mod windows;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalPeer {
    /// The owner's uid (Linux). None on Windows, where the owner is
    /// carried by `user` alone (`DOMAIN\user` of the process token).
    pub uid: Option<u32>,
    /// The owner's account name: the uid's login on Linux, `DOMAIN\user`
    /// on Windows.
    pub user: String,
    pub pid: Option<u32>,
    /// Process name and executable path, `name (path, pid N)`.
    pub application: String,
}

/// Looks up the owner of the TCP socket `client` → `server` on this host
/// (the caller decides which clients are on this host: `smtp.local_clients`).
#[cfg(target_os = "linux")]
pub use linux::lookup;
#[cfg(windows)]
pub use windows::lookup;

/// `name (path, pid N)`, the application as records show it on every OS
/// (`name (pid N)` when the path is not known).
fn application(name: &str, path: &str, pid: u32) -> String {
    if path.is_empty() {
        format!("{name} (pid {pid})")
    } else {
        format!("{name} ({path}, pid {pid})")
    }
}
