//! The collector's analysis of stored mail, end to end through the real
//! agent and collector: a mail carrying a forwarded message (holding a
//! file whose hash is on the sensitive list, inside a second forwarded
//! message), an Outlook winmail.dat and a "report.pdf" that is a ZIP.
//! The annotations list every file inside with its path, the hashes inside
//! are searchable and traced to the mail, the derived tags search, the
//! sensitive_hash rule fires on the nested file, `kiroku show` prints the
//! analysis; and a collector restart keeps it all without redoing it.

use std::time::{Duration, Instant};

use base64::Engine;
use kiroku_proto::{Annotations, GetAnnotationsRequest, SearchRequest};
use kiroku_tests::{Env, Mode, email, free_port, send_mail};

fn b64(data: &[u8]) -> String {
    let s = base64::engine::general_purpose::STANDARD.encode(data);
    s.as_bytes()
        .chunks(76)
        .map(|c| String::from_utf8_lossy(c).into_owned() + "\r\n")
        .collect()
}

fn tnef() -> Vec<u8> {
    std::fs::read(kiroku_tests::data_dir().join("tnef/two-files.tnef")).expect("TNEF sample")
}

const CONTRACT: &[u8] = b"%PDF-1.4\n% the merger contract, strictly confidential\n%%EOF\n";
const FAKE_PDF: &[u8] = b"PK\x03\x04\x14\x00\x00\x00\x00\x00 not a pdf at all";

/// forwarded.eml (Subject "Contract draft") → inner.eml → contract.pdf.
fn mail() -> Vec<u8> {
    let innermost = format!(
        "From: carol@partner.example\r\nSubject: signed copy\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=C\r\n\r\n--C\r\nContent-Type: text/plain\r\n\r\nattached\r\n--C\r\nContent-Type: application/pdf; name=\"contract.pdf\"\r\nContent-Disposition: attachment; filename=\"contract.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}--C--\r\n",
        b64(CONTRACT)
    );
    let forwarded = format!(
        "From: bob@corp.example\r\nSubject: Contract draft\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nsee below\r\n--B\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment; filename=\"inner.eml\"\r\n\r\n{innermost}\r\n--B--\r\n"
    );
    format!(
        "From: alice@corp.example\r\nTo: eve@outside.example\r\nSubject: fyi\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=A\r\n\r\n--A\r\nContent-Type: text/plain\r\n\r\nfor you\r\n--A\r\nContent-Type: message/rfc822; name=\"forwarded.eml\"\r\nContent-Disposition: attachment; filename=\"forwarded.eml\"\r\n\r\n{forwarded}\r\n--A\r\nContent-Type: application/ms-tnef; name=\"winmail.dat\"\r\nContent-Disposition: attachment; filename=\"winmail.dat\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}--A\r\nContent-Type: application/pdf; name=\"report.pdf\"\r\nContent-Disposition: attachment; filename=\"report.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}--A--\r\n",
        b64(&tnef()),
        b64(FAKE_PDF)
    )
    .into_bytes()
}

async fn annotations(env: &Env, id: &str, within: Duration) -> anyhow::Result<Annotations> {
    let deadline = Instant::now() + within;
    loop {
        let a = env
            .investigator()
            .await?
            .get_annotations(GetAnnotationsRequest {
                event_id: id.into(),
            })
            .await?
            .into_inner();
        if a.version > 0 {
            return Ok(a);
        }
        if Instant::now() > deadline {
            anyhow::bail!("no annotations for {id} within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn attached_mail_and_tnef_are_opened_searched_traced_and_alerted_on() -> anyhow::Result<()> {
    let env = Env::new()?;
    let contract_sha = kiroku_common::sha256_hex(CONTRACT);
    std::fs::write(
        env.path().join("rules.toml"),
        format!(
            "[[rule]]\nname = \"secret\"\nkind = \"sensitive_hash\"\nsha256 = [\"{contract_sha}\"]\n"
        ),
    )?;
    let alerts = "[alerts]\nrules = \"rules.toml\"\n";
    let mut collector = env.start_collector_with(alerts)?;
    let smtp = free_port();
    let _agent = env.start_agent("pc-1", smtp, &Mode::CaptureOnly)?;
    let raw = mail();
    let sent = send_mail(smtp, "alice@corp.example", &["eve@outside.example"], &raw)?;
    assert_eq!(sent.code, 250, "{sent:?}");
    let events = env
        .wait_for(
            SearchRequest {
                sender: "alice@corp.example".into(),
                ..Default::default()
            },
            1,
            Duration::from_secs(30),
        )
        .await?;
    let id = events[0].event_id.clone();
    let names: Vec<&str> = email(&events[0])
        .attachments
        .iter()
        .map(|a| a.filename.as_str())
        .collect();
    assert_eq!(names, ["forwarded.eml", "winmail.dat", "report.pdf"]);

    let a = annotations(&env, &id, Duration::from_secs(30)).await?;
    let rows: Vec<(String, String, String)> = a
        .attachments
        .iter()
        .map(|f| (f.path.clone(), f.name.clone(), f.detected_type.clone()))
        .collect();
    let row = |p: &str, n: &str, t: &str| (p.to_owned(), n.to_owned(), t.to_owned());
    assert_eq!(
        rows,
        vec![
            row("", "forwarded.eml", "message/rfc822"),
            row("forwarded.eml", "inner.eml", "message/rfc822"),
            row("forwarded.eml/inner.eml", "contract.pdf", "application/pdf"),
            row("", "winmail.dat", "application/ms-tnef"),
            row("winmail.dat", "AUTHORS", "text/plain"),
            row("winmail.dat", "README", "text/plain"),
            row("", "report.pdf", "application/zip"),
        ],
        "{a:?}"
    );
    assert_eq!(a.attachments[2].sha256, contract_sha);
    assert_eq!(
        a.attachments[6].type_mismatch,
        "name .pdf, content application/zip"
    );
    for tag in ["type-mismatch", "alert:secret"] {
        assert!(a.tags.contains(&tag.to_owned()), "{tag}: {:?}", a.tags);
    }

    // The hashes inside are searchable like attachment hashes, the tags
    // like tags, the names like attachment names.
    let find = |req: SearchRequest| {
        let env = &env;
        async move {
            let found = env.wait_for(req, 1, Duration::from_secs(20)).await?;
            anyhow::Ok(found.iter().map(|e| e.event_id.clone()).collect::<Vec<_>>())
        }
    };
    let authors = a.attachments[4].sha256.clone();
    for req in [
        SearchRequest {
            sha256: contract_sha.clone(),
            ..Default::default()
        },
        SearchRequest {
            sha256: authors,
            ..Default::default()
        },
        SearchRequest {
            tag: "type-mismatch".into(),
            ..Default::default()
        },
        SearchRequest {
            attachment_name: "contract.pdf".into(),
            ..Default::default()
        },
    ] {
        assert_eq!(
            find(req.clone()).await?,
            std::slice::from_ref(&id),
            "{req:?}"
        );
    }

    // Trace finds the mail and says where inside it the file was.
    let trace = env.cli(&["trace", &contract_sha])?;
    assert!(
        trace.contains("inside forwarded.eml/inner.eml/contract.pdf"),
        "{trace}"
    );
    // The alert, logged once, names the path.
    let mut q = env.investigator().await?;
    let mut stream = q
        .alerts(kiroku_proto::AlertsRequest {
            from_ms: 1,
            follow: false,
        })
        .await?
        .into_inner();
    let mut fired = Vec::new();
    while let Some(al) = stream.message().await? {
        fired.push((al.rule, al.event_id, al.summary));
    }
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(
        (fired[0].0.as_str(), fired[0].1.as_str()),
        ("secret", id.as_str())
    );
    assert!(
        fired[0].2.contains("forwarded.eml/inner.eml/contract.pdf"),
        "{fired:?}"
    );
    // `kiroku show` prints the analysis below the event.
    let shown = env.cli(&["show", &id])?;
    for want in [
        "inside: forwarded.eml/inner.eml/contract.pdf",
        "TYPE MISMATCH: name .pdf, content application/zip",
        "derived tags: attachment-text-unreadable, type-mismatch, alert:secret",
    ] {
        assert!(shown.contains(want), "{want:?} missing in\n{shown}");
    }

    let json: serde_json::Value = serde_json::from_str(env.cli(&["show", &id, "--json"])?.trim())?;
    assert_eq!(
        json["annotations"]["attachments"][2]["path"], "forwarded.eml/inner.eml",
        "{json}"
    );
    // A restart keeps the annotations and analyses nothing again (no
    // second alert).
    collector.terminate();
    let _collector = env.start_collector_with(alerts)?;
    let again = annotations(&env, &id, Duration::from_secs(5)).await?;
    assert_eq!(again, a);
    assert_eq!(
        find(SearchRequest {
            sha256: contract_sha,
            ..Default::default()
        })
        .await?,
        [id]
    );
    Ok(())
}

fn tnef_mail(subject: &str) -> Vec<u8> {
    format!(
        "From: alice@corp.example\r\nTo: bob@corp.example\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=A\r\n\r\n--A\r\nContent-Type: text/plain\r\n\r\nfrom Outlook\r\n--A\r\nContent-Type: application/ms-tnef; name=\"winmail.dat\"\r\nContent-Disposition: attachment; filename=\"winmail.dat\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}--A--\r\n",
        b64(&tnef())
    )
    .into_bytes()
}

const PAUSED: (&str, &str) = ("KIROKU_TEST_ANALYSIS_PAUSED", "1");

fn rfc3339(ms: i64) -> anyhow::Result<String> {
    Ok(
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)?
            .format(&time::format_description::well_known::Rfc3339)?,
    )
}

/// Pending analysis survives a kill -9 of the collector (it is queued in
/// the same durable step as the mail), and `kiroku-collector reanalyse`
/// analyses stored mail of a time range, once.
#[tokio::test(flavor = "multi_thread")]
async fn pending_analysis_survives_kill_9_and_reanalyse_applies_it() -> anyhow::Result<()> {
    kiroku_tests::ensure_collector_test_hooks()?;
    let env = Env::new()?;
    let data = std::path::Path::new("collector");
    let mut collector = env.start_collector_on_env(data, &[PAUSED])?;
    let smtp = free_port();
    let _agent = env.start_agent("pc-1", smtp, &Mode::CaptureOnly)?;
    let sent = send_mail(
        smtp,
        "alice@corp.example",
        &["bob@corp.example"],
        &tnef_mail("one"),
    )?;
    assert_eq!(sent.code, 250, "{sent:?}");
    let first = env
        .wait_for(
            SearchRequest {
                subject: "one".into(),
                ..Default::default()
            },
            1,
            Duration::from_secs(30),
        )
        .await?[0]
        .event_id
        .clone();
    let none = env
        .investigator()
        .await?
        .get_annotations(GetAnnotationsRequest {
            event_id: first.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(none.version, 0, "analysis is held back: {none:?}");
    collector.kill9();

    // The restarted collector finds the mail still queued and analyses it.
    let mut collector = env.start_collector_on_env(data, &[])?;
    let a = annotations(&env, &first, Duration::from_secs(30)).await?;
    let inside: Vec<&str> = a.attachments.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(inside, ["winmail.dat", "AUTHORS", "README"]);
    collector.terminate();

    // A second mail stored while analysis is held back, then the
    // collector stopped: reanalyse over the range after the first mail
    // analyses only the second.
    let between = kiroku_common::now_ms();
    let mut collector = env.start_collector_on_env(data, &[PAUSED])?;
    send_mail(
        smtp,
        "alice@corp.example",
        &["bob@corp.example"],
        &tnef_mail("two"),
    )?;
    let second = env
        .wait_for(
            SearchRequest {
                subject: "two".into(),
                ..Default::default()
            },
            1,
            Duration::from_secs(30),
        )
        .await?[0]
        .event_id
        .clone();
    collector.terminate();
    let cfg = env.path().join("collector.toml");
    let reanalyse_with = |from: &str, more: &[&str]| {
        let out = std::process::Command::new(kiroku_tests::bin("kiroku-collector"))
            .arg("--config")
            .arg(&cfg)
            .args(["reanalyse", "--quiet", "--from", from])
            .args(more)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "reanalyse failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        anyhow::Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let reanalyse = |from: &str| reanalyse_with(from, &[]);
    let from = rfc3339(between)?;
    let out = reanalyse(&from)?;
    assert!(
        out.starts_with("reanalysed 1 mails of 1 in the range"),
        "{out}"
    );
    // Idempotent: nothing left to do in the range, nor before it.
    let out = reanalyse("1970-01-01")?;
    assert!(
        out.starts_with("reanalysed 0 mails of 2 in the range"),
        "{out}"
    );
    // --force: every mail in the range again, analysed anew.
    let forced_at = kiroku_common::now_ms();
    let out = reanalyse_with("1970-01-01", &["--force"])?;
    assert!(
        out.starts_with("reanalysed 2 mails of 2 in the range"),
        "{out}"
    );
    // Analysis is still held back in the collector: the annotations are
    // reanalyse's.
    let _collector = env.start_collector_on_env(data, &[PAUSED])?;
    let b = annotations(&env, &second, Duration::from_secs(5)).await?;
    assert_eq!(b.attachments.len(), 3, "{b:?}");
    assert!(
        b.analysed_at_ms >= forced_at,
        "analysed again by --force: {b:?}"
    );
    Ok(())
}

/// A mail with one base64 attachment.
fn one_file_mail(subject: &str, name: &str, ctype: &str, data: &[u8]) -> Vec<u8> {
    format!(
        "From: alice@corp.example\r\nTo: bob@corp.example\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=A\r\n\r\n--A\r\nContent-Type: text/plain\r\n\r\nsee the file\r\n--A\r\nContent-Type: {ctype}; name=\"{name}\"\r\nContent-Disposition: attachment; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}--A--\r\n",
        b64(data)
    )
    .into_bytes()
}

/// A panic in one mail's analysis (forced by a test hook) is recorded in
/// that mail's annotations and the queue goes on: the mails after it are
/// analysed, among them a Japanese HTML attachment (`R&D部門の報告`) whose
/// reading once panicked and killed the worker for good.
#[tokio::test(flavor = "multi_thread")]
async fn a_panic_in_one_mail_does_not_stop_the_analysis_queue() -> anyhow::Result<()> {
    kiroku_tests::ensure_collector_test_hooks()?;
    let env = Env::new()?;
    let hook = ("KIROKU_TEST_ANALYSIS_PANIC", "panic-here");
    let _collector = env.start_collector_on_env(std::path::Path::new("collector"), &[hook])?;
    let smtp = free_port();
    let _agent = env.start_agent("pc-1", smtp, &Mode::CaptureOnly)?;
    let html = "<html><body><p>R&D部門の報告 quarterly zebrafinch</p></body></html>";
    let mails = [
        one_file_mail("first", "panic-here.bin", "application/octet-stream", b"x"),
        one_file_mail(
            "second",
            "report.html",
            "text/html; charset=utf-8",
            html.as_bytes(),
        ),
        one_file_mail("third", "notes.txt", "text/plain", b"plain notes"),
    ];
    for raw in &mails {
        let sent = send_mail(smtp, "alice@corp.example", &["bob@corp.example"], raw)?;
        assert_eq!(sent.code, 250, "{sent:?}");
    }
    let events = env
        .wait_for(
            SearchRequest {
                sender: "alice@corp.example".into(),
                ..Default::default()
            },
            3,
            Duration::from_secs(30),
        )
        .await?;
    let id = |subject: &str| {
        events
            .iter()
            .find(|e| email(e).subject == subject)
            .map(|e| e.event_id.clone())
            .ok_or_else(|| anyhow::anyhow!("no mail {subject:?}"))
    };
    let failed = annotations(&env, &id("first")?, Duration::from_secs(30)).await?;
    assert_eq!(failed.tags, ["analysis-failed"], "{failed:?}");
    assert!(
        failed.attachments[0]
            .text_status
            .starts_with("not analysed: analysis failed: panic: test hook"),
        "{failed:?}"
    );
    let html_a = annotations(&env, &id("second")?, Duration::from_secs(30)).await?;
    assert_eq!(html_a.attachments[0].text_status, "extracted", "{html_a:?}");
    let third = annotations(&env, &id("third")?, Duration::from_secs(30)).await?;
    assert_eq!(third.attachments[0].text_status, "extracted", "{third:?}");
    // The HTML's text is searchable.
    let found = env
        .wait_for(
            SearchRequest {
                attachment_text: "zebrafinch".into(),
                ..Default::default()
            },
            1,
            Duration::from_secs(30),
        )
        .await?;
    assert_eq!(email(&found[0]).subject, "second");
    Ok(())
}
