//! The alert notifiers carry an alert's severity (issue 19): a
//! maintenance-summary-like alert of each severity, and a rule's alert,
//! sent by `Alerting::notify` through the real mail notifier to a real SMTP
//! server (aiosmtpd, `tests/data/upstream_smtp.py`) and through the real
//! webhook notifier to a real HTTP listener. The mail subject starts with
//! `[kiroku <severity>]`, a summary is mailed alone with its body as the
//! text; the webhook JSON has `severity` and `body`.
//!
//! Skipped (with a message) when python3 with aiosmtpd is missing;
//! `scripts/test.sh` installs it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiroku_collector::alerts::Alerting;
use kiroku_collector::alerts::notify::{self, MailConfig, MailTls, WebhookConfig};
use kiroku_collector::alerts::rules::RuleSet;
use kiroku_collector::store::meta::MetaStore;
use kiroku_proto::Alert;

/// The SMTP server, killed when dropped.
struct Smtp {
    child: Child,
    port: u16,
    out: PathBuf,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn start_smtp(dir: &Path) -> Option<Smtp> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/upstream_smtp.py");
    let have = Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        eprintln!(
            "SKIPPED notify: python3 with aiosmtpd is not installed (scripts/test.sh installs it)"
        );
        return None;
    }
    let port = free_port();
    let out = dir.join("mail");
    let child = Command::new("python3")
        .arg(script)
        .arg(port.to_string())
        .arg(&out)
        .stdout(Stdio::null())
        .spawn()
        .expect("python3 starts");
    let smtp = Smtp { child, port, out };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "aiosmtpd did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(smtp)
}

/// An HTTP listener that answers every POST 200 and keeps its JSON body.
fn start_hook() -> (u16, Arc<Mutex<Vec<serde_json::Value>>>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
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
                if rd.read_line(&mut line).unwrap_or(0) == 0 || line.trim_end().is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; len];
            if rd.read_exact(&mut body).is_ok()
                && let Ok(v) = serde_json::from_slice(&body)
                && let Ok(mut all) = b.lock()
            {
                all.push(v);
            }
            let _ = write!(
                w,
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (port, bodies)
}

/// (subject, text) of every mail received, in order.
fn mails(out: &Path) -> Vec<(String, String)> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(out)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                .collect()
        })
        .unwrap_or_default();
    names.sort_by_key(|p| {
        p.file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<u64>().ok())
    });
    names
        .iter()
        .map(|p| {
            let raw = String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
            let (head, text) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
            // Unfold the header, then take the subject.
            let head = head.replace("\r\n ", " ").replace("\r\n\t", " ");
            let subject = head
                .lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .unwrap_or_default()
                .to_owned();
            (subject, text.to_owned())
        })
        .collect()
}

fn summary(severity: &str, title: &str) -> Alert {
    Alert {
        rule: "maintenance".into(),
        kind: "maintenance".into(),
        fired_at_ms: 1_700_000_000_000,
        severity: severity.into(),
        summary: format!("Kiroku maintenance: {title}"),
        body: format!("verified: 120 entries\nproblems: {title}\n"),
        ..Default::default()
    }
}

#[test]
fn summaries_reach_mail_and_webhook_with_their_severity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(smtp) = start_smtp(dir.path()) else {
        return;
    };
    let (hook_port, hooked) = start_hook();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let sent = [
        summary("info", "no problems"),
        summary("warning", "problems fixed"),
        summary("critical", "needs action"),
        Alert {
            rule: "usb".into(),
            kind: "removable_copy".into(),
            event_id: "pc-1/files/3".into(),
            summary: "copy to E:".into(),
            ..Default::default()
        },
    ];
    rt.block_on(async {
        let (mail, _) = notify::mail(MailConfig {
            server: format!("127.0.0.1:{}", smtp.port),
            tls: MailTls::Off,
            from: "kiroku@corp.example".into(),
            to: vec!["admins@corp.example".into()],
            username: None,
            password_file: None,
            attempts: 3,
            queue: 10,
        })
        .expect("mail notifier");
        let (hook, _) = notify::webhook(WebhookConfig {
            url: format!("http://127.0.0.1:{hook_port}/hook"),
            attempts: 3,
            timeout_secs: 5,
            queue: 10,
        })
        .expect("webhook notifier");
        let meta = MetaStore::open(&dir.path().join("meta")).expect("meta");
        let alerting =
            Alerting::new(&meta, RuleSet::default(), vec![mail, hook], 100).expect("alerting");
        for a in &sent {
            alerting.notify(a);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while mails(&smtp.out).len() < 4 || hooked.lock().expect("lock").len() < 4 {
            assert!(
                Instant::now() < deadline,
                "mails {:?}, webhook {:?}",
                mails(&smtp.out),
                hooked.lock().expect("lock")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let got = mails(&smtp.out);
    let subjects: Vec<&str> = got.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        subjects,
        [
            "[kiroku info] Kiroku maintenance: no problems",
            "[kiroku warning] Kiroku maintenance: problems fixed",
            "[kiroku critical] Kiroku maintenance: needs action",
            "[kiroku warning] usb: copy to E:",
        ]
    );
    assert!(
        got[2]
            .1
            .contains("severity: critical\r\n\r\nverified: 120 entries\r\nproblems: needs action"),
        "{:?}",
        got[2].1
    );
    assert!(got[3].1.contains("severity: warning\r\n"), "{:?}", got[3].1);
    let hooked = hooked.lock().expect("lock");
    let by_severity: Vec<(&str, &str, &str)> = hooked
        .iter()
        .map(|v| {
            (
                v["severity"].as_str().unwrap_or_default(),
                v["summary"].as_str().unwrap_or_default(),
                v["body"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        by_severity,
        [
            (
                "info",
                "Kiroku maintenance: no problems",
                "verified: 120 entries\nproblems: no problems\n"
            ),
            (
                "warning",
                "Kiroku maintenance: problems fixed",
                "verified: 120 entries\nproblems: problems fixed\n"
            ),
            (
                "critical",
                "Kiroku maintenance: needs action",
                "verified: 120 entries\nproblems: needs action\n"
            ),
            ("warning", "copy to E:", ""),
        ]
    );
}
