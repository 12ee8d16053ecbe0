//! File capture's Linux side: the inotify watcher (`watch.rs`, `watch/`),
//! fanotify's writer attribution, `/proc` writer checks and the mount
//! table's removable volumes. It hands `Observed` records to the shared
//! stages of `files.rs`.

pub mod fanotify;
pub mod volumes;
pub(super) mod watch;
mod writers;

// What the watcher shares with the platform-independent stages; the Linux
// modules name them through `super::`.
use super::{HashPlan, Observed, catchup, coalesce, emit, state};
