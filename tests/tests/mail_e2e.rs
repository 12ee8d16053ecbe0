//! A mail sent through the agent with a real client (Python smtplib) to a
//! real upstream (aiosmtpd) is delivered byte-identical, recorded with the
//! right envelope, Bcc and attachments, and found and downloaded on the
//! collector. Standard gRPC clients can discover and call the collector.

use std::time::{Duration, Instant};

use base64::Engine;
use kiroku_proto::{Outcome, SearchRequest};
use kiroku_tests::{Env, Mode, Upstream, email, free_port, send_mail};

fn b64(data: &[u8]) -> String {
    let s = base64::engine::general_purpose::STANDARD.encode(data);
    s.as_bytes()
        .chunks(76)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// A mail with two attachments, one with an RFC 2231 (non-ASCII) name.
fn mail_with_attachments(pdf: &[u8], xlsx: &[u8]) -> Vec<u8> {
    format!(
        "From: Alice <alice@example.com>\r\n\
To: Bob <bob@example.org>\r\n\
Cc: carol@example.net\r\n\
Subject: =?UTF-8?B?5aOy5LiK?= Q3 figures\r\n\
Date: Mon, 2 Nov 2026 09:30:00 +0900\r\n\
Message-ID: <e2e-attach@example.com>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"=_b1\"\r\n\
\r\n\
--=_b1\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Please find the quarterly figures attached.\r\n\
--=_b1\r\n\
Content-Type: application/pdf; name=\"report.pdf\"\r\n\
Content-Disposition: attachment; filename=\"report.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
{}\r\n\
--=_b1\r\n\
Content-Type: application/vnd.openxmlformats-officedocument.spreadsheetml.sheet\r\n\
Content-Disposition: attachment; filename*=UTF-8''%E5%A3%B2%E4%B8%8A%E8%A1%A8.xlsx\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
{}\r\n\
--=_b1--\r\n",
        b64(pdf),
        b64(xlsx)
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn relayed_mail_is_delivered_identical_and_searchable() -> anyhow::Result<()> {
    let env = Env::new()?;
    let _collector = env.start_collector()?;
    let upstream = Upstream::start(&env)?;
    let smtp = free_port();
    let mut agent = env.start_agent("pc-1", smtp, &Mode::Relay(upstream.port))?;

    let pdf: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let xlsx: Vec<u8> = b"PK\x03\x04 spreadsheet bytes ".repeat(300);
    let raw = mail_with_attachments(&pdf, &xlsx);
    let rcpts = ["bob@example.org", "carol@example.net", "dave@example.com"];
    let sent = send_mail(smtp, "alice@example.com", &rcpts, &raw)?;
    let t250 = Instant::now();
    assert_eq!(sent.code, 250, "{sent:?}");
    assert!(
        sent.reply.contains("queued as"),
        "upstream reply returned verbatim: {sent:?}"
    );

    let events = env
        .wait_for(
            SearchRequest {
                sender: "alice@example.com".into(),
                ..Default::default()
            },
            1,
            Duration::from_secs(30),
        )
        .await?;
    let latency = t250.elapsed();
    eprintln!("capture-to-searchable: {} ms", latency.as_millis());
    assert_eq!(events.len(), 1);

    // The upstream got exactly what the client sent, for the envelope recipients.
    let got = upstream.messages();
    assert_eq!(got.len(), 1);
    assert!(
        got[0].0 == raw,
        "upstream copy differs from what the client sent"
    );
    assert_eq!(got[0].1["rcpt_tos"].as_array().map(|a| a.len()), Some(3));

    let e = &events[0];
    let m = email(e);
    assert_eq!(m.mail_from, "alice@example.com");
    assert_eq!(
        m.rcpt_to
            .iter()
            .map(|r| r.address.as_str())
            .collect::<Vec<_>>(),
        rcpts
    );
    assert!(m.rcpt_to.iter().all(|r| r.reply_code == 250));
    assert_eq!(m.from, vec!["alice@example.com"]);
    assert_eq!(m.to, vec!["bob@example.org"]);
    assert_eq!(m.cc, vec!["carol@example.net"]);
    assert_eq!(
        m.bcc,
        vec!["dave@example.com"],
        "Bcc = envelope recipients absent from To/Cc"
    );
    assert_eq!(m.subject, "売上 Q3 figures");
    assert_eq!(m.message_id, "<e2e-attach@example.com>");
    assert_eq!(m.recipient_count, 3);
    assert_eq!(m.outcome, Outcome::Delivered as i32);
    assert!(
        m.upstream_reply.contains("queued as"),
        "{}",
        m.upstream_reply
    );
    assert!(m.body_text.contains("quarterly figures"));
    assert_eq!(m.message_size, raw.len() as u64);
    assert_eq!(m.raw_sha256, kiroku_common::sha256_hex(&raw));
    assert_eq!(m.attachment_count, 2);
    let atts: Vec<(&str, u64, &str)> = m
        .attachments
        .iter()
        .map(|a| (a.filename.as_str(), a.size, a.sha256.as_str()))
        .collect();
    let (pdf_sha, xlsx_sha) = (
        kiroku_common::sha256_hex(&pdf),
        kiroku_common::sha256_hex(&xlsx),
    );
    assert_eq!(
        atts,
        vec![
            ("report.pdf", pdf.len() as u64, pdf_sha.as_str()),
            ("売上表.xlsx", xlsx.len() as u64, xlsx_sha.as_str())
        ]
    );
    assert_eq!(m.client_ip, "127.0.0.1");
    assert!(
        m.application.contains("python"),
        "application: {}",
        m.application
    );
    assert!(!e.user.is_empty());
    assert_eq!(e.agent_id, "pc-1");
    assert_eq!(
        e.custom.get("department").map(String::as_str),
        Some("finance")
    );
    assert!(
        e.host
            .as_ref()
            .is_some_and(|h| !h.hostname.is_empty() && !h.interfaces.is_empty())
    );

    // The original, byte-identical, over gRPC and through the CLI.
    assert!(
        env.raw(&e.event_id).await? == raw,
        "GetRaw differs from the original"
    );
    let out = env.path().join("dl.eml");
    let cli = env.path().join("cli.toml");
    std::fs::write(
        &cli,
        format!(
            "endpoint = \"https://127.0.0.1:{}\"\nserver_name = \"localhost\"\n[tls]\nca = \"pki/ca.pem\"\ncert = \"pki/investigator-inv.pem\"\nkey = \"pki/investigator-inv.key\"\n",
            env.grpc
        ),
    )?;
    let cfg = cli.to_string_lossy().into_owned();
    env.kiroku(&[
        "--config",
        &cfg,
        "raw",
        &e.event_id,
        "-o",
        out.to_str().unwrap_or_default(),
    ])?;
    assert!(
        std::fs::read(&out)? == raw,
        "kiroku raw differs from the original"
    );
    let json = env.kiroku(&[
        "--config",
        &cfg,
        "search",
        "--attachment",
        "売上表",
        "--json",
    ])?;
    let line: serde_json::Value = serde_json::from_str(json.lines().next().unwrap_or("{}"))?;
    assert_eq!(line["event_id"], e.event_id.as_str());
    assert_eq!(line["email"]["outcome"], "delivered");
    let table = env.kiroku(&[
        "--config",
        &cfg,
        "search",
        "--recipient",
        "dave@example.com",
    ])?;
    assert!(table.contains(&e.event_id), "{table}");

    // Every filter finds it.
    let filters = [
        SearchRequest {
            recipient: "dave@example.com".into(),
            ..Default::default()
        },
        SearchRequest {
            address: "carol@example.net".into(),
            ..Default::default()
        },
        SearchRequest {
            sha256: pdf_sha.clone(),
            ..Default::default()
        },
        SearchRequest {
            attachment_name: "report".into(),
            ..Default::default()
        },
        SearchRequest {
            text: "quarterly".into(),
            has_attachment: true,
            ..Default::default()
        },
        SearchRequest {
            host: e
                .host
                .as_ref()
                .map(|h| h.hostname.clone())
                .unwrap_or_default(),
            // The host's identity records match the host too.
            kind: "email".into(),
            ..Default::default()
        },
        SearchRequest {
            user: e.user.clone(),
            outcome: "delivered".into(),
            ..Default::default()
        },
        SearchRequest {
            from_ms: e.observed_at_ms - 1000,
            to_ms: e.observed_at_ms + 1000,
            kind: "email".into(),
            ..Default::default()
        },
    ];
    for f in filters {
        let r = env.wait_for(f.clone(), 1, Duration::from_secs(5)).await?;
        assert_eq!(r.len(), 1, "{f:?}");
    }
    let none = env
        .investigator()
        .await?
        .search(SearchRequest {
            sender: "mallory@example.com".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(none.total_hits, 0);
    assert!(agent.is_running());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_messages_are_relayed_unchanged_and_recorded() -> anyhow::Result<()> {
    let env = Env::new()?;
    let _collector = env.start_collector()?;
    let upstream = Upstream::start(&env)?;
    let smtp = free_port();
    let mut agent = env.start_agent("pc-2", smtp, &Mode::Relay(upstream.port))?;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "malformed MIME",
            b"From: x@example.com\r\nSubject: broken\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"never\r\n\r\n--nev\r\nContent-Type: text/plain; charset=bogus-charset\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!\r\n".to_vec(),
        ),
        ("no headers", b"just a line of text, no headers at all\r\nand another\r\n".to_vec()),
        (
            "non-UTF-8 header bytes",
            b"From: \xff\xfeW\xe4chter <w@example.com>\r\nSubject: caf\xe9 \x8e\x9d\r\nTo: \xc3\x28 <t@example.org>\r\n\r\nbody\r\n".to_vec(),
        ),
        (
            "8-bit body",
            b"From: e@example.com\r\nSubject: 8bit\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\nD\xe9j\xe0 vu \xfc\xf6\xe4 \x80\x81\xfe\xff\r\n".to_vec(),
        ),
    ];
    for (i, (name, raw)) in cases.iter().enumerate() {
        let sent = send_mail(
            smtp,
            &format!("sender{i}@example.com"),
            &["rcpt@example.org"],
            raw,
        )?;
        assert_eq!(sent.code, 250, "{name}: {sent:?}");
    }
    let got = upstream.messages();
    assert_eq!(got.len(), cases.len());
    for ((name, raw), (recv, _)) in cases.iter().zip(&got) {
        assert!(recv == raw, "{name}: relayed copy differs");
    }
    for (i, (name, raw)) in cases.iter().enumerate() {
        let ev = env
            .wait_for(
                SearchRequest {
                    sender: format!("sender{i}@example.com"),
                    ..Default::default()
                },
                1,
                Duration::from_secs(30),
            )
            .await?;
        let m = email(&ev[0]);
        assert_eq!(m.raw_sha256, kiroku_common::sha256_hex(raw), "{name}");
        assert_eq!(m.outcome, Outcome::Delivered as i32, "{name}");
        assert!(
            env.raw(&ev[0].event_id).await? == *raw,
            "{name}: raw differs"
        );
        if *name == "no headers" {
            assert!(
                m.parse_warnings.iter().any(|w| w.contains("no headers")),
                "{:?}",
                m.parse_warnings
            );
        }
        if *name == "8-bit body" {
            assert!(m.body_text.contains("Déjà vu"), "{:?}", m.body_text);
        }
    }
    assert!(agent.is_running(), "agent survived hostile input");
    let log = std::fs::read_to_string(&agent.log)?;
    assert!(
        log.contains("parse warning"),
        "a clear log line for unparsable input:\n{log}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn standard_grpc_client_discovers_and_calls_the_collector() -> anyhow::Result<()> {
    let env = Env::new()?;
    let _collector = env.start_collector()?;
    let pki = env.pki();
    let out = std::process::Command::new("python3")
        .arg(kiroku_tests::data_dir().join("grpc_client.py"))
        .arg(format!("127.0.0.1:{}", env.grpc))
        .arg(pki.join("ca.pem"))
        .arg(pki.join("admin-boss.pem"))
        .arg(pki.join("admin-boss.key"))
        .output()?;
    assert!(
        out.status.success(),
        "python grpcio client failed (is grpcio installed? .ci/run installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let services: Vec<&str> = v["services"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str()).collect())
        .unwrap_or_default();
    for s in [
        "kiroku.v1.Ingest",
        "kiroku.v1.Query",
        "grpc.health.v1.Health",
    ] {
        assert!(services.contains(&s), "{s} missing from {services:?}");
    }
    assert_eq!(v["health"], "SERVING");
    assert_eq!(v["search_total"], 0);
    Ok(())
}
