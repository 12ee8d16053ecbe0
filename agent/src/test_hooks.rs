//! Knobs that only the test suite may turn: a clock that is deliberately
//! wrong (clock offset detection) and a pause of file capture's kernel
//! reads (queue overflow). An audit product must not let anyone fake its
//! clock or blind its capture through the environment, so the knobs exist
//! only in builds with the `test-hooks` Cargo feature, which
//! `scripts/test.sh` enables and `cargo build --release` never does.
//!
//! Architecture invariant: without the feature, nothing here reads the
//! environment and no knob's name is even in the binary (`.ci/run` checks
//! the default build with `grep`). With it, `kiroku-agent --version` says
//! so and every knob that is set is logged as an error at start.

/// Whether this build honours test hooks (shown by `--version`).
pub const ENABLED: bool = cfg!(feature = "test-hooks");

/// The agent's version line: test builds say they are test builds.
pub const VERSION: &str = if ENABLED {
    concat!(
        env!("CARGO_PKG_VERSION"),
        " (test hooks compiled in: a test build, not for production)"
    )
} else {
    env!("CARGO_PKG_VERSION")
};

/// Milliseconds added to the agent's clock (`KIROKU_TEST_CLOCK_SKEW_MS`,
/// may be negative); 0 in production builds.
pub fn clock_skew_ms() -> i64 {
    #[cfg(feature = "test-hooks")]
    {
        const NAME: &str = "KIROKU_TEST_CLOCK_SKEW_MS";
        let skew: i64 = std::env::var(NAME)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if skew != 0 {
            tracing::error!(
                skew_ms = skew,
                "TEST HOOK ACTIVE: {NAME} is set, this agent's clock is deliberately wrong (test build only)"
            );
        }
        skew
    }
    #[cfg(not(feature = "test-hooks"))]
    0
}

/// A file whose existence pauses file capture's kernel reads
/// (`KIROKU_TEST_FILES_PAUSE`, so tests can overflow the kernel queue
/// without changing system settings); None in production builds.
pub fn files_pause() -> Option<std::path::PathBuf> {
    #[cfg(feature = "test-hooks")]
    {
        const NAME: &str = "KIROKU_TEST_FILES_PAUSE";
        let pause = std::env::var_os(NAME).map(std::path::PathBuf::from);
        if let Some(p) = &pause {
            tracing::error!(
                pause_file = %p.display(),
                "TEST HOOK ACTIVE: {NAME} is set, file capture stops reading kernel events while that file exists (test build only)"
            );
        }
        pause
    }
    #[cfg(not(feature = "test-hooks"))]
    None
}

/// How often the certificate renewal task looks at the certificate
/// (`KIROKU_TEST_RENEW_CHECK_MS`, issue 22: a test issues certificates
/// valid for seconds); None in production builds (hourly).
pub fn renew_check_every() -> Option<std::time::Duration> {
    #[cfg(feature = "test-hooks")]
    {
        const NAME: &str = "KIROKU_TEST_RENEW_CHECK_MS";
        let ms: u64 = std::env::var(NAME).ok()?.trim().parse().ok()?;
        tracing::error!(
            check_ms = ms,
            "TEST HOOK ACTIVE: {NAME} is set, certificate renewal is checked unusually often (test build only)"
        );
        Some(std::time::Duration::from_millis(ms.max(100)))
    }
    #[cfg(not(feature = "test-hooks"))]
    None
}
