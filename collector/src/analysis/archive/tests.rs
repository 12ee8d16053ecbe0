//! Archives made by the real tools (`zip`, `7z`, `tar`, `gzip`; `.ci/run`
//! installs them), listed and checked against what went in.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

/// A scratch directory with files to archive.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, content: &[u8]) -> &Self {
        let p = self.path(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(p, content).expect("write");
        self
    }

    /// Runs a tool in the scratch directory; panics naming it when it is
    /// missing (install zip and p7zip-full, as `.ci/run` does).
    fn run(&self, tool: &str, args: &[&str]) {
        let out = Command::new(tool)
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run {tool} (apt-get install zip p7zip-full, as .ci/run does): {e}")
            });
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).expect("read archive")
    }
}

fn sha(data: &[u8]) -> String {
    kiroku_common::sha256_hex(data)
}

fn paths(l: &Listing) -> Vec<&str> {
    let mut p: Vec<&str> = l.members.iter().map(|m| m.path.as_str()).collect();
    p.sort();
    p
}

fn member<'a>(l: &'a Listing, path: &str) -> &'a ArchiveMember {
    l.members
        .iter()
        .find(|m| m.path == path)
        .unwrap_or_else(|| panic!("{path} not in {:?}", paths(l)))
}

const REPORT: &[u8] = b"quarterly figures, confidential\n";
const PLAN: &[u8] = b"%PDF-1.4\n%plan\n";

fn sample(s: &Scratch) {
    s.write("report.txt", REPORT).write("docs/plan.pdf", PLAN);
}

fn list_default(data: &[u8], name: &str) -> Listing {
    list(data, name, &ArchiveLimits::default()).expect("an archive")
}

#[test]
fn plain_archives_list_every_member_with_its_hash() {
    let s = Scratch::new();
    sample(&s);
    s.run("zip", &["-q", "-r", "a.zip", "report.txt", "docs"]);
    s.run("7z", &["a", "-bd", "-t7z", "a.7z", "report.txt", "docs"]);
    s.run("tar", &["-cf", "a.tar", "report.txt", "docs"]);
    s.run("tar", &["-czf", "a.tgz", "report.txt", "docs"]);
    for (file, container) in [
        ("a.zip", "zip"),
        ("a.7z", "7z"),
        ("a.tar", "tar"),
        ("a.tgz", "tar"),
    ] {
        let l = list_default(&s.read(file), file);
        assert_eq!(l.container, container, "{file}");
        assert!(!l.encrypted, "{file}");
        assert_eq!(l.status, "", "{file}");
        assert_eq!(paths(&l), ["docs/plan.pdf", "report.txt"], "{file}");
        let r = member(&l, "report.txt");
        assert_eq!(
            (r.size, r.sha256.as_str(), r.depth, r.detected_type.as_str()),
            (REPORT.len() as u64, sha(REPORT).as_str(), 1, "text/plain"),
            "{file}"
        );
        let p = member(&l, "docs/plan.pdf");
        assert_eq!(p.sha256, sha(PLAN), "{file}");
        assert_eq!(p.detected_type, "application/pdf", "{file}");
    }
}

#[test]
fn a_gzip_lists_the_file_it_holds() {
    let s = Scratch::new();
    sample(&s);
    // gzip keeps the name (report.txt) in its header; -n leaves it out, and
    // the attachment's name without .gz stands in.
    s.run("gzip", &["-k", "report.txt"]);
    let l = list_default(&s.read("report.txt.gz"), "renamed.gz");
    assert_eq!(
        (l.container.as_str(), paths(&l)),
        ("gzip", vec!["report.txt"])
    );
    assert_eq!(l.members[0].sha256, sha(REPORT));
    std::fs::remove_file(s.path("report.txt.gz")).expect("rm");
    s.run("gzip", &["-k", "-n", "report.txt"]);
    let l = list_default(&s.read("report.txt.gz"), "mailed.txt.gz");
    assert_eq!(paths(&l), ["mailed.txt"]);
}

#[test]
fn encrypted_archives_say_which_encryption_and_list_names_where_they_can() {
    let s = Scratch::new();
    sample(&s);
    s.run(
        "zip",
        &[
            "-q",
            "-P",
            "s3cret",
            "zc.zip",
            "report.txt",
            "docs/plan.pdf",
        ],
    );
    s.run(
        "7z",
        &[
            "a",
            "-bd",
            "-tzip",
            "-mem=AES256",
            "-ps3cret",
            "aes.zip",
            "report.txt",
            "docs",
        ],
    );
    s.run(
        "7z",
        &["a", "-bd", "-ps3cret", "enc.7z", "report.txt", "docs"],
    );
    s.run(
        "7z",
        &[
            "a",
            "-bd",
            "-ps3cret",
            "-mhe=on",
            "hidden.7z",
            "report.txt",
            "docs",
        ],
    );
    for (file, container, encryption) in [
        ("zc.zip", "zip", "zipcrypto"),
        ("aes.zip", "zip", "aes-256"),
        ("enc.7z", "7z", "7z-aes"),
    ] {
        let l = list_default(&s.read(file), file);
        assert_eq!(
            (l.container.as_str(), l.encrypted, l.encryption.as_str()),
            (container, true, encryption),
            "{file}"
        );
        assert_eq!(paths(&l), ["docs/plan.pdf", "report.txt"], "{file}");
        let r = member(&l, "report.txt");
        assert!(r.encrypted && r.sha256.is_empty(), "{file}: {r:?}");
        assert_eq!(
            (r.size, r.status.as_str()),
            (REPORT.len() as u64, "encrypted")
        );
        assert!(!l.is_bounded(), "{file}");
    }
    let l = list_default(&s.read("hidden.7z"), "hidden.7z");
    assert_eq!(
        (l.container.as_str(), l.encrypted, l.encryption.as_str()),
        ("7z", true, "7z-aes, names hidden")
    );
    assert!(l.members.is_empty());
    assert!(l.status.contains("names hidden"), "{}", l.status);
}

#[test]
fn archives_inside_archives_are_listed_with_their_path() {
    let s = Scratch::new();
    sample(&s);
    s.run("tar", &["-czf", "inner.tar.gz", "report.txt"]);
    s.run("7z", &["a", "-bd", "-ps3cret", "locked.7z", "docs"]);
    s.run("zip", &["-q", "middle.zip", "inner.tar.gz", "locked.7z"]);
    s.run("zip", &["-q", "outer.zip", "middle.zip", "docs/plan.pdf"]);
    let l = list_default(&s.read("outer.zip"), "outer.zip");
    assert_eq!(
        paths(&l),
        [
            "docs/plan.pdf",
            "middle.zip",
            "middle.zip/inner.tar.gz",
            "middle.zip/inner.tar.gz/report.txt",
            "middle.zip/locked.7z",
            "middle.zip/locked.7z/docs/plan.pdf",
        ]
    );
    let deep = member(&l, "middle.zip/inner.tar.gz/report.txt");
    assert_eq!(
        (deep.depth, deep.sha256.as_str()),
        (3, sha(REPORT).as_str())
    );
    assert_eq!(member(&l, "middle.zip").sha256, sha(&s.read("middle.zip")));
    assert_eq!(member(&l, "middle.zip").detected_type, "application/zip");
    // An encrypted archive anywhere inside makes the attachment encrypted.
    assert_eq!((l.encrypted, l.encryption.as_str()), (true, "7z-aes"));
    assert_eq!(l.status, "");
}

#[test]
fn documents_are_labelled_and_listed_with_their_embedded_files() {
    let s = Scratch::new();
    s.write("[Content_Types].xml", b"<Types/>")
        .write("word/document.xml", b"<w:document/>")
        .write("word/embeddings/secret.xlsx", REPORT)
        .write("mimetype", b"application/vnd.oasis.opendocument.text")
        .write("content.xml", b"<office:document-content/>");
    s.run(
        "zip",
        &[
            "-q",
            "-X",
            "doc.docx",
            "[Content_Types].xml",
            "word/document.xml",
            "word/embeddings/secret.xlsx",
        ],
    );
    s.run("zip", &["-q", "-X", "-0", "doc.odt", "mimetype"]);
    s.run("zip", &["-q", "-X", "doc.odt", "content.xml"]);
    s.run("zip", &["-q", "mail.zip", "doc.docx", "doc.odt"]);
    let docx = list_default(&s.read("doc.docx"), "doc.docx");
    assert_eq!(
        (docx.container.as_str(), docx.encrypted),
        ("document", false)
    );
    assert_eq!(
        paths(&docx),
        [
            "[Content_Types].xml",
            "word/document.xml",
            "word/embeddings/secret.xlsx"
        ]
    );
    assert_eq!(
        member(&docx, "word/embeddings/secret.xlsx").sha256,
        sha(REPORT)
    );
    let odt = list_default(&s.read("doc.odt"), "doc.odt");
    assert_eq!(odt.container, "document");
    assert_eq!(paths(&odt), ["content.xml", "mimetype"]);
    // Inside an archive a document is opened like any ZIP: its embedded
    // file is found at depth 2.
    let l = list_default(&s.read("mail.zip"), "mail.zip");
    assert_eq!(l.container, "zip");
    let embedded = member(&l, "doc.docx/word/embeddings/secret.xlsx");
    assert_eq!(
        (embedded.depth, embedded.sha256.as_str()),
        (2, sha(REPORT).as_str())
    );
    assert!(
        paths(&l).contains(&"doc.odt/content.xml"),
        "{:?}",
        paths(&l)
    );
    let limits = ArchiveLimits::default();
    for not_archive in [&b""[..], b"hello", PLAN, b"PK", b"\x1f\x8bnot gzip"] {
        let got = list(not_archive, "x", &limits);
        assert!(
            got.is_none() || !got.as_ref().is_some_and(|l| l.status.is_empty()),
            "{not_archive:?}: {got:?}"
        );
    }
}

/// Review finding 14: one extra `[Content_Types].xml` (or ODF `mimetype`)
/// entry made an encrypted ZIP pass for a document, listed as nothing.
#[test]
fn an_encrypted_zip_dressed_as_a_document_is_an_encrypted_archive() {
    let s = Scratch::new();
    s.write("confidential.xlsx", REPORT)
        .write("[Content_Types].xml", b"<Types/>")
        .write("mimetype", b"application/vnd.oasis.opendocument.text");
    s.run(
        "zip",
        &[
            "-q",
            "-P",
            "pw",
            "secret.zip",
            "confidential.xlsx",
            "[Content_Types].xml",
        ],
    );
    s.run(
        "zip",
        &["-q", "-X", "-0", "-P", "pw", "odf.zip", "mimetype"],
    );
    s.run(
        "zip",
        &["-q", "-X", "-P", "pw", "odf.zip", "confidential.xlsx"],
    );
    for file in ["secret.zip", "odf.zip"] {
        let l = list_default(&s.read(file), file);
        assert_eq!(
            (l.container.as_str(), l.encrypted, l.encryption.as_str()),
            ("zip", true, "zipcrypto"),
            "{file}"
        );
        let m = member(&l, "confidential.xlsx");
        assert!(m.encrypted, "{file}: {m:?}");
        assert_eq!(m.status, "encrypted", "{file}");
    }
    // Encryption is seen even when the member bound stops the listing
    // before the encrypted entry.
    s.write("a.txt", PLAN);
    s.run("zip", &["-q", "-X", "mixed.zip", "a.txt"]);
    s.run(
        "zip",
        &["-q", "-X", "-P", "pw", "mixed.zip", "confidential.xlsx"],
    );
    let limits = ArchiveLimits {
        max_members: 1,
        ..ArchiveLimits::default()
    };
    let l = list(&s.read("mixed.zip"), "mixed.zip", &limits).expect("a zip");
    assert!(l.encrypted && l.is_bounded(), "{l:?}");
}

/// Review finding 15: a ZIP with bytes before it (a self-extractor, a
/// script, one junk byte) is found by its end-of-central-directory record.
#[test]
fn a_zip_with_bytes_prepended_is_found_by_its_end_record() {
    let s = Scratch::new();
    sample(&s);
    s.run("zip", &["-q", "-r", "-X", "a.zip", "report.txt", "docs"]);
    let zip = s.read("a.zip");
    let script = b"#!/bin/sh\nexec unzip -o \"$0\"\nexit 0\n".to_vec();
    for prefix in [b"x".to_vec(), script] {
        let mut data = prefix.clone();
        data.extend_from_slice(&zip);
        let l = list_default(&data, "a.zip");
        assert_eq!(l.container, "zip", "{prefix:?}");
        assert_eq!(paths(&l), ["docs/plan.pdf", "report.txt"], "{prefix:?}");
        assert_eq!(member(&l, "report.txt").sha256, sha(REPORT), "{prefix:?}");
    }
    // An encrypted one too, with its offsets adjusted as `zip -A` does for
    // a self-extractor.
    s.run("zip", &["-q", "-X", "-P", "pw", "enc.zip", "report.txt"]);
    let mut sfx = b"MZ self-extractor stub".to_vec();
    sfx.extend_from_slice(&s.read("enc.zip"));
    s.write("sfx.exe", &sfx);
    s.run("zip", &["-q", "-A", "sfx.exe"]);
    let l = list_default(&s.read("sfx.exe"), "sfx.exe");
    assert!(l.encrypted, "{l:?}");
    assert_eq!(paths(&l), ["report.txt"]);
    // The end record's signature alone, or bytes that end like a ZIP but
    // do not open, are no archive.
    let limits = ArchiveLimits::default();
    let mut fake = PLAN.to_vec();
    fake.extend_from_slice(b"PK\x05\x06 not really");
    assert_eq!(list(&fake, "x.pdf", &limits), None);
}

#[test]
fn damaged_archives_say_so_and_keep_what_was_read() {
    let s = Scratch::new();
    sample(&s);
    s.run("zip", &["-q", "a.zip", "report.txt"]);
    let data = s.read("a.zip");
    let l = list_default(&data[..data.len() / 2], "a.zip");
    assert_eq!(l.container, "zip");
    assert!(l.status.starts_with("damaged:"), "{}", l.status);
    assert!(!l.is_bounded());
    let l = list_default(b"\x1f\x8b\x08\x00garbage", "x.gz");
    assert!(l.status.contains("damaged"), "{l:?}");
}

/// Shift_JIS names, as ZIP tools on Japanese Windows write them (no UTF-8
/// flag): the name is patched into a ZIP made with an ASCII name of the
/// same length.
#[test]
fn shift_jis_member_names_are_decoded() {
    let s = Scratch::new();
    s.write("abcd.txt", REPORT);
    s.run("zip", &["-q", "-X", "sjis.zip", "abcd.txt"]);
    let (sjis, _, _) = encoding_rs::SHIFT_JIS.encode("秘密.txt");
    assert_eq!(sjis.len(), "abcd.txt".len());
    let mut data = s.read("sjis.zip");
    let mut at = 0;
    while let Some(i) = memchr::memmem::find(&data[at..], b"abcd.txt") {
        data[at + i..at + i + sjis.len()].copy_from_slice(&sjis);
        at += i + sjis.len();
    }
    let l = list_default(&data, "sjis.zip");
    assert_eq!(paths(&l), ["秘密.txt"]);
}

fn zeros(s: &Scratch, name: &str, mib: usize) {
    let f = std::fs::File::create(s.path(name)).expect("create");
    f.set_len((mib as u64) << 20).expect("set_len");
}

#[test]
fn a_single_member_bomb_stops_at_the_expanded_bound() {
    let s = Scratch::new();
    zeros(&s, "zeros.bin", 64);
    s.run("zip", &["-q", "-9", "bomb.zip", "zeros.bin"]);
    s.run("7z", &["a", "-bd", "bomb.7z", "zeros.bin"]);
    s.run("gzip", &["-k", "zeros.bin"]);
    s.run("tar", &["-czf", "bomb.tgz", "zeros.bin"]);
    let limits = ArchiveLimits {
        max_expanded_bytes: 8 << 20,
        ..ArchiveLimits::default()
    };
    for file in ["bomb.zip", "bomb.7z", "zeros.bin.gz", "bomb.tgz"] {
        let data = s.read(file);
        assert!(
            data.len() < 1 << 20,
            "{file} is a bomb: {} bytes",
            data.len()
        );
        let l = list(&data, file, &limits).expect(file);
        assert!(l.is_bounded(), "{file}: {l:?}");
        assert!(l.status.contains("8 MiB expanded"), "{file}: {}", l.status);
        let m = member(&l, "zeros.bin");
        assert!(m.sha256.is_empty(), "{file}: {m:?}");
        assert!(m.status.contains("bound"), "{file}: {m:?}");
    }
}

#[test]
fn nested_bombs_stop_at_depth_and_member_bounds() {
    let s = Scratch::new();
    s.write("leaf.txt", REPORT);
    // 6 levels, each holding the previous one twice (as 42.zip holds 16).
    s.run("zip", &["-q", "l0.zip", "leaf.txt"]);
    for level in 1..=6 {
        let prev = format!("l{}.zip", level - 1);
        std::fs::copy(s.path(&prev), s.path(&format!("b{}.zip", level - 1))).expect("copy");
        let b = format!("b{}.zip", level - 1);
        s.run("zip", &["-q", &format!("l{level}.zip"), &prev, &b]);
    }
    let data = s.read("l6.zip");
    let l = list_default(&data, "l6.zip");
    assert!(l.is_bounded(), "{l:?}");
    assert!(l.status.contains("nested deeper than 4"), "{}", l.status);
    assert!(l.members.iter().all(|m| m.depth <= 4));
    assert_eq!(l.members.iter().filter(|m| m.depth == 4).count(), 16);
    let limits = ArchiveLimits {
        max_members: 10,
        ..ArchiveLimits::default()
    };
    let l = list(&data, "l6.zip", &limits).expect("zip");
    assert_eq!(l.members.len(), 10);
    assert!(l.status.contains("10 members listed"), "{}", l.status);
    let limits = ArchiveLimits {
        max_millis: 0,
        ..ArchiveLimits::default()
    };
    let l = list(&data, "l6.zip", &limits).expect("zip");
    assert!(l.status.contains("0 ms spent"), "{}", l.status);
    assert!(l.members.is_empty());
}

#[test]
fn limits_config_has_defaults_and_refuses_unknown_keys() {
    let l: ArchiveLimits = toml::from_str("max_depth = 2").expect("toml");
    assert_eq!((l.max_depth, l.max_members), (2, 20_000));
    assert!(toml::from_str::<ArchiveLimits>("depth = 2").is_err());
    let _ = Path::new("");
}

/// Review finding 3: the `tar` crate reads a GNU long-name (`L`) entry
/// whole into memory, as large as its header says; a `.tar.gz` whose `L`
/// entry declares 1 GiB made each worker hold up to the expanded bound.
/// Made by hand: a GNU header of type `L` declaring 1 GiB, then 4 MiB of
/// name bytes (all the test needs to pass the bound), gzipped.
#[test]
fn a_tar_long_name_entry_declaring_a_gibibyte_is_bounded() {
    use std::io::Write;
    let mut long = tar::Header::new_gnu();
    long.set_entry_type(tar::EntryType::GNULongName);
    long.as_gnu_mut().expect("gnu").name[..13].copy_from_slice(b"././@LongLink");
    long.set_size(1 << 30);
    long.set_mode(0o644);
    long.set_cksum();
    let mut plain = long.as_bytes().to_vec();
    plain.resize(plain.len() + (4 << 20), b'a');
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain).expect("gzip");
    let data = gz.finish().expect("gzip");
    let l = list_default(&data, "evil.tar.gz");
    assert_eq!(l.container, "tar");
    assert!(l.members.is_empty(), "{l:?}");
    assert!(l.is_bounded(), "{l:?}");
    assert!(
        l.status.contains("tar header or extension data over 1 MiB"),
        "{}",
        l.status
    );
    // A tar with a real long name (GNU tar writes `L` entries for names
    // over 100 bytes) and a directory is still listed.
    let s = Scratch::new();
    let deep = format!("{}/report.txt", "d".repeat(150));
    s.write(&deep, REPORT);
    s.run("tar", &["--format=gnu", "-czf", "long.tgz", &deep]);
    let l = list_default(&s.read("long.tgz"), "long.tgz");
    assert_eq!(l.status, "");
    assert_eq!(paths(&l), [deep.as_str()]);
    assert_eq!(member(&l, &deep).sha256, sha(REPORT));
}
