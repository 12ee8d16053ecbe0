//! One window's part of a maintenance run: the journal passed from the
//! run's cursor towards the head taken when the run began, in short
//! batches. Per batch: the chain links checked (each entry names its leaf
//! and the SHA-256 of the entry before it, continuing from the last entry
//! the run passed, in an earlier window too), the safe online repairs
//! (an event in the journal but not in the index is indexed again; a blob
//! an event names that is missing is a problem for an admin, with what to
//! do), retention (`retain.rs`: mark expired events, purge the marked
//! ones past their grace period; nothing in protect mode), and the
//! progress made durable. Between batches the run yields to ingest: it
//! sleeps half as long as the batch took (so it takes at most two thirds
//! of one core, and the committer's group lock is free in between), and
//! stops at the window's end, on `kiroku maintenance stop` or at shutdown.

use std::time::{Duration, Instant};

use kiroku_proto::{Event, MaintenanceReport};

use super::state::{RunState, State};
use crate::holds::{HeldSet, Holds};
use crate::retention::Retention;
use crate::retention::marks::Marks;
use crate::store::Store;
use crate::store::journal::{EntryRead, Position, Provenance, event_of, read_entries};

/// Journal entries per batch.
const BATCH: usize = 512;
/// Findings listed per kind in one summary (the rest are counted).
const LIST_MAX: usize = 50;

/// Why a part ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// The run reached the head taken at its start.
    Complete,
    WindowEnd,
    Stopped(String),
    Shutdown,
}

impl End {
    pub fn describe(&self) -> String {
        match self {
            End::Complete => "reached the end of the store".into(),
            End::WindowEnd => "window end".into(),
            End::Stopped(by) => format!("stopped by {by}"),
            End::Shutdown => "collector shutdown".into(),
        }
    }
}

/// What the part needs from the collector.
pub struct Env<'a> {
    pub store: &'a Store,
    pub retention: &'a Retention,
    pub holds: &'a Holds,
    pub marks: &'a Marks,
    pub state: &'a State,
    /// Asked between batches: Some(why) = stop now.
    pub should_stop: &'a (dyn Fn() -> Option<End> + Sync),
}

/// A run's pass through the journal in one window.
pub struct Part<'a> {
    env: Env<'a>,
    pub run: RunState,
    pub report: MaintenanceReport,
    /// Where the next batch starts, valid while the journal's layout
    /// generation is the one noted (a purge's rewrite moves offsets); it
    /// is checked against its leaf too.
    pos: Option<(Position, u64)>,
    held: Option<HeldSet>,
    more_problems: u64,
    more_repairs: u64,
    /// The holds could not be evaluated (said once per part).
    holds_failed: bool,
}

fn push_capped(list: &mut Vec<String>, more: &mut u64, line: String) {
    if list.len() < LIST_MAX {
        list.push(line);
    } else {
        *more += 1;
    }
}

impl<'a> Part<'a> {
    pub fn new(env: Env<'a>, run: RunState, report: MaintenanceReport) -> Part<'a> {
        Part {
            env,
            run,
            report,
            pos: None,
            held: None,
            more_problems: 0,
            more_repairs: 0,
            holds_failed: false,
        }
    }

    pub fn problem(&mut self, line: String) {
        push_capped(&mut self.report.problems, &mut self.more_problems, line);
    }

    fn repair(&mut self, line: String) {
        self.report.repaired += 1;
        push_capped(&mut self.report.repairs, &mut self.more_repairs, line);
    }

    /// Runs batches until the part ends; progress is durable after each.
    pub fn go(&mut self) -> anyhow::Result<End> {
        let pause = crate::test_hooks::maintenance_batch_delay();
        let batch = if pause.is_some() { 2 } else { BATCH };
        loop {
            if let Some(end) = (self.env.should_stop)() {
                return Ok(end);
            }
            let started = Instant::now();
            let more = self.batch(batch)?;
            self.report.to_leaf = self.run.next_leaf;
            self.env
                .state
                .save_progress(&self.run, &self.summarised())?;
            if !more {
                return Ok(End::Complete);
            }
            // Yield to ingest and queries.
            let took = started.elapsed();
            std::thread::sleep(
                pause.unwrap_or(
                    (took / 2).clamp(Duration::from_millis(2), Duration::from_millis(200)),
                ),
            );
        }
    }

    /// The report with the counts of what did not fit in its lists.
    pub fn summarised(&self) -> MaintenanceReport {
        let mut r = self.report.clone();
        if self.more_problems > 0 {
            r.problems.push(format!(
                "... and {} more problems like these",
                self.more_problems
            ));
        }
        if self.more_repairs > 0 {
            r.repairs.push(format!(
                "... and {} more repairs like these",
                self.more_repairs
            ));
        }
        r
    }

    /// One batch; false once the run reached its end.
    fn batch(&mut self, max: usize) -> anyhow::Result<bool> {
        if self.run.next_leaf >= self.run.end_leaf {
            return Ok(false);
        }
        let store = self.env.store;
        let dir = store.journal.dir();
        let end = store.journal.end();
        let generation = store.layout_generation();
        let mut reads = match self.pos {
            Some((p, g)) if g == generation => read_entries(dir, p, end, max)?,
            _ => (Vec::new(), end),
        };
        let need_seek = match reads.0.first() {
            None => true,
            Some(r) => r.leaf.is_some_and(|l| l != self.run.next_leaf),
        };
        if need_seek {
            // First batch of the part, or the journal was rewritten (a
            // purge) under the remembered offset: find the leaf again.
            let at = super::seek::seek(dir, self.run.segment, self.run.next_leaf, end)?;
            reads = read_entries(dir, at, end, max)?;
        }
        let (reads, next) = reads;
        if reads.is_empty() {
            if self.run.next_leaf < self.run.end_leaf {
                self.problem(format!(
                    "the journal ends at leaf {} but held leaves up to {} when this run began: entries are missing; run `kiroku verify` to see which, and restore journal/ from a backup",
                    self.run.next_leaf,
                    self.run.end_leaf - 1
                ));
            }
            return Ok(false);
        }
        self.pos = Some((next, generation));
        let mut events: Vec<(Event, Provenance)> = Vec::new();
        let mut reached_end = false;
        for r in &reads {
            if let Some(leaf) = r.leaf {
                if leaf >= self.run.end_leaf {
                    reached_end = true;
                    break;
                }
                self.link(r, leaf);
            }
            self.report.verified += 1;
            match event_of(r) {
                Some(Ok(ev)) => events.push(ev),
                Some(Err(e)) => self.problem(format!(
                    "journal segment {} offset {}: a stored event does not decode ({e}); run `kiroku verify`, then `kiroku-collector repair` (offline)",
                    r.at.segment, r.at.offset
                )),
                None => {}
            }
        }
        self.check_index(&events, generation)?;
        self.check_blobs(&events);
        self.retain(&events)?;
        Ok(!reached_end && self.run.next_leaf < self.run.end_leaf)
    }

    /// The chain link of entry `r` (leaf `leaf`) to the entry before it.
    fn link(&mut self, r: &EntryRead, leaf: u64) {
        let prev = r.entry.as_ref().map(|j| hex::encode(&j.prev));
        let want_prev = if leaf == 0 {
            Some(hex::encode([0u8; 32]))
        } else if !self.run.last_hash.is_empty() {
            Some(self.run.last_hash.clone())
        } else {
            None
        };
        if leaf != self.run.next_leaf {
            self.problem(format!(
                "journal chain: leaf {leaf} found where leaf {} was expected (segment {} offset {}): entries are missing, inserted or reordered; run `kiroku verify` to see what was altered",
                self.run.next_leaf,
                r.at.segment,
                r.at.offset
            ));
        } else if let (Some(p), Some(w)) = (prev, want_prev)
            && p != w
        {
            self.problem(format!(
                "journal chain: entry {leaf} (segment {} offset {}) does not name the entry before it: one of them was altered; run `kiroku verify` to see which",
                r.at.segment, r.at.offset
            ));
        }
        self.run.next_leaf = leaf + 1;
        self.run.segment = r.at.segment;
        self.run.last_hash = hex::encode(r.entry_hash());
    }

    /// Events in the journal but not in the index are indexed again (with
    /// their place in the journal), under the index's group lock. Not
    /// while an index rebuild runs (it indexes the journal itself). A
    /// purge drops an event from the index before it stubs its journal
    /// records (a large segment's stubs may wait for the end of a run):
    /// the check holds the purge lock, leaves out the tombstoned events
    /// not stubbed yet, and is left to the next run when a rewrite
    /// happened since the batch was read (`generation`), so a purged
    /// event is never indexed again.
    fn check_index(
        &mut self,
        events: &[(Event, Provenance)],
        generation: u64,
    ) -> anyhow::Result<()> {
        let store = self.env.store;
        let index = &store.index;
        if index.rebuild_status().is_some() || events.is_empty() {
            return Ok(());
        }
        let _no_purge = store.purge_lock();
        if store.layout_generation() != generation {
            return Ok(());
        }
        let mut missing: Vec<(Event, Provenance)> = Vec::new();
        for (e, p) in events {
            if index.provenance(&e.event_id)?.is_some() || index.get(&e.event_id)?.is_some() {
                continue;
            }
            if missing.iter().any(|(m, _)| m.event_id == e.event_id) {
                continue;
            }
            missing.push((e.clone(), *p));
        }
        if !missing.is_empty() {
            // Tombstoned events whose journal records are not stubs yet
            // (a large segment's rewrite waits): purged, not missing.
            // And a copy of a purged event elsewhere in the journal is not
            // brought back.
            let purged = crate::store::purge::pending_event_ids(&store.meta)?;
            let mut kept = Vec::with_capacity(missing.len());
            for (e, p) in missing {
                if purged.contains(&e.event_id)
                    || crate::store::purge::was_purged(&store.meta, &e.event_id)?
                {
                    continue;
                }
                kept.push((e, p));
            }
            missing = kept;
        }
        if missing.is_empty() {
            return Ok(());
        }
        {
            let _group = index.write_group();
            let (ev, prov): (Vec<Event>, Vec<Provenance>) = missing.iter().cloned().unzip();
            index.add_recorded(&ev, &prov)?;
            index.commit()?;
        }
        for (e, p) in &missing {
            let leaf = p
                .leaf
                .map_or_else(|| "before the chain".into(), |l| l.to_string());
            self.repair(format!(
                "indexed event {} again (journal leaf {leaf}): it was in the journal but missing from the index",
                e.event_id
            ));
        }
        Ok(())
    }

    /// Raw messages (and the attachment blobs their manifests name) that
    /// the events say the collector holds.
    fn check_blobs(&mut self, events: &[(Event, Provenance)]) {
        let blobs = &self.env.store.blobs;
        for (e, _) in events {
            let Some(kiroku_proto::event::Kind::Email(m)) = &e.kind else {
                continue;
            };
            if m.raw_sha256.is_empty() || !m.raw_not_kept.is_empty() {
                continue;
            }
            if !blobs.has(&m.raw_sha256) {
                self.problem(format!(
                    "event {}: its raw message blob {} is missing from blobs/: restore it from a backup of the data directory (the event and its index entry are intact; `kiroku raw` fails for it until then)",
                    e.event_id, m.raw_sha256
                ));
                continue;
            }
            match blobs.manifest_parts(&m.raw_sha256) {
                Ok(parts) => {
                    for (p, present) in parts {
                        if !present {
                            self.problem(format!(
                                "event {}: attachment blob {p} named by its raw message {} is missing from blobs/: restore it from a backup",
                                e.event_id, m.raw_sha256
                            ));
                        }
                    }
                }
                Err(err) => self.problem(format!(
                    "event {}: the manifest of its raw message {} does not read ({err}); run `kiroku verify`",
                    e.event_id, m.raw_sha256
                )),
            }
        }
    }

    /// Retention over the batch (see `retain.rs`), with the events under
    /// a hold taken again whenever a hold changed, and holds kept from
    /// changing while the step marks and purges (`Holds::purge_guard`).
    /// When the holds cannot be evaluated (a hold's filter does not run,
    /// e.g. during an index rebuild) the batch is verified but nothing is
    /// marked or purged, and the summary says so once.
    fn retain(&mut self, events: &[(Event, Provenance)]) -> anyhow::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let holds = self.env.holds;
        let events: Vec<Event> = events.iter().map(|(e, _)| e.clone()).collect();
        let r = loop {
            if self.held.as_ref().is_none_or(|h| !holds.is_current(h)) {
                match holds.held_set(self.env.store) {
                    Ok(h) => self.held = Some(h),
                    Err(e) => {
                        if !self.holds_failed {
                            self.holds_failed = true;
                            self.problem(format!(
                                "retention skipped from leaf {}: the legal holds could not be evaluated ({e:#}); nothing was marked or purged after it. If an index rebuild is running this clears itself; otherwise check `kiroku hold list` and the collector log",
                                self.run.next_leaf
                            ));
                        }
                        return Ok(());
                    }
                }
            }
            let _no_hold_change = holds.purge_guard();
            let Some(held) = self.held.as_ref().filter(|h| holds.is_current(h)) else {
                continue;
            };
            break super::retain::retain(
                self.env.store,
                self.env.retention,
                self.env.marks,
                held,
                &events,
                crate::clock::now_ms(),
                self.report.protect,
            )?;
        };
        self.report.marked += r.marked;
        self.report.purged += r.purged;
        self.report.held_back += r.held_back;
        self.report.bytes_freed += r.bytes_freed;
        self.report.would_mark += r.would_mark;
        self.report.deferred += r.deferred;
        for p in r.problems {
            self.problem(p);
        }
        Ok(())
    }
}
