//! What maintenance keeps in the meta tree `maintenance`, durable (each
//! change flushed):
//!
//! - `run`: the run in progress or unfinished (JSON [`RunState`]): its id,
//!   the journal leaf it ends before (the head when it began), its cursor
//!   as (segment, next leaf) — a segment and a leaf, never a byte offset,
//!   because a purge rewrites segments and moves offsets; the position is
//!   found again by searching that segment —, the hash of the last entry
//!   it passed (the chain check goes on from there), the windows used;
//! - `part`: the report of the window's part of that run while it runs
//!   (prost `MaintenanceReport`), closed into `report/…` when it ends;
//! - `report/<20-digit n>`: the summaries, the last [`KEEP_REPORTS`];
//! - `heartbeat`: the collector's clock, written every minute;
//! - `clean`: present from a clean shutdown until the next start;
//! - `last_window`: the day number of the last window whose automatic
//!   run ended there (window end, stopped by an admin, store done);
//! - `protect`: why the next run is in protect mode, until one ran.

use kiroku_proto::MaintenanceReport;
use prost::Message;
use serde::{Deserialize, Serialize};

/// Summaries kept.
pub const KEEP_REPORTS: usize = 100;

const RUN: &str = "run";
const PART: &str = "part";
const REPORT: &str = "report/";
const HEARTBEAT: &str = "heartbeat";
const CLEAN: &str = "clean";
const LAST_WINDOW: &str = "last_window";
const PROTECT: &str = "protect";

/// A run in progress or unfinished.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunState {
    pub run_id: String,
    pub started_ms: i64,
    /// The journal's next leaf when the run began: it ends before it.
    pub end_leaf: u64,
    /// The segment holding leaf `next_leaf` (or the last one passed).
    pub segment: u64,
    pub next_leaf: u64,
    /// SHA-256 (hex) of the entry before `next_leaf`; empty at leaf 0.
    pub last_hash: String,
    /// Windows the run has used, this one included.
    pub windows: u32,
}

#[derive(Clone)]
pub struct State {
    tree: sled::Tree,
}

fn corrupt(key: &str, e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!(
        "the maintenance state (meta tree `maintenance`, key {key}) does not decode ({e}); stop the collector and run `kiroku-collector repair`"
    )
}

fn i64_of(v: &[u8]) -> Option<i64> {
    v.try_into().ok().map(i64::from_be_bytes)
}

impl State {
    pub fn open(meta: &crate::store::meta::MetaStore) -> anyhow::Result<State> {
        Ok(State {
            tree: meta.tree("maintenance")?,
        })
    }

    fn flush(&self) -> anyhow::Result<()> {
        self.tree.flush()?;
        Ok(())
    }

    pub fn run(&self) -> anyhow::Result<Option<RunState>> {
        self.tree
            .get(RUN)?
            .map(|v| serde_json::from_slice(&v).map_err(|e| corrupt(RUN, e)))
            .transpose()
    }

    pub fn part(&self) -> anyhow::Result<Option<MaintenanceReport>> {
        self.tree
            .get(PART)?
            .map(|v| MaintenanceReport::decode(v.as_ref()).map_err(|e| corrupt(PART, e)))
            .transpose()
    }

    /// Progress after a batch: the run's cursor and the part's counters,
    /// together (one sled batch), durable.
    pub fn save_progress(&self, run: &RunState, part: &MaintenanceReport) -> anyhow::Result<()> {
        let mut b = sled::Batch::default();
        b.insert(RUN, serde_json::to_vec(run)?);
        b.insert(PART, part.encode_to_vec());
        self.tree.apply_batch(b)?;
        self.flush()
    }

    /// Closes the window's part: its report kept (the oldest beyond
    /// [`KEEP_REPORTS`] dropped), the part removed, the run kept (`Some`)
    /// or removed (`None`: it reached the end of the store).
    pub fn close_part(
        &self,
        report: &MaintenanceReport,
        run: Option<&RunState>,
    ) -> anyhow::Result<()> {
        let next = match self.tree.scan_prefix(REPORT).keys().next_back() {
            Some(k) => {
                let k = k?;
                std::str::from_utf8(&k[REPORT.len()..])
                    .ok()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0)
                    + 1
            }
            None => 1,
        };
        let mut b = sled::Batch::default();
        b.insert(
            format!("{REPORT}{next:020}").as_bytes(),
            report.encode_to_vec(),
        );
        b.remove(PART);
        match run {
            Some(r) => b.insert(RUN, serde_json::to_vec(r)?),
            None => b.remove(RUN),
        }
        let count = self.tree.scan_prefix(REPORT).keys().count() + 1;
        for k in self
            .tree
            .scan_prefix(REPORT)
            .keys()
            .take(count.saturating_sub(KEEP_REPORTS))
        {
            b.remove(k?);
        }
        self.tree.apply_batch(b)?;
        self.flush()
    }

    /// The newest `limit` summaries, newest first.
    pub fn reports(&self, limit: usize) -> anyhow::Result<Vec<MaintenanceReport>> {
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(REPORT).rev().take(limit) {
            let (k, v) = kv?;
            out.push(
                MaintenanceReport::decode(v.as_ref())
                    .map_err(|e| corrupt(&String::from_utf8_lossy(&k), e))?,
            );
        }
        Ok(out)
    }

    pub fn heartbeat(&self) -> anyhow::Result<Option<i64>> {
        Ok(self.tree.get(HEARTBEAT)?.and_then(|v| i64_of(&v)))
    }

    pub fn set_heartbeat(&self, now_ms: i64) -> anyhow::Result<()> {
        self.tree.insert(HEARTBEAT, &now_ms.to_be_bytes())?;
        self.flush()
    }

    /// Whether the last stop was a clean shutdown; clears the flag (this
    /// start is under way).
    pub fn take_clean(&self) -> anyhow::Result<bool> {
        let was = self.tree.remove(CLEAN)?.is_some();
        self.flush()?;
        Ok(was)
    }

    pub fn set_clean(&self, now_ms: i64) -> anyhow::Result<()> {
        let mut b = sled::Batch::default();
        b.insert(CLEAN, &now_ms.to_be_bytes());
        b.insert(HEARTBEAT, &now_ms.to_be_bytes());
        self.tree.apply_batch(b)?;
        self.flush()
    }

    pub fn last_window(&self) -> anyhow::Result<Option<i64>> {
        Ok(self.tree.get(LAST_WINDOW)?.and_then(|v| i64_of(&v)))
    }

    pub fn set_last_window(&self, day: i64) -> anyhow::Result<()> {
        self.tree.insert(LAST_WINDOW, &day.to_be_bytes())?;
        self.flush()
    }

    pub fn protect(&self) -> anyhow::Result<Option<String>> {
        Ok(self
            .tree
            .get(PROTECT)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub fn set_protect(&self, reason: Option<&str>) -> anyhow::Result<()> {
        match reason {
            Some(r) => self.tree.insert(PROTECT, r.as_bytes()).map(|_| ())?,
            None => self.tree.remove(PROTECT).map(|_| ())?,
        }
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_kept_newest_first_and_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta = crate::store::meta::MetaStore::open(&dir.path().join("meta")).expect("meta");
        let s = State::open(&meta).expect("state");
        let run = RunState {
            run_id: "m-1".into(),
            next_leaf: 7,
            ..RunState::default()
        };
        for i in 0..(KEEP_REPORTS as u64 + 5) {
            let part = MaintenanceReport {
                run_id: "m-1".into(),
                to_leaf: i,
                ..MaintenanceReport::default()
            };
            s.save_progress(&run, &part).expect("save");
            assert_eq!(s.part().expect("part"), Some(part.clone()));
            s.close_part(&part, Some(&run)).expect("close");
            assert_eq!(s.part().expect("part"), None);
        }
        let r = s.reports(1000).expect("reports");
        assert_eq!(r.len(), KEEP_REPORTS);
        assert_eq!(r[0].to_leaf, KEEP_REPORTS as u64 + 4);
        assert_eq!(s.run().expect("run"), Some(run));
        s.close_part(&MaintenanceReport::default(), None)
            .expect("close");
        assert_eq!(s.run().expect("run"), None);
        assert!(!s.take_clean().expect("clean"));
        s.set_clean(5).expect("set");
        assert_eq!(s.heartbeat().expect("hb"), Some(5));
        assert!(s.take_clean().expect("clean"));
        assert!(!s.take_clean().expect("clean"));
    }
}
