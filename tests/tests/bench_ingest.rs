//! The ingest benchmark harness (issue 6) runs at its tiny size: every
//! section (simulated agents, a real agent's buffer drained, footprint,
//! attachment dedup, rsyslog when installed) completes and prints its
//! tables. Not a timed test: figures are only checked to be there.

use std::process::Command;
use std::time::{Duration, Instant};

use kiroku_tests::bin;

#[test]
fn bench_ingest_runs_at_tiny_size() {
    let started = Instant::now();
    let out = Command::new(bin("kiroku-bench-ingest"))
        .arg("--tiny")
        .output()
        .expect("running kiroku-bench-ingest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kiroku-bench-ingest --tiny failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for heading in [
        "### Ingest end to end",
        "### Storage per event kind",
        "### Ingest from a real agent's buffer",
        "### Agent footprint",
        "### One 1 MB attachment in 5 different mails",
        "### Reference shipper: rsyslog",
    ] {
        assert!(stdout.contains(heading), "no {heading:?} in:\n{stdout}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "the tiny run took {:?}",
        started.elapsed()
    );
}
