//! Alert rules of issue 20 end to end, with the real collector, real agents
//! and real notifiers (an HTTP listener for the webhook, the python SMTP
//! sink for the administrators' mail, `kiroku alerts` for the stream):
//! each rule's alerts reach only the notifiers of its `route`, with its
//! `severity`, exactly once per crossing; a silent agent is reported once
//! per silence; a skewed clock (the agent's test-only skew) once.
//!
//! The rules over records other parts produce (AUTH records, relay
//! incidents, MTA log lines) are unit-tested on hand-made events in
//! collector/src/alerts/tests20.rs.

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiroku_proto::{ListHostsRequest, SearchRequest};
use kiroku_tests::{Env, Mode, Upstream, ensure_test_hooks, free_port, send_mail};

/// An HTTP listener that answers every POST 200 and keeps its JSON body.
struct Hook {
    port: u16,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Hook {
    fn start() -> anyhow::Result<Hook> {
        let l = kiroku_tests::bind_local()?;
        let port = l.local_addr()?.port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let b = bodies.clone();
        // The thread ends with the test process; it only ever accepts.
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let Ok(mut w) = s.try_clone() else { continue };
                let mut rd = BufReader::new(s);
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if rd.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let l = line.trim_end();
                    if l.is_empty() {
                        break;
                    }
                    if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; len];
                if rd.read_exact(&mut body).is_err() {
                    continue;
                }
                if let Ok(v) = serde_json::from_slice(&body) {
                    b.lock().expect("lock").push(v);
                }
                let _ = write!(
                    w,
                    "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Ok(Hook { port, bodies })
    }

    fn all(&self) -> Vec<serde_json::Value> {
        self.bodies.lock().expect("lock").clone()
    }

    fn rules(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .all()
            .iter()
            .map(|v| v["rule"].as_str().unwrap_or_default().to_owned())
            .collect();
        v.sort();
        v
    }
}

fn wait_until(what: &str, within: Duration, mut ok: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while !ok() {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn notifiers(hook: &Hook, mail: &Upstream) -> String {
    format!(
        "[alerts.webhook]\nurl = \"http://127.0.0.1:{}/hook\"\n[alerts.mail]\nserver = \"127.0.0.1:{}\"\ntls = \"off\"\nfrom = \"kiroku@corp.example\"\nto = [\"sec@corp.example\"]\n",
        hook.port, mail.port
    )
}

fn mail(subject: &str, attachment: Option<&str>) -> Vec<u8> {
    let mut m = format!(
        "From: alice@corp.example\r\nTo: bob@example.org\r\nSubject: =?UTF-8?B?{}?=\r\nMIME-Version: 1.0\r\n",
        base64(subject.as_bytes())
    );
    match attachment {
        None => m.push_str("Content-Type: text/plain\r\n\r\nhello\r\n"),
        Some(name) => m.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--b--\r\n",
            base64(b"%PDF-1.4 plan")
        )),
    }
    m.into_bytes()
}

fn base64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// The alert mails' texts (quoted-printable soft breaks joined).
fn mails(sink: &Upstream) -> Vec<String> {
    sink.messages()
        .iter()
        .map(|(raw, _)| String::from_utf8_lossy(raw).replace("=\r\n", ""))
        .collect()
}

/// A weekday span that never contains today (UTC), so every mail sent
/// now is "off hours".
fn not_today() -> &'static str {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    // 1970-01-01 was a Thursday.
    let today = (kiroku_common::now_ms() / 86_400_000).rem_euclid(7) as usize;
    DAYS[(today + 3) % 7]
}

#[tokio::test(flavor = "multi_thread")]
async fn mail_rules_go_only_to_their_route_with_their_severity() -> anyhow::Result<()> {
    let env = Env::new()?;
    let hook = Hook::start()?;
    let sink = Upstream::start(&env)?;
    std::fs::write(
        env.path().join("rules.toml"),
        format!(
            r#"[[rule]]
name = "att-soc"
kind = "any_attachment"
severity = "critical"
route = ["webhook"]

[[rule]]
name = "secret-words"
kind = "keyword"
keywords = ["社外秘"]
severity = "info"
route = ["mail"]

[[rule]]
name = "night"
kind = "off_hours"
schedule = ["{} 00:00-24:00"]
time_zone = "UTC"
route = ["stream"]
"#,
            not_today()
        ),
    )?;
    let collector = env.start_collector_with(&format!(
        "[alerts]\nrules = \"rules.toml\"\n{}",
        notifiers(&hook, &sink)
    ))?;
    let smtp = free_port();
    let _agent = env.start_agent("pc-1", smtp, &Mode::CaptureOnly)?;
    for (subject, att) in [
        ("hello", None),
        ("plan", Some("plan.pdf")),
        ("【社外秘】人事計画", None),
    ] {
        let s = send_mail(
            smtp,
            "alice@corp.example",
            &["bob@example.org"],
            &mail(subject, att),
        )?;
        assert_eq!(s.code, 250, "{s:?}");
    }
    let stored = env
        .wait_for(
            SearchRequest {
                kind: "email".into(),
                ..Default::default()
            },
            3,
            Duration::from_secs(30),
        )
        .await?;
    let id_of = |subject: &str| {
        stored
            .iter()
            .find(|e| kiroku_tests::email(e).subject.contains(subject))
            .map(|e| e.event_id.clone())
            .unwrap_or_default()
    };

    // The webhook: the attachment rule only, critical, with its details.
    wait_until("the webhook alert", Duration::from_secs(30), || {
        !hook.all().is_empty()
    })?;
    // The mail: the keyword rule only, info.
    wait_until("the alert mail", Duration::from_secs(30), || {
        !mails(&sink).is_empty()
    })?;
    // Give a misrouted or doubled alert the time to show up.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(hook.rules(), ["att-soc"], "{:?}", hook.all());
    let a = &hook.all()[0];
    assert_eq!(a["severity"], "critical");
    assert_eq!(a["event_id"], id_of("plan").as_str());
    let body = a["body"].as_str().unwrap_or_default();
    for want in [
        "who:",
        "alice@corp.example",
        "plan.pdf",
        "bob@example.org",
        "pc-1",
        &format!("kiroku show {}", id_of("plan")),
    ] {
        assert!(body.contains(want), "{want:?} in the webhook body:\n{body}");
    }
    let sent = mails(&sink);
    assert_eq!(sent.len(), 1, "{sent:?}");
    let m = &sent[0];
    assert!(
        m.contains("rule:     secret-words (keyword)") && m.contains("severity: info"),
        "{m}"
    );
    assert!(!m.contains("att-soc") && !m.contains("night"), "{m}");
    assert!(m.contains("[kiroku info]"), "subject: {m}");
    assert!(
        m.contains(&format!("kiroku show {}", id_of("社外秘"))),
        "{m}"
    );

    // The stream (`kiroku alerts`): the off-hours rule, once per mail.
    let replay = env.cli(&["alerts", "--since", "1h", "--json"])?;
    let mut rules: Vec<(String, String)> = replay
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            (
                v["rule"].as_str().unwrap_or_default().to_owned(),
                v["severity"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    rules.sort();
    assert_eq!(
        rules,
        vec![("night".to_owned(), "warning".to_owned()); 3],
        "{replay}"
    );
    // Every rule still tags its events (searchable whatever the route).
    let mut q = env.investigator().await?;
    let tagged = q
        .search(SearchRequest {
            alert: "*".into(),
            page_size: 10,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(tagged.total_hits, 3);
    drop(collector);
    Ok(())
}

/// Waits until `agent` is connected (or not), per `kiroku hosts`.
async fn connected(env: &Env, agent: &str, want: bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let hosts = env
            .investigator()
            .await?
            .list_hosts(ListHostsRequest::default())
            .await?
            .into_inner()
            .hosts;
        if hosts
            .iter()
            .any(|h| h.agent_id == agent && h.connected == want && h.clock_offset_known)
        {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{agent} never connected={want}: {hosts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_agent_and_clock_skew_fire_once_per_episode() -> anyhow::Result<()> {
    ensure_test_hooks()?;
    let env = Env::new()?;
    let hook = Hook::start()?;
    let sink = Upstream::start(&env)?;
    std::fs::write(
        env.path().join("rules.toml"),
        r#"[[rule]]
name = "silent"
kind = "agent_silent"
minutes = 0.05
severity = "critical"
route = ["webhook"]

[[rule]]
name = "skew"
kind = "clock_skew"
max_offset = "30s"
route = ["webhook", "stream"]
"#,
    )?;
    let _collector = env.start_collector_with(&format!(
        "[alerts]\nrules = \"rules.toml\"\nhealth_secs = 1\n{}",
        notifiers(&hook, &sink)
    ))?;
    let smtp = free_port();
    let skew = [("KIROKU_TEST_CLOCK_SKEW_MS", "120000")];
    let mut agent = env.start_agent_env("pc-skew", smtp, &Mode::CaptureOnly, &skew)?;
    connected(&env, "pc-skew", true).await?;
    // Mails recorded once the offset is measured carry it: the first one
    // crosses, the others stay above and fire nothing.
    for i in 0..3 {
        let s = send_mail(
            smtp,
            "alice@corp.example",
            &["bob@example.org"],
            &mail(&format!("skewed {i}"), None),
        )?;
        assert_eq!(s.code, 250, "{s:?}");
    }
    env.wait_for(
        SearchRequest {
            subject: "skewed".into(),
            ..Default::default()
        },
        3,
        Duration::from_secs(30),
    )
    .await?;
    wait_until("the clock_skew alert", Duration::from_secs(15), || {
        hook.rules().contains(&"skew".to_owned())
    })?;
    let skewed = hook
        .all()
        .into_iter()
        .find(|v| v["rule"] == "skew")
        .expect("skew alert");
    let summary = skewed["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("pc-skew") && summary.contains("ahead of the collector"),
        "{summary}"
    );
    assert_eq!(skewed["severity"], "warning");

    // Stopped: silent after 3 s, reported once however long it lasts.
    agent.terminate();
    connected(&env, "pc-skew", false).await?;
    wait_until("the agent_silent alert", Duration::from_secs(20), || {
        hook.rules().contains(&"silent".to_owned())
    })?;
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(hook.rules(), ["silent", "skew"], "{:?}", hook.all());
    let silent = hook
        .all()
        .into_iter()
        .find(|v| v["rule"] == "silent")
        .expect("silent alert");
    assert_eq!(silent["severity"], "critical");
    let body = silent["body"].as_str().unwrap_or_default();
    assert!(
        body.contains("pc-skew") && body.contains("kiroku hosts"),
        "{body}"
    );

    // Back, then silent again: a second alert.
    let mut agent = env.start_agent_env("pc-skew", smtp, &Mode::CaptureOnly, &skew)?;
    connected(&env, "pc-skew", true).await?;
    // Seen connected by at least one periodic check.
    std::thread::sleep(Duration::from_millis(2500));
    agent.terminate();
    wait_until(
        "the second agent_silent alert",
        Duration::from_secs(20),
        || hook.rules().iter().filter(|r| *r == "silent").count() == 2,
    )?;
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        hook.rules(),
        ["silent", "silent", "skew"],
        "{:?}",
        hook.all()
    );
    // Routed to the webhook only: no alert mail.
    assert!(mails(&sink).is_empty(), "{:?}", mails(&sink));
    // The stream has the skew alert (routed there), not the silences.
    let replay = env.cli(&["alerts", "--since", "1h", "--json"])?;
    let streamed: Vec<&str> = replay.lines().filter(|l| l.contains("\"rule\"")).collect();
    assert_eq!(streamed.len(), 1, "{replay}");
    assert!(streamed[0].contains("\"skew\""), "{replay}");
    Ok(())
}
