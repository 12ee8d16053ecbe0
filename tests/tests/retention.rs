//! Retention end to end (issue 19), with the real collector and CLI: the
//! collector's clock is moved through the test-only clock file
//! (`KIROKU_TEST_CLOCK_FILE`, test builds only), expiry is carried out by
//! `kiroku maintenance start` runs.
//!
//! Covered: events expire per kind, the agent group's override (from its
//! certificate) and the tag override (`alert:*`, set by an alert rule)
//! keep theirs; a policy that shortens the defaults waits for its delay;
//! `kiroku retention plan` counts what would be marked; expired events
//! are marked first and purged only after the grace period; `kiroku purge
//! undo` restores a marked one; erasure on request (`kiroku purge --sender
//! … --reason …`, dry run first) for admins only; purging frees journal
//! bytes (measured) and `kiroku verify` passes afterwards; every step is
//! in the audit log.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiroku_proto::admin_client::AdminClient;
use kiroku_proto::ingest_client::IngestClient;
use kiroku_proto::{
    Batch, BlobChunk, EmailEvent, Event, FileEvent, Hello, MaintenanceReportsRequest,
    RetentionPlan, RetentionPlanRequest, SearchRequest, ShipRequest, event::Kind, ship_request,
    ship_response,
};
use kiroku_tests::Env;

const DAY: i64 = 24 * 3_600_000;

fn system_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

const POLICY: &str = r#"
grace = "1d"
[kind]
email = "30d"
file = "30d"

[[override]]
group = "legal"
period = "forever"

[[override]]
tag = "alert:*"
period = "10y"
"#;

fn mail(seq: u64, from: &str, subject: &str) -> Event {
    Event {
        stream_id: "s1".into(),
        seq,
        observed_at_ms: system_ms(),
        kind: Some(Kind::Email(EmailEvent {
            mail_from: from.into(),
            subject: subject.into(),
            // A body of some size, so that purging frees more journal
            // bytes than its tombstone takes.
            body_text: format!("{subject} ").repeat(1000),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// A mail whose raw message is the blob `raw` (uploaded first).
fn mail_raw(seq: u64, from: &str, subject: &str, raw: &[u8]) -> Event {
    let mut e = mail(seq, from, subject);
    if let Some(Kind::Email(m)) = &mut e.kind {
        m.raw_sha256 = kiroku_common::sha256_hex(raw);
        m.message_size = raw.len() as u64;
    }
    e
}

async fn put_blob(env: &Env, agent: &str, data: &[u8]) -> anyhow::Result<PathBuf> {
    let sha = kiroku_common::sha256_hex(data);
    let pki = env.pki();
    let (cert, key) = (
        pki.join(format!("agent-{agent}.pem")),
        pki.join(format!("agent-{agent}.key")),
    );
    IngestClient::new(env.channel(Some((&cert, &key)), None).await?)
        .put_blob(tokio_stream::iter(vec![BlobChunk {
            sha256: sha.clone(),
            size: data.len() as u64,
            data: data.to_vec(),
        }]))
        .await?;
    Ok(env
        .path()
        .join("collector")
        .join("blobs")
        .join(&sha[..2])
        .join(&sha[2..4])
        .join(format!("{sha}.zst")))
}

fn file(seq: u64, op: &str, path: &str) -> Event {
    Event {
        stream_id: "s1".into(),
        seq,
        observed_at_ms: system_ms(),
        kind: Some(Kind::File(FileEvent {
            operation: op.into(),
            path: path.into(),
            removable: op == "copy_to_removable",
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// Ships `events` as agent `agent` in one batch (its certificate from
/// `pki/agent-<agent>.pem`).
async fn ship(env: &Env, agent: &str, events: Vec<Event>) -> anyhow::Result<()> {
    let pki = env.pki();
    let (cert, key) = (
        pki.join(format!("agent-{agent}.pem")),
        pki.join(format!("agent-{agent}.key")),
    );
    let n = events.len();
    let msgs = vec![
        ShipRequest {
            msg: Some(ship_request::Msg::Hello(Hello {
                stream_id: "s1".into(),
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
    let ch = env.channel(Some((&cert, &key)), None).await?;
    let mut resp = IngestClient::new(ch)
        .ship(tokio_stream::iter(msgs))
        .await?
        .into_inner();
    while let Some(m) = resp.message().await? {
        if let Some(ship_response::Msg::Ack(a)) = m.msg {
            anyhow::ensure!(a.stored as usize == n, "stored {} of {n}: {a:?}", a.stored);
            return Ok(());
        }
    }
    anyhow::bail!("Ship ended without an Ack")
}

struct Setup {
    env: Env,
    clock: PathBuf,
}

impl Setup {
    /// Moves the collector's clock `ms` ahead of the system's. The file is
    /// replaced, not rewritten in place: a read between the truncation and
    /// the write would see no offset and move the clock back meanwhile.
    fn set_offset(&self, ms: i64) -> anyhow::Result<()> {
        kiroku_tests::replace_file(&self.clock, ms.to_string())?;
        // The collector re-reads the file at most every 200 ms.
        std::thread::sleep(Duration::from_millis(400));
        Ok(())
    }

    fn admin_cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let (code, out, err) = self.env.cli_as("admin-boss", args)?;
        anyhow::ensure!(code == 0, "kiroku {args:?} exited {code}: {err}");
        Ok(out)
    }

    async fn plan(&self) -> anyhow::Result<RetentionPlan> {
        Ok(AdminClient::new(self.env.admin().await?)
            .retention_plan(RetentionPlanRequest::default())
            .await?
            .into_inner())
    }

    /// `kiroku maintenance start`, then waits for its summary (the
    /// `n`-th); returns it.
    async fn run(&self, n: usize) -> anyhow::Result<kiroku_proto::MaintenanceReport> {
        self.admin_cli(&["maintenance", "start"])?;
        let t = Instant::now();
        loop {
            let reports = AdminClient::new(self.env.admin().await?)
                .maintenance_reports(MaintenanceReportsRequest { limit: 100 })
                .await?
                .into_inner()
                .reports;
            if reports.len() >= n {
                return Ok(reports[0].clone());
            }
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(60),
                "maintenance run {n} did not end: {reports:#?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn subjects(&self) -> anyhow::Result<Vec<String>> {
        let mut all: Vec<String> = self
            .env
            .search_all(SearchRequest::default())
            .await?
            .into_iter()
            .filter_map(|e| match e.kind {
                Some(Kind::Email(m)) => Some(m.subject),
                Some(Kind::File(f)) => Some(f.path),
                _ => None,
            })
            .collect();
        all.sort();
        Ok(all)
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Waits (10 s at most) for an admin audit entry containing `what`.
async fn wait_audit(s: &Setup, what: &str) -> anyhow::Result<()> {
    let t = Instant::now();
    loop {
        let admin = s.admin_cli(&["audit", "--kind", "admin", "--limit", "1000", "--json"])?;
        if admin.contains(what) {
            return Ok(());
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(10),
            "no audit entry with {what:?}:\n{admin}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Bytes of every blob file.
fn blob_bytes(data: &Path) -> u64 {
    fn walk(d: &Path) -> u64 {
        std::fs::read_dir(d)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| match e.file_type() {
                        Ok(t) if t.is_dir() => walk(&e.path()),
                        Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
                        Err(_) => 0,
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    walk(&data.join("blobs"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_expire_per_kind_group_and_tag_with_grace_undo_and_erasure() -> anyhow::Result<()> {
    kiroku_tests::ensure_collector_test_hooks()?;
    let env = Env::new()?;
    let clock = env.path().join("clock-offset");
    std::fs::write(&clock, "0")?;
    let pki = env.pki().to_string_lossy().into_owned();
    env.kiroku(&[
        "certs", "issue", "--dir", &pki, "--role", "agent", "--name", "a1",
    ])?;
    env.kiroku(&[
        "certs", "issue", "--dir", &pki, "--role", "agent", "--name", "l1", "--group", "legal",
    ])?;
    std::fs::write(
        env.path().join("rules.toml"),
        "[[rule]]\nname = \"usb\"\nkind = \"removable_copy\"\n",
    )?;
    std::fs::write(env.path().join("retention.toml"), POLICY)?;
    // The window opens twelve hours from now (UTC): no automatic run while
    // the test moves the clock by whole days.
    let now = system_ms();
    let hour = (now.rem_euclid(DAY) / 3_600_000 + 12) % 24;
    let cfg = format!(
        "[alerts]\nrules = \"rules.toml\"\n[retention]\npolicy = \"retention.toml\"\nreload_secs = 1\n[maintenance]\nstart = \"{hour:02}:00\"\nend = \"{:02}:30\"\ntime_zone = \"UTC\"\n",
        hour
    );
    let clock_s = clock.to_string_lossy().into_owned();
    let _collector =
        env.start_collector_with_env(&cfg, &[("KIROKU_TEST_CLOCK_FILE", clock_s.as_str())])?;
    let s = Setup { env, clock };
    // Raw messages: `shared` named by an expired mail (m6) and a held one
    // (m5), `own` by an expired one (m1) alone.
    let shared_raw =
        b"From: carol@corp.example\r\nSubject: shared\r\n\r\nthe same message\r\n".repeat(50);
    let own_raw = b"From: alice@corp.example\r\nSubject: own\r\n\r\nonly m1\r\n".repeat(50);
    let shared_blob = put_blob(&s.env, "a1", &shared_raw).await?;
    let own_blob = put_blob(&s.env, "a1", &own_raw).await?;
    assert!(shared_blob.exists() && own_blob.exists());
    ship(
        &s.env,
        "a1",
        vec![
            mail_raw(1, "alice@corp.example", "m1 alice", &own_raw),
            mail(2, "bob@corp.example", "m2 bob"),
            file(3, "create", "/home/a/f1.txt"),
            file(4, "copy_to_removable", "/media/usb/f2.txt"),
            mail_raw(5, "carol@corp.example", "m5 carol", &shared_raw),
            mail_raw(6, "erin@corp.example", "m6 erin", &shared_raw),
        ],
    )
    .await?;
    ship(&s.env, "l1", vec![mail(1, "dan@corp.example", "m3 legal")]).await?;
    s.env
        .wait_for(SearchRequest::default(), 7, Duration::from_secs(20))
        .await?;
    let usb = s
        .env
        .search_all(SearchRequest {
            alert: "usb".into(),
            ..Default::default()
        })
        .await?;
    assert_eq!(usb.len(), 1, "the alert rule tagged the copy");

    // The policy shortens the defaults (7y → 30d): it waits 7 days, said
    // in the audit log and the plan.
    let admin = s.admin_cli(&["audit", "--kind", "admin", "--json"])?;
    assert!(
        admin.contains("RetentionPolicy") && admin.contains("takes effect at"),
        "{admin}"
    );
    let plan = s.plan().await?;
    assert_eq!(plan.events_scanned, 7, "{plan:?}");
    assert_eq!(plan.would_mark, 0, "{plan:?}");
    assert!(
        plan.shortened.iter().any(|l| l.contains("takes effect")),
        "{plan:?}"
    );

    // 40 days on: mails and plain files of a1 expired (the shortening is in
    // effect); the group legal and the alert-tagged copy are kept.
    s.set_offset(40 * DAY)?;
    let plan = s.plan().await?;
    assert_eq!(plan.would_mark, 5, "{plan:#?}");
    let out = s.admin_cli(&["retention", "plan"])?;
    assert!(
        out.contains("group legal forever") && out.contains("tag alert:* 10y"),
        "{out}"
    );
    assert!(out.contains("would mark now: 5"), "{out}");

    let r = s.run(1).await?;
    assert_eq!((r.marked, r.purged, r.protect), (5, 0, false), "{r:#?}");
    assert_eq!(s.subjects().await?.len(), 7, "marked, not purged yet");

    // Undo during the grace period (the CLI): m2 restored.
    let out = s.admin_cli(&[
        "purge",
        "undo",
        "--sender",
        "bob@corp.example",
        "--reason",
        "policy too short for bob",
    ])?;
    assert!(out.contains("1 marked event restored"), "{out}");

    // A legal hold during the grace period saves carol's mail (m5).
    s.admin_cli(&[
        "hold",
        "create",
        "--case",
        "Acme",
        "--reason",
        "litigation",
        "--sender",
        "carol@corp.example",
    ])?;

    // Past the grace period: m1, f1 and m6 purged; m2 exempt (restored),
    // m5 held; the blob m5 shares with m6 stays, m1's own goes.
    let data = s.env.path().join("collector");
    let journal = data.join("journal");
    let before = dir_bytes(&journal) + blob_bytes(&data);
    s.set_offset(42 * DAY)?;
    let r = s.run(2).await?;
    assert_eq!((r.purged, r.held_back), (3, 1), "{r:#?}");
    assert!(r.bytes_freed > 0, "{r:#?}");
    let after = dir_bytes(&journal) + blob_bytes(&data);
    println!(
        "journal + blob bytes before the purge {before}, after {after}; bytes freed by the run {}",
        r.bytes_freed
    );
    assert!(after < before, "purging freed disk: {before} → {after}");
    assert_eq!(
        s.subjects().await?,
        vec!["/media/usb/f2.txt", "m2 bob", "m3 legal", "m5 carol"],
        "expired purged; group, tag, held and restored kept"
    );
    assert!(shared_blob.exists(), "a blob a held mail names survives");
    assert!(
        !own_blob.exists(),
        "the last reference's purge removes the blob"
    );

    // Erasure on request: investigators may not; an admin's dry run
    // changes nothing; then bob's mail goes.
    let (code, _, err) = s.env.cli_as(
        "investigator-inv",
        &["purge", "--sender", "bob@corp.example", "--reason", "x"],
    )?;
    assert_ne!(code, 0);
    assert!(err.contains("admins only"), "{err}");
    let (code, _, err) = s
        .env
        .cli_as("admin-boss", &["purge", "--reason", "everything"])?;
    assert_ne!(code, 0);
    assert!(err.contains("a filter is required"), "{err}");
    let out = s.admin_cli(&[
        "purge",
        "--sender",
        "bob@corp.example",
        "--reason",
        "GDPR request 42",
        "--dry-run",
    ])?;
    assert!(out.contains("dry run: 1 would be purged"), "{out}");
    assert_eq!(s.subjects().await?.len(), 4);
    let out = s.admin_cli(&[
        "purge",
        "--sender",
        "bob@corp.example",
        "--reason",
        "GDPR request 42",
    ])?;
    assert!(out.contains("1 purged (erased on request)"), "{out}");
    // A held event is not erased: the hold wins.
    let out = s.admin_cli(&[
        "purge",
        "--sender",
        "carol@corp.example",
        "--reason",
        "GDPR request 43",
    ])?;
    assert!(
        out.contains("0 purged") && out.contains("1 kept under a legal hold"),
        "{out}"
    );
    assert_eq!(
        s.subjects().await?,
        vec!["/media/usb/f2.txt", "m3 legal", "m5 carol"]
    );

    // The store verifies after the purges; the audit trail has them all.
    let (code, out, err) = s.env.cli_as("admin-boss", &["verify"])?;
    assert_eq!(code, 0, "verify after purging: {out}\n{err}");
    let admin = s.admin_cli(&["audit", "--kind", "admin", "--limit", "1000", "--json"])?;
    for want in ["Retention", "RetentionUndo", "Erasure", "GDPR request 42"] {
        assert!(
            admin.contains(want),
            "{want} missing from the audit log:\n{admin}"
        );
    }
    // The policy file is reloaded when it changes: a bad one is refused
    // (the previous stays), a good one applied; both audited.
    let file = s.env.path().join("retention.toml");
    kiroku_tests::replace_file(&file, "[kind]\nemail = \"soon\"\n")?;
    wait_audit(&s, "refused, the previous policy stays in force").await?;
    kiroku_tests::replace_file(
        &file,
        format!("{POLICY}\n[[override]]\ngroup = \"hr\"\nperiod = \"forever\"\n"),
    )?;
    wait_audit(&s, "in force (longest period forever").await?;
    let queries = s.admin_cli(&["audit", "--kind", "query", "--limit", "1000", "--json"])?;
    assert!(
        queries.contains("REFUSED"),
        "the investigator's refusal is audited"
    );
    Ok(())
}
