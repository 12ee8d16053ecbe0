//! The few places shared code differs between Linux and Windows (issue 22),
//! kept here so that no `#[cfg]` is scattered through the callers.

use std::fs::OpenOptions;

/// Options that create a new file only its owner may read: mode 0600 on
/// Unix. On Windows a new file inherits its directory's ACL; the agent's
/// and collector's data directories are limited to SYSTEM and
/// Administrators when they are made (the Windows service's install), so
/// a key written there is as private as the directory.
pub fn create_private(options: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600)
    }
    #[cfg(not(unix))]
    {
        options
    }
}

/// Resolves on the graceful-shutdown trigger of every Kiroku daemon:
/// SIGINT or SIGTERM on Unix; Ctrl+C, Ctrl+Break, a closed console or a
/// system shutdown on Windows (the Windows service stops through its own
/// control handler, which ends the same way).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let ctrl_c = tokio::signal::ctrl_c();
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = ctrl_c.await;
            return;
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(windows)]
    {
        use tokio::signal::windows::{ctrl_break, ctrl_close, ctrl_shutdown};
        let ctrl_c = tokio::signal::ctrl_c();
        let (Ok(mut brk), Ok(mut close), Ok(mut shutdown)) =
            (ctrl_break(), ctrl_close(), ctrl_shutdown())
        else {
            let _ = ctrl_c.await;
            return;
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = brk.recv() => {}
            _ = close.recv() => {}
            _ = shutdown.recv() => {}
        }
    }
}
