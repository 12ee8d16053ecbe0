//! The two record paths give the same record for the same bytes (issue 17
//! item 5): every message of the MIME test corpus (`tests/data/mime`:
//! defects, evasion cases, public corpora) and of CPython's email test data
//! is recorded once in memory (`record::build`, mail up to 8 MiB) and once
//! by the streaming pass used for larger mail (`record::build_streamed`),
//! and the two records must be equal. The fuzz target `mime_record` checks
//! the same on generated input; this checks it on real-world and hostile
//! mail.

use std::path::{Path, PathBuf};

use kiroku_agent::capture::smtp::record::{self, Envelope};
use kiroku_proto::EmailEvent;

const CPYTHON: &str = "/usr/lib/python3.11/test/test_email/data";

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/mime")
}

/// Every message file under `dir` whose name starts with `prefix`,
/// recursively, sorted.
fn messages(dir: &Path, prefix: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        if p.is_dir() {
            messages(&p, prefix, out);
        } else if name.is_some_and(|n| {
            n.starts_with(prefix)
                && [".eml", ".txt", ".msg", ".raw"]
                    .iter()
                    .any(|e| n.ends_with(e))
        }) {
            out.push(p);
        }
    }
}

/// The fields where two records differ, by name.
fn differing(a: &EmailEvent, b: &EmailEvent) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |name: &str, x: String, y: String| {
        if x != y {
            out.push(format!("{name}: in memory {x}, streamed {y}"));
        }
    };
    check(
        "subject",
        format!("{:?}", a.subject),
        format!("{:?}", b.subject),
    );
    check("from", format!("{:?}", a.from), format!("{:?}", b.from));
    check("to", format!("{:?}", a.to), format!("{:?}", b.to));
    check("cc", format!("{:?}", a.cc), format!("{:?}", b.cc));
    check(
        "body_text",
        format!("{:?}", a.body_text.chars().take(60).collect::<String>()),
        format!("{:?}", b.body_text.chars().take(60).collect::<String>()),
    );
    check(
        "attachments",
        format!("{:?}", a.attachments),
        format!("{:?}", b.attachments),
    );
    check(
        "parse_warnings",
        format!("{:?}", a.parse_warnings),
        format!("{:?}", b.parse_warnings),
    );
    check(
        "decode_warnings",
        format!("{:?}", a.decode_warnings),
        format!("{:?}", b.decode_warnings),
    );
    if out.is_empty() && a != b {
        out.push(format!("other fields: in memory {a:?}, streamed {b:?}"));
    }
    out
}

#[test]
fn in_memory_and_streamed_records_agree_on_the_whole_corpus() {
    let mut files = Vec::new();
    messages(&corpus_dir(), "", &mut files);
    let hand_built = files.len();
    messages(Path::new(CPYTHON), "msg_", &mut files);
    assert!(
        hand_built >= 300,
        "only {hand_built} messages under {}",
        corpus_dir().display()
    );
    let env = Envelope {
        esmtp: true,
        mail_from: "corpus@example.com".into(),
        ..Default::default()
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let mut wrong = Vec::new();
    for f in &files {
        let raw = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let a = record::build(&env, &raw);
        let path = dir.path().join("message");
        std::fs::write(&path, &raw).expect("write temp message");
        let b = record::build_streamed(&env, &path, raw.len() as u64, &a.raw_sha256);
        for d in differing(&a, &b) {
            wrong.push(format!("{}: {d}", f.display()));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} differences between the in-memory and the streamed record over {} messages:\n{}",
        wrong.len(),
        files.len(),
        wrong.join("\n")
    );
    eprintln!("{} messages recorded alike by both paths", files.len());
}
