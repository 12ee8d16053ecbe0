//! Attachment text, end to end: mails carrying a PDF (reportlab and
//! LibreOffice), DOCX, XLSX, PPTX, legacy XLS (the committed documents of
//! tests/fixtures/documents/, made by tests/data/make_documents.py), a
//! plain-text attachment in undeclared Shift_JIS and a corrupt PDF go
//! through the real agent to the collector. Each mail is searchable by its
//! metadata at once; once the collector's analysis has read the
//! attachments (asynchronously, polled with a deadline) each is found by
//! `--attachment-text 社外秘`, by an English word only its document holds,
//! and by `--text`. The corrupt PDF is recorded as unreadable (its
//! annotation and the `attachment-text-unreadable` tag) and its mail is
//! still recorded and searchable.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use base64::Engine;
use kiroku_proto::{Event, GetAnnotationsRequest, SearchRequest};
use kiroku_tests::{Env, Mode, Upstream, email, free_port, send_mail};

/// (file, declared Content-Type, a word only that document holds).
const DOCUMENTS: &[(&str, &str, &str)] = &[
    ("report.pdf", "application/pdf", "aubergine"),
    ("report-libreoffice.pdf", "application/pdf", "quince"),
    (
        "report.docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "bergamot",
    ),
    (
        "report.xlsx",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "cardamom",
    ),
    (
        "report.pptx",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "damson",
    ),
    // As many mailers send it: no specific type.
    ("report.xls", "application/octet-stream", "elderflower"),
    // No charset declared: the collector detects Shift_JIS.
    ("memo-sjis.txt", "text/plain", "fennel"),
];

const CORRUPT: &str = "corrupt.pdf";
const SENDER: &str = "keiri@example.jp";

fn fixture(name: &str) -> anyhow::Result<Vec<u8>> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/documents")
        .join(name);
    std::fs::read(&p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
}

/// A mail with a short body (none of the documents' words) and one
/// base64 attachment.
fn mail(subject: &str, name: &str, ctype: &str, data: &[u8]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
    let mut lines = String::new();
    for chunk in b64.as_bytes().chunks(76) {
        lines.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        lines.push_str("\r\n");
    }
    format!(
        "From: {SENDER}\r\nTo: boss@example.com\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@example.jp>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nPlease see the file.\r\n\
         --b1\r\nContent-Type: {ctype}; name=\"{name}\"\r\n\
         Content-Disposition: attachment; filename=\"{name}\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{lines}--b1--\r\n"
    )
    .into_bytes()
}

fn subjects(events: &[Event]) -> BTreeSet<String> {
    events.iter().map(|e| email(e).subject.clone()).collect()
}

fn request(f: impl FnOnce(&mut SearchRequest)) -> SearchRequest {
    let mut r = SearchRequest {
        page_size: 100,
        ..Default::default()
    };
    f(&mut r);
    r
}

#[tokio::test(flavor = "multi_thread")]
async fn attachment_text_is_found_by_attachment_text_and_text() -> anyhow::Result<()> {
    let env = Env::new()?;
    let _collector = env.start_collector()?;
    let upstream = Upstream::start(&env)?;
    let smtp = free_port();
    let _agent = env.start_agent("pc-keiri", smtp, &Mode::Relay(upstream.port))?;

    let mut all = BTreeSet::new();
    for (name, ctype, _) in DOCUMENTS.iter().chain([&(CORRUPT, "application/pdf", "")]) {
        let subject = format!("doc-{}", name.replace('.', "-"));
        let sent = send_mail(
            smtp,
            SENDER,
            &["boss@example.com"],
            &mail(&subject, name, ctype, &fixture(name)?),
        )?;
        assert_eq!(sent.code, 250, "{name}: {}", sent.reply);
        all.insert(subject);
    }
    // Searchable by metadata at once (the text comes later).
    let by_sender = request(|r| r.sender = SENDER.into());
    let events = env
        .wait_for(by_sender, all.len(), Duration::from_secs(30))
        .await?;
    assert_eq!(subjects(&events), all);

    // The text, once the analysis has read every attachment: polled with a
    // deadline (extraction is asynchronous).
    let with_text: BTreeSet<String> = all
        .iter()
        .filter(|s| !s.contains("corrupt"))
        .cloned()
        .collect();
    let by_word = request(|r| r.attachment_text = "社外秘".into());
    let deadline = Instant::now() + Duration::from_secs(60);
    let found = loop {
        let found = subjects(&env.search_all(by_word.clone()).await?);
        if found == with_text || Instant::now() > deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(found, with_text, "--attachment-text 社外秘");

    // Each document by the word only it holds, alone and in --text; the
    // Japanese phrase and the English one too.
    for (name, _, word) in DOCUMENTS {
        let want = BTreeSet::from([format!("doc-{}", name.replace('.', "-"))]);
        for r in [
            request(|r| r.attachment_text = (*word).into()),
            request(|r| r.text = (*word).into()),
        ] {
            assert_eq!(subjects(&env.search_all(r.clone()).await?), want, "{r:?}");
        }
    }
    for r in [
        request(|r| r.text = "社外秘".into()),
        request(|r| r.text = "売上報告".into()),
        request(|r| r.attachment_text = "\"confidential quarterly forecast\"".into()),
    ] {
        assert_eq!(
            subjects(&env.search_all(r.clone()).await?),
            with_text,
            "{r:?}"
        );
    }
    // Not subject or body: the filter reads attachment text only.
    let body = request(|r| r.attachment_text = "Please".into());
    assert!(env.search_all(body).await?.is_empty());

    // The CLI: --attachment-text and --text.
    let out = env.cli(&["search", "--attachment-text", "社外秘", "--json"])?;
    assert_eq!(out.lines().count(), with_text.len(), "{out}");
    let out = env.cli(&["search", "--text", "cardamom", "--json"])?;
    assert!(
        out.lines().count() == 1 && out.contains("doc-report-xlsx"),
        "{out}"
    );

    // The corrupt PDF: recorded, searchable, its text unreadable.
    let corrupt = request(|r| r.subject = "doc-corrupt-pdf".into());
    let events = env.search_all(corrupt).await?;
    assert_eq!(events.len(), 1);
    let a = env
        .investigator()
        .await?
        .get_annotations(GetAnnotationsRequest {
            event_id: events[0].event_id.clone(),
        })
        .await?
        .into_inner();
    let pdf = a
        .attachments
        .iter()
        .find(|x| x.name == CORRUPT)
        .ok_or_else(|| anyhow::anyhow!("no analysis of {CORRUPT}: {a:?}"))?;
    assert!(pdf.text_status.starts_with("unreadable: "), "{pdf:?}");
    let tagged = request(|r| r.tag = "attachment-text-unreadable".into());
    assert_eq!(
        subjects(&env.search_all(tagged).await?),
        BTreeSet::from(["doc-corrupt-pdf".to_owned()])
    );
    // And a readable one says so, with the size of the text kept.
    let events = env
        .search_all(request(|r| r.subject = "doc-report-docx".into()))
        .await?;
    let a = env
        .investigator()
        .await?
        .get_annotations(GetAnnotationsRequest {
            event_id: events[0].event_id.clone(),
        })
        .await?
        .into_inner();
    assert!(
        a.attachments
            .iter()
            .any(|x| x.text_status == "extracted" && x.text_bytes > 0),
        "{a:?}"
    );
    Ok(())
}
