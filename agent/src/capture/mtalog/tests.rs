//! Followers against a real buffer and real files: every line recorded
//! once, in order, across rotation by rename and by copytruncate, a file
//! that appears late, and a stop and restart.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiroku_proto::{HostIdentity, MtaLogEvent, event::Kind};

use super::{Format, MtaLogCapture, MtaLogConfig, StartAt};
use crate::buffer::Buffer;
use crate::capture::context::{CaptureContext, Clock};

fn ctx() -> Arc<CaptureContext> {
    CaptureContext::new(
        "a".into(),
        HostIdentity::default(),
        "me".into(),
        BTreeMap::new(),
        Clock::default(),
    )
}

fn cfg(path: &Path, start_at: StartAt) -> MtaLogConfig {
    MtaLogConfig {
        path: path.to_owned(),
        format: Format::Postfix,
        start_at,
    }
}

fn records(b: &Buffer) -> Vec<MtaLogEvent> {
    b.read_batch(0, 1_000_000, usize::MAX)
        .expect("read")
        .into_iter()
        .filter_map(|e| match e.kind {
            Some(Kind::MtaLog(m)) => Some(m),
            _ => None,
        })
        .collect()
}

/// Waits until the buffer holds `n` MTA log records.
async fn wait_for(b: &Buffer, n: usize) -> Vec<MtaLogEvent> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = records(b);
        if r.len() >= n || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn line(i: usize) -> String {
    format!("Dec  6 07:14:50 mx postfix/qmgr[9]: 3A1B2C{i:04X}: removed\n")
}

fn append(path: &Path, from: usize, to: usize) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log");
    for i in from..to {
        f.write_all(line(i).as_bytes()).expect("write");
    }
}

fn lines_of(r: &[MtaLogEvent]) -> Vec<String> {
    r.iter().map(|m| format!("{}\n", m.line)).collect()
}

fn expected(n: usize) -> Vec<String> {
    (0..n).map(line).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_truncation_and_restart_lose_and_repeat_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("maillog");
    let buf_dir = dir.path().join("buf");
    // The file does not exist yet: it is waited for, then read from its start.
    let b = Buffer::open(&buf_dir, u64::MAX, 1 << 20).expect("open");
    let cap = MtaLogCapture::start(&[cfg(&log, StartAt::End)], b.clone(), ctx()).expect("start");
    tokio::time::sleep(Duration::from_millis(300)).await;
    append(&log, 0, 1000);
    assert_eq!(lines_of(&wait_for(&b, 1000).await), expected(1000));
    // Rotation by rename: lines written to the old file after the rename
    // are read before the new file's.
    std::fs::rename(&log, dir.path().join("maillog.1")).expect("rename");
    append(&dir.path().join("maillog.1"), 1000, 1010);
    append(&log, 1010, 1020);
    assert_eq!(lines_of(&wait_for(&b, 1020).await), expected(1020));
    // Copytruncate.
    std::fs::copy(&log, dir.path().join("maillog.2")).expect("copy");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .expect("open")
        .set_len(0)
        .expect("truncate");
    tokio::time::sleep(Duration::from_millis(500)).await;
    append(&log, 1020, 1030);
    assert_eq!(lines_of(&wait_for(&b, 1030).await), expected(1030));
    // A partial line waits for its newline.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .expect("open")
        .write_all(b"Dec  6 07:14:50 mx postfix/qmgr[9]: 3A1B2C")
        .expect("write");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(records(&b).len(), 1030);
    // Stop; lines appended and a rotation while stopped; restart.
    cap.stop().await;
    let rest = line(1030);
    let rest = &rest["Dec  6 07:14:50 mx postfix/qmgr[9]: 3A1B2C".len()..];
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .expect("open")
        .write_all(rest.as_bytes())
        .expect("write");
    append(&log, 1031, 1040);
    std::fs::rename(&log, dir.path().join("maillog.3")).expect("rename");
    append(&log, 1040, 1050);
    drop(b);
    let b = Buffer::open(&buf_dir, u64::MAX, 1 << 20).expect("reopen");
    let cap = MtaLogCapture::start(&[cfg(&log, StartAt::End)], b.clone(), ctx()).expect("start");
    let got = wait_for(&b, 1050).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(lines_of(&records(&b)), expected(1050));
    // Offsets are those of the lines in their files; all parsed.
    assert!(got.iter().all(|m| m.parsed && m.action == "removed"));
    assert_eq!(got[1].offset, line(0).len() as u64);
    assert_eq!(got[1010].offset, 0, "first line of the new file");
    assert_eq!(cap.counts()[0].1, 20, "lines recorded since the restart");
    cap.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_at_end_skips_history_and_unparsed_lines_are_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("mail.log");
    append(&log, 0, 5);
    let b = Buffer::open(&dir.path().join("buf"), u64::MAX, 1 << 20).expect("open");
    let cap = MtaLogCapture::start(&[cfg(&log, StartAt::End)], b.clone(), ctx()).expect("start");
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .expect("open")
        .write_all(b"not a postfix line\r\n\xff\xfe\n")
        .expect("write");
    let got = wait_for(&b, 2).await;
    assert_eq!(got.len(), 2);
    assert!(!got[0].parsed && !got[1].parsed);
    assert_eq!(got[0].line, "not a postfix line");
    assert_eq!(got[1].line, "\u{fffd}\u{fffd}");
    assert_eq!(got[0].log_path, log.display().to_string());
    assert_eq!(cap.counts()[0].2, 2);
    cap.stop().await;
}
