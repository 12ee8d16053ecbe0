use super::*;

/// Walks `raw`, wanting every leaf; returns the walk and each leaf's
/// decoded bytes.
fn walk_all(raw: &[u8]) -> (Walk, Vec<Vec<u8>>) {
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    let walk = extract_leaf(
        raw,
        |_| true,
        |p, chunk| {
            if bodies.len() <= p.index {
                bodies.resize(p.index + 1, Vec::new());
            }
            bodies[p.index].extend_from_slice(chunk);
        },
    )
    .expect("in memory");
    (walk, bodies)
}

#[test]
fn extract_leaf_streams_decoded_attachment() {
    let raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
Content-Type: text/plain\r\n\r\nhello\r\n--b\r\n\
Content-Type: application/zip\r\nContent-Disposition: attachment; filename=a.zip\r\n\
Content-Transfer-Encoding: base64\r\n\r\nUEsDBA==\r\n--b--\r\n";
    let (walk, bodies) = walk_all(raw);
    assert_eq!(walk.parts.len(), 2);
    assert_eq!(bodies[0], b"hello");
    assert_eq!(bodies[1], b"PK\x03\x04");
    assert_eq!(walk.parts[1].0.filename.as_deref(), Some("a.zip"));
    assert_eq!(walk.parts[1].1.sha256, crate::sha256_hex(b"PK\x03\x04"));
    assert!(walk.warnings.is_empty(), "{:?}", walk.warnings);
}

/// A one-attachment message around `part` (its header lines and body).
fn with_part(part: &str) -> Vec<u8> {
    format!(
        "From: a@example.com\r\nTo: b@example.com\r\nSubject: defect\r\n\
         Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n\
         --B\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n\
         --B\r\n{part}\r\n--B--\r\n"
    )
    .into_bytes()
}

struct Defect {
    what: &'static str,
    raw: Vec<u8>,
    /// Display name, candidates, decoded content, transfer encoding.
    name: &'static str,
    candidates: &'static [&'static str],
    content: &'static [u8],
    encoding: &'static str,
    /// A warning must contain this ("" : none expected).
    warning: &'static str,
}

const UU_TEXT: &[u8] = b"hello uuencoded world, this is a test file!\n";
const UU_LINE: &str = r#"L:&5L;&\@=75E;F-O9&5D('=O<FQD+"!T:&ES(&ES(&$@=&5S="!F:6QE(0H "#;

fn defects() -> Vec<Defect> {
    let zip = b"PK\x03\x04" as &[u8];
    let b64 = |name_hdr: &str, body: &str| {
        with_part(&format!(
            "Content-Type: application/zip\r\n{name_hdr}\r\nContent-Transfer-Encoding: base64\r\n\r\n{body}"
        ))
    };
    vec![
        Defect {
            what: "stray base64 character",
            raw: b64(
                "Content-Disposition: attachment; filename=a.zip",
                "UEs*DBA==",
            ),
            name: "a.zip",
            candidates: &["a.zip"],
            content: zip,
            encoding: "base64",
            warning: "outside the alphabet skipped",
        },
        Defect {
            what: "missing base64 padding",
            raw: b64("Content-Disposition: attachment; filename=a.zip", "UEsDBA"),
            name: "a.zip",
            candidates: &["a.zip"],
            content: zip,
            encoding: "base64",
            warning: "padding missing",
        },
        Defect {
            what: "RFC 2231 with an empty charset",
            raw: b64(
                "Content-Disposition: attachment; filename*=''x.zip",
                "UEsDBA==",
            ),
            name: "x.zip",
            candidates: &["x.zip"],
            content: zip,
            encoding: "base64",
            warning: "",
        },
        Defect {
            what: "RFC 2231 with an empty charset and continuations",
            raw: b64(
                "Content-Disposition: attachment;\r\n filename*0*=''q3-%66orecast;\r\n filename*1=.zip",
                "UEsDBA==",
            ),
            name: "q3-forecast.zip",
            candidates: &["q3-forecast.zip"],
            content: zip,
            encoding: "base64",
            warning: "",
        },
        Defect {
            what: "RFC 2231 with an empty charset and 8-bit octets",
            raw: b64(
                "Content-Disposition: attachment; filename*=''%E5%A3%B2.zip",
                "UEsDBA==",
            ),
            name: "売.zip",
            candidates: &["売.zip"],
            content: zip,
            encoding: "base64",
            warning: "8-bit value without a charset",
        },
        Defect {
            what: "RFC 2231 with an unknown charset",
            raw: b64(
                "Content-Disposition: attachment; filename*=x-unknown'en'r%C3%A9sum%C3%A9.zip",
                "UEsDBA==",
            ),
            name: "résumé.zip",
            candidates: &["résumé.zip"],
            content: zip,
            encoding: "base64",
            warning: "unknown charset",
        },
        Defect {
            what: "RFC 2231 name plus a decoy plain name",
            raw: b64(
                "Content-Disposition: attachment; filename*=UTF-8''q3-forecast.zip; filename=\"holiday.png\"",
                "UEsDBA==",
            ),
            name: "q3-forecast.zip",
            candidates: &["q3-forecast.zip", "holiday.png"],
            content: zip,
            encoding: "base64",
            warning: "",
        },
        Defect {
            what: "decoy Content-Type name",
            raw: with_part(
                "Content-Type: application/pdf; name=\"invoice.pdf\"\r\n\
                 Content-Disposition: attachment; filename=\"payload.zip\"\r\n\
                 Content-Transfer-Encoding: base64\r\n\r\nUEsDBA==",
            ),
            name: "payload.zip",
            candidates: &["payload.zip", "invoice.pdf"],
            content: zip,
            encoding: "base64",
            warning: "",
        },
        Defect {
            what: "bad header line in a part",
            raw: with_part(
                "Content-Type: application/zip\r\nthis line is not a header\r\n\
                 Content-Disposition: attachment; filename=a.zip\r\n\
                 Content-Transfer-Encoding: base64\r\n\r\nUEsDBA==",
            ),
            name: "a.zip",
            candidates: &["a.zip"],
            content: zip,
            encoding: "base64",
            warning: "not a `Name: value` field; skipped",
        },
        Defect {
            what: "x-uuencode part",
            raw: with_part(&format!(
                "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n\
                 begin 644 notes.txt\r\n{UU_LINE}\r\n`\r\nend"
            )),
            name: "notes.txt",
            candidates: &["notes.txt"],
            content: UU_TEXT,
            encoding: "uuencode",
            warning: "",
        },
        Defect {
            what: "x-uuencode part with a decoy name",
            raw: with_part(&format!(
                "Content-Type: application/octet-stream; name=readme.txt\r\nContent-Transfer-Encoding: x-uue\r\n\r\n\
                 begin 644 run.exe\r\n{UU_LINE}\r\n`\r\nend"
            )),
            name: "readme.txt",
            candidates: &["readme.txt", "run.exe"],
            content: UU_TEXT,
            encoding: "uuencode",
            warning: "",
        },
    ]
}

/// One message per defect the issue names: the attachment is found with
/// its display name, every candidate and the SHA-256 of the decoded file;
/// each repair is reported.
#[test]
fn defect_table() {
    for d in defects() {
        let (walk, bodies) = walk_all(&d.raw);
        let files: Vec<&(PartInfo, PartEnd)> =
            walk.parts.iter().filter(|(p, _)| p.is_attachment).collect();
        assert_eq!(files.len(), 1, "{}: {:?}", d.what, walk.parts);
        let (info, end) = files[0];
        assert_eq!(info.filename.as_deref(), Some(d.name), "{}", d.what);
        assert_eq!(info.name_candidates, d.candidates, "{}", d.what);
        assert_eq!(info.transfer_encoding, d.encoding, "{}", d.what);
        assert_eq!(end.sha256, crate::sha256_hex(d.content), "{}", d.what);
        assert_eq!(bodies[info.index], d.content, "{}", d.what);
        if d.warning.is_empty() {
            assert!(walk.warnings.is_empty(), "{}: {:?}", d.what, walk.warnings);
        } else {
            assert!(
                walk.warnings
                    .iter()
                    .any(|w| w.contains(d.warning) && w.contains("part 2")),
                "{}: {:?}",
                d.what,
                walk.warnings
            );
        }
        let subject = headers::first(&walk.top_headers, "Subject").map(Header::text);
        assert_eq!(subject.as_deref(), Some("defect"), "{}", d.what);
        same_in_any_chunks(&d.raw);
    }
}

/// Boundaries in RFC 2231 form or followed by a comment still split the
/// message.
#[test]
fn boundary_forms() {
    for ctype in [
        "multipart/mixed; boundary*=''XX",
        "multipart/mixed; boundary*=us-ascii'en'XX",
        "multipart/mixed; boundary*0*=''X; boundary*1=X",
        "multipart/mixed; boundary=\"XX\" (a comment)",
        "multipart/mixed; boundary=XX(a comment)",
        "multipart/mixed; (comment) boundary=XX",
    ] {
        let raw = format!(
            "Subject: b\r\nContent-Type: {ctype}\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\nbody\r\n\
             --XX\r\nContent-Type: application/zip; name=a.zip\r\nContent-Transfer-Encoding: base64\r\n\r\n\
             UEsDBA==\r\n--XX--\r\n"
        );
        let (walk, bodies) = walk_all(raw.as_bytes());
        assert_eq!(walk.parts.len(), 2, "{ctype}: {:?}", walk.parts);
        assert_eq!(
            walk.parts[1].0.filename.as_deref(),
            Some("a.zip"),
            "{ctype}"
        );
        assert_eq!(bodies[1], b"PK\x03\x04", "{ctype}");
        assert!(
            walk.warnings
                .iter()
                .any(|w| w.contains("RFC 2231 form") || w.contains("comment dropped")),
            "{ctype}: {:?}",
            walk.warnings
        );
        same_in_any_chunks(raw.as_bytes());
    }
}

/// A bad line among the top-level headers loses nothing after it.
#[test]
fn bad_top_level_header_line() {
    let raw = b"From: a@example.com\r\nthis is not a header\r\nTo: b@example.com\r\nSubject: kept\r\n\
Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Disposition: attachment; filename=a.bin\r\n\r\nA\r\n--B--\r\n";
    let (walk, bodies) = walk_all(raw);
    let subject = headers::first(&walk.top_headers, "Subject").map(Header::text);
    assert_eq!(subject.as_deref(), Some("kept"));
    assert!(headers::first(&walk.top_headers, "To").is_some());
    assert_eq!(walk.parts.len(), 1);
    assert_eq!(bodies[0], b"A");
    assert!(walk.warnings[0].contains("skipped"), "{:?}", walk.warnings);
}

/// A `begin 644 name` block inside a text body is a file of its own.
#[test]
fn uuencode_inside_text() {
    let raw = format!(
        "Subject: uu\r\n\r\nHere it is:\r\n\r\nbegin 644 hello.txt\r\n{UU_LINE}\r\n`\r\nend\r\n\r\nbye\r\n"
    );
    let (walk, bodies) = walk_all(raw.as_bytes());
    assert_eq!(walk.parts.len(), 2, "{:?}", walk.parts);
    let (uu, end) = walk
        .parts
        .iter()
        .find(|(p, _)| p.embedded)
        .expect("the uuencoded block");
    assert_eq!(uu.path, "1.u1");
    assert_eq!(uu.filename.as_deref(), Some("hello.txt"));
    assert_eq!(uu.transfer_encoding, "uuencode");
    assert_eq!(end.sha256, crate::sha256_hex(UU_TEXT));
    assert_eq!(bodies[uu.index], UU_TEXT);
    assert!(walk.warnings.iter().any(|w| w.contains("uuencoded file")));
    same_in_any_chunks(raw.as_bytes());
}

/// Address lists with empty elements and comments.
#[test]
fn address_lists() {
    for (value, want, noted) in [
        (", carol@x.example", &["carol@x.example"][..], true),
        (
            "carol@x.example, , dave@y.example,",
            &["carol@x.example", "dave@y.example"],
            true,
        ),
        (
            "(boss) carol@x.example (really)",
            &["carol@x.example"],
            false,
        ),
        (
            "Carol <carol@x.example>, root",
            &["carol@x.example", "root"],
            false,
        ),
    ] {
        let (mut notes, mut errors) = (Vec::new(), Vec::new());
        let got = address::parse(value.as_bytes(), &mut notes, &mut errors);
        assert_eq!(got, want, "{value}");
        assert_eq!(!notes.is_empty(), noted, "{value}: {notes:?}");
    }
}

/// Raw 8-bit octets inside an encoded word are octets of its charset.
#[test]
fn eight_bit_octets_in_encoded_words() {
    for (raw, want) in [
        (&b"=?utf-8?q?caf\xc3\xa9_cr\xc3\xa8me?="[..], "café crème"),
        (b"=?iso-8859-1?q?caf\xe9?=", "café"),
        (b"=?utf-8?b?5aOy5LiK?= \xe5\xa3\xb2", "売上 売"),
    ] {
        let h = Header {
            name: "Subject".into(),
            raw: raw.to_vec(),
        };
        assert_eq!(h.text(), want, "{raw:?}");
    }
}

/// Reads `raw` through a reader that hands out `n` bytes at a time.
struct Trickle<'a> {
    data: &'a [u8],
    n: usize,
}

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.n.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// The walk of `raw` is the same however the input is chunked.
pub(crate) fn same_in_any_chunks(raw: &[u8]) {
    let (want, want_bodies) = walk_all(raw);
    for (cap, n) in [(1, 1), (7, 3), (64, 64), (4096, 1000)] {
        let mut bodies: Vec<Vec<u8>> = Vec::new();
        let r = std::io::BufReader::with_capacity(cap, Trickle { data: raw, n });
        let got = extract_leaf(
            r,
            |_| true,
            |p, chunk| {
                if bodies.len() <= p.index {
                    bodies.resize(p.index + 1, Vec::new());
                }
                bodies[p.index].extend_from_slice(chunk);
            },
        )
        .expect("in memory");
        assert_eq!(got, want, "chunks of {n}");
        assert_eq!(bodies, want_bodies, "chunks of {n}");
    }
}

/// Readings where the walker follows mail clients (and says so in a
/// warning) where Python's `email` reads otherwise.
#[test]
fn client_readings() {
    let pk = b"PK\x03\x04" as &[u8];
    let both = b"PK\x03\x04PK\x03\x04" as &[u8];
    // (what, part headers and body, content, candidates, warning)
    type Case<'a> = (&'a str, &'a str, &'a [u8], &'a [&'a str], &'a str);
    let cases: [Case; 6] = [
        (
            "a second base64 stream after a padding",
            "Content-Disposition: attachment; filename=a.zip\r\nContent-Transfer-Encoding: base64\r\n\r\nUEsDBA==\r\nUEsDBA==",
            both,
            &["a.zip"],
            "second stream",
        ),
        (
            "a signature after the base64 data",
            "Content-Disposition: attachment; filename=a.zip\r\nContent-Transfer-Encoding: base64\r\n\r\nUEsDBA==\r\n-- \r\nsent from my phone",
            pk,
            &["a.zip"],
            "text after the data ignored",
        ),
        (
            "Content-Transfer-Encoding with a parameter",
            "Content-Disposition: attachment; filename=a.zip\r\nContent-Transfer-Encoding: base64; x=y\r\n\r\nUEsDBA==",
            pk,
            &["a.zip"],
            "read as \"base64\"",
        ),
        (
            "Content-Transfer-Encoding with a comment",
            "Content-Disposition: attachment; filename=a.zip\r\nContent-Transfer-Encoding: base64 (y)\r\n\r\nUEsDBA==",
            pk,
            &["a.zip"],
            "read as \"base64\"",
        ),
        (
            "two Content-Disposition fields",
            "Content-Disposition: attachment; filename=a.pdf\r\nContent-Disposition: attachment; filename=a.exe\r\nContent-Transfer-Encoding: base64\r\n\r\nUEsDBA==",
            pk,
            &["a.pdf", "a.exe"],
            "conflicting Content-Disposition",
        ),
        (
            "RFC 2231 sections with a gap",
            "Content-Disposition: attachment; filename*0=\"gap-\"; filename*2=\"x.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nUEsDBA==",
            pk,
            &["gap-"],
            "after the gap dropped",
        ),
    ];
    for (what, part, content, candidates, warning) in cases {
        // No line break after the closing boundary: it still closes.
        let raw = format!(
            "Subject: c\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n{part}\r\n--B--"
        );
        let (walk, bodies) = walk_all(raw.as_bytes());
        assert_eq!(walk.parts.len(), 1, "{what}: {:?}", walk.parts);
        let (info, end) = &walk.parts[0];
        assert_eq!(bodies[0], content, "{what}");
        assert_eq!(end.sha256, crate::sha256_hex(content), "{what}");
        assert_eq!(info.name_candidates, candidates, "{what}");
        assert!(
            walk.warnings.iter().any(|w| w.contains(warning)),
            "{what}: {:?}",
            walk.warnings
        );
        assert!(
            !walk
                .warnings
                .iter()
                .any(|w| w.contains("no closing boundary")),
            "{what}: {:?}",
            walk.warnings
        );
        same_in_any_chunks(raw.as_bytes());
    }
}

/// The base64 decoder gives the same bytes whatever the pieces it is fed,
/// with stray characters anywhere (its fast path and byte path agree).
#[test]
fn base64_pieces_agree() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..200 {
        let len = (next() % 300) as usize;
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let mut text: Vec<u8> = Vec::new();
        for (i, c) in data_encoding::BASE64.encode(&data).bytes().enumerate() {
            if i % 76 == 0 && i > 0 {
                text.extend_from_slice(b"\r\n");
            }
            if next() % 40 == 0 {
                text.push(b"*!\x00~"[(next() % 4) as usize]);
            }
            text.push(c);
        }
        let mut whole = Vec::new();
        let mut notes = Vec::new();
        let mut d = decode::Decoder::new(decode::Kind::Base64);
        d.decode(&text, &mut whole);
        d.finish(&mut whole, &mut notes);
        assert_eq!(whole, data, "round {round}");
        let mut pieces = Vec::new();
        let mut d = decode::Decoder::new(decode::Kind::Base64);
        let mut rest = text.as_slice();
        while !rest.is_empty() {
            let n = ((next() % 9) as usize + 1).min(rest.len());
            d.decode(&rest[..n], &mut pieces);
            rest = &rest[n..];
        }
        d.finish(&mut pieces, &mut Vec::new());
        assert_eq!(pieces, data, "round {round} in pieces");
    }
}

/// Past `max_parts` leaves the rest is skipped, with one warning.
#[test]
fn parts_are_bounded() {
    let mut raw = String::from("Content-Type: multipart/mixed; boundary=B\r\n\r\n");
    for i in 0..5 {
        raw.push_str(&format!(
            "--B\r\nContent-Type: text/plain\r\n\r\nbegin 644 f{i}\r\n$4$L#!```\r\n`\r\nend\r\n"
        ));
    }
    raw.push_str("--B--\r\n");
    struct Count(usize);
    impl Visitor for Count {
        fn part_start(&mut self, _part: &PartInfo) -> bool {
            self.0 += 1;
            true
        }
        fn body(&mut self, _part: &PartInfo, _decoded: &[u8]) {}
        fn part_end(&mut self, _part: &PartInfo, _end: &PartEnd) {}
    }
    let limits = Limits {
        max_parts: 3,
        ..Limits::default()
    };
    let mut count = Count(0);
    let walk = walk_with(raw.as_bytes(), &mut count, limits).expect("in memory");
    assert_eq!(count.0, 3);
    assert_eq!(walk.parts.len(), 3);
    let indices: Vec<usize> = walk.parts.iter().map(|(p, _)| p.index).collect();
    assert_eq!(indices, [0, 1, 2]);
    let over: Vec<&String> = walk
        .warnings
        .iter()
        .filter(|w| w.contains("more than 3 parts"))
        .collect();
    assert_eq!(over.len(), 1, "{:?}", walk.warnings);
    // Unbounded, every text part and its uuencoded file.
    let all = super::walk(raw.as_bytes(), &mut Count(0)).expect("in memory");
    assert_eq!(all.parts.len(), 10);
}

/// Prose that starts a line with "begin 644" is not a file.
#[test]
fn begin_line_without_data_is_prose() {
    let raw = b"Subject: how-to\r\n\r\nTo share a file, type\r\nbegin 644 notes.txt\r\nfollowed by the data.\r\n";
    let (walk, _) = walk_all(raw);
    assert_eq!(walk.parts.len(), 1, "{:?}", walk.parts);
    assert!(walk.warnings.is_empty(), "{:?}", walk.warnings);
}

mod hostile;
