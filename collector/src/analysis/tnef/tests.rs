use super::*;
use std::path::{Path, PathBuf};

fn samples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/tnef");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/data/tnef")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "tnef"))
        .collect();
    v.sort();
    assert!(v.len() >= 10, "TNEF samples missing in {}", dir.display());
    v
}

/// (name, size, sha256) of every file the `tnef` program unpacks from
/// `sample`, sorted by name.
fn oracle(sample: &Path) -> Vec<(String, u64, String)> {
    let out = tempfile::tempdir().expect("tempdir");
    let run = std::process::Command::new("tnef")
        .arg("--ignore-checksum")
        .arg("-C")
        .arg(out.path())
        .arg("-f")
        .arg(sample)
        .output()
        .expect("the `tnef` program (Debian package tnef, installed by .ci/run) must be on PATH");
    // A damaged sample makes it exit non-zero after what it could unpack.
    let _ = run.status;
    let mut v: Vec<(String, u64, String)> = std::fs::read_dir(out.path())
        .expect("unpacked")
        .flatten()
        .map(|e| {
            let data = std::fs::read(e.path()).expect("unpacked file");
            (
                e.file_name().to_string_lossy().into_owned(),
                data.len() as u64,
                kiroku_common::sha256_hex(&data),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn unpacks_like_the_tnef_program() {
    let mut files_seen = 0;
    for sample in samples() {
        let data = std::fs::read(&sample).expect("sample");
        let got = unpack(&data).expect("a TNEF stream");
        let mut ours: Vec<(String, u64, String)> = got
            .files
            .iter()
            .map(|f| {
                (
                    f.name.clone(),
                    f.data.len() as u64,
                    kiroku_common::sha256_hex(&f.data),
                )
            })
            .collect();
        ours.sort();
        files_seen += ours.len();
        assert_eq!(ours, oracle(&sample), "{}", sample.display());
    }
    assert!(files_seen >= 12, "only {files_seen} files in the samples");
}

#[test]
fn long_names_and_damage() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/tnef");
    let data = std::fs::read(dir.join("long-filename.tnef")).expect("sample");
    let got = unpack(&data).expect("tnef");
    assert_eq!(got.files.len(), 1);
    assert_eq!(got.files[0].name, "allproductsmar2000.dat");
    // Cut in the middle: what came before the cut is kept, and the status
    // says where it broke.
    let two = std::fs::read(dir.join("two-files.tnef")).expect("sample");
    let cut = &two[..two.len() - 10];
    let got = unpack(cut).expect("tnef");
    assert!(got.status.starts_with("damaged at byte"), "{}", got.status);
    assert_eq!(got.files.len(), 2, "data of both read before the cut");
    assert_eq!(unpack(b"PK\x03\x04"), None);
    // Any prefix of a sample: no panic, nothing larger than the input.
    for n in 0..two.len() {
        if let Some(u) = unpack(&two[..n]) {
            assert!(u.files.iter().map(|f| f.data.len()).sum::<usize>() <= n);
        }
    }
}

/// A TNEF stream with one attachment whose `attAttachment` attribute has
/// `props` as its body.
fn with_props(props: &[u8]) -> Vec<u8> {
    let mut t = SIGNATURE.to_vec();
    t.extend_from_slice(&[0x01, 0x00]); // legacy key
    let mut attr = |level: u8, id: u32, body: &[u8]| {
        t.push(level);
        t.extend_from_slice(&id.to_le_bytes());
        t.extend_from_slice(&(body.len() as u32).to_le_bytes());
        t.extend_from_slice(body);
        let sum = body.iter().map(|&b| u32::from(b)).sum::<u32>() as u16;
        t.extend_from_slice(&sum.to_le_bytes());
    };
    attr(
        LVL_ATTACHMENT,
        0x0006_0000 | u32::from(ATT_ATTACH_REND_DATA),
        &[0; 14],
    );
    attr(
        LVL_ATTACHMENT,
        0x0001_0000 | u32::from(ATT_ATTACH_DATA),
        b"hello",
    );
    attr(
        LVL_ATTACHMENT,
        0x0006_0000 | u32::from(ATT_ATTACHMENT),
        props,
    );
    t
}

/// Hostile property counts are refused at once, not looped over: the
/// 12-byte property of the review (multi-valued PT_NULL, 0xffffffff
/// values) took about 4e9 iterations per property before; a count of
/// multi-valued strings or of properties larger than the bytes left is
/// refused the same way. What was read before is kept.
#[test]
fn hostile_property_counts_are_refused() {
    let cases: &[(&str, Vec<u8>, &str)] = &[
        (
            "multi-valued PT_NULL, 4e9 values",
            [
                &1u32.to_le_bytes()[..],
                &[0x01, 0x10, 0x01, 0x37],
                &[0xff; 4],
            ]
            .concat(),
            "zero-size type",
        ),
        (
            "multi-valued string, 4e9 values",
            [
                &1u32.to_le_bytes()[..],
                &[0x1e, 0x10, 0x07, 0x37],
                &[0xff; 4],
            ]
            .concat(),
            "more than the",
        ),
        (
            "multi-valued LONG, 4e9 values",
            [
                &1u32.to_le_bytes()[..],
                &[0x03, 0x10, 0x07, 0x37],
                &[0xff; 4],
            ]
            .concat(),
            "more than the",
        ),
        (
            "4e9 properties",
            [0xff; 12].to_vec(),
            "properties, more than",
        ),
    ];
    for (what, props, says) in cases {
        let data = with_props(props);
        let got = unpack(&data).expect("a TNEF stream");
        assert!(got.status.contains(says), "{what}: {}", got.status);
        assert_eq!(got.files.len(), 1, "{what}: the data read before is kept");
        assert_eq!(got.files[0].data, b"hello", "{what}");
    }
}
