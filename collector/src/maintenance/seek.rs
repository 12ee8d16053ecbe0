//! Finding a journal leaf again. A run's cursor is (segment, next leaf),
//! not a byte offset: a purge rewrites segments (records become shorter
//! stubs) and moves offsets. The position of a leaf is found by a binary
//! search over the segment (each probe reads the first record at or after
//! a byte offset: the journal reader resynchronises on the next record
//! that checks out), then a short scan. Leaves grow in file order; where
//! the journal was tampered with they may not, and the run's chain check
//! reports it.

use std::path::Path;

use crate::store::journal::{Position, read_entries, segments};

/// Below this span the search scans.
const SCAN_SPAN: u64 = if cfg!(test) { 64 } else { 256 * 1024 };

/// Bytes of segment `seg` that may be read (all of it, or up to `end` in
/// the segment being written).
fn readable(dir: &Path, seg: u64, end: Position) -> anyhow::Result<u64> {
    if seg == end.segment {
        return Ok(end.offset);
    }
    let path = dir.join(format!("{seg:020}.log"));
    Ok(std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0))
}

/// The position of the first record from segment `from_segment` on whose
/// leaf is at least `leaf` (a record without a leaf, of an older
/// collector, counts as before it), or `end` when there is none.
pub fn seek(dir: &Path, from_segment: u64, leaf: u64, end: Position) -> anyhow::Result<Position> {
    for seg in segments(dir)?.into_iter().filter(|s| *s >= from_segment) {
        if seg > end.segment {
            break;
        }
        let len = readable(dir, seg, end)?;
        let seg_end = Position {
            segment: seg,
            offset: len,
        };
        let at_or_after = |r: &crate::store::journal::EntryRead| r.leaf.is_some_and(|l| l >= leaf);
        let (mut lo, mut hi) = (0u64, len);
        while hi - lo > SCAN_SPAN {
            let mid = lo + (hi - lo) / 2;
            let probe_end = Position {
                segment: seg,
                offset: hi,
            };
            let (r, _) = read_entries(
                dir,
                Position {
                    segment: seg,
                    offset: mid,
                },
                probe_end,
                1,
            )?;
            match r.first() {
                Some(r) if !at_or_after(r) => lo = r.at.offset,
                _ => hi = mid,
            }
        }
        let mut at = Position {
            segment: seg,
            offset: lo,
        };
        while at < seg_end {
            let (reads, next) = read_entries(dir, at, seg_end, 1024)?;
            if let Some(r) = reads.iter().find(|r| at_or_after(r)) {
                return Ok(r.at);
            }
            if reads.is_empty() || next <= at {
                break;
            }
            at = next;
        }
    }
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiroku_proto::Event;

    #[test]
    fn finds_every_leaf_in_every_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let j = crate::store::journal::Journal::open(dir.path()).expect("journal");
        let events: Vec<Event> = (0..300)
            .map(|i| Event {
                event_id: format!("a/s/{i}"),
                agent_id: "a".into(),
                stream_id: "s".into(),
                seq: i,
                user: "x".repeat((i % 7) as usize * 100),
                ..Event::default()
            })
            .collect();
        for chunk in events.chunks(50) {
            j.append(chunk).expect("append");
        }
        let end = j.end();
        for leaf in [0u64, 1, 17, 150, 299] {
            let at = seek(dir.path(), 0, leaf, end).expect("seek");
            let (r, _) = read_entries(dir.path(), at, end, 1).expect("read");
            assert_eq!(r.first().and_then(|r| r.leaf), Some(leaf), "leaf {leaf}");
        }
        assert_eq!(seek(dir.path(), 0, 300, end).expect("seek"), end);
    }
}
