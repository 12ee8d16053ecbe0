//! What the collector serves and records stays trustworthy when callers
//! are hostile and its files are damaged or tampered with: a query built
//! to exhaust the parser is refused and recorded, not a crash; the audit
//! log keeps and reports damage instead of cutting it; a raw message that
//! no longer matches its hash is never served as if whole; `repair` names
//! events whose blobs are gone; an agent cannot stamp the collector's tags.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use kiroku_proto::ingest_client::IngestClient;
use kiroku_proto::query_client::QueryClient;
use kiroku_proto::{
    AuditRequest, Batch, BlobChunk, EmailEvent, Event, Hello, SearchRequest, ShipRequest,
    event::Kind, ship_request, ship_response,
};
use kiroku_tests::{Env, bin};
use tonic::Code;

/// Runs the `kiroku` CLI with `cert` (role-name) against this collector;
/// returns (exit code, stdout, stderr).
fn cli_as(env: &Env, cert: &str, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
    env.cli_as(cert, args)
}

async fn audit(env: &Env) -> anyhow::Result<kiroku_proto::AuditResponse> {
    Ok(QueryClient::new(env.admin().await?)
        .audit(AuditRequest {
            from_ms: 0,
            limit: 10_000,
            ..Default::default()
        })
        .await?
        .into_inner())
}

/// Uploads `data` as a blob as agent `agent` (the collector counts a blob
/// as held for an agent only once that agent uploaded it); returns its
/// SHA-256.
async fn put_blob(env: &Env, agent: &str, data: &[u8]) -> anyhow::Result<String> {
    let sha = kiroku_common::sha256_hex(data);
    let chunk = BlobChunk {
        sha256: sha.clone(),
        size: data.len() as u64,
        data: data.to_vec(),
    };
    let (cert, key) = env.identity("agent", agent)?;
    IngestClient::new(env.channel(Some((&cert, &key)), None).await?)
        .max_encoding_message_size(64 << 20)
        .put_blob(tokio_stream::iter(vec![chunk]))
        .await?;
    Ok(sha)
}

/// Ships `events` on stream `stream` as agent `agent` (certificate issued
/// here); returns the ids the collector gave them.
async fn ship(
    env: &Env,
    agent: &str,
    stream: &str,
    mut events: Vec<Event>,
) -> anyhow::Result<Vec<String>> {
    let (cert, key) = env.identity("agent", agent)?;
    for (i, e) in events.iter_mut().enumerate() {
        e.stream_id = stream.into();
        e.seq = i as u64 + 1;
    }
    let ids = events
        .iter()
        .map(|e| format!("{agent}/{stream}/{}", e.seq))
        .collect();
    let msgs = vec![
        ShipRequest {
            msg: Some(ship_request::Msg::Hello(Hello {
                stream_id: stream.into(),
                ..Default::default()
            })),
        },
        ShipRequest {
            msg: Some(ship_request::Msg::Batch(Batch {
                events,
                ..Default::default()
            })),
        },
    ];
    let ch = env.channel(Some((&cert, &key)), None).await?;
    let mut resp = IngestClient::new(ch)
        .ship(tokio_stream::iter(msgs))
        .await?
        .into_inner();
    while let Some(m) = resp.message().await? {
        if let Some(ship_response::Msg::Ack(a)) = m.msg {
            anyhow::ensure!(a.stored > 0, "nothing stored: {a:?}");
            return Ok(ids);
        }
    }
    anyhow::bail!("Ship ended without an Ack")
}

fn mail(subject: &str, raw_sha256: &str) -> Event {
    Event {
        kind: Some(Kind::Email(EmailEvent {
            subject: subject.into(),
            raw_sha256: raw_sha256.into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// A blob's file in the collector's data directory.
fn blob_file(env: &Env, sha: &str, ext: &str) -> PathBuf {
    env.path()
        .join("collector/blobs")
        .join(&sha[..2])
        .join(&sha[2..4])
        .join(format!("{sha}.{ext}"))
}

/// Two mails with raw messages: a small one (stored whole) and one with a
/// 200 KB base64 attachment (stored as a manifest plus the attachment's
/// own blob). Returns (event ids, raw hashes, the attachment's hash).
async fn store_two_mails(env: &Env) -> anyhow::Result<(Vec<String>, Vec<String>, String)> {
    let small =
        b"From: a@corp.example\r\nSubject: invoice\r\n\r\nPay to account 1234.\r\n".repeat(20);
    let att: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    let mut big = b"From: a@corp.example\r\nSubject: report\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&att);
    for l in b64.as_bytes().chunks(76) {
        big.extend_from_slice(l);
        big.extend_from_slice(b"\r\n");
    }
    big.extend_from_slice(b"--b--\r\n");
    let shas = vec![
        put_blob(env, "mailer", &small).await?,
        put_blob(env, "mailer", &big).await?,
    ];
    let ids = ship(
        env,
        "mailer",
        "raw1",
        vec![mail("invoice", &shas[0]), mail("report", &shas[1])],
    )
    .await?;
    assert!(blob_file(env, &shas[0], "zst").exists());
    assert!(
        blob_file(env, &shas[1], "krm").exists(),
        "stored as a manifest"
    );
    Ok((ids, shas, kiroku_common::sha256_hex(&att)))
}

/// Replaces a stored blob file with another valid one (the stored form of
/// `content`): a forged copy that decompresses without error.
async fn forge(env: &Env, victim: &Path, content: &[u8]) -> anyhow::Result<()> {
    let sha = put_blob(env, "forger", content).await?;
    std::fs::copy(blob_file(env, &sha, "zst"), victim)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deeply_nested_query_is_refused_recorded_and_the_collector_serves_on()
-> anyhow::Result<()> {
    let env = Env::new()?;
    let mut collector = env.start_collector()?;
    let mut q = env.investigator().await?;
    let parens = format!("{}a{}", "(".repeat(3000), ")".repeat(3000));
    let cases: Vec<(&str, SearchRequest, &str)> = vec![
        (
            "text",
            SearchRequest {
                text: parens.clone(),
                ..Default::default()
            },
            "2048",
        ),
        (
            "subject",
            SearchRequest {
                subject: parens.clone(),
                ..Default::default()
            },
            "2048",
        ),
        (
            "attachment_name",
            SearchRequest {
                attachment_name: parens.clone(),
                ..Default::default()
            },
            "2048",
        ),
        (
            "text",
            SearchRequest {
                text: format!("{}a{}", "(".repeat(100), ")".repeat(100)),
                ..Default::default()
            },
            "at most 16",
        ),
        (
            "subject",
            SearchRequest {
                subject: "NOT ".repeat(300) + "a",
                ..Default::default()
            },
            "at most 16",
        ),
    ];
    for (field, req, limit) in &cases {
        let err = q
            .search(req.clone())
            .await
            .expect_err("a query past the parser's bounds is refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(
            err.message().contains(&format!("`{field}`")) && err.message().contains(limit),
            "names the field and the limit: {}",
            err.message()
        );
        assert!(err.message().len() < 300, "no echo: {}", err.message());
    }
    let err = q
        .search_stream(cases[0].1.clone())
        .await
        .expect_err("streamed too");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(collector.is_running(), "the collector is alive");
    q.search(SearchRequest {
        text: "(invoice OR receipt) AND NOT draft".into(),
        ..Default::default()
    })
    .await?;

    let log = audit(&env).await?;
    assert!(log.chain_ok, "{log:?}");
    let refused: Vec<_> = log
        .entries
        .iter()
        .filter(|e| e.filter.starts_with("REFUSED InvalidArgument"))
        .collect();
    assert_eq!(refused.len(), cases.len() + 1, "{:#?}", log.entries);
    for e in &refused {
        assert_eq!(e.identity, "investigator/inv");
        assert!(e.filter.len() < 4500, "bounded: {} bytes", e.filter.len());
    }
    assert!(
        refused
            .iter()
            .any(|e| e.call == "SearchStream" && e.filter.contains("sha256")),
        "the cut filter carries the hash of the whole: {refused:#?}"
    );
    assert!(collector.log_text().contains("query refused"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_file_operation_is_refused_by_the_cli_and_the_collector() -> anyhow::Result<()> {
    let env = Env::new()?;
    let _collector = env.start_collector()?;
    let (code, out, err) = cli_as(&env, "investigator-inv", &["search", "--op", "bogus"])?;
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains("bogus") && err.contains("copy_to_removable"),
        "lists the valid ones: {err}"
    );
    let err = env
        .investigator()
        .await?
        .search(SearchRequest {
            operation: "bogus".into(),
            ..Default::default()
        })
        .await
        .expect_err("the collector refuses it too");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("volume_unmounted"), "{err:?}");
    Ok(())
}

/// Audit log lines as text.
fn audit_lines(env: &Env) -> anyhow::Result<Vec<String>> {
    Ok(
        std::fs::read_to_string(env.path().join("collector/audit.log"))?
            .lines()
            .map(str::to_owned)
            .collect(),
    )
}

fn write_lines(env: &Env, lines: &[String]) -> anyhow::Result<()> {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(env.path().join("collector/audit.log"), text)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_log_damage_is_reported_and_kept_never_cut() -> anyhow::Result<()> {
    let env = Env::new()?;
    let mut collector = env.start_collector()?;
    let mut q = env.investigator().await?;
    // What the start recorded (admin entries: files, policy, ...).
    let at_start = audit_lines(&env)?.len();
    assert!(at_start >= 1, "the start is recorded");
    for i in 0..8 {
        q.search(SearchRequest {
            subject: format!("s{i}"),
            ..Default::default()
        })
        .await?;
    }
    collector.terminate();

    // One byte edited in line 3 so that it is no longer JSON.
    // The collector's start and the 8 searches.
    let mut lines = audit_lines(&env)?;
    assert_eq!(lines.len(), at_start + 8);
    lines[2].replace_range(0..1, "X");
    let damaged = lines[2].clone();
    write_lines(&env, &lines)?;
    let log_before = collector.log_text().len();
    let mut collector = env.start_collector()?;
    let started = collector.log_text()[log_before..].to_owned();
    assert!(
        started.contains("tampered") && started.contains("line 3"),
        "the start says so: {started}"
    );
    let (code, _, err) = cli_as(&env, "admin-boss", &["audit"])?;
    assert_eq!(code, 3, "kiroku audit fails: {err}");
    assert!(err.contains("line 3 is not an audit entry"), "{err}");
    env.investigator()
        .await?
        .search(SearchRequest::default())
        .await?;
    let after = audit_lines(&env)?;
    assert_eq!(after[2], damaged, "the damaged line is kept");
    assert!(
        after.len() >= 8 + 3,
        "nothing cut, new entries appended: {after:#?}"
    );
    let r = audit(&env).await?;
    assert!(!r.chain_ok);
    assert!(
        !r.problem.contains(&format!("line {}", after.len())),
        "the new entries chain on from the damage: {}",
        r.problem
    );
    collector.terminate();

    // The last three entries removed cleanly: only the kept head shows it.
    let mut lines = audit_lines(&env)?;
    let n = lines.len();
    lines.truncate(n - 3);
    write_lines(&env, &lines)?;
    let log_before = collector.log_text().len();
    let _collector = env.start_collector()?;
    let started = collector.log_text()[log_before..].to_owned();
    assert!(started.contains("cut off"), "{started}");
    let (code, _, err) = cli_as(&env, "admin-boss", &["audit"])?;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("3 entries missing"), "{err}");
    assert_eq!(
        audit_lines(&env)?.len(),
        n - 3 + 1 + at_start + 1,
        "kept: the record of it, the start's entries, and the audit call"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_downloads_are_checked_against_their_hash() -> anyhow::Result<()> {
    let env = Env::new()?;
    let _collector = env.start_collector()?;
    let (ids, shas, att_sha) = store_two_mails(&env).await?;
    let out = env.path().join("out.eml");
    let raw = |id: &str| -> anyhow::Result<(i32, String)> {
        let o = out.to_string_lossy().into_owned();
        let (code, _, err) = cli_as(&env, "investigator-inv", &["raw", id, "-o", &o])?;
        Ok((code, err))
    };
    for id in &ids {
        let (code, err) = raw(id)?;
        assert_eq!(code, 0, "sound first: {err}");
        std::fs::remove_file(&out)?;
    }

    // A flipped bit in the small message's blob, then a forged copy.
    let victim = blob_file(&env, &shas[0], "zst");
    let good = std::fs::read(&victim)?;
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x10;
    std::fs::write(&victim, &flipped)?;
    let (code, err) = raw(&ids[0])?;
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("DataLoss") && err.contains("repair"), "{err}");
    assert!(!out.exists() && !out.with_extension("part").exists());
    forge(
        &env,
        &victim,
        b"From: a@corp.example\r\nSubject: invoice\r\n\r\nPay to account 9999.\r\n",
    )
    .await?;
    let (code, err) = raw(&ids[0])?;
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("DataLoss") && err.contains(&shas[0]), "{err}");
    assert!(!out.exists() && !out.with_extension("part").exists());

    // A forged attachment under a manifest: the gRPC stream ends in
    // DataLoss naming the attachment's blob, and never gives all bytes.
    let part = blob_file(&env, &att_sha, "zst");
    forge(&env, &part, &vec![7u8; 200_000]).await?;
    let mut q = env.investigator().await?;
    let mut s = q
        .get_raw(kiroku_proto::GetRawRequest {
            event_id: ids[1].clone(),
        })
        .await?
        .into_inner();
    let mut got = 0;
    let err = loop {
        match s.message().await {
            Ok(Some(c)) => got += c.data.len(),
            Ok(None) => panic!("a forged attachment was served whole ({got} bytes)"),
            Err(e) => break e,
        }
    };
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");
    assert!(err.message().contains(&att_sha), "{}", err.message());
    let (code, err) = raw(&ids[1])?;
    assert_ne!(code, 0, "{err}");
    assert!(!out.exists() && !out.with_extension("part").exists());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn repair_names_the_events_whose_blobs_are_missing() -> anyhow::Result<()> {
    let env = Env::new()?;
    let mut collector = env.start_collector()?;
    let (ids, shas, att_sha) = store_two_mails(&env).await?;
    collector.terminate();
    std::fs::remove_file(blob_file(&env, &shas[0], "zst"))?;
    std::fs::remove_file(blob_file(&env, &att_sha, "zst"))?;
    let out = Command::new(bin("kiroku-collector"))
        .arg("--config")
        .arg(env.path().join("collector.toml"))
        .arg("repair")
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "not sound: {text}");
    assert!(
        text.contains(&format!("blob {} is missing", shas[0])) && text.contains(&ids[0]),
        "names the missing raw message and its event: {text}"
    );
    assert!(
        text.contains(&att_sha) && text.contains(&ids[1]),
        "names the missing attachment and the mail it belongs to: {text}"
    );
    assert!(
        blob_file(&env, &shas[1], "krm").exists(),
        "the manifest itself is kept"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_cannot_stamp_the_collectors_tags() -> anyhow::Result<()> {
    let env = Env::new()?;
    std::fs::write(
        env.path().join("rules.toml"),
        "[[rule]]\nname = \"usb-copy\"\nkind = \"removable_copy\"\n",
    )?;
    let _collector = env.start_collector_with("[alerts]\nrules = \"rules.toml\"\n")?;
    let copy = Event {
        kind: Some(Kind::File(kiroku_proto::FileEvent {
            operation: "copy_to_removable".into(),
            path: "/media/usb/q3.xlsx".into(),
            removable: true,
            volume: "/media/usb".into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    let forged = Event {
        tags: vec![
            "alert:usb-copy".into(),
            "clock-skew".into(),
            "normalised-line-endings".into(),
            "urgent".into(),
        ],
        ..mail("forged alert", "")
    };
    let ids = ship(&env, "tagger", "tags1", vec![forged, copy]).await?;
    let (code, out, err) = cli_as(
        &env,
        "investigator-inv",
        &["search", "--alert", "usb-copy", "--json"],
    )?;
    assert_eq!(code, 0, "{err}");
    let found: Vec<&str> = out.lines().collect();
    assert!(
        found.len() == 1 && found[0].contains(&format!("\"{}\"", ids[1])),
        "only the collector's own alert, not the forged one: {out}"
    );
    let mut q = env.investigator().await?;
    for (tag, n) in [
        ("clock-skew", 0),
        ("alert:usb-copy", 1),
        ("agent:alert:usb-copy", 1),
        ("normalised-line-endings", 1),
    ] {
        let hits = q
            .search(SearchRequest {
                tag: tag.into(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .total_hits;
        assert_eq!(hits, n, "{tag}");
    }
    let ev = q
        .get_event(kiroku_proto::GetEventRequest {
            event_id: ids[0].clone(),
        })
        .await?
        .into_inner();
    assert_eq!(
        ev.tags,
        [
            "agent:alert:usb-copy",
            "agent:clock-skew",
            "normalised-line-endings",
            "agent:urgent"
        ],
        "kept, apart from the collector's"
    );

    // Streamed calls are audited with what they matched or replayed.
    let (code, _, err) = cli_as(&env, "investigator-inv", &["search", "--all"])?;
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = cli_as(&env, "investigator-inv", &["alerts", "--json"])?;
    assert_eq!((code, out.lines().count()), (0, 1), "{out}{err}");
    let log = audit(&env).await?;
    let last = |call: &str| {
        log.entries
            .iter()
            .rev()
            .find(|e| e.call == call)
            .cloned()
            .expect("audited")
    };
    assert_eq!(
        last("SearchStream").results,
        2,
        "{:?}",
        last("SearchStream")
    );
    assert_eq!(last("Alerts").results, 1, "{:?}", last("Alerts"));
    Ok(())
}
