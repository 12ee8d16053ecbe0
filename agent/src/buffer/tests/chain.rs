//! The stream hash chain (`buffer/chain.rs`): every queued event links to
//! the bytes of the one before it, whatever path queued it, across
//! restarts, fresh generations, recovery and concurrent writers; a buffer
//! that lost events starts the chain again saying why.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::super::{Buffer, Durability, Recorded};
use super::mail;
use kiroku_proto::Event;

fn sha(bytes: &[u8]) -> Vec<u8> {
    Sha256::digest(bytes).to_vec()
}

fn all(b: &Buffer) -> Vec<Recorded> {
    b.read_recorded(0, usize::MAX, usize::MAX).expect("read")
}

/// Every event after the first of `records` names its predecessor's hash,
/// and the bytes decode to the event the shipper sees.
fn assert_linked(records: &[Recorded]) {
    for pair in records.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1, "consecutive");
        assert_eq!(
            pair[1].event.prev_hash,
            sha(&pair[0].bytes),
            "event {} links to event {}",
            pair[1].seq,
            pair[0].seq
        );
        assert!(pair[1].event.chain_restart.is_empty());
    }
    for r in records {
        assert_eq!(
            <Event as prost::Message>::encode_to_vec(&r.event),
            r.bytes,
            "decoded copy"
        );
    }
}

/// Each way of queueing an event (append, begin/finish, append_with,
/// take_note) links it; the head is the last durable event and survives a
/// restart, after which the chain continues.
#[tokio::test]
async fn every_queued_event_links_to_the_previous_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (head, last_bytes) = {
        let b = Buffer::open(dir.path(), u64::MAX, 1 << 20).expect("open");
        assert_eq!(b.chain_head(), None, "nothing recorded yet");
        b.append(&mail(b"one"), Some(b"one"[..].into()))
            .await
            .expect("append");
        let id = b.begin(&mail(b"two"), None).await.expect("begin");
        b.finish(id, |_| {}).await.expect("finish");
        let state = b.keyed_state("file_state");
        let (seq, ()) = b
            .append_with(Event::default(), &state, |tx| {
                tx.insert("k", "v")?;
                Ok((true, ()))
            })
            .await
            .expect("append_with");
        assert_eq!(seq, Some(3));
        b.note("gap/x", Durability::Now, |_| b"n".to_vec())
            .await
            .expect("note");
        b.take_note("gap/x", |_| Some(Event::default()))
            .await
            .expect("take_note");
        let records = all(&b);
        assert_eq!(records.len(), 4);
        assert!(records[0].event.prev_hash.is_empty(), "first of a stream");
        assert!(records[0].event.chain_restart.is_empty());
        assert_linked(&records);
        let head = b.chain_head().expect("head");
        assert_eq!(
            (head.seq, head.sha256.to_vec()),
            (4, sha(&records[3].bytes))
        );
        (head, records[3].bytes.clone())
    };
    let b = Buffer::open(dir.path(), u64::MAX, 1 << 20).expect("reopen");
    assert_eq!(b.chain_head(), Some(head), "kept across the restart");
    b.append(&mail(b"five"), None).await.expect("append");
    let records = all(&b);
    assert_eq!(records[4].event.prev_hash, sha(&last_bytes));
    assert_linked(&records);
}

/// The head reported is that of the newest durable event: one committed
/// but not flushed yet is not reported.
#[tokio::test]
async fn the_reported_head_is_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = Buffer::open(dir.path(), u64::MAX, 1 << 20).expect("open");
    b.append(&mail(b"one"), None).await.expect("append");
    let id = b.begin(&mail(b"two"), None).await.expect("begin");
    let settled = b.settle(id, |_| {}).expect("settle");
    let head = b.chain_head().expect("head");
    assert_eq!(head.seq, 1, "event 2 is not durable yet");
    assert_eq!(head.sha256.to_vec(), sha(&all(&b)[0].bytes));
    b.make_durable(settled).await.expect("durable");
    assert_eq!(b.chain_head().expect("head").seq, 2);
}

/// A drained buffer moved to a fresh generation keeps its chain: the next
/// event links to the last one acknowledged in the old generation, also
/// after a restart.
#[tokio::test]
async fn a_fresh_generation_carries_the_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = Buffer::open(dir.path(), u64::MAX, 1 << 20).expect("open");
    for i in 0..200u32 {
        let raw = vec![b'a' + (i % 26) as u8; 20_000 + i as usize];
        b.append(&mail(&raw), Some(raw[..].into()))
            .await
            .expect("append");
    }
    let last = all(&b).pop().expect("last");
    b.ack(last.seq).await.expect("ack");
    assert!(b.compact_if_worthwhile(true), "a new generation");
    assert!(dir.path().join("sled-1").is_dir());
    b.append(&mail(b"after"), None).await.expect("append");
    let next = all(&b).pop().expect("next");
    assert_eq!(next.seq, last.seq + 1);
    assert_eq!(next.event.prev_hash, sha(&last.bytes), "linked across");
    drop(b);
    let b = Buffer::open(dir.path(), u64::MAX, 1 << 20).expect("reopen");
    b.append(&mail(b"later"), None).await.expect("append");
    assert_linked(&all(&b));
}

/// An in-flight record left by a crash is queued at the next start with
/// the chain's next link, like any other.
#[tokio::test]
async fn recovered_inflight_records_are_linked() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let b = Buffer::open(dir.path(), u64::MAX, 1 << 20).expect("open");
        b.append(&mail(b"one"), None).await.expect("append");
        b.begin(&mail(b"crashed"), None).await.expect("begin");
        b.append(&mail(b"three"), None).await.expect("append");
        // Dropped with the in-flight record unsettled: a crash.
    }
    let b = Buffer::open(dir.path(), u64::MAX, 1 << 20).expect("reopen");
    let records = all(&b);
    assert_eq!(records.len(), 3, "recovered");
    assert_linked(&records);
    assert_eq!(b.chain_head().expect("head").seq, 3);
}

/// Writers racing through group commit each get one link of a single
/// chain, in sequence order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_form_one_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = Buffer::open(dir.path(), u64::MAX, 1 << 20).expect("open");
    let tasks: Vec<_> = (0..64u32)
        .map(|i| {
            let b = Arc::clone(&b);
            tokio::spawn(async move {
                let raw = format!("mail {i}").into_bytes();
                if i % 2 == 0 {
                    b.append(&mail(&raw), Some(raw[..].into())).await
                } else {
                    let id = b.begin(&mail(&raw), None).await?;
                    let settled = b.settle(id, |_| {})?;
                    b.make_durable(settled).await
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task").expect("recorded");
    }
    let records = all(&b);
    assert_eq!(records.len(), 64);
    assert!(records[0].event.prev_hash.is_empty());
    assert_linked(&records);
}

/// A database sled declares damaged is moved aside: the new stream's first
/// event says why the chain starts again, even after another restart
/// before it is recorded; the events after it link normally.
#[tokio::test]
async fn a_buffer_moved_aside_restarts_the_chain_saying_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old_stream = {
        let b = Buffer::open(dir.path(), u64::MAX, 1 << 20).expect("open");
        b.append(&mail(b"one"), None).await.expect("append");
        b.persist_seq();
        b.stream_id()
    };
    // A configuration sled cannot parse: sled reports corruption.
    std::fs::write(
        dir.path().join("sled").join("conf"),
        b"damaged configuration\n\0\0\0\0",
    )
    .expect("damage");
    {
        let b = Buffer::open(dir.path(), u64::MAX, 1 << 20).expect("reopen");
        let damage = b.damage().expect("moved aside");
        assert!(damage.contains("moved aside"), "{damage}");
        assert_ne!(b.stream_id(), old_stream, "a new stream");
        // Stopped before anything is recorded.
    }
    let b = Buffer::open(dir.path(), u64::MAX, 1 << 20).expect("reopen again");
    b.append(&mail(b"two"), None).await.expect("append");
    b.append(&mail(b"three"), None).await.expect("append");
    let records = all(&b);
    let first = &records[0].event;
    assert!(first.prev_hash.is_empty());
    assert!(
        first.chain_restart.contains("moved aside") && first.chain_restart.contains(&old_stream),
        "{}",
        first.chain_restart
    );
    assert_linked(&records);
}

/// The test tool's rewrite (test-hooks builds) changes the queued bytes
/// through sled and leaves the chain as it was: the next event's link no
/// longer matches, which is what the collector detects.
#[cfg(feature = "test-hooks")]
#[tokio::test]
async fn a_rewrite_without_fixing_the_chain_breaks_the_next_link() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let b = Buffer::open(dir.path(), u64::MAX, 1 << 20).expect("open");
        for raw in [&b"one"[..], b"two", b"three"] {
            b.append(&mail(raw), None).await.expect("append");
        }
    }
    let b = Buffer::open(dir.path(), u64::MAX, 1 << 20).expect("reopen");
    let before = all(&b);
    let (old, new) = b
        .rewrite_queued(2, |e| {
            if let Some(kiroku_proto::event::Kind::Email(m)) = &mut e.kind {
                m.subject = "forged".into();
            }
            Ok(())
        })
        .expect("rewrite");
    assert_ne!(old, new);
    assert!(b.rewrite_queued(9, |_| Ok(())).is_err(), "no such event");
    drop(b);
    let b = Buffer::open(dir.path(), u64::MAX, 1 << 20).expect("reopen");
    let after = all(&b);
    assert_eq!(hex::encode(sha(&after[1].bytes)), new);
    assert_eq!(after[1].event.prev_hash, before[1].event.prev_hash);
    assert_eq!(after[2].bytes, before[2].bytes, "the next event untouched");
    assert_ne!(
        after[2].event.prev_hash,
        sha(&after[1].bytes),
        "its link no longer matches"
    );
}
