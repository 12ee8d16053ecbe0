//! Attachment text through the real reader subprocess
//! (`kiroku-collector extract-text`): its answer, and every way it can
//! fail — a deadline, the memory limit, a crash, a missing program — each
//! a status, never an error or a hang of the caller.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kiroku_collector::analysis::text::{EXTRACTED, TextLimits};

/// `text::extract` as the dispatcher calls it: with the type detected
/// from the bytes.
fn extract(
    data: &[u8],
    name: &str,
    declared: &str,
    _detected: &str,
    limits: &TextLimits,
) -> kiroku_collector::analysis::text::Extracted {
    let detected = kiroku_collector::analysis::types::detect(data);
    kiroku_collector::analysis::text::extract(data, name, declared, detected, limits)
}

fn limits() -> TextLimits {
    TextLimits {
        program: Some(PathBuf::from(env!("CARGO_BIN_EXE_kiroku-collector"))),
        ..TextLimits::default()
    }
}

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/documents")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A stand-in reader: a shell script, for the failures a real document
/// would need to be found for first.
fn script(dir: &tempfile::TempDir, body: &str) -> PathBuf {
    let p = dir.path().join("reader.sh");
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    p
}

#[test]
fn documents_are_read_in_the_subprocess() {
    // (file, a word only it holds)
    for (name, word) in [
        ("report.pdf", "aubergine"),
        ("report.docx", "bergamot"),
        ("report.xlsx", "cardamom"),
        ("report.pptx", "damson"),
        ("report.xls", "elderflower"),
    ] {
        let got = extract(
            &fixture(name),
            name,
            "application/octet-stream",
            "",
            &limits(),
        );
        assert_eq!(got.status, EXTRACTED, "{name}");
        assert!(
            got.text.contains("社外秘") && got.text.contains(word),
            "{name}: {:?}",
            got.text
        );
    }
    let got = extract(
        &fixture("corrupt.pdf"),
        "x.pdf",
        "application/pdf",
        "",
        &limits(),
    );
    assert!(got.status.starts_with("unreadable: "), "{got:?}");
    // Cut in the child: the status names the bytes kept.
    let small = TextLimits {
        max_text_bytes: 10,
        ..limits()
    };
    let got = extract(&fixture("report.pptx"), "", "", "", &small);
    assert_eq!(got.status, format!("cut at {} bytes", got.text.len()));
    assert!(got.text.len() <= 10);
    // Over the input limit: not read at all.
    let tiny = TextLimits {
        max_input_bytes: 100,
        ..limits()
    };
    let got = extract(&fixture("report.pdf"), "", "", "", &tiny);
    assert!(got.status.contains("over the limit"), "{got:?}");
}

#[test]
fn a_reader_past_its_deadline_is_killed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = TextLimits {
        program: Some(script(&dir, "exec sleep 60")),
        timeout_secs: 1,
        ..TextLimits::default()
    };
    let start = Instant::now();
    let got = extract(&fixture("report.pdf"), "", "", "", &l);
    assert_eq!(got.status, "timed out after 1 s");
    assert!(got.text.is_empty());
    // Killed at the deadline, not when the script would have ended.
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn a_reader_out_of_memory_or_crashed_is_unreadable() {
    // The real reader under an address space far too small for it.
    let l = TextLimits {
        max_memory_bytes: 1 << 20,
        ..limits()
    };
    let got = extract(&fixture("report.xlsx"), "", "", "", &l);
    assert!(got.status.starts_with("unreadable: the reader"), "{got:?}");
    let dir = tempfile::tempdir().expect("tempdir");
    for (body, want) in [
        (
            "kill -SEGV $$",
            "unreadable: the reader stopped on signal 11",
        ),
        (
            "echo 'it broke' >&2; exit 3",
            "unreadable: the reader failed",
        ),
        (
            "cat >/dev/null; exit 0",
            "unreadable: the reader gave no answer",
        ),
    ] {
        let l = TextLimits {
            program: Some(script(&dir, body)),
            ..TextLimits::default()
        };
        let got = extract(&fixture("report.docx"), "", "", "", &l);
        assert!(got.status.starts_with(want), "{body}: {got:?}");
    }
    let l = TextLimits {
        program: Some(dir.path().join("no-such-reader")),
        ..TextLimits::default()
    };
    let got = extract(&fixture("report.pdf"), "", "", "", &l);
    assert!(got.status.contains("cannot start"), "{got:?}");
}

#[test]
fn the_subcommand_refuses_bad_arguments() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiroku-collector"))
        .args(["extract-text", "doc", "1", "2", "3"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage"));
}
