//! Agents as accounts (issue 19, item 5 and the group of item 1), end to
//! end with the real collector and CLI: an agent's group comes from its
//! certificate and never from what it sends; the agents' issuing CA signs
//! agents only (an admin certificate it signed is refused) while agents the
//! root issued stay accepted; retiring an agent revokes its certificate in
//! the agents' revocation list the collector writes, cuts its connection,
//! refuses its next one and keeps its events; silent agents are listed by
//! `kiroku hosts --stale`; all of it in the audit log.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiroku_proto::ingest_client::IngestClient;
use kiroku_proto::{
    Batch, EmailEvent, Event, Hello, RecordedEvent, SearchRequest, ShipRequest, event::Kind,
    ship_request, ship_response,
};
use kiroku_tests::Env;
use kiroku_tests::enroll::admin_audit;
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

/// The agents' issuing CA made in the test PKI, with the collector
/// configuration for it (and the root's revocation list written).
fn agents_ca(env: &Env) -> anyhow::Result<(String, String)> {
    let pki = env.pki();
    let dir = pki.to_str().unwrap_or_default();
    let said = env.kiroku(&["certs", "agents-ca", "--dir", dir])?;
    assert!(said.contains("agents-ca.pem"), "{said}");
    env.kiroku(&["certs", "revoke", "--dir", dir])?;
    let top = format!("crl = {:?}\n", pki.join("crl.pem"));
    let section = format!(
        "[agents_ca]\ncert = {:?}\nkey = {:?}\ncrl = {:?}\n",
        pki.join("agents-ca.pem"),
        pki.join("agents-ca.key"),
        pki.join("agents-crl.pem")
    );
    Ok((top, section))
}

/// An admin certificate signed by the agents CA (what a stolen collector
/// key could mint), with its chain, as `pki/admin-evil.pem`.
fn rogue_admin(env: &Env) -> anyhow::Result<()> {
    let pki = env.pki();
    let rogue = env.path().join("rogue");
    std::fs::create_dir_all(&rogue)?;
    std::fs::copy(pki.join("agents-ca.pem"), rogue.join("ca.pem"))?;
    std::fs::copy(pki.join("agents-ca.key"), rogue.join("ca.key"))?;
    env.kiroku(&[
        "certs",
        "issue",
        "--dir",
        rogue.to_str().unwrap_or_default(),
        "--role",
        "admin",
        "--name",
        "evil",
    ])?;
    let mut chain = std::fs::read(rogue.join("admin-evil.pem"))?;
    chain.extend(std::fs::read(pki.join("agents-ca.pem"))?);
    std::fs::write(pki.join("admin-evil.pem"), chain)?;
    std::fs::copy(rogue.join("admin-evil.key"), pki.join("admin-evil.key"))?;
    Ok(())
}

fn agent_files(env: &Env, name: &str) -> (PathBuf, PathBuf) {
    let pki = env.pki();
    (
        pki.join(format!("agent-{name}.pem")),
        pki.join(format!("agent-{name}.key")),
    )
}

/// An open Ship stream (Hello answered), kept until dropped.
struct OpenStream {
    _tx: tokio::sync::mpsc::Sender<ShipRequest>,
    resp: tonic::Streaming<kiroku_proto::ShipResponse>,
}

async fn open_stream(env: &Env, name: &str) -> anyhow::Result<OpenStream> {
    let (cert, key) = agent_files(env, name);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(ShipRequest {
        msg: Some(ship_request::Msg::Hello(Hello {
            stream_id: "live".into(),
            ..Default::default()
        })),
    })
    .await?;
    let ch = env.channel(Some((&cert, &key)), None).await?;
    let mut resp = IngestClient::new(ch)
        .ship(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    match resp.message().await? {
        Some(m) if matches!(m.msg, Some(ship_response::Msg::Welcome(_))) => {}
        other => anyhow::bail!("expected Welcome, got {other:?}"),
    }
    Ok(OpenStream { _tx: tx, resp })
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_ca_issues_agents_only_and_retiring_revokes() -> anyhow::Result<()> {
    let env = Env::new()?;
    // An agent the root issued before the agents CA existed.
    issue_in_group(&env, "legacy", None)?;
    let (top, section) = agents_ca(&env)?;
    let said = issue_in_group(&env, "a1", Some("ops"))?;
    assert!(said.contains("agents' issuing CA"), "{said}");
    rogue_admin(&env)?;
    let collector = env.start_collector_full(&top, &section)?;
    assert!(
        env.pki().join("agents-crl.pem").exists(),
        "the collector writes the agents' list"
    );

    // Both agents are accepted, with the group of the certificate.
    for name in ["a1", "legacy"] {
        let (c, k) = agent_files(&env, name);
        assert_eq!(ship_as(&env, &c, &k, 1, 2, "").await?, 2, "{name}");
    }
    let events = env
        .wait_for(SearchRequest::default(), 4, Duration::from_secs(20))
        .await?;
    assert!(
        events
            .iter()
            .all(|e| e.agent_group == if e.agent_id == "a1" { "ops" } else { "" }),
        "{events:?}"
    );
    // a1 gets a new certificate; the one it used so far stays valid.
    let (c, k) = agent_files(&env, "a1");
    let (old_c, old_k) = (env.pki().join("a1-old.pem"), env.pki().join("a1-old.key"));
    std::fs::rename(&c, &old_c)?;
    std::fs::rename(&k, &old_k)?;
    issue_in_group(&env, "a1", Some("ops"))?;
    // An admin certificate from the agents CA gets nothing.
    let (code, _, err) = env.cli_as("admin-evil", &["hosts"])?;
    assert_ne!(code, 0, "an admin from the agents CA was let in: {err}");
    // The CLI sees the TLS alert before the collector logs why it sent it.
    collector
        .wait_log("may issue agent certificates only", Duration::from_secs(10))
        .await?;

    // Retiring: admins only, a reason required, each refusal audited.
    let (code, _, err) = env.cli_as(
        "investigator-inv",
        &["agents", "retire", "a1", "--reason", "left"],
    )?;
    assert_ne!(code, 0);
    assert!(err.contains("admins only"), "{err}");
    let (code, _, err) = env.cli_as("admin-boss", &["agents", "retire", "a1", "--reason", " "])?;
    assert_ne!(code, 0);
    assert!(err.contains("a reason is required"), "{err}");
    let (code, _, err) = env.cli_as(
        "admin-boss",
        &["agents", "retire", "nobody", "--reason", "x"],
    )?;
    assert_ne!(code, 0);
    assert!(err.contains("no agent"), "{err}");
    // A root-issued agent: the collector cannot revoke it, and says how.
    let (code, _, err) = env.cli_as(
        "admin-boss",
        &["agents", "retire", "legacy", "--reason", "old"],
    )?;
    assert_ne!(code, 0);
    assert!(err.contains("kiroku certs revoke"), "{err}");

    // a1 is connected while it is retired: the connection is cut.
    let mut live = open_stream(&env, "a1").await?;
    let (code, out, err) = env.cli_as(
        "admin-boss",
        &["agents", "retire", "a1", "--reason", "host decommissioned"],
    )?;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("agent a1 retired"), "{out}");
    let started = Instant::now();
    let cut = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match live.resp.message().await {
                Ok(Some(_)) => continue,
                other => return other.map(|_| ()),
            }
        }
    })
    .await;
    assert!(cut.is_ok(), "the retired agent's connection stayed open");
    println!(
        "retired agent's connection cut after {:?}",
        started.elapsed()
    );
    // ... and its next connection is refused.
    let (c, k) = agent_files(&env, "a1");
    let again = ship_as(&env, &c, &k, 3, 1, "").await;
    assert!(again.is_err(), "a retired agent shipped again: {again:?}");
    println!("retired agent refused: {:?}", again.err());
    // Nor with the certificate it used before (revoked too).
    let older = ship_as(&env, &old_c, &old_k, 3, 1, "").await;
    assert!(
        older.is_err(),
        "a retired agent's older certificate shipped: {older:?}"
    );
    // Its events stay searchable; the host says it is retired.
    let kept = env
        .search_all(SearchRequest {
            agent_id: "a1".into(),
            ..Default::default()
        })
        .await?;
    assert_eq!(kept.len(), 2, "{kept:?}");
    let hosts = hosts_json(&env, &[])?;
    let a1 = hosts
        .iter()
        .find(|h| h["agent_id"] == "a1")
        .ok_or_else(|| anyhow::anyhow!("no a1 in {hosts:?}"))?;
    assert!(a1["retired_at_ms"].as_i64().unwrap_or(0) > 0, "{a1}");
    assert_eq!(a1["retired_reason"], "host decommissioned");

    // The root cannot revoke what the agents CA issued: the CLI says so.
    let pki = env.pki();
    let dir = pki.to_str().unwrap_or_default();
    let wrong = env.kiroku(&[
        "certs",
        "revoke",
        "--dir",
        dir,
        "--cert",
        c.to_str().unwrap_or_default(),
    ]);
    assert!(
        wrong
            .as_ref()
            .is_err_and(|e| e.to_string().contains("kiroku agents retire")),
        "{wrong:?}"
    );
    // The legacy agent revoked with the root: retiring it then only marks it.
    let (lc, _) = agent_files(&env, "legacy");
    env.kiroku(&[
        "certs",
        "revoke",
        "--dir",
        dir,
        "--cert",
        lc.to_str().unwrap_or_default(),
    ])?;
    let (code, out, err) = env.cli_as(
        "admin-boss",
        &["agents", "retire", "legacy", "--reason", "old"],
    )?;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("already revoked in the root's"), "{out}");

    // a1 issued anew comes back, audited.
    std::fs::remove_file(&c)?;
    std::fs::remove_file(&k)?;
    issue_in_group(&env, "a1", Some("ops"))?;
    assert_eq!(ship_as(&env, &c, &k, 3, 1, "").await?, 1);
    let hosts = hosts_json(&env, &[])?;
    let a1 = hosts
        .iter()
        .find(|h| h["agent_id"] == "a1")
        .ok_or_else(|| anyhow::anyhow!("no a1"))?;
    assert_eq!(a1["retired_at_ms"].as_i64().unwrap_or(0), 0, "{a1}");

    let audit = admin_audit(&env)?;
    let calls = |call: &str| -> Vec<String> {
        audit
            .iter()
            .filter(|e| e["call"] == call)
            .map(|e| e["detail"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let retire = calls("RetireAgent");
    for want in [
        "REFUSED PermissionDenied",
        "a reason is required",
        "retiring agent a1",
        "host decommissioned",
        "kiroku certs revoke",
        "retiring agent legacy",
    ] {
        assert!(
            retire.iter().any(|d| d.contains(want)),
            "no RetireAgent entry with {want:?}: {retire:#?}"
        );
    }
    assert!(
        retire
            .iter()
            .any(|d| d.contains("investigator/inv") || d.contains("admins only")),
        "{retire:#?}"
    );
    assert_eq!(calls("AgentReturned").len(), 1, "{audit:#?}");
    assert!(
        calls("CrlReload")
            .iter()
            .any(|d| d.contains("agents' revocation list")),
        "{:#?}",
        calls("CrlReload")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_agents_are_listed_by_the_collectors_clock() -> anyhow::Result<()> {
    kiroku_tests::ensure_collector_test_hooks()?;
    let env = Env::new()?;
    let clock = env.path().join("clock-offset");
    std::fs::write(&clock, "0")?;
    let clock_s = clock.to_string_lossy().into_owned();
    let _collector = env.start_collector_with_env(
        "[agents]\nstale_after = \"30d\"\n",
        &[("KIROKU_TEST_CLOCK_FILE", clock_s.as_str())],
    )?;
    for name in ["quiet", "busy"] {
        issue_in_group(&env, name, None)?;
        let (c, k) = agent_files(&env, name);
        ship_as(&env, &c, &k, 1, 1, "").await?;
    }
    let _busy = open_stream(&env, "busy").await?;
    let names = |hosts: Vec<serde_json::Value>| -> Vec<String> {
        hosts
            .iter()
            .map(|h| h["agent_id"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(
        names(hosts_json(&env, &["--stale", "30d"])?),
        Vec::<String>::new()
    );
    // 31 days later on the collector's clock: the agent that has not
    // connected since is silent; the connected one is not.
    std::fs::write(&clock, (31i64 * 86_400_000).to_string())?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(names(hosts_json(&env, &["--stale", "30d"])?), vec!["quiet"]);
    assert_eq!(
        names(hosts_json(&env, &["--stale", "60d"])?),
        Vec::<String>::new()
    );
    // All hosts without --stale.
    assert_eq!(hosts_json(&env, &[])?.len(), 2);
    let (code, _, err) = env.cli_as("investigator-inv", &["hosts", "--stale", "30"])?;
    assert_ne!(code, 0);
    assert!(err.contains("no unit"), "{err}");
    Ok(())
}
