//! `kiroku-collector reanalyse --from … --to …`: applies the current
//! analysis [`VERSION`](super::VERSION) to mail already stored.
//!
//! The collector must be stopped (its meta store is locked while it
//! runs). Every mail in the journal whose corrected time is in the range
//! and whose annotations are missing or of an older version is put on the
//! analysis queue (made durable at once), then the worker pool works the
//! queue off with a progress bar. Interrupted, it is resumable twice over:
//! what is still queued is analysed by the collector at its next start or
//! by the next `reanalyse`, and a mail already brought up to date is not
//! analysed again. Alert rules are not evaluated on old mail (they fired
//! or not when it arrived).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use kiroku_common::mail::corrected_ms;

use super::{AnalysisConfig, Limits, wanted};
use crate::alerts::{Alerting, RuleSet};
use crate::store::{Store, journal};

/// What a run did.
#[derive(Debug, Default, PartialEq)]
pub struct Report {
    /// Mail in the range.
    pub in_range: u64,
    /// Of those, already analysed by this version.
    pub up_to_date: u64,
    /// Queued and worked off by this run.
    pub analysed: u64,
}

/// Reanalyses the mail of `[from_ms, to_ms)` in the data directory `dir`:
/// mail not analysed by the current version, or whose analysis something
/// outside the mail cut short (`Annotations.retry`: a reader's timeout, an
/// I/O error); with `force`, every mail, and every file read again (the
/// per-file cache is not used).
pub fn run(
    dir: &Path,
    cfg: &AnalysisConfig,
    from_ms: i64,
    to_ms: i64,
    quiet: bool,
    force: bool,
) -> anyhow::Result<Report> {
    let mut limits = Limits::from_config(cfg);
    limits.fresh = force;
    limits.redo_retry = true;
    let store = Arc::new(Store::open(dir).context("opening the data directory")?);
    let mut report = Report::default();
    let mut seen = HashSet::new();
    let mut stale = Vec::new();
    let mut failed = None;
    journal::scan(store.journal.dir(), |e| {
        if failed.is_some() || !wanted(&e) {
            return;
        }
        let t = corrected_ms(&e);
        if t < from_ms || t >= to_ms || !seen.insert(e.event_id.clone()) {
            return;
        }
        report.in_range += 1;
        match store.analysis.annotations(&e.event_id) {
            Ok(Some(a)) if !limits.redo(&a) => report.up_to_date += 1,
            Ok(_) => stale.push(e.event_id),
            Err(err) => failed = Some(err),
        }
    })
    .context("reading the journal")?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    store.analysis.enqueue(stale.iter().map(String::as_str))?;
    store.meta.flush()?;
    report.analysed = stale.len() as u64;
    store
        .audit_admin(
            &crate::store::audit::local_identity(),
            crate::store::audit::admin_call::REANALYSE,
            &format!(
                "reanalyse [{}, {}){}: {} mails in the range, {} queued",
                if from_ms == i64::MIN {
                    "the first mail".to_owned()
                } else {
                    kiroku_common::rfc3339_ms(from_ms)
                },
                kiroku_common::rfc3339_ms(to_ms),
                if force { " --force" } else { "" },
                report.in_range,
                report.analysed
            ),
        )
        .context("recording the reanalysis in the audit log")?;
    let total = store.analysis.pending() as u64;
    let pb = if quiet {
        ProgressBar::hidden()
    } else {
        let pb = ProgressBar::new(total);
        if let Ok(style) =
            ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} mails ({eta})")
        {
            pb.set_style(style.progress_chars("=> "));
        }
        pb.set_message("reanalysing");
        pb
    };
    // No rules: old mail is not alerted on again.
    let alerting = Arc::new(Alerting::new(
        &store.meta,
        RuleSet::default(),
        Vec::new(),
        10_000,
    )?);
    let workers =
        super::worker::Workers::start(store.clone(), alerting, limits, cfg.worker_count())?;
    loop {
        let pending = store.analysis.pending() as u64;
        pb.set_position(total.saturating_sub(pending));
        if pending == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    workers.stop();
    pb.finish_and_clear();
    Ok(report)
}

/// A time given on the command line: RFC 3339 (`2026-12-01T09:00:00+09:00`)
/// or a date (`2026-12-01`, midnight UTC).
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t.as_millisecond());
    }
    if let Ok(d) = s.parse::<jiff::civil::Date>() {
        return d
            .to_zoned(jiff::tz::TimeZone::UTC)
            .map(|z| z.timestamp().as_millisecond())
            .map_err(|e| format!("{s:?}: {e}"));
    }
    Err(format!(
        "{s:?} is not a time: give an RFC 3339 time (2026-12-01T09:00:00+09:00) or a date (2026-12-01, UTC)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("1970-01-02"), Ok(86_400_000));
        assert_eq!(parse_time("1970-01-01T09:00:00+09:00"), Ok(0));
        assert!(parse_time("yesterday").is_err());
    }
}
