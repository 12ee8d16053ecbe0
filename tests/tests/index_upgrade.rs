//! A data directory written by the previous collector (bdddeb9, whose
//! index has no schema version: tests/fixtures/README.md) opened by this
//! one: it listens at once and answers from the old index while the new
//! one is built from the journal (slowed by the `test-hooks` knob
//! `KIROKU_TEST_REBUILD_DELAY_MS`: one event per batch); `kiroku hosts`
//! and `ListHosts` show the progress; mail sent meanwhile is searchable
//! after the switch; `kill -9` in the middle loses nothing: the rebuild
//! resumes, every event is found exactly once, the old index is kept.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use kiroku_proto::{IndexRebuild, ListHostsRequest, SearchRequest};
use kiroku_tests::{Env, Mode, ensure_collector_test_hooks, free_port, send_mail};

/// Events in the fixture's journal.
const FIXTURE_EVENTS: usize = 7;

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

async fn rebuild_status(env: &Env) -> anyhow::Result<Option<IndexRebuild>> {
    let mut q = env.investigator().await?;
    Ok(q.list_hosts(ListHostsRequest::default())
        .await?
        .into_inner()
        .index_rebuild)
}

/// Polls `ListHosts` until `ok` holds for the rebuild's status.
async fn wait_status(
    env: &Env,
    what: &str,
    within: Duration,
    ok: impl Fn(&IndexRebuild) -> bool,
) -> anyhow::Result<IndexRebuild> {
    let deadline = Instant::now() + within;
    loop {
        let s = rebuild_status(env).await?;
        if let Some(s) = &s
            && ok(s)
        {
            return Ok(s.clone());
        }
        anyhow::ensure!(Instant::now() < deadline, "{what}: last status {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `ListHosts` until agent `name` has `n` events stored (its batch
/// committed).
async fn wait_stored(env: &Env, name: &str, n: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut q = env.investigator().await?;
        let hosts = q
            .list_hosts(ListHostsRequest::default())
            .await?
            .into_inner()
            .hosts;
        if hosts
            .iter()
            .any(|h| h.agent_id == name && h.events_stored >= n)
        {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "agent {name} never had {n} events stored: {hosts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn mail(from: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: bob@partner.example\r\nSubject: {subject}\r\nMessage-ID: <{subject}@corp.example>\r\n\r\nsent during the index rebuild\r\n"
    )
    .into_bytes()
}

fn ids(events: &[kiroku_proto::Event]) -> Vec<String> {
    events.iter().map(|e| e.event_id.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_index_serves_while_rebuilt_and_a_kill_in_the_middle_loses_nothing()
-> anyhow::Result<()> {
    ensure_collector_test_hooks()?;
    let env = Env::new()?;
    let data = env.path().join("data");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/data-bdddeb9"),
        &data,
    )?;
    // One event per batch, five seconds each: the fixture's seven events
    // take about thirty-five seconds to rebuild, time enough to query
    // (four CLI runs), start an agent, ingest and kill the collector in
    // the middle even on a loaded machine (at two seconds each it could
    // finish first).
    let slow = [("KIROKU_TEST_REBUILD_DELAY_MS", "5000")];
    let mut collector = env.start_collector_on_env(&data, &slow)?;

    // It listens at once and answers from the old index.
    let status = rebuild_status(&env).await?.expect("a rebuild in progress");
    assert_eq!(status.state, "rebuilding", "{status:?}");
    assert!(status.percent < 100.0, "{status:?}");
    assert_eq!(status.events_total, FIXTURE_EVENTS as u64, "{status:?}");
    let out = env.cli(&["search", "--sender", "alice@corp.example"])?;
    assert!(out.contains("alice@corp.example"), "{out}");
    let before = env.search_all(SearchRequest::default()).await?;
    assert_eq!(before.len(), FIXTURE_EVENTS, "{:?}", ids(&before));
    let hosts = env.cli(&["hosts"])?;
    assert!(
        hosts.contains("index rebuild for schema version")
            && hosts.contains("rebuilding")
            && hosts.contains("events"),
        "{hosts}"
    );
    // Filters and counts the old index has no fields for are refused,
    // saying why, not answered wrongly.
    for args in [
        &["search", "--sender-domain", "corp.example"][..],
        &["stats", "--by", "recipient-domain"][..],
    ] {
        let refused = env.cli(args).expect_err("refused during the rebuild");
        assert!(
            refused.to_string().contains("needs the rebuilt index"),
            "{args:?}: {refused}"
        );
    }

    // Mail through an agent during the rebuild.
    let smtp = free_port();
    let _agent = env.start_agent("pc-upgrade", smtp, &Mode::CaptureOnly)?;
    send_mail(
        smtp,
        "newcomer@corp.example",
        &["bob@partner.example"],
        &mail("newcomer@corp.example", "during-first-rebuild"),
    )?;
    // The agent's host record and the mail.
    wait_stored(&env, "pc-upgrade", 2).await?;

    // kill -9 in the middle of the rebuild.
    let mid = rebuild_status(&env).await?.expect("status");
    assert!(
        mid.state == "rebuilding" && mid.events_done < FIXTURE_EVENTS as u64,
        "the rebuild must still be running to be interrupted: {mid:?}"
    );
    collector.kill9();
    assert!(data.join("index.next").is_dir(), "the rebuild in progress");
    assert!(
        !data.join("index/kiroku-schema").exists(),
        "the old index is untouched"
    );

    // Restart: the rebuild resumes; more mail meanwhile.
    let _collector =
        env.start_collector_on_env(&data, &[("KIROKU_TEST_REBUILD_DELAY_MS", "1000")])?;
    let log = std::fs::read_to_string(env.path().join("collector.log"))?;
    let resumed = log
        .lines()
        .rfind(|l| l.contains("rebuilding the index from the journal"))
        .unwrap_or_default();
    assert!(
        resumed.contains("events_done=") && !resumed.contains("events_done=0"),
        "resumed from its last commit: {resumed}"
    );
    send_mail(
        smtp,
        "newcomer@corp.example",
        &["bob@partner.example"],
        &mail("newcomer@corp.example", "during-resumed-rebuild"),
    )?;
    wait_stored(&env, "pc-upgrade", 3).await?;
    let done = wait_status(&env, "the rebuild finishes", Duration::from_secs(60), |s| {
        s.state == "done"
    })
    .await?;
    assert_eq!(done.percent, 100.0, "{done:?}");

    // Nothing lost, nothing twice.
    let after = env.search_all(SearchRequest::default()).await?;
    let unique: HashSet<String> = ids(&after).into_iter().collect();
    assert_eq!(
        unique.len(),
        after.len(),
        "each event once: {:?}",
        ids(&after)
    );
    for e in &before {
        assert!(unique.contains(&e.event_id), "{} lost", e.event_id);
    }
    let new = env
        .search_all(SearchRequest {
            sender: "newcomer@corp.example".into(),
            ..Default::default()
        })
        .await?;
    assert_eq!(new.len(), 2, "both mails sent during the rebuild");
    assert_eq!(after.len(), FIXTURE_EVENTS + 3, "{:?}", ids(&after));
    let out = env.cli(&["search", "--sender", "alice@corp.example"])?;
    assert!(out.contains("alice@corp.example"), "{out}");
    // The rebuilt index has what the old one lacked: the new filters, the
    // counts, and Japanese words inside a run of kanji (the fixture's
    // subject 第3四半期の売上報告と来期予算について（至急）).
    let out = env.cli(&["search", "--sender-domain", "corp.example", "--json"])?;
    assert!(
        out.contains("alice@corp.example") && out.contains("newcomer@corp.example"),
        "{out}"
    );
    let out = env.cli(&["stats", "--by", "recipient-domain", "--json"])?;
    assert!(out.contains("partner.example"), "{out}");
    let out = env.cli(&["search", "--subject", "売上", "--json"])?;
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("fx2@corp.example"), "{out}");
    let hosts = env.cli(&["hosts"])?;
    assert!(
        hosts.contains("): done,") && hosts.contains("queries use the new index"),
        "{hosts}"
    );

    // The new index is in place, the old one kept.
    assert!(data.join("index/kiroku-schema").exists());
    assert!(!data.join("index.next").exists());
    let kept: Vec<_> = std::fs::read_dir(&data)?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("index.pre-"))
        .collect();
    assert_eq!(kept.len(), 1, "the old index is kept beside the new one");
    assert!(kept[0].path().join("meta.json").exists());
    Ok(())
}
