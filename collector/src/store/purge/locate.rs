//! Finding the journal records of the events to purge: each event's leaf
//! from the index (its provenance), the segment holding that leaf, and
//! every record of the victims in that segment (the journal may hold an
//! event twice: a batch stored again after a lost ack).

use std::collections::{BTreeSet, HashMap, HashSet};

use kiroku_proto::journal_entry::Entry;

use super::state::{Pending, State};
use super::{PurgeReport, Victim};
use crate::store::Store;
use crate::store::journal::{self, Position, rewrite};
use crate::store::repair::blob_check::referenced_blobs;

/// What [`locate`] found.
#[derive(Default)]
pub struct Found {
    /// One per journal record to stub.
    pub records: Vec<Pending>,
    /// The events they hold.
    pub events: BTreeSet<String>,
    /// Blobs those events name (raw messages).
    pub blobs: BTreeSet<String>,
}

/// The first leaf of each segment, ascending (segments without an entry
/// left out).
fn segment_starts(dir: &std::path::Path) -> anyhow::Result<Vec<(u64, u64)>> {
    let mut v = Vec::new();
    for s in journal::segments(dir)? {
        if let Some(l) = rewrite::first_leaf(dir, s)? {
            v.push((s, l));
        }
    }
    Ok(v)
}

/// The segment holding `leaf`.
fn segment_of(starts: &[(u64, u64)], leaf: u64) -> Option<u64> {
    let i = starts.partition_point(|(_, first)| *first <= leaf);
    i.checked_sub(1).map(|i| starts[i].0)
}

pub fn locate(
    store: &Store,
    st: &State,
    victims: &[Victim],
    by: &str,
    report: &mut PurgeReport,
) -> anyhow::Result<Found> {
    let dir = store.journal.dir();
    let starts = segment_starts(dir)?;
    let mut reasons: HashMap<&str, &str> = HashMap::new();
    let mut segs: BTreeSet<u64> = BTreeSet::new();
    for v in victims {
        if reasons.contains_key(v.event_id.as_str()) {
            continue;
        }
        let leaf = match store.index.provenance(&v.event_id)? {
            Some(p) => p.leaf,
            None => {
                report.deferred.push((
                    v.event_id.clone(),
                    "not in the index (already purged, or unknown)".into(),
                ));
                continue;
            }
        };
        let Some(seg) = leaf.and_then(|l| segment_of(&starts, l)) else {
            report.deferred.push((
                v.event_id.clone(),
                "journalled before the journal was chained (issue 18): it has no leaf to tombstone; not purged".into(),
            ));
            continue;
        };
        reasons.insert(v.event_id.as_str(), v.reason.as_str());
        segs.insert(seg);
    }
    let mut found = Found::default();
    let mut seen: HashSet<String> = HashSet::new();
    let head = store.journal.end();
    for seg in segs {
        let end = if seg == head.segment {
            head
        } else {
            let len = std::fs::metadata(dir.join(format!("{seg:020}.log")))?.len();
            Position {
                segment: seg,
                offset: len,
            }
        };
        let mut at = Position {
            segment: seg,
            offset: 0,
        };
        while at < end {
            let (reads, next) = journal::read_entries(dir, at, end, 4096)?;
            for r in &reads {
                let (Some(e), Some(leaf)) = (&r.entry, r.leaf) else {
                    continue;
                };
                let Some(Entry::Event(s)) = &e.entry else {
                    continue;
                };
                let Some(a) = &s.additions else { continue };
                let Some(reason) = reasons.get(a.event_id.as_str()) else {
                    continue;
                };
                if st.has(leaf)? {
                    continue;
                }
                let blob = match journal::event_of(r) {
                    Some(Ok((ev, _))) => referenced_blobs(&ev).unwrap_or_default(),
                    _ => String::new(),
                };
                if !blob.is_empty() {
                    found.blobs.insert(blob.clone());
                }
                seen.insert(a.event_id.clone());
                found.events.insert(a.event_id.clone());
                found.records.push(Pending {
                    leaf,
                    segment: seg,
                    entry_sha256: r.entry_hash(),
                    tombstone: None,
                    recorded_sha256: a.recorded_sha256.clone(),
                    event_id: a.event_id.clone(),
                    reason: (*reason).to_owned(),
                    by: by.to_owned(),
                    bytes: r.len,
                    blob,
                    index_done: false,
                });
            }
            if reads.is_empty() || next <= at {
                break;
            }
            at = next;
        }
    }
    for id in reasons.keys() {
        if !seen.contains(*id) {
            report.deferred.push((
                (*id).to_owned(),
                "its journal record was not found where the index says it is (a purge in progress, or damage: run `kiroku verify`)".into(),
            ));
        }
    }
    Ok(found)
}
