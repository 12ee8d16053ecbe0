//! The collector's clock for retention and the maintenance window: the
//! system clock, and nothing else in a production build.
//!
//! Retention is the one place where the collector's idea of "now" deletes
//! evidence, so an audit product must not ship a way to move it. Test
//! builds (Cargo feature `test-hooks`, enabled only by `scripts/test.sh`)
//! add an offset read from the file named by `KIROKU_TEST_CLOCK_FILE`
//! (milliseconds, may be negative; re-read at most every 200 ms, so a test
//! advances the clock of a running collector by rewriting the file). The
//! knob's name is not in a production binary (`.ci/run` greps for it).

/// Milliseconds since the Unix epoch, as retention and maintenance see them.
pub fn now_ms() -> i64 {
    system_ms().saturating_add(offset_ms())
}

fn system_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The test offset (0 in production builds).
#[cfg(not(feature = "test-hooks"))]
fn offset_ms() -> i64 {
    0
}

#[cfg(feature = "test-hooks")]
fn offset_ms() -> i64 {
    use std::sync::Mutex;
    use std::time::{Duration, Instant};
    const NAME: &str = "KIROKU_TEST_CLOCK_FILE";
    static CACHE: Mutex<Option<(Instant, i64)>> = Mutex::new(None);
    let Ok(path) = std::env::var(NAME) else {
        return 0;
    };
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((at, v)) = *cache
        && at.elapsed() < Duration::from_millis(200)
    {
        return v;
    }
    let v = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or(0);
    if cache.map(|(_, old)| old) != Some(v) && v != 0 {
        tracing::error!(
            offset_ms = v,
            file = %path,
            "TEST HOOK ACTIVE: {NAME} moves the retention clock (test build only)"
        );
    }
    *cache = Some((Instant::now(), v));
    v
}
