//! Each reader on real documents (tests/fixtures/documents/, made by
//! tests/data/make_documents.py with python-docx, openpyxl, python-pptx,
//! reportlab and LibreOffice), each charset, and every status. The
//! subprocess itself is tested in collector/tests/extract_text.rs, where
//! the binary exists.

use encoding_rs::{EUC_JP, Encoding, ISO_2022_JP, SHIFT_JIS, UTF_8};

use super::{EXTRACTED, Extracted, Format, NONE, read};

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!("../../../../tests/fixtures/documents/", $name)).as_slice()
    };
}

const JA: &str = "社外秘：第3四半期の売上報告";

/// Reads `data` in this process, as the subprocess does, with the format
/// `extract` would choose.
fn read_as(data: &[u8], name: &str, declared: &str) -> (Option<Format>, Extracted) {
    // As the dispatcher calls it: with the type detected from the bytes.
    let format = Format::of(data, name, declared, crate::analysis::types::detect(data));
    let got = match format {
        Some(f) => read(f, data, super::charset_param(declared), 1 << 20),
        None => Extracted::status(NONE),
    };
    (format, got)
}

#[test]
fn documents_of_each_format() {
    let cases: [(&str, &[u8], Format, &[&str]); 6] = [
        (
            "report.pdf",
            fixture!("report.pdf"),
            Format::Pdf,
            &[
                JA,
                "confidential quarterly forecast",
                "aubergine",
                "2ページ目",
            ],
        ),
        (
            "report-libreoffice.pdf",
            fixture!("report-libreoffice.pdf"),
            Format::Pdf,
            &[
                "社外秘",
                "売上報告",
                "confidential quarterly forecast",
                "quince",
                "取扱注意",
            ],
        ),
        (
            "report.docx",
            fixture!("report.docx"),
            Format::Ooxml,
            // Body, table and header.
            &[
                JA,
                "confidential quarterly forecast (bergamot)",
                "営業部",
                "取扱注意",
            ],
        ),
        (
            "report.xlsx",
            fixture!("report.xlsx"),
            Format::Ooxml,
            // Both sheets, their names, words and numbers.
            &[
                JA,
                "confidential quarterly forecast\tcardamom",
                "売上",
                "予算",
                "1234567",
            ],
        ),
        (
            "report.pptx",
            fixture!("report.pptx"),
            Format::Ooxml,
            // Both slides and the speaker notes.
            &[
                JA,
                "confidential quarterly forecast (damson)",
                "来期予算",
                "発表者メモ",
            ],
        ),
        (
            "report.xls",
            fixture!("report.xls"),
            Format::Xls,
            &[
                JA,
                "confidential quarterly forecast\telderflower",
                "予算",
                "1234567",
            ],
        ),
    ];
    for (name, data, format, words) in cases {
        // The name says nothing: the bytes decide.
        let (f, got) = read_as(data, "attachment.bin", "application/octet-stream");
        let f = if format == Format::Xls {
            // An OLE file is read as a workbook only when it claims to be one.
            let (f, g) = read_as(data, name, "application/octet-stream");
            assert_eq!(g.status, EXTRACTED, "{name}");
            for w in words {
                assert!(g.text.contains(w), "{name}: {w:?} not in {:?}", g.text);
            }
            f
        } else {
            assert_eq!(got.status, EXTRACTED, "{name}: {got:?}");
            for w in words {
                assert!(got.text.contains(w), "{name}: {w:?} not in {:?}", got.text);
            }
            f
        };
        assert_eq!(f, Some(format), "{name}");
    }
}

#[test]
fn plain_text_in_any_charset() {
    let text = "社外秘の売上報告です。半角ｶﾅ、confidential forecast、①②。\n";
    let encode = |e: &'static Encoding| e.encode(text).0.into_owned();
    let mut utf16 = vec![0xff, 0xfe];
    utf16.extend(text.encode_utf16().flat_map(|u| u.to_le_bytes()));
    let cases: [(&str, Vec<u8>, &str); 8] = [
        ("undeclared Shift_JIS", encode(SHIFT_JIS), "text/plain"),
        ("undeclared EUC-JP", encode(EUC_JP), "text/plain"),
        ("undeclared ISO-2022-JP", encode(ISO_2022_JP), "text/plain"),
        (
            "undeclared UTF-8",
            encode(UTF_8),
            "application/octet-stream",
        ),
        ("UTF-16 with BOM", utf16, "text/plain"),
        (
            "declared Shift_JIS",
            encode(SHIFT_JIS),
            "text/plain; charset=\"Shift_JIS\"",
        ),
        (
            "declared ISO-2022-JP",
            encode(ISO_2022_JP),
            "text/plain; charset=iso-2022-jp",
        ),
        // Mislabelled: the bytes are not valid in the declared charset.
        (
            "UTF-8 declared as ASCII",
            encode(UTF_8),
            "text/plain; charset=us-ascii",
        ),
    ];
    for (what, data, declared) in cases {
        let (f, got) = read_as(&data, "memo.txt", declared);
        assert_eq!(f, Some(Format::Plain), "{what}");
        // ISO-2022-JP has no half-width kana: its encoder writes full-width.
        let want = if what.contains("2022") {
            text.replace("ｶﾅ", "カナ")
        } else {
            text.to_owned()
        };
        assert_eq!(
            (got.status.as_str(), got.text.as_str()),
            (EXTRACTED, want.as_str()),
            "{what}"
        );
    }
    // Without a name or a type: text that looks like text.
    let (f, got) = read_as(&encode(SHIFT_JIS), "", "");
    assert_eq!((f, got.text.as_str()), (Some(Format::Plain), text));
    // The committed Shift_JIS memo (CRLF lines, half-width kana).
    let (_, got) = read_as(fixture!("memo-sjis.txt"), "memo-sjis.txt", "text/plain");
    assert!(
        got.text.contains(JA) && got.text.contains("半角ｶﾀｶﾅ"),
        "{got:?}"
    );
}

#[test]
fn html_is_its_text() {
    let html = "<!DOCTYPE html><html><head><meta charset=\"shift_jis\"><title>売上報告</title>\
        <style>p { color: red }</style><script>var secret = 'not text';</script></head>\
        <body><!-- a comment --><p>社外秘&nbsp;&amp;&#x20;<b>confi</b>dential</p>\
        <p>forecast &lt;Q3&gt; &#31038; &unknown;</p></body></html>";
    let (f, got) = read_as(&SHIFT_JIS.encode(html).0, "page.htm", "");
    assert_eq!(f, Some(Format::Html));
    assert_eq!(got.status, EXTRACTED);
    assert_eq!(
        got.text.trim(),
        "売上報告\n社外秘 & confidential\nforecast <Q3> 社 &unknown;"
    );
    // An HTML part in a mail declares its charset on the part.
    let (f, got) = read_as(
        &EUC_JP.encode("<div>社外秘</div>").0,
        "",
        "text/html; charset=euc-jp",
    );
    assert_eq!((f, got.text.trim()), (Some(Format::Html), "社外秘"));
}

/// An `&` followed by multi-byte characters within the 12 bytes where an
/// entity's `;` is looked for: once a panic (a str cut inside a character)
/// that killed an analysis worker. Every offset of a 3-byte character
/// across the cut is tried.
#[test]
fn ampersand_before_multibyte_text() {
    for pad in ["", "x", "xy"] {
        let html = format!("<p>R&D{pad}部門の報告; 社外秘</p>");
        let (f, got) = read_as(html.as_bytes(), "report.html", "text/html; charset=utf-8");
        assert_eq!(f, Some(Format::Html));
        assert_eq!(got.status, EXTRACTED);
        assert_eq!(got.text.trim(), format!("R&D{pad}部門の報告; 社外秘"));
    }
}

#[test]
fn what_has_no_text() {
    let mut zip = Vec::new();
    {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(&mut zip));
        let o = zip::write::SimpleFileOptions::default();
        w.start_file("secret.txt", o).expect("zip");
        std::io::Write::write_all(&mut w, b"inside a zip").expect("zip");
        w.finish().expect("zip");
    }
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01".as_slice();
    let ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1\0\0\0\0".as_slice();
    // (what, data, name, declared type, format, status)
    type Case<'a> = (&'a str, &'a [u8], &'a str, &'a str, Option<Format>, &'a str);
    let mail = b"From: a@example.com\r\nSubject: fwd\r\n\r\nbody\r\n".as_slice();
    let cases: [Case; 6] = [
        (
            "an attached mail",
            mail,
            "fwd.eml",
            "message/rfc822",
            None,
            NONE,
        ),
        ("an image", png, "photo.png", "image/png", None, NONE),
        (
            "an image named .txt",
            png,
            "photo.txt",
            "text/plain",
            None,
            NONE,
        ),
        (
            "an archive",
            &zip,
            "files.zip",
            "application/zip",
            None,
            NONE,
        ),
        (
            "a Word 97 file",
            ole,
            "memo.doc",
            "application/msword",
            None,
            NONE,
        ),
        ("empty", b"", "", "", None, NONE),
    ];
    for (what, data, name, declared, format, status) in cases {
        let (f, got) = read_as(data, name, declared);
        assert_eq!((f, got.status.as_str()), (format, status), "{what}");
        assert_eq!(got.text, "", "{what}");
    }
}

#[test]
fn unreadable_documents_say_why() {
    let docx = fixture!("report.docx");
    let pdf = fixture!("report.pdf");
    let cases: [(&str, &[u8], &str, &str); 6] = [
        ("corrupt PDF", fixture!("corrupt.pdf"), "report.pdf", "PDF"),
        (
            "DOCX with a password",
            fixture!("encrypted.docx"),
            "report.docx",
            "password-protected",
        ),
        ("PDF header only", &pdf[..400], "report.pdf", "PDF"),
        (
            "truncated DOCX",
            &docx[..docx.len() / 2],
            "report.docx",
            "ZIP",
        ),
        (
            "not really an XLS",
            b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1 garbage",
            "book.xls",
            "XLS",
        ),
        (
            "an XLSX whose workbook is broken",
            &broken_xlsx(),
            "book.xlsx",
            "XLSX",
        ),
    ];
    for (what, data, name, why) in cases {
        let (_, got) = read_as(data, name, "application/octet-stream");
        assert!(
            got.status.starts_with("unreadable: ") && got.status.contains(why),
            "{what}: {got:?}"
        );
    }
}

/// A ZIP with an XLSX's parts whose workbook is not XML.
fn broken_xlsx() -> Vec<u8> {
    let mut v = Vec::new();
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(&mut v));
    let o = zip::write::SimpleFileOptions::default();
    for (name, body) in [
        ("[Content_Types].xml", "<Types/>"),
        ("xl/workbook.xml", "<<< not xml"),
    ] {
        w.start_file(name, o).expect("zip");
        std::io::Write::write_all(&mut w, body.as_bytes()).expect("zip");
    }
    w.finish().expect("zip");
    v
}

#[test]
fn text_is_cut_at_its_limit_on_a_character_boundary() {
    let text = "社外秘".repeat(100);
    for max in [0, 1, 2, 3, 4, 10, 299, 300] {
        let got = read(Format::Plain, text.as_bytes(), None, max);
        assert!(got.text.len() <= max && max - got.text.len() < 3, "{max}");
        assert_eq!(got.status, format!("cut at {} bytes", got.text.len()));
    }
    let got = read(Format::Plain, text.as_bytes(), None, 900);
    assert_eq!(got.status, EXTRACTED);
    // A large plain text is decoded only as far as the text kept needs;
    // its cut Shift_JIS character at the end is dropped, not replaced.
    // (One ASCII byte first, so that the cut falls inside a character.)
    let sjis = SHIFT_JIS
        .encode(&format!("a{}", "社外秘".repeat(10_000)))
        .0
        .into_owned();
    let got = read(Format::Plain, &sjis, None, 1000);
    assert_eq!(got.status, format!("cut at {} bytes", got.text.len()));
    assert!(
        got.text.len() <= 1000 && !got.text.contains('\u{fffd}'),
        "{got:?}"
    );
    // Documents too: the reader stops when the text is full.
    let got = read(Format::Ooxml, fixture!("report.docx"), None, 20);
    assert_eq!(got.status, format!("cut at {} bytes", got.text.len()));
}

#[test]
fn limits_are_configured_by_name_and_unknown_keys_refused() {
    let l: super::TextLimits =
        toml::from_str("timeout_secs = 3\nmax_text_bytes = 4096\n").expect("[analysis.text]");
    assert_eq!((l.timeout_secs, l.max_text_bytes), (3, 4096));
    assert_eq!(
        l.max_input_bytes,
        super::TextLimits::default().max_input_bytes
    );
    let e = toml::from_str::<super::TextLimits>("timeout = 3").expect_err("unknown key");
    assert!(e.to_string().contains("timeout"), "{e}");
    let e = toml::from_str::<super::TextLimits>("program = \"/bin/sh\"").expect_err("not a key");
    assert!(e.to_string().contains("program"), "{e}");
}
