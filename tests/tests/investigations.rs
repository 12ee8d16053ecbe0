//! Investigations end to end (issue 4): alerts (every rule kind fires once
//! per matching event; webhook to a real HTTP listener, mail to a real SMTP
//! server, the live Alerts stream; rules reload, a broken file keeps the old
//! rules), `kiroku trace` and `kiroku report exfil`.
//!
//! Mail goes through the real agent. File events are shipped through the
//! real Ingest API over mTLS with the agent's certificate, because the
//! agent's file capture is built on another branch: see
//! [`ship_file_events`] — switch those calls to real file operations under
//! a watched directory once it lands.

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiroku_common::sha256_hex;
use kiroku_proto::ingest_client::IngestClient;
use kiroku_proto::query_client::QueryClient;
use kiroku_proto::{
    AuditRequest, Batch, Event, ExfilReportRequest, FileEvent, Hello, HostIdentity, SearchRequest,
    ShipRequest, TraceRequest, event::Kind, ship_request, ship_response,
};
use kiroku_tests::{Env, Mode, Proc, Upstream, bin, free_port, send_mail};

/// A file event as the agent's file capture will record it.
fn file_event(seq: u64, at: i64, op: &str, path: &str, sha: &str) -> Event {
    Event {
        stream_id: "files-e2e".into(),
        seq,
        observed_at_ms: at,
        clock_offset_known: true,
        host: Some(HostIdentity {
            hostname: "pc-1".into(),
            ..Default::default()
        }),
        user: "alice".into(),
        kind: Some(Kind::File(FileEvent {
            operation: op.into(),
            path: path.into(),
            sha256: sha.into(),
            size: 1234,
            volume: "/".into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn file_mut(e: &mut Event) -> &mut FileEvent {
    match &mut e.kind {
        Some(Kind::File(f)) => f,
        _ => panic!("not a file event"),
    }
}

fn copy_to_usb(seq: u64, at: i64, path: &str, sha: &str, source: &str) -> Event {
    let mut e = file_event(seq, at, "copy_to_removable", path, sha);
    let f = file_mut(&mut e);
    f.volume = "/media/usb".into();
    f.volume_label = "KINGSTON".into();
    f.removable = true;
    f.source_path = source.into();
    e
}

/// Ships file events as agent `agent` over the real Ingest API (mTLS with
/// the agent's certificate); returns (stored, duplicates) of the ack.
///
/// Stand-in for the agent's file capture (built on another branch): once it
/// lands, produce these events with real file operations instead.
async fn ship_file_events(
    env: &Env,
    agent: &str,
    events: Vec<Event>,
) -> anyhow::Result<(u32, u32)> {
    let pki = env.pki();
    let ch = env
        .channel(
            Some((
                &pki.join(format!("agent-{agent}.pem")),
                &pki.join(format!("agent-{agent}.key")),
            )),
            None,
        )
        .await?;
    let msgs = vec![
        ShipRequest {
            msg: Some(ship_request::Msg::Hello(Hello {
                stream_id: "files-e2e".into(),
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
    let mut resp = IngestClient::new(ch)
        .ship(tokio_stream::iter(msgs))
        .await?
        .into_inner();
    while let Some(m) = resp.message().await? {
        if let Some(ship_response::Msg::Ack(a)) = m.msg {
            return Ok((a.stored, a.duplicates));
        }
    }
    anyhow::bail!("Ship ended without an Ack")
}

/// A tiny HTTP server: records every POST body it answers 200; answers the
/// very first request 503 so the webhook's retry is exercised.
struct Hook {
    port: u16,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    refused: Arc<Mutex<u32>>,
}

impl Hook {
    fn start() -> anyhow::Result<Hook> {
        let l = kiroku_tests::bind_local()?;
        let port = l.local_addr()?.port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(0));
        let (b, r) = (bodies.clone(), refused.clone());
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
                let mut refused = r.lock().expect("lock");
                let status = if *refused == 0 {
                    *refused += 1;
                    "503 Service Unavailable"
                } else {
                    if let Ok(v) = serde_json::from_slice(&body) {
                        b.lock().expect("lock").push(v);
                    }
                    "200 OK"
                };
                let _ = write!(
                    w,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Ok(Hook {
            port,
            bodies,
            refused,
        })
    }

    /// (rule, event_id) of every alert delivered so far.
    fn got(&self) -> Vec<(String, String)> {
        self.bodies
            .lock()
            .expect("lock")
            .iter()
            .map(|v| {
                (
                    v["rule"].as_str().unwrap_or_default().to_owned(),
                    v["event_id"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }
}

fn wait_until(what: &str, within: Duration, mut ok: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while !ok() {
        if Instant::now() > deadline {
            anyhow::bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn cli_config(env: &Env) -> anyhow::Result<String> {
    let cli = env.path().join("cli.toml");
    std::fs::write(
        &cli,
        format!(
            "endpoint = \"https://127.0.0.1:{}\"\nserver_name = \"localhost\"\n[tls]\nca = \"pki/ca.pem\"\ncert = \"pki/investigator-inv.pem\"\nkey = \"pki/investigator-inv.key\"\n",
            env.grpc
        ),
    )?;
    Ok(cli.to_string_lossy().into_owned())
}

fn mail(to: &str, subject: &str, attachment: Option<(&str, &[u8])>) -> Vec<u8> {
    use base64::Engine;
    let mut m = format!(
        "From: alice@corp.example\r\nTo: {to}\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n"
    );
    match attachment {
        None => m.push_str("Content-Type: text/plain\r\n\r\nhello\r\n"),
        Some((name, data)) => m.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--b--\r\n",
            base64::engine::general_purpose::STANDARD.encode(data)
        )),
    }
    m.into_bytes()
}

fn rules(secret: &str, usb_rule: &str) -> String {
    format!(
        r#"[[rule]]
name = "ext"
kind = "external_attachment"
internal_domains = ["corp.example"]

[[rule]]
name = "secret"
kind = "sensitive_hash"
sha256 = ["{secret}"]

[[rule]]
name = "hr"
kind = "sensitive_dir"
paths = ["/srv/hr/**"]

[[rule]]
name = "{usb_rule}"
kind = "removable_copy"

[[rule]]
name = "burst"
kind = "mail_rate"
internal_domains = ["corp.example"]
max_per_hour = 2
"#
    )
}

/// The text of a single-part mail, decoded from base64 or quoted-printable.
fn mail_text(raw: &[u8]) -> String {
    use base64::Engine;
    let raw = String::from_utf8_lossy(raw);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let head = head.to_ascii_lowercase();
    if head.contains("content-transfer-encoding: base64") {
        let b64: String = body.split_whitespace().collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    } else if head.contains("content-transfer-encoding: quoted-printable") {
        qp_decode(body)
    } else {
        body.to_owned()
    }
}

/// Quoted-printable to text (the alert mail's body), enough for ASCII.
fn qp_decode(s: &str) -> String {
    let joined = s.replace("=\r\n", "");
    let mut out = String::new();
    let mut rest = joined.as_str();
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            Some(b) => {
                out.push(char::from(b));
                rest = &rest[i + 3..];
            }
            None => {
                out.push('=');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn sorted(mut v: Vec<(String, String)>) -> Vec<(String, String)> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn alerts_fire_once_notify_and_reload() -> anyhow::Result<()> {
    let env = Env::new()?;
    let hook = Hook::start()?;
    let admin_smtp = Upstream::start(&env)?;
    let secret_doc: &[u8] = b"%PDF-1.7 the merger plan, do not forward";
    let secret = sha256_hex(secret_doc);
    let rules_path = env.path().join("rules.toml");
    std::fs::write(&rules_path, rules(&secret, "usb"))?;
    let mut collector = env.start_collector_with(&format!(
        "[alerts]\nrules = \"rules.toml\"\nreload_secs = 1\n[alerts.webhook]\nurl = \"http://127.0.0.1:{}/hook\"\n[alerts.mail]\nserver = \"127.0.0.1:{}\"\ntls = \"off\"\nfrom = \"kiroku@corp.example\"\nto = [\"sec@corp.example\"]\n",
        hook.port, admin_smtp.port
    ))?;
    let cli = cli_config(&env)?;
    // A live follower from the start: `kiroku alerts --follow --json`.
    let follow_log = env.path().join("follow.log");
    let mut follower = Proc::spawn(
        "kiroku alerts --follow",
        std::process::Command::new(bin("kiroku"))
            .args(["--config", &cli, "alerts", "--follow", "--json"])
            .current_dir(env.path()),
        &follow_log,
    )?;
    wait_until(
        "the follower's subscription",
        Duration::from_secs(15),
        || collector.log_text().contains("call=\"Alerts\""),
    )?;
    let smtp = free_port();
    let _agent = env.start_agent("pc-1", smtp, &Mode::CaptureOnly)?;

    // 1. An external mail carrying the sensitive document.
    let sent = send_mail(
        smtp,
        "alice@corp.example",
        &["eve@other.org"],
        &mail("eve@other.org", "plan", Some(("plan.pdf", secret_doc))),
    )?;
    assert_eq!(sent.code, 250, "{sent:?}");
    let m1 = env
        .wait_for(
            SearchRequest {
                subject: "plan".into(),
                ..Default::default()
            },
            1,
            Duration::from_secs(30),
        )
        .await?;
    let m1 = m1[0].event_id.clone();

    // 2. Files: first seen under /srv/hr, renamed out, copied to USB.
    let now = kiroku_common::now_ms();
    let d = sha256_hex(b"payroll");
    let mut renamed = file_event(2, now, "rename", "/home/alice/pay.xlsx", &d);
    file_mut(&mut renamed).old_path = "/srv/hr/pay.xlsx".into();
    let batch = vec![
        file_event(1, now, "create", "/srv/hr/pay.xlsx", &d),
        renamed,
        copy_to_usb(3, now, "/media/usb/pay.xlsx", &d, "/home/alice/pay.xlsx"),
    ];
    assert_eq!(ship_file_events(&env, "pc-1", batch.clone()).await?, (3, 0));
    // The same batch again (an agent resending after a lost ack): stored
    // once, fires nothing.
    assert_eq!(ship_file_events(&env, "pc-1", batch).await?, (0, 3));

    // 3. Three more external mails: the third external mail of the hour
    // crosses max_per_hour = 2, the fourth does not fire again.
    for i in 2..=4 {
        let s = send_mail(
            smtp,
            "alice@corp.example",
            &["eve@other.org"],
            &mail("eve@other.org", &format!("note{i}"), None),
        )?;
        assert_eq!(s.code, 250);
    }
    let notes = env
        .wait_for(
            SearchRequest {
                text: "note2 OR note3 OR note4".into(),
                ..Default::default()
            },
            3,
            Duration::from_secs(30),
        )
        .await?;
    let note3 = notes
        .iter()
        .find(|e| kiroku_tests::email(e).subject == "note3")
        .map(|e| e.event_id.clone())
        .expect("note3 stored");

    let want = sorted(vec![
        ("ext".into(), m1.clone()),
        ("secret".into(), m1.clone()),
        ("hr".into(), "pc-1/files-e2e/2".into()),
        ("hr".into(), "pc-1/files-e2e/3".into()),
        ("usb".into(), "pc-1/files-e2e/3".into()),
        ("burst".into(), note3.clone()),
    ]);
    wait_until("6 webhook deliveries", Duration::from_secs(30), || {
        hook.got().len() >= want.len()
    })?;
    // Give a double a chance to show up before comparing.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        sorted(hook.got()),
        want,
        "each alert delivered exactly once"
    );
    assert_eq!(
        *hook.refused.lock().expect("lock"),
        1,
        "the 503 was retried"
    );

    // Tags: searchable by rule and by "*".
    let mut q = env.investigator().await?;
    let tagged = |alert: &str| SearchRequest {
        alert: alert.into(),
        page_size: 100,
        ..Default::default()
    };
    assert_eq!(q.search(tagged("*")).await?.into_inner().total_hits, 4);
    let usb = q.search(tagged("usb")).await?.into_inner().events;
    assert_eq!(usb.len(), 1);
    assert!(
        usb[0].tags.contains(&"alert:hr".to_owned()),
        "{:?}",
        usb[0].tags
    );

    // Mail to the administrator: every alert once, over however many mails.
    let mut mailed = Vec::new();
    wait_until("alert mail", Duration::from_secs(30), || {
        mailed = admin_smtp
            .messages()
            .iter()
            .flat_map(|(raw, _)| {
                mail_text(raw)
                    .lines()
                    .filter_map(|l| l.strip_prefix("rule:").map(|r| r.trim().to_owned()))
                    .collect::<Vec<_>>()
            })
            .collect();
        mailed.len() >= want.len()
    })
    .map_err(|e| {
        anyhow::anyhow!(
            "{e}: {mailed:?}\n{}\n{:?}",
            collector.log_text(),
            admin_smtp
                .messages()
                .iter()
                .map(|(raw, _)| String::from_utf8_lossy(raw).into_owned())
                .collect::<Vec<_>>()
        )
    })?;
    mailed.sort();
    let mut want_rules: Vec<String> = want
        .iter()
        .map(|(r, _)| {
            let kind = match r.as_str() {
                "ext" => "external_attachment",
                "secret" => "sensitive_hash",
                "hr" => "sensitive_dir",
                "usb" => "removable_copy",
                _ => "mail_rate",
            };
            format!("{r} ({kind})")
        })
        .collect();
    want_rules.sort();
    assert_eq!(mailed, want_rules);

    // The live follower saw them; a replay shows them too.
    wait_until("follower output", Duration::from_secs(10), || {
        std::fs::read_to_string(&follow_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with('{'))
            .count()
            >= want.len()
    })?;
    let replay = env.kiroku(&["--config", &cli, "alerts", "--since", "1h", "--json"])?;
    assert_eq!(replay.lines().count(), want.len(), "{replay}");
    let text = env.kiroku(&["--config", &cli, "alerts", "--since", "1h"])?;
    assert!(
        text.contains("copied /home/alice/pay.xlsx to removable volume /media/usb"),
        "{text}"
    );

    // 4. A broken rules file is refused with file, line and field; the
    // old rules stay in force.
    let broken = rules(&secret, "usb").replace(&format!("\"{secret}\""), "\"not-a-hash\"");
    kiroku_tests::replace_file(&rules_path, broken)?;
    wait_until("the refusal in the log", Duration::from_secs(15), || {
        collector.log_text().contains("NOT reloaded")
    })?;
    let log = collector.log_text();
    assert!(
        log.contains("rules.toml, line 6, rule \"secret\", field `sha256`"),
        "{log}"
    );
    let other = sha256_hex(b"holiday photos");
    assert_eq!(
        ship_file_events(
            &env,
            "pc-1",
            vec![copy_to_usb(4, now, "/media/usb/photos.zip", &other, "")]
        )
        .await?,
        (1, 0)
    );
    wait_until(
        "usb alert under the old rules",
        Duration::from_secs(15),
        || {
            hook.got()
                .contains(&("usb".into(), "pc-1/files-e2e/4".into()))
        },
    )?;

    // 5. A fixed file is picked up without a restart.
    kiroku_tests::replace_file(&rules_path, rules(&secret, "usb-v2"))?;
    wait_until("the reload in the log", Duration::from_secs(15), || {
        collector.log_text().contains("alert rules reloaded")
    })?;
    ship_file_events(
        &env,
        "pc-1",
        vec![copy_to_usb(5, now, "/media/usb/photos2.zip", &other, "")],
    )
    .await?;
    wait_until("usb-v2 alert", Duration::from_secs(15), || {
        hook.got()
            .contains(&("usb-v2".into(), "pc-1/files-e2e/5".into()))
    })?;
    assert!(
        !hook
            .got()
            .contains(&("usb".into(), "pc-1/files-e2e/5".into()))
    );
    assert!(collector.is_running());
    follower.kill9();
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn trace_and_exfil_report() -> anyhow::Result<()> {
    let env = Env::new()?;
    let _collector = env.start_collector()?;
    let smtp = free_port();
    let _agent = env.start_agent("pc-1", smtp, &Mode::CaptureOnly)?;
    let cli = cli_config(&env)?;
    let doc: &[u8] = b"%PDF-1.7 Q3 figures, final";
    let h = sha256_hex(doc);
    let now = kiroku_common::now_ms();

    // The file is created, then renamed (on an agent whose clock runs an
    // hour fast: corrected, the rename is still before the mail).
    let mut renamed = file_event(
        2,
        now - 50_000 + 3_600_000,
        "rename",
        "/home/alice/old/q3-final.pdf",
        &h,
    );
    renamed.clock_offset_ms = 3_600_000;
    file_mut(&mut renamed).old_path = "/home/alice/q3.pdf".into();
    ship_file_events(
        &env,
        "pc-1",
        vec![
            file_event(1, now - 60_000, "create", "/home/alice/q3.pdf", &h),
            renamed,
            file_event(
                3,
                now - 40_000,
                "create",
                "/home/alice/unrelated.txt",
                &sha256_hex(b"x"),
            ),
        ],
    )
    .await?;
    // Then mailed out through the agent, by its new name.
    let sent = send_mail(
        smtp,
        "alice@corp.example",
        &["bob@other.org"],
        &mail("bob@other.org", "figures", Some(("q3-final.pdf", doc))),
    )?;
    assert_eq!(sent.code, 250);
    let mail_ev = env
        .wait_for(
            SearchRequest {
                sha256: h.clone(),
                has_attachment: true,
                ..Default::default()
            },
            1,
            Duration::from_secs(30),
        )
        .await?;
    let mail_id = mail_ev[0].event_id.clone();
    // Then copied to a USB stick twice: once hashed, once too big to hash
    // (found through its source_path).
    let later = kiroku_common::now_ms();
    let mut unhashed = copy_to_usb(
        5,
        later + 1,
        "/media/usb/q3-copy.pdf",
        "",
        "/home/alice/old/q3-final.pdf",
    );
    file_mut(&mut unhashed).hash_skipped = "over size cap".into();
    ship_file_events(
        &env,
        "pc-1",
        vec![
            copy_to_usb(
                4,
                later,
                "/media/usb/q3-final.pdf",
                &h,
                "/home/alice/old/q3-final.pdf",
            ),
            unhashed,
        ],
    )
    .await?;

    let mut q = env.investigator().await?;
    let t = q
        .trace(TraceRequest {
            sha256: h.to_uppercase(),
            limit: 0,
        })
        .await?
        .into_inner();
    let ids: Vec<&str> = t.events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "pc-1/files-e2e/1",
            "pc-1/files-e2e/2",
            mail_id.as_str(),
            "pc-1/files-e2e/4",
            "pc-1/files-e2e/5"
        ]
    );
    assert!(!t.truncated);
    let t = q
        .trace(TraceRequest {
            sha256: h.clone(),
            limit: 2,
        })
        .await?
        .into_inner();
    assert_eq!((t.events.len(), t.truncated), (2, true));
    let bad = q
        .trace(TraceRequest {
            sha256: "abc".into(),
            limit: 0,
        })
        .await;
    assert_eq!(
        bad.err().map(|e| e.code()),
        Some(tonic::Code::InvalidArgument)
    );

    // The CLI table tells the story; --json is one line per event.
    let table = env.kiroku(&["--config", &cli, "trace", &h])?;
    for want in [
        "create /home/alice/q3.pdf",
        "rename /home/alice/q3.pdf → /home/alice/old/q3-final.pdf",
        "alice@corp.example → bob@other.org: q3-final.pdf",
        "copy to removable /media/usb: /media/usb/q3-final.pdf",
        "pc-1",
    ] {
        assert!(table.contains(want), "{want:?} missing in\n{table}");
    }
    assert!(table.find("rename").unwrap_or(usize::MAX) < table.find("bob@other.org").unwrap_or(0));
    let json = env.kiroku(&["--config", &cli, "trace", &h, "--json"])?;
    assert_eq!(json.lines().count(), 5);

    // The report: one file by mail, two on removable media, today.
    let report = |more: &[&str]| {
        let base = ["--config", &cli, "report", "exfil", "--from", "1d"];
        env.kiroku(&[&base[..], more].concat())
    };
    let rep: serde_json::Value = serde_json::from_str(&report(&["--json"])?)?;
    let files = rep["files"].as_array().cloned().unwrap_or_default();
    let methods: Vec<&str> = files.iter().filter_map(|f| f["method"].as_str()).collect();
    assert_eq!(methods, ["mail", "removable", "removable"], "{rep}");
    assert_eq!(files[0]["filename"], "q3-final.pdf");
    assert_eq!(files[0]["destination"], "bob@other.org");
    assert_eq!(files[0]["size"], doc.len() as u64);
    let per_day = rep["per_day"].as_array().cloned().unwrap_or_default();
    assert_eq!(per_day.len(), 2, "{rep}");
    assert_eq!(rep["per_user"].as_array().map(|a| a.len()), Some(2));
    assert_eq!(
        (
            rep["files_total"].as_u64(),
            rep["files_truncated"].as_bool()
        ),
        (Some(3), Some(false)),
        "{rep}"
    );
    let csv = report(&["--csv"])?;
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("day,time,method,user,host,file,sha256,size,destination,event_id")
    );
    assert_eq!(lines.count(), 3);

    // Bounded: the totals count every file, the list holds the newest, and
    // the stream returns every file, oldest first, as the full list does.
    let range = ExfilReportRequest {
        from_ms: now - 86_400_000,
        to_ms: kiroku_common::now_ms() + 60_000,
        ..Default::default()
    };
    let full = q.exfil_report(range.clone()).await?.into_inner();
    assert_eq!(
        (full.files.len(), full.files_total, full.files_truncated),
        (3, 3, false)
    );
    let one = q
        .exfil_report(ExfilReportRequest {
            max_files: 1,
            ..range.clone()
        })
        .await?
        .into_inner();
    assert_eq!((one.files_total, one.files_truncated), (3, true));
    assert_eq!(one.files, full.files[2..]);
    assert_eq!(one.files[0].event_id, "pc-1/files-e2e/5");
    assert_eq!(
        (one.per_day.clone(), one.per_user.clone()),
        (full.per_day.clone(), full.per_user.clone())
    );
    let mut stream = q.exfil_files(range.clone()).await?.into_inner();
    let mut streamed = Vec::new();
    while let Some(batch) = stream.message().await? {
        streamed.extend(batch.files);
    }
    assert_eq!(streamed, full.files);
    let bad = q
        .exfil_files(ExfilReportRequest {
            to_ms: range.from_ms,
            ..range
        })
        .await;
    assert_eq!(
        bad.err().map(|e| e.code()),
        Some(tonic::Code::InvalidArgument)
    );
    // The CLI lists the newest and says what it leaves out; --all-files
    // streams the rest.
    let text = report(&["--max-files", "1"])?;
    assert!(
        text.contains("3 files; the newest 1 is listed, 2 earlier ones are not: --all-files"),
        "{text}"
    );
    assert!(
        text.contains("q3-copy.pdf") && !text.contains("bob@other.org"),
        "{text}"
    );
    let all: serde_json::Value =
        serde_json::from_str(&report(&["--max-files", "1", "--all-files", "--json"])?)?;
    assert_eq!(all["files"].as_array().map(|a| a.len()), Some(3), "{all}");
    assert_eq!(all["files_truncated"], false, "{all}");
    // Both calls are audited with the number of files they cover.
    let admin = env.admin().await?;
    let audit = QueryClient::new(admin)
        .audit(AuditRequest {
            limit: 1000,
            ..Default::default()
        })
        .await?
        .into_inner();
    for call in ["ExfilReport", "ExfilFiles"] {
        assert!(
            audit
                .entries
                .iter()
                .any(|e| e.call == call && e.results == 3 && e.filter.contains("max_files")),
            "no {call} in {:?}",
            audit.entries
        );
    }
    let text = report(&["--utc-offset", "+09:00"])?;
    assert!(text.contains('█') && text.contains('▒'), "{text}");
    assert!(text.contains("/media/usb (KINGSTON)"), "{text}");
    // An empty range is refused with a reason.
    let err = env
        .kiroku(&[
            "--config", &cli, "report", "exfil", "--from", "1h", "--to", "2h",
        ])
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("must be after"), "{err}");
    Ok(())
}
