//! Roles are enforced from the client certificate: agents may only ingest,
//! and only as themselves; investigators may only query; no certificate or
//! a certificate from another CA gets nothing.

use kiroku_proto::ingest_client::IngestClient;
use kiroku_proto::query_client::QueryClient;
use kiroku_proto::{
    Batch, EmailEvent, Event, Hello, MissingBlobsRequest, SearchRequest, ShipRequest, event::Kind,
    ship_request,
};
use kiroku_tests::Env;
use tonic::Code;

fn search() -> SearchRequest {
    SearchRequest::default()
}

#[tokio::test(flavor = "multi_thread")]
async fn roles_are_enforced_from_certificates() -> anyhow::Result<()> {
    let env = Env::new()?;
    let collector = env.start_collector()?;
    let pki = env.pki();
    let (a_cert, a_key) = env.issue("agent", "agent-a", &[])?;

    // An agent may not query.
    let ch = env.channel(Some((&a_cert, &a_key)), None).await?;
    let err = QueryClient::new(ch.clone())
        .search(search())
        .await
        .expect_err("agent must not query");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("agent/agent-a"), "{}", err.message());

    // An investigator may not ingest.
    let inv = env
        .channel(
            Some((
                &pki.join("investigator-inv.pem"),
                &pki.join("investigator-inv.key"),
            )),
            None,
        )
        .await?;
    let err = IngestClient::new(inv.clone())
        .missing_blobs(MissingBlobsRequest { sha256: vec![] })
        .await
        .expect_err("investigator must not ingest");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // ... but may query; an admin may do both.
    QueryClient::new(inv).search(search()).await?;
    let admin = env.admin().await?;
    QueryClient::new(admin.clone()).search(search()).await?;
    IngestClient::new(admin)
        .missing_blobs(MissingBlobsRequest { sha256: vec![] })
        .await?;

    // Agent A cannot submit events as agent B.
    let hello = ShipRequest {
        msg: Some(ship_request::Msg::Hello(Hello {
            stream_id: "s1".into(),
            ..Default::default()
        })),
    };
    let forged = ShipRequest {
        msg: Some(ship_request::Msg::Batch(Batch {
            events: vec![Event {
                agent_id: "agent-b".into(),
                stream_id: "s1".into(),
                seq: 1,
                kind: Some(Kind::Email(EmailEvent::default())),
                ..Default::default()
            }],
            ..Default::default()
        })),
    };
    let mut responses = IngestClient::new(ch)
        .ship(tokio_stream::iter(vec![hello, forged]))
        .await?
        .into_inner();
    let welcome = responses.message().await?;
    assert!(welcome.is_some());
    let err = loop {
        match responses.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("stream ended without refusing the forged batch"),
            Err(e) => break e,
        }
    };
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let mut q = env.investigator().await?;
    assert_eq!(
        q.search(search()).await?.into_inner().total_hits,
        0,
        "nothing forged was stored"
    );

    // No client certificate: the TLS handshake is refused.
    let res = async {
        let ch = env.channel(None, None).await?;
        QueryClient::new(ch)
            .search(search())
            .await
            .map_err(anyhow::Error::from)
    }
    .await;
    assert!(res.is_err(), "a client without certificate must be refused");

    // A certificate from another CA (same names!) is refused.
    let other = tempfile::tempdir()?;
    let other_pki = other.path().join("pki");
    let p = other_pki.to_string_lossy().into_owned();
    env.kiroku(&["certs", "init", "--dir", &p])?;
    env.kiroku(&[
        "certs", "issue", "--dir", &p, "--role", "admin", "--name", "boss",
    ])?;
    let res = async {
        let ch = env
            .channel(
                Some((
                    &other_pki.join("admin-boss.pem"),
                    &other_pki.join("admin-boss.key"),
                )),
                None,
            )
            .await?;
        QueryClient::new(ch)
            .search(search())
            .await
            .map_err(anyhow::Error::from)
    }
    .await;
    assert!(
        res.is_err(),
        "a certificate from another CA must be refused"
    );

    // Hostile requests from authenticated callers get clear errors.
    let mut q = env.investigator().await?;
    let err = q
        .search(SearchRequest {
            page_token: "99999999999".into(),
            ..search()
        })
        .await
        .expect_err("absurd page offsets are refused, not allocated");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = q
        .search(SearchRequest {
            text: "subject:(unclosed".into(),
            ..search()
        })
        .await
        .expect_err("bad query syntax");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let admin = env.admin().await?;
    let err = IngestClient::new(admin)
        .missing_blobs(MissingBlobsRequest {
            sha256: vec!["../../etc/passwd".into()],
        })
        .await
        .expect_err("blob names are hashes, never paths");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // Refusals are logged with the peer's identity.
    let log = collector.log_text();
    assert!(
        log.contains("refused") && log.contains("agent/agent-a"),
        "{log}"
    );
    assert!(log.contains("investigator/inv"), "{log}");
    Ok(())
}

/// Ships `events` on a new Ship stream as `cert`; returns the acks or the
/// error that ended the stream.
async fn ship(
    env: &Env,
    cert: (&std::path::Path, &std::path::Path),
    stream_id: &str,
    batches: Vec<Vec<Event>>,
) -> anyhow::Result<Result<Vec<kiroku_proto::Ack>, tonic::Status>> {
    let ch = env.channel(Some(cert), None).await?;
    let mut msgs = vec![ShipRequest {
        msg: Some(ship_request::Msg::Hello(Hello {
            stream_id: stream_id.into(),
            ..Default::default()
        })),
    }];
    let n = batches.len();
    msgs.extend(batches.into_iter().map(|events| ShipRequest {
        msg: Some(ship_request::Msg::Batch(Batch {
            events,
            ..Default::default()
        })),
    }));
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    for m in msgs {
        tx.send(m).await?;
    }
    let mut responses = IngestClient::new(ch)
        .max_encoding_message_size(64 << 20)
        .ship(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut acks = Vec::new();
    loop {
        match responses.message().await {
            Ok(Some(kiroku_proto::ShipResponse {
                msg: Some(kiroku_proto::ship_response::Msg::Ack(a)),
            })) => {
                acks.push(a);
                if acks.len() == n {
                    drop(tx);
                    return Ok(Ok(acks));
                }
            }
            Ok(Some(_)) => continue,
            Ok(None) => return Ok(Ok(acks)),
            Err(e) => return Ok(Err(e)),
        }
    }
}

fn mail_event(stream: &str, seq: u64, subject: &str) -> Event {
    Event {
        stream_id: stream.into(),
        seq,
        kind: Some(Kind::Email(EmailEvent {
            subject: subject.into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn replayed_batches_are_stored_once_and_oversized_messages_refused() -> anyhow::Result<()> {
    let env = Env::new()?;
    let collector = env.start_collector()?;
    let (cert, key) = env.issue("agent", "replayer", &[])?;
    let batch: Vec<Event> = (1..=3)
        .map(|i| mail_event("replay1", i, &format!("replayed {i}")))
        .collect();
    // The same batch three times: once in one stream, twice more on a
    // second stream (a reconnect replaying what it sent before).
    let first = ship(&env, (&cert, &key), "replay1", vec![batch.clone()]).await?;
    let first = first.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert_eq!((first[0].stored, first[0].duplicates), (3, 0));
    let again = ship(&env, (&cert, &key), "replay1", vec![batch.clone(), batch]).await?;
    let again = again.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert!(
        again.iter().all(|a| a.stored == 0 && a.duplicates == 3),
        "{again:?}"
    );
    let mut q = env.investigator().await?;
    let hits = q
        .search(SearchRequest {
            subject: "replayed".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .total_hits;
    assert_eq!(hits, 3, "each event once");

    // A batch over the collector's message limit (16 MiB) is refused with
    // a clear status, nothing of it is stored, and the collector serves on.
    let big = vec![Event {
        custom: [("blob".to_owned(), "x".repeat(20 << 20))]
            .into_iter()
            .collect(),
        ..mail_event("big1", 1, "oversized")
    }];
    let res = ship(&env, (&cert, &key), "big1", vec![big]).await?;
    let err = res.expect_err("an oversized batch must be refused");
    assert!(
        matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted)
            && err.message().contains("too large"),
        "{err:?}"
    );
    let hits = q
        .search(SearchRequest {
            subject: "oversized".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .total_hits;
    assert_eq!(hits, 0);
    assert_eq!(
        env.investigator()
            .await?
            .search(search())
            .await?
            .into_inner()
            .total_hits,
        3,
        "the collector still answers"
    );
    drop(collector);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn queries_are_in_a_tamper_evident_audit_log_only_admins_read() -> anyhow::Result<()> {
    let env = Env::new()?;
    let _collector = env.start_collector()?;
    let mut inv = env.investigator().await?;
    inv.search(SearchRequest {
        sender: "alice@example.com".into(),
        ..Default::default()
    })
    .await?;
    let _ = inv
        .get_event(kiroku_proto::GetEventRequest {
            event_id: "nope/1/1".into(),
        })
        .await;
    let err = inv
        .audit(kiroku_proto::AuditRequest::default())
        .await
        .expect_err("investigators may not read the audit log");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    let admin = env.admin().await?;
    let r = QueryClient::new(admin.clone())
        .audit(kiroku_proto::AuditRequest::default())
        .await?
        .into_inner();
    assert!(r.chain_ok, "{r:?}");
    let search = r
        .entries
        .iter()
        .find(|e| e.call == "Search")
        .expect("the search is logged");
    // After the collector's start (an admin entry).
    let search_seq = search.seq;
    assert_eq!(search.identity, "investigator/inv");
    assert!(search.filter.contains("alice@example.com"), "{search:?}");
    assert!(
        r.entries
            .iter()
            .any(|e| e.call == "GetEvent" && e.filter.contains("nope/1/1"))
    );
    assert!(
        r.entries
            .iter()
            .any(|e| e.call == "Audit" && e.identity == "admin/boss")
    );

    // Someone edits the log on disk: the chain shows where.
    let log = env.path().join("collector").join("audit.log");
    let text = std::fs::read_to_string(&log)?;
    std::fs::write(
        &log,
        text.replacen("alice@example.com", "bob@example.com", 1),
    )?;
    let r = QueryClient::new(admin)
        .audit(kiroku_proto::AuditRequest::default())
        .await?
        .into_inner();
    assert!(!r.chain_ok, "{r:?}");
    assert!(
        r.problem.contains(&format!("seq {search_seq}")),
        "{}",
        r.problem
    );
    Ok(())
}
