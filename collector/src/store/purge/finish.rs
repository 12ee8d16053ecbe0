//! The steps of a purge after its promise (`state.rs`): tombstones and
//! audit entry made sure of, the index, the journal segments, the blobs.
//! Each step is idempotent, so this also finishes a purge a crash cut
//! short (called by every purge and at open).

use std::collections::{BTreeMap, HashMap};

use kiroku_proto::journal_entry::Entry;

use super::PurgeReport;
use super::state::{Anchor, AnchorAt, Pending, State};
use crate::integrity::checkpoint::ledger::Ledger;
use crate::store::Store;
use crate::store::journal::{self, rewrite};

impl Store {
    /// Finishes whatever purge is pending (see the module documentation).
    /// `force`: rewrite every segment holding pending records now;
    /// otherwise a large segment waits until enough of it is purged
    /// ([`worth_rewriting`]) or [`Store::compact_purged`] is called.
    pub(crate) fn finish_purges(
        &self,
        report: &mut PurgeReport,
        force: bool,
    ) -> anyhow::Result<()> {
        let st = State::open(&self.meta)?;
        for (segment, anchors) in st.rewrites()? {
            // A rewrite cut short: its scratch file (if the rename did not
            // happen) goes; the positions are found again either way.
            let _ = std::fs::remove_file(rewrite::scratch_path(self.journal.dir(), segment));
            let _layout = self.layout_write();
            self.reanchor(segment, &anchors)?;
            st.clear_rewrite(segment)?;
            self.meta.flush()?;
        }
        let mut pending = st.all()?;
        if pending.iter().any(|p| p.tombstone.is_none()) {
            self.tombstones_made_sure(&st, &pending)?;
            pending = st.all()?;
        }
        if let Some(a) = st.audit()? {
            self.audit_admin(&a.identity, &a.call, &a.detail)?;
            st.set_audit(None)?;
            st.set_intent_from(None)?;
            self.meta.flush()?;
        }
        if pending.is_empty() {
            return self.sweep_blobs(&st, &pending, report);
        }
        if let Some(why) = self.purge_blocked() {
            let mut ids: Vec<&str> = pending.iter().map(|p| p.event_id.as_str()).collect();
            ids.dedup();
            report
                .deferred
                .extend(ids.into_iter().map(|i| (i.to_owned(), why.clone())));
            return Ok(());
        }
        let mut ids: Vec<String> = pending
            .iter()
            .filter(|p| !p.index_done)
            .map(|p| p.event_id.clone())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        if !ids.is_empty() {
            let room = self.disk.clone();
            let ix = self
                .index
                .purge(&ids, |bytes| room.scratch_room().is_none_or(|r| r >= bytes))?;
            report.index_deleted += ix.deleted;
            report.index_segments_merged += ix.merged_segments;
            // Issue 20: a purged mail's Delivery goes with it.
            self.delivery.forget(&ids)?;
            for p in pending.iter_mut().filter(|p| !p.index_done) {
                p.index_done = true;
                st.put(p)?;
            }
            self.meta.flush()?;
        }
        self.stub_segments(&st, &pending, force, report)?;
        let left = st.all()?;
        self.sweep_blobs(&st, &left, report)
    }

    /// Makes sure every pending record has its tombstone in the journal:
    /// after a crash between the promise and the note, the tombstones
    /// appended since `intent_from` are found; those never appended are
    /// appended now (and the audit entry is due).
    fn tombstones_made_sure(&self, st: &State, pending: &[Pending]) -> anyhow::Result<()> {
        let missing: Vec<&Pending> = pending.iter().filter(|p| p.tombstone.is_none()).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let mut want: HashMap<u64, &Pending> = missing.iter().map(|p| (p.leaf, *p)).collect();
        if let Some(from) = st.intent_from()? {
            let end = self.journal.end();
            let mut at = from;
            while at < end && !want.is_empty() {
                let (reads, next) = journal::read_entries(self.journal.dir(), at, end, 4096)?;
                for r in &reads {
                    if let Some(Entry::Tombstone(t)) =
                        r.entry.as_ref().and_then(|e| e.entry.as_ref())
                        && let Some(p) = want.get(&t.leaf)
                        && t.entry_sha256 == p.entry_sha256
                    {
                        st.put(&Pending {
                            tombstone: r.leaf,
                            ..(*p).clone()
                        })?;
                        want.remove(&t.leaf);
                    }
                }
                if reads.is_empty() || next <= at {
                    break;
                }
                at = next;
            }
        }
        if !want.is_empty() {
            let mut rest: Vec<Pending> = want.into_values().cloned().collect();
            rest.sort_by_key(|p| p.leaf);
            self.append_tombstones(st, &rest)?;
        }
        // The audit entry was not due yet when the crash came (it is set
        // after the tombstones): due now, over every tombstone of these
        // records, found or appended.
        if st.audit()?.is_none() {
            let done: Vec<Pending> = st
                .all()?
                .into_iter()
                .filter(|p| missing.iter().any(|m| m.leaf == p.leaf))
                .collect();
            let leaves = done.iter().filter_map(|p| p.tombstone);
            if let (Some(first), Some(last)) = (leaves.clone().min(), leaves.max()) {
                let mut ids: Vec<String> = done.iter().map(|p| p.event_id.clone()).collect();
                ids.sort_unstable();
                ids.dedup();
                let by = done.first().map_or("", |p| p.by.as_str()).to_owned();
                st.set_audit(Some(&super::audit_due(&by, &done, &ids, first, last)))?;
            }
        }
        self.meta.flush()?;
        Ok(())
    }

    /// Replaces the pending records by stubs, segment by segment; the
    /// segment being appended to is closed first.
    fn stub_segments(
        &self,
        st: &State,
        pending: &[Pending],
        force: bool,
        report: &mut PurgeReport,
    ) -> anyhow::Result<()> {
        let dir = self.journal.dir().to_owned();
        let mut by_seg: BTreeMap<u64, HashMap<u64, [u8; 32]>> = BTreeMap::new();
        for p in pending {
            by_seg
                .entry(p.segment)
                .or_default()
                .insert(p.leaf, p.entry_sha256);
        }
        if by_seg.contains_key(&self.journal.end().segment) {
            self.journal.roll()?;
        }
        let ledger = Ledger::open(&self.dir, &self.meta)?;
        for (segment, stubs) in by_seg {
            let size = std::fs::metadata(dir.join(format!("{segment:020}.log")))?.len();
            let purged: u64 = pending
                .iter()
                .filter(|p| p.segment == segment)
                .map(|p| p.bytes)
                .sum();
            let erasure = pending
                .iter()
                .any(|p| p.segment == segment && p.by != super::RETENTION_BY);
            if !force && !erasure && !worth_rewriting(size, purged) {
                report.stubs_pending += stubs.len() as u64;
                continue;
            }
            if let Some(room) = self.disk.scratch_room()
                && room < size
            {
                let why = format!(
                    "no room to rewrite journal segment {segment} ({size} bytes; {room} available above half the free-space reserve)"
                );
                for p in pending.iter().filter(|p| p.segment == segment) {
                    report.deferred.push((p.event_id.clone(), why.clone()));
                }
                continue;
            }
            let Some(rw) = rewrite::prepare(&dir, segment, &stubs)? else {
                // Stubs already (a rewrite finished before a crash).
                for l in stubs.keys() {
                    st.remove(*l)?;
                }
                self.meta.flush()?;
                continue;
            };
            {
                // The anchors are taken under the layout lock: a checkpoint
                // written meanwhile (under the read side) is in them.
                let _layout = self.layout_write();
                let anchors = anchors_in(&ledger, &rw)?;
                st.set_rewrite(segment, &anchors)?;
                self.meta.flush()?;
                rw.commit(&dir)?;
                self.reanchor(segment, &anchors)?;
            }
            st.clear_rewrite(segment)?;
            for l in rw.stubbed.iter().chain(&rw.already) {
                st.remove(*l)?;
            }
            for l in &rw.refused {
                let id = pending
                    .iter()
                    .find(|p| p.leaf == *l)
                    .map_or("", |p| p.event_id.as_str());
                tracing::error!(
                    segment,
                    leaf = l,
                    event = id,
                    "a purged event's journal record is not the one its tombstone names (altered or damaged?); it is left as it is: run `kiroku verify`"
                );
                report.deferred.push((
                    id.to_owned(),
                    format!("its record at leaf {l} differs from the one tombstoned; left as it is (run `kiroku verify`)"),
                ));
                st.remove(*l)?;
            }
            self.meta.flush()?;
            report.journal_bytes_freed += rw.freed();
            tracing::info!(
                segment,
                stubs = rw.stubbed.len(),
                freed = rw.freed(),
                "journal segment rewritten with the purged entries as stubs"
            );
        }
        Ok(())
    }

    /// Sets the ledger's positions in `segment` from their anchors, as the
    /// segment is now (idempotent). Called under the layout lock.
    fn reanchor(&self, segment: u64, anchors: &[Anchor]) -> anyhow::Result<()> {
        if anchors.is_empty() {
            return Ok(());
        }
        let ends = rewrite::leaf_ends(self.journal.dir(), segment)?;
        let ledger = Ledger::open(&self.dir, &self.meta)?;
        for a in anchors {
            let Some(mut r) = ledger.get(a.checkpoint)? else {
                continue;
            };
            let offset = match a.at {
                AnchorAt::Offset(o) => o,
                AnchorAt::AfterLeaf(l) => match ends.get(&l) {
                    Some(o) => *o,
                    None => anyhow::bail!(
                        "journal segment {segment}: leaf {l}, where checkpoint {} is anchored, is not in it any more",
                        a.checkpoint
                    ),
                },
            };
            let pos = if a.end { &mut r.end } else { &mut r.start };
            if pos.segment == segment {
                pos.offset = offset;
            }
            ledger.put(&r)?;
        }
        self.meta.flush()?;
        Ok(())
    }
}

/// Whether a segment of `size` bytes with `purged` bytes of purged records
/// is rewritten now: a small one always (cheap), a large one once a
/// quarter of it is purged, so a retention run that purges a segment's
/// events batch by batch rewrites it a few times, not once per batch.
/// The rest waits for [`Store::compact_purged`] (the end of a run).
pub fn worth_rewriting(size: u64, purged: u64) -> bool {
    size <= SMALL_SEGMENT || purged.saturating_mul(4) >= size
}

/// Segments up to this size are rewritten at every purge (unit tests: a
/// few hundred records, so that both ways are tested).
const SMALL_SEGMENT: u64 = if cfg!(test) { 16 << 10 } else { 16 << 20 };

/// Where each checkpoint position in the rewritten segment is, by the leaf
/// of the record that ends there.
fn anchors_in(ledger: &Ledger, rw: &rewrite::Rewrite) -> anyhow::Result<Vec<Anchor>> {
    let mut out = Vec::new();
    for r in ledger.all()? {
        for (end, p) in [(false, r.start), (true, r.end)] {
            if p.segment != rw.segment {
                continue;
            }
            let at = match rw.boundary_leaf(p.offset) {
                Some(Some(l)) => AnchorAt::AfterLeaf(l),
                // Offset 0, or the end of a KRJ1 record (before every
                // entry, so before every stub): it does not move.
                _ if p.offset == 0 => AnchorAt::Offset(0),
                Some(None) => AnchorAt::Offset(p.offset),
                None => anyhow::bail!(
                    "checkpoint {} names journal segment {} offset {}, which is no record boundary; the ledger or the journal is damaged: run `kiroku verify`",
                    r.number,
                    p.segment,
                    p.offset
                ),
            };
            out.push(Anchor {
                checkpoint: r.number,
                end,
                at,
            });
        }
    }
    Ok(out)
}
