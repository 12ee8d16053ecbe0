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

/// A stored mail with the given attachments (name, declared type, bytes),
/// each in the raw message only.
fn simple_mail(f: &Fixture, id: &str, files: &[(&str, &str, &[u8])]) -> Event {
    let mut raw = String::from(
        "From: a@corp.example\r\nContent-Type: multipart/mixed; boundary=Z\r\n\r\n--Z\r\nContent-Type: text/plain\r\n\r\nhello\r\n",
    );
    for (name, ct, data) in files {
        raw.push_str(&format!(
            "--Z\r\nContent-Type: {ct}; name=\"{name}\"\r\nContent-Disposition: attachment; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
            b64(data)
        ));
    }
    raw.push_str("--Z--\r\n");
    let raw_sha = kiroku_common::sha256_hex(raw.as_bytes());
    f.blobs.put(&raw_sha, raw.as_bytes()).expect("put raw");
    let attachments = files
        .iter()
        .map(|(name, ct, data)| Attachment {
            filename: (*name).into(),
            content_type: (*ct).into(),
            size: data.len() as u64,
            sha256: kiroku_common::sha256_hex(data),
            ..Default::default()
        })
        .collect();
    Event {
        event_id: id.into(),
        kind: Some(Kind::Email(EmailEvent {
            raw_sha256: raw_sha,
            attachments,
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The same bytes sent first as a photo, then as the text file they are:
/// the text decision of the first (no text) must not stick to the bytes
/// (a sender could switch extraction off that way). The text is kept by
/// the bytes, the format and the charset.
#[test]
fn the_text_of_the_same_bytes_follows_how_they_are_sent() {
    let f = fixture();
    let secret = "社外秘: the merger closes in March\n".as_bytes();
    let photo = simple_mail(&f, "a/s/20", &[("photo.jpg", "image/jpeg", secret)]);
    let a = analyse(&photo, &f.blobs, &f.store, &Limits::default()).expect("analyse");
    assert_eq!(
        (
            a.attachments[0].text_status.as_str(),
            a.attachments[0].text_bytes
        ),
        (text::NONE, 0)
    );
    let txt = simple_mail(
        &f,
        "a/s/21",
        &[("secret.txt", "text/plain; charset=utf-8", secret)],
    );
    let a = analyse(&txt, &f.blobs, &f.store, &Limits::default()).expect("analyse");
    assert_eq!(a.attachments[0].text_status, text::EXTRACTED, "{a:?}");
    assert_eq!(a.attachments[0].text_bytes, secret.len() as u64);
    f.store.put_annotations(&a).expect("put");
    let d = f.store.derived(&txt).expect("derived");
    assert_eq!(d.texts, vec![String::from_utf8_lossy(secret).into_owned()]);
    // And the photo again: still no text, the text kept is not its.
    let a = analyse(&photo, &f.blobs, &f.store, &Limits::default()).expect("analyse");
    assert_eq!(a.attachments[0].text_bytes, 0);
}

/// A result that something outside the file caused (here a reader that
/// cannot start; likewise a timeout, a time bound, an unreadable blob) is
/// not cached and marks the annotations for `reanalyse`; a result the
/// file caused is cached and marks nothing.
#[test]
fn results_caused_by_the_environment_are_not_cached() {
    let f = fixture();
    let pdf = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/documents/report.pdf"),
    )
    .expect("report.pdf fixture");
    let e = simple_mail(&f, "a/s/30", &[("report.pdf", "application/pdf", &pdf)]);
    let mut broken = Limits::default();
    broken.text.program = Some("/nonexistent/kiroku-reader".into());
    let a = analyse(&e, &f.blobs, &f.store, &broken).expect("analyse");
    let att = &a.attachments[0];
    assert!(
        att.text_status.contains("cannot start"),
        "{}",
        att.text_status
    );
    assert!(transient(&att.text_status));
    assert!(a.retry, "marked for reanalyse");
    assert_eq!(f.store.file(&att.text_key, VERSION).expect("read"), None);
    // The byte-derived part (no archive) is cached all the same.
    assert!(f.store.file(&att.sha256, VERSION).expect("read").is_some());
    // Damage is the file's: cached, no retry.
    let bad = simple_mail(
        &f,
        "a/s/31",
        &[("bad.pdf", "application/pdf", b"%PDF-1.4 junk")],
    );
    let mut no_reader = Limits::default();
    no_reader.text.max_input_bytes = 4;
    let a = analyse(&bad, &f.blobs, &f.store, &no_reader).expect("analyse");
    assert!(a.attachments[0].text_status.starts_with("unreadable"));
    assert!(!a.retry, "{a:?}");
    assert!(
        f.store
            .file(&a.attachments[0].text_key, VERSION)
            .expect("read")
            .is_some()
    );
    // A raw message that cannot be read: recorded, and retried later.
    let mut gone = simple_mail(&f, "a/s/32", &[("x.txt", "text/plain", b"x")]);
    if let Some(Kind::Email(m)) = &mut gone.kind {
        m.raw_sha256 = "ee".repeat(32);
    }
    let a = analyse(&gone, &f.blobs, &f.store, &Limits::default()).expect("analyse");
    assert!(a.retry);
    for status in [
        "timed out after 10 s",
        "unreadable: the reader /x cannot start (No such file)",
        "zip; bounded: 10000 ms spent; zip bomb?",
        "not analysed: event budget: time: 1 ms spent on this mail",
    ] {
        assert!(transient(status), "{status}");
    }
    for status in [
        "extracted",
        "unreadable: damaged",
        "bounded: 20000 members listed; zip bomb?",
    ] {
        assert!(!transient(status), "{status}");
    }
}

/// The event's budget: text indexed, bytes gone through and time, all
/// attachments together; what is past it says so.
#[test]
fn the_event_budget_bounds_all_attachments_together() {
    let f = fixture();
    let texts: Vec<Vec<u8>> = (0..3)
        .map(|i| {
            format!("{i} confidential report text ")
                .repeat(4)
                .into_bytes()
        })
        .collect();
    let names = ["a.txt", "b.txt", "c.txt"];
    let files: Vec<(&str, &str, &[u8])> = names
        .iter()
        .zip(&texts)
        .map(|(n, t)| (*n, "text/plain", t.as_slice()))
        .collect();
    let e = simple_mail(&f, "a/s/40", &files);
    let one = texts[0].len() as u64;
    let limits = Limits {
        max_event_text_bytes: one + one / 2,
        ..Limits::default()
    };
    let a = analyse(&e, &f.blobs, &f.store, &limits).expect("analyse");
    let got: Vec<(u64, bool)> = a
        .attachments
        .iter()
        .map(|x| (x.text_bytes, x.text_status.contains(EVENT_BUDGET)))
        .collect();
    assert_eq!(got, vec![(one, false), (one / 2, true), (0, true)], "{a:?}");
    assert!(a.attachments[2].text_status.starts_with(EVENT_BUDGET));
    assert!(a.tags.contains(&TAG_EVENT_BUDGET.to_owned()));
    f.store.put_annotations(&a).expect("put");
    let d = f.store.derived(&e).expect("derived");
    let indexed: usize = d.texts.iter().map(String::len).sum();
    assert_eq!(indexed as u64, one + one / 2);
    // Bytes gone through: the first file uses the budget up.
    let limits = Limits {
        max_event_expanded_bytes: 10,
        ..Limits::default()
    };
    let a = analyse(&e, &f.blobs, &f.store, &limits).expect("analyse");
    let past: Vec<bool> = a
        .attachments
        .iter()
        .map(|x| x.members_status.starts_with(EVENT_BUDGET))
        .collect();
    assert_eq!(past, vec![false, true, true], "{a:?}");
    assert!(!a.retry, "a byte budget is the mail's own: not retried");
    // Time: nothing is opened, and the mail is marked for reanalyse.
    let limits = Limits {
        max_event_millis: 0,
        ..Limits::default()
    };
    let a = analyse(&e, &f.blobs, &f.store, &limits).expect("analyse");
    assert!(
        a.attachments
            .iter()
            .all(|x| x.text_status.starts_with(EVENT_BUDGET) && x.text_bytes == 0),
        "{a:?}"
    );
    assert!(a.retry);
    assert_eq!(a.attachments[0].detected_type, "text/plain", "still typed");
}

#[test]
fn a_failed_analysis_is_recorded_per_attachment() {
    let f = fixture();
    let e = simple_mail(&f, "a/s/50", &[("r.html", "text/html", b"<p>x</p>")]);
    let a = failed(&e, "boom");
    assert_eq!(a.tags, vec![TAG_ANALYSIS_FAILED.to_owned()]);
    assert_eq!(a.version, VERSION);
    assert!(a.retry);
    assert_eq!(
        a.attachments[0].text_status,
        "not analysed: analysis failed: panic: boom"
    );
    assert_eq!(a.attachments[0].name, "r.html");
}

/// The `[analysis]` block of packaging/collector.example.toml, uncommented,
/// is a valid configuration with the documented defaults.
#[test]
fn the_example_analysis_config_parses_and_states_the_defaults() {
    let example = include_str!("../../../packaging/collector.example.toml");
    let block: String = example
        .split("#[analysis]\n")
        .nth(1)
        .expect("an [analysis] block in the example")
        .lines()
        .take_while(|l| !l.is_empty())
        .filter(|l| l.starts_with('#') && !l.starts_with("# ") && l.contains(" = "))
        .map(|l| format!("{}\n", l.trim_start_matches('#')))
        .collect();
    let parsed: AnalysisConfig = toml::from_str(&block).expect("parses");
    let d = AnalysisConfig::default();
    assert!(block.contains("max_event_text_bytes"), "{block}");
    assert_eq!(
        (
            parsed.max_event_millis,
            parsed.max_event_expanded_bytes,
            parsed.max_event_text_bytes,
            parsed.max_file_bytes
        ),
        (
            d.max_event_millis,
            d.max_event_expanded_bytes,
            d.max_event_text_bytes,
            d.max_file_bytes
        )
    );
}

/// A zip bomb's listing is capped by what is left of the mail's byte
/// budget, not only by the per-attachment bound; such a listing is this
/// mail's and is not kept for the file (the next mail lists it whole).
#[test]
fn the_event_budget_caps_an_archive_listing_and_is_not_cached() {
    let f = fixture();
    let mut zip = Vec::new();
    {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(&mut zip));
        let o = zip::write::SimpleFileOptions::default();
        for name in ["a.bin", "b.bin"] {
            w.start_file(name, o).expect("zip");
            std::io::Write::write_all(&mut w, &[0u8; 200_000]).expect("zip");
        }
        w.finish().expect("zip");
    }
    let e = simple_mail(&f, "a/s/60", &[("bomb.zip", "application/zip", &zip)]);
    let limits = Limits {
        max_event_expanded_bytes: zip.len() as u64 + 1000,
        ..Limits::default()
    };
    let a = analyse(&e, &f.blobs, &f.store, &limits).expect("analyse");
    let att = &a.attachments[0];
    assert!(att.members_status.contains(EVENT_BUDGET), "{att:?}");
    assert!(a.tags.contains(&TAG_EVENT_BUDGET.to_owned()), "{a:?}");
    assert_eq!(f.store.file(&att.sha256, VERSION).expect("read"), None);
    let a = analyse(&e, &f.blobs, &f.store, &Limits::default()).expect("analyse");
    let att = &a.attachments[0];
    assert_eq!(att.members.len(), 2, "{att:?}");
    assert!(!att.members_status.contains(EVENT_BUDGET), "{att:?}");
    assert!(f.store.file(&att.sha256, VERSION).expect("read").is_some());
}
