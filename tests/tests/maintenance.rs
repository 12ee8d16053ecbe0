//! The maintenance window end to end, with the real collector and CLI:
//! the collector's clock is moved through the test-only clock file
//! (`KIROKU_TEST_CLOCK_FILE`, test builds only) so windows open when the
//! test wants them — no real waits for 03:00 — and runs are slowed
//! (`KIROKU_TEST_MAINTENANCE_DELAY_MS`: two journal entries per batch and
//! a pause) so a test can stop or kill one in its middle.
//!
//! Covered: stopped mid-run and resumed at the same leaf in the next
//! window, one run per window, ingest and search during a run (latency
//! printed, not asserted); kill -9 mid-run, resumed at start-up in protect
//! mode; down through the start and back inside the window (runs) or
//! after it (does not); protect mode after 25 h down; admins only for
//! start/stop, refusals audited.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kiroku_proto::admin_client::AdminClient;
use kiroku_proto::ingest_client::IngestClient;
use kiroku_proto::query_client::QueryClient;
use kiroku_proto::{
    AuditRequest, Batch, EmailEvent, Event, Hello, MaintenanceReport, MaintenanceReportsRequest,
    MaintenanceRequest, MaintenanceStatus, SearchRequest, ShipRequest, event::Kind, ship_request,
    ship_response,
};
use kiroku_tests::{Env, Proc};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

fn system_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A test installation whose collector runs a 03:00–06:00 UTC window and
/// a clock the test sets.
struct Setup {
    env: Env,
    clock: PathBuf,
    /// Start of a window (some day's 03:00 UTC) the test works around.
    window: i64,
    seq: u64,
}

impl Setup {
    fn new() -> anyhow::Result<Setup> {
        kiroku_tests::ensure_collector_test_hooks()?;
        let env = Env::new()?;
        let clock = env.path().join("clock-offset");
        std::fs::write(&clock, "0")?;
        let now = system_ms();
        let window = now - now.rem_euclid(DAY) + 3 * HOUR + DAY;
        Ok(Setup {
            env,
            clock,
            window,
            seq: 0,
        })
    }

    /// Sets the collector's clock to `at_ms` (it re-reads within 200 ms).
    /// The file is replaced, not rewritten in place: a read between the
    /// truncation and the write would give no offset for 200 ms, i.e. the
    /// system's clock, which is inside a window when the test runs between
    /// 03:00 and 06:00 UTC.
    fn set_clock(&self, at_ms: i64) -> anyhow::Result<()> {
        kiroku_tests::replace_file(&self.clock, (at_ms - system_ms()).to_string())?;
        Ok(())
    }

    fn start(&self, delay_ms: u64) -> anyhow::Result<Proc> {
        self.start_with(delay_ms, "")
    }

    /// With extra collector config (a `[retention]` section).
    fn start_with(&self, delay_ms: u64, extra: &str) -> anyhow::Result<Proc> {
        let delay = delay_ms.to_string();
        let clock = self.clock.to_string_lossy().into_owned();
        self.env.start_collector_with_env(
            &format!(
                "[maintenance]\nstart = \"03:00\"\nend = \"06:00\"\ntime_zone = \"UTC\"\n{extra}"
            ),
            &[
                ("KIROKU_TEST_CLOCK_FILE", clock.as_str()),
                ("KIROKU_TEST_MAINTENANCE_DELAY_MS", delay.as_str()),
            ],
        )
    }

    async fn admin(&self) -> anyhow::Result<AdminClient<tonic::transport::Channel>> {
        Ok(AdminClient::new(self.env.admin().await?))
    }

    async fn status(&self) -> anyhow::Result<MaintenanceStatus> {
        Ok(self
            .admin()
            .await?
            .maintenance(MaintenanceRequest {
                action: "status".into(),
            })
            .await?
            .into_inner())
    }

    async fn reports(&self) -> anyhow::Result<Vec<MaintenanceReport>> {
        Ok(self
            .admin()
            .await?
            .maintenance_reports(MaintenanceReportsRequest { limit: 100 })
            .await?
            .into_inner()
            .reports)
    }

    /// Waits until `n` summaries exist; returns them, newest first.
    async fn wait_reports(
        &self,
        n: usize,
        within: Duration,
    ) -> anyhow::Result<Vec<MaintenanceReport>> {
        let t = Instant::now();
        loop {
            let r = self.reports().await?;
            if r.len() >= n {
                return Ok(r);
            }
            anyhow::ensure!(
                t.elapsed() < within,
                "{n} maintenance summaries expected within {within:?}, have {}: {r:#?}",
                r.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until a run is in progress and has passed `leaves` entries.
    async fn wait_running(&self, leaves: u64) -> anyhow::Result<MaintenanceStatus> {
        let t = Instant::now();
        loop {
            let s = self.status().await?;
            if s.state == "running"
                && s.current
                    .as_ref()
                    .is_some_and(|c| c.to_leaf >= c.from_leaf + leaves)
            {
                return Ok(s);
            }
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(30),
                "no run in progress: {s:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Ships `n` mails as agent `a1` (one batch); returns the time it took.
    async fn ship(&mut self, n: usize) -> anyhow::Result<Duration> {
        let (cert, key) = self.env.identity("agent", "a1")?;
        let events: Vec<Event> = (0..n)
            .map(|i| {
                self.seq += 1;
                Event {
                    stream_id: "s1".into(),
                    seq: self.seq,
                    kind: Some(Kind::Email(EmailEvent {
                        subject: format!("mail {i}"),
                        ..Default::default()
                    })),
                    ..Default::default()
                }
            })
            .collect();
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
        let t = Instant::now();
        let ch = self.env.channel(Some((&cert, &key)), None).await?;
        let mut resp = IngestClient::new(ch)
            .ship(tokio_stream::iter(msgs))
            .await?
            .into_inner();
        while let Some(m) = resp.message().await? {
            if let Some(ship_response::Msg::Ack(a)) = m.msg {
                anyhow::ensure!(a.stored as usize == n, "stored {} of {n}: {a:?}", a.stored);
                return Ok(t.elapsed());
            }
        }
        anyhow::bail!("Ship ended without an Ack")
    }

    async fn search_time(&self) -> anyhow::Result<Duration> {
        let t = Instant::now();
        QueryClient::new(self.env.admin().await?)
            .search(SearchRequest {
                text: "mail".into(),
                page_size: 50,
                ..Default::default()
            })
            .await?;
        Ok(t.elapsed())
    }

    fn cli(&self, cert: &str, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
        self.env.cli_as(cert, args)
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_mid_run_resumes_at_the_same_point_next_window() -> anyhow::Result<()> {
    let mut s = Setup::new()?;
    s.set_clock(s.window - HOUR)?;
    // 1.5 s per two entries: the 50 entries of the run take about 37 s,
    // so it is still running when the stop arrives after ten TLS
    // channels, five commits and two CLI runs on a loaded machine (at
    // 300 ms, 7.5 s, it could end first); the resumed part takes at most
    // as long.
    let mut c = s.start(1500)?;
    // Before the window: ingest and search with no run, for comparison.
    let mut quiet = (Vec::new(), Vec::new());
    for _ in 0..5 {
        quiet.0.push(s.ship(10).await?);
        quiet.1.push(s.search_time().await?);
    }
    let st = s.status().await?;
    assert_eq!(st.state, "idle");
    assert_eq!(st.next_start_ms, s.window);
    assert_eq!(st.planned_end_ms, s.window + 3 * HOUR);
    assert_eq!(st.time_zone, "UTC");
    let journal = st
        .disk
        .iter()
        .find(|d| d.part == "journal")
        .map(|d| d.bytes);
    assert!(journal.unwrap_or(0) > 0, "disk use per part: {:?}", st.disk);
    assert_eq!(st.events, 50);
    // The window opens.
    s.set_clock(s.window - 1000)?;
    let running = s.wait_running(6).await?;
    let end_leaf_hint = running.current.as_ref().map(|c| c.from_leaf).unwrap_or(0);
    assert_eq!(end_leaf_hint, 0, "a first run starts at the beginning");
    // Ingest and search keep working during the run.
    let mut busy = (Vec::new(), Vec::new());
    for _ in 0..5 {
        busy.0.push(s.ship(10).await?);
        busy.1.push(s.search_time().await?);
    }
    println!(
        "latency without a run: ingest {:?}, search {:?}; during a run: ingest {:?}, search {:?} (medians of 5)",
        median(quiet.0),
        median(quiet.1),
        median(busy.0),
        median(busy.1)
    );
    // Investigators may look but not stop; the refusal is audited.
    let (code, _, err) = s.cli("investigator-inv", &["maintenance", "stop"])?;
    assert_ne!(code, 0);
    assert!(err.contains("admins only"), "{err}");
    let (code, out, err) = s.cli("admin-boss", &["maintenance", "stop"])?;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("resumes there"), "{out}");
    let first = s.wait_reports(1, Duration::from_secs(30)).await?;
    let stopped = &first[0];
    assert!(
        stopped.stopped_because.contains("stopped by admin"),
        "{stopped:?}"
    );
    assert!(!stopped.complete);
    assert!(
        stopped.to_leaf > 0 && stopped.verified == stopped.to_leaf,
        "{stopped:?}"
    );
    assert_eq!(stopped.trigger, "scheduled");
    // One run per window: the window is still open, nothing starts again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(s.reports().await?.len(), 1);
    assert_eq!(s.status().await?.state, "idle");
    let (code, out, _) = s.cli("investigator-inv", &["maintenance", "status"])?;
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!("resumes at leaf {}", stopped.to_leaf)),
        "{out}"
    );
    // The next day's window resumes where it stopped and ends the run.
    s.set_clock(s.window + DAY - 500)?;
    // The rest of the run (up to 44 entries at 1.5 s per two: about 33 s).
    let second = s.wait_reports(2, Duration::from_secs(120)).await?;
    let resumed = &second[0];
    assert_eq!(resumed.run_id, stopped.run_id);
    assert_eq!(resumed.from_leaf, stopped.to_leaf);
    assert_eq!(resumed.windows, 2);
    assert!(resumed.complete, "{resumed:?}");
    assert!(resumed.problems.is_empty(), "{:?}", resumed.problems);
    assert_eq!(resumed.severity, "ok");
    assert_eq!(resumed.purged, 0);
    // Entries appended during the run are left to the next run: it ended
    // at the head taken when it began.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(s.reports().await?.len(), 2, "one run per window");
    let (code, out, _) = s.cli("admin-boss", &["maintenance", "report", "--limit", "2"])?;
    assert_eq!(code, 0);
    assert!(out.contains("Kiroku maintenance: no problems"), "{out}");
    assert!(out.contains("reached the end of the store"), "{out}");
    let audit = QueryClient::new(s.env.admin().await?)
        .audit(AuditRequest {
            from_ms: 0,
            limit: 10_000,
            kind: "admin".into(),
        })
        .await?
        .into_inner();
    let calls: Vec<(&str, &str, &str)> = audit
        .entries
        .iter()
        .map(|e| (e.identity.as_str(), e.call.as_str(), e.detail.as_str()))
        .collect();
    assert!(
        calls.iter().any(|(who, call, d)| who.contains("inv")
            && *call == "MaintenanceStop"
            && d.contains("REFUSED")),
        "{calls:#?}"
    );
    assert!(
        calls
            .iter()
            .any(|(who, call, _)| who.contains("boss") && *call == "MaintenanceStop"),
        "{calls:#?}"
    );
    assert!(
        calls.iter().filter(|c| c.1 == "MaintenanceRun").count() >= 4,
        "{calls:#?}"
    );
    c.terminate();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_run_resumes_at_startup_in_protect_mode() -> anyhow::Result<()> {
    let mut s = Setup::new()?;
    s.set_clock(s.window - HOUR)?;
    // 1.5 s per two entries: the 30 entries take about 22 s, so the run is
    // still going when the kill comes, with room for a loaded machine
    // between seeing it pass six entries and the kill (at 300 ms the run
    // took 4.5 s).
    let mut c = s.start(1500)?;
    s.ship(30).await?;
    s.set_clock(s.window - 500)?;
    s.wait_running(6).await?;
    c.kill9();
    let mut c = s.start(20)?;
    let r = s.wait_reports(2, Duration::from_secs(40)).await?;
    let (crashed, resumed) = (&r[1], &r[0]);
    assert!(crashed.stopped_because.contains("crash"), "{crashed:?}");
    assert!(crashed.to_leaf >= 6, "{crashed:?}");
    assert_eq!(resumed.run_id, crashed.run_id);
    assert_eq!(
        resumed.from_leaf, crashed.to_leaf,
        "resumed where it was cut"
    );
    assert_eq!(resumed.trigger, "startup");
    assert!(resumed.protect, "{resumed:?}");
    assert!(
        resumed.protect_reason.contains("unclean shutdown"),
        "{resumed:?}"
    );
    assert!(resumed.complete, "{resumed:?}");
    assert_eq!((resumed.marked, resumed.purged), (0, 0));
    let (_, out, _) = s.cli("admin-boss", &["maintenance", "report"])?;
    assert!(out.contains("PROTECT MODE"), "{out}");
    assert!(out.contains("unclean shutdown"), "{out}");
    // Protect mode was served: nothing pending any more.
    assert!(!s.status().await?.protect_pending);
    c.terminate();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_through_the_start_runs_within_the_window_not_after() -> anyhow::Result<()> {
    let mut s = Setup::new()?;
    s.set_clock(s.window - 600_000)?;
    let mut c = s.start(0)?;
    s.ship(20).await?;
    c.terminate();
    // Down through the window's start, back after its end: no run.
    s.set_clock(s.window + 4 * HOUR)?;
    let mut c = s.start(0)?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(s.reports().await?.len(), 0, "no run after the window");
    let st = s.status().await?;
    assert_eq!(st.state, "idle");
    assert_eq!(st.next_start_ms, s.window + DAY);
    assert!(!st.protect_pending, "{st:?}");
    c.terminate();
    // Down through the next window's start, back half an hour into it:
    // the missed run starts now.
    s.set_clock(s.window + DAY + HOUR / 2)?;
    let mut c = s.start(0)?;
    let r = s.wait_reports(1, Duration::from_secs(30)).await?;
    assert_eq!(r[0].trigger, "startup");
    assert!(r[0].complete && !r[0].protect, "{:?}", r[0]);
    assert!(r[0].verified >= 20, "{:?}", r[0]);
    c.terminate();
    Ok(())
}

/// Runs a manual run (`kiroku maintenance start` as admin) to its end;
/// returns its summary.
async fn manual_run(s: &Setup) -> anyhow::Result<MaintenanceReport> {
    let before = s.reports().await?.len();
    let (code, out, err) = s.cli("admin-boss", &["maintenance", "start"])?;
    anyhow::ensure!(code == 0, "maintenance start: {out} {err}");
    let r = s.wait_reports(before + 1, Duration::from_secs(30)).await?;
    Ok(r[0].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protect_mode_after_25_hours_down() -> anyhow::Result<()> {
    let mut s = Setup::new()?;
    // Mail kept one hour, purged an hour after marking. The policy
    // shortens the defaults, so it waits the defaults' 7-day delay: the
    // collector first runs 8 days before the window, and again once the
    // delay is over.
    std::fs::write(
        s.env.path().join("retention.toml"),
        "grace = \"1h\"\nshorten_delay = \"1h\"\n[kind]\nemail = \"1h\"\n",
    )?;
    let retention = "[retention]\npolicy = \"retention.toml\"\n";
    s.set_clock(s.window - 8 * DAY - 2 * HOUR)?;
    let mut c = s.start_with(0, retention)?;
    s.ship(10).await?;
    c.terminate();
    let t1 = s.window - DAY - HOUR;
    s.set_clock(t1)?;
    let mut c = s.start_with(0, retention)?;
    c.terminate();
    // 25 h later: inside the window.
    s.set_clock(t1 + 25 * HOUR)?;
    let mut c = s.start_with(0, retention)?;
    let st = s.status().await?;
    assert!(
        st.protect_pending
            || st.current.as_ref().is_some_and(|p| p.protect)
            || st.last.as_ref().is_some_and(|p| p.protect),
        "{st:?}"
    );
    let r = s.wait_reports(1, Duration::from_secs(30)).await?;
    let p = &r[0];
    assert!(p.protect, "{p:?}");
    assert_eq!(p.trigger, "startup");
    assert!(
        p.protect_reason.contains("not running for 25 hours"),
        "{p:?}"
    );
    assert!(!p.protect_reason.contains("unclean"), "{p:?}");
    assert!(
        p.would_mark >= 10,
        "protect mode decided but did not mark: {p:?}"
    );
    assert_eq!((p.marked, p.purged), (0, 0), "{p:?}");
    assert_eq!(s.status().await?.marked, 0);
    // Protect mode is over: the next run marks; an hour's grace later the
    // one after purges and frees space.
    let m = manual_run(&s).await?;
    assert!(!m.protect && m.marked >= 10 && m.purged == 0, "{m:?}");
    assert!(s.status().await?.marked >= 10);
    s.set_clock(t1 + 25 * HOUR + 2 * HOUR)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let journal_before = journal_bytes(&s).await?;
    let g = manual_run(&s).await?;
    assert!(g.purged >= 10 && g.bytes_freed > 0, "{g:?}");
    let journal_after = journal_bytes(&s).await?;
    println!(
        "purged {} events: {} bytes freed, journal {journal_before} -> {journal_after} bytes",
        g.purged, g.bytes_freed
    );
    assert_eq!(s.status().await?.events, 0);
    c.terminate();
    Ok(())
}

async fn journal_bytes(s: &Setup) -> anyhow::Result<u64> {
    Ok(s.status()
        .await?
        .disk
        .iter()
        .find(|d| d.part == "journal")
        .map_or(0, |d| d.bytes))
}
