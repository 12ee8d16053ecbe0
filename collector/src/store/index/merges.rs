//! The index's merge policy: tantivy's default (log-structured) merges,
//! but only while the disk has room for them above the free-space reserve.
//! A merge writes the merged segment in full before the old ones are
//! deleted, so it needs about the size of its segments in free space; a
//! merge that does not fit is not started, and the segments stay as they
//! are (searches work the same, a little slower). Tantivy asks again
//! whenever the segments change, that is at the next commit, which only
//! happens once ingest has resumed: merges resume with it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use tantivy::index::SegmentMeta;
use tantivy::indexer::{LogMergePolicy, MergeCandidate, MergePolicy};

/// Bytes that may be written before the reserve is reached; `None` when
/// unknown (then merges are not held back).
pub type Headroom = Arc<dyn Fn() -> Option<u64> + Send + Sync>;

pub struct ReserveMergePolicy {
    inner: LogMergePolicy,
    dir: PathBuf,
    headroom: Headroom,
}

impl std::fmt::Debug for ReserveMergePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReserveMergePolicy")
            .field("inner", &self.inner)
            .field("dir", &self.dir)
            .finish()
    }
}

impl ReserveMergePolicy {
    pub fn new(dir: PathBuf, headroom: Headroom) -> ReserveMergePolicy {
        ReserveMergePolicy {
            inner: LogMergePolicy::default(),
            dir,
            headroom,
        }
    }

    fn segment_bytes(&self) -> HashMap<String, u64> {
        segment_sizes(&self.dir)
    }
}

/// Bytes on disk per segment of the index in `dir` (its files are named
/// `<uuid>.<ext>`).
fn segment_sizes(dir: &std::path::Path) -> HashMap<String, u64> {
    let mut sizes = HashMap::new();
    let Ok(dir) = std::fs::read_dir(dir) else {
        return sizes;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some((uuid, _)) = name.to_str().and_then(|n| n.split_once('.')) else {
            continue;
        };
        let len = entry.metadata().map_or(0, |m| m.len());
        *sizes.entry(uuid.to_owned()).or_default() += len;
    }
    sizes
}

/// Bytes on disk of `segments` of the index in `dir` (what merging them
/// writes, at most).
pub(super) fn segments_bytes(dir: &std::path::Path, segments: &[tantivy::index::SegmentId]) -> u64 {
    let sizes = segment_sizes(dir);
    segments
        .iter()
        .map(|id| sizes.get(&id.uuid_string()).copied().unwrap_or(0))
        .sum()
}

/// The candidates that fit in `room` bytes together, in order; each is
/// `(candidate, bytes it needs)`.
fn fitting(candidates: Vec<(MergeCandidate, u64)>, mut room: u64) -> Vec<MergeCandidate> {
    let mut out = Vec::new();
    for (c, need) in candidates {
        if need <= room {
            room -= need;
            out.push(c);
        }
    }
    out
}

impl MergePolicy for ReserveMergePolicy {
    fn compute_merge_candidates(&self, segments: &[SegmentMeta]) -> Vec<MergeCandidate> {
        let candidates = self.inner.compute_merge_candidates(segments);
        if candidates.is_empty() {
            return candidates;
        }
        let Some(room) = (self.headroom)() else {
            return candidates;
        };
        let sizes = self.segment_bytes();
        let sized: Vec<(MergeCandidate, u64)> = candidates
            .into_iter()
            .map(|c| {
                let need =
                    c.0.iter()
                        .map(|id| sizes.get(&id.uuid_string()).copied().unwrap_or(0))
                        .sum();
                (c, need)
            })
            .collect();
        let wanted = sized.len();
        let held: u64 = sized.iter().map(|(_, n)| n).sum();
        let out = fitting(sized, room);
        if out.len() < wanted {
            tracing::warn!(
                index = %self.dir.display(), held_back = wanted - out.len(), bytes = held, room,
                "index merges held back: not enough disk space above the reserve (min_free_bytes); they resume once space is back"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiroku_proto::{EmailEvent, Event, event::Kind};

    fn event(i: u64) -> Event {
        Event {
            event_id: format!("pc/s/{i}"),
            agent_id: "pc".into(),
            stream_id: "s".into(),
            seq: i,
            kind: Some(Kind::Email(EmailEvent {
                subject: format!("merge {i}"),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn merges_wait_without_room_and_resume_with_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let idx = super::super::EventIndex::open(dir.path()).expect("index");
        let segments = || {
            idx.serving()
                .index
                .searchable_segment_ids()
                .expect("segments")
                .len()
        };
        // No room above the reserve: every commit leaves a segment.
        idx.limit_merges(Arc::new(|| Some(0)));
        for i in 1..=12 {
            idx.add(&[event(i)]).expect("add");
            idx.commit().expect("commit");
        }
        let held = segments();
        assert!(held >= 12, "no merge may start: {held} segments");
        // Room again: the next commit lets tantivy's policy merge them.
        idx.limit_merges(Arc::new(|| Some(u64::MAX)));
        idx.add(&[event(13)]).expect("add");
        idx.commit().expect("commit");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while segments() > held / 2 {
            assert!(std::time::Instant::now() < deadline, "merges never resumed");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    #[test]
    fn merges_that_do_not_fit_above_the_reserve_are_not_started() {
        let c = |n: usize| MergeCandidate(Vec::with_capacity(n));
        let sizes = |cs: &[MergeCandidate]| cs.iter().map(|c| c.0.capacity()).collect::<Vec<_>>();
        let cands = || vec![(c(1), 100), (c(2), 50), (c(3), 30)];
        // Room for everything, for some, for none.
        assert_eq!(sizes(&fitting(cands(), 1000)), vec![1, 2, 3]);
        assert_eq!(sizes(&fitting(cands(), 90)), vec![2, 3]);
        assert_eq!(sizes(&fitting(cands(), 60)), vec![2]);
        assert!(fitting(cands(), 0).is_empty());
    }
}
