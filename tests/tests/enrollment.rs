//! Certificate enrollment (issue 22, item 7) end to end on Linux with the
//! real collector, CLI and agent: `kiroku certs enroll-token` (admins
//! only, audited) makes one-time tokens; an agent with a token and no
//! certificate makes its key, enrolls on the collector's enrollment
//! listener and ships its mail; a wrong, expired or reused token and a
//! name already enrolled are refused with clear errors (the agent exits
//! saying why and what to do) and audited; the certificate carries role
//! agent, the name and the token's group. Renewal: with certificates valid
//! for 30 s (`KIROKU_TEST_AGENT_CERT_SECS`), the agent renews over mTLS
//! without a token and still ships after its first certificate expired.

use std::time::Duration;

use kiroku_proto::SearchRequest;
use kiroku_tests::enroll::{
    admin_audit, agent_files, calls, cert_identity, collector_keys, spawn_agent, start_collector,
    tokens, wait_exit,
};
use kiroku_tests::{Env, free_port, send_mail};

const MAIL: &[u8] =
    b"From: a@corp.example\r\nTo: b@example.org\r\nSubject: enrolled\r\n\r\nhello\r\n";

/// Starts an agent that must be refused; returns its log.
fn refused(env: &Env, tag: &str, token: &str, port: u16, name: &str) -> anyhow::Result<String> {
    let keys = collector_keys(token, port, Some(name));
    let (mut p, dir) = spawn_agent(env, tag, &keys, free_port(), &[])?;
    let code = wait_exit(&mut p, Duration::from_secs(30))?;
    let log = p.log_text();
    assert_ne!(code, 0, "{tag} should have been refused: {log}");
    let (cert, key) = agent_files(&dir);
    assert!(
        !cert.exists() && !key.exists(),
        "{tag}: no files after a refusal"
    );
    Ok(log)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_enrolls_one_agent_once() -> anyhow::Result<()> {
    let env = Env::new()?;
    let e = start_collector(&env, &[])?;

    // Tokens: admins only; the refusal is audited.
    let (code, _, err) = env.cli_as(
        "investigator-inv",
        &["certs", "enroll-token", "--group", "sales"],
    )?;
    assert_ne!(code, 0);
    assert!(err.contains("admins only"), "{err}");
    let sales = tokens(
        &env,
        "admin-boss",
        &["--group", "sales", "--count", "3", "--expires", "7d"],
    )?;
    assert_eq!(sales.len(), 3, "{sales:?}");
    assert!(sales.iter().all(|t| t.starts_with("ket1-")), "{sales:?}");
    let short = tokens(&env, "admin-boss", &["--expires", "1s"])?;
    let out = env.path().join("tokens.txt");
    tokens(
        &env,
        "admin-boss",
        &["--count", "2", "--out", out.to_str().unwrap_or_default()],
    )?;
    assert_eq!(std::fs::read_to_string(&out)?.lines().count(), 2);

    // A wrong token.
    let log = refused(
        &env,
        "wrong",
        "ket1-00000000000000000000000000000000",
        e.port,
        "pc-x",
    )?;
    assert!(log.contains("unknown enrollment token"), "{log}");
    assert!(
        log.contains("kiroku certs enroll-token"),
        "says what to do: {log}"
    );

    // An oversize computer name: refused before the token is looked at
    // (the token stays usable), and only its length is audited.
    let long = "x".repeat(300);
    let log = refused(&env, "long", &sales[2], e.port, &long)?;
    assert!(log.contains("more than 256"), "{log}");

    // An expired one.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let log = refused(&env, "late", &short[0], e.port, "pc-y")?;
    assert!(log.contains("expired"), "{log}");

    // A good one: the agent enrolls, writes its files and ships.
    let smtp = free_port();
    let keys = collector_keys(&sales[0], e.port, Some("PC-Sales 1"));
    let (mut agent, dir) = spawn_agent(&env, "one", &keys, smtp, &[])?;
    agent.wait_port(smtp)?;
    let (cert, key) = agent_files(&dir);
    assert_eq!(
        cert_identity(&cert)?,
        ("agent".into(), "pc-sales-1".into(), Some("sales".into())),
        "the name from the computer name (sanitised), the token's group"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key)?.permissions().mode() & 0o077,
            0,
            "key is private"
        );
    }
    send_mail(smtp, "a@corp.example", &["b@example.org"], MAIL)?;
    let events = env
        .wait_for(SearchRequest::default(), 1, Duration::from_secs(30))
        .await?;
    assert_eq!(events[0].agent_id, "pc-sales-1");
    assert_eq!(events[0].agent_group, "sales");

    // Renewal of a certificate younger than half its validity: refused
    // by the collector's clock.
    let tls = kiroku_common::tls::TlsFiles {
        ca: env.pki().join("ca.pem"),
        cert: cert.clone(),
        key: key.clone(),
    };
    let channel =
        tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{}", env.grpc))?
            .tls_config(tls.client_config("localhost")?)?
            .connect()
            .await?;
    let st = kiroku_proto::agent_certs_client::AgentCertsClient::new(channel)
        .renew(kiroku_proto::RenewRequest { csr_der: vec![] })
        .await
        .expect_err("too early");
    assert_eq!(st.code(), tonic::Code::ResourceExhausted, "{st:?}");
    assert!(st.message().contains("not due for renewal"), "{st:?}");

    // The same token again, for another name: used up.
    let log = refused(&env, "again", &sales[0], e.port, "pc-sales-2")?;
    assert!(
        log.contains("used already") && log.contains("pc-sales-1"),
        "{log}"
    );
    // A fresh token for a name already enrolled: refused, token kept.
    let log = refused(&env, "twin", &sales[1], e.port, "pc-sales-1")?;
    assert!(log.contains("already enrolled"), "{log}");
    assert!(
        log.contains("enroll_name") && log.contains("kiroku agents retire"),
        "{log}"
    );
    let smtp2 = free_port();
    let keys = collector_keys(&sales[1], e.port, Some("pc-sales-2"));
    let (mut second, dir2) = spawn_agent(&env, "two", &keys, smtp2, &[])?;
    second.wait_port(smtp2)?;
    assert_eq!(cert_identity(&agent_files(&dir2).0)?.1, "pc-sales-2");

    // A lost response: the agent kept its key at `<key>.enrolling` and
    // has no certificate; asking again with the same token, name and key
    // returns the same certificate (audited), not "used already".
    second.terminate();
    let (cert2, key2) = agent_files(&dir2);
    let issued = std::fs::read(&cert2)?;
    let mut pending = key2.clone().into_os_string();
    pending.push(".enrolling");
    std::fs::rename(&key2, &pending)?;
    std::fs::remove_file(&cert2)?;
    let keys = collector_keys(&sales[1], e.port, Some("pc-sales-2"));
    let (mut second, _) = spawn_agent(&env, "two", &keys, smtp2, &[])?;
    second.wait_port(smtp2)?;
    assert_eq!(std::fs::read(&cert2)?, issued, "the same certificate again");
    assert!(key2.exists() && !std::path::Path::new(&pending).exists());

    // A restart does not enroll again (the token is used up by now).
    agent.terminate();
    let (mut agent, _) = spawn_agent(
        &env,
        "one",
        &collector_keys(&sales[0], e.port, Some("PC-Sales 1")),
        smtp,
        &[],
    )?;
    agent.wait_port(smtp)?;
    let log = agent.log_text();
    assert_eq!(
        log.matches("enrolling with the configured token").count(),
        1,
        "one enrollment across both runs (the log is appended): {log}"
    );

    let audit = admin_audit(&env)?;
    let enroll = calls(&audit, "Enroll");
    for want in [
        "enrolled agent pc-sales-1 (computer name \"PC-Sales 1\"",
        "group sales",
        "enrolled agent pc-sales-2",
        "REFUSED PermissionDenied: unknown enrollment token",
        "REFUSED PermissionDenied: this enrollment token expired",
        "REFUSED PermissionDenied: this enrollment token was used already",
        "REFUSED AlreadyExists: agent id \"pc-sales-1\" is already enrolled",
        "REFUSED InvalidArgument: the computer name is 300 bytes long",
        "enrollment of agent pc-sales-2 asked again",
    ] {
        assert!(
            enroll.iter().any(|d| d.contains(want)),
            "no Enroll entry with {want:?}: {enroll:#?}"
        );
    }
    assert!(
        enroll
            .iter()
            .all(|d| !sales.iter().any(|t| d.contains(t.as_str()))),
        "tokens never appear in the audit log"
    );
    assert!(
        enroll.iter().all(|d| !d.contains(&long[..129])),
        "a client's computer name is cut in the audit log: {enroll:#?}"
    );
    let made = calls(&audit, "EnrollTokens");
    assert!(
        made.iter()
            .any(|d| d.contains("created 3 enrollment tokens") && d.contains("group sales")),
        "{made:#?}"
    );
    assert!(
        made.iter()
            .any(|d| d.contains("REFUSED PermissionDenied") && d.contains("admins only")),
        "{made:#?}"
    );
    drop(second);
    drop(agent);
    drop(e);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_enrolled_agent_renews_over_mtls_and_keeps_shipping() -> anyhow::Result<()> {
    let env = Env::new()?;
    kiroku_tests::ensure_collector_test_hooks()?;
    let mut e = start_collector(&env, &[("KIROKU_TEST_AGENT_CERT_SECS", "30")])?;
    let token = tokens(&env, "admin-boss", &["--group", "ops"])?;
    let smtp = free_port();
    let keys = collector_keys(&token[0], e.port, Some("renewer"));
    let (mut agent, dir) = spawn_agent(
        &env,
        "renewer",
        &keys,
        smtp,
        &[("KIROKU_TEST_RENEW_CHECK_MS", "500")],
    )?;
    agent.wait_port(smtp)?;
    let (cert, key) = agent_files(&dir);
    let first = std::fs::read(&cert)?;
    let first_key = std::fs::read(&key)?;
    let enrolled_at = std::time::Instant::now();

    // Due at two thirds of (30 s + 3 s slack): about 19 s after issuance.
    agent
        .wait_log("certificate renewed", Duration::from_secs(45))
        .await?;
    let renewed = std::fs::read(&cert)?;
    assert_ne!(renewed, first, "the certificate file was replaced");
    assert_eq!(std::fs::read(&key)?, first_key, "same key");
    assert_eq!(
        cert_identity(&cert)?,
        ("agent".into(), "renewer".into(), Some("ops".into()))
    );

    // Past the first certificate's end: the collector restarts, and the
    // agent's next connection presents a renewed certificate.
    let wait = Duration::from_secs(32).saturating_sub(enrolled_at.elapsed());
    tokio::time::sleep(wait).await;
    e.collector.terminate();
    let mut collector = env.start_collector_with_env(
        &std::fs::read_to_string(env.path().join("collector.toml"))?
            .split_once("[agents_ca]")
            .map(|(_, s)| {
                format!(
                    "[agents_ca]{}",
                    s.split("\n[maintenance]").next().unwrap_or(s)
                )
            })
            .unwrap_or_default(),
        &[("KIROKU_TEST_AGENT_CERT_SECS", "30")],
    )?;
    send_mail(smtp, "a@corp.example", &["b@example.org"], MAIL)?;
    let events = env
        .wait_for(SearchRequest::default(), 1, Duration::from_secs(30))
        .await?;
    assert_eq!(events[0].agent_id, "renewer");
    assert_eq!(events[0].agent_group, "ops");

    let audit = admin_audit(&env)?;
    let renew = calls(&audit, "RenewAgentCert");
    assert!(
        renew
            .iter()
            .any(|d| d.contains("renewed agent renewer's certificate")),
        "{renew:#?}"
    );
    assert!(
        calls(&audit, "Enroll")
            .iter()
            .any(|d| d.contains("enrolled agent renewer")),
        "{audit:#?}"
    );
    agent.terminate();
    collector.terminate();
    Ok(())
}

/// A retired agent's name enrolled again with a new token: the new
/// certificate is accepted at its first connection (the retired marker is
/// cleared with the token, not left to refuse it), its mail is stored, and
/// the return is audited.
#[tokio::test(flavor = "multi_thread")]
async fn a_retired_name_enrolls_again_and_ships() -> anyhow::Result<()> {
    let env = Env::new()?;
    let e = start_collector(&env, &[])?;
    let t = tokens(&env, "admin-boss", &["--group", "sales", "--count", "2"])?;
    let smtp = free_port();
    let (mut first, _) = spawn_agent(
        &env,
        "first",
        &collector_keys(&t[0], e.port, Some("pc-r")),
        smtp,
        &[],
    )?;
    first.wait_port(smtp)?;
    send_mail(smtp, "a@corp.example", &["b@example.org"], MAIL)?;
    env.wait_for(SearchRequest::default(), 1, Duration::from_secs(30))
        .await?;
    first.terminate();
    let (code, _, err) = env.cli_as(
        "admin-boss",
        &["agents", "retire", "pc-r", "--reason", "PC replaced"],
    )?;
    assert_eq!(code, 0, "{err}");

    // The replacement PC under the same name, in a fresh directory.
    let smtp2 = free_port();
    let (mut second, dir) = spawn_agent(
        &env,
        "second",
        &collector_keys(&t[1], e.port, Some("pc-r")),
        smtp2,
        &[],
    )?;
    second.wait_port(smtp2)?;
    assert_eq!(cert_identity(&agent_files(&dir).0)?.1, "pc-r");
    send_mail(
        smtp2,
        "a@corp.example",
        &["b@example.org"],
        b"From: a@corp.example\r\nTo: b@example.org\r\nSubject: back again\r\n\r\nhello\r\n",
    )?;
    let req = SearchRequest {
        subject: "back again".into(),
        kind: "email".into(),
        ..Default::default()
    };
    let events = env.wait_for(req, 1, Duration::from_secs(30)).await?;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].agent_id, "pc-r");
    let log = second.log_text();
    assert!(!log.contains("was retired"), "{log}");

    let audit = admin_audit(&env)?;
    let back = calls(&audit, "AgentReturned");
    assert!(
        back.iter()
            .any(|d| d.contains("retired agent pc-r enrolled again") && d.contains("PC replaced")),
        "{back:#?}"
    );
    assert!(
        calls(&audit, "Enroll")
            .iter()
            .any(|d| d.contains("enrolled agent pc-r") && d.contains("the name was retired before")),
        "{audit:#?}"
    );
    second.terminate();
    drop(e);
    Ok(())
}

/// `kiroku certs enroll-tokens` lists the batches and a batch's tokens
/// with their state; `kiroku certs revoke-enroll-tokens` revokes unused
/// tokens (a batch, or single tokens by reference): an agent with a
/// revoked token is refused saying so; a used token is not revoked (its
/// agent is retired instead); admins only; audited.
#[tokio::test(flavor = "multi_thread")]
async fn revoked_tokens_do_not_enroll_and_the_list_tells_each_tokens_state() -> anyhow::Result<()> {
    let env = Env::new()?;
    let e = start_collector(&env, &[])?;
    let fleet = tokens(
        &env,
        "admin-boss",
        &["--group", "sales", "--count", "3", "--note", "rollout 1"],
    )?;
    let spare = tokens(&env, "admin-boss", &["--count", "2"])?;

    // One token enrolls an agent.
    let smtp = free_port();
    let keys = collector_keys(&fleet[0], e.port, Some("pc-r1"));
    let (mut agent, _) = spawn_agent(&env, "r1", &keys, smtp, &[])?;
    agent.wait_port(smtp)?;

    // The list: two batches, the first with one used token.
    let (code, out, err) = env.cli_as("admin-boss", &["certs", "enroll-tokens", "--json"])?;
    assert_eq!(code, 0, "{err}");
    let batches: Vec<serde_json::Value> = out
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(batches.len(), 2, "{out}");
    assert_eq!(batches[0]["note"], "rollout 1");
    assert_eq!(batches[0]["group"], "sales");
    assert_eq!(
        (batches[0]["unused"].as_u64(), batches[0]["used"].as_u64()),
        (Some(2), Some(1))
    );
    let fleet_batch = batches[0]["batch"].as_str().unwrap_or_default().to_owned();
    let spare_batch = batches[1]["batch"].as_str().unwrap_or_default().to_owned();

    // Not for investigators, to list or to revoke.
    let (code, _, err) = env.cli_as("investigator-inv", &["certs", "enroll-tokens"])?;
    assert_ne!(code, 0);
    assert!(err.contains("admins only"), "{err}");
    let (code, _, err) = env.cli_as(
        "investigator-inv",
        &[
            "certs",
            "revoke-enroll-tokens",
            "--batch",
            &fleet_batch,
            "--reason",
            "x",
        ],
    )?;
    assert_ne!(code, 0);
    assert!(err.contains("admins only"), "{err}");

    // The batch revoked: its used token stays used (and says what to do).
    let (code, out, err) = env.cli_as(
        "admin-boss",
        &[
            "certs",
            "revoke-enroll-tokens",
            "--batch",
            &fleet_batch,
            "--reason",
            "sent to the wrong team",
        ],
    )?;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("revoked 2 tokens"), "{out}");
    assert!(
        err.contains("used already, by agent pc-r1") && err.contains("kiroku agents retire"),
        "{err}"
    );
    let log = refused(&env, "r2", &fleet[1], e.port, "pc-r2")?;
    assert!(
        log.contains("revoked") && log.contains("sent to the wrong team"),
        "{log}"
    );

    // A single token by its reference, from the batch's listing.
    let (code, out, err) = env.cli_as(
        "admin-boss",
        &["certs", "enroll-tokens", "--batch", &spare_batch, "--json"],
    )?;
    assert_eq!(code, 0, "{err}");
    let listed: Vec<serde_json::Value> = out
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(listed.len(), 2, "{out}");
    assert!(listed.iter().all(|t| t["state"] == "unused"), "{out}");
    let first_ref = listed[0]["token_ref"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (code, out, err) = env.cli_as(
        "admin-boss",
        &[
            "certs",
            "revoke-enroll-tokens",
            "--token",
            &first_ref,
            "--reason",
            "not needed",
        ],
    )?;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("revoked 1 token"), "{out}");
    let revoked_spare = spare
        .iter()
        .find(|t| kiroku_common::sha256_hex(t.as_bytes()).starts_with(&first_ref))
        .ok_or_else(|| anyhow::anyhow!("no token has reference {first_ref}"))?;
    let other_spare = spare
        .iter()
        .find(|t| *t != revoked_spare)
        .cloned()
        .unwrap_or_default();
    let log = refused(&env, "r3", revoked_spare, e.port, "pc-r3")?;
    assert!(log.contains("revoked"), "{log}");

    // The table: each batch's counts; the other spare token still enrolls.
    let (code, out, err) = env.cli_as("admin-boss", &["certs", "enroll-tokens"])?;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&fleet_batch) && out.contains("rollout 1"),
        "{out}"
    );
    let smtp4 = free_port();
    let keys = collector_keys(&other_spare, e.port, Some("pc-r4"));
    let (mut fourth, _) = spawn_agent(&env, "r4", &keys, smtp4, &[])?;
    fourth.wait_port(smtp4)?;

    // A token pasted as a batch id: refused without echoing it (checked
    // in the audit below).
    let (code, _, err) = env.cli_as(
        "admin-boss",
        &[
            "certs",
            "revoke-enroll-tokens",
            "--batch",
            &other_spare,
            "--reason",
            "oops",
        ],
    )?;
    assert_ne!(code, 0);
    assert!(
        err.contains("was given a token") && !err.contains(&other_spare),
        "{err}"
    );

    // Audited, never with a token in it.
    let audit = admin_audit(&env)?;
    let revokes = calls(&audit, "RevokeEnrollTokens");
    for want in [
        "revoked 2 enrollment tokens of batch",
        "revoked 1 enrollment tokens of named tokens",
        "REFUSED PermissionDenied",
        "REFUSED InvalidArgument: --batch was given a token",
    ] {
        assert!(
            revokes.iter().any(|d| d.contains(want)),
            "no {want:?}: {revokes:#?}"
        );
    }
    assert!(
        revokes.iter().all(|d| !fleet
            .iter()
            .chain(spare.iter())
            .any(|t| d.contains(t.as_str()))),
        "{revokes:#?}"
    );
    let enrolls = calls(&audit, "Enroll");
    assert!(
        enrolls
            .iter()
            .any(|d| d.contains("REFUSED PermissionDenied: this enrollment token was revoked")),
        "{enrolls:#?}"
    );
    // Listings are queries: audited with the caller, refusals included.
    let (code, out, err) = env.cli_as(
        "admin-boss",
        &["audit", "--kind", "query", "--json", "--limit", "1000"],
    )?;
    assert_eq!(code, 0, "{err}");
    let lists: Vec<serde_json::Value> = out
        .lines()
        .map(serde_json::from_str::<serde_json::Value>)
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|e| e["call"] == "ListEnrollTokens")
        .collect();
    let said = |who: &str, what: &str| {
        lists
            .iter()
            .any(|e| e["identity"] == who && e["filter"].as_str().is_some_and(|f| f.contains(what)))
    };
    assert!(said("admin/boss", &spare_batch), "{lists:#?}");
    assert!(
        said("investigator/inv", "REFUSED PermissionDenied"),
        "{lists:#?}"
    );
    drop(fourth);
    drop(agent);
    drop(e);
    Ok(())
}

/// The leaf certificate (PEM) a TLS server on 127.0.0.1:`port` presents,
/// read with Python's ssl module (no verification: only looked at).
fn served_cert(port: u16) -> anyhow::Result<String> {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import ssl; print(ssl.get_server_certificate(('127.0.0.1', {port}), timeout=10))"
        ))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "reading the certificate on port {port}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The DER of the first certificate in a PEM text.
fn der(pem: &str) -> anyhow::Result<Vec<u8>> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    Ok(CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or_else(|| anyhow::anyhow!("no certificate in {pem:?}"))??
        .to_vec())
}

/// The collector's certificate renewed on disk (new key and certificate
/// in place of the old) is served by the enrollment listener too, without
/// a restart, and agents still enroll through it.
#[tokio::test(flavor = "multi_thread")]
async fn the_enrollment_listener_serves_a_renewed_collector_certificate() -> anyhow::Result<()> {
    let env = Env::new()?;
    let e = start_collector(&env, &[])?;
    let pki = env.pki();
    let (cert, key) = (
        pki.join("collector-localhost.pem"),
        pki.join("collector-localhost.key"),
    );
    let before = served_cert(e.port)?;
    assert_eq!(der(&before)?, der(&std::fs::read_to_string(&cert)?)?);

    // A new certificate from the same CA, put in place as an admin would
    // (each file written aside, then renamed over the old one).
    let other = env.path().join("pki-renewal");
    std::fs::create_dir_all(&other)?;
    for f in ["ca.pem", "ca.key"] {
        std::fs::copy(pki.join(f), other.join(f))?;
    }
    env.kiroku(&[
        "certs",
        "issue",
        "--dir",
        other.to_str().unwrap_or_default(),
        "--role",
        "collector",
        "--name",
        "localhost",
    ])?;
    for (from, to) in [
        ("collector-localhost.key", &key),
        ("collector-localhost.pem", &cert),
    ] {
        let aside = to.with_extension("new");
        std::fs::copy(other.join(from), &aside)?;
        std::fs::rename(&aside, to)?;
    }
    let renewed = std::fs::read_to_string(&cert)?;
    assert_ne!(der(&renewed)?, der(&before)?);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = served_cert(e.port)?;
        if der(&now)? == der(&renewed)? {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the enrollment listener still serves the old certificate 20 s after the renewal:\n{}",
            e.collector.log_text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // And an agent enrolls through it (verifying it against the CA).
    let token = tokens(&env, "admin-boss", &[])?;
    let smtp = free_port();
    let keys = collector_keys(&token[0], e.port, Some("pc-renewed"));
    let (mut agent, dir) = spawn_agent(&env, "renewed", &keys, smtp, &[])?;
    agent.wait_port(smtp)?;
    assert_eq!(cert_identity(&agent_files(&dir).0)?.1, "pc-renewed");
    Ok(())
}
