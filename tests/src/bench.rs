//! Small pieces the benchmark binaries share: latency samples and their
//! percentiles, and sizes in MB.

use std::time::Duration;

/// Latency samples in milliseconds.
pub struct Lat(pub Vec<f64>);

impl Lat {
    /// The `p` quantile (0..=1) by nearest rank; NaN without samples.
    pub fn pct(&self, p: f64) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return f64::NAN;
        }
        v[((v.len() - 1) as f64 * p).round() as usize]
    }

    /// "p50 …, p99 …, max … (n=…)".
    pub fn summary(&self) -> String {
        format!(
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (n={})",
            self.pct(0.5),
            self.pct(0.99),
            self.pct(1.0),
            self.0.len()
        )
    }
}

/// Milliseconds of `d`.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Bytes as MB with one decimal.
pub fn mb(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1e6)
}
