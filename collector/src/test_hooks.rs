//! Knobs that only the test suite may turn: a slowed index rebuild (so a
//! test can query, ingest and kill the collector in the middle of one).
//! They exist only in builds with the `test-hooks` Cargo feature, which
//! `scripts/test.sh` enables and `cargo build --release` never does (as in
//! `agent/src/test_hooks.rs`).
//!
//! Architecture invariant: without the feature, nothing here reads the
//! environment and no knob's name is even in the binary (`.ci/run` checks
//! the default build with `grep`). With it, `kiroku-collector --version`
//! says so and every knob that is set is logged as an error.

/// Whether this build honours test hooks (shown by `--version`).
pub const ENABLED: bool = cfg!(feature = "test-hooks");

/// The collector's version line: test builds say they are test builds.
pub const VERSION: &str = if ENABLED {
    concat!(
        env!("CARGO_PKG_VERSION"),
        " (test hooks compiled in: a test build, not for production)"
    )
} else {
    env!("CARGO_PKG_VERSION")
};

/// A pause after each batch of an index rebuild, whose batches are then
/// one event each (`KIROKU_TEST_REBUILD_DELAY_MS`); None in production
/// builds.
pub fn rebuild_delay() -> Option<std::time::Duration> {
    #[cfg(feature = "test-hooks")]
    {
        delay_knob(
            "KIROKU_TEST_REBUILD_DELAY_MS",
            "the index rebuild is slowed down",
        )
    }
    #[cfg(not(feature = "test-hooks"))]
    None
}

/// Analysis held back: the workers take nothing from the queue
/// (`KIROKU_TEST_ANALYSIS_PAUSED=1`), so a test can kill the collector
/// while mail waits for analysis; false in production builds.
pub fn analysis_paused() -> bool {
    #[cfg(feature = "test-hooks")]
    {
        const NAME: &str = "KIROKU_TEST_ANALYSIS_PAUSED";
        let on = std::env::var(NAME).is_ok_and(|v| v.trim() == "1");
        if on {
            tracing::error!(
                "TEST HOOK ACTIVE: {NAME} is set, analysis of stored mail is held back deliberately (test build only)"
            );
        }
        on
    }
    #[cfg(not(feature = "test-hooks"))]
    false
}

/// A panic in the analysis of a file whose name contains the value of
/// `KIROKU_TEST_ANALYSIS_PANIC`, so a test can check that a panic in one
/// mail's analysis is recorded and does not stop the queue; nothing in
/// production builds.
pub fn analysis_panic(name: &str) {
    #[cfg(feature = "test-hooks")]
    {
        const NAME: &str = "KIROKU_TEST_ANALYSIS_PANIC";
        if let Ok(v) = std::env::var(NAME)
            && !v.is_empty()
            && name.contains(v.as_str())
        {
            tracing::error!(
                "TEST HOOK ACTIVE: {NAME} is set, the analysis of {name:?} panics deliberately (test build only)"
            );
            panic!("test hook {NAME}: deliberate panic analysing {name:?}");
        }
    }
    #[cfg(not(feature = "test-hooks"))]
    let _ = name;
}

/// The analysis worker's next `n` index commits fail
/// (`KIROKU_TEST_FAIL_ANALYSIS_COMMITS=n`), so a test can check that a
/// failed batch loses no alert; false in production builds.
pub fn fail_analysis_commit() -> bool {
    #[cfg(feature = "test-hooks")]
    {
        use std::sync::atomic::{AtomicI64, Ordering};
        const NAME: &str = "KIROKU_TEST_FAIL_ANALYSIS_COMMITS";
        // -1: not read from the environment yet.
        static LEFT: AtomicI64 = AtomicI64::new(-1);
        if LEFT.load(Ordering::SeqCst) < 0 {
            let n: i64 = std::env::var(NAME)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let _ = LEFT.compare_exchange(-1, n.max(0), Ordering::SeqCst, Ordering::SeqCst);
        }
        let failed = LEFT
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n > 0).then(|| n - 1)
            })
            .is_ok();
        if failed {
            tracing::error!(
                "TEST HOOK ACTIVE: {NAME} is set, this analysis index commit fails deliberately (test build only)"
            );
        }
        failed
    }
    #[cfg(not(feature = "test-hooks"))]
    false
}

/// A slowed maintenance run: batches of two journal entries, each followed
/// by this pause (`KIROKU_TEST_MAINTENANCE_DELAY_MS`), so a test can stop,
/// kill or outlast a run in its middle; None in production builds.
pub fn maintenance_batch_delay() -> Option<std::time::Duration> {
    #[cfg(feature = "test-hooks")]
    {
        delay_knob(
            "KIROKU_TEST_MAINTENANCE_DELAY_MS",
            "maintenance runs are slowed down",
        )
    }
    #[cfg(not(feature = "test-hooks"))]
    None
}

/// A pause in milliseconds from the environment variable `name` (0 or
/// unset: none), logged as an active test hook; `what` says what it slows.
#[cfg(feature = "test-hooks")]
fn delay_knob(name: &str, what: &str) -> Option<std::time::Duration> {
    let ms: u64 = std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    if ms == 0 {
        return None;
    }
    tracing::error!(
        delay_ms = ms,
        "TEST HOOK ACTIVE: {name} is set, {what} deliberately (test build only)"
    );
    Some(std::time::Duration::from_millis(ms))
}

/// The validity of agent certificates issued by enrollment and renewal,
/// in seconds instead of `[enroll] agent_cert_days`
/// (`KIROKU_TEST_AGENT_CERT_SECS`, issue 22: renewal tested in seconds);
/// None in production builds.
pub fn agent_cert_secs() -> Option<u64> {
    #[cfg(feature = "test-hooks")]
    {
        const NAME: &str = "KIROKU_TEST_AGENT_CERT_SECS";
        let secs: u64 = std::env::var(NAME).ok()?.trim().parse().ok()?;
        tracing::error!(
            secs,
            "TEST HOOK ACTIVE: {NAME} is set, agent certificates are issued valid for seconds (test build only)"
        );
        Some(secs.max(1))
    }
    #[cfg(not(feature = "test-hooks"))]
    None
}
