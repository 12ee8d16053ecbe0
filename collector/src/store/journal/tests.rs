use super::record::{HEADER, MAGIC_V1};
use super::*;
use kiroku_proto::{AnnotationMark, JournalEntry};

fn ev(id: &str, seq: u64) -> Event {
    Event {
        event_id: id.into(),
        agent_id: "a".into(),
        stream_id: "s".into(),
        seq,
        ..Default::default()
    }
}

fn ids(dir: &Path) -> (Vec<String>, ScanReport) {
    let mut v = Vec::new();
    let r = scan(dir, |e| v.push(e.event_id)).expect("scan");
    (v, r)
}

/// Where each record of segment `n` starts.
fn offsets(dir: &Path, n: u64) -> Vec<u64> {
    let mut v = Vec::new();
    scan_entries(dir, |r| {
        if r.at.segment == n {
            v.push(r.at.offset);
        }
        Ok(())
    })
    .expect("scan");
    v
}

#[test]
fn appends_survive_reopen_and_a_torn_tail_is_cut() {
    let d = tempfile::tempdir().expect("tempdir");
    let j = Journal::open(d.path()).expect("open");
    assert!(j.is_empty());
    assert_eq!(
        j.append(&[ev("e1", 1), ev("e2", 2)]).expect("append"),
        [0, 1]
    );
    assert_eq!(j.append(&[ev("e3", 3)]).expect("append"), [2]);
    let head = j.head();
    drop(j);
    // A crash in the middle of an append: half a record at the end.
    let seg = segment_path(d.path(), 1);
    let mut half = Vec::new();
    let payload = entry::encode_entry(
        &head.last_hash,
        3,
        Entry::Event(entry::reencoded(&ev("e4", 4))),
    );
    encode_record(&mut half, MAGIC_V2, &payload);
    half.truncate(half.len() / 2);
    OpenOptions::new()
        .append(true)
        .open(&seg)
        .and_then(|mut f| f.write_all(&half))
        .expect("tear");
    let (v, r) = ids(d.path());
    assert_eq!(v, ["e1", "e2", "e3"]);
    assert!(r.torn_tail > 0 && r.damaged.is_empty(), "{r:?}");
    let j = Journal::open(d.path()).expect("reopen");
    assert!(!j.is_empty());
    assert_eq!(j.head(), head, "the chain continues where it ended");
    assert_eq!(j.append(&[ev("e5", 5)]).expect("append after the cut"), [3]);
    let (v, r) = ids(d.path());
    assert_eq!(v, ["e1", "e2", "e3", "e5"]);
    assert_eq!(
        r,
        ScanReport {
            records: 4,
            ..Default::default()
        }
    );
}

#[test]
fn entries_are_chained_and_numbered_across_segments_and_restarts() {
    let d = tempfile::tempdir().expect("tempdir");
    let j = Journal::open(d.path()).expect("open");
    assert_eq!(
        j.head(),
        JournalHead {
            end: Position {
                segment: 1,
                offset: 0
            },
            next_leaf: 0,
            last_hash: [0; 32]
        }
    );
    j.append(&[ev("e0", 1), ev("e1", 2)]).expect("append");
    let mark = Entry::Annotations(AnnotationMark {
        event_id: "e0".into(),
        annotations_sha256: vec![7; 32],
    });
    assert_eq!(j.append_entries(vec![mark]).expect("mark"), [2]);
    j.tail.lock().expect("lock").len = SEGMENT_BYTES;
    j.append(&[ev("e3", 3)]).expect("append");
    // A roll-over whose first append never happened: the chain's end is
    // in the segment before.
    j.tail.lock().expect("lock").len = SEGMENT_BYTES;
    let head = j.head();
    drop(j);
    std::fs::File::create(segment_path(d.path(), 3)).expect("empty segment");
    let j = Journal::open(d.path()).expect("reopen");
    assert_eq!(j.head().next_leaf, head.next_leaf);
    assert_eq!(j.head().last_hash, head.last_hash);
    {
        let mut w = j.writer();
        assert_eq!(w.next_leaf(), 4);
        assert_eq!(
            w.append_stored(vec![entry::reencoded(&ev("e4", 4))])
                .expect("append"),
            [4]
        );
    }
    let end = j.head().end;
    let (reads, at) = read_entries(d.path(), Position::default(), end, 100).expect("read");
    assert_eq!(at, end);
    let mut prev = [0u8; 32];
    for (i, r) in reads.iter().enumerate() {
        let e = r.entry.as_ref().expect("an entry");
        assert_eq!(r.leaf, Some(i as u64));
        assert_eq!(e.leaf, i as u64);
        assert_eq!(e.prev, prev.to_vec(), "entry {i} names its predecessor");
        assert_eq!(
            JournalEntry::decode(r.bytes.as_slice()).expect("decode"),
            *e
        );
        prev = r.entry_hash();
    }
    assert_eq!(reads.len(), 5);
    assert_eq!(j.head().last_hash, prev);
    // Events read back with their provenance; the mark is no event.
    let (events, _) = read_events(d.path(), Position::default(), end, 100).expect("events");
    let got: Vec<_> = events
        .iter()
        .map(|(e, p)| (e.event_id.as_str(), p.leaf))
        .collect();
    assert_eq!(
        got,
        [
            ("e0", Some(0)),
            ("e1", Some(1)),
            ("e3", Some(3)),
            ("e4", Some(4))
        ]
    );
    assert!(events.iter().all(|(_, p)| p.reencoded));
}

#[test]
fn old_records_stay_readable_outside_the_chain() {
    let d = tempfile::tempdir().expect("tempdir");
    let seg = segment_path(d.path(), 1);
    let mut old = Vec::new();
    for i in 0..3u64 {
        encode_record(
            &mut old,
            MAGIC_V1,
            &ev(&format!("old{i}"), i + 1).encode_to_vec(),
        );
    }
    std::fs::write(&seg, &old).expect("write");
    let j = Journal::open(d.path()).expect("open");
    assert_eq!(j.head().next_leaf, 0, "KRJ1 records are outside the chain");
    j.append(&[ev("new", 4)]).expect("append");
    let (v, r) = ids(d.path());
    assert_eq!(v, ["old0", "old1", "old2", "new"]);
    assert_eq!(r.records, 4);
    let (reads, _) = read_entries(d.path(), Position::default(), j.end(), 10).expect("read");
    let leaves: Vec<_> = reads.iter().map(|r| r.leaf).collect();
    assert_eq!(leaves, [None, None, None, Some(0)]);
    assert!(reads[0].entry.is_none());
    assert_eq!(reads[1].at.offset, reads[0].len);
}

#[test]
fn damage_in_the_middle_costs_only_the_records_it_covers() {
    let d = tempfile::tempdir().expect("tempdir");
    let j = Journal::open(d.path()).expect("open");
    for i in 0..10u64 {
        j.append(&[ev(&format!("e{i}"), i + 1)]).expect("append");
    }
    drop(j);
    let at = offsets(d.path(), 1);
    let seg = segment_path(d.path(), 1);
    let mut bytes = std::fs::read(&seg).expect("read");
    // Flip bytes inside the 4th record's payload and the 7th's header.
    bytes[at[3] as usize + HEADER + 2] ^= 0xff;
    bytes[at[6] as usize + 1] ^= 0xff;
    std::fs::write(&seg, &bytes).expect("write");
    let (v, r) = ids(d.path());
    assert_eq!(v, ["e0", "e1", "e2", "e4", "e5", "e7", "e8", "e9"]);
    assert_eq!(r.damaged.len(), 2, "{r:?}");
    assert_eq!(r.torn_tail, 0);
    // Once repair has reported it, the damage is known, not new.
    assert_eq!(unreviewed(d.path(), &r.damaged).len(), 2);
    mark_reviewed(d.path(), &r.damaged[..1]).expect("mark");
    assert_eq!(unreviewed(d.path(), &r.damaged).len(), 1);
    mark_reviewed(d.path(), &r.damaged).expect("mark");
    assert!(unreviewed(d.path(), &r.damaged).is_empty());
    assert_eq!(segments(d.path()).expect("segments"), [1], "not a segment");
    // The chain continues after the last valid entry.
    let j = Journal::open(d.path()).expect("reopen");
    assert_eq!(j.head().next_leaf, 10);
}

#[test]
fn read_from_goes_in_batches_across_segments_past_damage_up_to_an_end() {
    let d = tempfile::tempdir().expect("tempdir");
    let j = Journal::open(d.path()).expect("open");
    for i in 0..6u64 {
        j.append(&[ev(&format!("e{i}"), i)]).expect("append");
    }
    j.tail.lock().expect("lock").len = SEGMENT_BYTES;
    for i in 6..10u64 {
        j.append(&[ev(&format!("e{i}"), i)]).expect("append");
    }
    let end = j.end();
    j.append(&[ev("after-the-end", 10)]).expect("append");
    drop(j);
    // Damage inside the third record of the first segment.
    let at = offsets(d.path(), 1);
    let seg = segment_path(d.path(), 1);
    let mut bytes = std::fs::read(&seg).expect("read");
    bytes[at[2] as usize + HEADER + 1] ^= 0xff;
    std::fs::write(&seg, &bytes).expect("write");

    let read_all = |batch: usize| {
        let (mut at, mut seen, mut calls) = (Position::default(), Vec::new(), 0);
        loop {
            let (events, next) = read_from(d.path(), at, end, batch).expect("read");
            calls += 1;
            if events.is_empty() {
                assert!(next >= end, "no events only at the end: {next:?}");
                break;
            }
            assert!(events.len() <= batch && next > at);
            seen.extend(events.into_iter().map(|e| e.event_id));
            at = next;
        }
        (seen, calls)
    };
    let want = ["e0", "e1", "e3", "e4", "e5", "e6", "e7", "e8", "e9"];
    for (batch, calls) in [(1, 10), (4, 4), (100, 2)] {
        let (seen, n) = read_all(batch);
        assert_eq!(seen, want, "batches of {batch}");
        assert_eq!(n, calls, "batches of {batch}");
    }
    // From the middle of the second segment.
    let (from_e7, _) = {
        let (_, p) = read_from(d.path(), Position::default(), end, 6).expect("read");
        read_from(d.path(), p, end, 100).expect("read")
    };
    let ids: Vec<_> = from_e7.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, ["e7", "e8", "e9"]);
}

#[test]
fn segments_roll_over_and_are_read_in_order() {
    let d = tempfile::tempdir().expect("tempdir");
    let j = Journal::open(d.path()).expect("open");
    for i in 0..5u64 {
        j.append(&[ev(&format!("e{i}"), i)]).expect("append");
    }
    // Force a roll-over by pretending the segment is full.
    j.tail.lock().expect("lock").len = SEGMENT_BYTES;
    j.append(&[ev("e5", 5)]).expect("append");
    drop(j);
    assert_eq!(segments(d.path()).expect("segments"), [1, 2]);
    let (v, _) = ids(d.path());
    assert_eq!(v, ["e0", "e1", "e2", "e3", "e4", "e5"]);
}
