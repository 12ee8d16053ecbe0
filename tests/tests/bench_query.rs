//! The query benchmark's harness runs (issue 6): bulk load of a small data
//! directory through the collector's store code, a real collector on it,
//! every measured call answered. Not a timed test: figures come from
//! `scripts/bench-query.sh` and live in BENCHMARKS.md.

use std::process::Command;

use kiroku_tests::bin;

#[test]
fn query_bench_runs_on_a_tiny_load() {
    let dir = tempfile::Builder::new()
        .prefix("kiroku-bench-query-")
        .tempdir()
        .expect("tempdir");
    let data = dir.path().join("data");
    let out = Command::new(bin("kiroku-bench-query"))
        .arg("--data")
        .arg(&data)
        .args(["--mails", "2000", "--files", "20000", "--big-raw-mb", "1"])
        .args(["--queries", "20"])
        .output()
        .expect("run kiroku-bench-query");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kiroku-bench-query failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for figure in [
        "Search address + time range",
        "Search full text",
        "ExfilReport, 30 days",
        "GetRaw of the large message, no compression",
        "data dir on disk",
        "ExfilReport",
        "ExfilFiles (every file streamed), 30 days",
        "Aggregate, 30 days, by recipient-domain, top 20",
        "Aggregate, 30 days, by day in Asia/Tokyo",
        "kiroku stats --by recipient-domain --top 20 --from 30d (the CLI, end to end)",
    ] {
        assert!(stdout.contains(figure), "no {figure:?} in:\n{stdout}");
    }
    // A second run on the same directory resumes: nothing left to load.
    let again = Command::new(bin("kiroku-bench-query"))
        .arg("--data")
        .arg(&data)
        .args(["--mails", "2000", "--files", "20000", "--big-raw-mb", "1"])
        .args(["--queries", "5"])
        .output()
        .expect("run kiroku-bench-query again");
    assert!(
        again.status.success(),
        "second run failed:\n{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("22001 documents"),
        "the resumed load must not add documents:\n{}",
        String::from_utf8_lossy(&again.stdout)
    );
}
