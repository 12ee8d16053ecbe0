//! File capture end to end: the real agent watches temp directories with
//! inotify, the real collector indexes what it ships, and every check goes
//! through the gRPC Query API (and once through the `kiroku` CLI): create,
//! write bursts, rename, delete, a move out of the tree, a file in a new
//! subdirectory, an excluded file, a copy onto a removable volume (a tmpfs
//! mounted under a removable root, when running as root) linked to its
//! source by SHA-256, and a forced kernel
//! queue overflow reported as an `overflow` record. Also what changed
//! while the agent was killed, reported by the catch-up scan at start.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use kiroku_proto::{Event, SearchRequest};
use kiroku_tests::files::{file, one_within, req, sha};
use kiroku_tests::{Env, Proc, TmpfsMount, free_port, is_root, skip};

const WAIT: Duration = Duration::from_secs(30);

/// The one event matching, waiting for it.
async fn one(
    env: &kiroku_tests::Env,
    r: kiroku_proto::SearchRequest,
) -> anyhow::Result<kiroku_proto::Event> {
    one_within(env, r, WAIT).await
}

/// Waits until the agent's watcher has its watches in place.
fn wait_watching(agent: &mut Proc) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    while !agent.log_text().contains("file capture watching") {
        anyhow::ensure!(agent.is_running(), "agent died:\n{}", agent.log_text());
        anyhow::ensure!(
            Instant::now() < deadline,
            "agent never started watching:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_operations_are_recorded_and_searchable() -> anyhow::Result<()> {
    if !Path::new("/proc/sys/fs/inotify/max_queued_events").exists() {
        skip("file_capture", "no inotify on this system");
        return Ok(());
    }
    let env = Env::new()?;
    let _collector = env.start_collector()?;
    let watched = env.path().join("watched");
    let media = env.path().join("media");
    let usb = media.join("usb1");
    let outside = env.path().join("outside");
    for d in [&watched, &usb, &outside] {
        std::fs::create_dir_all(d)?;
    }
    let pause = env.path().join("pause-inotify");
    // Two more roots: one missing from the start, one deleted later.
    let missing = env.path().join("not-there");
    let doomed = env.path().join("doomed");
    std::fs::create_dir_all(&doomed)?;
    // The agent's own data directory, watched by mistake: its buffer
    // writes must not be recorded (they would feed themselves).
    let own = env.path().join("agent-pc-files");
    // The removable root is in the test's temp dir; automatic detection is
    // off so the machine's own media never mix in.
    let extra = format!(
        "[files]\nwatch = [{watched:?}, {missing:?}, {doomed:?}, {own:?}]\nexclude = [\"**/*.swp\", \"**/.cache/**\"]\ncoalesce_ms = 200\nremovable_roots = [{media:?}]\nremovable_auto = false\n"
    );
    let pause_path = pause.to_string_lossy().into_owned();
    let mut agent = env.start_agent_with_env(
        "pc-files",
        free_port(),
        &extra,
        &[("KIROKU_TEST_FILES_PAUSE", pause_path.as_str())],
    )?;
    wait_watching(&mut agent)?;
    // Privileged agents name the writer (fanotify); others cannot (inotify).
    let fanotify = agent.log_text().contains("fanotify available");
    if !fanotify {
        skip(
            "file_capture writer attribution",
            "fanotify unavailable here (needs CAP_SYS_ADMIN): records are checked as inotify-only",
        );
    }
    let writer_is_us = |e: &Event| {
        let f = file(e);
        if fanotify {
            assert_eq!(
                (f.mechanism.as_str(), f.pid),
                ("fanotify", std::process::id()),
                "{f:?}"
            );
            assert!(
                f.uid >= 0 && !f.process.is_empty() && !f.exe.is_empty(),
                "{f:?}"
            );
            assert!(!e.user.is_empty());
        } else {
            assert_eq!((f.mechanism.as_str(), f.uid, f.pid), ("inotify", -1, 0));
            assert!(e.user.is_empty(), "inotify cannot know the user");
        }
    };

    // A root that cannot be watched is a record, not a silent gap (and not
    // a dead agent).
    let e = one(&env, req("watch_lost", "not there")).await?;
    assert!(
        file(&e).detail.contains("cannot watch") && file(&e).detail.contains("every 30 s"),
        "{:?}",
        file(&e)
    );
    std::fs::remove_dir(&doomed)?;
    let e = one(&env, req("watch_lost", "doomed")).await?;
    assert!(
        file(&e).detail.contains("no longer watched"),
        "{:?}",
        file(&e)
    );

    // Create: content hashed after close.
    let report: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(watched.join("Q3 report.pdf"), &report)?;
    let e = one(&env, req("create", "q3 report.pdf")).await?;
    let f = file(&e);
    assert_eq!(f.path, watched.join("Q3 report.pdf").display().to_string());
    assert_eq!(f.sha256, sha(&report));
    assert_eq!(f.size, report.len() as u64);
    writer_is_us(&e);
    assert!(!f.removable);
    assert_eq!(e.agent_id, "pc-files");

    // A burst of writes is one record; a later write is a modify.
    {
        let mut n = std::fs::File::create(watched.join("notes.txt"))?;
        for i in 0..50 {
            writeln!(n, "line {i}")?;
            n.flush()?;
        }
    }
    // One record, not 50 (the kernel already merges identical queued
    // events, so the count is of what it delivered: create, modifies,
    // close).
    let e = one(&env, req("create", "notes.txt")).await?;
    assert!(file(&e).coalesced >= 3, "{:?}", file(&e));
    writer_is_us(&e);
    tokio::time::sleep(Duration::from_millis(400)).await;
    std::fs::OpenOptions::new()
        .append(true)
        .open(watched.join("notes.txt"))?
        .write_all(b"one more\n")?;
    let e = one(&env, req("modify", "notes.txt")).await?;
    let content = std::fs::read(watched.join("notes.txt"))?;
    assert_eq!(file(&e).sha256, sha(&content));

    // Rename inside the tree: one record with both paths.
    std::fs::rename(watched.join("notes.txt"), watched.join("notes-final.txt"))?;
    let e = one(&env, req("rename", "notes final")).await?;
    assert_eq!(
        file(&e).old_path,
        watched.join("notes.txt").display().to_string()
    );
    assert_eq!(file(&e).sha256, sha(&content));

    // Delete; a move out of the tree is a delete too.
    std::fs::write(watched.join("old.txt"), b"old")?;
    std::fs::write(watched.join("leaving.txt"), b"bye")?;
    one(&env, req("create", "leaving.txt")).await?;
    std::fs::remove_file(watched.join("old.txt"))?;
    std::fs::rename(watched.join("leaving.txt"), outside.join("leaving.txt"))?;
    one(&env, req("delete", "old.txt")).await?;
    let e = one(&env, req("delete", "leaving.txt")).await?;
    assert!(file(&e).detail.contains("moved away"), "{:?}", file(&e));

    // A new subdirectory with a file written at once (possibly before its
    // watch exists: the agent's scan finds it).
    std::fs::create_dir_all(watched.join("sub/deeper"))?;
    std::fs::write(watched.join("sub/deeper/inner.txt"), b"inner")?;
    let e = one(&env, req("", "sub/deeper/inner.txt")).await?;
    assert_eq!(file(&e).operation, "create");
    assert_eq!(file(&e).sha256, sha(b"inner"));
    // And later files in it come from its own watch.
    std::fs::write(watched.join("sub/deeper/later.txt"), b"later")?;
    one(&env, req("create", "deeper/later.txt")).await?;

    // Excluded names are never recorded.
    std::fs::write(watched.join(".draft.swp"), b"swap")?;
    std::fs::create_dir_all(watched.join(".cache/x"))?;
    std::fs::write(watched.join(".cache/x/blob"), b"cache")?;

    // Removable media: a volume appears under the removable root.
    let mut mount = None;
    if is_root() {
        match TmpfsMount::mount(&usb) {
            Ok(m) => mount = Some(m),
            Err(e) => skip("file_capture tmpfs volume", &format!("{e}")),
        }
    } else {
        skip(
            "file_capture tmpfs volume",
            "not root: cannot mount the test's removable volume, copies to it are not checked",
        );
    }
    if mount.is_some() {
        let e = one(&env, req("volume_mounted", "")).await?;
        let f = file(&e);
        assert_eq!(f.volume, usb.display().to_string());
        assert_eq!(f.device, "kiroku-test");
        assert!(f.removable && f.detail.contains("removable"), "{f:?}");
    }
    // Only a mounted volume is removable media: without the mount there is
    // nothing to copy onto (a plain directory there is not removable).
    if mount.is_some() {
        std::fs::copy(watched.join("Q3 report.pdf"), usb.join("copy.pdf"))?;
        let e = one(&env, req("copy_to_removable", "copy.pdf")).await?;
        let f = file(&e);
        assert!(f.removable);
        writer_is_us(&e);
        assert_eq!(f.sha256, sha(&report));
        assert_eq!(
            f.source_path,
            watched.join("Q3 report.pdf").display().to_string(),
            "the copy names the file it came from"
        );
        if mount.is_some() {
            assert_eq!(f.volume, usb.display().to_string());
            assert_eq!(f.device, "kiroku-test");
        }
        // The removable filter and the hash find it; the hash finds the
        // original too.
        let r = env
            .wait_for(
                SearchRequest {
                    removable: true,
                    operation: "copy_to_removable".into(),
                    ..Default::default()
                },
                1,
                WAIT,
            )
            .await?;
        assert_eq!(r.len(), 1);
        let by_hash = env
            .wait_for(
                SearchRequest {
                    sha256: sha(&report),
                    ..Default::default()
                },
                2,
                WAIT,
            )
            .await?;
        assert!(by_hash.len() >= 2, "{by_hash:#?}");

        // The CLI renders it.
        let cli = env.path().join("cli.toml");
        std::fs::write(
            &cli,
            format!(
                "endpoint = \"https://127.0.0.1:{}\"\nserver_name = \"localhost\"\n[tls]\nca = \"pki/ca.pem\"\ncert = \"pki/investigator-inv.pem\"\nkey = \"pki/investigator-inv.key\"\n",
                env.grpc
            ),
        )?;
        let cli = cli.to_string_lossy().into_owned();
        let table = env.kiroku(&[
            "--config",
            &cli,
            "search",
            "--kind",
            "file",
            "--op",
            "copy_to_removable",
            "--removable",
        ])?;
        assert!(table.contains(&e.event_id), "{table}");
        let shown = env.kiroku(&["--config", &cli, "show", &e.event_id])?;
        let who = if fanotify {
            format!("pid {}", std::process::id())
        } else {
            "inotify does not tell".to_owned()
        };
        for want in [
            "copy_to_removable",
            "copy.pdf",
            "Q3 report.pdf",
            who.as_str(),
        ] {
            assert!(shown.contains(want), "{want} missing in:\n{shown}");
        }
    }
    if let Some(mut m) = mount.take() {
        anyhow::ensure!(m.unmount(), "umount {}", usb.display());
        std::mem::forget(m);
        let e = one(&env, req("volume_unmounted", "")).await?;
        assert_eq!(file(&e).volume, usb.display().to_string());
    }

    // Throughput: a burst of distinct files, until all are searchable.
    let bulk = 2000;
    std::fs::create_dir_all(watched.join("bulk"))?;
    one(&env, req("create", "bulk")).await?;
    let started = Instant::now();
    for i in 0..bulk {
        std::fs::write(watched.join(format!("bulk/b{i}.dat")), i.to_string())?;
    }
    let written = started.elapsed();
    let mut q = env.investigator().await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let total = q
            .search(SearchRequest {
                page_size: 1,
                ..req("create", "bulk")
            })
            .await?
            .into_inner()
            .total_hits;
        // The files and the directory itself.
        if total > bulk {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {total} of {bulk} bulk files recorded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_in = started.elapsed();
    eprintln!(
        "throughput: {bulk} files written in {written:?}, all recorded, shipped and searchable after {all_in:?} ({:.0} files/s end to end)",
        bulk as f64 / all_in.as_secs_f64()
    );

    // Kernel queue overflow: the agent stops reading while the pause file
    // exists; more events than the kernel queues are generated (on excluded
    // names, so only the gap itself is recorded).
    let max: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")?
        .trim()
        .parse()?;
    if max > 200_000 {
        skip(
            "file_capture overflow",
            &format!("fs.inotify.max_queued_events = {max} is too large to overflow quickly"),
        );
    } else {
        std::fs::create_dir_all(watched.join("flood"))?;
        one(&env, req("create", "flood")).await?;
        std::fs::write(&pause, b"")?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Each file: IN_CREATE + IN_CLOSE_WRITE.
        let started = Instant::now();
        for i in 0..(max / 2 + 1000) {
            std::fs::File::create(watched.join(format!("flood/f{i}.swp")))?;
        }
        let generated = started.elapsed();
        std::fs::remove_file(&pause)?;
        let e = one(&env, req("overflow", "")).await?;
        let f = file(&e);
        assert!(
            f.detail.contains("max_queued_events") && f.detail.contains("missing"),
            "{f:?}"
        );
        eprintln!(
            "overflow: {} files ({} kernel events) generated in {generated:?}, reported",
            max / 2 + 1000,
            max + 2000
        );
        // Events after the gap are recorded again.
        std::fs::write(watched.join("after-gap.txt"), b"after")?;
        one(&env, req("create", "after gap")).await?;
    }

    // Nothing excluded got through.
    let all = env
        .wait_for(
            SearchRequest {
                kind: "file".into(),
                ..Default::default()
            },
            1,
            WAIT,
        )
        .await?;
    for e in &all {
        let p = &file(e).path;
        assert!(
            !p.ends_with(".swp") && !p.contains("/.cache"),
            "excluded path recorded: {p}"
        );
        assert!(
            !Path::new(p).starts_with(&own),
            "the agent recorded its own data directory: {p}"
        );
    }
    agent.terminate();
    assert!(
        agent.log_text().contains("file capture stopped"),
        "file capture did not stop cleanly:\n{}",
        agent.log_text()
    );
    Ok(())
}

/// Waits until the agent's log shows the catch-up scan finished `n` times
/// (the log is appended across restarts).
fn wait_scanned(agent: &Proc, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    while agent.log_text().matches("file catch-up scan done").count() < n {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the catch-up scan never finished:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn mtime_ms(p: &Path) -> anyhow::Result<i64> {
    let t = std::fs::metadata(p)?.modified()?;
    Ok(t.duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64)
}

/// Files created, modified and deleted while the agent is down (killed
/// with SIGKILL) are reported at its next start by the catch-up scan,
/// once, marked `mechanism = "scan"`, created/modified ones at their mtime;
/// what was there before the first start is not reported as created, what
/// the watcher recorded before the kill is not reported again, and a
/// restart without changes reports nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_while_the_agent_was_down_are_reported_at_start_once() -> anyhow::Result<()> {
    if !Path::new("/proc/sys/fs/inotify/max_queued_events").exists() {
        skip("file_capture catch-up", "no inotify on this system");
        return Ok(());
    }
    let env = Env::new()?;
    let _collector = env.start_collector()?;
    let watched = env.path().join("watched-down");
    std::fs::create_dir_all(watched.join("sub"))?;
    let cfg = format!(
        "[files]\nwatch = [{watched:?}]\ncoalesce_ms = 100\nremovable_auto = false\nremovable_roots = []\n"
    );
    let p = |name: &str| watched.join(name);
    let s = |name: &str| p(name).display().to_string();
    for name in ["kept.txt", "old.txt", "gone.txt", "sub/deep.txt"] {
        std::fs::write(p(name), format!("{name} before the first start"))?;
    }
    let smtp = free_port();
    let mut agent = env.start_agent_with_env("pc-down", smtp, &cfg, &[])?;
    wait_watching(&mut agent)?;
    wait_scanned(&agent, 1)?;
    std::fs::write(p("seen.txt"), b"seen by inotify")?;
    let seen = one(&env, req("create", &s("seen.txt"))).await?;
    assert_ne!(file(&seen).mechanism, "scan", "seen by the watcher");

    agent.kill9();
    std::fs::write(p("new.txt"), b"created while down")?;
    std::fs::write(p("sub/new2.txt"), b"also created while down")?;
    std::fs::OpenOptions::new()
        .append(true)
        .open(p("old.txt"))?
        .write_all(b", and changed while down")?;
    std::fs::remove_file(p("gone.txt"))?;
    let new_mtime = mtime_ms(&p("new.txt"))?;

    let agent = env.start_agent_with_env("pc-down", smtp, &cfg, &[])?;
    wait_scanned(&agent, 2)?;
    let created = one(&env, req("create", &s("new.txt"))).await?;
    let f = file(&created);
    assert_eq!(f.mechanism, "scan", "{f:?}");
    assert_eq!(f.sha256, sha(b"created while down"));
    assert!(f.detail.contains("catch-up scan"), "{f:?}");
    assert_eq!(
        created.observed_at_ms, new_mtime,
        "the event time is the mtime"
    );
    let deep = one(&env, req("create", &s("sub/new2.txt"))).await?;
    assert_eq!(file(&deep).sha256, sha(b"also created while down"));
    let modified = one(&env, req("modify", &s("old.txt"))).await?;
    assert_eq!(
        file(&modified).sha256,
        sha(b"old.txt before the first start, and changed while down")
    );
    assert_eq!(file(&modified).mechanism, "scan");
    let deleted = one(&env, req("delete", &s("gone.txt"))).await?;
    assert_eq!(file(&deleted).mechanism, "scan");

    // A clean restart with nothing changed reports nothing more.
    let mut agent = agent;
    agent.terminate();
    let agent = env.start_agent_with_env("pc-down", smtp, &cfg, &[])?;
    wait_scanned(&agent, 3)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = env
        .search_all(SearchRequest {
            kind: "file".into(),
            ..Default::default()
        })
        .await?;
    let mut got: Vec<(String, String)> = all
        .iter()
        .map(file)
        .filter(|f| f.path.starts_with(&s("")))
        .map(|f| (f.operation.clone(), f.path.clone()))
        .collect();
    got.sort();
    let mut want: Vec<(String, String)> = [
        ("create", "new.txt"),
        ("create", "seen.txt"),
        ("create", "sub/new2.txt"),
        ("delete", "gone.txt"),
        ("modify", "old.txt"),
    ]
    .iter()
    .map(|(op, name)| ((*op).to_owned(), s(name)))
    .collect();
    want.sort();
    assert_eq!(
        got, want,
        "each change once; nothing from before the first start"
    );
    Ok(())
}
