//! Agents as accounts (issue 19, item 5 and the group of item 1), end to
//! end with the real collector and CLI: an agent's group comes from its
//! certificate and never from what it sends; the agents' issuing CA signs
//! agents only (an admin certificate it signed is refused) while agents the
//! root issued stay accepted; retiring an agent revokes its certificate in
//! the agents' revocation list the collector writes, cuts its connection,
//! refuses its next one and keeps its events; silent agents are listed by
//! `kiroku hosts --stale`; all of it in the audit log.

use std::path::Path;

use kiroku_proto::ingest_client::IngestClient;
use kiroku_proto::{
    Batch, EmailEvent, Event, Hello, RecordedEvent, SearchRequest, ShipRequest, event::Kind,
    ship_request, ship_response,
};
use kiroku_tests::Env;
use prost::Message;

/// Ships `n` mails on stream `s1` as the agent with `cert`/`key`, each
/// claiming group `claimed` in its recorded bytes; returns how many the
/// collector stored.
async fn ship_as(
    env: &Env,
    cert: &Path,
    key: &Path,
    first_seq: u64,
    n: u64,
    claimed: &str,
) -> anyhow::Result<u32> {
    let recorded = (first_seq..first_seq + n)
        .map(|seq| RecordedEvent {
            event: Event {
                stream_id: "s1".into(),
                seq,
                agent_group: claimed.into(),
                kind: Some(Kind::Email(EmailEvent {
                    subject: format!("group test {seq}"),
                    ..Default::default()
                })),
                ..Default::default()
            }
            .encode_to_vec(),
            raw_not_kept: String::new(),
        })
        .collect();
    let msgs = vec![
        ShipRequest {
            msg: Some(ship_request::Msg::Hello(Hello {
                stream_id: "s1".into(),
                ..Default::default()
            })),
        },
        ShipRequest {
            msg: Some(ship_request::Msg::Batch(Batch {
                recorded,
                ..Default::default()
            })),
        },
    ];
    let ch = env.channel(Some((cert, key)), None).await?;
    let mut resp = IngestClient::new(ch)
        .ship(tokio_stream::iter(msgs))
        .await?
        .into_inner();
    while let Some(m) = resp.message().await? {
        if let Some(ship_response::Msg::Ack(a)) = m.msg {
            return Ok(a.stored);
        }
    }
    anyhow::bail!("Ship ended without an Ack")
}

fn issue_in_group(env: &Env, name: &str, group: Option<&str>) -> anyhow::Result<String> {
    let pki = env.pki();
    let mut args = vec![
        "certs",
        "issue",
        "--dir",
        pki.to_str().unwrap_or_default(),
        "--role",
        "agent",
        "--name",
        name,
    ];
    if let Some(g) = group {
        args.extend(["--group", g]);
    }
    env.kiroku(&args)
}

fn hosts_json(env: &Env, extra: &[&str]) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut args = vec!["hosts", "--json"];
    args.extend_from_slice(extra);
    let (code, out, err) = env.cli_as("investigator-inv", &args)?;
    anyhow::ensure!(code == 0, "kiroku hosts failed: {err}");
    out.lines()
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect::<anyhow::Result<Vec<_>>>()
}

#[tokio::test(flavor = "multi_thread")]
async fn group_comes_from_the_certificate_never_from_the_agent() -> anyhow::Result<()> {
    let env = Env::new()?;
    let _collector = env.start_collector()?;
    let said = issue_in_group(&env, "sales-1", Some("sales"))?;
    assert!(said.contains("in group sales"), "{said}");
    issue_in_group(&env, "plain-1", None)?;
    // A group is validated like a name, and only agents have one.
    let pki = env.pki();
    let pki = pki.to_str().unwrap_or_default();
    let bad = env.kiroku(&[
        "certs", "issue", "--dir", pki, "--role", "agent", "--name", "x", "--group", "../up",
    ]);
    assert!(
        bad.as_ref()
            .is_err_and(|e| e.to_string().contains("invalid group")),
        "{bad:?}"
    );
    let bad = env.kiroku(&[
        "certs", "issue", "--dir", pki, "--role", "admin", "--name", "x", "--group", "sales",
    ]);
    assert!(
        bad.as_ref()
            .is_err_and(|e| e.to_string().contains("agent certificates only")),
        "{bad:?}"
    );

    // Both agents claim group "legal" in what they send: the collector
    // keeps the certificate's group (or none).
    let dir = env.pki();
    for (name, n) in [("sales-1", 2), ("plain-1", 1)] {
        let stored = ship_as(
            &env,
            &dir.join(format!("agent-{name}.pem")),
            &dir.join(format!("agent-{name}.key")),
            1,
            n,
            "legal",
        )
        .await?;
        assert_eq!(stored, n as u32);
    }
    let events = env
        .wait_for(
            SearchRequest::default(),
            3,
            std::time::Duration::from_secs(20),
        )
        .await?;
    for e in &events {
        let want = if e.agent_id == "sales-1" { "sales" } else { "" };
        assert_eq!(e.agent_group, want, "{}: {e:?}", e.event_id);
    }
    // The CLI shows it too (the merged view, read back from the store).
    let (code, out, err) = env.cli_as("investigator-inv", &["show", "sales-1/s1/1", "--json"])?;
    assert_eq!(code, 0, "{err}");
    let shown: serde_json::Value = serde_json::from_str(out.trim())?;
    assert_eq!(shown["agent_group"], "sales", "{shown}");

    let hosts = hosts_json(&env, &[])?;
    let group_of = |name: &str| {
        hosts
            .iter()
            .find(|h| h["agent_id"] == name)
            .map(|h| h["agent_group"].clone())
    };
    assert_eq!(group_of("sales-1"), Some("sales".into()), "{hosts:?}");
    assert_eq!(group_of("plain-1"), Some("".into()), "{hosts:?}");
    Ok(())
}
