//! A bundle built from a real store (journal, blobs, index, audit log, a
//! signed checkpoint on disk) and checked offline, then altered in every
//! way the check must catch. The end-to-end test with the binaries is
//! `tests/tests/evidence_export.rs`.

use std::path::{Path, PathBuf};

use kiroku_common::pki::{PkiDir, Role};
use kiroku_proto::event::Kind;
use kiroku_proto::{
    Checkpoint, EmailEvent, Event, ExportCaseChunk, FileEvent, InclusionProof, SearchRequest,
    SignedCheckpoint,
};
use prost::Message;

use super::layout::{self, EventFile, event_path};
use super::manifest::{self, Manifest};
use super::{Case, Exporter, build, check_bundle};
use crate::integrity::checkpoint::ledger::{Ledger, Record};
use crate::integrity::{merkle, signing::Signer};
use crate::store::Store;
use crate::store::journal::{self, Position};

struct Fixture {
    _tmp: tempfile::TempDir,
    ca_pem: Vec<u8>,
    bundle: PathBuf,
    signer: Signer,
    other_signer: Signer,
}

fn pki(dir: &Path, name: &str) -> (Vec<u8>, Signer) {
    let pki = PkiDir::new(dir);
    pki.init_ca("test CA").expect("ca");
    let (c, k) = pki.issue(Role::Signer, name, &[], 30).expect("issue");
    let ca = std::fs::read(pki.ca_cert()).expect("ca pem");
    (ca, Signer::load(&c, &k).expect("signer"))
}

fn mail(seq: u64, raw: &[u8]) -> Event {
    Event {
        event_id: format!("host-1/smtp/{seq}"),
        agent_id: "host-1".into(),
        stream_id: "smtp".into(),
        seq,
        observed_at_ms: 1_000 + seq as i64,
        received_at_ms: 2_000 + seq as i64,
        kind: Some(Kind::Email(EmailEvent {
            mail_from: "bob@example.com".into(),
            subject: format!("case mail {seq}"),
            raw_sha256: kiroku_common::sha256_hex(raw),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn file(seq: u64) -> Event {
    Event {
        event_id: format!("host-1/files/{seq}"),
        agent_id: "host-1".into(),
        stream_id: "files".into(),
        seq,
        observed_at_ms: 1_500 + seq as i64,
        kind: Some(Kind::File(FileEvent {
            operation: "copy_to_removable".into(),
            path: "/media/usb/q3.xlsx".into(),
            sha256: "ab".repeat(32),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// Stores events as ingest does: blob, journal entry, index.
fn store_events(store: &Store, events: &[Event]) {
    let stored: Vec<_> = events.iter().map(journal::entry::reencoded).collect();
    store.journal.append_stored(stored).expect("journal");
    store.index.add(events).expect("index");
    store.index.commit().expect("commit");
}

/// A signed checkpoint over every leaf so far, as the writer makes it.
fn checkpoint(store: &Store, signer: &Signer) {
    let head = store.journal.head();
    let (reads, _) = journal::read_entries(
        store.journal.dir(),
        Position::default(),
        head.end,
        usize::MAX,
    )
    .expect("read");
    let leaves: Vec<_> = reads.iter().map(|r| r.leaf_hash()).collect();
    let c = Checkpoint {
        number: 1,
        collector: "c1".into(),
        at_ms: kiroku_common::now_ms(),
        first_leaf: 0,
        leaves: leaves.len() as u64,
        merkle_root: merkle::root(&leaves).to_vec(),
        ..Default::default()
    };
    let bytes = c.encode_to_vec();
    let signed = SignedCheckpoint {
        signature: signer.sign(&bytes).expect("sign"),
        signer_cert_der: signer.cert_der().to_vec(),
        checkpoint: bytes,
        ..Default::default()
    };
    let ledger = Ledger::open(&store.dir, &store.meta).expect("ledger");
    ledger.write(1, &signed).expect("ckp");
    ledger
        .put(&Record {
            number: 1,
            first_leaf: 0,
            leaves: leaves.len() as u64,
            start: Position::default(),
            end: head.end,
            sha256: journal::entry::sha256(&signed.checkpoint),
            mark_leaf: leaves.len() as u64,
        })
        .expect("record");
}

fn write_chunks(dir: &Path, chunks: &[ExportCaseChunk]) {
    for c in chunks.iter().filter(|c| !c.path.is_empty()) {
        layout::check_path(&c.path).expect("path");
        let p = dir.join(&c.path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .expect("open");
        std::io::Write::write_all(&mut f, &c.data).expect("write");
    }
}

fn fixture() -> Fixture {
    fixture_signed(true)
}

fn fixture_signed(signed: bool) -> Fixture {
    let tmp = tempfile::tempdir().expect("tmp");
    let (ca_pem, signer) = pki(&tmp.path().join("pki"), "c1");
    let (_, other_signer) = pki(&tmp.path().join("other-pki"), "c1");
    let store = Store::open(&tmp.path().join("data")).expect("store");
    let raws: Vec<Vec<u8>> = (1..=3)
        .map(|i| format!("Subject: case mail {i}\r\n\r\nbody {i}\r\n").into_bytes())
        .collect();
    for r in &raws {
        store
            .blobs
            .put(&kiroku_common::sha256_hex(r), r)
            .expect("blob");
    }
    store_events(&store, &[mail(1, &raws[0]), file(1), mail(2, &raws[1])]);
    store_events(&store, &[mail(9, b"not this case")]);
    checkpoint(&store, &signer);
    // After the checkpoint: exported without a proof.
    store_events(&store, &[mail(3, &raws[2])]);
    store
        .audit_query(
            "investigator/eve",
            "GetRaw",
            r#"event_id: "host-1/smtp/2""#,
            1,
        )
        .expect("audit");
    store
        .audit_query(
            "investigator/eve",
            "GetRaw",
            r#"event_id: "host-1/smtp/9""#,
            1,
        )
        .expect("audit");
    let filter = SearchRequest {
        sender: "bob@example.com".into(),
        ..Default::default()
    };
    let mut files = SearchRequest {
        kind: "file".into(),
        ..Default::default()
    };
    let mut events = super::build::select(&store, &filter).expect("select");
    events.retain(|e| e.event_id != "host-1/smtp/9");
    events.extend(super::build::select(&store, &files).expect("files"));
    files.kind.clear();
    let own = store
        .audit_admin("admin/alice", "ExportCase", "case \"c\"")
        .expect("own entry");
    let mut chunks = Vec::new();
    let case = Case {
        name: "c".into(),
        reason: "test".into(),
        filter,
    };
    let who = Exporter {
        identity: "admin/alice".into(),
        signer: signed.then_some(&signer),
        unsigned_reason: "no signing key".into(),
    };
    build(&store, &case, &who, &events, &own, |c| {
        chunks.push(c);
        true
    })
    .expect("build");
    let bundle = tmp.path().join("bundle");
    write_chunks(&bundle, &chunks);
    Fixture {
        _tmp: tmp,
        ca_pem,
        bundle,
        signer,
        other_signer,
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for ent in std::fs::read_dir(from).expect("read") {
        let ent = ent.expect("ent");
        let dest = to.join(ent.file_name());
        if ent.file_type().expect("type").is_dir() {
            std::fs::create_dir_all(&dest).expect("mkdir");
            copy_dir(&ent.path(), &dest);
        } else {
            std::fs::copy(ent.path(), dest).expect("copy");
        }
    }
}

/// Rewrites the manifest so it lists `path` as it now is, and
/// `SHA256SUMS` to match: what someone who edits a file would do next.
fn relist(dir: &Path, path: &str) -> Manifest {
    let mut m: Manifest =
        serde_json::from_slice(&std::fs::read(dir.join(layout::MANIFEST)).expect("read"))
            .expect("manifest");
    let data = std::fs::read(dir.join(path)).expect("read");
    for f in &mut m.files {
        if f.path == path {
            f.sha256 = kiroku_common::sha256_hex(&data);
            f.bytes = data.len() as u64;
        }
    }
    let bytes = manifest::to_bytes(&m);
    std::fs::write(dir.join(layout::MANIFEST), &bytes).expect("write");
    let sums = manifest::sums(&manifest::sums_files(&m, &bytes));
    std::fs::write(dir.join(layout::SUMS), sums).expect("write");
    m
}

fn resign(dir: &Path, signer: &Signer) {
    for (data, sig) in [
        (layout::MANIFEST, layout::MANIFEST_SIG),
        (layout::SUMS, layout::SUMS_SIG),
    ] {
        let bytes = std::fs::read(dir.join(data)).expect("read");
        std::fs::write(dir.join(sig), signer.sign(&bytes).expect("sign")).expect("write");
    }
    std::fs::write(dir.join(layout::SIGNER_PEM), signer.cert_pem()).expect("pem");
}

fn edit(dir: &Path, path: &str, f: impl FnOnce(&mut Vec<u8>)) {
    let p = dir.join(path);
    let mut data = std::fs::read(&p).expect("read");
    f(&mut data);
    std::fs::write(p, data).expect("write");
}

#[test]
fn an_intact_bundle_verifies() {
    let fx = fixture();
    let r = check_bundle(&fx.bundle, &fx.ca_pem, None).expect("check");
    assert!(r.ok(), "{:#?}", r.findings);
    assert_eq!(r.events, 4);
    assert_eq!(
        r.proven, 3,
        "mail 1, 2 and the file event; mail 3 came after the checkpoint"
    );
    assert_eq!(r.checkpoints, 1);
    assert_eq!(r.signer.as_deref(), Some("signer/c1"));
    let m = r.manifest.expect("manifest");
    let late = m
        .events
        .iter()
        .find(|e| e.event_id == "host-1/smtp/3")
        .expect("late");
    assert!(
        late.checkpoint.is_none() && !late.notes.is_empty(),
        "{late:?}"
    );
    // Audit: the export's own entry and the GetRaw of an exported event,
    // not the one of mail 9.
    let audit = std::fs::read_to_string(fx.bundle.join(layout::AUDIT)).expect("audit");
    assert_eq!(audit.lines().count(), 2, "{audit}");
    assert!(
        audit.contains("host-1/smtp/2") && !audit.contains("host-1/smtp/9"),
        "{audit}"
    );
    let raw =
        std::fs::read(fx.bundle.join(event_path("host-1/smtp/1", EventFile::Mail))).expect("mail");
    assert!(raw.starts_with(b"Subject: case mail 1"));
}

#[test]
fn every_alteration_is_found() {
    let fx = fixture();
    let mail1 = event_path("host-1/smtp/1", EventFile::Mail);
    let rec2 = event_path("host-1/smtp/2", EventFile::Recorded);
    let json2 = event_path("host-1/smtp/2", EventFile::Json);
    let proof1 = event_path("host-1/files/1", EventFile::Proof);
    type Change<'a> = Box<dyn Fn(&Path) + 'a>;
    let cases: Vec<(&str, Change, &str, &str)> = vec![
        (
            "a byte of a mail",
            Box::new(|d| edit(d, &mail1, |b| b[0] ^= 1)),
            "altered",
            &mail1,
        ),
        (
            "a truncated mail",
            Box::new(|d| edit(d, &mail1, |b| b.truncate(b.len() - 1))),
            "altered",
            &mail1,
        ),
        (
            "a padded mail",
            Box::new(|d| edit(d, &mail1, |b| b.push(b'\n'))),
            "altered",
            &mail1,
        ),
        (
            "the manifest edited to match",
            Box::new(|d| {
                edit(d, &mail1, |b| b[0] ^= 1);
                relist(d, &mail1);
            }),
            "bad_signature",
            layout::MANIFEST_SIG,
        ),
        (
            "re-signed with a key another CA issued",
            Box::new(|d| {
                edit(d, &mail1, |b| b[0] ^= 1);
                relist(d, &mail1);
                resign(d, &fx.other_signer);
            }),
            "bad_signature",
            layout::MANIFEST_SIG,
        ),
        (
            // The collector's own key signs the edited manifest (an insider
            // with the key): the checkpoint signed before still catches it.
            "recorded bytes edited and re-signed with the collector's key",
            Box::new(|d| {
                edit(d, &rec2, |b| {
                    let at = b.len() - 1;
                    b[at] ^= 1;
                });
                relist(d, &rec2);
                resign(d, &fx.signer);
            }),
            "mismatch",
            &rec2,
        ),
        (
            "the JSON view edited and re-signed",
            Box::new(|d| {
                edit(d, &json2, |b| {
                    let s = String::from_utf8_lossy(b).replace("case mail 2", "PWND mail 2");
                    *b = s.into_bytes();
                });
                relist(d, &json2);
                resign(d, &fx.signer);
            }),
            "mismatch",
            &json2,
        ),
        (
            "a proof's path edited and re-signed",
            Box::new(|d| {
                edit(d, &proof1, |b| {
                    let mut p = InclusionProof::decode(b.as_slice()).expect("proof");
                    p.path[0][0] ^= 1;
                    *b = p.encode_to_vec();
                });
                relist(d, &proof1);
                resign(d, &fx.signer);
            }),
            "bad_proof",
            &proof1,
        ),
        (
            "a file removed",
            Box::new(|d| std::fs::remove_file(d.join(&mail1)).expect("rm")),
            "missing",
            &mail1,
        ),
        (
            "a file added",
            Box::new(|d| std::fs::write(d.join("mail/extra.eml"), b"x").expect("add")),
            "extra",
            "mail/extra.eml",
        ),
        (
            "SHA256SUMS edited",
            Box::new(|d| {
                edit(d, layout::SUMS, |b| {
                    b[0] = if b[0] == b'0' { b'1' } else { b'0' }
                })
            }),
            "altered",
            layout::SUMS,
        ),
        (
            "the checkpoint's signature damaged",
            Box::new(|d| {
                let p = layout::checkpoint_path(1, "ckp");
                edit(d, &p, |b| {
                    let mut s = SignedCheckpoint::decode(b.as_slice()).expect("ckp");
                    let at = s.signature.len() - 1;
                    s.signature[at] ^= 1;
                    *b = s.encode_to_vec();
                });
                relist(d, &p);
                resign(d, &fx.signer);
            }),
            "bad_checkpoint",
            "checkpoints/00000000000000000001.ckp",
        ),
    ];
    for (what, change, finding, path) in cases {
        let dir = fx
            ._tmp
            .path()
            .join(format!("case-{}", what.replace(' ', "-")));
        std::fs::create_dir_all(&dir).expect("mkdir");
        copy_dir(&fx.bundle, &dir);
        change(&dir);
        let r = check_bundle(&dir, &fx.ca_pem, None).expect("check");
        assert!(
            r.findings
                .iter()
                .any(|f| f.what == finding && f.path == path),
            "{what}: want {finding} at {path}, got {:#?}",
            r.findings
        );
    }
}

#[test]
fn an_unsigned_bundle_says_so() {
    let fx = fixture_signed(false);
    let r = check_bundle(&fx.bundle, &fx.ca_pem, None).expect("check");
    let whats: Vec<(&str, &str)> = r
        .findings
        .iter()
        .map(|f| (f.what, f.path.as_str()))
        .collect();
    assert_eq!(
        whats,
        vec![("unsigned", layout::MANIFEST)],
        "{:#?}",
        r.findings
    );
    assert!(r.findings[0].detail.contains("no signing key"));
    assert_eq!(r.proven, 3, "the checkpoints still prove the events");
}
