//! The mail server's own log as a capture source (issue 20): a Postfix
//! (`maillog_file`) and an Exim (`log_file_path`) started by the test, the
//! relay in front of each, and an agent on the same "host" following their
//! logs. Mail relayed through the agent is found again in the MTA's lines
//! by the queue id the relay recorded; the Postfix log is rotated by
//! rename (`postfix logrotate`) and by copytruncate, and the agent is
//! killed with SIGKILL while lines are being appended: every line of every
//! file is recorded exactly once.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kiroku_proto::{MtaLogEvent, SearchRequest, event::Kind};
use kiroku_tests::mta::{self, Exim, Postfix, message, one, swaks};
use kiroku_tests::{Env, Mode, Proc, free_port, run_client};

/// An agent relaying to `port` (TLS verified with `cert`) and following
/// `log` in `format`, from its start.
fn agent(
    env: &Env,
    name: &str,
    smtp: u16,
    port: u16,
    cert: &Path,
    log: &Path,
    format: &str,
) -> anyhow::Result<Proc> {
    // Inside [smtp], then the [[mta_log]] table (the harness adds [custom] after).
    let cfg = format!(
        "upstream_ca = {cert:?}\nupstream_tls_name = {:?}\n[[mta_log]]\npath = {log:?}\nformat = {format:?}\nstart_at = \"start\"\n",
        mta::TLS_NAME
    );
    let mut a = env.start_agent_in_smtp(name, smtp, &Mode::Relay(port), &cfg)?;
    a.wait_port(smtp)?;
    Ok(a)
}

/// Relays one mail with `subject` and returns the queue id the upstream gave.
async fn relay(env: &Env, smtp: u16, subject: &str) -> anyhow::Result<String> {
    let to = format!("bob@{}", mta::LOCAL_DOMAIN);
    let (ok, out) = run_client(&mut swaks(smtp, &to, None), Some(&message(subject, &to)))?;
    anyhow::ensure!(ok, "swaks: {out}");
    let m = one(env, subject).await?;
    anyhow::ensure!(!m.upstream_queue_id.is_empty(), "no queue id: {m:?}");
    Ok(m.upstream_queue_id)
}

fn mta_log(e: &kiroku_proto::Event) -> Option<&MtaLogEvent> {
    match &e.kind {
        Some(Kind::MtaLog(m)) => Some(m),
        _ => None,
    }
}

/// The MTA log records of queue id `qid` once `pred` holds for them.
async fn lines_of(
    env: &Env,
    qid: &str,
    pred: impl Fn(&[MtaLogEvent]) -> bool,
) -> anyhow::Result<Vec<MtaLogEvent>> {
    let req = SearchRequest {
        kind: "mta_log".into(),
        queue_id: qid.into(),
        ..Default::default()
    };
    records_until(env, req, qid, pred).await
}

/// The MTA log records `req` finds once `pred` holds for them (30 s).
async fn records_until(
    env: &Env,
    req: SearchRequest,
    what: &str,
    pred: impl Fn(&[MtaLogEvent]) -> bool,
) -> anyhow::Result<Vec<MtaLogEvent>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got: Vec<MtaLogEvent> = env
            .search_all(req.clone())
            .await?
            .iter()
            .filter_map(mta_log)
            .cloned()
            .collect();
        if pred(&got) {
            return Ok(got);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "records of {what} incomplete: {:#?}",
            got.iter().map(|m| &m.line).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every MTA log line recorded, by text, with how many times.
async fn recorded(env: &Env) -> anyhow::Result<BTreeMap<String, usize>> {
    let req = SearchRequest {
        kind: "mta_log".into(),
        ..Default::default()
    };
    let mut out = BTreeMap::new();
    for e in env.search_all(req).await? {
        if let Some(m) = mta_log(&e) {
            *out.entry(m.line.clone()).or_insert(0) += 1;
        }
    }
    Ok(out)
}

/// Every line of the files in `files` (gzip-compressed ones decompressed).
fn lines_in(files: &[std::path::PathBuf]) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut out = BTreeMap::new();
    for f in files {
        let text = if f.extension().is_some_and(|e| e == "gz") {
            let o = Command::new("gzip").arg("-dc").arg(f).output()?;
            anyhow::ensure!(o.status.success(), "gzip -dc {}", f.display());
            String::from_utf8_lossy(&o.stdout).into_owned()
        } else {
            std::fs::read_to_string(f)?
        };
        for l in text.lines() {
            *out.entry(l.to_owned()).or_insert(0) += 1;
        }
    }
    Ok(out)
}

/// The Postfix log files: the current one, those `postfix logrotate`
/// renamed (and compressed), and the copy the test's copytruncate made.
fn postfix_logs(pf: &Postfix) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut files = vec![pf.dir.join("maillog"), pf.dir.join("copied.log")];
    for e in std::fs::read_dir(&pf.dir)? {
        let p = e?.path();
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if name.starts_with("maillog.") {
            files.push(p);
        }
    }
    files.retain(|f| f.exists());
    Ok(files)
}

/// Waits until every line of the files is recorded; then compares exactly.
async fn all_recorded_once(env: &Env, pf: &Postfix) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        // A rotated file may still be being compressed: both names count once.
        let want = lines_in(&postfix_logs(pf)?)?;
        let got = recorded(env).await?;
        if got == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            let missing: Vec<_> = want
                .iter()
                .filter(|(l, n)| got.get(*l) != Some(n))
                .take(10)
                .collect();
            let extra: Vec<_> = got
                .iter()
                .filter(|(l, n)| want.get(*l) != Some(n))
                .take(10)
                .collect();
            anyhow::bail!(
                "{} distinct lines in the files, {} recorded; differing (file side): {missing:#?}; (record side): {extra:#?}",
                want.len(),
                got.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn postfix_cmd(pf: &Postfix, args: &[&str]) -> anyhow::Result<()> {
    let o = Command::new("postfix")
        .arg("-c")
        .arg(&pf.dir)
        .args(args)
        .output()?;
    anyhow::ensure!(
        o.status.success(),
        "postfix {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(())
}

/// Appends `n` Postfix-format lines numbered from `from` at about 2,000 a
/// second (as the MTA would: O_APPEND).
fn write_lines(log: &Path, tag: &str, from: usize, n: usize) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new().append(true).open(log)?;
    for i in from..from + n {
        // One write(2) per line: Postfix appends to the same file, and
        // `writeln!` on a File writes each piece of the format on its own
        // (a CI run on 2026-12-06 had a Postfix line land in the middle of
        // one, leaving ": kill9 removed" as a line of its own).
        let line =
            format!("Dec  6 07:14:50 upstream.test postfix/qmgr[77]: 4F{i:08X}: {tag} removed\n");
        f.write_all(line.as_bytes())?;
        if i % 20 == 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn postfix_log_lines_recorded_once_across_rotation_and_kill9() -> anyhow::Result<()> {
    kiroku_tests::need_peer!(Postfix);
    let env = Env::new()?;
    let pf = Postfix::start(&env)?;
    let _collector = env.start_collector()?;
    let log = pf.dir.join("maillog");
    let smtp = free_port();
    let mut a = agent(&env, "mx-postfix", smtp, pf.port, &pf.cert, &log, "postfix")?;

    // A relayed mail's own lines: smtpd's client=, cleanup's message-id=,
    // qmgr's from=, and the deferral (Postfix here keeps mail queued).
    let qid = relay(&env, smtp, "mtalog-first").await?;
    let got = lines_of(&env, &qid, |g| g.iter().any(|m| m.status == "deferred")).await?;
    assert!(
        got.iter().all(|m| m.parsed && m.mta == "postfix"),
        "{got:#?}"
    );
    let by = |action: &str| {
        got.iter()
            .find(|m| m.action == action)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(by("client").client_ip, "127.0.0.1");
    assert_eq!(by("message_id").message_id, "mtalog-first@sender.test");
    let from = by("from");
    assert_eq!((from.from.as_str(), from.nrcpt), ("alice@sender.test", 1));
    assert!(from.size > 0);
    let d = by("delivery");
    assert_eq!(d.to, vec![format!("bob@{}", mta::LOCAL_DOMAIN)]);
    assert_eq!(d.status, "deferred");
    assert!(!d.delays.is_empty() && !d.dsn.is_empty(), "{d:#?}");
    assert!(
        got.iter()
            .all(|m| m.logged_at_ms > 0 && m.log_path == log.display().to_string())
    );
    // `kiroku show` prints the line's fields.
    let ev = env
        .search_all(SearchRequest {
            kind: "mta_log".into(),
            queue_id: qid.clone(),
            outcome: "deferred".into(),
            ..Default::default()
        })
        .await?;
    assert_eq!(ev.len(), 1, "one deferral line");
    let shown = env.cli(&["show", &ev[0].event_id])?;
    for want in [
        "status: deferred",
        &format!("queue id: {qid}"),
        "relay: none",
    ] {
        assert!(shown.contains(want), "{want} in {shown}");
    }

    // Rotation by rename, with Postfix's own command (it renames the file,
    // reloads postlogd, then compresses the old one).
    postfix_cmd(&pf, &["logrotate"])?;
    assert!(
        postfix_logs(&pf)?
            .iter()
            .any(|f| f.to_string_lossy().contains("maillog.")),
        "postfix logrotate renamed the log"
    );
    let qid = relay(&env, smtp, "mtalog-after-rename").await?;
    lines_of(&env, &qid, |g| g.iter().any(|m| m.action == "message_id")).await?;

    // Copytruncate, as logrotate does it.
    all_recorded_once(&env, &pf).await?;
    std::fs::copy(&log, pf.dir.join("copied.log"))?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)?
        .set_len(0)?;
    let qid = relay(&env, smtp, "mtalog-after-truncate").await?;
    lines_of(&env, &qid, |g| g.iter().any(|m| m.action == "message_id")).await?;

    // SIGKILL while lines are appended; the restarted agent goes on where
    // its buffer says it was.
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || write_lines(&log, "kill9", 0, 3000))
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    a.kill9();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _a = agent(&env, "mx-postfix", smtp, pf.port, &pf.cert, &log, "postfix")?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    all_recorded_once(&env, &pf).await?;
    // Postfix's own lines and the test's are all understood.
    let req = SearchRequest {
        kind: "mta_log".into(),
        ..Default::default()
    };
    let unparsed: Vec<String> = env
        .search_all(req)
        .await?
        .iter()
        .filter_map(mta_log)
        .filter(|m| !m.parsed)
        .map(|m| m.line.clone())
        .collect();
    assert!(unparsed.is_empty(), "unparsed Postfix lines: {unparsed:#?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn exim_mainlog_lines_recorded() -> anyhow::Result<()> {
    kiroku_tests::need_peer!(Exim);
    let env = Env::new()?;
    let ex = Exim::start(&env)?;
    let _collector = env.start_collector()?;
    let log = ex.dir.join("log/mainlog");
    let smtp = free_port();
    let _a = agent(&env, "mx-exim", smtp, ex.port, &ex.cert, &log, "exim")?;
    let id = relay(&env, smtp, "mtalog-exim").await?;
    let got = lines_of(&env, &id, |g| g.iter().any(|m| m.action == "received")).await?;
    let r = got
        .iter()
        .find(|m| m.action == "received")
        .cloned()
        .unwrap_or_default();
    assert!(r.parsed);
    assert_eq!(
        (r.mta.as_str(), r.from.as_str()),
        ("exim", "alice@sender.test")
    );
    assert_eq!(r.client_ip, "127.0.0.1");
    assert_eq!(r.message_id, "mtalog-exim@sender.test");
    assert!(r.size > 0 && !r.tls.is_empty(), "{r:#?}");
    // A refused recipient is an Exim reject line with its reason.
    let to = mta::REFUSED_RCPT;
    let (ok, _) = run_client(
        &mut swaks(smtp, to, None),
        Some(&message("mtalog-exim-refused", to)),
    )?;
    assert!(!ok);
    let req = SearchRequest {
        kind: "mta_log".into(),
        recipient: to.into(),
        ..Default::default()
    };
    let rejects = records_until(&env, req, to, |g| g.iter().any(|m| m.action == "reject"))
        .await
        .map_err(|e| anyhow::anyhow!("no reject line: {e}\n{}", ex.log()))?;
    let m = rejects
        .iter()
        .find(|m| m.action == "reject")
        .ok_or_else(|| anyhow::anyhow!("no reject line"))?;
    assert_eq!(m.dsn, "5.1.1", "{m:#?}");
    assert!(m.reject_reason.contains("no such user here"), "{m:#?}");
    // Nothing Exim wrote is unparsed.
    let all = recorded(&env).await?;
    let req = SearchRequest {
        kind: "mta_log".into(),
        ..Default::default()
    };
    let unparsed: Vec<String> = env
        .search_all(req)
        .await?
        .iter()
        .filter_map(mta_log)
        .filter(|m| !m.parsed)
        .map(|m| m.line.clone())
        .collect();
    assert!(unparsed.is_empty(), "unparsed Exim lines: {unparsed:#?}");
    assert!(all.len() >= 3);
    Ok(())
}
