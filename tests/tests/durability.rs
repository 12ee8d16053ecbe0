//! Nothing accepted is lost and nothing is stored twice when the agent is
//! killed with SIGKILL or the collector is down or killed.

use std::time::Duration;

use kiroku_proto::SearchRequest;
use kiroku_tests::{Env, Mode, Upstream, email, free_port, send_mail};

fn mail(tag: &str, n: usize) -> Vec<u8> {
    format!(
        "From: load@example.com\r\nTo: sink@example.org\r\nSubject: {tag} {n}\r\nMessage-ID: <{tag}-{n}@example.com>\r\n\r\nbody {n}\r\n"
    )
    .into_bytes()
}

/// Asserts the collector holds exactly the messages `ids` (by Message-ID),
/// each once, and still does after a further pause.
async fn assert_exactly_once(env: &Env, tag: &str, n: usize) -> anyhow::Result<()> {
    let req = SearchRequest {
        subject: tag.into(),
        ..Default::default()
    };
    env.wait_for(req.clone(), n, Duration::from_secs(60))
        .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let events = env.wait_for(req, n, Duration::from_secs(5)).await?;
    let mut ids: Vec<String> = events.iter().map(|e| email(e).message_id.clone()).collect();
    ids.sort();
    let mut want: Vec<String> = (0..n).map(|i| format!("<{tag}-{i}@example.com>")).collect();
    want.sort();
    assert_eq!(ids, want, "each message exactly once");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_killed_before_shipping_delivers_exactly_once_after_restart() -> anyhow::Result<()> {
    let env = Env::new()?;
    let upstream = Upstream::start(&env)?;
    let smtp = free_port();
    // The collector is not running: the mail cannot have been shipped.
    let mut agent = env.start_agent("pc-k", smtp, &Mode::Relay(upstream.port))?;
    let sent = send_mail(
        smtp,
        "load@example.com",
        &["sink@example.org"],
        &mail("killed", 0),
    )?;
    assert_eq!(sent.code, 250, "{sent:?}");
    agent.kill9();
    let _collector = env.start_collector()?;
    let _agent = env.start_agent("pc-k", smtp, &Mode::Relay(upstream.port))?;
    assert_exactly_once(&env, "killed", 1).await?;
    let ev = env
        .wait_for(
            SearchRequest {
                subject: "killed".into(),
                ..Default::default()
            },
            1,
            Duration::from_secs(5),
        )
        .await?;
    assert_eq!(
        email(&ev[0]).outcome,
        kiroku_proto::Outcome::Delivered as i32,
        "outcome was durable before the next reply (smtplib's QUIT got its 221 before the kill)"
    );
    assert_eq!(upstream.messages().len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_killed_right_after_250_repeatedly_loses_and_duplicates_nothing() -> anyhow::Result<()>
{
    let env = Env::new()?;
    let _collector = env.start_collector()?;
    let smtp = free_port();
    let rounds = 6;
    for i in 0..rounds {
        let mut agent = env.start_agent("pc-r", smtp, &Mode::CaptureOnly)?;
        let sent = send_mail(
            smtp,
            "load@example.com",
            &["sink@example.org"],
            &mail("race", i),
        )?;
        assert_eq!(sent.code, 250, "{sent:?}");
        // Whether or not it was shipped (or acknowledged) yet is a race.
        agent.kill9();
    }
    let _agent = env.start_agent("pc-r", smtp, &Mode::CaptureOnly)?;
    assert_exactly_once(&env, "race", rounds).await
}

#[tokio::test(flavor = "multi_thread")]
async fn collector_down_then_back_receives_everything_once() -> anyhow::Result<()> {
    let env = Env::new()?;
    let mut collector = env.start_collector()?;
    let smtp = free_port();
    let _agent = env.start_agent("pc-c", smtp, &Mode::CaptureOnly)?;
    let sent = send_mail(
        smtp,
        "load@example.com",
        &["sink@example.org"],
        &mail("outage", 0),
    )?;
    assert_eq!(sent.code, 250);
    env.wait_for(
        SearchRequest {
            subject: "outage".into(),
            ..Default::default()
        },
        1,
        Duration::from_secs(30),
    )
    .await?;

    collector.terminate();
    for i in 1..6 {
        let sent = send_mail(
            smtp,
            "load@example.com",
            &["sink@example.org"],
            &mail("outage", i),
        )?;
        assert_eq!(
            sent.code, 250,
            "mail flows while the collector is down: {sent:?}"
        );
    }
    let _collector = env.start_collector()?;
    assert_exactly_once(&env, "outage", 6).await
}

#[tokio::test(flavor = "multi_thread")]
async fn collector_killed_mid_stream_stores_everything_once() -> anyhow::Result<()> {
    let env = Env::new()?;
    let mut collector = env.start_collector()?;
    let smtp = free_port();
    let _agent = env.start_agent("pc-m", smtp, &Mode::CaptureOnly)?;
    let n = 30;
    for i in 0..n {
        let sent = send_mail(
            smtp,
            "load@example.com",
            &["sink@example.org"],
            &mail("midkill", i),
        )?;
        assert_eq!(sent.code, 250);
        if i == n / 2 {
            collector.kill9();
            collector = env.start_collector()?;
        }
    }
    assert_exactly_once(&env, "midkill", n).await?;
    drop(collector);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn full_buffer_refuses_mail_temporarily_and_relays_nothing() -> anyhow::Result<()> {
    let env = Env::new()?;
    let upstream = Upstream::start(&env)?;
    let smtp = free_port();
    // A bound the buffer is already over: every new mail must be refused.
    let mut agent = env.start_agent_with(
        "pc-f",
        smtp,
        &Mode::Relay(upstream.port),
        "[buffer]\nmax_bytes = 1\n",
    )?;
    let sent = send_mail(
        smtp,
        "load@example.com",
        &["sink@example.org"],
        &mail("full", 0),
    )?;
    assert_eq!(sent.code, 452, "{sent:?}");
    assert!(sent.reply.contains("4.3.1"), "{sent:?}");
    assert!(
        upstream.messages().is_empty(),
        "nothing may pass unrecorded"
    );
    assert!(agent.is_running());
    assert!(
        agent.log_text().contains("buffer is full"),
        "{}",
        agent.log_text()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn identical_content_is_stored_once() -> anyhow::Result<()> {
    let env = Env::new()?;
    let _collector = env.start_collector()?;
    let smtp = free_port();
    let _agent = env.start_agent("pc-d", smtp, &Mode::CaptureOnly)?;
    let raw = b"From: a@example.com\r\nSubject: same bytes\r\n\r\nsame body\r\n";
    for _ in 0..3 {
        assert_eq!(
            send_mail(smtp, "a@example.com", &["b@example.org"], raw)?.code,
            250
        );
    }
    let events = env
        .wait_for(
            SearchRequest {
                subject: "same bytes".into(),
                ..Default::default()
            },
            3,
            Duration::from_secs(30),
        )
        .await?;
    assert_eq!(events.len(), 3, "three transactions, three events");
    let blobs = walk(&env.path().join("collector/blobs"));
    assert_eq!(
        blobs.len(),
        1,
        "one blob for three identical messages: {blobs:?}"
    );
    Ok(())
}

/// Mails written by Python's email package (as a real client encodes
/// them), each different, all carrying the same 1 MB attachment: the
/// collector stores the attachment once and every mail comes back
/// byte-identical.
#[tokio::test(flavor = "multi_thread")]
async fn an_attachment_in_different_mails_is_stored_once() -> anyhow::Result<()> {
    let env = Env::new()?;
    let _collector = env.start_collector()?;
    let smtp = free_port();
    let _agent = env.start_agent("pc-att", smtp, &Mode::CaptureOnly)?;
    let dir = env.path().join("mails");
    std::fs::create_dir_all(&dir)?;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            r#"
import sys, random
from email.message import EmailMessage
from email import policy
random.seed(7)
att = bytes(random.getrandbits(8) for _ in range(1024 * 1024))
for i in range(4):
    m = EmailMessage()
    m["From"] = "a@example.com"
    m["To"] = f"partner{i}@example.org"
    m["Subject"] = f"contract copy {i}"
    m.set_content(f"see attached, mail {i}")
    m.add_attachment(att, maintype="application", subtype="pdf", filename="contract.pdf")
    open(f"{sys.argv[1]}/{i}.eml", "wb").write(m.as_bytes(policy=policy.SMTP))
"#,
        )
        .arg(&dir)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut raws = Vec::new();
    for i in 0..4 {
        let raw = std::fs::read(dir.join(format!("{i}.eml")))?;
        let to = format!("partner{i}@example.org");
        assert_eq!(send_mail(smtp, "a@example.com", &[&to], &raw)?.code, 250);
        raws.push(raw);
    }
    let events = env
        .wait_for(
            SearchRequest {
                subject: "contract copy".into(),
                ..Default::default()
            },
            4,
            Duration::from_secs(60),
        )
        .await?;
    assert_eq!(events.len(), 4);
    for e in &events {
        let back = env.raw(&e.event_id).await?;
        assert!(
            raws.contains(&back),
            "{} comes back byte-identical",
            e.event_id
        );
    }
    let blobs = walk(&env.path().join("collector/blobs"));
    let size = |ext: &str| -> u64 {
        blobs
            .iter()
            .filter(|p| p.extension().is_some_and(|x| x == ext))
            .filter_map(|p| p.metadata().ok())
            .map(|m| m.len())
            .sum()
    };
    let whole: Vec<_> = blobs
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "zst"))
        .collect();
    assert_eq!(whole.len(), 1, "the attachment once: {blobs:?}");
    let (manifests, attachment) = (size("krm"), size("zst"));
    assert!(
        attachment > 1024 * 1024 && manifests < 16 * 1024,
        "attachment {attachment} B once, four manifests {manifests} B"
    );
    Ok(())
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_while_upstream_decides_leaves_a_record_with_unknown_outcome() -> anyhow::Result<()> {
    let env = Env::new()?;
    let _collector = env.start_collector()?;
    let upstream = Upstream::start(&env)?;
    let smtp = free_port();
    let mut agent = env.start_agent("pc-u", smtp, &Mode::Relay(upstream.port))?;
    let raw =
        b"From: u@example.com\r\nSubject: limbo\r\nX-Test-Delay-Reply: 30\r\n\r\nwho knows\r\n"
            .to_vec();
    let client =
        std::thread::spawn(move || send_mail(smtp, "u@example.com", &["sink@example.org"], &raw));
    // Wait until the upstream holds the complete message and the agent waits
    // for its verdict, then kill the agent.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !std::fs::read_dir(&upstream.out)
        .map(|d| {
            d.flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "pending"))
        })
        .unwrap_or(false)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "upstream never got the message"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    agent.kill9();
    let sent = client
        .join()
        .map_err(|_| anyhow::anyhow!("client thread panicked"))?;
    assert!(
        sent.is_err() || sent.as_ref().is_ok_and(|s| s.code != 250),
        "the client never saw a 250: {sent:?}"
    );
    let _agent = env.start_agent("pc-u", smtp, &Mode::Relay(upstream.port))?;
    let ev = env
        .wait_for(
            SearchRequest {
                subject: "limbo".into(),
                ..Default::default()
            },
            1,
            Duration::from_secs(30),
        )
        .await?;
    assert_eq!(ev.len(), 1);
    assert_eq!(
        email(&ev[0]).outcome,
        kiroku_proto::Outcome::Unknown as i32,
        "recorded, outcome unknown"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_agent_buffer_is_detected_and_reported_and_capture_goes_on() -> anyhow::Result<()>
{
    let env = Env::new()?;
    let smtp = free_port();
    // No collector yet: everything stays in the agent's buffer.
    let mut agent = env.start_agent("pc-rot", smtp, &Mode::CaptureOnly)?;
    for i in 0..40 {
        let s = send_mail(
            smtp,
            "load@example.com",
            &["sink@example.org"],
            &mail("rot", i),
        )?;
        assert_eq!(s.code, 250, "{s:?}");
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    agent.terminate();
    // A bad disk flips bytes in the middle of sled's log.
    let db = env.path().join("agent-pc-rot/sled/db");
    let db = if db.exists() {
        db
    } else {
        find_file(env.path(), "db")?
    };
    let mut bytes = std::fs::read(&db)?;
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 32] {
        *b ^= 0x55;
    }
    std::fs::write(&db, &bytes)?;

    let _collector = env.start_collector()?;
    let _agent = env.start_agent("pc-rot", smtp, &Mode::CaptureOnly)?;
    for i in 0..2 {
        let s = send_mail(
            smtp,
            "load@example.com",
            &["sink@example.org"],
            &mail("fresh", i),
        )?;
        assert_eq!(s.code, 250, "{s:?}");
    }
    assert_exactly_once(&env, "fresh", 2).await?;
    let hosts = env
        .wait_for(
            SearchRequest {
                kind: "host_change".into(),
                ..Default::default()
            },
            2,
            Duration::from_secs(30),
        )
        .await?;
    let reasons: Vec<String> = hosts
        .iter()
        .filter_map(|e| match &e.kind {
            Some(kiroku_proto::event::Kind::HostChange(h)) => Some(h.reason.clone()),
            _ => None,
        })
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("is damaged") && r.contains("are lost")),
        "the loss is on the collector's record: {reasons:?}"
    );
    Ok(())
}

/// The first file called `name` under `dir`.
fn find_file(dir: &std::path::Path, name: &str) -> anyhow::Result<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        if p.is_dir() {
            if let Ok(f) = find_file(&p, name) {
                return Ok(f);
            }
        } else if p.file_name().is_some_and(|n| n == name)
            && p.parent().is_some_and(|d| d.ends_with("sled"))
        {
            return Ok(p);
        }
    }
    anyhow::bail!("no {name} under {}", dir.display())
}

// A full agent disk: tests/tests/agent_buffer.rs.

/// A mail of about 1 MiB (a base64 attachment): stored as its own blob
/// file in the agent buffer, so a few fill a small bound and the space
/// comes back when the collector acknowledges them.
fn big_mail(tag: &str, n: usize) -> Vec<u8> {
    let line = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n";
    format!(
        "From: load@example.com\r\nTo: sink@example.org\r\nSubject: {tag} {n}\r\nMessage-ID: <{tag}-{n}@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nbody {n}\r\n--b\r\nContent-Type: application/octet-stream; name=\"{tag}-{n}.bin\"\r\nContent-Disposition: attachment; filename=\"{tag}-{n}.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}--b--\r\n",
        line.repeat(13_500)
    )
    .into_bytes()
}

/// A relay agent whose buffer bound (24 MiB) a few dozen big mails reach
/// while no collector runs.
const SMALL_BOUND: &str = "[buffer]\nmax_bytes = 25165824\n";

/// Waits until the collector holds exactly the mails `ids` of `tag`, each
/// once (by Message-ID).
async fn assert_stored_once(env: &Env, tag: &str, ids: &[usize]) -> anyhow::Result<()> {
    let req = SearchRequest {
        subject: tag.into(),
        kind: "email".into(),
        ..Default::default()
    };
    env.wait_for(req.clone(), ids.len(), Duration::from_secs(90))
        .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let events = env.search_all(req).await?;
    let mut got: Vec<String> = events.iter().map(|e| email(e).message_id.clone()).collect();
    got.sort();
    let mut want: Vec<String> = ids
        .iter()
        .map(|i| format!("<{tag}-{i}@example.com>"))
        .collect();
    want.sort();
    assert_eq!(got, want, "each recorded mail exactly once");
    Ok(())
}

/// `buffer.when_full = "refuse"` (the default): once the bound is reached
/// new mail gets 452 4.3.1 and nothing reaches the upstream unrecorded;
/// when the collector drains the buffer, the same mail is accepted.
#[tokio::test(flavor = "multi_thread")]
async fn full_buffer_refuse_policy_answers_4xx_then_accepts_once_drained() -> anyhow::Result<()> {
    let env = Env::new()?;
    let upstream = Upstream::start(&env)?;
    let smtp = free_port();
    let agent = env.start_agent_with(
        "pc-refuse",
        smtp,
        &Mode::Relay(upstream.port),
        &format!("{SMALL_BOUND}when_full = \"refuse\"\n"),
    )?;
    let tag = "refusepolicy";
    let mut accepted = Vec::new();
    let mut refused = None;
    for i in 0..60 {
        let sent = send_mail(
            smtp,
            "load@example.com",
            &["sink@example.org"],
            &big_mail(tag, i),
        )?;
        match sent.code {
            250 => accepted.push(i),
            452 => {
                assert!(sent.reply.contains("4.3.1"), "{sent:?}");
                refused = Some(i);
                break;
            }
            other => anyhow::bail!("unexpected reply {other}: {sent:?}"),
        }
    }
    let refused = refused
        .ok_or_else(|| anyhow::anyhow!("the bound was never reached:\n{}", agent.log_text()))?;
    assert!(!accepted.is_empty(), "{}", agent.log_text());
    assert_eq!(
        upstream.messages().len(),
        accepted.len(),
        "a refused mail must not reach the upstream"
    );
    assert!(agent.log_text().contains("buffer is full"));

    // The collector comes back, acknowledges, the buffer has room again:
    // the client's retry of the refused mail goes through.
    let _collector = env.start_collector()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let sent = send_mail(
            smtp,
            "load@example.com",
            &["sink@example.org"],
            &big_mail(tag, refused),
        )?;
        if sent.code == 250 {
            accepted.push(refused);
            break;
        }
        assert_eq!(sent.code, 452, "{sent:?}");
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "still refused after the collector drained the buffer:\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_stored_once(&env, tag, &accepted).await?;
    assert_eq!(upstream.messages().len(), accepted.len());
    let gaps = env
        .search_all(SearchRequest {
            kind: "gap".into(),
            ..Default::default()
        })
        .await?;
    assert!(gaps.is_empty(), "refuse leaves no gap: {gaps:?}");
    Ok(())
}

/// `buffer.when_full = "relay_unrecorded"`: once the bound is reached mail
/// keeps flowing to the upstream, unrecorded; each one is counted and,
/// when the buffer has room again, a gap record with the count, the span
/// and the envelope addresses reaches the collector. File events the full
/// buffer could not take are a gap record too. Everything recorded before
/// is stored exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn full_buffer_relay_unrecorded_policy_delivers_and_reports_the_gap() -> anyhow::Result<()> {
    let env = Env::new()?;
    let upstream = Upstream::start(&env)?;
    let smtp = free_port();
    let watched = env.path().join("watched-gap");
    std::fs::create_dir_all(&watched)?;
    let agent = env.start_agent_with(
        "pc-unrec",
        smtp,
        &Mode::Relay(upstream.port),
        &format!(
            "{SMALL_BOUND}when_full = \"relay_unrecorded\"\n[files]\nwatch = [{watched:?}]\ncoalesce_ms = 100\nremovable_auto = false\nremovable_roots = []\n"
        ),
    )?;
    let tag = "unrecpolicy";
    let unrecorded_lines = || agent.log_text().matches("mail relayed UNRECORDED").count();
    let (mut recorded, mut unrecorded) = (Vec::new(), Vec::new());
    for i in 0..80 {
        let before = unrecorded_lines();
        let sent = send_mail(
            smtp,
            "load@example.com",
            &["sink@example.org", "other@example.net"],
            &big_mail(tag, i),
        )?;
        assert_eq!(sent.code, 250, "mail keeps flowing: {sent:?}");
        if unrecorded_lines() > before {
            unrecorded.push(i);
            if unrecorded.len() == 3 {
                break;
            }
        } else {
            recorded.push(i);
        }
    }
    anyhow::ensure!(
        unrecorded.len() == 3,
        "the bound was never reached:\n{}",
        agent.log_text()
    );
    assert!(!recorded.is_empty());
    assert_eq!(
        upstream.messages().len(),
        recorded.len() + unrecorded.len(),
        "every mail reached the upstream"
    );
    let log = agent.log_text();
    assert!(
        log.contains("agent buffer is full") && log.contains("gap record"),
        "the policy is reported with what to do:\n{log}"
    );
    // File events while full: counted, not recorded.
    for n in 0..2 {
        std::fs::write(watched.join(format!("while-full-{n}.txt")), b"x")?;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // The collector comes back: the recorded mails, once each, and the gap.
    let _collector = env.start_collector()?;
    assert_stored_once(&env, tag, &recorded).await?;
    let gap_req = SearchRequest {
        kind: "gap".into(),
        ..Default::default()
    };
    let gaps = env
        .wait_for(gap_req.clone(), 2, Duration::from_secs(60))
        .await?;
    let gap_of = |source: &str| {
        gaps.iter()
            .find_map(|e| match &e.kind {
                Some(kiroku_proto::event::Kind::Gap(g)) if g.source == source => Some(g.clone()),
                _ => None,
            })
            .ok_or_else(|| anyhow::anyhow!("no {source} gap in {gaps:?}"))
    };
    let mail_gap = gap_of("smtp")?;
    assert_eq!(mail_gap.count, 3, "{mail_gap:?}");
    assert_eq!(mail_gap.delivered, 3, "{mail_gap:?}");
    assert!(mail_gap.first_ms > 0 && mail_gap.first_ms <= mail_gap.last_ms);
    assert_eq!(mail_gap.senders, vec!["load@example.com".to_owned()]);
    assert_eq!(
        mail_gap.recipients,
        vec![
            "sink@example.org".to_owned(),
            "other@example.net".to_owned()
        ]
    );
    assert!(
        mail_gap.detail.contains("3 SMTP transactions"),
        "{mail_gap:?}"
    );
    let file_gap = gap_of("files")?;
    assert!(file_gap.count >= 2, "{file_gap:?}");
    assert!(
        file_gap
            .paths
            .iter()
            .any(|p| p.ends_with("while-full-0.txt")),
        "{file_gap:?}"
    );
    // An investigator looking for mail to a recipient finds the gap too.
    let by_rcpt = env
        .search_all(SearchRequest {
            kind: "gap".into(),
            recipient: "other@example.net".into(),
            ..Default::default()
        })
        .await?;
    assert_eq!(by_rcpt.len(), 1, "{by_rcpt:?}");

    // Room again: mail is recorded again, and the gap was reported once.
    let sent = send_mail(
        smtp,
        "load@example.com",
        &["sink@example.org"],
        &mail(tag, 1000),
    )?;
    assert_eq!(sent.code, 250);
    let mut all = recorded.clone();
    all.push(1000);
    assert_stored_once(&env, tag, &all).await?;
    let gaps = env.search_all(gap_req).await?;
    assert_eq!(gaps.len(), 2, "one gap record per source: {gaps:?}");
    Ok(())
}
