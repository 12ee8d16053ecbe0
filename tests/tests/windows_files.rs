//! File capture of the Windows agent under Wine (issue 22): the
//! cross-built `kiroku-agent.exe` watches a directory mapped from a Linux
//! temp dir (`Z:\tmp\…`) with ReadDirectoryChangesW, ships to a Linux
//! collector over mTLS, and every check goes through the Query API:
//! create, a write after it (modify), rename with both paths, delete, an
//! excluded name (a Windows-style pattern), a file in a new subdirectory,
//! and a copy into a directory configured as a removable root recorded as
//! `copy_to_removable` with its `source_path`. Then what changed while the
//! agent was stopped, reported by the catch-up scan at its next start.
//!
//! The files are written by this (Linux) test process; Wine's
//! ReadDirectoryChangesW reports them through inotify in wineserver. What
//! this cannot cover: a real USB drive type (`DRIVE_REMOVABLE`; the
//! detection is unit-tested in `agent/src/capture/files/windows/
//! drives.rs`), a Windows writer holding a file open (the deny-write probe
//! only sees Windows processes), and the system's own buffer overflow.

use std::path::Path;
use std::time::{Duration, Instant};

use kiroku_proto::{Event, SearchRequest};
use kiroku_tests::files::{file, one_within, req, sha};
use kiroku_tests::winagent::{WinAgent, stop_windows};
use kiroku_tests::wine::{Wine, win_path};
use kiroku_tests::{Env, Mode, Proc, free_port, skip};

const WAIT: Duration = Duration::from_secs(60);

/// The one event matching, waiting for it.
async fn one(env: &Env, r: SearchRequest) -> anyhow::Result<Event> {
    one_within(env, r, WAIT).await
}

/// Waits until the agent's log says `what` `nth` times.
fn wait_log(agent: &mut Proc, what: &str, nth: usize) -> anyhow::Result<()> {
    kiroku_tests::files::wait_log(agent, what, nth, WAIT)
}

/// The test's directories, as Linux paths and as the agent sees them.
struct Dirs {
    watched: std::path::PathBuf,
    usb: std::path::PathBuf,
    later: std::path::PathBuf,
    /// `Z:\…` of `watched`, `usb`, `later`.
    w: String,
    u: String,
    l: String,
}

/// Create, modify, rename, delete, a directory moved out, a new
/// subdirectory.
async fn operations(env: &Env, d: &Dirs) -> anyhow::Result<()> {
    let w = &d.w;
    // Create: hashed once nobody holds it open for writing.
    let report: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(d.watched.join("Q3 report.pdf"), &report)?;
    let e = one(env, req("create", "q3 report.pdf")).await?;
    let f = file(&e);
    let report_path = format!("{w}\\Q3 report.pdf");
    assert_eq!(f.path, report_path, "stored as Windows spells it");
    assert_eq!(f.sha256, sha(&report));
    assert_eq!(f.size, report.len() as u64);
    assert_eq!(
        (f.mechanism.as_str(), f.uid, f.removable),
        ("ReadDirectoryChangesW", -1, false)
    );
    assert_eq!(f.volume, "Z:\\");
    assert!(e.user.is_empty(), "the API does not tell who acted");
    assert_eq!(e.agent_id, "pc-wfiles");
    // Searchable in another case and with forward slashes.
    let other = report_path.replace('\\', "/").to_lowercase();
    let again = one(env, req("create", &other)).await?;
    assert_eq!(again.event_id, e.event_id);

    // A later write is a modify with the new content's hash.
    std::thread::sleep(Duration::from_millis(500));
    let mut notes = b"first\n".to_vec();
    std::fs::write(d.watched.join("notes.txt"), &notes)?;
    one(env, req("create", "notes.txt")).await?;
    notes.extend_from_slice(b"one more\n");
    std::fs::write(d.watched.join("notes.txt"), &notes)?;
    let e = one(env, req("modify", "notes.txt")).await?;
    assert_eq!(file(&e).sha256, sha(&notes));

    // Rename: one record with both paths, the content hashed.
    std::fs::rename(
        d.watched.join("notes.txt"),
        d.watched.join("notes-final.txt"),
    )?;
    let e = one(env, req("rename", "notes final")).await?;
    let f = file(&e);
    assert_eq!(f.old_path, format!("{w}\\notes.txt"));
    assert_eq!(f.path, format!("{w}\\notes-final.txt"));
    assert_eq!(f.sha256, sha(&notes));

    // Delete.
    std::fs::write(d.watched.join("old.txt"), b"old")?;
    one(env, req("create", "old.txt")).await?;
    std::fs::remove_file(d.watched.join("old.txt"))?;
    let e = one(env, req("delete", "old.txt")).await?;
    assert_eq!(file(&e).path, format!("{w}\\old.txt"));

    // A directory moved out of the tree takes its files with it: each
    // known file gets a delete, then the directory.
    let outside = env.path().join("outside");
    std::fs::create_dir_all(d.watched.join("project"))?;
    std::fs::write(d.watched.join("project").join("spec.txt"), b"spec")?;
    one(env, req("create", "project/spec.txt")).await?;
    std::fs::create_dir_all(&outside)?;
    std::fs::rename(d.watched.join("project"), outside.join("project"))?;
    let e = one(env, req("delete", "project/spec.txt")).await?;
    assert!(
        file(&e).detail.contains("moved away with its directory"),
        "{:?}",
        file(&e)
    );
    let dir_deletes = env
        .wait_for(req("delete", "watched/project"), 2, WAIT)
        .await?;
    assert!(
        dir_deletes.iter().any(
            |e| file(e).path == format!("{w}\\project") && file(e).detail.contains("directory")
        ),
        "{dir_deletes:#?}"
    );

    // A new subdirectory and a file in it (the watch is recursive).
    std::fs::create_dir_all(d.watched.join("sub"))?;
    std::fs::write(d.watched.join("sub").join("inner.txt"), b"inner")?;
    let e = one(env, req("create", "sub/inner.txt")).await?;
    assert_eq!(file(&e).path, format!("{w}\\sub\\inner.txt"));
    assert_eq!(file(&e).sha256, sha(b"inner"));

    Ok(())
}

/// A file a Windows program holds open for writing.
async fn held_open(env: &Env, wine: &Wine, d: &Dirs) -> anyhow::Result<()> {
    // A Windows program holding a file open for writing: hashed once,
    // after its close (the deny-write probe stands in for the close event
    // Windows does not have), not after the first quiet window.
    match holdopen(wine, env) {
        Ok(mut cmd) => {
            let held = d.watched.join("held.txt");
            let out = cmd.arg(win_path(&held)).arg("1500").output()?;
            anyhow::ensure!(
                out.status.success() && String::from_utf8_lossy(&out.stdout).contains("closed"),
                "holdopen.exe: {out:?}"
            );
            let e = one(env, req("create", "held.txt")).await?;
            assert_eq!(
                (file(&e).sha256.as_str(), file(&e).size),
                (sha(b"part1part2").as_str(), 10),
                "hashed after the close: {:?}",
                file(&e)
            );
            assert!(file(&e).coalesced >= 2, "{:?}", file(&e));
            tokio::time::sleep(Duration::from_secs(1)).await;
            let all = env.search_all(req("", "held.txt")).await?;
            assert_eq!(all.len(), 1, "one record for the held file: {all:#?}");
        }
        Err(why) => skip("windows_files held open for writing", &why),
    }

    Ok(())
}

/// Exclusions, a copy into the removable root, the alert on it.
async fn removable_copy(env: &Env, d: &Dirs) -> anyhow::Result<()> {
    let (w, u) = (&d.w, &d.u);
    // Excluded by Windows-style patterns, whatever the case.
    std::fs::write(d.watched.join("Draft.TMP"), b"temp")?;
    std::fs::create_dir_all(d.watched.join("cache"))?;
    std::fs::write(d.watched.join("cache").join("blob.bin"), b"cache")?;

    // A copy into the removable root: copy_to_removable, its source named.
    let source: Vec<u8> = b"confidential plan\n".repeat(1000);
    std::fs::write(d.watched.join("HR").join("plan.docx"), &source)?;
    one(env, req("create", "plan.docx")).await?;
    std::fs::copy(
        d.watched.join("HR").join("plan.docx"),
        d.usb.join("plan.docx"),
    )?;
    let e = one(env, req("copy_to_removable", "plan.docx")).await?;
    let f = file(&e);
    assert_eq!(f.path, format!("{u}\\plan.docx"));
    assert!(f.removable, "{f:?}");
    assert_eq!(f.sha256, sha(&source));
    assert_eq!(
        f.source_path,
        format!("{w}\\HR\\plan.docx"),
        "the copy names the file it came from"
    );
    assert_eq!(
        (f.volume.as_str(), f.device.as_str()),
        (u.as_str(), "removable root")
    );
    let copy_id = e.event_id.clone();
    // The sensitive_dir rule saw the content first under HR, then on the
    // removable root: one alert, for the copy.
    let deadline = Instant::now() + WAIT;
    let fired = loop {
        let out = env.cli(&["alerts", "--since", "1h", "--json"])?;
        let fired: Vec<serde_json::Value> = out
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|v: &serde_json::Value| v["rule"] == "hr-win")
            .collect();
        if !fired.is_empty() || Instant::now() > deadline {
            break fired;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(fired.len(), 1, "{fired:#?}");
    assert!(
        fired[0].to_string().contains(&copy_id),
        "the alert is the copy's: {:#}",
        fired[0]
    );

    // Nothing excluded was recorded (everything written before the copy
    // is in by now: records go out in order).
    let all = env.search_all(req("", "")).await?;
    for e in &all {
        let p = file(e).path.to_lowercase();
        assert!(
            !p.ends_with(".tmp") && !p.contains("\\cache"),
            "excluded but recorded: {:?}",
            file(e)
        );
    }

    Ok(())
}

/// The root missing at start.
async fn missing_root(env: &Env, d: &Dirs) -> anyhow::Result<()> {
    let l = &d.l;
    // The root that was missing: its gap, then its appearance (retried
    // every 5 s) closes it, and what was written into it is scanned.
    let e = one(env, req("watch_lost", "later")).await?;
    assert!(
        file(&e).detail.contains("cannot watch") && file(&e).detail.contains("every 5 s"),
        "{:?}",
        file(&e)
    );
    std::fs::create_dir_all(&d.later)?;
    std::fs::write(d.later.join("early.txt"), b"early")?;
    one(env, req("watch_restored", "later")).await?;
    let e = one(env, req("create", "later/early.txt")).await?;
    assert_eq!(file(&e).path, format!("{l}\\early.txt"));
    assert_eq!(file(&e).sha256, sha(b"early"));
    // And from then on it is watched.
    std::fs::write(d.later.join("after.txt"), b"after")?;
    let e = one(env, req("create", "later/after.txt")).await?;
    assert_eq!(file(&e).mechanism, "ReadDirectoryChangesW");

    Ok(())
}

/// `tests/wine/holdopen.c` built with mingw, as a command under Wine;
/// Err(why) when it cannot be built here.
fn holdopen(wine: &Wine, env: &Env) -> Result<std::process::Command, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("wine/holdopen.c");
    let exe = env.path().join("holdopen.exe");
    let out = std::process::Command::new("x86_64-w64-mingw32-gcc")
        .args(["-O1", "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .map_err(|e| {
            format!("x86_64-w64-mingw32-gcc: {e}: install Debian's gcc-mingw-w64-x86-64")
        })?;
    if !out.status.success() {
        return Err(format!(
            "building {}: {}",
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    wine.program(&exe)
        .map_err(|e| format!("{}: {e}", exe.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_file_operations_are_recorded_under_wine() -> anyhow::Result<()> {
    let wine = match Wine::get() {
        Ok(w) => w,
        Err(why) => {
            skip("windows_files", &why);
            return Ok(());
        }
    };
    let env = Env::new()?;
    let watched = env.path().join("watched");
    let usb = env.path().join("usb");
    for d in [&watched, &usb, &watched.join("HR")] {
        std::fs::create_dir_all(d)?;
    }
    let (w, u) = (win_path(&watched), win_path(&usb));
    // A root missing at start: a gap record, then watched when it appears.
    let later = env.path().join("later");
    let l = win_path(&later);
    // An alert rule written as a Windows path, in another case than the
    // directory's: it matches as Windows compares paths.
    let pattern = format!("{}\\hr\\**", w.to_uppercase());
    std::fs::write(
        env.path().join("rules.toml"),
        format!("[[rule]]\nname = \"hr-win\"\nkind = \"sensitive_dir\"\npaths = [{pattern:?}]\n"),
    )?;
    let _collector = env.start_collector_with("[alerts]\nrules = \"rules.toml\"\n")?;
    // Windows spellings: a backslash pattern, matched without case.
    let extra = format!(
        "[files]\nwatch = [{w:?}, {l:?}]\nexclude = [\"**\\\\*.tmp\", \"**\\\\Cache\\\\**\"]\ncoalesce_ms = 200\nremovable_roots = [{u:?}]\nremovable_auto = true\n"
    );
    let x = WinAgent {
        extra: &extra,
        ..Default::default()
    };
    let smtp = free_port();
    let mut agent =
        env.start_windows_agent_with(wine, "pc-wfiles", smtp, &Mode::CaptureOnly, &x)?;
    wait_log(&mut agent, "file capture watching", 1)?;
    // The drive letters were asked about (GetLogicalDrives, GetDriveTypeW,
    // GetVolumeInformationW under Wine); Wine has no removable drive to
    // find, the decisions are unit-tested (`windows/drives.rs`).
    let log = agent.log_text();
    let found = log
        .split("removable_drives=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_default()
        .to_owned();
    assert!(found.parse::<usize>().is_ok(), "drives not polled:\n{log}");

    let d = Dirs {
        watched: watched.clone(),
        usb,
        later,
        w: w.clone(),
        u,
        l,
    };
    operations(&env, &d).await?;
    held_open(&env, wine, &d).await?;
    removable_copy(&env, &d).await?;
    missing_root(&env, &d).await?;

    // Stopped gracefully; a file written meanwhile is found by the
    // catch-up scan at the next start.
    anyhow::ensure!(
        stop_windows(&mut agent, Duration::from_secs(30)),
        "the Windows agent did not stop on Ctrl+C:\n{}",
        agent.log_text()
    );
    let offline = b"written while the agent was down".to_vec();
    std::fs::write(watched.join("offline.txt"), &offline)?;
    std::fs::remove_file(watched.join("HR").join("plan.docx"))?;
    let mut agent =
        env.start_windows_agent_with(wine, "pc-wfiles", smtp, &Mode::CaptureOnly, &x)?;
    let e = one(&env, req("create", "offline.txt")).await?;
    let f = file(&e);
    assert_eq!(
        (f.mechanism.as_str(), f.sha256.as_str()),
        ("scan", sha(&offline).as_str())
    );
    assert_eq!(f.path, format!("{w}\\offline.txt"));
    let e = one(
        &env,
        SearchRequest {
            kind: "file".into(),
            operation: "delete".into(),
            path: "plan.docx".into(),
            ..Default::default()
        },
    )
    .await?;
    assert_eq!(file(&e).mechanism, "scan");
    anyhow::ensure!(
        stop_windows(&mut agent, Duration::from_secs(30)),
        "the Windows agent did not stop on Ctrl+C:\n{}",
        agent.log_text()
    );
    let log = agent.log_text();
    for bad in ["could not be decoded", "overflowed", "file capture failed"] {
        assert!(!log.contains(bad), "{bad:?} in the agent log:\n{log}");
    }
    Ok(())
}
