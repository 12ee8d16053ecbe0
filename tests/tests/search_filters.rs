//! Mail-flow search through the real agent and collector: each new filter
//! (sender/recipient domain with subdomains, address wildcards, client
//! address and network, Message-ID, queue id, reply code and class, SMTP
//! login, free text over the upstream's replies, internal/external,
//! direction, oldest first) from the `kiroku` CLI and from Python grpcio,
//! and the exfiltration report's internal/external filter. The same mails
//! show who a mail from another machine is recorded under: a client bound
//! to 127.0.0.2, with the agent told that only 127.0.0.1 is this host, is
//! recorded under its SMTP AUTH login or under no user, never under the
//! agent's own account.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kiroku_proto::{Event, SearchRequest};
use kiroku_tests::{Env, Mode, Upstream, data_dir, email, free_port};

/// Sends `raw` with Python's smtplib from `source` (the client's address),
/// logging in first when `login` is given; returns the final reply code.
fn send(
    port: u16,
    source: &str,
    login: Option<&str>,
    from: &str,
    rcpts: &[&str],
    raw: &str,
) -> anyhow::Result<u64> {
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), raw)?;
    let mut cmd = Command::new("python3");
    cmd.arg(data_dir().join("send_mail.py"))
        .arg(port.to_string())
        .arg(from)
        .arg(rcpts.join(","))
        .arg(file.path())
        .arg(source);
    if let Some(l) = login {
        cmd.arg(l);
    }
    let (ok, out) = kiroku_tests::run_client(&mut cmd, None)?;
    if !ok {
        bail!("smtplib client failed: {out}");
    }
    // The script prints its JSON line on stdout (stderr follows it).
    let line = out.lines().find(|l| l.starts_with('{')).unwrap_or_default();
    let v: serde_json::Value =
        serde_json::from_str(line).with_context(|| format!("smtplib client said: {out}"))?;
    Ok(v["code"].as_u64().unwrap_or(0))
}

fn mail(subject: &str, from: &str, to: &[&str], extra: &str) -> String {
    format!(
        "From: {from}\r\nTo: {}\r\nSubject: {subject}\r\nMessage-ID: <{}@corp.example>\r\n{extra}MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nbody of {subject}\r\n",
        to.join(", "),
        subject.replace(' ', "-")
    )
}

fn with_attachment(subject: &str, from: &str, to: &[&str], file: &str) -> String {
    format!(
        "From: {from}\r\nTo: {}\r\nSubject: {subject}\r\nMessage-ID: <{}@corp.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"{file}\"\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8gd29ybGQ=\r\n--b--\r\n",
        to.join(", "),
        subject.replace(' ', "-")
    )
}

/// The subjects of `kiroku search --json` output lines, in order.
fn subjects(json_lines: &str) -> Vec<String> {
    json_lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        // Mail only: the client's AUTH attempt (an `auth` record, issue
        // 20) matches --client-ip and --auth-user too.
        .filter(|v| v.get("email").is_some())
        .map(|v| {
            v["email"]["subject"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn mail_flow_filters_and_the_user_of_remote_mail() -> anyhow::Result<()> {
    let env = Env::new()?;
    let _collector = env.start_collector_top("internal_domains = [\"corp.example\"]\n")?;
    let upstream = Upstream::start_with(&env, &["--auth"])?;
    let smtp = free_port();
    let _agent = env.start_agent_in_smtp(
        "pc-flow",
        smtp,
        &Mode::Relay(upstream.port),
        // The client's password goes on to the upstream in plain text:
        // only where the operator chose that.
        "local_clients = [\"127.0.0.1\"]\nupstream_tls = \"off\"\n",
    )?;

    // (subject, client address, SMTP login, sender, recipients, message,
    // final reply code)
    let f1 = ["bob@gmail.com"];
    let f2 = ["carol@mx.example.com", "dan@corp.example"];
    let f3 = ["erin@hr.corp.example", "reject-x@gmail.com"];
    let f4 = ["zed@example.org"];
    let mails = [
        (
            "flow one",
            "127.0.0.1",
            None,
            "alice@corp.example",
            &f1[..],
            with_attachment("flow one", "alice@corp.example", &f1, "plan.pdf"),
            250,
        ),
        (
            "flow two",
            "127.0.0.2",
            Some("alice:s3cret"),
            "bobby@corp.example",
            &f2[..],
            mail("flow two", "bobby@corp.example", &f2, ""),
            250,
        ),
        (
            "flow three",
            "127.0.0.2",
            None,
            "news@partner.example",
            &f3[..],
            with_attachment("flow three", "news@partner.example", &f3, "memo.txt"),
            250,
        ),
        (
            "flow four",
            "127.0.0.1",
            None,
            "carl@corp.example",
            &f4[..],
            mail(
                "flow four",
                "carl@corp.example",
                &f4,
                "X-Test-Reply: 451 4.4.1 connection refused by next hop\r\n",
            ),
            451,
        ),
    ];
    for (subject, source, login, from, rcpts, raw, code) in &mails {
        let got = send(smtp, source, *login, from, rcpts, raw)?;
        assert_eq!(got, *code, "{subject}");
    }
    let events = env
        .wait_for(
            SearchRequest {
                kind: "email".into(),
                ..Default::default()
            },
            4,
            Duration::from_secs(30),
        )
        .await?;
    let by_subject: HashMap<String, &Event> = events
        .iter()
        .map(|e| (email(e).subject.clone(), e))
        .collect();
    let id_subject: HashMap<String, String> = events
        .iter()
        .map(|e| (e.event_id.clone(), email(e).subject.clone()))
        .collect();

    // Who each mail is recorded under.
    let one = by_subject["flow one"];
    assert_eq!(email(one).user_source, "local_socket");
    assert!(!one.user.is_empty(), "a local client: its socket's owner");
    let agent_account = one.user.clone(); // the test, the client and the agent run as one account
    let two = by_subject["flow two"];
    assert_eq!(
        (two.user.as_str(), email(two).user_source.as_str()),
        ("alice", "smtp_auth")
    );
    let three = by_subject["flow three"];
    assert_eq!(
        (three.user.as_str(), email(three).user_source.as_str()),
        ("", "remote_unknown"),
        "a remote client without AUTH: no user, never the agent's account ({agent_account})"
    );
    let shown = env.cli(&["show", &three.event_id])?;
    assert!(
        shown.contains("none: a client on another machine without SMTP AUTH"),
        "{shown}"
    );
    assert!(
        !shown.contains(&format!("user: {agent_account}")),
        "{shown}"
    );
    let shown = env.cli(&["show", &two.event_id])?;
    assert!(
        shown.contains("alice (SMTP AUTH login of a remote client)"),
        "{shown}"
    );

    // Each filter from the CLI, newest first unless --asc.
    let t0 = Instant::now();
    let cases: &[(&[&str], &[&str])] = &[
        (&["--recipient-domain", "example.com"], &["flow two"]),
        (
            &["--recipient-domain", "corp.example"],
            &["flow three", "flow two"],
        ),
        (&["--sender-domain", "partner.example"], &["flow three"]),
        (&["--recipient", "*@gmail.com"], &["flow three", "flow one"]),
        (&["--sender", "bob*@corp.example"], &["flow two"]),
        (&["--client-ip", "127.0.0.2"], &["flow three", "flow two"]),
        (&["--client-ip", "127.0.0.0/31"], &["flow four", "flow one"]),
        (&["--message-id", "<flow-one@corp.example>"], &["flow one"]),
        (&["--queue-id", "Q000002"], &["flow two"]),
        (&["--reply-code", "550"], &["flow three"]),
        (&["--reply-code", "4xx"], &["flow four"]),
        (&["--auth-user", "alice"], &["flow two"]),
        (&["--text", "\"connection refused\""], &["flow four"]),
        (&["--external"], &["flow four", "flow two", "flow one"]),
        (&["--internal"], &["flow three"]),
        (&["--direction", "inbound"], &["flow three"]),
        (
            &["--direction", "outbound", "--asc"],
            &["flow one", "flow two", "flow four"],
        ),
        (
            &["--kind", "email", "--asc"],
            &["flow one", "flow two", "flow three", "flow four"],
        ),
    ];
    for (args, want) in cases {
        let mut all = vec!["search", "--json"];
        all.extend_from_slice(args);
        let got = subjects(&env.cli(&all)?);
        assert_eq!(got, *want, "kiroku search {args:?}");
    }
    for (args, flag) in [
        (&["--client-ip", "10.0.0.0/33"][..], "--client-ip"),
        (&["--reply-code", "6xx"][..], "--reply-code"),
        (&["--recipient-domain", "a b"][..], "--recipient-domain"),
    ] {
        let mut all = vec!["search"];
        all.extend_from_slice(args);
        let e = env.cli(&all).expect_err("refused").to_string();
        assert!(e.contains(flag), "{e}");
    }
    // The exfiltration report by recipients: flow one's file went outside,
    // flow three's only inside (its external recipient was refused).
    for (flag, want) in [("--external", "plan.pdf"), ("--internal", "memo.txt")] {
        let out = env.cli(&["report", "exfil", "--from", "1d", "--json", flag])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        let files: Vec<&str> = v["files"]
            .as_array()
            .map(|a| a.iter().filter_map(|f| f["filename"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(files, [want], "report exfil {flag}");
    }
    eprintln!("CLI queries: {} ms", t0.elapsed().as_millis());

    // The same filters over gRPC from Python grpcio (types by reflection).
    let requests = serde_json::json!([
        {"search": {"recipientDomain": "example.com"}},
        {"search": {"clientIp": "127.0.0.0/31"}},
        {"search": {"replyCode": "5xx"}},
        {"search": {"recipient": "*@gmail.com", "ascending": true}},
        {"search": {"external": true, "ascending": true}},
        {"search": {"messageId": "flow-two@corp.example"}},
        {"search": {"clientIp": "not-an-address"}},
        {"exfil": {"fromMs": 1, "toMs": 4_000_000_000_000i64, "recipients": "internal"}},
    ]);
    let want: &[&[&str]] = &[
        &["flow two"],
        &["flow four", "flow one"],
        &["flow three"],
        &["flow one", "flow three"],
        &["flow one", "flow two", "flow four"],
        &["flow two"],
    ];
    let pki = env.pki();
    let mut child = Command::new("python3")
        .arg(data_dir().join("grpc_search.py"))
        .arg(format!("127.0.0.1:{}", env.grpc))
        .arg(pki.join("ca.pem"))
        .arg(pki.join("investigator-inv.pem"))
        .arg(pki.join("investigator-inv.key"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        std::io::Write::write_all(&mut stdin, requests.to_string().as_bytes())?;
    }
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await???;
    assert!(
        out.status.success(),
        "python grpcio client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)?;
    for (i, w) in want.iter().enumerate() {
        let got: Vec<String> = answers[i]["ids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|id| id.as_str())
                    .map(|id| id_subject.get(id).cloned().unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(got, *w, "gRPC request {}: {}", i, requests[i]);
    }
    let refused = answers[6]["error"].as_str().unwrap_or_default();
    assert!(
        refused.starts_with("INVALID_ARGUMENT") && refused.contains("client_ip"),
        "{refused}"
    );
    let files = answers[7]["ids"].as_array().map(Vec::len);
    assert_eq!(files, Some(1), "one internal file: {}", answers[7]);
    assert_eq!(
        answers[7]["ids"][0]
            .as_str()
            .map(|id| id_subject[id].as_str()),
        Some("flow three")
    );
    Ok(())
}
