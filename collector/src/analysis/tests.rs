//! The dispatcher over real stored blobs: attached messages, TNEF, type
//! mismatches, S/MIME, the per-file cache.

use super::*;
use kiroku_proto::{Attachment, EmailEvent};

struct Fixture {
    _dir: tempfile::TempDir,
    _meta: crate::store::meta::MetaStore,
    blobs: BlobStore,
    store: AnnotationStore,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = crate::store::meta::MetaStore::open(&dir.path().join("meta")).expect("meta");
    let store = AnnotationStore::open(&meta).expect("annotation store");
    let blobs = BlobStore::open(&dir.path().join("blobs")).expect("blobs");
    Fixture {
        _dir: dir,
        _meta: meta,
        blobs,
        store,
    }
}

fn b64(data: &[u8]) -> String {
    use base64::Engine;
    let s = base64::engine::general_purpose::STANDARD.encode(data);
    s.as_bytes()
        .chunks(76)
        .map(|c| String::from_utf8_lossy(c).into_owned() + "\r\n")
        .collect()
}

fn tnef_sample() -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/tnef/two-files.tnef"),
    )
    .expect("TNEF sample")
}

/// A mail with a forwarded message (holding `secret.txt`), a winmail.dat
/// and a "report.pdf" that is a ZIP; its event as the agent records it.
fn mail(f: &Fixture) -> Event {
    let secret = b"CONFIDENTIAL: merger plan\r\n";
    let zip = b"PK\x03\x04\x14\x00\x00\x00\x00\x00fake zip body";
    let inner = format!(
        "From: carol@corp.example\r\nSubject: Contract draft\r\nContent-Type: multipart/mixed; boundary=IN\r\n\r\n--IN\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--IN\r\nContent-Type: text/plain; name=\"secret.txt\"\r\nContent-Disposition: attachment; filename=\"secret.txt\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}--IN--\r\n",
        b64(secret)
    );
    let tnef = tnef_sample();
    let raw = format!(
        "From: alice@corp.example\r\nTo: eve@other.example\r\nSubject: fyi\r\nContent-Type: multipart/mixed; boundary=OUT\r\n\r\n--OUT\r\nContent-Type: text/plain\r\n\r\nhello\r\n--OUT\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment\r\n\r\n{inner}\r\n--OUT\r\nContent-Type: application/ms-tnef; name=\"winmail.dat\"\r\nContent-Disposition: attachment; filename=\"winmail.dat\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}--OUT\r\nContent-Type: application/pdf; name=\"report.pdf\"\r\nContent-Disposition: attachment; filename=\"report.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}--OUT--\r\n",
        b64(&tnef),
        b64(zip)
    );
    let raw_sha = kiroku_common::sha256_hex(raw.as_bytes());
    f.blobs.put(&raw_sha, raw.as_bytes()).expect("put raw");
    let inner_leaf = read::walk_all(raw.as_bytes(), 1 << 20)
        .leaves
        .into_iter()
        .find(|l| l.content_type == types::MESSAGE)
        .expect("inner message leaf");
    let att = |name: &str, ct: &str, sha: String| Attachment {
        filename: name.into(),
        content_type: ct.into(),
        sha256: sha,
        ..Default::default()
    };
    Event {
        event_id: "agent/s/1".into(),
        kind: Some(Kind::Email(EmailEvent {
            raw_sha256: raw_sha,
            attachments: vec![
                att("", types::MESSAGE, inner_leaf.sha256),
                att(
                    "winmail.dat",
                    "application/ms-tnef",
                    kiroku_common::sha256_hex(&tnef),
                ),
                att(
                    "report.pdf",
                    "application/pdf",
                    kiroku_common::sha256_hex(zip),
                ),
            ],
            ..Default::default()
        })),
        ..Default::default()
    }
}

#[test]
fn opens_attached_messages_and_tnef_and_types_every_file() {
    let f = fixture();
    let e = mail(&f);
    let a = analyse(&e, &f.blobs, &f.store, &Limits::default()).expect("analyse");
    let rows: Vec<(String, String, String, String)> = a
        .attachments
        .iter()
        .map(|x| {
            (
                x.path.clone(),
                x.name.clone(),
                x.container.clone(),
                x.type_mismatch.clone(),
            )
        })
        .collect();
    let want = |p: &str, n: &str, c: &str, m: &str| (p.into(), n.into(), c.into(), m.into());
    assert_eq!(
        rows,
        vec![
            want("", "Contract draft.eml", "message", ""),
            want("Contract draft.eml", "secret.txt", "", ""),
            want("", "winmail.dat", "tnef", ""),
            want("winmail.dat", "AUTHORS", "", ""),
            want("winmail.dat", "README", "", ""),
            want(
                "",
                "report.pdf",
                "zip",
                "name .pdf, content application/zip"
            ),
        ]
    );
    assert_eq!(
        a.attachments[1].sha256,
        kiroku_common::sha256_hex(b"CONFIDENTIAL: merger plan\r\n")
    );
    assert_eq!(a.attachments[0].members.len(), 1);
    assert_eq!(a.attachments[0].members[0].path, "secret.txt");
    assert_eq!(a.attachments[2].members.len(), 2);
    assert_eq!(a.tags, vec![TAG_TYPE_MISMATCH.to_owned()]);
    let paths: Vec<String> = derived_files(&a).into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        paths,
        [
            "Contract draft.eml/secret.txt",
            "winmail.dat/AUTHORS",
            "winmail.dat/README"
        ]
    );
    // The content part of each leaf is kept by hash for the next mail.
    assert!(
        f.store
            .file(&a.attachments[5].sha256, VERSION)
            .expect("read")
            .is_some()
    );
}

#[test]
fn a_missing_or_unreadable_file_is_recorded_not_an_error() {
    let f = fixture();
    let mut e = mail(&f);
    if let Some(Kind::Email(m)) = &mut e.kind {
        m.attachments[2].sha256 = "ff".repeat(32);
        m.raw_sha256 = "ee".repeat(32);
    }
    let a = analyse(&e, &f.blobs, &f.store, &Limits::default()).expect("analyse");
    assert_eq!(a.attachments.len(), 3);
    assert!(
        a.attachments
            .iter()
            .all(|x| x.text_status.starts_with("unreadable")),
        "{a:?}"
    );
}

#[test]
fn files_over_the_limit_are_typed_from_their_head_and_not_opened() {
    let f = fixture();
    let e = mail(&f);
    let limits = Limits {
        max_file_bytes: 16,
        ..Limits::default()
    };
    let a = analyse(&e, &f.blobs, &f.store, &limits).expect("analyse");
    let pdf = a
        .attachments
        .iter()
        .find(|x| x.name == "report.pdf")
        .expect("report.pdf");
    assert_eq!(pdf.detected_type, types::ZIP);
    assert!(pdf.members_status.starts_with("not opened"), "{pdf:?}");
}

#[test]
fn other_events_have_empty_annotations() {
    let f = fixture();
    let e = Event {
        event_id: "a/s/2".into(),
        ..Default::default()
    };
    let a = analyse(&e, &f.blobs, &f.store, &Limits::default()).expect("analyse");
    assert!(a.attachments.is_empty() && a.tags.is_empty());
    assert_eq!(a.version, VERSION);
}

#[test]
fn a_large_attachment_is_read_from_its_own_blob() {
    let f = fixture();
    // 100 KB in canonical base64 lines: stored as a blob of its own.
    let mut zip = b"PK\x03\x04".to_vec();
    zip.extend((0..100_000u32).map(|i| (i * 31 % 251) as u8));
    let raw = format!(
        "From: a@corp.example\r\nContent-Type: multipart/mixed; boundary=Z\r\n\r\n--Z\r\nContent-Type: application/pdf; name=\"big.pdf\"\r\nContent-Disposition: attachment; filename=\"big.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}--Z--\r\n",
        b64(&zip)
    );
    let raw_sha = kiroku_common::sha256_hex(raw.as_bytes());
    f.blobs.put(&raw_sha, raw.as_bytes()).expect("put raw");
    let zip_sha = kiroku_common::sha256_hex(&zip);
    assert!(f.blobs.has(&zip_sha), "split out as its own blob");
    let e = Event {
        event_id: "a/s/9".into(),
        kind: Some(Kind::Email(EmailEvent {
            raw_sha256: raw_sha,
            attachments: vec![Attachment {
                filename: "big.pdf".into(),
                content_type: "application/pdf".into(),
                size: zip.len() as u64,
                sha256: zip_sha,
                ..Default::default()
            }],
            ..Default::default()
        })),
        ..Default::default()
    };
    for max in [1 << 20, 1000] {
        let limits = Limits {
            max_file_bytes: max,
            ..Limits::default()
        };
        let a = analyse(&e, &f.blobs, &f.store, &limits).expect("analyse");
        let big = &a.attachments[0];
        assert_eq!(
            (big.size, big.detected_type.as_str()),
            (zip.len() as u64, types::ZIP),
            "{max}"
        );
        assert_eq!(big.type_mismatch, "name .pdf, content application/zip");
        assert_eq!(
            big.members_status.starts_with("not opened"),
            max == 1000,
            "{big:?}"
        );
    }
}
