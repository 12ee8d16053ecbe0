//! The agent's stream hash chain end to end (issue 18): events reach the
//! collector chained, and an event rewritten in a stopped agent's buffer
//! before it shipped — through the buffer's own API, as someone with root
//! on the agent host could, with the test-only
//! `kiroku-agent-buffer-rewrite` — is reported by the collector as an
//! `integrity` record naming the stream and the sequence number, while an
//! untouched stream reports nothing; a buffer damaged on disk is an
//! agent-reported loss, not tampering.

use std::process::Command;
use std::time::Duration;

use kiroku_proto::{Event, SearchRequest, event::Kind};
use kiroku_tests::{Env, Mode, bin, email, free_port, send_mail};
use sha2::Digest;

fn mail(tag: &str, n: usize) -> Vec<u8> {
    format!(
        "From: holder@example.com\r\nTo: counsel@example.org\r\nSubject: {tag} {n}\r\nMessage-ID: <{tag}-{n}@example.com>\r\n\r\nbody {n}\r\n"
    )
    .into_bytes()
}

/// Sends `n` mails tagged `tag` through the agent listening on `smtp`.
fn send(smtp: u16, tag: &str, n: usize) -> anyhow::Result<()> {
    for i in 0..n {
        let sent = send_mail(
            smtp,
            "holder@example.com",
            &["counsel@example.org"],
            &mail(tag, i),
        )?;
        anyhow::ensure!(sent.code == 250, "{sent:?}");
    }
    Ok(())
}

fn by_subject(subject: &str) -> SearchRequest {
    SearchRequest {
        subject: subject.into(),
        ..Default::default()
    }
}

/// Runs the test-only rewrite tool; returns its stdout.
fn rewrite_tool(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(bin("kiroku-agent-buffer-rewrite"))
        .args(args)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "kiroku-agent-buffer-rewrite {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every event after the first of a stream names a predecessor
/// (`prev_hash`, 32 bytes), none restarts the chain, and no two name the
/// same one.
#[tokio::test(flavor = "multi_thread")]
async fn shipped_events_carry_the_stream_chain() -> anyhow::Result<()> {
    let env = Env::new()?;
    let _collector = env.start_collector()?;
    let smtp = free_port();
    let _agent = env.start_agent("pc-chain", smtp, &Mode::CaptureOnly)?;
    send(smtp, "chained", 4)?;
    let mut events = env
        .wait_for(by_subject("chained"), 4, Duration::from_secs(60))
        .await?;
    events.sort_by_key(|e| e.seq);
    let mut seen = std::collections::HashSet::new();
    for e in &events {
        assert!(e.chain_restart.is_empty(), "{}", e.chain_restart);
        if e.seq > 1 {
            assert_eq!(e.prev_hash.len(), 32, "event {} is chained", e.seq);
            assert!(seen.insert(e.prev_hash.clone()), "distinct links");
        }
    }
    Ok(())
}

/// An unshipped mail rewritten in the stopped agent's buffer is reported
/// as altered when the stream reaches the collector; a second agent whose
/// buffer nobody touched reports nothing.
#[tokio::test(flavor = "multi_thread")]
async fn an_event_rewritten_in_the_agent_buffer_is_reported() -> anyhow::Result<()> {
    kiroku_tests::ensure_test_hooks()?;
    let env = Env::new()?;
    // The collector is down: nothing can ship before the rewrite.
    let (smtp, smtp_ok) = (free_port(), free_port());
    let mut agent = env.start_agent("pc-ev", smtp, &Mode::CaptureOnly)?;
    let mut control = env.start_agent("pc-ok", smtp_ok, &Mode::CaptureOnly)?;
    send(smtp, "evidence", 3)?;
    send(smtp_ok, "control", 3)?;
    agent.terminate();
    control.terminate();

    let data = env.path().join("agent-pc-ev");
    let data = data.to_str().unwrap_or_default();
    let queued = rewrite_tool(&["--data", data, "--list"])?;
    let seq: u64 = queued
        .lines()
        .find_map(|l| {
            let mut f = l.split('\t');
            let (seq, kind, subject) = (f.next()?, f.next()?, f.next()?);
            (kind == "email" && subject == "evidence 1").then(|| seq.parse().ok())?
        })
        .ok_or_else(|| anyhow::anyhow!("evidence 1 is not queued:\n{queued}"))?;
    let said = rewrite_tool(&[
        "--data",
        data,
        "--seq",
        &seq.to_string(),
        "--subject",
        "forged 1",
    ])?;
    assert!(said.contains("chain not fixed"), "{said}");

    let _collector = env.start_collector()?;
    let _agent = env.start_agent("pc-ev", smtp, &Mode::CaptureOnly)?;
    let _control = env.start_agent("pc-ok", smtp_ok, &Mode::CaptureOnly)?;
    env.wait_for(by_subject("control"), 3, Duration::from_secs(60))
        .await?;
    env.wait_for(by_subject("evidence"), 2, Duration::from_secs(60))
        .await?;
    let forged = env
        .wait_for(by_subject("forged"), 1, Duration::from_secs(60))
        .await?;
    assert_eq!(email(&forged[0]).subject, "forged 1", "stored as shipped");
    assert_eq!(forged[0].seq, seq);

    let integrity = SearchRequest {
        kind: "integrity".into(),
        ..Default::default()
    };
    env.wait_for(integrity.clone(), 1, Duration::from_secs(60))
        .await?;
    // Nothing else is reported, also a moment later.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reports: Vec<Event> = env.search_all(integrity).await?;
    assert_eq!(reports.len(), 1, "exactly one report: {reports:#?}");
    let Some(Kind::Integrity(found)) = &reports[0].kind else {
        anyhow::bail!("not an integrity record: {:?}", reports[0]);
    };
    assert_eq!(reports[0].agent_id, "pc-ev", "{found:?}");
    assert_eq!(found.stream_id, forged[0].stream_id, "{found:?}");
    assert!(found.tampering, "{found:?}");
    assert_eq!(found.what, "altered", "{found:?}");
    // The rewritten event, or its successor whose link no longer matches.
    let last = found.last_seq.max(found.first_seq);
    assert!(
        [seq, seq + 1]
            .iter()
            .any(|s| (found.first_seq..=last).contains(s)),
        "names event {seq}: {found:?}"
    );
    Ok(())
}

/// A buffer damaged on the agent's disk (bytes flipped in sled's log: sled
/// cuts the log there, or declares the database damaged and the agent
/// moves it aside) is an agent-reported loss: the agent restarts its chain
/// saying why, and the collector records that without calling it
/// tampering.
#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_agent_buffer_is_a_reported_loss_not_tampering() -> anyhow::Result<()> {
    let env = Env::new()?;
    let smtp = free_port();
    // No collector yet: everything stays in the agent's buffer.
    let mut agent = env.start_agent("pc-rot", smtp, &Mode::CaptureOnly)?;
    send(smtp, "rotten", 40)?;
    // The side file names the highest durable number within a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    agent.terminate();
    let db = env.path().join("agent-pc-rot").join("sled").join("db");
    let mut bytes = std::fs::read(&db)?;
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 32] {
        *b ^= 0x55;
    }
    std::fs::write(&db, &bytes)?;

    let _collector = env.start_collector()?;
    let _agent = env.start_agent("pc-rot", smtp, &Mode::CaptureOnly)?;
    send(smtp, "fresh", 2)?;
    env.wait_for(by_subject("fresh"), 2, Duration::from_secs(60))
        .await?;
    let integrity = SearchRequest {
        kind: "integrity".into(),
        ..Default::default()
    };
    env.wait_for(integrity.clone(), 1, Duration::from_secs(30))
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reports = env.search_all(integrity).await?;
    for r in &reports {
        let Some(Kind::Integrity(found)) = &r.kind else {
            anyhow::bail!("not an integrity record: {r:?}");
        };
        assert_eq!(found.what, "agent_reported_loss", "{found:?}");
        assert!(!found.tampering, "{found:?}");
        assert!(found.detail.contains("damaged"), "{found:?}");
    }
    Ok(())
}

/// The agent keeps the collector's signed checkpoints byte for byte as the
/// collector wrote them (`Ack.checkpoint`), so a copy of the heads exists
/// outside the collector.
#[tokio::test(flavor = "multi_thread")]
async fn the_agent_keeps_the_collectors_checkpoints() -> anyhow::Result<()> {
    kiroku_tests::ensure_test_hooks()?;
    let env = Env::new()?;
    let collector = env.start_collector_with("[checkpoint]\ninterval = \"1s\"\n")?;
    let smtp = free_port();
    let mut agent = env.start_agent("pc-ckp", smtp, &Mode::CaptureOnly)?;
    send(smtp, "kept", 1)?;
    env.wait_for(by_subject("kept"), 1, Duration::from_secs(60))
        .await?;
    // A checkpoint covers that event; the next acknowledgement carries it
    // (once the collector has recorded it: its log line comes after).
    collector
        .wait_log("checkpoint written", Duration::from_secs(30))
        .await?;
    let dir = env.path().join("collector").join("checkpoints");
    send(smtp, "again", 1)?;
    agent
        .wait_log(
            "kept the collector's signed checkpoint",
            Duration::from_secs(30),
        )
        .await?;
    agent.terminate();

    let data = env.path().join("agent-pc-ckp");
    let kept = rewrite_tool(&["--data", data.to_str().unwrap_or_default(), "--checkpoints"])?;
    let mut matched = 0;
    for line in kept.lines() {
        let (number, sha) = line
            .split_once('\t')
            .ok_or_else(|| anyhow::anyhow!("unexpected line {line:?}"))?;
        let number: u64 = number.parse()?;
        let file = dir.join(format!("{number:020}.ckp"));
        let bytes = std::fs::read(&file)?;
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&bytes)),
            sha,
            "checkpoint {number} kept as {} holds it",
            file.display()
        );
        matched += 1;
    }
    assert!(matched >= 1, "no checkpoint kept:\n{kept}");
    Ok(())
}
