//! Purging on a real store in a temporary directory: journal bytes freed,
//! the chain, checkpoints and `verify` still whole, blobs removed only with
//! their last reference, a purge cut short finished at open, and the
//! alterations `verify` must still name.

use std::path::Path;

use kiroku_proto::journal_entry::Entry;
use kiroku_proto::{EmailEvent, Event, Tombstone, VerifyFinding, event::Kind, verify_response};

use super::{BLOB_GRACE_MS, PurgeReport, RETENTION_BY, Victim, locate, state};
use crate::integrity::verify::{self, Options};
use crate::store::Store;
use crate::store::journal::{self, Position, rewrite};

/// A raw message of about 2 KiB, distinct per `n`.
fn raw(n: u64) -> Vec<u8> {
    format!(
        "From: a@example.com\r\nSubject: {n}\r\n\r\n{}\r\n",
        format!("line {n} of a mail body that takes some room. ").repeat(40)
    )
    .into_bytes()
}

fn mail(seq: u64, raw: Option<&[u8]>) -> Event {
    Event {
        event_id: format!("pc/s/{seq}"),
        agent_id: "pc".into(),
        stream_id: "s".into(),
        seq,
        received_at_ms: 1_000 + seq as i64,
        kind: Some(Kind::Email(EmailEvent {
            subject: format!("mail {seq} {}", "x".repeat(400)),
            raw_sha256: raw.map(kiroku_common::sha256_hex).unwrap_or_default(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// Journals and indexes `events` as ingest does (leaves in the index).
fn store_events(s: &Store, events: &[Event]) {
    let from = s.journal.end();
    s.journal.append(events).expect("journal");
    let (got, _) =
        journal::read_events(s.journal.dir(), from, s.journal.end(), usize::MAX).expect("read");
    let (evs, prov): (Vec<Event>, Vec<_>) = got.into_iter().unzip();
    s.index.add_recorded(&evs, &prov).expect("index");
    s.index.commit().expect("commit");
}

/// Sets a blob's time of last use to two grace periods ago.
fn age_blob(dir: &Path, sha: &str) {
    let p = dir
        .join("blobs")
        .join(&sha[..2])
        .join(&sha[2..4])
        .join(format!("{sha}.zst"));
    let old =
        std::time::SystemTime::now() - std::time::Duration::from_millis(2 * BLOB_GRACE_MS as u64);
    std::fs::File::options()
        .append(true)
        .open(&p)
        .and_then(|f| f.set_modified(old))
        .expect("age blob");
}

fn journal_bytes(s: &Store) -> u64 {
    journal::segments(s.journal.dir())
        .expect("segments")
        .iter()
        .map(|n| {
            std::fs::metadata(s.journal.dir().join(format!("{n:020}.log")))
                .expect("segment")
                .len()
        })
        .sum()
}

fn findings(s: &Store) -> Vec<VerifyFinding> {
    let mut out = Vec::new();
    let summary = verify::run(s, None, None, &Options::default(), &mut |m| {
        if let Some(verify_response::Msg::Finding(f)) = m.msg {
            out.push(f);
        }
    })
    .expect("verify");
    assert_eq!(
        summary.alterations,
        out.iter().filter(|f| f.alteration).count() as u64
    );
    out
}

fn alterations(f: &[VerifyFinding]) -> Vec<&VerifyFinding> {
    f.iter().filter(|f| f.alteration).collect()
}

fn victims(ids: impl IntoIterator<Item = u64>) -> Vec<Victim> {
    ids.into_iter()
        .map(|i| Victim {
            event_id: format!("pc/s/{i}"),
            reason: "retention: email kept 1d (test)".into(),
        })
        .collect()
}

fn all_events(s: &Store) -> Vec<Event> {
    journal::read_from(
        s.journal.dir(),
        Position::default(),
        s.journal.end(),
        usize::MAX,
    )
    .expect("read")
    .0
}

#[test]
fn a_purge_frees_journal_bytes_and_verify_explains_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Store::open(dir.path()).expect("open");
    let events: Vec<Event> = (1..=200).map(|i| mail(i, None)).collect();
    store_events(&s, &events);
    // Stored twice (a batch resent after a lost ack): both records go.
    store_events(&s, &events[..10]);
    let before = journal_bytes(&s);

    let r = s.purge(&victims(1..=100), RETENTION_BY).expect("purge");
    let after = journal_bytes(&s);
    println!("journal bytes before {before}, after {after}, report {r:?}");
    assert_eq!((r.purged, r.tombstones), (100, 110), "{r:?}");
    assert_eq!(r.index_deleted, 100);
    assert!(r.deferred.is_empty(), "{:?}", r.deferred);
    // Each event is ~500 bytes; its stub ~116 and its tombstone ~150.
    assert!(after + 100 * 200 < before, "before {before}, after {after}");
    // What the rewrite freed, net of the tombstones appended.
    assert_eq!(r.journal_bytes_freed, before + tomb_bytes(&s) - after);

    let left = all_events(&s);
    assert_eq!(left.len(), 100);
    assert!(left.iter().all(|e| e.seq > 100));
    assert!(s.index.get("pc/s/5").expect("get").is_none());
    assert!(s.index.get("pc/s/150").expect("get").is_some());
    assert_eq!(s.index.count(), 100);

    let f = findings(&s);
    assert!(alterations(&f).is_empty(), "{f:#?}");
    assert_eq!(f.iter().filter(|f| f.what == "purged").count(), 110);
    // The audit entry says who and which tombstones.
    let audit = s.read_audit(0, 100, "admin").expect("audit");
    let e = audit
        .entries
        .iter()
        .find(|e| e.call == "Retention")
        .expect("a Retention entry");
    assert!(
        e.detail.contains("100 events purged by retention policy"),
        "{}",
        e.detail
    );

    // Purging again: nothing left to do, nothing broken.
    let r = s.purge(&victims(1..=3), RETENTION_BY).expect("purge again");
    assert_eq!(r.purged, 0);
    assert_eq!(r.deferred.len(), 3);
    drop(s);
    let s = Store::open(dir.path()).expect("reopen");
    assert!(alterations(&findings(&s)).is_empty());
}

/// Bytes of the tombstone entries in the journal.
fn tomb_bytes(s: &Store) -> u64 {
    let (reads, _) = journal::read_entries(
        s.journal.dir(),
        Position::default(),
        s.journal.end(),
        usize::MAX,
    )
    .expect("read");
    reads
        .iter()
        .filter(|r| {
            matches!(
                r.entry.as_ref().and_then(|e| e.entry.as_ref()),
                Some(Entry::Tombstone(_))
            )
        })
        .map(|r| r.len)
        .sum()
}

#[test]
fn a_blob_goes_with_its_last_live_reference_and_not_while_claimed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Store::open(dir.path()).expect("open");
    let shared = raw(1);
    let own = raw(2);
    let (sha_shared, sha_own) = (
        kiroku_common::sha256_hex(&shared),
        kiroku_common::sha256_hex(&own),
    );
    s.blobs.put(&sha_shared, &shared).expect("put");
    s.blobs.put(&sha_own, &own).expect("put");
    age_blob(dir.path(), &sha_shared);
    age_blob(dir.path(), &sha_own);
    store_events(
        &s,
        &[
            mail(1, Some(&shared)),
            mail(2, Some(&shared)),
            mail(3, Some(&own)),
        ],
    );
    // Event 3's blob was just claimed by an agent: spared for now.
    s.meta
        .claim_blob(&sha_own, crate::clock::now_ms())
        .expect("claim");
    let r = s.purge(&victims([1, 3]), RETENTION_BY).expect("purge");
    assert!(s.blobs.has(&sha_shared), "shared with live event 2");
    assert!(s.blobs.has(&sha_own), "claimed a moment ago");
    assert_eq!((r.blobs_removed, r.blobs_spared), (0, 1), "{r:?}");
    assert!(alterations(&findings(&s)).is_empty());

    // The claim ages; the next purge (of the last reference to the shared
    // blob) removes both.
    s.meta
        .claim_blob(&sha_own, crate::clock::now_ms() - 2 * BLOB_GRACE_MS)
        .expect("claim");
    let r = s.purge(&victims([2]), RETENTION_BY).expect("purge");
    assert!(!s.blobs.has(&sha_shared) && !s.blobs.has(&sha_own), "{r:?}");
    assert_eq!(r.blobs_removed, 2);
    assert!(r.blob_bytes_freed > 0);
    let f = findings(&s);
    assert!(alterations(&f).is_empty(), "{f:#?}");
}

/// Runs a purge up to its tombstones and audit entry due (steps 1–3),
/// as if the collector died right after.
fn promise_only(s: &Store, ids: impl IntoIterator<Item = u64>) -> PurgeReport {
    let mut r = PurgeReport::default();
    s.promise(&victims(ids), "admin/alice", &mut r)
        .expect("promise");
    r
}

#[test]
fn a_crash_between_tombstones_and_rewrite_is_finished_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = Store::open(dir.path()).expect("open");
        store_events(&s, &(1..=50).map(|i| mail(i, None)).collect::<Vec<_>>());
        let r = promise_only(&s, 1..=20);
        assert_eq!(r.tombstones, 20);
        // Tombstones without their stubs yet: a purge not finished.
        let f = findings(&s);
        assert!(alterations(&f).is_empty(), "{f:#?}");
        assert_eq!(f.iter().filter(|f| f.what == "purge_pending").count(), 20);
    }
    let s = Store::open(dir.path()).expect("reopen");
    assert_eq!(all_events(&s).len(), 30);
    assert!(s.index.get("pc/s/1").expect("get").is_none());
    let f = findings(&s);
    assert!(alterations(&f).is_empty(), "{f:#?}");
    assert_eq!(f.iter().filter(|f| f.what == "purged").count(), 20);
    let audit = s.read_audit(0, 100, "admin").expect("audit");
    assert!(
        audit
            .entries
            .iter()
            .any(|e| e.call == "Erasure" && e.identity == "admin/alice"),
        "{:#?}",
        audit.entries
    );
}

#[test]
fn a_crash_before_the_tombstones_were_noted_appends_them_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = Store::open(dir.path()).expect("open");
        store_events(&s, &(1..=10).map(|i| mail(i, None)).collect::<Vec<_>>());
        // Step 1 only: the promise, no tombstone yet.
        let st = state::State::open(&s.meta).expect("state");
        let mut r = PurgeReport::default();
        let found = locate::locate(&s, &st, &victims(1..=4), RETENTION_BY, &mut r).expect("locate");
        st.set_intent_from(Some(s.journal.end())).expect("intent");
        for p in &found.records {
            st.put(p).expect("put");
        }
        s.meta.flush().expect("flush");
    }
    {
        let s = Store::open(dir.path()).expect("reopen");
        assert_eq!(all_events(&s).len(), 6);
        assert_eq!(tomb_count(&s), 4);
    }
    // Once more: nothing appended twice.
    let s = Store::open(dir.path()).expect("reopen");
    assert_eq!(tomb_count(&s), 4);
    let f = findings(&s);
    assert!(alterations(&f).is_empty(), "{f:#?}");
}

fn tomb_count(s: &Store) -> usize {
    let (reads, _) = journal::read_entries(
        s.journal.dir(),
        Position::default(),
        s.journal.end(),
        usize::MAX,
    )
    .expect("read");
    reads
        .iter()
        .filter(|r| {
            matches!(
                r.entry.as_ref().and_then(|e| e.entry.as_ref()),
                Some(Entry::Tombstone(_))
            )
        })
        .count()
}

/// Leaf and entry hash of event `pc/s/<seq>`'s record.
fn record_of(s: &Store, seq: u64) -> (u64, [u8; 32], Vec<u8>) {
    let (reads, _) = journal::read_entries(
        s.journal.dir(),
        Position::default(),
        s.journal.end(),
        usize::MAX,
    )
    .expect("read");
    let id = format!("pc/s/{seq}");
    reads
        .iter()
        .find_map(|r| match journal::event_of(r) {
            Some(Ok((e, p))) if e.event_id == id => Some((
                r.leaf.expect("leaf"),
                r.entry_hash(),
                p.recorded_sha256.to_vec(),
            )),
            _ => None,
        })
        .expect("record")
}

/// Replaces leaf `leaf` by a stub directly (no purge), the journal rolled
/// first.
fn stub_by_hand(s: &Store, leaf: u64, sha: [u8; 32]) {
    let seg = s.journal.end().segment;
    s.journal.roll().expect("roll");
    let stubs = std::iter::once((leaf, sha)).collect();
    let rw = rewrite::prepare(s.journal.dir(), seg, &stubs)
        .expect("prepare")
        .expect("a stub");
    rw.commit(s.journal.dir()).expect("commit");
}

fn tombstone(seq: u64, leaf: u64, sha: &[u8], recorded: Vec<u8>) -> Entry {
    Entry::Tombstone(Tombstone {
        event_id: format!("pc/s/{seq}"),
        recorded_sha256: recorded,
        leaf,
        entry_sha256: sha.to_vec(),
        reason: "by hand".into(),
        by: "mallory".into(),
        at_ms: 1,
    })
}

#[test]
fn verify_names_a_stub_without_tombstone_a_wrong_tombstone_and_an_unaudited_one() {
    // (case, expected alterations)
    for case in ["no tombstone", "wrong hash", "not audited"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("open");
        store_events(&s, &(1..=5).map(|i| mail(i, None)).collect::<Vec<_>>());
        let (leaf, sha, recorded) = record_of(&s, 3);
        match case {
            "no tombstone" => {}
            "wrong hash" => {
                s.journal
                    .append_entries(vec![tombstone(3, leaf, &[7; 32], recorded)])
                    .expect("tombstone");
            }
            _ => {
                s.journal
                    .append_entries(vec![tombstone(3, leaf, &sha, recorded)])
                    .expect("tombstone");
            }
        }
        stub_by_hand(&s, leaf, sha);
        // As whoever removed it would: from the index too.
        s.index
            .purge(&["pc/s/3".to_owned()], |_| false)
            .expect("index");
        let f = findings(&s);
        let alt = alterations(&f);
        assert_eq!(alt.len(), 1, "{case}: {f:#?}");
        let want = match case {
            "no tombstone" => "no tombstone names it",
            "wrong hash" => "but its tombstone",
            _ => "has no Retention or Erasure entry",
        };
        assert!(alt[0].detail.contains(want), "{case}: {:#?}", alt[0]);
        // The chain itself still links: only the purge is unexplained.
        assert!(
            f.iter()
                .all(|x| x.what != "inserted" && x.what != "missing"),
            "{case}: {f:#?}"
        );
    }
}

/// A raw message carrying `attachment` as a base64 part large enough to be
/// stored as a blob of its own (a `.krm` manifest names it).
fn raw_with(n: u64, attachment: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(attachment);
    let mut lines = String::new();
    for chunk in b64.as_bytes().chunks(76) {
        lines.push_str(std::str::from_utf8(chunk).expect("ascii"));
        lines.push_str("\r\n");
    }
    format!(
        "From: a@example.com\r\nSubject: {n}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nmail {n}\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=a.bin\r\n\r\n{lines}--b--\r\n"
    )
    .into_bytes()
}

fn blob_file(dir: &Path, sha: &str, ext: &str) -> std::path::PathBuf {
    dir.join("blobs")
        .join(&sha[..2])
        .join(&sha[2..4])
        .join(format!("{sha}.{ext}"))
}

fn age(path: &Path) {
    let old =
        std::time::SystemTime::now() - std::time::Duration::from_millis(2 * BLOB_GRACE_MS as u64);
    std::fs::File::options()
        .append(true)
        .open(path)
        .and_then(|f| f.set_modified(old))
        .expect("age");
}

#[test]
fn an_attachment_blob_goes_with_the_last_mail_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Store::open(dir.path()).expect("open");
    let attachment: Vec<u8> = (0..120_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    let part = kiroku_common::sha256_hex(&attachment);
    let mut mails = Vec::new();
    for n in [1, 2] {
        let r = raw_with(n, &attachment);
        let sha = kiroku_common::sha256_hex(&r);
        s.blobs.put(&sha, &r).expect("put");
        let mut e = mail(n, Some(&r));
        if let Some(Kind::Email(m)) = &mut e.kind {
            m.attachments.push(kiroku_proto::Attachment {
                filename: "a.bin".into(),
                sha256: part.clone(),
                size: attachment.len() as u64,
                ..Default::default()
            });
        }
        mails.push((e, sha));
    }
    for (_, sha) in &mails {
        assert!(
            blob_file(dir.path(), sha, "krm").exists(),
            "stored as a manifest"
        );
        age(&blob_file(dir.path(), sha, "krm"));
    }
    age(&blob_file(dir.path(), &part, "zst"));
    store_events(&s, &[mails[0].0.clone(), mails[1].0.clone()]);

    let r = s.purge(&victims([1]), RETENTION_BY).expect("purge");
    assert_eq!(r.blobs_removed, 1, "mail 1's manifest only: {r:?}");
    assert!(!s.blobs.has(&mails[0].1));
    assert!(s.blobs.has(&part), "mail 2 still names the attachment");
    let mut raw2 = Vec::new();
    std::io::Read::read_to_end(&mut s.blobs.reader(&mails[1].1).expect("reader"), &mut raw2)
        .expect("mail 2 reads back whole");

    let r = s.purge(&victims([2]), RETENTION_BY).expect("purge");
    assert_eq!(r.blobs_removed, 2, "manifest 2 and the attachment: {r:?}");
    assert!(!s.blobs.has(&part));
    let f = findings(&s);
    assert!(alterations(&f).is_empty(), "{f:#?}");
}

#[test]
fn a_rewrite_cut_short_is_finished_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let leaf = {
        let s = Store::open(dir.path()).expect("open");
        store_events(&s, &(1..=6).map(|i| mail(i, None)).collect::<Vec<_>>());
        let r = promise_only(&s, [2]);
        assert_eq!(r.tombstones, 1);
        let (leaf, sha, _) = record_of(&s, 2);
        // The scratch file written and its anchors noted, not renamed
        // (the crash).
        let seg = s.journal.end().segment;
        s.journal.roll().expect("roll");
        let stubs = std::iter::once((leaf, sha)).collect();
        let rw = rewrite::prepare(s.journal.dir(), seg, &stubs)
            .expect("prepare")
            .expect("a stub");
        state::State::open(&s.meta)
            .expect("state")
            .set_rewrite(seg, &[])
            .expect("note");
        s.meta.flush().expect("flush");
        assert!(rw.scratch.exists());
        leaf
    };
    let s = Store::open(dir.path()).expect("reopen");
    assert!(!rewrite::scratch_path(s.journal.dir(), 1).exists());
    assert_eq!(all_events(&s).len(), 5);
    let f = findings(&s);
    assert!(alterations(&f).is_empty(), "{f:#?}");
    let purged: Vec<_> = f.iter().filter(|f| f.what == "purged").collect();
    assert_eq!(purged.len(), 1, "{f:#?}");
    assert!(purged[0].detail.contains(&format!("leaf {leaf} purged")));
}

#[test]
fn a_large_segment_waits_for_a_quarter_purged_or_compaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Store::open(dir.path()).expect("open");
    let blob = raw(7);
    let sha = kiroku_common::sha256_hex(&blob);
    s.blobs.put(&sha, &blob).expect("put");
    age_blob(dir.path(), &sha);
    let mut events: Vec<Event> = (1..=200).map(|i| mail(i, None)).collect();
    events[0] = mail(1, Some(&blob));
    store_events(&s, &events);
    let before = journal_bytes(&s);

    // 10 of 200 records: the segment is not rewritten yet.
    let r = s.purge(&victims(1..=10), RETENTION_BY).expect("purge");
    assert_eq!(
        (r.purged, r.stubs_pending, r.journal_bytes_freed),
        (10, 10, 0),
        "{r:?}"
    );
    assert_eq!(r.index_deleted, 10);
    assert!(s.blobs.has(&sha), "its record is still in the journal");
    assert!(journal_bytes(&s) > before);
    // Tombstoned, out of the index, record still whole: explained.
    let f = findings(&s);
    assert!(alterations(&f).is_empty(), "{f:#?}");
    assert_eq!(f.iter().filter(|f| f.what == "purge_pending").count(), 10);

    // The end of a maintenance run compacts what is left.
    let r = s.compact_purged().expect("compact");
    assert!(r.journal_bytes_freed > 0 && r.index_deleted == 0, "{r:?}");
    assert_eq!(r.blobs_removed, 1);
    let f = findings(&s);
    assert!(alterations(&f).is_empty(), "{f:#?}");
    assert_eq!(f.iter().filter(|f| f.what == "purged").count(), 10);
    assert_eq!(all_events(&s).len(), 190);
    // Erasure on request does not wait.
    let r = s.purge(&victims([50]), "admin/alice").expect("erase");
    assert!(r.journal_bytes_freed > 0 && r.stubs_pending == 0, "{r:?}");
}

#[test]
fn tombstones_appended_but_not_noted_before_a_crash_get_their_audit_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = Store::open(dir.path()).expect("open");
        store_events(&s, &(1..=8).map(|i| mail(i, None)).collect::<Vec<_>>());
        let st = state::State::open(&s.meta).expect("state");
        let mut r = PurgeReport::default();
        let found =
            locate::locate(&s, &st, &victims([2, 5]), RETENTION_BY, &mut r).expect("locate");
        st.set_intent_from(Some(s.journal.end())).expect("intent");
        for p in &found.records {
            st.put(p).expect("put");
        }
        s.meta.flush().expect("flush");
        // The tombstones reach the journal; the collector dies before
        // noting them (and before the audit entry is due).
        let entries = found
            .records
            .iter()
            .map(|p| {
                Entry::Tombstone(Tombstone {
                    event_id: p.event_id.clone(),
                    recorded_sha256: p.recorded_sha256.clone(),
                    leaf: p.leaf,
                    entry_sha256: p.entry_sha256.to_vec(),
                    reason: p.reason.clone(),
                    by: p.by.clone(),
                    at_ms: 1,
                })
            })
            .collect();
        s.journal.append_entries(entries).expect("tombstones");
    }
    let s = Store::open(dir.path()).expect("reopen");
    assert_eq!(tomb_count(&s), 2, "found, not appended again");
    assert_eq!(all_events(&s).len(), 6);
    let f = findings(&s);
    assert!(alterations(&f).is_empty(), "{f:#?}");
    assert_eq!(f.iter().filter(|f| f.what == "purged").count(), 2);
}

/// A part blob is cut from any long base64 run, not only from attachments
/// the index knows (a large HTML body shared by many copies of one
/// newsletter): it stays while another stored manifest names it.
#[test]
fn a_part_no_index_names_stays_while_another_manifest_names_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Store::open(dir.path()).expect("open");
    let body: Vec<u8> = (0..120_000u64).map(|i| (i * 104_729 % 253) as u8).collect();
    let part = kiroku_common::sha256_hex(&body);
    let mut mails = Vec::new();
    for n in [1, 2] {
        let r = raw_with(n, &body);
        let sha = kiroku_common::sha256_hex(&r);
        s.blobs.put(&sha, &r).expect("put");
        // No attachment in the event: the index cannot find the part.
        mails.push((mail(n, Some(&r)), sha, r));
    }
    for (_, sha, _) in &mails {
        age(&blob_file(dir.path(), sha, "krm"));
    }
    age(&blob_file(dir.path(), &part, "zst"));
    store_events(&s, &[mails[0].0.clone(), mails[1].0.clone()]);

    let r = s.purge(&victims([1]), RETENTION_BY).expect("purge");
    assert_eq!(r.blobs_removed, 1, "mail 1's manifest only: {r:?}");
    assert!(s.blobs.has(&part), "mail 2's manifest still names the part");
    let mut raw2 = Vec::new();
    std::io::Read::read_to_end(&mut s.blobs.reader(&mails[1].1).expect("reader"), &mut raw2)
        .expect("mail 2 reads back");
    assert_eq!(raw2, mails[1].2, "mail 2 byte-identical");

    let r = s.purge(&victims([2]), RETENTION_BY).expect("purge");
    assert_eq!(r.blobs_removed, 2, "manifest 2 and then the part: {r:?}");
    assert!(!s.blobs.has(&part));
}
