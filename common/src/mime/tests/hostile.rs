//! Messages built to cost the walker work or memory, and boundaries built
//! to hide parts from it (review findings 10, 12 and 13 of issue 17).

use super::walk_all;

/// Half a million junk lines in a part's header block, then the field that
/// names the file: the walk completes (the old scan of the rest of the
/// block for each junk line was quadratic: ~1e11 steps), the field after
/// the junk still counts, and the notes stay bounded.
#[test]
fn junk_header_lines_cost_linear_work_and_bounded_notes() {
    let mut raw =
        b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n".to_vec();
    for _ in 0..500_000 {
        raw.extend_from_slice(b"x\n");
    }
    raw.extend_from_slice(
        b"Content-Disposition: attachment; filename=hidden.zip\r\n\r\nPK\r\n--B--\r\n",
    );
    assert!(raw.len() < 1024 * 1024, "within the header block limit");
    let (walk, _) = walk_all(&raw);
    assert_eq!(walk.parts.len(), 1);
    assert_eq!(walk.parts[0].0.filename.as_deref(), Some("hidden.zip"));
    assert!(walk.parts[0].0.is_attachment);
    let skipped = walk
        .warnings
        .iter()
        .filter(|w| w.contains("is not a `Name: value` field"))
        .count();
    assert_eq!(skipped, crate::mime::headers::MAX_BLOCK_NOTES);
    assert!(
        walk.warnings
            .iter()
            .any(|w| w.ends_with(&format!("… and {} more", 500_000 - skipped))),
        "{:?}",
        &walk.warnings[walk.warnings.len().saturating_sub(3)..]
    );
    let bytes: usize = walk.warnings.iter().map(String::len).sum();
    assert!(bytes < 16 * 1024, "{bytes} bytes of warnings");
}

/// Many damaged parts: the walk keeps at most MAX_WARNINGS warnings and
/// says how many more there were.
#[test]
fn warnings_per_walk_are_capped() {
    let mut raw = b"Content-Type: multipart/mixed; boundary=B\r\n\r\n".to_vec();
    for i in 0..2_000 {
        raw.extend_from_slice(
            format!(
                "--B\r\nContent-Type: application/octet-stream; name=f{i}.bin\r\n\
                 Content-Transfer-Encoding: base64\r\n\r\nQUJD!\r\n"
            )
            .as_bytes(),
        );
    }
    raw.extend_from_slice(b"--B--\r\n");
    let (walk, _) = walk_all(&raw);
    assert_eq!(walk.parts.len(), 2_000);
    assert_eq!(walk.warnings.len(), super::super::walk::MAX_WARNINGS + 1);
    let last = walk.warnings.last().expect("a last warning");
    assert!(
        last.starts_with("… and ") && last.ends_with(" more"),
        "{last}"
    );
}

/// Thousands of distinct name parameters: the walk completes and keeps a
/// bounded number of candidates.
#[test]
fn name_parameters_are_bounded() {
    let mut names = String::new();
    for i in 0..100_000 {
        names.push_str(&format!("; n{i}=v; name=f{i}.zip"));
    }
    let raw = format!(
        "Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n\
         Content-Type: application/zip{names}\r\n\r\nPK\r\n--B--\r\n"
    );
    let (walk, _) = walk_all(raw.as_bytes());
    assert_eq!(walk.parts.len(), 1);
    let p = &walk.parts[0].0;
    assert_eq!(p.filename.as_deref(), Some("f0.zip"));
    assert_eq!(
        p.name_candidates.len(),
        super::super::walk::MAX_NAME_CANDIDATES
    );
}

/// A boundary line is the delimiter and any amount of white space; a
/// boundary longer than 1020 characters still splits (Python's `email`
/// and Thunderbird split both).
#[test]
fn long_boundaries_split() {
    let cases: Vec<(&str, String, String)> = vec![
        (
            "1100 spaces after the delimiter",
            "B".into(),
            format!("--B{}\r\n", " ".repeat(1100)),
        ),
        (
            "tabs and spaces, 40000 of them, after a closing one too",
            "B".into(),
            format!("--B{}\r\n", " \t".repeat(20_000)),
        ),
        ("a 1500-character boundary", "b".repeat(1500), String::new()),
        (
            "a 30000-character boundary",
            "c".repeat(30_000),
            String::new(),
        ),
    ];
    for (what, boundary, opening) in cases {
        let opening = if opening.is_empty() {
            format!("--{boundary}\r\n")
        } else {
            opening
        };
        let raw = format!(
            "Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n{opening}\
             Content-Type: text/plain\r\n\r\nbody\r\n{opening}\
             Content-Type: application/zip; name=hidden.zip\r\n\r\nPK\r\n--{boundary}--   \r\n"
        );
        let (walk, bodies) = walk_all(raw.as_bytes());
        assert_eq!(walk.parts.len(), 2, "{what}: {:?}", walk.warnings);
        assert_eq!(
            walk.parts[1].0.filename.as_deref(),
            Some("hidden.zip"),
            "{what}"
        );
        assert_eq!(bodies[1], b"PK", "{what}");
        assert_eq!(bodies[0], b"body", "{what}");
    }
}

/// `boundary="A"; boundary*=''B`: the RFC 2231 form is followed (as
/// Thunderbird does) and the conflict is a warning naming both values.
#[test]
fn conflicting_boundaries_are_warned() {
    for ctype in [
        "multipart/mixed; boundary=\"A\"; boundary*=''B",
        "multipart/mixed; boundary*=''B; boundary=\"A\"",
    ] {
        let raw = format!(
            "Content-Type: {ctype}\r\n\r\n--A\r\n\
             Content-Type: application/zip; name=decoy.zip\r\n\r\nPK\r\n--A--\r\n\
             --B\r\nContent-Type: application/zip; name=real.zip\r\n\r\nPK\r\n--B--\r\n"
        );
        let (walk, _) = walk_all(raw.as_bytes());
        let names: Vec<_> = walk
            .parts
            .iter()
            .filter_map(|(p, _)| p.filename.as_deref())
            .collect();
        assert_eq!(names, ["real.zip"], "{ctype}");
        assert!(
            walk.warnings
                .iter()
                .any(|w| w.contains("conflicting boundary parameters")
                    && w.contains("\"B\" followed")
                    && w.contains("\"A\" ignored")),
            "{ctype}: {:?}",
            walk.warnings
        );
    }
    // The same value twice is no conflict.
    let raw = "Content-Type: multipart/mixed; boundary=\"B\"; boundary*=''B\r\n\r\n--B\r\n\
               Content-Type: application/zip; name=real.zip\r\n\r\nPK\r\n--B--\r\n";
    let (walk, _) = walk_all(raw.as_bytes());
    assert!(
        !walk.warnings.iter().any(|w| w.contains("conflicting")),
        "{:?}",
        walk.warnings
    );
}

/// Every leaf that is not the body's first text/plain or text/html part is
/// a file, named after its place and type when it has no name (review
/// finding 11).
#[test]
fn unnamed_parts_are_files() {
    // (what, part headers, recorded name)
    let cases = [
        (
            "base64 zip without name or disposition",
            "Content-Type: application/zip\r\nContent-Transfer-Encoding: base64",
            "part-2.zip",
        ),
        (
            "inline zip without name",
            "Content-Type: application/zip\r\nContent-Disposition: inline\r\n\
             Content-Transfer-Encoding: base64",
            "part-2.zip",
        ),
        (
            "inline pdf without name",
            "Content-Type: application/pdf\r\nContent-Disposition: inline\r\n\
             Content-Transfer-Encoding: base64",
            "part-2.pdf",
        ),
        (
            "unknown disposition on text",
            "Content-Type: text/plain\r\nContent-Disposition: attachmnt",
            "part-2.txt",
        ),
        (
            "a second text/plain part",
            "Content-Type: text/plain",
            "part-2.txt",
        ),
        (
            "an unknown type",
            "Content-Type: application/x-secret\r\nContent-Transfer-Encoding: base64",
            "part-2",
        ),
    ];
    for (what, headers, name) in cases {
        let raw = format!(
            "Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n\
             Content-Type: text/plain\r\n\r\nbody\r\n--B\r\n{headers}\r\n\r\nUEsDBA==\r\n--B--\r\n"
        );
        let (walk, _) = walk_all(raw.as_bytes());
        assert_eq!(walk.parts.len(), 2, "{what}");
        assert!(!walk.parts[0].0.is_attachment, "{what}: the body");
        let (p, end) = &walk.parts[1];
        assert!(p.is_attachment, "{what}");
        assert_eq!(p.filename.as_deref(), Some(name), "{what}");
        assert!(p.name_candidates.is_empty(), "{what}");
        assert!(end.decoded && end.size > 0, "{what}");
    }
    // A single-part message of a zip is a file; the text and HTML of an
    // alternative are the body.
    let raw =
        b"Content-Type: application/zip\r\nContent-Transfer-Encoding: base64\r\n\r\nUEsDBA==\r\n";
    let (walk, _) = walk_all(raw);
    assert_eq!(walk.parts[0].0.filename.as_deref(), Some("part-1.zip"));
    assert_eq!(walk.parts[0].1.sha256, crate::sha256_hex(b"PK\x03\x04"));
    let raw = b"Content-Type: multipart/alternative; boundary=B\r\n\r\n--B\r\n\
Content-Type: text/plain\r\n\r\nhi\r\n--B\r\nContent-Type: text/html\r\n\r\n<p>hi</p>\r\n--B--\r\n";
    let (walk, _) = walk_all(raw);
    assert!(walk.parts.iter().all(|(p, _)| !p.is_attachment));
}

/// A boundary parameter ending in spaces delimits without them (RFC 2046:
/// a boundary does not end in white space; Python strips it too), so a
/// part cannot hide behind a delimiter line one space short.
#[test]
fn boundary_trailing_spaces_are_stripped() {
    let raw = b"Content-Type: multipart/mixed; boundary=\"B  \"\r\n\r\n--B \r\n\
Content-Type: text/plain\r\n\r\nbody\r\n--B\r\n\
Content-Type: application/zip; name=hidden.zip\r\n\r\nPK\r\n--B--\r\n";
    let (walk, bodies) = walk_all(raw);
    assert_eq!(walk.parts.len(), 2, "{:?}", walk.warnings);
    assert_eq!(walk.parts[1].0.filename.as_deref(), Some("hidden.zip"));
    assert_eq!(bodies[0], b"body");
}
