//! The buffer's behaviour as a whole: recording, shipping order,
//! durability, recovery after a crash, damage and write errors.

use super::store::{self, created_with_segment_size};
use super::*;
use kiroku_proto::{EmailEvent, Outcome, event::Kind};

mod chain;

fn mail(raw: &[u8]) -> Event {
    Event {
        kind: Some(Kind::Email(EmailEvent {
            raw_sha256: kiroku_common::sha256_hex(raw),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn outcome(e: &Event) -> i32 {
    match &e.kind {
        Some(Kind::Email(m)) => m.outcome,
        _ => -1,
    }
}

#[tokio::test]
async fn append_read_ack_and_blob_refcounts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = Buffer::open(dir.path(), u64::MAX, 1 << 20).expect("open");
    let raw = b"Subject: x\r\n\r\nbody\r\n";
    let s1 = b
        .append(&mail(raw), Some(raw[..].into()))
        .await
        .expect("append");
    let s2 = b
        .append(&mail(raw), Some(raw[..].into()))
        .await
        .expect("append");
    assert_eq!((s1, s2), (1, 2));
    let batch = b.read_batch(0, 10, 1 << 20).expect("read");
    assert_eq!(batch.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(b.read_batch(1, 10, 1 << 20).expect("read").len(), 1);
    let sha = kiroku_common::sha256_hex(raw);
    assert_eq!(b.ack(1).await.expect("ack"), 1);
    assert!(
        b.blob(&sha).expect("blob").is_some(),
        "still referenced by seq 2"
    );
    b.ack(2).await.expect("ack");
    assert!(b.blob(&sha).expect("blob").is_none());
    assert_eq!(b.backlog().queued, 0);
}

#[tokio::test]
async fn inflight_survives_reopen_with_unknown_outcome() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("buf");
    let stream_id;
    {
        let b = Buffer::open(&path, u64::MAX, 1 << 20).expect("open");
        stream_id = b.stream_id().to_owned();
        let done = b
            .begin(&mail(b"a"), Some(b"a"[..].into()))
            .await
            .expect("begin");
        b.begin(&mail(b"b"), Some(b"b"[..].into()))
            .await
            .expect("begin");
        b.finish(done, |e| {
            if let Some(Kind::Email(m)) = &mut e.kind {
                m.outcome = Outcome::Delivered as i32;
            }
        })
        .await
        .expect("finish");
    }
    let b = Buffer::open(&path, u64::MAX, 1 << 20).expect("reopen");
    assert_eq!(b.stream_id(), stream_id, "stream id is stable");
    let batch = b.read_batch(0, 10, 1 << 20).expect("read");
    assert_eq!(batch.len(), 2);
    assert_eq!(outcome(&batch[0]), Outcome::Delivered as i32);
    assert_eq!(outcome(&batch[1]), Outcome::Unknown as i32);
    assert_eq!(b.backlog().inflight, 0);
}

#[tokio::test]
async fn small_messages_are_stored_inline_large_ones_as_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = Buffer::open(&dir.path().join("buf"), u64::MAX, 1 << 20).expect("open");
    let files = || {
        std::fs::read_dir(dir.path().join("buf").join("blobs"))
            .expect("blobs dir")
            .count()
    };
    let small = vec![b'a'; INLINE_MAX];
    let large = vec![b'b'; INLINE_MAX + 1];
    let mut shas = Vec::new();
    for raw in [&small, &large, &small] {
        let mut sp = b.spool().await.expect("spool");
        for chunk in raw.chunks(1000) {
            sp.write(chunk).await.expect("write");
        }
        let sp = sp.finish().await.expect("finish");
        assert_eq!(sp.sha256, kiroku_common::sha256_hex(raw));
        assert_eq!(sp.bytes().is_some(), raw.len() <= INLINE_MAX);
        shas.push(sp.sha256.clone());
        b.append(&mail(raw), Some(Blob::Spooled(sp)))
            .await
            .expect("append");
    }
    assert_eq!(files(), 1, "only the large message has a file");
    assert_eq!(b.blob(&shas[0]).expect("blob"), Some(small.clone()));
    assert_eq!(b.blob(&shas[1]).expect("blob"), Some(large.clone()));
    assert!(matches!(
        b.blob_file(&shas[0]).await.expect("source"),
        Some(BlobSource::Bytes(v)) if v == small
    ));
    // The first small event goes; its content stays for the third.
    b.ack(1).await.expect("ack");
    assert_eq!(b.blob(&shas[0]).expect("blob"), Some(small.clone()));
    b.ack(3).await.expect("ack");
    assert_eq!(b.blob(&shas[0]).expect("blob"), None);
    assert_eq!(b.blob(&shas[1]).expect("blob"), None);
    assert_eq!(files(), 0);
}

#[tokio::test]
async fn a_buffer_made_with_the_old_segment_size_still_opens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("buf");
    let old_default = 512 * 1024;
    {
        let db = sled::Config::new()
            .path(path.join("sled"))
            .segment_size(old_default)
            .open()
            .expect("old db");
        db.insert(STREAM_ID, &b"0123456789abcdef"[..])
            .expect("insert");
        db.open_tree("meta")
            .expect("meta")
            .insert(STREAM_ID, &b"0123456789abcdef"[..])
            .expect("insert");
        db.flush().expect("flush");
    }
    let b = Buffer::open(&path, u64::MAX, 1 << 20).expect("opens with its own segment size");
    assert_eq!(
        b.stream_id(),
        "0123456789abcdef",
        "the same buffer, not a new one"
    );
    assert_eq!(
        created_with_segment_size(
            "cannot change the io buffer size across restarts. please change it back to 524288"
        ),
        Some(524288)
    );
}

#[tokio::test]
async fn damage_that_sled_silently_cuts_is_detected_and_numbers_are_not_reused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("buf");
    let last = {
        let b = Buffer::open(&path, u64::MAX, 1 << 20).expect("open");
        let mut last = 0;
        for i in 0..300 {
            let e = Event {
                event_id: format!("e{i}"),
                user: "x".repeat(200),
                ..Default::default()
            };
            last = b.append(&e, None).await.expect("append");
        }
        assert!(b.damage().is_none());
        last
    };
    // Flip bytes in the middle of sled's log, as a bad disk would.
    let db = path.join("sled").join("db");
    let mut bytes = std::fs::read(&db).expect("read");
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 16] {
        *b ^= 0x55;
    }
    std::fs::write(&db, &bytes).expect("write");
    let b = Buffer::open(&path, u64::MAX, 1 << 20).expect("reopen");
    let read = b.read_batch(0, 10_000, usize::MAX).expect("read");
    assert!(
        read.len() < 300,
        "sled cut its log at the damage ({} left)",
        read.len()
    );
    let damage = b.damage().expect("the loss is detected").to_owned();
    assert!(damage.contains(&format!("..={last}")), "{damage}");
    let next = b
        .append(&Event::default(), None)
        .await
        .expect("append after damage");
    // (An in-flight record the cut log brought back may take `last + 1`.)
    assert!(
        next > last,
        "sequence numbers are not reused: {next} after {damage}"
    );
    // The first event after the loss starts the stream's chain again,
    // saying why (the collector records an agent-reported loss).
    let after = b.read_batch(last, 10, usize::MAX).expect("read");
    assert!(after[0].prev_hash.is_empty());
    assert!(
        after[0].chain_restart.contains("lost"),
        "{}",
        after[0].chain_restart
    );
    drop(b);
    let b = Buffer::open(&path, u64::MAX, 1 << 20).expect("reopen again");
    assert!(b.damage().is_none(), "reported once");
}

#[tokio::test]
async fn a_buffer_in_use_is_refused_not_moved_aside() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("buf");
    let first = Buffer::open(&path, u64::MAX, 1 << 20).expect("open");
    let id = first.stream_id().to_owned();
    // sled's lock is per process (flock on an fd): take it from a child.
    let mut child = std::process::Command::new("flock")
        .args(["-x", "-o"])
        .arg(path.join("sled").join("db"))
        .args(["sleep", "30"])
        .spawn()
        .expect("flock");
    drop(first);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let err = Buffer::open(&path, u64::MAX, 1 << 20).err();
    let _ = child.kill();
    let _ = child.wait();
    let err = err.expect("a locked buffer must not open").to_string();
    assert!(err.contains("in use by another process"), "{err}");
    assert!(
        !std::fs::read_dir(dir.path().join("buf"))
            .expect("dir")
            .flatten()
            .any(|e| e.file_name().to_string_lossy().contains("broken")),
        "moved aside"
    );
    let again = Buffer::open(&path, u64::MAX, 1 << 20).expect("reopen once free");
    assert_eq!(again.stream_id(), id);
}

#[tokio::test]
async fn shipper_never_sees_events_that_are_not_yet_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = Buffer::open(dir.path(), u64::MAX, 1 << 20).expect("open");
    // Queued in memory, not yet flushed (what finish() does before its
    // flush returns).
    let seq = b
        .with_store(|s| b.move_to_queue(s, b"none", 0, &mail(b"early")))
        .expect("queue");
    assert!(b.read_batch(0, 10, 1 << 20).expect("read").is_empty());
    let seq2 = b.append(&mail(b"later"), None).await.expect("append");
    let got: Vec<u64> = b
        .read_batch(0, 10, 1 << 20)
        .expect("read")
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(got, vec![seq, seq2], "one flush makes both durable");
}

#[tokio::test]
async fn orphan_blob_files_are_collected_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let b = Buffer::open(dir.path(), u64::MAX, 1 << 20).expect("open");
        b.append(&mail(b"kept"), Some(b"kept"[..].into()))
            .await
            .expect("append");
    }
    let orphan = dir
        .path()
        .join("blobs")
        .join(kiroku_common::sha256_hex(b"orphan"));
    std::fs::write(&orphan, b"orphan").expect("write");
    std::fs::write(dir.path().join("blobs/x.tmp"), b"partial").expect("write");
    let b = Buffer::open(dir.path(), u64::MAX, 1 << 20).expect("reopen");
    assert!(!orphan.exists());
    assert!(!dir.path().join("blobs/x.tmp").exists());
    let kept = kiroku_common::sha256_hex(b"kept");
    assert_eq!(b.blob(&kept).expect("blob").as_deref(), Some(&b"kept"[..]));
    assert!(b.backlog().bytes >= 4);
}

#[tokio::test]
async fn full_buffer_refuses_new_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = Buffer::open(dir.path(), 1, 1 << 20).expect("open");
    // An empty buffer takes one record, whatever its size (one record may
    // overshoot the bound); the next is refused.
    b.append(&mail(b"x"), Some(b"x"[..].into()))
        .await
        .expect("the first");
    let err = b
        .append(&mail(b"x"), Some(b"x"[..].into()))
        .await
        .expect_err("full");
    assert!(matches!(err, BufferError::Full { .. }), "{err}");
}

/// After a write error (sled poisons its handle) the buffer refuses new
/// records as unwritable, reopens the same database by itself and takes
/// records again; an in-flight record whose session gave up is recovered.
#[tokio::test]
async fn a_write_error_closes_the_buffer_until_it_reopens_by_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = Buffer::open(dir.path(), u64::MAX, 1 << 20).expect("open");
    let id = b.stream_id().to_owned();
    let s1 = b
        .append(&mail(b"one"), Some(b"one"[..].into()))
        .await
        .expect("append");
    let lost = b.begin(&mail(b"two"), None).await.expect("begin");
    b.inject_write_error("No space left on device (os error 28)");
    let err = b.append(&mail(b"three"), None).await.expect_err("refused");
    assert!(err.unwritable(), "{err}");
    assert!(b.problem().expect("a problem").contains("unwritable"));
    // The session settles (in memory; never made durable).
    let _ = b.settle(lost, |_| {});
    b.maintain();
    assert!(b.failed().is_none(), "reopened: {:?}", b.failed());
    assert_eq!(b.stream_id(), id);
    let s3 = b
        .append(&mail(b"four"), None)
        .await
        .expect("accepted again");
    assert!(s3 > s1);
    let seqs: Vec<u64> = b
        .read_batch(0, 10, 1 << 20)
        .expect("read")
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(
        seqs.len(),
        3,
        "one, two (settled or recovered), four: {seqs:?}"
    );
    assert!(
        b.blob(&kiroku_common::sha256_hex(b"one"))
            .expect("blob")
            .is_some()
    );
}

/// An I/O error at open is not damage: nothing is moved aside, the buffer
/// starts closed and opens once the cause is gone.
#[tokio::test]
async fn an_io_error_at_open_is_not_damage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = {
        let b = Buffer::open(dir.path(), u64::MAX, 1 << 20).expect("open");
        b.append(&mail(b"kept"), Some(b"kept"[..].into()))
            .await
            .expect("append");
        b.stream_id()
    };
    // sled cannot open its directory while something else is in the way.
    let real = dir.path().join("sled");
    let away = dir.path().join("elsewhere");
    std::fs::rename(&real, &away).expect("rename");
    std::fs::write(&real, b"not a directory").expect("write");
    let b = Buffer::open(dir.path(), u64::MAX, 1 << 20).expect("opens closed");
    assert!(b.failed().is_some(), "closed");
    assert!(!b.is_open());
    assert_eq!(
        b.stream_id(),
        id,
        "known from the side file, for the shipper's status"
    );
    assert!(
        b.append(&mail(b"x"), None)
            .await
            .expect_err("refused")
            .unwritable()
    );
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains("broken")), "{names:?}");
    std::fs::remove_file(&real).expect("rm");
    std::fs::rename(&away, &real).expect("rename back");
    *b.last_attempt.lock().expect("lock") = None;
    b.maintain();
    assert!(b.failed().is_none(), "{:?}", b.failed());
    let got = b.read_batch(0, 10, 1 << 20).expect("read");
    assert_eq!(got.len(), 1, "the buffered event is still there");
    assert_eq!(
        b.blob(&kiroku_common::sha256_hex(b"kept"))
            .expect("blob")
            .as_deref(),
        Some(&b"kept"[..])
    );
}

/// Once drained, a fresh generation replaces a grown database: the disk
/// space comes back, and the stream, its numbering, notes and keyed state
/// carry over, also across a restart.
#[tokio::test]
async fn a_drained_buffer_gives_space_back_and_keeps_its_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = Buffer::open(dir.path(), u64::MAX, 1 << 20).expect("open");
    let id = b.stream_id().to_owned();
    let state = b.keyed_state("file_state");
    state.insert("/etc/passwd", b"remembered").expect("insert");
    b.note("gap/files", Durability::Now, |_| b"note".to_vec())
        .await
        .expect("note");
    let mut last = 0;
    for i in 0..300u32 {
        let raw = vec![b'a' + (i % 26) as u8; 30_000 + i as usize];
        last = b
            .append(&mail(&raw), Some(raw[..].into()))
            .await
            .expect("append");
    }
    let sled_size = || {
        fn du(p: &std::path::Path) -> u64 {
            std::fs::read_dir(p)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| match e.metadata() {
                            Ok(m) if m.is_dir() => du(&e.path()),
                            Ok(m) => m.len(),
                            Err(_) => 0,
                        })
                        .sum()
                })
                .unwrap_or(0)
        }
        std::fs::read_dir(dir.path())
            .expect("dir")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("sled"))
            .map(|e| du(&e.path()))
            .sum::<u64>()
    };
    let grown = sled_size();
    assert!(
        !b.compact_if_worthwhile(true),
        "not while events are queued"
    );
    b.ack(last).await.expect("ack");
    assert!(b.compact_if_worthwhile(true), "drained: a new generation");
    let after = sled_size();
    assert!(
        after * 2 < grown,
        "space given back: {grown} → {after} bytes"
    );
    assert!(dir.path().join("sled-1").is_dir() && !dir.path().join("sled").exists());
    let next = b.append(&mail(b"after"), None).await.expect("append");
    assert_eq!(next, last + 1, "numbering continues");
    assert_eq!(
        state.get("/etc/passwd").expect("get").as_deref(),
        Some(&b"remembered"[..])
    );
    drop(state);
    drop(b);
    let b = Buffer::open(dir.path(), u64::MAX, 1 << 20).expect("reopen");
    assert_eq!(b.stream_id(), id, "the same stream");
    assert_eq!(b.read_batch(0, 10, 1 << 20).expect("read").len(), 1);
    assert_eq!(
        b.keyed_state("file_state")
            .get("/etc/passwd")
            .expect("get")
            .as_deref(),
        Some(&b"remembered"[..])
    );
    let took = b
        .take_note("gap/files", |n| {
            assert_eq!(n, b"note");
            Some(Event::default())
        })
        .await
        .expect("note");
    assert_eq!(took, Some(last + 2), "the note carried over");
}

/// A buffer that was moved aside may reference any blob: none is
/// collected as an orphan while it exists.
#[tokio::test]
async fn blobs_are_kept_while_a_moved_aside_buffer_exists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let big = vec![b'z'; INLINE_MAX + 1];
    let sha = kiroku_common::sha256_hex(&big);
    {
        let b = Buffer::open(dir.path(), u64::MAX, 1 << 20).expect("open");
        b.append(&mail(&big), Some(big[..].into()))
            .await
            .expect("append");
    }
    std::fs::rename(dir.path().join("sled"), dir.path().join("sled.broken-1")).expect("aside");
    let b = Buffer::open(dir.path(), u64::MAX, 1 << 20).expect("open new");
    assert!(dir.path().join("blobs").join(&sha).exists(), "kept");
    assert_eq!(
        b.held_bytes(),
        0,
        "not counted: the current buffer does not hold it"
    );
    drop(b);
    std::fs::remove_dir_all(dir.path().join("sled.broken-1")).expect("rm");
    let _b = Buffer::open(dir.path(), u64::MAX, 1 << 20).expect("open again");
    assert!(
        !dir.path().join("blobs").join(&sha).exists(),
        "collected once dealt with"
    );
}

/// Below `buffer.min_free_bytes` free on the file system new records are
/// refused as unwritable (the relay's 451), and the problem says why.
#[tokio::test]
async fn below_the_free_space_reserve_records_are_refused_as_disk_full() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = Buffer::open_with(
        dir.path(),
        Limits {
            max_bytes: u64::MAX,
            min_free_bytes: u64::MAX,
            cache_bytes: 1 << 20,
        },
    )
    .expect("open");
    let err = b.append(&mail(b"x"), None).await.expect_err("refused");
    assert!(matches!(err, BufferError::DiskFull { .. }), "{err}");
    assert!(err.unwritable() && err.refused_for_space());
    assert!(b.spool().await.is_err(), "not even spooled");
    let problem = b.problem().expect("a problem");
    assert!(problem.contains("disk is full"), "{problem}");
    assert!(!b.is_full(), "not the buffer's own bound");
}

/// A buffer written by the version before generations and the ledger
/// (`sled/` with the same trees, no `generation` file) opens unchanged:
/// its queued events ship in order with their raw messages, and the
/// ledger counts them.
#[tokio::test]
async fn a_buffer_from_the_previous_version_opens_and_ships() {
    let dir = tempfile::tempdir().expect("tempdir");
    let big = vec![b'q'; INLINE_MAX + 5];
    let (small_sha, big_sha) = (
        kiroku_common::sha256_hex(b"small"),
        kiroku_common::sha256_hex(&big),
    );
    {
        let db = sled::Config::new()
            .path(dir.path().join("sled"))
            .segment_size(store::SEGMENT_SIZE)
            .open()
            .expect("db");
        let t = |n: &str| db.open_tree(n).expect("tree");
        let meta = t("meta");
        meta.insert(STREAM_ID, &b"00000000000000aa"[..])
            .expect("id");
        meta.insert(NEXT_SEQ, &3u64.to_be_bytes()).expect("seq");
        for (seq, raw) in [(1u64, &b"small"[..]), (2, &big[..])] {
            let mut e = mail(raw);
            e.seq = seq;
            e.stream_id = "00000000000000aa".into();
            t("queue")
                .insert(seq.to_be_bytes(), e.encode_to_vec())
                .expect("queue");
        }
        t("blobrefs")
            .insert(small_sha.as_bytes(), &1u64.to_be_bytes())
            .expect("ref");
        t("blobrefs")
            .insert(big_sha.as_bytes(), &1u64.to_be_bytes())
            .expect("ref");
        t("smallblobs")
            .insert(small_sha.as_bytes(), &b"small"[..])
            .expect("inline");
        t("file_state")
            .insert(b"/etc/hosts", &b"state"[..])
            .expect("state");
        db.flush().expect("flush");
        std::fs::create_dir_all(dir.path().join("blobs")).expect("blobs");
        std::fs::write(dir.path().join("blobs").join(&big_sha), &big).expect("blob");
    }
    let b = Buffer::open(dir.path(), u64::MAX, 1 << 20).expect("open");
    assert_eq!(b.stream_id(), "00000000000000aa");
    let got = b.read_batch(0, 10, 1 << 20).expect("read");
    assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(
        b.blob(&small_sha).expect("blob").as_deref(),
        Some(&b"small"[..])
    );
    assert_eq!(b.blob(&big_sha).expect("blob"), Some(big.clone()));
    assert!(b.held_bytes() > big.len() as u64, "counted by the ledger");
    assert_eq!(
        b.keyed_state("file_state")
            .get("/etc/hosts")
            .expect("state")
            .as_deref(),
        Some(&b"state"[..])
    );
    assert_eq!(b.append(&mail(b"new"), None).await.expect("append"), 3);
    b.ack(3).await.expect("ack");
    assert_eq!(b.held_bytes(), 0);
    assert!(!dir.path().join("blobs").join(&big_sha).exists());
}

/// A generation directory that is not the current one but still holds
/// queued records (a restored `generation` file, or an older agent run
/// after a switch) is kept aside with its raw messages, never removed, and
/// named in the start record; an empty one is removed.
#[tokio::test]
async fn a_stale_generation_holding_records_is_kept_not_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let big = vec![b'q'; INLINE_MAX + 1];
    let sha = kiroku_common::sha256_hex(&big);
    {
        let b = Buffer::open(dir.path(), u64::MAX, 1 << 20).expect("open");
        b.append(&mail(&big), Some(big[..].into()))
            .await
            .expect("append");
    }
    // An empty stale generation next to it.
    drop(sled::open(dir.path().join("sled-3")).expect("empty generation"));
    std::fs::write(dir.path().join("generation"), "KIROKU-GEN1 5\n").expect("generation");
    let b = Buffer::open(dir.path(), u64::MAX, 1 << 20).expect("open generation 5");
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("sled.unshipped-")),
        "kept aside: {names:?}"
    );
    assert!(
        !names.iter().any(|n| n == "sled-3"),
        "empty one removed: {names:?}"
    );
    assert!(
        dir.path().join("blobs").join(&sha).exists(),
        "its raw message kept"
    );
    let damage = b.damage().expect("reported");
    assert!(damage.contains("not yet acknowledged"), "{damage}");
}
