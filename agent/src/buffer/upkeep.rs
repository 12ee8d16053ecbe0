//! Upkeep, run by the buffer's maintenance thread every 500 ms: the
//! sequence side file, reopening a database sled refused to write to once
//! the disk has room, and replacing a drained database that grew by a
//! fresh generation (sled never gives space back by itself).

use std::sync::atomic::Ordering;

use super::store::{self, Store};
use super::{Buffer, Slot};

/// Free space at which a database sled refused to write to is reopened.
const REOPEN_MIN_FREE: u64 = 1 << 20;

impl Buffer {
    /// One round of upkeep: the sequence side file; a failed database is
    /// reopened once the disk has room; a drained one is replaced by a
    /// fresh generation when that gives space back.
    pub(crate) fn maintain(&self) {
        self.persist_seq();
        if self.failed().is_some() {
            self.try_reopen();
        } else {
            self.compact_if_worthwhile(false);
        }
    }

    /// Whether maintenance may try something costly now (every 2 s).
    fn attempt_due(&self, force: bool) -> bool {
        let mut last = self.last_attempt.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        if !force && last.is_some_and(|t| now.duration_since(t) < std::time::Duration::from_secs(2))
        {
            return false;
        }
        *last = Some(now);
        true
    }

    /// Reopens a database sled refused to write to (or that could not be
    /// opened), once the file system has a little room again. Not the
    /// whole reserve: new records stay refused below it anyway (the
    /// writer's space check), but shipping and acknowledgements need the
    /// database open, and they are what frees the agent's own blobs when
    /// those filled the disk.
    fn try_reopen(&self) {
        if !self.attempt_due(false) {
            return;
        }
        if let Some(free) = self.ledger.free_space(&self.dir)
            && free < self.limits.min_free_bytes.clamp(1, REOPEN_MIN_FREE)
        {
            return;
        }
        // Close first (sled's file lock must be released before the same
        // database is opened again); writers meanwhile get `Unavailable`.
        let old = {
            let mut slot = self.slot.write().unwrap_or_else(|p| p.into_inner());
            let why = self.failed().unwrap_or_default();
            std::mem::replace(&mut *slot, Slot::Closed(why))
        };
        self.reopens.fetch_add(1, Ordering::SeqCst);
        drop(old);
        let generation = match store::current_generation(&self.dir) {
            Ok(g) => g,
            Err(e) => return self.fail_closed(e.to_string()),
        };
        match Store::open(&self.dir, generation, self.limits.cache_bytes) {
            Ok(store) => {
                let path = store.path.clone();
                match self.activate(store, false) {
                    Ok(()) if self.failed().is_none() => {
                        tracing::warn!(buffer = %path.display(), "the agent buffer is writable again: mail is accepted and shipping resumes");
                        self.appended.notify_one();
                    }
                    Ok(()) => {}
                    Err(e) => self.fail_closed(e.to_string()),
                }
            }
            // Damage is only acted on at a start (moved aside there): the
            // process cannot go on recording, so it asks for a restart.
            Err(e) if store::is_damage(&e) => {
                let why = format!("the database is damaged ({e})");
                self.fail_closed(why.clone());
                *self.needs_restart.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
            }
            Err(e) => self.fail_closed(format!("cannot reopen: {e}")),
        }
    }

    /// Starts a fresh generation when the buffer has drained and sled has
    /// grown past what it holds (see the module's invariants): past twice
    /// the size of its last fresh copy and at least 32 MiB — or, while
    /// the file system is short of space (under twice
    /// `buffer.min_free_bytes`), 1 MiB past that copy. A generation
    /// opened as found counts as a fresh copy of size 0, so a database
    /// that grew under an earlier version is compacted at its first
    /// drain. `force`: whenever drained and larger than that copy (tests).
    pub(crate) fn compact_if_worthwhile(&self, force: bool) -> bool {
        /// Below this sled is left as it is (unless the disk is short).
        const SLACK: u64 = 32 * 1024 * 1024;
        /// Growth worth a new generation while the disk is short of space.
        const SLACK_UNDER_PRESSURE: u64 = 1024 * 1024;
        let due = {
            let slot = self.slot.read().unwrap_or_else(|p| p.into_inner());
            let Slot::Open(store) = &*slot else {
                return false;
            };
            let size = store.db.size_on_disk().unwrap_or(0);
            let pressure = self
                .ledger
                .free_space(&self.dir)
                .is_some_and(|f| f < self.limits.min_free_bytes.saturating_mul(2));
            let base = store.base_size;
            let limit = if force {
                base
            } else if pressure {
                base.saturating_add(SLACK_UNDER_PRESSURE)
            } else {
                base.saturating_mul(2).max(SLACK)
            };
            size > limit && self.drained(store)
        };
        if !due || !self.attempt_due(force) {
            return false;
        }
        let mut slot = self.slot.write().unwrap_or_else(|p| p.into_inner());
        let Slot::Open(store) = &*slot else {
            return false;
        };
        // Checked again under the write lock: no write can start now.
        if !self.drained(store) {
            return false;
        }
        let before = store.db.size_on_disk().unwrap_or(0);
        let next = match store.successor(&self.dir, self.limits.cache_bytes) {
            Ok(next) => next,
            Err(e) => {
                tracing::warn!(buffer = %self.dir.display(), error = %e, "cannot start a fresh buffer generation to give disk space back; retried later");
                return false;
            }
        };
        let after = next.base_size;
        let Slot::Open(old) = std::mem::replace(&mut *slot, Slot::Open(next)) else {
            return false;
        };
        drop(slot);
        let old_path = old.path.clone();
        drop(old);
        if let Err(e) = std::fs::remove_dir_all(&old_path) {
            tracing::warn!(path = %old_path.display(), error = %e, "cannot remove the drained buffer generation; removed at the next start");
        }
        tracing::info!(
            buffer = %self.dir.display(), sled_bytes_before = before, sled_bytes_after = after,
            "the agent buffer drained: started a fresh generation to give disk space back"
        );
        true
    }

    fn drained(&self, store: &Store) -> bool {
        store.drained()
            && self
                .live_inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty()
    }
}
