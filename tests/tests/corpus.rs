//! Real-world mail through a real relay, checked against an independent
//! MIME parser (Python's `email` package):
//!
//! - every message of CPython's email test corpus (Debian package
//!   libpython3.11-testsuite: 47 real-world, unusual and malformed mails)
//!   sent with smtplib through the agent to aiosmtpd: delivered and stored
//!   byte-identical, recorded exactly once, no agent crash, and the record's
//!   subject, addresses, body text and attachments (names, types, sizes,
//!   hashes) agree with Python's reading;
//! - Japanese mail in the legacy charsets Japanese clients still send
//!   (ISO-2022-JP, Shift_JIS, EUC-JP, and Windows' CP932) in encoded-word
//!   subjects, text bodies and RFC 2231 / RFC 2047 attachment names:
//!   relayed byte-identical and recorded as the right Unicode text (the
//!   test mails are first checked to read that way in Python too).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use kiroku_proto::{EmailEvent, SearchRequest};
use kiroku_tests::mailcorpus::{
    assert_agent_healthy, crlf, delivered_and_recorded, python, send_batch, write_all,
};
use kiroku_tests::{Env, Mode, Upstream, email, free_port};
use serde_json::Value;

const CORPUS: &str = "/usr/lib/python3.11/test/test_email/data";

/// Whitespace runs as one space, ends trimmed: unfolding keeps the folding
/// white space in some parsers and not in others.
fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Text with LF line ends and no trailing white space, for comparing
/// decoded bodies.
fn text_lines(s: &str) -> String {
    s.replace("\r\n", "\n").trim_end().to_owned()
}

fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array().map(|a| {
        a.iter()
            .map(|s| s.as_str().unwrap_or_default().to_owned())
            .collect()
    })
}

/// Where the record disagrees with Python's reading of the same message:
/// one line per field, empty when they agree. Fields Python cannot read
/// (null) are not compared.
fn disagreements(m: &EmailEvent, py: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(s) = py["subject"].as_str()
        && squash(&m.subject) != squash(s)
    {
        out.push(format!("subject {:?} != Python {s:?}", m.subject));
    }
    for (field, got) in [("from", &m.from), ("to", &m.to), ("cc", &m.cc)] {
        if let Some(want) = strings(&py[field])
            && *got != want
        {
            out.push(format!("{field} {got:?} != Python {want:?}"));
        }
    }
    if let Some(want) = py["body_plain"].as_str()
        && text_lines(&m.body_text) != text_lines(want)
    {
        out.push(format!(
            "body_text {:?} != Python {:?}",
            m.body_text.chars().take(80).collect::<String>(),
            want.chars().take(80).collect::<String>()
        ));
    }
    let want: Vec<&Value> = py["attachments"].as_array().into_iter().flatten().collect();
    let got: Vec<String> = m
        .attachments
        .iter()
        .map(|a| {
            format!(
                "{:?} {} inline={} {} bytes {}",
                a.filename, a.content_type, a.inline, a.size, a.sha256
            )
        })
        .collect();
    let want_s: Vec<String> = want
        .iter()
        .zip(&m.attachments)
        .map(|(w, a)| {
            format!(
                "{:?} {} inline={} {} bytes {}",
                w["filename"].as_str().unwrap_or_default(),
                w["content_type"].as_str().unwrap_or_default(),
                w["inline"].as_bool().unwrap_or_default(),
                // Python does not decode an attached message/rfc822.
                w["size"].as_u64().unwrap_or(a.size),
                w["sha256"].as_str().unwrap_or(&a.sha256),
            )
        })
        .collect();
    if want.len() != m.attachments.len() || got != want_s {
        out.push(format!("attachments {got:?} != Python {want:?}"));
    }
    let not_inline = want
        .iter()
        // The record counts every file but the inline images of an HTML
        // body.
        .filter(|w| {
            w["inline"].as_bool() != Some(true)
                || !w["content_type"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("image/")
        })
        .count();
    if m.attachment_count as usize != not_inline {
        out.push(format!(
            "attachment_count {} != Python {not_inline}",
            m.attachment_count
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn cpython_corpus_relayed_identical_and_recorded_as_python_reads_it() -> anyhow::Result<()> {
    if !Path::new(CORPUS).is_dir() {
        kiroku_tests::skip(
            "corpus::cpython_corpus_relayed_identical_and_recorded_as_python_reads_it",
            "no CPython email test data (Debian package libpython3.11-testsuite)",
        );
        return Ok(());
    }
    let t0 = Instant::now();
    let mut files: Vec<PathBuf> = std::fs::read_dir(CORPUS)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("msg_") && n.ends_with(".txt"))
        })
        .collect();
    files.sort();
    assert!(files.len() >= 40, "corpus has {} messages", files.len());
    let mut sent = Vec::new();
    for f in &files {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        sent.push((name, crlf(&std::fs::read(f)?)));
    }

    let env = Env::new()?;
    let up = Upstream::start(&env)?;
    let _collector = env.start_collector()?;
    let smtp = free_port();
    let mut agent = env.start_agent("pc-corpus-all", smtp, &Mode::Relay(up.port))?;
    let paths = write_all(&env.path().join("sent"), &sent)?;
    send_batch(smtp, &paths)?;
    assert_agent_healthy(&mut agent);

    let events = delivered_and_recorded(&env, &up, "pc-corpus-all", &sent).await?;
    let facts = python("email_facts.py", &paths)?;
    let facts = facts.as_array().cloned().unwrap_or_default();
    assert_eq!(facts.len(), sent.len());
    let mut differ: Vec<(String, String)> = Vec::new();
    let (mut subjects, mut senders, mut with_attachments, mut bodies) = (0, 0, 0, 0);
    for (((name, _), e), py) in sent.iter().zip(&events).zip(&facts) {
        let m = email(e);
        let found = disagreements(m, py);
        if found.iter().all(|d| !d.starts_with("subject")) && !m.subject.is_empty() {
            subjects += 1;
        }
        if found.iter().all(|d| !d.starts_with("from")) && !m.from.is_empty() {
            senders += 1;
        }
        if found.iter().all(|d| !d.starts_with("attachment")) && !m.attachments.is_empty() {
            with_attachments += 1;
        }
        if found.iter().all(|d| !d.starts_with("body_text")) && !m.body_text.trim().is_empty() {
            bodies += 1;
        }
        for d in found {
            eprintln!("{name}: {d}");
            let field = d.split(' ').next().unwrap_or_default().to_owned();
            differ.push((name.clone(), field));
        }
    }
    eprintln!(
        "agree with Python: {subjects} subjects, {senders} senders, {bodies} bodies, \
         {with_attachments} messages with attachments"
    );
    // Where the record and Python part ways, and why that is not (or not
    // yet) the record's fault. Anything else is a regression; an entry
    // that no longer differs must be dropped from here.
    let known: Vec<(String, String)> = [
        // The inner multipart reuses the outer boundary and closes first;
        // the outer boundary then opens a part holding a GIF. Python's
        // `email` loses that part; the record keeps it (a hidden file is
        // what the lenient walker is for).
        ("msg_15.txt", "attachments"),
        ("msg_15.txt", "attachment_count"),
        // Repeated boundary lines make empty parts: the walker counts them
        // in its part numbers, Python drops them, so the three unnamed
        // text/x-* files are part-1, part-3, part-7 here and part-1,
        // part-2, part-3 there (same files, same hashes).
        ("msg_37.txt", "attachments"),
        // Inner multiparts reuse the enclosing boundary: the walker finds
        // all six unnamed patch parts (patch1..patch6), Python two.
        ("msg_39.txt", "attachments"),
        ("msg_39.txt", "attachment_count"),
        // `From: MAILER DAEMON <>`: Python shows the null address as "<>",
        // the record has no address.
        ("msg_43.txt", "from"),
    ]
    .iter()
    .map(|(f, d)| (f.to_string(), d.to_string()))
    .collect();
    assert_eq!(differ, known, "record vs Python's email package");
    assert!(
        subjects >= 30 && senders >= 30 && bodies >= 20 && with_attachments >= 5,
        "sample too small"
    );
    assert_agent_healthy(&mut agent);
    eprintln!(
        "{} corpus messages relayed and checked in {} ms",
        sent.len(),
        t0.elapsed().as_millis()
    );
    Ok(())
}

/// Texts encoded by Python's codecs, asked for once up front.
struct Encoded(HashMap<(String, String), Vec<u8>>);

impl Encoded {
    fn new(pairs: &[(&str, &str)]) -> anyhow::Result<Encoded> {
        let args: Vec<String> = pairs
            .iter()
            .flat_map(|(codec, text)| [codec.to_string(), text.to_string()])
            .collect();
        let hexes = python("encode_text.py", &args)?;
        let mut map = HashMap::new();
        for ((codec, text), h) in pairs.iter().zip(hexes.as_array().into_iter().flatten()) {
            let bytes = hex::decode(h.as_str().unwrap_or_default())?;
            map.insert((codec.to_string(), text.to_string()), bytes);
        }
        anyhow::ensure!(map.len() == pairs.len(), "encode_text.py: {hexes}");
        Ok(Encoded(map))
    }

    fn get(&self, codec: &str, text: &str) -> &[u8] {
        self.0
            .get(&(codec.to_owned(), text.to_owned()))
            .map(Vec::as_slice)
            .unwrap_or_else(|| panic!("{text:?} in {codec} was not encoded up front"))
    }
}

fn b64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Base64 body lines of 76 characters.
fn b64_lines(data: &[u8]) -> String {
    b64(data)
        .as_bytes()
        .chunks(76)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// RFC 2047 encoded-words.
fn b_word(charset: &str, bytes: &[u8]) -> String {
    format!("=?{charset}?B?{}?=", b64(bytes))
}

fn q_word(charset: &str, bytes: &[u8]) -> String {
    let mut s = format!("=?{charset}?Q?");
    for &b in bytes {
        match b {
            b' ' => s.push('_'),
            b if b.is_ascii_alphanumeric() => s.push(char::from(b)),
            b => s.push_str(&format!("={b:02X}")),
        }
    }
    s + "?="
}

/// RFC 2231 percent-encoding of a parameter value's octets.
fn pct(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            b if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) => {
                char::from(b).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// Quoted-printable (RFC 2045 6.7) of CRLF-separated lines.
fn qp(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if i > 0 {
            out.push_str("\r\n");
        }
        let mut width = 0;
        for (j, &b) in line.iter().enumerate() {
            let last = j + 1 == line.len();
            let lit = (b'!'..=b'~').contains(&b) && b != b'=' || (b == b' ' && !last);
            let enc = if lit {
                char::from(b).to_string()
            } else {
                format!("={b:02X}")
            };
            if width + enc.len() > 75 {
                out.push_str("=\r\n");
                width = 0;
            }
            width += enc.len();
            out.push_str(&enc);
        }
    }
    out
}

/// What the record of one Japanese mail must say.
struct Want {
    name: &'static str,
    subject: &'static str,
    from: &'static str,
    to: &'static str,
    body: &'static str,
    /// (file name, decoded content, inline)
    attachments: Vec<(&'static str, Vec<u8>, bool)>,
    raw: Vec<u8>,
}

// The texts, with characters that the three charsets and both decoders
// (Python's codecs, the WHATWG tables behind mailparse) map alike: no wave
// dash or full-width minus, whose mappings famously differ.
const JIS_SUBJECT_1: &str = "第3四半期の売上報告と";
const JIS_SUBJECT_2: &str = "来期予算について（至急）";
const JIS_BODY: &str = "佐藤様\r\n\r\nお世話になっております。山田です。\r\n第3四半期の売上報告書を添付いたします。\r\nご確認のほど、よろしくお願いいたします。\r\n";
const JIS_FILE: &str = "第3四半期売上報告.xlsx";
const YAMADA: &str = "山田 太郎";
const SATO: &str = "佐藤 花子";
// Shift_JIS: 表 ソ 十 能 予 have 0x5C ('\') as second byte.
const SJIS_SUBJECT: &str = "予定表ソフトの件";
const SJIS_BODY: &str =
    "表計算ソフトの予定表を送ります。\r\n.十能ソ表 (dot-stuffed line)\r\n以上です。\r\n";
const SJIS_FILE: &str = "予定表.pdf";
const LONG_FILE: &str = "議事録_2024年度_最終版.docx";
const EUC_SUBJECT: &str = "売上 報告";
const EUC_BODY: &str = "売上報告です。ﾃｽﾄ (半角カナ)\r\n計算式: 10=10, 合計=20\r\n";
const EUC_FILE: &str = "見積書.pdf";
const EUC_NAME_ONLY: &str = "請求書.pdf";
// Windows: CP932 (Shift_JIS with NEC and IBM extensions such as ① ㈱ 髙)
// under its Microsoft name, and a UTF-8 subject cut inside a character
// between two encoded-words (RFC 2047 5 forbids it; mailers do it).
const CP932_WORD: &str = "①表";
const SPLIT_WORDS: &str = "日本語の件名";
const CP932_BODY: &str = "①②③ ㈱髙橋製作所 御中\r\n表ソ十能予\r\n";
const CP932_FILE: &str = "①見積.pdf";
const CP932_NAME_ONLY: &str = "請求書②.pdf";

fn japanese_mails() -> anyhow::Result<Vec<Want>> {
    let enc = Encoded::new(&[
        ("iso2022_jp", JIS_SUBJECT_1),
        ("iso2022_jp", JIS_SUBJECT_2),
        ("iso2022_jp", JIS_BODY),
        ("iso2022_jp", JIS_FILE),
        ("iso2022_jp", YAMADA),
        ("iso2022_jp", SATO),
        ("shift_jis", SJIS_SUBJECT),
        ("shift_jis", SJIS_BODY),
        ("shift_jis", SJIS_FILE),
        ("utf-8", LONG_FILE),
        ("euc_jp", EUC_SUBJECT),
        ("euc_jp", EUC_BODY),
        ("euc_jp", EUC_FILE),
        ("euc_jp", EUC_NAME_ONLY),
        ("utf-8", EUC_FILE),
        ("cp932", CP932_WORD),
        ("utf-8", SPLIT_WORDS),
        ("cp932", CP932_BODY),
        ("cp932", CP932_FILE),
        ("cp932", CP932_NAME_ONLY),
    ])?;
    let xlsx: Vec<u8> = b"PK\x03\x04 quarterly sheet ".repeat(40);
    let pdf: Vec<u8> = (0..3000u32).map(|i| (i * 31 % 256) as u8).collect();
    let docx: Vec<u8> = b"PK\x03\x04 minutes ".repeat(25);
    let quote: Vec<u8> = b"%PDF-1.4 quote".to_vec();
    let invoice: Vec<u8> = b"%PDF-1.4 invoice".to_vec();

    // ISO-2022-JP, 7bit, as Japanese mail clients have sent it for
    // decades: the subject in two self-contained encoded-words on two
    // lines after an ASCII "Re:", an RFC 2231 ISO-2022-JP file name.
    let mut jis = format!(
        "From: {} <yamada@example.jp>\r\n\
To: {} <sato@example.co.jp>\r\n\
Subject: Re: {}\r\n {}\r\n\
Date: Tue, 1 Oct 2024 10:00:00 +0900\r\n\
Message-ID: <jp-iso2022@example.jp>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"jis-boundary\"\r\n\
\r\n\
--jis-boundary\r\n\
Content-Type: text/plain; charset=ISO-2022-JP\r\n\
Content-Transfer-Encoding: 7bit\r\n\
\r\n",
        b_word("ISO-2022-JP", enc.get("iso2022_jp", YAMADA)),
        b_word("ISO-2022-JP", enc.get("iso2022_jp", SATO)),
        b_word("ISO-2022-JP", enc.get("iso2022_jp", JIS_SUBJECT_1)),
        b_word("ISO-2022-JP", enc.get("iso2022_jp", JIS_SUBJECT_2)),
    )
    .into_bytes();
    jis.extend_from_slice(enc.get("iso2022_jp", JIS_BODY));
    jis.extend_from_slice(
        format!(
            "--jis-boundary\r\n\
Content-Type: application/vnd.openxmlformats-officedocument.spreadsheetml.sheet\r\n\
Content-Disposition: attachment;\r\n filename*=ISO-2022-JP''{}\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
{}\r\n\
--jis-boundary--\r\n",
            pct(enc.get("iso2022_jp", JIS_FILE)),
            b64_lines(&xlsx)
        )
        .as_bytes(),
    );

    // Shift_JIS, 8bit body with 0x5C second bytes and a line that starts
    // with a dot; an RFC 2231 Shift_JIS file name, and a long UTF-8 one in
    // two continuations split inside a character (RFC 2231 3).
    let long = pct(enc.get("utf-8", LONG_FILE));
    let (long0, long1) = long.split_at(12); // 議 is 3 octets: cut after 議 and one octet of 事
    let mut sjis = format!(
        "From: suzuki@example.jp\r\n\
To: tanaka@example.jp\r\n\
Subject: {}\r\n\
Date: Wed, 2 Oct 2024 11:00:00 +0900\r\n\
Message-ID: <jp-sjis@example.jp>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"sjis-boundary\"\r\n\
\r\n\
--sjis-boundary\r\n\
Content-Type: text/plain; charset=Shift_JIS\r\n\
Content-Transfer-Encoding: 8bit\r\n\
\r\n",
        b_word("Shift_JIS", enc.get("shift_jis", SJIS_SUBJECT)),
    )
    .into_bytes();
    sjis.extend_from_slice(enc.get("shift_jis", SJIS_BODY));
    sjis.extend_from_slice(
        format!(
            "--sjis-boundary\r\n\
Content-Type: application/pdf\r\n\
Content-Disposition: attachment; filename*=Shift_JIS''{}\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
{}\r\n\
--sjis-boundary\r\n\
Content-Type: application/vnd.openxmlformats-officedocument.wordprocessingml.document\r\n\
Content-Disposition: attachment;\r\n filename*0*=UTF-8''{long0};\r\n filename*1*={long1}\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
{}\r\n\
--sjis-boundary--\r\n",
            pct(enc.get("shift_jis", SJIS_FILE)),
            b64_lines(&pdf),
            b64_lines(&docx),
        )
        .as_bytes(),
    );

    // EUC-JP: a Q-encoded subject followed by ASCII, a quoted-printable
    // body with half-width katakana (EUC-JP SS2) and '=' signs; a file
    // named both ways (RFC 2231 UTF-8 wins over the RFC 2047 name), and
    // one named only by an RFC 2047 Content-Type name, without
    // Content-Disposition (an attachment all the same).
    let euc = format!(
        "From: kato@example.jp\r\n\
To: ito@example.jp\r\n\
Subject: {} (2024)\r\n\
Date: Thu, 3 Oct 2024 12:00:00 +0900\r\n\
Message-ID: <jp-eucjp@example.jp>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"euc-boundary\"\r\n\
\r\n\
--euc-boundary\r\n\
Content-Type: text/plain; charset=EUC-JP\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
{}\r\n\
--euc-boundary\r\n\
Content-Type: application/pdf; name=\"{}\"\r\n\
Content-Disposition: attachment; filename*=UTF-8''{}\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
{}\r\n\
--euc-boundary\r\n\
Content-Type: application/pdf; name=\"{}\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
{}\r\n\
--euc-boundary--\r\n",
        q_word("EUC-JP", enc.get("euc_jp", EUC_SUBJECT)),
        qp(enc.get("euc_jp", EUC_BODY)),
        b_word("EUC-JP", enc.get("euc_jp", EUC_FILE)),
        pct(enc.get("utf-8", EUC_FILE)),
        b64_lines(&quote),
        b_word("EUC-JP", enc.get("euc_jp", EUC_NAME_ONLY)),
        b64_lines(&invoice),
    )
    .into_bytes();

    let split = enc.get("utf-8", SPLIT_WORDS);
    let mut cp932 = format!(
        "From: takahashi@example.jp\r\n\
To: kimura@example.jp\r\n\
Subject: {} {}\r\n {}\r\n\
Date: Fri, 4 Oct 2024 13:00:00 +0900\r\n\
Message-ID: <jp-cp932@example.jp>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"cp932-boundary\"\r\n\
\r\n\
--cp932-boundary\r\n\
Content-Type: text/plain; charset=CP932\r\n\
Content-Transfer-Encoding: 8bit\r\n\
\r\n",
        b_word("CP932", enc.get("cp932", CP932_WORD)),
        b_word("UTF-8", &split[..4]), // 日 and one octet of 本
        b_word("UTF-8", &split[4..]),
    )
    .into_bytes();
    cp932.extend_from_slice(enc.get("cp932", CP932_BODY));
    cp932.extend_from_slice(
        format!(
            "--cp932-boundary\r\n\
Content-Type: application/pdf\r\n\
Content-Disposition: attachment; filename*=CP932''{}\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
{}\r\n\
--cp932-boundary\r\n\
Content-Type: application/pdf; name=\"{}\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
{}\r\n\
--cp932-boundary--\r\n",
            pct(enc.get("cp932", CP932_FILE)),
            b64_lines(&quote),
            b_word("CP932", enc.get("cp932", CP932_NAME_ONLY)),
            b64_lines(&invoice),
        )
        .as_bytes(),
    );

    Ok(vec![
        Want {
            name: "iso-2022-jp.eml",
            subject: "Re: 第3四半期の売上報告と来期予算について（至急）",
            from: "yamada@example.jp",
            to: "sato@example.co.jp",
            body: JIS_BODY,
            attachments: vec![(JIS_FILE, xlsx, false)],
            raw: jis,
        },
        Want {
            name: "shift_jis.eml",
            subject: SJIS_SUBJECT,
            from: "suzuki@example.jp",
            to: "tanaka@example.jp",
            body: SJIS_BODY,
            attachments: vec![(SJIS_FILE, pdf, false), (LONG_FILE, docx, false)],
            raw: sjis,
        },
        Want {
            name: "euc-jp.eml",
            subject: "売上 報告 (2024)",
            from: "kato@example.jp",
            to: "ito@example.jp",
            body: EUC_BODY,
            attachments: vec![
                (EUC_FILE, quote.clone(), false),
                (EUC_NAME_ONLY, invoice.clone(), false),
            ],
            raw: euc,
        },
        Want {
            name: "cp932.eml",
            subject: "①表日本語の件名",
            from: "takahashi@example.jp",
            to: "kimura@example.jp",
            body: CP932_BODY,
            attachments: vec![
                (CP932_FILE, quote, false),
                (CP932_NAME_ONLY, invoice, false),
            ],
            raw: cp932,
        },
    ])
}

#[tokio::test(flavor = "multi_thread")]
async fn japanese_legacy_charsets_recorded_as_unicode() -> anyhow::Result<()> {
    let t0 = Instant::now();
    let mails = japanese_mails()?;
    let sent: Vec<(String, Vec<u8>)> = mails
        .iter()
        .map(|w| (w.name.to_owned(), w.raw.clone()))
        .collect();

    let env = Env::new()?;
    let up = Upstream::start(&env)?;
    let _collector = env.start_collector()?;
    let smtp = free_port();
    let mut agent = env.start_agent("pc-corpus-jp", smtp, &Mode::Relay(up.port))?;
    let paths = write_all(&env.path().join("sent"), &sent)?;

    // The test mails themselves are right: Python's email package reads
    // in them what the record must show.
    let facts = python("email_facts.py", &paths)?;
    for (w, py) in mails.iter().zip(facts.as_array().into_iter().flatten()) {
        assert_eq!(py["subject"], w.subject, "{}: fixture subject", w.name);
        assert_eq!(
            text_lines(py["body_plain"].as_str().unwrap_or_default()),
            text_lines(w.body),
            "{}: fixture body",
            w.name
        );
        let names: Vec<&str> = py["attachments"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| a["filename"].as_str().unwrap_or_default())
            .collect();
        let want: Vec<&str> = w.attachments.iter().map(|a| a.0).collect();
        assert_eq!(names, want, "{}: fixture file names", w.name);
    }

    send_batch(smtp, &paths)?;
    assert_agent_healthy(&mut agent);
    let events = delivered_and_recorded(&env, &up, "pc-corpus-jp", &sent).await?;
    for (w, e) in mails.iter().zip(&events) {
        let m = email(e);
        assert_eq!(m.subject, w.subject, "{}", w.name);
        assert_eq!(text_lines(&m.body_text), text_lines(w.body), "{}", w.name);
        assert_eq!(m.from, [w.from], "{}", w.name);
        assert_eq!(m.to, [w.to], "{}", w.name);
        let got: Vec<(&str, u64, &str, bool)> = m
            .attachments
            .iter()
            .map(|a| (a.filename.as_str(), a.size, a.sha256.as_str(), a.inline))
            .collect();
        let hashes: Vec<String> = w
            .attachments
            .iter()
            .map(|a| kiroku_common::sha256_hex(&a.1))
            .collect();
        let want: Vec<(&str, u64, &str, bool)> = w
            .attachments
            .iter()
            .zip(&hashes)
            .map(|(a, h)| (a.0, a.1.len() as u64, h.as_str(), a.2))
            .collect();
        assert_eq!(got, want, "{}: attachments", w.name);
        assert_eq!(m.attachment_count as usize, want.len(), "{}", w.name);
        assert!(
            m.parse_warnings.is_empty(),
            "{}: {:?}",
            w.name,
            m.parse_warnings
        );
    }
    // Found by the decoded names, as an investigator would search.
    let mut q = env.investigator().await?;
    for name in ["第3四半期売上報告", "予定表", "議事録", "請求書②"] {
        let r = q
            .search(SearchRequest {
                attachment_name: name.into(),
                agent_id: "pc-corpus-jp".into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        assert_eq!(r.events.len(), 1, "attachment name {name}");
    }
    assert_agent_healthy(&mut agent);
    eprintln!(
        "Japanese mails relayed and checked in {} ms",
        t0.elapsed().as_millis()
    );
    Ok(())
}
