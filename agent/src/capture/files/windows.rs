//! File capture's Windows side (issue 22): to be built — the watcher over
//! ReadDirectoryChangesW and removable drives. It hands `Observed` records
//! to the shared stages of `files.rs`, like `linux/watch.rs`.

pub(super) mod watch;

#[allow(unused_imports)]
use super::{HashPlan, Observed, catchup, coalesce, state};
