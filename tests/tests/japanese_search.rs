//! Japanese full-text search, end to end: mail built by Python's `email`
//! package in ISO-2022-JP, Shift_JIS, CP932, EUC-JP and UTF-8 (base64 and
//! quoted-printable bodies and headers, RFC 2231 (also continued) and
//! encoded-word attachment names, Python's own codec names as labels)
//! goes through the real agent to the collector, is
//! decoded to the text that was written, and is found by the substrings
//! an investigator types — over gRPC and with the `kiroku` CLI.
//!
//! Two tables: the queries `tests/data/japanese_mail.py` derives from each
//! mail (windows of 1, 2, 3 and 6 kana/kanji of subject, body and
//! attachment name, each with the mails Python finds it in), and the
//! cases written here (a phrase whose characters are present but not
//! adjacent, full-width/half-width and case variants, the 60-character
//! subject, mixed `Q3売上report`, the query syntax).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use kiroku_proto::SearchRequest;
use kiroku_tests::{Env, Mode, Upstream, data_dir, email, free_port, run_client};
use serde_json::Value;

fn python(script: &str, args: &[String]) -> anyhow::Result<Value> {
    let (ok, out) = run_client(
        Command::new("python3")
            .arg(data_dir().join(script))
            .args(args),
        None,
    )?;
    anyhow::ensure!(ok, "{script} failed: {out}");
    serde_json::from_str(out.trim())
        .map_err(|e| anyhow::anyhow!("{script} printed no JSON ({e}): {out}"))
}

fn request(field: &str, q: &str) -> SearchRequest {
    let mut r = SearchRequest {
        page_size: 100,
        ..Default::default()
    };
    match field {
        "text" => r.text = q.into(),
        "subject" => r.subject = q.into(),
        "attachment" => r.attachment_name = q.into(),
        _ => panic!("unknown field {field} in the test table"),
    }
    r
}

/// Cases written by hand: (field, query, the mails it must find, by name).
const CASES: &[(&str, &str, &str)] = &[
    // Substrings of 1, 2, 3 and 6 characters of the subject.
    ("subject", "至", "iso2022jp-b64 utf8-b64"),
    (
        "subject",
        "売上",
        "iso2022jp-b64 utf8-b64 utf8-qp utf8-apart",
    ),
    ("subject", "見積書", "iso2022jp-qp utf8-b64"),
    ("subject", "売上報告と来", "iso2022jp-b64 utf8-b64"),
    // Characters present but not adjacent (utf8-apart holds 売上 and 報告).
    ("subject", "売上報告", "iso2022jp-b64 utf8-b64"),
    ("text", "売上報告", "iso2022jp-b64 utf8-b64"),
    ("subject", "\"売上 報告\"", "iso2022jp-b64 utf8-b64"),
    ("subject", "件と報告会", "utf8-apart"),
    ("subject", "売上報告会", ""),
    // The whole subjects, as written.
    (
        "subject",
        "第3四半期の売上報告と来期予算について（至急）",
        "iso2022jp-b64",
    ),
    (
        "subject",
        "第3四半期の売上報告と来期予算についての至急のお願いと見積書の送付および会議日程の調整に関するご連絡です皆様よろしく以上",
        "utf8-b64",
    ),
    ("subject", "皆様よろしく以上", "utf8-b64"),
    // Full-width, half-width and case variants find each other.
    ("subject", "カタカナ", "shiftjis-qp"),
    ("subject", "ｶﾀｶﾅ", "shiftjis-qp"),
    ("text", "データベース", "shiftjis-qp"),
    ("text", "ﾃﾞｰﾀﾍﾞｰｽ", "shiftjis-qp"),
    ("attachment", "データ一覧", "shiftjis-qp"),
    ("text", "full-width ascii", "utf8-qp"),
    ("text", "ＭＩＸＥＤ ｃａｓｅ", "utf8-qp"),
    // CP932-only characters: ㈱ folds to (株), ① to 1.
    ("subject", "株", "cp932-b64"),
    ("attachment", "契約書1", "cp932-b64"),
    // Mixed Japanese and English.
    ("subject", "Q3売上report", "utf8-qp"),
    ("subject", "ｑ３売上ＲＥＰＯＲＴ", "utf8-qp"),
    ("attachment", "q3売上report.xlsx", "utf8-qp"),
    ("subject", "Q3売上reports", ""),
    // A subject folded into several encoded-words and a file name in RFC
    // 2231 continuations (Python's EmailMessage).
    ("subject", "アンケート調査へのご協力", "utf8-modern"),
    ("attachment", "参加者アンケート集計結果", "utf8-modern"),
    // Hangul.
    ("text", "한국어", "utf8-b64"),
    // Query syntax: words ANDed, OR, -word, quoted phrases.
    ("subject", "売上 至急", "iso2022jp-b64 utf8-b64"),
    ("subject", "売上　至急", "iso2022jp-b64 utf8-b64"),
    ("subject", "至急 OR 招待", "eucjp-qp iso2022jp-b64 utf8-b64"),
    ("subject", "売上 -至急", "utf8-apart utf8-qp"),
    ("text", "\"障害が発生\"", "eucjp-b64"),
    (
        "attachment",
        "pdf -契約書",
        "cp932-qp eucjp-qp iso2022jp-b64 py-iso2022jp",
    ),
];

#[tokio::test(flavor = "multi_thread")]
async fn japanese_mail_in_five_charsets_is_found_by_what_investigators_type() -> anyhow::Result<()>
{
    let env = Env::new()?;
    let _collector = env.start_collector()?;
    let upstream = Upstream::start(&env)?;
    let smtp = free_port();
    let _agent = env.start_agent("pc-jp", smtp, &Mode::Relay(upstream.port))?;

    let out = env.path().join("mail");
    std::fs::create_dir_all(&out)?;
    let spec = python("japanese_mail.py", &[out.to_string_lossy().into_owned()])?;
    let mails = spec["mails"].as_array().cloned().unwrap_or_default();
    let queries = spec["queries"].as_array().cloned().unwrap_or_default();
    assert!(mails.len() >= 10 && queries.len() >= 100, "{spec}");
    let mut args = vec![
        smtp.to_string(),
        "sender@example.jp".into(),
        "rcpt@example.co.jp".into(),
    ];
    args.extend(
        mails
            .iter()
            .map(|m| m["file"].as_str().unwrap_or("").to_owned()),
    );
    let replies = python("send_batch.py", &args)?;
    let replies = replies.as_array().cloned().unwrap_or_default();
    assert_eq!(replies.len(), mails.len());
    assert!(replies.iter().all(|r| r["code"] == 250), "{replies:?}");

    let events = env
        .wait_for(
            SearchRequest {
                sender: "sender@example.jp".into(),
                ..Default::default()
            },
            mails.len(),
            Duration::from_secs(20),
        )
        .await?;
    // Message-ID → mail name, and each mail decoded to what was written.
    let mut names = BTreeMap::new();
    let mut wrong = Vec::new();
    for m in &mails {
        let name = m["name"].as_str().unwrap_or_default();
        let Some(e) = events
            .iter()
            .find(|e| email(e).message_id == m["message_id"].as_str().unwrap_or_default())
        else {
            wrong.push(format!("{name}: not recorded"));
            continue;
        };
        let r = email(e);
        names.insert(r.message_id.clone(), name.to_owned());
        let attachment = r.attachments.first().map(|a| a.filename.as_str());
        let body = r.body_text.replace("\r\n", "\n");
        if r.subject != m["subject"].as_str().unwrap_or_default() {
            wrong.push(format!("{name}: subject {:?}", r.subject));
        }
        if body.trim_end() != m["body"].as_str().unwrap_or_default() {
            wrong.push(format!("{name}: body {body:?}"));
        }
        if attachment != m["attachment"].as_str() {
            wrong.push(format!("{name}: attachment {attachment:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "mail not decoded as written:\n{}",
        wrong.join("\n")
    );

    // Every query over gRPC, one connection; every failure reported.
    let mut q = env.investigator().await?;
    let mut table: Vec<(String, String, Vec<String>)> = queries
        .iter()
        .map(|c| {
            let expect = c["expect"].as_array().cloned().unwrap_or_default();
            (
                c["field"].as_str().unwrap_or_default().to_owned(),
                c["query"].as_str().unwrap_or_default().to_owned(),
                expect
                    .iter()
                    .map(|n| n.as_str().unwrap_or_default().to_owned())
                    .collect(),
            )
        })
        .collect();
    table.extend(CASES.iter().map(|(f, query, want)| {
        let mut want: Vec<String> = want.split_whitespace().map(String::from).collect();
        want.sort();
        (f.to_string(), query.to_string(), want)
    }));
    let mut failures = Vec::new();
    for (field, query, want) in &table {
        let found = q
            .search(request(field, query))
            .await
            .map_err(|e| anyhow::anyhow!("--{field} {query:?}: {e}"))?
            .into_inner()
            .events;
        let mut got: Vec<String> = found
            .iter()
            .map(|e| {
                let id = &email(e).message_id;
                names.get(id).cloned().unwrap_or_else(|| id.clone())
            })
            .collect();
        got.sort();
        if &got != want {
            failures.push(format!("--{field} {query:?}: want {want:?}, got {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} queries wrong:\n{}",
        failures.len(),
        table.len(),
        failures.join("\n")
    );

    // The CLI, as an investigator types it.
    for (flag, query, want) in [
        ("--subject", "売上報告", 2),
        ("--text", "見積書", 2),
        ("--attachment", "ﾃﾞｰﾀ", 1),
        ("--subject", "売上報告会", 0),
    ] {
        let out = env.cli(&["search", flag, query, "--json"])?;
        let lines = out.lines().filter(|l| l.starts_with('{')).count();
        assert_eq!(lines, want, "kiroku search {flag} {query}: {out}");
    }
    Ok(())
}
