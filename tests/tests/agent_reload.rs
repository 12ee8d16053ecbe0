//! Agent configuration reload, end to end with the real agent, collector
//! and two real SMTP servers (aiosmtpd) as upstreams A and B:
//!
//! - the upstream changed by SIGHUP while mail flows: mail before the
//!   reload goes to A, mail after to B, a session open across the reload
//!   finishes on A, none is lost, each record names the upstream it went to;
//! - a watch root added by editing the file (no signal): files created in
//!   it afterwards are recorded, the files already there are not reported;
//! - broken files (a bad value, a required field missing, a CA file that
//!   does not exist) are refused with the file, line and field, and the
//!   running settings stay; a setting that needs a restart is named and
//!   keeps its value; the collector sees the config file's SHA-256;
//! - an `[[mta_log]]` added by reload: its lines are recorded.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kiroku_proto::{Event, SearchRequest, event::Kind};
use kiroku_tests::{Env, Mode, Proc, Talk, Upstream, free_port, send_mail, skip};

const WAIT: Duration = Duration::from_secs(30);

fn message(subject: &str) -> Vec<u8> {
    format!(
        "From: a@example.org\r\nTo: b@example.net\r\nSubject: {subject}\r\nMessage-ID: <{subject}@example.org>\r\n\r\nbody of {subject}\r\n"
    )
    .into_bytes()
}

fn send(port: u16, subject: &str) -> anyhow::Result<()> {
    let sent = send_mail(port, "a@example.org", &["b@example.net"], &message(subject))?;
    anyhow::ensure!(sent.code == 250, "{subject}: {sent:?}");
    Ok(())
}

/// Subjects of the messages an upstream received, in order.
fn received(up: &Upstream) -> Vec<String> {
    up.messages()
        .iter()
        .filter_map(|(raw, _)| {
            let text = String::from_utf8_lossy(raw);
            text.lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .map(|s| s.trim().to_owned())
        })
        .collect()
}

fn count(agent: &Proc, what: &str) -> usize {
    agent.log_text().matches(what).count()
}

/// Waits until the agent's log holds `what` at least `n` times.
async fn wait_count(agent: &Proc, what: &str, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    while count(agent, what) < n {
        anyhow::ensure!(
            Instant::now() < deadline,
            "agent log never said {what:?} {n} times:\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// The log lines holding `what`.
fn lines_of(agent: &Proc, what: &str) -> Vec<String> {
    agent
        .log_text()
        .lines()
        .filter(|l| l.contains(what))
        .map(str::to_owned)
        .collect()
}

/// Rewrites the agent's config file through a temporary file and a
/// rename, as editors and configuration tools do.
fn rewrite(cfg: &Path, edit: impl FnOnce(String) -> String) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(cfg)?;
    let new = edit(text);
    let tmp = cfg.with_extension("toml.new");
    std::fs::write(&tmp, new)?;
    std::fs::rename(&tmp, cfg)?;
    Ok(())
}

fn sighup(agent: &Proc) -> anyhow::Result<()> {
    let ok = std::process::Command::new("kill")
        .arg("-HUP")
        .arg(agent.pid().to_string())
        .status()?
        .success();
    anyhow::ensure!(ok, "kill -HUP failed");
    Ok(())
}

/// Waits until `kiroku hosts --json` shows the agent's config SHA-256 as
/// that of `cfg`'s current content.
async fn wait_config_reported(env: &Env, cfg: &Path) -> anyhow::Result<()> {
    use sha2::{Digest, Sha256};
    let want = hex::encode(Sha256::digest(std::fs::read(cfg)?));
    let deadline = Instant::now() + WAIT;
    loop {
        let out = env.cli(&["hosts", "--json"])?;
        if out.contains(&format!("\"config_sha256\":\"{want}\"")) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the collector never saw config {want}: {out}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn config_of(env: &Env, name: &str) -> PathBuf {
    env.path().join(format!("agent-{name}.toml"))
}

fn emails(events: &[Event]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::Email(m)) => Some((m.subject.clone(), m.upstream.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_moves_new_mail_to_the_new_upstream_and_learns_a_new_watch_root()
-> anyhow::Result<()> {
    if !Path::new("/proc/sys/fs/inotify/max_queued_events").exists() {
        skip("agent_reload", "no inotify on this system");
        return Ok(());
    }
    let env = Env::new()?;
    let _collector = env.start_collector()?;
    let a = Upstream::start(&env)?;
    let b = Upstream::start(&env)?;
    let root1 = env.path().join("root1");
    let root2 = env.path().join("root2");
    std::fs::create_dir_all(&root1)?;
    std::fs::create_dir_all(&root2)?;
    // Already there when root2 is added: learned, never reported.
    std::fs::write(root2.join("before-reload.txt"), b"old")?;
    let smtp = free_port();
    let files = format!(
        "[files]\nwatch = [{root1:?}]\ncoalesce_ms = 200\nremovable_roots = []\nremovable_auto = false\n"
    );
    let agent = env.start_agent_with("rl", smtp, &Mode::Relay(a.port), &files)?;
    wait_count(&agent, "file capture watching", 1).await?;
    let cfg = config_of(&env, "rl");

    // Before the reload: to A.
    for i in 0..3 {
        send(smtp, &format!("before-{i}"))?;
    }
    // A session in progress across the reload: its upstream is A.
    let (mut open, greeting) = Talk::connect(smtp)?;
    anyhow::ensure!(greeting.0 == 220, "{greeting:?}");
    anyhow::ensure!(open.cmd("EHLO client.example")?.0 == 250);
    anyhow::ensure!(open.cmd("MAIL FROM:<a@example.org>")?.0 == 250);
    anyhow::ensure!(open.cmd("RCPT TO:<b@example.net>")?.0 == 250);

    // Mail keeps flowing through the reload.
    let stop = Arc::new(AtomicBool::new(false));
    let flow = std::thread::spawn({
        let stop = stop.clone();
        move || -> anyhow::Result<Vec<String>> {
            let mut sent = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let subject = format!("flow-{i:03}");
                send(smtp, &subject)?;
                sent.push(subject);
                i += 1;
            }
            Ok(sent)
        }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    rewrite(&cfg, |t| {
        t.replace(
            &format!("upstream = \"127.0.0.1:{}\"", a.port),
            &format!("upstream = \"127.0.0.1:{}\"", b.port),
        )
    })?;
    sighup(&agent)?;
    wait_count(&agent, "configuration reloaded", 1).await?;
    let first = lines_of(&agent, "configuration reloaded").remove(0);
    anyhow::ensure!(
        first.contains("SIGHUP") && first.contains("smtp.upstream"),
        "{first}"
    );
    // Flowing mail reaches B before the sender stops (a fixed pause could
    // end before the first one got there on a loaded machine).
    let deadline = Instant::now() + WAIT;
    while !received(&b).iter().any(|s| s.starts_with("flow-")) {
        if flow.is_finished() || Instant::now() > deadline {
            stop.store(true, Ordering::Relaxed);
            let flowed = flow
                .join()
                .map_err(|_| anyhow::anyhow!("sender thread panicked"))??;
            anyhow::bail!(
                "no flowing mail reached B within {WAIT:?}: sent {flowed:?}, A {:?}, B {:?}",
                received(&a),
                received(&b)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let flowed = flow
        .join()
        .map_err(|_| anyhow::anyhow!("sender thread panicked"))??;

    // The session opened before the reload finishes on A.
    anyhow::ensure!(open.cmd("DATA")?.0 == 354);
    open.send(&message("open-across-reload"))?;
    let done = open.cmd(".")?;
    anyhow::ensure!(done.0 == 250, "{done:?}");
    let _ = open.cmd("QUIT");

    // After the reload: to B.
    for i in 0..3 {
        send(smtp, &format!("after-{i}"))?;
    }

    let (at_a, at_b) = (received(&a), received(&b));
    for i in 0..3 {
        anyhow::ensure!(at_a.contains(&format!("before-{i}")), "A got {at_a:?}");
        anyhow::ensure!(at_b.contains(&format!("after-{i}")), "B got {at_b:?}");
    }
    anyhow::ensure!(
        at_a.iter().any(|s| s == "open-across-reload"),
        "the session open across the reload must finish on A: A {at_a:?}, B {at_b:?}"
    );
    // Every flowing mail reached exactly one upstream, and once one went
    // to B none went to A again.
    let mut switched = false;
    for s in &flowed {
        match (at_a.contains(s), at_b.contains(s)) {
            (true, false) => anyhow::ensure!(!switched, "{s} went to A after B: {flowed:?}"),
            (false, true) => switched = true,
            other => anyhow::bail!("{s}: at A/B {other:?}"),
        }
    }
    anyhow::ensure!(switched, "no flowing mail went to B: {flowed:?}");
    let total = 3 + 3 + 1 + flowed.len();
    anyhow::ensure!(at_a.len() + at_b.len() == total, "A {at_a:?} B {at_b:?}");

    // Each record names the upstream the mail went to.
    let req = SearchRequest {
        kind: "email".into(),
        ..Default::default()
    };
    let events = env.wait_for(req, total, WAIT).await?;
    let records = emails(&events);
    anyhow::ensure!(records.len() == total, "{records:?}");
    for (subject, upstream) in &records {
        let want = if at_a.contains(subject) {
            a.port
        } else {
            b.port
        };
        anyhow::ensure!(
            *upstream == format!("127.0.0.1:{want}"),
            "{subject} recorded with upstream {upstream}, delivered to port {want}"
        );
    }

    // A watch root added by editing the file (no signal).
    let watching = count(&agent, "file capture watching");
    rewrite(&cfg, |t| {
        t.replace(
            &format!("watch = [{root1:?}]"),
            &format!("watch = [{root1:?}, {root2:?}]"),
        )
    })?;
    wait_count(&agent, "configuration reloaded", 2).await?;
    let second = lines_of(&agent, "configuration reloaded").remove(1);
    anyhow::ensure!(
        second.contains("file changed") && second.contains("files.watch"),
        "{second}"
    );
    wait_count(&agent, "file capture watching", watching + 1).await?;
    let root2_scanned = format!("root={}", root2.display());
    let deadline = Instant::now() + WAIT;
    while !lines_of(&agent, "file catch-up scan done")
        .iter()
        .any(|l| l.contains(&root2_scanned))
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "root2 never scanned:\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::write(root2.join("after-reload.txt"), b"new")?;
    std::fs::write(root1.join("root1-after-reload.txt"), b"new")?;
    for name in ["after-reload.txt", "root1-after-reload.txt"] {
        let found = env
            .wait_for(
                SearchRequest {
                    kind: "file".into(),
                    operation: "create".into(),
                    path: name.into(),
                    ..Default::default()
                },
                1,
                WAIT,
            )
            .await?;
        anyhow::ensure!(
            found
                .iter()
                .any(|e| matches!(&e.kind, Some(Kind::File(f)) if f.path.ends_with(name))),
            "{name}: {found:?}"
        );
    }
    // The file that was in root2 before the reload: no record at all.
    let old = env
        .search_all(SearchRequest {
            kind: "file".into(),
            path: "before-reload.txt".into(),
            ..Default::default()
        })
        .await?;
    anyhow::ensure!(
        old.iter().all(
            |e| !matches!(&e.kind, Some(Kind::File(f)) if f.path.ends_with("before-reload.txt"))
        ),
        "a file already in a root added by reload was reported: {old:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_config_is_refused_and_the_running_settings_stay() -> anyhow::Result<()> {
    let env = Env::new()?;
    let _collector = env.start_collector()?;
    let a = Upstream::start(&env)?;
    let b = Upstream::start(&env)?;
    let smtp = free_port();
    let agent = env.start_agent("rb", smtp, &Mode::Relay(a.port))?;
    let cfg = config_of(&env, "rb");
    let good = std::fs::read_to_string(&cfg)?;
    // The collector knows which config file the agent runs with.
    wait_config_reported(&env, &cfg).await?;
    let line_of = |text: &str, needle: &str| {
        text.lines()
            .position(|l| l.contains(needle))
            .map(|i| i + 1)
            .unwrap_or(0)
    };
    let refused = "configuration NOT reloaded";

    // A bad value (noticed by the file check, no signal): TOML's error
    // names its line.
    let bad = good.replace(
        "mode = \"relay\"\n",
        "mode = \"relay\"\nupstream_tls = \"sometimes\"\n",
    );
    let bad_line = line_of(&bad, "upstream_tls");
    rewrite(&cfg, |_| bad)?;
    wait_count(&agent, refused, 1).await?;
    let e = lines_of(&agent, refused).remove(0);
    anyhow::ensure!(
        e.contains(&cfg.display().to_string())
            && e.contains(&format!("line {bad_line}"))
            && e.contains("sometimes")
            && e.contains("file changed"),
        "{e}"
    );

    // A required field missing (SIGHUP): file, line, field.
    let missing = good.replace(&format!("upstream = \"127.0.0.1:{}\"\n", a.port), "");
    let smtp_line = line_of(&missing, "[smtp]");
    rewrite(&cfg, |_| missing)?;
    sighup(&agent)?;
    wait_count(&agent, refused, 2).await?;
    let e = lines_of(&agent, refused).remove(1);
    anyhow::ensure!(
        e.contains(&format!(
            "{}, line {smtp_line}, field `smtp.upstream`",
            cfg.display()
        )),
        "{e}"
    );

    // A CA file that does not exist: refused as a whole, though the
    // upstream changed too.
    let no_ca = good
        .replace(
            &format!("upstream = \"127.0.0.1:{}\"", a.port),
            &format!("upstream = \"127.0.0.1:{}\"", b.port),
        )
        .replace(
            "mode = \"relay\"\n",
            "mode = \"relay\"\nupstream_tls = \"opportunistic\"\nupstream_ca = \"no-such-ca.pem\"\n",
        );
    rewrite(&cfg, |_| no_ca)?;
    sighup(&agent)?;
    // Its refusal, wherever it is in the log: the file check and the
    // SIGHUP may both have refused the previous file, so the third
    // refusal need not be this one.
    let deadline = Instant::now() + WAIT;
    let e = loop {
        if let Some(e) = lines_of(&agent, refused)
            .into_iter()
            .find(|l| l.contains("smtp.upstream_ca"))
        {
            break e;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no refusal naming smtp.upstream_ca:\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    anyhow::ensure!(
        e.contains("smtp.upstream_ca") && e.contains("no-such-ca.pem"),
        "{e}"
    );

    // The running settings stayed: mail still goes to A.
    send(smtp, "still-a")?;
    anyhow::ensure!(received(&a) == ["still-a"], "A {:?}", received(&a));
    anyhow::ensure!(received(&b).is_empty());
    anyhow::ensure!(count(&agent, "configuration reloaded") == 0);

    // A good file that also changes settings needing a restart: the
    // upstream and the custom fields apply, the listen address and
    // keepalive are named and keep their values.
    let other = free_port();
    let moved = good
        .replace(
            &format!("upstream = \"127.0.0.1:{}\"", a.port),
            &format!("upstream = \"127.0.0.1:{}\"", b.port),
        )
        .replace(
            &format!("listen = [\"127.0.0.1:{smtp}\"]"),
            &format!("listen = [\"127.0.0.1:{other}\"]"),
        )
        .replace("[collector.tls]", "keepalive_secs = 20\n[collector.tls]")
        .replace("department = \"finance\"", "department = \"legal\"");
    rewrite(&cfg, |_| moved)?;
    sighup(&agent)?;
    wait_count(&agent, "configuration reloaded", 1).await?;
    wait_count(&agent, "need a restart", 1).await?;
    let warn = lines_of(&agent, "need a restart").remove(0);
    anyhow::ensure!(
        warn.contains("smtp.listen") && warn.contains("collector.keepalive_secs"),
        "{warn}"
    );
    anyhow::ensure!(
        !warn.contains("smtp.upstream"),
        "the upstream applies live: {warn}"
    );
    send(smtp, "now-b")?;
    anyhow::ensure!(received(&b) == ["now-b"], "B {:?}", received(&b));
    anyhow::ensure!(
        std::net::TcpStream::connect(("127.0.0.1", other)).is_err(),
        "the new listen address must wait for a restart"
    );
    // Custom fields: the new value on mail after the reload only.
    let events = env
        .wait_for(
            SearchRequest {
                kind: "email".into(),
                ..Default::default()
            },
            2,
            WAIT,
        )
        .await?;
    for e in &events {
        let Some(Kind::Email(m)) = &e.kind else {
            continue;
        };
        let want = if m.subject == "now-b" {
            "legal"
        } else {
            "finance"
        };
        anyhow::ensure!(
            e.custom.get("department").map(String::as_str) == Some(want),
            "{}: custom {:?}",
            m.subject,
            e.custom
        );
    }
    // The reloaded file's SHA-256 reaches the collector (at once, not at
    // the next minute's Status).
    wait_config_reported(&env, &cfg).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mta_log_added_by_reload_is_followed() -> anyhow::Result<()> {
    let env = Env::new()?;
    let _collector = env.start_collector()?;
    let smtp = free_port();
    let agent = env.start_agent("rm", smtp, &Mode::CaptureOnly)?;
    let cfg = config_of(&env, "rm");
    let log = env.path().join("maillog");
    let lines = [
        "Dec  6 07:00:00 mx postfix/smtpd[101]: connect from client.example[192.0.2.7]",
        "Dec  6 07:00:01 mx postfix/qmgr[102]: 4ABC123DEF: from=<a@example.org>, size=1234, nrcpt=1 (queue active)",
        "Dec  6 07:00:02 mx postfix/smtp[103]: 4ABC123DEF: to=<b@example.net>, relay=mx.example.net[198.51.100.1]:25, delay=1.2, delays=0.1/0/0.5/0.6, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 99)",
    ];
    std::fs::write(&log, format!("{}\n", lines.join("\n")))?;
    rewrite(&cfg, |t| {
        format!("{t}[[mta_log]]\npath = {log:?}\nformat = \"postfix\"\nstart_at = \"start\"\n")
    })?;
    sighup(&agent)?;
    wait_count(&agent, "configuration reloaded", 1).await?;
    let reloaded = lines_of(&agent, "configuration reloaded").remove(0);
    anyhow::ensure!(reloaded.contains("mta_log"), "{reloaded}");
    let found = env
        .wait_for(
            SearchRequest {
                kind: "mta_log".into(),
                ..Default::default()
            },
            lines.len(),
            WAIT,
        )
        .await?;
    anyhow::ensure!(found.len() == lines.len(), "{found:?}");
    Ok(())
}
