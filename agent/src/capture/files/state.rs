//! The last known state of each watched file (size, mtime, SHA-256), kept
//! in the agent's buffer database so that the catch-up scan at start
//! (`catchup.rs`) can tell what changed while the agent was not running.
//!
//! Keyed state in the agent's buffer (an on-disk boundary):
//! - `file_state`: path → [`Remembered`] (`size u64 BE | mtime_ms i64 BE |
//!   origin u8 | sha256 hex`);
//! - `file_state_roots`: watch root → when its first (silent) baseline scan
//!   completed (i64 BE ms).
//!
//! Architecture invariant: a record and the state it leaves are written in
//! one buffer transaction ([`FileState::record`]), so after a crash either
//! both exist or neither: a file seen by inotify just before a `kill -9` is
//! either recorded and remembered (the scan finds it unchanged) or neither
//! (the scan reports it). Bounded by `files.state_max` entries.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::buffer::{Buffer, BufferError, KeyedState, StateTx, TxResult};
use kiroku_proto::Event;

/// Who last set a file's remembered state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A record from the watcher (inotify / fanotify).
    Watch = 0,
    /// A record from the catch-up scan.
    Scan = 1,
    /// The first scan of a root, which records nothing.
    Baseline = 2,
}

/// What the agent last knew of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remembered {
    pub size: u64,
    pub mtime_ms: i64,
    pub origin: Origin,
    /// Empty when the file was not hashed (over the cap, still open).
    pub sha256: String,
}

impl Remembered {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(17 + self.sha256.len());
        v.extend_from_slice(&self.size.to_be_bytes());
        v.extend_from_slice(&self.mtime_ms.to_be_bytes());
        v.push(self.origin as u8);
        v.extend_from_slice(self.sha256.as_bytes());
        v
    }

    fn decode(b: &[u8]) -> Option<Remembered> {
        let size = u64::from_be_bytes(b.get(0..8)?.try_into().ok()?);
        let mtime_ms = i64::from_be_bytes(b.get(8..16)?.try_into().ok()?);
        let origin = match b.get(16)? {
            0 => Origin::Watch,
            1 => Origin::Scan,
            _ => Origin::Baseline,
        };
        let sha256 = String::from_utf8(b.get(17..)?.to_vec()).ok()?;
        Some(Remembered {
            size,
            mtime_ms,
            origin,
            sha256,
        })
    }

    /// Same size, time and (known) content.
    fn same_content(&self, other: &Remembered) -> bool {
        self.size == other.size
            && self.mtime_ms == other.mtime_ms
            && !self.sha256.is_empty()
            && self.sha256 == other.sha256
    }

    /// Whether a scan that stats the file finds it as remembered.
    pub fn unchanged(&self, size: u64, mtime_ms: i64) -> bool {
        self.size == size && self.mtime_ms == mtime_ms
    }
}

/// What a record changes in the remembered state.
#[derive(Debug, Clone)]
pub enum Change {
    None,
    /// A file was created or written: its new state.
    Put {
        path: String,
        state: Remembered,
    },
    /// A file (or directory: everything below goes too) is gone.
    /// `only_if_known`: the record is written only if the file was
    /// remembered (a scan's delete that the watcher already recorded is
    /// not recorded twice).
    Remove {
        path: String,
        only_if_known: bool,
    },
    /// A file or directory moved; `state` is the file's (None: directory).
    Rename {
        from: String,
        to: String,
        state: Option<Remembered>,
    },
}

pub struct FileState {
    tree: KeyedState,
    roots: KeyedState,
    /// Entries in `tree` (approximate: counted at the catch-up scan).
    tracked: AtomicU64,
    max: u64,
    full_warned: AtomicBool,
}

impl FileState {
    pub fn open(buffer: &Arc<Buffer>, max: u64) -> Result<Arc<FileState>, BufferError> {
        Ok(Arc::new(FileState {
            tree: buffer.keyed_state("file_state"),
            roots: buffer.keyed_state("file_state_roots"),
            tracked: AtomicU64::new(0),
            max,
            full_warned: AtomicBool::new(false),
        }))
    }

    /// Counts the remembered files (once, at the catch-up scan).
    pub fn count(&self) {
        self.tracked
            .store(self.tree.len() as u64, Ordering::Relaxed);
    }

    pub fn tracked(&self) -> u64 {
        self.tracked.load(Ordering::Relaxed)
    }

    /// Whether new files can still be remembered.
    pub fn has_room(&self) -> bool {
        let room = self.tracked() < self.max;
        if !room && !self.full_warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                tracked = self.tracked(),
                "files.state_max ({}) files are tracked: changes to further files made while the agent is not running will not be reported at start. Raise files.state_max or watch fewer directories",
                self.max
            );
        }
        room
    }

    pub fn get(&self, path: &str) -> Option<Remembered> {
        self.tree
            .get(path)
            .ok()
            .flatten()
            .and_then(|v| Remembered::decode(&v))
    }

    /// Remembered paths below `dir` (a watch root), in order.
    pub fn paths_under(&self, dir: &str) -> impl Iterator<Item = String> + use<> {
        // The platform's separator: `\` on Windows, where paths are
        // recorded as the system spells them (`C:\Users\…`).
        let sep = std::path::MAIN_SEPARATOR;
        let prefix = format!("{}{sep}", dir.trim_end_matches(sep));
        self.tree
            .keys_with_prefix(prefix)
            .unwrap_or_default()
            .into_iter()
            .map(|k| String::from_utf8_lossy(&k).into_owned())
    }

    /// The first scan of a root: remembers a file without a record, unless
    /// a record already did (never overwrites).
    pub fn baseline(&self, path: &str, size: u64, mtime_ms: i64) {
        if !self.has_room() {
            return;
        }
        let state = Remembered {
            size,
            mtime_ms,
            origin: Origin::Baseline,
            sha256: String::new(),
        };
        if let Ok(true) = self.tree.insert_new(path, state.encode()) {
            self.tracked.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether the root had its baseline scan.
    pub fn root_known(&self, root: &str) -> bool {
        self.roots.contains_key(root).unwrap_or(false)
    }

    pub fn root_done(&self, root: &str, at_ms: i64) {
        if let Err(e) = self.roots.insert(root, at_ms.to_be_bytes()) {
            tracing::warn!(root, error = %e, "cannot remember that the root was scanned");
        }
    }

    /// Records `event` and applies `change` in one transaction (see the
    /// module's invariant). Returns the sequence number, None when the
    /// record was not needed: a create/modify that leaves a file exactly
    /// as already recorded by the other mechanism (watcher and catch-up
    /// scan both saw it), or a scan's delete the watcher already recorded.
    pub async fn record(
        self: &Arc<Self>,
        buffer: &Arc<Buffer>,
        event: Event,
        change: Change,
    ) -> Result<Option<u64>, BufferError> {
        let room = self.has_room();
        let decide_change = change.clone();
        let (seq, delta) = buffer
            .append_with(event, &self.tree, move |tx| {
                decide(&decide_change, tx, room)
            })
            .await?;
        if delta > 0 {
            self.tracked
                .fetch_add(delta.unsigned_abs(), Ordering::Relaxed);
        } else {
            self.untrack(delta.unsigned_abs());
        }
        if seq.is_some() {
            // A directory's entries follow it (outside the transaction:
            // after a crash here the scan reports them as deleted and
            // created, which is what it looks like from outside).
            let this = self.clone();
            let _ = tokio::task::spawn_blocking(move || this.follow_directory(&change)).await;
        }
        Ok(seq)
    }

    fn untrack(&self, n: u64) {
        let _ = self
            .tracked
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_sub(n))
            });
    }

    fn follow_directory(&self, change: &Change) {
        match change {
            Change::Remove { path, .. } => {
                for k in self.paths_under(path) {
                    if let Ok(Some(_)) = self.tree.remove(&k) {
                        self.untrack(1);
                    }
                }
            }
            Change::Rename {
                from,
                to,
                state: None,
            } => {
                let from_prefix = format!("{}/", from.trim_end_matches('/'));
                for k in self.paths_under(from) {
                    let Some(rest) = k.strip_prefix(&from_prefix) else {
                        continue;
                    };
                    let new = format!("{}/{rest}", to.trim_end_matches('/'));
                    if let Ok(Some(v)) = self.tree.remove(&k) {
                        let _ = self.tree.insert(&new, v);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Inside the record's transaction: whether to record, and how many
/// entries were added (negative: removed).
fn decide(change: &Change, tx: &StateTx<'_>, room: bool) -> TxResult<(bool, i64)> {
    let old = |path: &str| -> TxResult<Option<Remembered>> {
        Ok(tx.get(path)?.and_then(|v| Remembered::decode(&v)))
    };
    match change {
        Change::None => Ok((true, 0)),
        Change::Put { path, state } => {
            let old = old(path)?;
            if let Some(old) = &old
                && old.same_content(state)
                && (state.origin == Origin::Scan || old.origin == Origin::Scan)
            {
                return Ok((false, 0));
            }
            if old.is_none() && !room {
                return Ok((true, 0));
            }
            tx.insert(path, state.encode())?;
            Ok((true, i64::from(old.is_none())))
        }
        Change::Remove {
            path,
            only_if_known,
        } => {
            let known = tx.remove(path)?.is_some();
            if !known && *only_if_known {
                return Ok((false, 0));
            }
            Ok((true, -i64::from(known)))
        }
        Change::Rename { from, to, state } => {
            let known = tx.remove(from)?.is_some();
            let mut delta = -i64::from(known);
            if let Some(state) = state
                && (room || known)
            {
                let had = tx.insert(to, state.encode())?.is_some();
                delta += i64::from(!had);
            }
            Ok((true, delta))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiroku_proto::event::Kind;

    fn file_event(path: &str) -> Event {
        Event {
            kind: Some(Kind::File(kiroku_proto::FileEvent {
                path: path.into(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn put(path: &str, origin: Origin, sha: &str) -> Change {
        Change::Put {
            path: path.into(),
            state: Remembered {
                size: 3,
                mtime_ms: 1000,
                origin,
                sha256: sha.into(),
            },
        }
    }

    #[test]
    fn remembered_round_trips() {
        let r = Remembered {
            size: 42,
            mtime_ms: -5,
            origin: Origin::Scan,
            sha256: "ab".repeat(32),
        };
        assert_eq!(Remembered::decode(&r.encode()), Some(r));
        assert_eq!(Remembered::decode(b"short"), None);
    }

    #[tokio::test]
    async fn watcher_and_scan_seeing_the_same_file_record_it_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = Buffer::open(dir.path(), u64::MAX, 1 << 20).expect("open");
        let st = FileState::open(&b, 10).expect("state");
        // (change, recorded?): table of what a second mechanism adds.
        let cases = [
            (put("/w/a", Origin::Watch, "h1"), true),
            (put("/w/a", Origin::Scan, "h1"), false),
            (put("/w/a", Origin::Watch, "h2"), true),
            (put("/w/a", Origin::Watch, "h2"), true),
            (put("/w/b", Origin::Scan, "h3"), true),
            (put("/w/b", Origin::Watch, "h3"), false),
            (put("/w/c", Origin::Scan, ""), true),
            (put("/w/c", Origin::Watch, ""), true),
            (
                Change::Remove {
                    path: "/w/a".into(),
                    only_if_known: false,
                },
                true,
            ),
            (
                Change::Remove {
                    path: "/w/a".into(),
                    only_if_known: true,
                },
                false,
            ),
            (
                Change::Remove {
                    path: "/w/zz".into(),
                    only_if_known: false,
                },
                true,
            ),
        ];
        for (i, (change, want)) in cases.into_iter().enumerate() {
            let seq = st
                .record(&b, file_event("/w/x"), change.clone())
                .await
                .expect("record");
            assert_eq!(seq.is_some(), want, "case {i}: {change:?}");
        }
        assert!(st.get("/w/a").is_none());
        assert_eq!(st.get("/w/b").map(|r| r.sha256), Some("h3".into()));
    }

    #[tokio::test]
    async fn directories_carry_their_files_and_the_bound_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = Buffer::open(dir.path(), u64::MAX, 1 << 20).expect("open");
        let st = FileState::open(&b, 2).expect("state");
        for p in ["/w/d/1", "/w/d/2", "/w/d/3"] {
            st.record(&b, file_event(p), put(p, Origin::Watch, "h"))
                .await
                .expect("record");
        }
        assert!(st.get("/w/d/3").is_none(), "over files.state_max");
        st.record(
            &b,
            file_event("/w/e"),
            Change::Rename {
                from: "/w/d".into(),
                to: "/w/e".into(),
                state: None,
            },
        )
        .await
        .expect("rename");
        assert_eq!(st.paths_under("/w/e").count(), 2);
        assert_eq!(st.paths_under("/w/d").count(), 0);
        st.record(
            &b,
            file_event("/w/e"),
            Change::Remove {
                path: "/w/e".into(),
                only_if_known: false,
            },
        )
        .await
        .expect("delete");
        assert_eq!(st.paths_under("/w").count(), 0);
        assert_eq!(st.tracked(), 0);
    }
}
