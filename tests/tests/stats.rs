//! `kiroku stats` and the Aggregate call against mail sent through the real
//! agent (Python smtplib → agent relay → aiosmtpd): counts by recipient
//! domain, sender and hour (in a zone), with a filter, as a chart, JSON
//! and CSV from the CLI, and from a standard gRPC client (Python grpcio);
//! then every grouping from both, alike and as the mails say; every call
//! is in the audit log, a refused one too.

use std::time::Duration;

use kiroku_proto::query_client::QueryClient;
use kiroku_proto::{AuditRequest, SearchRequest};
use kiroku_tests::{Env, Mode, Upstream, free_port, send_mail};

/// (key, count) of the groups a grouping should show.
type Groups<'a> = Vec<(&'a str, u64)>;

/// The attachment of mail "three".
const XLSX: &[u8] = b"PK\x03\x04 q3 spreadsheet bytes";

fn mail(from: &str, to: &[&str], subject: &str, body_bytes: usize) -> Vec<u8> {
    // Lines of 50 bytes: SMTP limits a line to 998.
    let body = format!("{}\r\n", "x".repeat(48)).repeat(body_bytes / 50);
    let head = format!(
        "From: {from}\r\nTo: {}\r\nSubject: {subject}\r\nMessage-ID: <{subject}@stats.test>\r\n",
        to.join(", ")
    );
    if subject != "three" {
        return format!("{head}\r\n{body}").into_bytes();
    }
    use base64::Engine;
    format!(
        "{head}MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
--b\r\nContent-Type: text/plain\r\n\r\n{body}\
--b\r\nContent-Type: application/octet-stream\r\n\
Content-Disposition: attachment; filename=\"q3.xlsx\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--b--\r\n",
        base64::engine::general_purpose::STANDARD.encode(XLSX)
    )
    .into_bytes()
}

/// (count, bytes) of the chart line whose key is `key`.
fn chart_row(chart: &str, key: &str) -> Option<(u64, String)> {
    chart.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.trim_start();
        let mut words = rest.split_whitespace();
        let count = words.next()?.parse().ok()?;
        let bytes = format!("{} {}", words.next()?, words.next()?);
        Some((count, bytes))
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_by_every_grouping_from_the_cli_and_grpcio() -> anyhow::Result<()> {
    let env = Env::new()?;
    let _collector = env.start_collector()?;
    let upstream = Upstream::start(&env)?;
    let smtp = free_port();
    let _agent = env.start_agent("pc-1", smtp, &Mode::Relay(upstream.port))?;

    // Four mails: gmail.com gets two (one of them with two gmail.com
    // recipients, counted once), partner.example three.
    let alice = "alice@corp.example";
    let bob = "bob@sales.corp.example";
    let sends: [(&str, &[&str], &str); 4] = [
        (alice, &["a@gmail.com", "b@gmail.com"], "one"),
        (alice, &["x@partner.example"], "two"),
        (alice, &["y@partner.example", "z@gmail.com"], "three"),
        (bob, &["q@Partner.Example"], "four"),
    ];
    for (from, to, subject) in sends {
        let sent = send_mail(smtp, from, to, &mail(from, to, subject, 2_000))?;
        assert_eq!(sent.code, 250, "{sent:?}");
    }
    let mails = env
        .wait_for(
            SearchRequest {
                kind: "email".into(),
                ..Default::default()
            },
            4,
            Duration::from_secs(30),
        )
        .await?;
    assert_eq!(mails.len(), 4);
    // The agent's host identity is an event too (no recipients).
    let all = env.search_all(SearchRequest::default()).await?.len() as u64;
    assert!(all > 4);

    // The chart: one line per domain, counts and a bar.
    let chart = env.cli(&["stats", "--by", "recipient-domain"])?;
    eprintln!("{chart}");
    let (partner, _) = chart_row(&chart, "partner.example").expect("partner.example row");
    let (gmail, _) = chart_row(&chart, "gmail.com").expect("gmail.com row");
    assert_eq!((partner, gmail), (3, 2), "{chart}");
    let (total, _) = chart_row(&chart, "total").expect("total row");
    assert_eq!(total, all, "{chart}");
    let (none, _) = chart_row(&chart, "(no recipient domain)").expect("a row of the rest");
    assert_eq!(none, all - 4, "{chart}");
    assert!(chart.contains('█'), "a bar chart:\n{chart}");
    assert!(
        chart.contains("counts in each"),
        "says an event can count twice:\n{chart}"
    );
    // partner.example leads, so its bar is the longest (40 columns: not a
    // terminal).
    let bar = |key: &str| {
        chart
            .lines()
            .find(|l| l.starts_with(key))
            .map(|l| l.chars().filter(|c| matches!(c, '█'..='▏')).count())
    };
    assert_eq!(bar("partner.example"), Some(40), "{chart}");
    assert_eq!(bar("gmail.com"), Some(27), "{chart}");

    // With a filter (and --top): only Bob's mail.
    let chart = env.cli(&[
        "stats",
        "--by",
        "recipient-domain",
        "--sender",
        bob,
        "--top",
        "5",
    ])?;
    assert_eq!(
        chart_row(&chart, "partner.example").map(|r| r.0),
        Some(1),
        "{chart}"
    );
    assert!(chart_row(&chart, "gmail.com").is_none(), "{chart}");

    // By hour in Tokyo, as JSON: every mail in a bucket of +09:00.
    let json = env.cli(&[
        "stats",
        "--by",
        "hour",
        "--tz",
        "Asia/Tokyo",
        "--kind",
        "email",
        "--json",
    ])?;
    let v: serde_json::Value = serde_json::from_str(&json)?;
    assert_eq!(v["by"], "hour");
    assert_eq!(v["time_zone"], "Asia/Tokyo");
    assert_eq!(v["total_count"], 4);
    let groups = v["groups"].as_array().cloned().unwrap_or_default();
    assert!(!groups.is_empty() && groups.len() <= 2, "{json}");
    let counted: u64 = groups.iter().filter_map(|g| g["count"].as_u64()).sum();
    assert_eq!(counted, 4, "{json}");
    for g in &groups {
        let key = g["key"].as_str().unwrap_or_default();
        assert!(key.ends_with(":00 +09:00"), "{key}");
        assert!(g["start_ms"].as_i64().unwrap_or(0) > 0, "{g}");
    }
    let bytes: u64 = groups.iter().filter_map(|g| g["bytes"].as_u64()).sum();
    assert!(bytes >= 4 * 2_000, "message sizes are summed: {json}");
    assert_eq!(v["total_bytes"].as_u64(), Some(bytes));

    // By sender as CSV.
    let csv = env.cli(&["stats", "--by", "sender", "--kind", "email", "--csv"])?;
    let rows: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(rows[0], ["row", "key", "events", "bytes", "start"], "{csv}");
    assert_eq!(rows[1][..3], ["group", alice, "3"], "{csv}");
    assert_eq!(rows[2][..3], ["group", bob, "1"], "{csv}");
    assert_eq!(rows[3][..3], ["total", "", "4"], "{csv}");
    assert_eq!(rows.len(), 4, "{csv}");

    // A wrong grouping is refused by the CLI before it asks.
    let bad = env.cli(&["stats", "--by", "subject"]);
    assert!(bad.is_err());

    // A standard gRPC client (grpcio, messages learnt by reflection).
    let pki = env.pki();
    let out = std::process::Command::new("python3")
        .arg(kiroku_tests::data_dir().join("grpc_aggregate.py"))
        .arg(format!("127.0.0.1:{}", env.grpc))
        .arg(pki.join("ca.pem"))
        .arg(pki.join("investigator-inv.pem"))
        .arg(pki.join("investigator-inv.key"))
        .arg(r#"{"filter": {"sender": "alice@corp.example"}, "by": "recipient-domain", "top": 1}"#)
        .arg(r#"{"by": "weekday", "time_zone": "Asia/Tokyo"}"#)
        .arg(r#"{"by": "subject"}"#)
        .arg(r#"{"by": "day", "time_zone": "Mars/Olympus"}"#)
        .output()?;
    assert!(
        out.status.success(),
        "python grpcio client failed (is grpcio installed? .ci/run installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let by_domain = &v[0]["response"];
    // Alice's mail went to gmail.com twice and partner.example twice: a
    // tie, broken by the key.
    assert_eq!(by_domain["groups"][0]["key"], "gmail.com", "{v}");
    assert_eq!(
        by_domain["groups"][0]["count"], "2",
        "uint64 is a string in JSON"
    );
    assert_eq!(by_domain["groups"].as_array().map(Vec::len), Some(1));
    assert_eq!(by_domain["other_count"], "2", "{v}");
    assert_eq!(by_domain["other_groups"], "1", "{v}");
    assert_eq!(by_domain["total_count"], "3", "{v}");
    assert_eq!(by_domain["multi_valued"], true, "{v}");
    let week = v[1]["response"]["groups"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let days: Vec<&str> = week.iter().filter_map(|g| g["key"].as_str()).collect();
    assert_eq!(days, ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]);
    assert_eq!(v[2]["error"], "INVALID_ARGUMENT", "{v}");
    assert!(
        v[2]["details"]
            .as_str()
            .is_some_and(|d| d.contains("recipient-domain")),
        "says what would do: {v}"
    );
    assert_eq!(v[3]["error"], "INVALID_ARGUMENT", "{v}");
    assert!(
        v[3]["details"]
            .as_str()
            .is_some_and(|d| d.contains("time zone")),
        "{v}"
    );

    // Every grouping, from the CLI (--json) and from grpcio alike, against
    // the known mails; the agent's host identity is the one other event.
    let xlsx = kiroku_common::sha256_hex(XLSX);
    let host = mails[0]
        .host
        .as_ref()
        .map(|h| h.hostname.to_lowercase())
        .unwrap_or_default();
    let user = mails[0].user.to_lowercase();
    let fours = [
        ("sender", vec![(alice, 3), (bob, 1)]),
        (
            "sender-domain",
            vec![("corp.example", 3), ("sales.corp.example", 1)],
        ),
        (
            "recipient-domain",
            vec![("partner.example", 3), ("gmail.com", 2)],
        ),
        ("client-ip", vec![("127.0.0.1", 4)]),
        ("outcome", vec![("delivered", 4)]),
        ("reply-code", vec![("250", 4)]),
        ("attachment-name", vec![("q3.xlsx", 1)]),
        ("attachment-sha256", vec![(xlsx.as_str(), 1)]),
    ];
    let mut expected: Vec<(&str, Option<Groups>)> = fours
        .into_iter()
        .map(|(by, groups)| (by, Some(groups)))
        .collect();
    expected.extend([
        ("host", Some(vec![(host.as_str(), all)])),
        ("kind", Some(vec![("email", 4), ("host_change", all - 4)])),
        ("user", None),
        ("hour", None),
        ("day", None),
        ("hour-of-day", None),
        ("weekday", None),
        // Issue 21: mail has none of these.
        ("process", Some(vec![])),
        ("remote-ip", Some(vec![])),
        ("port", Some(vec![])),
    ]);
    assert_eq!(expected.len(), 18, "every grouping");
    let requests: Vec<String> = expected
        .iter()
        .map(|(by, _)| format!(r#"{{"by": "{by}", "time_zone": "Asia/Tokyo"}}"#))
        .collect();
    let out = std::process::Command::new("python3")
        .arg(kiroku_tests::data_dir().join("grpc_aggregate.py"))
        .arg(format!("127.0.0.1:{}", env.grpc))
        .arg(pki.join("ca.pem"))
        .arg(pki.join("investigator-inv.pem"))
        .arg(pki.join("investigator-inv.key"))
        .args(&requests)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let py: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    for (i, (by, want)) in expected.iter().enumerate() {
        let cli: serde_json::Value = serde_json::from_str(&env.cli(&[
            "stats",
            "--by",
            by,
            "--tz",
            "Asia/Tokyo",
            "--json",
        ])?)?;
        let grpc = &py[i]["response"];
        // (key, count) as text: the JSON mapping writes uint64 as strings.
        let groups = |v: &serde_json::Value| -> Vec<(String, String)> {
            v["groups"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|g| {
                            let count = match &g["count"] {
                                serde_json::Value::String(s) => s.clone(),
                                n => n.to_string(),
                            };
                            (g["key"].as_str().unwrap_or_default().to_string(), count)
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let got = groups(&cli);
        assert_eq!(got, groups(grpc), "by {by}: the CLI and grpcio differ");
        assert_eq!(cli["total_count"], all, "by {by}");
        assert_eq!(grpc["total_count"], all.to_string(), "by {by}");
        if let Some(want) = want {
            let want: Vec<(String, String)> = want
                .iter()
                .map(|(k, n)| (k.to_string(), n.to_string()))
                .collect();
            assert_eq!(got, want, "by {by}");
        }
        let counted: u64 = got.iter().filter_map(|g| g.1.parse::<u64>().ok()).sum();
        let none = cli["none_count"].as_u64().unwrap_or(0);
        match *by {
            "recipient-domain" => assert_eq!(counted, 5, "gmail.com + partner.example"),
            "user" => {
                assert_eq!(counted + none, all, "by user: {cli}");
                assert!(
                    user.is_empty() || got.iter().any(|g| g.0 == user),
                    "{user} in {got:?}"
                );
            }
            _ => assert_eq!(counted + none, all, "by {by}: {cli}"),
        }
        match *by {
            "hour-of-day" => assert_eq!(got.len(), 24),
            "weekday" => assert_eq!(got.len(), 7),
            "hour" | "day" => assert!(!got.is_empty() && got.len() <= 2, "{got:?}"),
            _ => {}
        }
    }

    // Every call is in the audit log, with who asked, what and how many.
    let audit = QueryClient::new(env.admin().await?)
        .audit(AuditRequest {
            from_ms: 0,
            limit: 10_000,
            ..Default::default()
        })
        .await?
        .into_inner();
    let calls: Vec<_> = audit
        .entries
        .iter()
        .filter(|e| e.call == "Aggregate")
        .collect();
    assert_eq!(
        calls.len(),
        8 + 2 * expected.len(),
        "4 from the CLI (it refuses a wrong --by itself), 4 from grpcio, then one per grouping from each: {calls:#?}"
    );
    assert!(calls.iter().all(|e| e.identity == "investigator/inv"));
    assert!(
        calls
            .iter()
            .any(|e| e.filter.contains("bob@sales.corp.example") && e.results == 1),
        "{calls:#?}"
    );
    assert_eq!(
        calls
            .iter()
            .filter(|e| e.filter.starts_with("REFUSED"))
            .count(),
        2,
        "{calls:#?}"
    );
    Ok(())
}
