//! The collector's connection lifecycle with real binaries: a SIGTERM does
//! not wait for idle agent streams and the agents come back to the
//! restarted collector without losing anything; an event is acknowledged
//! only once the collector holds its raw message, and a raw message the
//! agent lost is stored as lost rather than stalling the stream.

use std::time::{Duration, Instant};

use kiroku_proto::ingest_client::IngestClient;
use kiroku_proto::query_client::QueryClient;
use kiroku_proto::{
    Ack, Batch, BlobChunk, EmailEvent, Event, GetEventRequest, Hello, MissingBlobsRequest,
    SearchRequest, ShipRequest, event::Kind, ship_request, ship_response,
};
use kiroku_tests::{Env, Mode, email, free_port, send_mail};

fn mail(tag: &str, n: usize) -> Vec<u8> {
    format!(
        "From: load@example.com\r\nTo: sink@example.org\r\nSubject: {tag} {n}\r\nMessage-ID: <{tag}-{n}@example.com>\r\n\r\nbody {n}\r\n"
    )
    .into_bytes()
}

fn send(smtp: u16, tag: &str, n: usize) -> anyhow::Result<()> {
    let s = send_mail(
        smtp,
        "load@example.com",
        &["sink@example.org"],
        &mail(tag, n),
    )?;
    anyhow::ensure!(s.code == 250, "mail {tag} {n}: {s:?}");
    Ok(())
}

fn by_subject(tag: &str) -> SearchRequest {
    SearchRequest {
        subject: tag.into(),
        ..Default::default()
    }
}

/// Issue 15, finding 11: with agents connected and idle, SIGTERM made the
/// collector wait for their streams (about two minutes; the systemd unit
/// kills at 60 s). Now it tells them to go away and exits 0 within
/// seconds; the agents buffer meanwhile and reconnect to the restarted
/// collector at once, and every mail arrives exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_idle_agents_exits_promptly_and_they_come_back() -> anyhow::Result<()> {
    let env = Env::new()?;
    let mut collector = env.start_collector()?;
    let ports = [free_port(), free_port()];
    let agents = [
        env.start_agent("pc-term1", ports[0], &Mode::CaptureOnly)?,
        env.start_agent("pc-term2", ports[1], &Mode::CaptureOnly)?,
    ];
    for (i, smtp) in ports.iter().enumerate() {
        send(*smtp, "sigterm", i)?;
    }
    env.wait_for(by_subject("sigterm"), 2, Duration::from_secs(30))
        .await?;
    // Both streams idle now.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let term = Instant::now();
    let st = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(collector.pid().to_string())
        .status()?;
    anyhow::ensure!(st.success(), "kill -TERM");
    while collector.is_running() {
        anyhow::ensure!(
            term.elapsed() < Duration::from_secs(20),
            "the collector did not exit within 20 s of SIGTERM with idle agents connected:\n{}",
            collector.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("collector exited {:?} after SIGTERM", term.elapsed());
    assert_eq!(collector.exit_code(), Some(0), "{}", collector.log_text());
    assert!(
        term.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        term.elapsed()
    );
    for a in &agents {
        a.wait_log("the collector is shutting down", Duration::from_secs(5))
            .await?;
    }

    // Mail goes on while the collector is away, and arrives once it is back.
    for (i, smtp) in ports.iter().enumerate() {
        send(*smtp, "sigterm", 2 + i)?;
    }
    let restarted = Instant::now();
    let _collector = env.start_collector()?;
    let events = env
        .wait_for(by_subject("sigterm"), 4, Duration::from_secs(30))
        .await?;
    eprintln!("agents back {:?} after the restart", restarted.elapsed());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let events = env
        .search_all(by_subject("sigterm"))
        .await
        .unwrap_or(events);
    let mut ids: Vec<String> = events.iter().map(|e| email(e).message_id.clone()).collect();
    ids.sort();
    let want: Vec<String> = (0..4)
        .map(|i| format!("<sigterm-{i}@example.com>"))
        .collect();
    assert_eq!(ids, want, "every mail exactly once");
    Ok(())
}

/// A mail of about 200 KB: over the agent's inline limit, so its raw
/// message is a file of its own in the agent's buffer.
fn big_mail(tag: &str, n: usize) -> Vec<u8> {
    let line = format!("{tag} {n} lorem ipsum dolor sit amet consectetur adipiscing elit\r\n");
    format!(
        "From: load@example.com\r\nTo: sink@example.org\r\nSubject: {tag} {n}\r\nMessage-ID: <{tag}-{n}@example.com>\r\n\r\n{}",
        line.repeat(3000)
    )
    .into_bytes()
}

/// Issue 15, finding 10 (agent side): a raw message lost from the agent's
/// buffer was shipped as if nothing were wrong (only a warning in the
/// agent's log), and `GetRaw` later answered NotFound. Now the event says
/// so (`raw_not_kept`), it is stored, and the mails after it are not held
/// up.
#[tokio::test(flavor = "multi_thread")]
async fn a_raw_message_lost_on_the_agent_is_stored_as_lost_and_shipping_goes_on()
-> anyhow::Result<()> {
    let env = Env::new()?;
    let smtp = free_port();
    // No collector yet: the mails stay in the agent's buffer.
    let agent = env.start_agent("pc-lost", smtp, &Mode::CaptureOnly)?;
    let raw = big_mail("lostraw", 0);
    let s = send_mail(smtp, "load@example.com", &["sink@example.org"], &raw)?;
    assert_eq!(s.code, 250, "{s:?}");
    send(smtp, "lostraw", 1)?;
    let sha = kiroku_common::sha256_hex(&raw);
    let blob = env.path().join("agent-pc-lost").join("blobs").join(&sha);
    std::fs::remove_file(&blob)
        .map_err(|e| anyhow::anyhow!("the agent keeps {}: {e}", blob.display()))?;

    let _collector = env.start_collector()?;
    let events = env
        .wait_for(by_subject("lostraw"), 2, Duration::from_secs(30))
        .await?;
    let lost = events
        .iter()
        .find(|e| email(e).message_id == "<lostraw-0@example.com>")
        .ok_or_else(|| anyhow::anyhow!("the mail whose raw message was lost is stored"))?;
    let m = email(lost);
    assert_eq!(m.raw_sha256, sha, "the event still names the hash");
    assert!(
        m.raw_not_kept.contains("lost on the agent"),
        "the event says its raw message was lost: {m:?}"
    );
    assert!(
        env.raw(&lost.event_id).await.is_err(),
        "nothing to return for it"
    );
    assert!(agent.log_text().contains("not in the buffer"));
    let shown = env.cli(&["show", &lost.event_id])?;
    assert!(
        shown.contains("raw not kept") && shown.contains("lost on the agent"),
        "kiroku show says why: {shown}"
    );
    // Shipping goes on after it.
    send(smtp, "lostraw", 2)?;
    env.wait_for(by_subject("lostraw"), 3, Duration::from_secs(30))
        .await?;
    Ok(())
}

/// A raw message the collector refuses for good (here: over its
/// `max_blob_bytes`) must not hold its stream back forever (the buffer
/// would fill and the relay refuse mail): the event is stored saying why
/// its raw message is not kept, and the mails after it ship.
#[tokio::test(flavor = "multi_thread")]
async fn a_raw_message_the_collector_refuses_for_good_does_not_stall_the_stream()
-> anyhow::Result<()> {
    let env = Env::new()?;
    let smtp = free_port();
    let _collector = env.start_collector_top("max_blob_bytes = 100000")?;
    let _agent = env.start_agent("pc-refused", smtp, &Mode::CaptureOnly)?;
    let raw = big_mail("refusedraw", 0);
    assert!(raw.len() > 100_000);
    let s = send_mail(smtp, "load@example.com", &["sink@example.org"], &raw)?;
    assert_eq!(s.code, 250, "{s:?}");
    send(smtp, "refusedraw", 1)?;
    let events = env
        .wait_for(by_subject("refusedraw"), 2, Duration::from_secs(30))
        .await?;
    let refused = events
        .iter()
        .find(|e| email(e).message_id == "<refusedraw-0@example.com>")
        .ok_or_else(|| anyhow::anyhow!("the mail whose raw message was refused is stored"))?;
    let m = email(refused);
    assert!(
        m.raw_not_kept.contains("refused by the collector"),
        "the event says why its raw message is not kept: {m:?}"
    );
    send(smtp, "refusedraw", 2)?;
    env.wait_for(by_subject("refusedraw"), 3, Duration::from_secs(30))
        .await?;
    Ok(())
}

/// Ships `batches` on one Ship stream as `cert`; the acks, in order.
async fn ship(
    env: &Env,
    cert: (&std::path::Path, &std::path::Path),
    stream_id: &str,
    batches: Vec<Vec<Event>>,
) -> anyhow::Result<Vec<Ack>> {
    let ch = env.channel(Some(cert), None).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(ShipRequest {
        msg: Some(ship_request::Msg::Hello(Hello {
            stream_id: stream_id.into(),
            ..Default::default()
        })),
    })
    .await?;
    let mut responses = IngestClient::new(ch)
        .ship(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut acks = Vec::new();
    // One batch at a time, each after the previous one's ack, as agents do.
    for events in batches {
        tx.send(ShipRequest {
            msg: Some(ship_request::Msg::Batch(Batch {
                events,
                ..Default::default()
            })),
        })
        .await?;
        loop {
            match responses.message().await? {
                Some(kiroku_proto::ShipResponse {
                    msg: Some(ship_response::Msg::Ack(a)),
                }) => {
                    acks.push(a);
                    break;
                }
                Some(_) => continue,
                None => anyhow::bail!("stream ended after {} acks", acks.len()),
            }
        }
    }
    Ok(acks)
}

fn raw_mail(stream: &str, seq: u64, subject: &str, raw_sha256: &str, not_kept: &str) -> Event {
    Event {
        stream_id: stream.into(),
        seq,
        kind: Some(Kind::Email(EmailEvent {
            subject: subject.into(),
            raw_sha256: raw_sha256.into(),
            raw_not_kept: not_kept.into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// Issue 15, finding 10 (collector side): an event naming a raw message
/// the collector never received was acknowledged and stored, so `GetRaw`
/// answered NotFound later. Now the Ack stops before it and names the
/// missing blob; once uploaded, the resent batch is stored and the raw
/// message served. An event that says its content was lost is stored as
/// such, without a blob.
#[tokio::test(flavor = "multi_thread")]
async fn events_are_acknowledged_only_once_their_raw_message_is_held() -> anyhow::Result<()> {
    let env = Env::new()?;
    let _collector = env.start_collector()?;
    let (cert, key) = env.issue("agent", "blobless", &[])?;
    let raw = b"From: a@example.com\r\nSubject: held back\r\n\r\nbody\r\n".to_vec();
    let sha = kiroku_common::sha256_hex(&raw);
    let batch = vec![
        raw_mail("s1", 1, "heldback one", "", ""),
        raw_mail("s1", 2, "heldback two", &sha, ""),
        raw_mail("s1", 3, "heldback three", "", ""),
    ];
    // The blob was never uploaded (an upload that failed, or an agent that
    // skipped it): only the event before it is acknowledged.
    let acks = ship(&env, (&cert, &key), "s1", vec![batch.clone()]).await?;
    assert_eq!(acks[0].stored_seq, 1, "{:?}", acks[0]);
    assert_eq!(acks[0].missing_blobs, vec![sha.clone()]);
    let mut q = env.investigator().await?;
    let hits = q.search(by_subject("heldback")).await?.into_inner();
    assert_eq!(hits.total_hits, 1, "{:?}", hits.events);

    // The agent uploads it and sends the rest again.
    IngestClient::new(env.channel(Some((&cert, &key)), None).await?)
        .put_blob(tokio_stream::iter(vec![BlobChunk {
            sha256: sha.clone(),
            size: raw.len() as u64,
            data: raw.clone(),
        }]))
        .await?;
    let acks = ship(&env, (&cert, &key), "s1", vec![batch[1..].to_vec()]).await?;
    assert_eq!(acks[0].stored_seq, 3, "{:?}", acks[0]);
    assert!(acks[0].missing_blobs.is_empty());
    assert_eq!(env.raw("blobless/s1/2").await?, raw);

    // Another agent is not told whether this content is stored: for it the
    // blob is missing, and its own upload is not "already stored".
    let (ncert, nkey) = env.issue("agent", "nosy", &[])?;
    let mut nosy = IngestClient::new(env.channel(Some((&ncert, &nkey)), None).await?);
    let ask = || MissingBlobsRequest {
        sha256: vec![sha.clone()],
    };
    assert_eq!(
        nosy.missing_blobs(ask()).await?.into_inner().sha256,
        vec![sha.clone()]
    );
    let mut owner = IngestClient::new(env.channel(Some((&cert, &key)), None).await?);
    assert!(
        owner
            .missing_blobs(ask())
            .await?
            .into_inner()
            .sha256
            .is_empty()
    );
    let upload = || {
        tokio_stream::iter(vec![BlobChunk {
            sha256: sha.clone(),
            size: raw.len() as u64,
            data: raw.clone(),
        }])
    };
    assert!(!nosy.put_blob(upload()).await?.into_inner().already_stored);
    assert!(nosy.put_blob(upload()).await?.into_inner().already_stored);
    assert!(
        nosy.missing_blobs(ask())
            .await?
            .into_inner()
            .sha256
            .is_empty()
    );

    // Content the agent no longer has: stored, saying so.
    let gone = kiroku_common::sha256_hex(b"never uploaded");
    let acks = ship(
        &env,
        (&cert, &key),
        "s1",
        vec![vec![raw_mail(
            "s1",
            4,
            "heldback four",
            &gone,
            "lost on the agent: test",
        )]],
    )
    .await?;
    assert_eq!(acks[0].stored_seq, 4, "{:?}", acks[0]);
    let mut q: QueryClient<_> = env.investigator().await?;
    let e = q
        .get_event(GetEventRequest {
            event_id: "blobless/s1/4".into(),
        })
        .await?
        .into_inner();
    assert_eq!(email(&e).raw_not_kept, "lost on the agent: test");
    Ok(())
}
