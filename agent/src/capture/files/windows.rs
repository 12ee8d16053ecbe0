//! File capture's Windows side (issue 22): the watcher over
//! `ReadDirectoryChangesW` and removable drives (`watch.rs`, `watch/`), the
//! Win32 calls (`sys.rs`, the one module here allowed `unsafe`), and the
//! pure parts, compiled on every system for their tests: the change
//! buffer's decoding (`notify.rs`), removable-drive detection over the
//! Windows API's answers (`drives.rs`), and Windows path comparison
//! (`paths.rs`). It hands `Observed` records to the shared stages of
//! `files.rs`, like `linux/watch.rs`.

#![cfg_attr(not(windows), allow(dead_code))]

pub mod drives;
pub mod notify;
pub mod paths;
#[cfg(windows)]
mod sys;
#[cfg(windows)]
pub(super) mod watch;

// What the watcher shares with the platform-independent stages; the
// Windows modules name them through `super::`.
#[cfg(windows)]
use super::{Observed, catchup, coalesce, emit, state};
