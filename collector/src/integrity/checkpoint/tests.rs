use std::sync::Arc;

use kiroku_common::pki::{PkiDir, Role};
use kiroku_proto::{Event, SignedCheckpoint};

use super::*;
use crate::integrity::check::{check_checkpoint, check_proof};
use crate::integrity::merkle;
use crate::integrity::proof::prove_leaf;

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    ca_pem: Vec<u8>,
    signer: Arc<Signer>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = PkiDir::new(dir.path().join("pki"));
        pki.init_ca("test CA").expect("ca");
        let (cert, key) = pki.issue(Role::Signer, "c1", &[], 30).expect("issue");
        let signer = Arc::new(Signer::load(&cert, &key).expect("signer"));
        let store = Arc::new(Store::open(&dir.path().join("data")).expect("store"));
        Fixture {
            ca_pem: std::fs::read(pki.ca_cert()).expect("ca"),
            _dir: dir,
            store,
            signer,
        }
    }

    fn writer(&self, signed: bool) -> Arc<Writer> {
        Arc::new(Writer {
            store: self.store.clone(),
            ledger: Ledger::open(&self.store.dir, &self.store.meta).expect("ledger"),
            signer: signed.then(|| self.signer.clone()),
            tsa: None,
            collector: "c1".into(),
            feed: CheckpointFeed::default(),
            alerting: None,
        })
    }

    fn append(&self, n: u64) -> Vec<u64> {
        let events: Vec<Event> = (0..n)
            .map(|i| Event {
                event_id: format!("a1/s/{}", rand::random::<u32>()),
                agent_id: "a1".into(),
                stream_id: "s".into(),
                seq: i + 1,
                ..Default::default()
            })
            .collect();
        self.store.journal.append(&events).expect("append")
    }

    /// Leaf hashes of every entry in the journal, by leaf.
    fn all_leaf_hashes(&self) -> Vec<merkle::Hash> {
        let head = self.store.journal.head();
        let (reads, _) = crate::store::journal::read_entries(
            self.store.journal.dir(),
            Position::default(),
            head.end,
            usize::MAX,
        )
        .expect("read");
        reads
            .iter()
            .filter(|r| r.leaf.is_some())
            .map(|r| r.leaf_hash())
            .collect()
    }
}

#[test]
fn only_the_previous_mark_is_not_new() {
    let after = |first_leaf, mark_leaf| Next {
        number: 2,
        start: Position::default(),
        first_leaf,
        prev_sha256: [0; 32],
        mark_leaf,
    };
    // (first leaf, its mark's leaf, the journal's next leaf, new?)
    let cases = [
        (0, None, 0, false),
        (0, None, 1, true),
        (10, Some(10), 10, false),
        (10, Some(10), 11, false),
        (10, Some(10), 12, true),
        // Ingest appended between the range and the mark.
        (10, Some(12), 13, true),
    ];
    for (first, mark, next_leaf, want) in cases {
        assert_eq!(
            after(first, mark).has_new(next_leaf),
            want,
            "first {first} mark {mark:?} next {next_leaf}"
        );
    }
}

#[tokio::test]
async fn checkpoints_cover_every_leaf_once_verify_and_prove() {
    let f = Fixture::new();
    let w = f.writer(true);
    let next = w.open().expect("open");
    let (next, wrote) = w.clone().write_one(next).await.expect("write");
    assert!(!wrote, "empty journal");

    f.append(5);
    let (next, wrote) = w.clone().write_one(next).await.expect("write");
    assert!(wrote && next.number == 2, "checkpoint 1");
    // Only checkpoint 1's own mark is new: nothing to write.
    let (next, wrote) = w.clone().write_one(next).await.expect("write");
    assert!(!wrote && next.number == 2);
    f.append(7);
    let (next, wrote) = w.clone().write_one(next).await.expect("write");
    assert!(wrote && next.number == 3, "checkpoint 2");

    let all = f.all_leaf_hashes();
    let r1 = w.ledger.get(1).expect("get").expect("record 1");
    let r2 = w.ledger.get(2).expect("get").expect("record 2");
    // 5 events, then mark 1 (leaf 5) and 7 events in checkpoint 2, then
    // mark 2.
    assert_eq!((r1.first_leaf, r1.leaves, r1.mark_leaf), (0, 5, 5));
    assert_eq!((r2.first_leaf, r2.leaves, r2.mark_leaf), (5, 8, 13));
    assert_eq!(all.len(), 14);

    let s1 = w.ledger.read(1).expect("file 1");
    let s2 = w.ledger.read(2).expect("file 2");
    let c1 = check_checkpoint(&s1, &f.ca_pem, None).expect("checkpoint 1 holds");
    let c2 = check_checkpoint(&s2, &f.ca_pem, None).expect("checkpoint 2 holds");
    assert_eq!(c1.merkle_root, merkle::root(&all[0..5]).to_vec());
    assert_eq!(c2.merkle_root, merkle::root(&all[5..13]).to_vec());
    assert_eq!(c2.prev_sha256, r1.sha256.to_vec());
    assert_eq!(
        r1.sha256,
        crate::store::journal::entry::sha256(&s1.checkpoint)
    );
    assert_eq!(c1.collector, "c1");

    for leaf in [0, 4, 5, 9, 12] {
        let p = prove_leaf(&f.store, leaf).expect("prove");
        let cp = if leaf < 5 { &c1 } else { &c2 };
        let s = p.checkpoint.expect("covered");
        assert_eq!(s.checkpoint, if leaf < 5 { &s1 } else { &s2 }.checkpoint);
        let entry = check_proof(&p.proof, cp).expect("proof holds");
        assert_eq!(entry.leaf, leaf);
        // The proof is for this leaf only.
        let mut other = p.proof.clone();
        other.leaf = if leaf == 0 { 1 } else { leaf - 1 };
        assert!(check_proof(&other, cp).is_err());
    }
    // Mark 2 (leaf 13) is in no checkpoint yet: its entry, no path.
    let p = prove_leaf(&f.store, 13).expect("prove");
    assert!(p.checkpoint.is_none() && p.proof.path.is_empty() && p.proof.checkpoint == 0);
    assert!(!p.proof.entry.is_empty());

    // Each Ship stream gets the newest checkpoint once.
    let mut sent = 0;
    assert_eq!(w.feed.newer(&mut sent), s2.encode_to_vec());
    assert_eq!(sent, 2);
    assert!(w.feed.newer(&mut sent).is_empty());
}

#[tokio::test]
async fn unsigned_checkpoints_say_so() {
    let f = Fixture::new();
    let w = f.writer(false);
    let next = w.open().expect("open");
    f.append(2);
    assert!(w.clone().write_one(next).await.expect("write").1);
    let s = w.ledger.read(1).expect("file");
    assert!(s.signature.is_empty() && !s.unsigned_reason.is_empty());
    let e = check_checkpoint(&s, &f.ca_pem, None).expect_err("unsigned");
    assert_eq!(e.finding(), "unsigned");
    assert!(!e.is_alteration());
}

#[tokio::test]
async fn a_checkpoint_cut_short_is_finished_or_set_aside_at_start() {
    let f = Fixture::new();
    let w = f.writer(true);
    let next = w.open().expect("open");
    f.append(3);
    // File and mark written, the record not (a crash just before it).
    let (cp, _) = w.build(next).expect("build").expect("new");
    let signed = SignedCheckpoint {
        checkpoint: cp.encode_to_vec(),
        signature: f.signer.sign(&cp.encode_to_vec()).expect("sign"),
        signer_cert_der: f.signer.cert_der().to_vec(),
        ..Default::default()
    };
    w.ledger.write(1, &signed).expect("file");
    let sha = crate::store::journal::entry::sha256(&signed.checkpoint);
    f.store
        .journal
        .append_entries(vec![Entry::Checkpoint(CheckpointMark {
            number: 1,
            checkpoint_sha256: sha.to_vec(),
        })])
        .expect("mark");
    // And checkpoint 2's file alone (a crash before its mark).
    w.ledger.write(2, &signed).expect("file");

    let w2 = f.writer(true);
    let next = w2.open().expect("open");
    let r1 = w2.ledger.get(1).expect("get").expect("finished");
    assert_eq!((r1.first_leaf, r1.leaves, r1.mark_leaf), (0, 3, 3));
    assert!(w2.ledger.get(2).expect("get").is_none());
    assert_eq!(w2.ledger.files_after(1).expect("files"), Vec::<u64>::new());
    assert_eq!(next.number, 2);
    // Checkpoint 2 is written again, after the first.
    f.append(1);
    assert!(w2.clone().write_one(next).await.expect("write").1);
    let r2 = w2.ledger.get(2).expect("get").expect("record 2");
    assert_eq!((r2.first_leaf, r2.leaves), (3, 2));
    let c2 = check_checkpoint(&w2.ledger.read(2).expect("file"), &f.ca_pem, None).expect("holds");
    assert_eq!(
        c2.merkle_root,
        merkle::root(&f.all_leaf_hashes()[3..5]).to_vec()
    );
}

#[test]
fn intervals_read_as_people_write_them() {
    let cfg = |s: &str| CheckpointConfig {
        interval: s.into(),
        ..Default::default()
    };
    let cases = [
        ("10m", Some(600)),
        ("2s", Some(2)),
        ("1h", Some(3600)),
        ("90s", Some(90)),
        ("0s", None),
        ("-5m", None),
        ("ten minutes", None),
    ];
    for (text, want) in cases {
        let got = cfg(text).interval().ok().map(|d| d.as_secs());
        assert_eq!(got, want, "{text}");
    }
    assert_eq!(
        CheckpointConfig::default().interval().map(|d| d.as_secs()),
        Ok(600)
    );
}

#[tokio::test]
async fn a_write_that_failed_after_its_file_is_retried() {
    let f = Fixture::new();
    let w = f.writer(true);
    let next = w.open().expect("open");
    f.append(2);
    // Checkpoint 1's file exists without its mark and record (the journal
    // append failed); the next attempt sets it aside and writes it anew.
    let (cp, _) = w.build(next).expect("build").expect("new");
    let stale = SignedCheckpoint {
        checkpoint: cp.encode_to_vec(),
        ..Default::default()
    };
    w.ledger.write(1, &stale).expect("file");
    let (next, wrote) = w.clone().write_one(next).await.expect("write");
    assert!(wrote && next.number == 2);
    let s = w.ledger.read(1).expect("file");
    check_checkpoint(&s, &f.ca_pem, None).expect("the new checkpoint 1 holds");
    let aside = std::fs::read_dir(w.ledger.dir())
        .expect("dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".ckp.unfinished-"))
        .count();
    assert_eq!(aside, 1);
}

impl Fixture {
    /// `n` events journalled and indexed with their leaves (as ingest
    /// does); returns their ids.
    fn append_indexed(&self, n: u64) -> Vec<String> {
        let s = &self.store;
        let from = s.journal.end();
        self.append(n);
        let (got, _) =
            crate::store::journal::read_events(s.journal.dir(), from, s.journal.end(), usize::MAX)
                .expect("read");
        let ids = got.iter().map(|(e, _)| e.event_id.clone()).collect();
        let (evs, prov): (Vec<Event>, Vec<_>) = got.into_iter().unzip();
        s.index.add_recorded(&evs, &prov).expect("index");
        s.index.commit().expect("commit");
        ids
    }
}

#[tokio::test]
async fn a_purge_keeps_checkpoints_their_proofs_and_the_next_checkpoint_whole() {
    use crate::store::purge::{RETENTION_BY, Victim};
    let f = Fixture::new();
    let w = f.writer(true);
    let next = w.open().expect("open");
    let first = f.append_indexed(10);
    let (next, wrote) = w.clone().write_one(next).await.expect("write");
    assert!(wrote, "checkpoint 1 over leaves 0–9, its mark leaf 10");
    let c1 = check_checkpoint(&w.ledger.read(1).expect("file"), &f.ca_pem, None).expect("c1");
    let kept = [0u64, 3, 7, 9];
    let before: Vec<_> = kept
        .iter()
        .map(|l| prove_leaf(&f.store, *l).expect("prove").proof)
        .collect();
    let old_of_purged = prove_leaf(&f.store, 2).expect("prove").proof;
    let second = f.append_indexed(5);

    // One event a checkpoint covers (leaf 2), one it does not yet (leaf 12).
    let victims = [&first[2], &second[1]].map(|id| Victim {
        event_id: id.clone(),
        reason: "retention: test".into(),
    });
    let r = f.store.purge(&victims, RETENTION_BY).expect("purge");
    assert_eq!((r.purged, r.tombstones), (2, 2), "{r:?}");
    assert!(r.journal_bytes_freed > 0, "{r:?}");

    // Proofs made before the purge still hold, the purged event's too (a
    // bundle exported before it verifies offline); proofs made now are the
    // same paths, read from the rewritten segment at re-found positions.
    check_proof(&old_of_purged, &c1).expect("the old proof of the purged leaf holds");
    for (leaf, old) in kept.iter().zip(&before) {
        check_proof(old, &c1).expect("old proof holds");
        let now = prove_leaf(&f.store, *leaf)
            .expect("prove after purge")
            .proof;
        assert_eq!(now.path, old.path, "leaf {leaf}");
        check_proof(&now, &c1).expect("new proof holds");
    }
    assert!(
        prove_leaf(&f.store, 2).is_err(),
        "a purged leaf proves nothing now"
    );

    // The next checkpoint starts where the ledger says checkpoint 1 ended
    // (moved by the rewrite) and covers the stub and the tombstones.
    let (_, wrote) = w.clone().write_one(next).await.expect("write");
    assert!(wrote);
    let r2 = w.ledger.get(2).expect("get").expect("record 2");
    let all = f.all_leaf_hashes();
    let c2 = check_checkpoint(&w.ledger.read(2).expect("file"), &f.ca_pem, None).expect("c2");
    assert_eq!(r2.first_leaf, 10);
    assert_eq!(
        c2.merkle_root,
        merkle::root(&all[10..(r2.first_leaf + r2.leaves) as usize]).to_vec()
    );
    let p = prove_leaf(&f.store, 13).expect("prove");
    check_proof(&p.proof, &c2).expect("proof in checkpoint 2");

    let mut alterations = Vec::new();
    crate::integrity::verify::run(
        &f.store,
        Some(&f.ca_pem),
        None,
        &Default::default(),
        &mut |m| {
            if let Some(kiroku_proto::verify_response::Msg::Finding(x)) = m.msg
                && x.alteration
            {
                alterations.push(x);
            }
        },
    )
    .expect("verify");
    assert!(alterations.is_empty(), "{alterations:#?}");
}
