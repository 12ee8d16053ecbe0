//! File capture at its edges, against the real agent and collector: a
//! watch root that appears late (while running, and while the agent was
//! stopped) is scanned, with a record closing the gap; a truncate by path
//! is recorded at once with its hash; a directory moved out of the tree
//! takes a delete for each of its files; a plain directory under a
//! removable root is not removable media; `--check` names a missing root;
//! the test build says it has test hooks and logs the ones in use.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kiroku_proto::{Event, SearchRequest};
use kiroku_tests::files::{file, one_within, sha};
use kiroku_tests::{Env, Proc, bin, free_port, skip};

const WAIT: Duration = Duration::from_secs(30);

async fn one(env: &Env, r: SearchRequest) -> anyhow::Result<Event> {
    one_within(env, r, WAIT).await
}

fn wait_log(agent: &mut Proc, line: &str, n: usize) -> anyhow::Result<()> {
    kiroku_tests::files::wait_log(agent, line, n, WAIT)
}

fn req(op: &str, path: &Path) -> SearchRequest {
    SearchRequest {
        kind: "file".into(),
        operation: op.into(),
        path: path.display().to_string(),
        ..Default::default()
    }
}

fn no_inotify() -> bool {
    !Path::new("/proc/sys/fs/inotify/max_queued_events").exists()
}

/// A configured root missing at start is a `watch_lost` record; when it
/// appears, already holding files, it is watched within seconds (not at
/// the next 30 s retry), a `watch_restored` record closes the gap and the
/// files are recorded as created by a scan. A root that appears while the
/// agent is stopped is scanned at the next start the same way (a root
/// first seen missing is known to be empty, so nothing in it is "already
/// there").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_root_that_appears_late_is_scanned_and_its_gap_closed() -> anyhow::Result<()> {
    if no_inotify() {
        skip("file_capture_gaps late root", "no inotify on this system");
        return Ok(());
    }
    let env = Env::new()?;
    let _collector = env.start_collector()?;
    let late = env.path().join("late").join("root");
    let offline = env.path().join("offline-root");
    let staging = env.path().join("staging");
    let cfg = format!(
        "[files]\nwatch = [{late:?}, {offline:?}]\ncoalesce_ms = 100\nremovable_auto = false\nremovable_roots = []\n"
    );
    let smtp = free_port();
    // A test hook in use is loud in the agent's log (this is a test build).
    let pause = env.path().join("never-created");
    let pause = pause.to_string_lossy().into_owned();
    let mut agent = env.start_agent_with_env(
        "pc-late",
        smtp,
        &cfg,
        &[("KIROKU_TEST_FILES_PAUSE", pause.as_str())],
    )?;
    wait_log(&mut agent, "file capture watching", 1)?;
    let log = agent.log_text();
    assert!(
        log.contains("TEST HOOK ACTIVE") && log.contains("KIROKU_TEST_FILES_PAUSE"),
        "{log}"
    );
    assert!(log.contains("test build"), "{log}");
    one(&env, req("watch_lost", &late)).await?;
    one(&env, req("watch_lost", &offline)).await?;

    // The root appears with a file already in it (made elsewhere, then
    // moved into place, so only a scan can find it), and a missing parent
    // on the way.
    std::fs::create_dir_all(&staging)?;
    std::fs::write(staging.join("early.txt"), b"written before the watch")?;
    let appeared = Instant::now();
    std::fs::create_dir_all(late.parent().expect("parent"))?;
    std::fs::rename(&staging, &late)?;
    let restored = one_within(&env, req("watch_restored", &late), Duration::from_secs(15)).await?;
    assert!(
        file(&restored).detail.contains("watched again"),
        "{:?}",
        file(&restored)
    );
    eprintln!("root watched {:?} after it appeared", appeared.elapsed());
    let early = one(&env, req("create", &late.join("early.txt"))).await?;
    let f = file(&early);
    assert_eq!(f.mechanism, "scan", "{f:?}");
    assert_eq!(f.sha256, sha(b"written before the watch"));
    assert!(f.detail.contains("appeared"), "{f:?}");
    // From now on the watch records what happens in it.
    std::fs::write(late.join("later.txt"), b"after the watch")?;
    let later = one(&env, req("create", &late.join("later.txt"))).await?;
    assert_ne!(file(&later).mechanism, "scan");

    // The other root appears while the agent is stopped: the next start
    // reports what is in it.
    agent.terminate();
    std::fs::create_dir_all(&offline)?;
    std::fs::write(offline.join("while-down.txt"), b"made while stopped")?;
    let mut agent = env.start_agent_with_env("pc-late", smtp, &cfg, &[])?;
    wait_log(&mut agent, "file catch-up scan done", 1)?;
    let down = one(&env, req("create", &offline.join("while-down.txt"))).await?;
    assert_eq!(file(&down).mechanism, "scan");
    assert_eq!(file(&down).sha256, sha(b"made while stopped"));
    // And nothing in the first root is reported twice.
    let again = env
        .search_all(SearchRequest {
            kind: "file".into(),
            path: late.display().to_string(),
            ..Default::default()
        })
        .await?;
    let creates = again
        .iter()
        .filter(|e| file(e).operation == "create")
        .count();
    assert_eq!(creates, 2, "{again:#?}");
    Ok(())
}

/// `truncate(2)` by path (a lone IN_MODIFY: no open, no close) is recorded
/// within the coalesce window, hashed; a directory moved out of the tree
/// is a delete for each of its files, not only for itself; a plain
/// directory under a removable root is not removable media (no
/// `copy_to_removable`, no `usb-copy` alert).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_moved_out_directory_and_plain_removable_root_are_recorded_as_they_are()
-> anyhow::Result<()> {
    if no_inotify() {
        skip(
            "file_capture_gaps discrepancies",
            "no inotify on this system",
        );
        return Ok(());
    }
    let env = Env::new()?;
    std::fs::write(
        env.path().join("rules.toml"),
        "[[rule]]\nname = \"usb-copy\"\nkind = \"removable_copy\"\n",
    )?;
    let _collector =
        env.start_collector_with("[alerts]\nrules = \"rules.toml\"\nreload_secs = 1\n")?;
    let watched = env.path().join("watched");
    let outside = env.path().join("outside");
    let media = env.path().join("media");
    let plain = media.join("not-a-volume");
    for d in [&watched, &outside, &plain] {
        std::fs::create_dir_all(d)?;
    }
    let cfg = format!(
        "[files]\nwatch = [{watched:?}]\ncoalesce_ms = 100\nremovable_auto = false\nremovable_roots = [{media:?}]\n"
    );
    let mut agent = env.start_agent_with_env("pc-edges", free_port(), &cfg, &[])?;
    wait_log(&mut agent, "file catch-up scan done", 1)?;

    // Truncate by path.
    let log = watched.join("app.log");
    std::fs::write(&log, b"0123456789abcdef")?;
    one(&env, req("create", &log)).await?;
    let out = Command::new("python3")
        .args(["-c", "import os, sys; os.truncate(sys.argv[1], 4)"])
        .arg(&log)
        .output()?;
    anyhow::ensure!(out.status.success(), "python3 os.truncate: {out:?}");
    // Before the 30 s an unclosed file is held for (so the record comes
    // from the lone IN_MODIFY, not from the hold's end), with room for a
    // loaded machine.
    let e = one_within(&env, req("modify", &log), Duration::from_secs(25)).await?;
    let f = file(&e);
    assert_eq!(
        (f.size, f.sha256.as_str()),
        (4, sha(b"0123").as_str()),
        "{f:?}"
    );
    assert!(f.hash_skipped.is_empty(), "{f:?}");

    // A directory moved out of the tree.
    let dir = watched.join("project");
    std::fs::create_dir_all(dir.join("sub"))?;
    std::fs::write(dir.join("a.txt"), b"a")?;
    std::fs::write(dir.join("sub/b.txt"), b"b")?;
    one(&env, req("create", &dir.join("a.txt"))).await?;
    one(&env, req("create", &dir.join("sub/b.txt"))).await?;
    std::fs::rename(&dir, outside.join("project"))?;
    one(&env, req("delete", &dir.join("a.txt"))).await?;
    let b = one(&env, req("delete", &dir.join("sub/b.txt"))).await?;
    assert!(
        file(&b).detail.contains("moved away with its directory"),
        "{:?}",
        file(&b)
    );

    // A plain directory under a removable root: nothing is mounted there,
    // so it lies on the volume below it, not on removable media. Removable
    // roots are watched, so the file is recorded, as an ordinary create.
    std::fs::write(plain.join("copy.txt"), b"not on a stick")?;
    let e = one(&env, req("create", &plain.join("copy.txt"))).await?;
    assert!(!file(&e).removable, "{:?}", file(&e));
    let removable = env
        .search_all(SearchRequest {
            kind: "file".into(),
            removable: true,
            ..Default::default()
        })
        .await?;
    assert!(removable.is_empty(), "{removable:#?}");
    let plain_events = env
        .search_all(SearchRequest {
            kind: "file".into(),
            path: plain.display().to_string(),
            ..Default::default()
        })
        .await?;
    for e in &plain_events {
        assert!(!file(e).removable, "{e:?}");
        assert_ne!(file(e).operation, "copy_to_removable", "{e:?}");
    }
    let alerts = env.cli(&["alerts", "--since", "1h", "--json"])?;
    assert!(!alerts.contains("usb-copy"), "{alerts}");
    agent.terminate();
    Ok(())
}

/// `kiroku-agent --check` does not say a plain "configuration OK" for a
/// watch root that does not exist: it warns, naming the root, and exits 0
/// (the configuration is valid and the agent reports the root itself).
/// The test build's version line says it has test hooks.
#[test]
fn check_names_a_missing_watch_root_and_the_test_build_says_what_it_is() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("no-such-dir");
    let present = dir.path().join("present");
    std::fs::create_dir_all(&present)?;
    let cfg = dir.path().join("agent.toml");
    let write = |watch: &str| {
        std::fs::write(
            &cfg,
            format!(
                "data_dir = \"data\"\n[collector]\nendpoint = \"https://127.0.0.1:1\"\n[collector.tls]\nca = \"ca.pem\"\ncert = \"a.pem\"\nkey = \"a.key\"\n[smtp]\nlisten = [\"127.0.0.1:2525\"]\nmode = \"capture-only\"\n[files]\nwatch = [{watch}]\n"
            ),
        )
    };
    let check = || {
        Command::new(bin("kiroku-agent"))
            .arg("--config")
            .arg(&cfg)
            .arg("--check")
            .output()
    };
    write(&format!("{present:?}, {missing:?}"))?;
    let out = check()?;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(!stdout.contains("configuration OK"), "{stdout}");
    assert!(stdout.contains("1 warning"), "{stdout}");
    assert!(
        stderr.contains(&missing.display().to_string())
            && stderr.contains("does not exist")
            && stderr.contains("files.watch[1]"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(&format!("{}:", present.display())),
        "{stderr}"
    );
    write(&format!("{present:?}"))?;
    let out = check()?;
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("configuration OK"),
        "{out:?}"
    );
    let version = Command::new(bin("kiroku-agent"))
        .arg("--version")
        .output()?;
    assert!(
        String::from_utf8_lossy(&version.stdout).contains("test hooks"),
        "the suite must run a test build: {version:?}"
    );
    Ok(())
}
