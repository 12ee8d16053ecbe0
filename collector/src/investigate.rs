//! Investigations over the index: `trace` (everywhere a content hash went,
//! oldest first) and the exfiltration report (files that left by mail or on
//! removable media over a time range). Pure functions of the index; the
//! Query service calls them on a blocking thread.
//!
//! Time is the *corrected* event time: the agent's clock minus its measured
//! offset when the offset is known, else the collector's receipt time.

use std::collections::{BTreeMap, HashSet};

use kiroku_proto::{
    Event, ExfilCount, ExfilFile, ExfilReport, ExfilReportRequest, Outcome, event::Kind,
};

use crate::alerts::rules::{accepted_recipients, real_attachments};
use crate::store::index::{EventIndex, IndexError};

/// Most index hits one investigation reads.
const SCAN_CAP: usize = 100_000;
/// Most files one exfiltration report lists (rows are small: no event is
/// loaded for them).
const ROW_CAP: usize = 1_000_000;
/// Default and largest `TraceRequest.limit`.
pub const TRACE_DEFAULT: usize = 1000;
pub const TRACE_MAX: usize = 10_000;
const DAY_MS: i64 = 86_400_000;

/// The event's time on the collector's clock.
pub fn event_time(e: &Event) -> i64 {
    if e.clock_offset_known {
        // Saturating: both come from the agent (see `corrected_ms`).
        e.observed_at_ms.saturating_sub(e.clock_offset_ms)
    } else if e.received_at_ms != 0 {
        e.received_at_ms
    } else {
        e.observed_at_ms
    }
}

/// Who did it: the desktop account, else the SMTP login, else the sender.
pub fn event_user(e: &Event) -> String {
    if !e.user.is_empty() {
        return e.user.clone();
    }
    match &e.kind {
        Some(Kind::Email(m)) if !m.auth_user.is_empty() => m.auth_user.clone(),
        Some(Kind::Email(m)) if !m.mail_from.is_empty() => m.mail_from.clone(),
        _ => "(unknown)".into(),
    }
}

fn host_of(e: &Event) -> String {
    e.host
        .as_ref()
        .map(|h| h.hostname.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| e.agent_id.clone())
}

/// Every event where `sha256` appears — attachment, raw message, file
/// content — plus copies whose `source_path` names a file that had this
/// content on the same agent (a copy whose own hash was skipped). Oldest
/// first; true when more than `limit` matched (the oldest are returned).
pub fn trace(
    index: &EventIndex,
    sha256: &str,
    limit: usize,
) -> Result<(Vec<Event>, bool), IndexError> {
    let (mut events, mut truncated) = index.by_hash(sha256, SCAN_CAP)?;
    let mut seen: HashSet<String> = events.iter().map(|e| e.event_id.clone()).collect();
    let mut sources: Vec<(String, String)> = Vec::new();
    for e in &events {
        if let Some(Kind::File(f)) = &e.kind
            && f.sha256 == sha256
        {
            for p in [&f.path, &f.old_path] {
                let key = (e.agent_id.clone(), p.clone());
                if !p.is_empty() && !sources.contains(&key) {
                    sources.push(key);
                }
            }
        }
    }
    for (agent, path) in sources.iter().take(1000) {
        let (linked, more) = index.by_source_path(path, SCAN_CAP)?;
        truncated |= more;
        for e in linked {
            if &e.agent_id == agent && seen.insert(e.event_id.clone()) {
                events.push(e);
            }
        }
    }
    events.sort_by(|a, b| (event_time(a), &a.event_id).cmp(&(event_time(b), &b.event_id)));
    if events.len() > limit {
        events.truncate(limit);
        truncated = true;
    }
    Ok((events, truncated))
}

/// `YYYY-MM-DD` of `ms` at `offset_min` from UTC.
pub fn day(ms: i64, offset_min: i32) -> String {
    let t = ms + i64::from(offset_min) * 60_000;
    let days = t.div_euclid(DAY_MS);
    time::Date::from_julian_day(2_440_588 + days as i32)
        .map(|d| d.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Did this mail leave? Delivered and captured mail did; `unknown` (the
/// agent crashed while the upstream decided) may have and is counted, since
/// an exfiltration report should not miss a file; rejected and aborted
/// transactions did not deliver anything.
fn mail_left(m: &kiroku_proto::EmailEvent) -> bool {
    let left = matches!(
        Outcome::try_from(m.outcome),
        Ok(Outcome::Delivered | Outcome::Captured | Outcome::Unknown)
    );
    left && accepted_recipients(m).next().is_some()
}

/// The files `e` sent out, as report rows without their `day` (which
/// depends on the reader's UTC offset): each attachment of a mail that
/// left, or a copy to removable media. A pure function of the event, so
/// the index can keep the rows beside it.
pub fn exfil_files(e: &Event) -> Vec<ExfilFile> {
    let base = || ExfilFile {
        user: event_user(e),
        host: host_of(e),
        event_id: e.event_id.clone(),
        at_ms: event_time(e),
        ..Default::default()
    };
    match &e.kind {
        Some(Kind::Email(m)) if mail_left(m) => {
            let to = accepted_recipients(m).collect::<Vec<_>>().join(", ");
            real_attachments(m)
                .map(|a| ExfilFile {
                    method: "mail".into(),
                    filename: a.filename.clone(),
                    sha256: a.sha256.clone(),
                    size: a.size,
                    destination: to.clone(),
                    ..base()
                })
                .collect()
        }
        Some(Kind::File(f)) if f.operation == "copy_to_removable" => vec![ExfilFile {
            method: "removable".into(),
            filename: f.path.clone(),
            sha256: f.sha256.clone(),
            size: f.size,
            destination: if f.volume_label.is_empty() {
                f.volume.clone()
            } else {
                format!("{} ({})", f.volume, f.volume_label)
            },
            ..base()
        }],
        _ => Vec::new(),
    }
}

/// Files that left in [from_ms, to_ms) by mail or on removable media.
pub fn exfil_report(index: &EventIndex, r: &ExfilReportRequest) -> Result<ExfilReport, String> {
    if r.to_ms <= r.from_ms {
        return Err(format!(
            "to_ms ({}) must be after from_ms ({})",
            r.to_ms, r.from_ms
        ));
    }
    if r.utc_offset_minutes.abs() > 14 * 60 {
        return Err(format!(
            "utc_offset_minutes {} is not a UTC offset (-840..=840)",
            r.utc_offset_minutes
        ));
    }
    // The index knows the agent's clock; a day's margin catches events whose
    // corrected time falls inside the range. The rows were computed by
    // `exfil_files` when the event was indexed.
    let (rows, more) = index
        .exfil_rows(
            r.from_ms.saturating_sub(DAY_MS),
            r.to_ms.saturating_add(DAY_MS),
            ROW_CAP,
        )
        .map_err(|e| e.to_string())?;
    if more {
        tracing::warn!(
            from_ms = r.from_ms,
            to_ms = r.to_ms,
            "exfil report: more than {ROW_CAP} files in range, the oldest are left out; narrow the range"
        );
    }
    let mut files = Vec::new();
    for mut f in rows {
        if f.at_ms < r.from_ms || f.at_ms >= r.to_ms {
            continue;
        }
        f.day = day(f.at_ms, r.utc_offset_minutes);
        files.push(f);
    }
    files.sort_by(|a, b| (a.at_ms, &a.event_id).cmp(&(b.at_ms, &b.event_id)));
    let count = |key: fn(&ExfilFile) -> &String| {
        let mut m: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
        for f in &files {
            let c = m.entry((key(f).clone(), f.method.clone())).or_default();
            c.0 += 1;
            c.1 += f.size;
        }
        m.into_iter()
            .map(|((key, method), (files, bytes))| ExfilCount {
                key,
                method,
                files,
                bytes,
            })
            .collect::<Vec<_>>()
    };
    Ok(ExfilReport {
        per_day: count(|f| &f.day),
        per_user: count(|f| &f.user),
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiroku_proto::{Attachment, EmailEvent, FileEvent, Recipient};

    #[test]
    fn days_in_an_offset() {
        assert_eq!(day(0, 0), "1970-01-01");
        assert_eq!(day(15 * 3_600_000, 540), "1970-01-02");
        assert_eq!(day(-1, 0), "1969-12-31");
    }

    fn ev(id: &str, at: i64, kind: Kind) -> Event {
        Event {
            event_id: id.into(),
            agent_id: "pc".into(),
            observed_at_ms: at,
            received_at_ms: at,
            user: "alice".into(),
            kind: Some(kind),
            ..Default::default()
        }
    }

    fn mail(outcome: Outcome, att: &str) -> Kind {
        Kind::Email(EmailEvent {
            outcome: outcome as i32,
            rcpt_to: vec![Recipient {
                address: "x@y.z".into(),
                reply_code: 250,
                ..Default::default()
            }],
            attachments: vec![Attachment {
                filename: "a.pdf".into(),
                size: 10,
                sha256: att.into(),
                ..Default::default()
            }],
            attachment_count: 1,
            ..Default::default()
        })
    }

    fn file(op: &str, path: &str, sha: &str, source: &str) -> Kind {
        Kind::File(FileEvent {
            operation: op.into(),
            path: path.into(),
            sha256: sha.into(),
            source_path: source.into(),
            size: 5,
            volume: "/media/usb".into(),
            ..Default::default()
        })
    }

    #[test]
    fn trace_and_report_over_an_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        let idx = EventIndex::open(dir.path()).expect("open");
        let h = "ab".repeat(32);
        let mut skewed = ev("pc/s/4", 10_000, file("rename", "/d/b", &h, ""));
        // The agent's clock runs 9 s fast: corrected, this is at t=1000.
        skewed.clock_offset_known = true;
        skewed.clock_offset_ms = 9_000;
        idx.add(&[
            ev("pc/s/1", 500, file("create", "/d/a", &h, "")),
            skewed,
            ev("pc/s/2", 2_000, mail(Outcome::Delivered, &h)),
            ev(
                "pc/s/3",
                3_000,
                file("copy_to_removable", "/media/usb/b", "", "/d/b"),
            ),
            ev("pc/s/5", 4_000, mail(Outcome::Rejected, &h)),
            ev(
                "pc/s/6",
                5_000,
                file("create", "/d/other", &"cd".repeat(32), ""),
            ),
        ])
        .expect("add");
        idx.commit().expect("commit");
        let (t, more) = trace(&idx, &h, 100).expect("trace");
        let ids: Vec<&str> = t.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids, ["pc/s/1", "pc/s/4", "pc/s/2", "pc/s/3", "pc/s/5"]);
        assert!(!more);
        let (t, more) = trace(&idx, &h, 2).expect("trace");
        assert_eq!((t.len(), more), (2, true));

        let rep = exfil_report(
            &idx,
            &ExfilReportRequest {
                from_ms: 0,
                to_ms: 10_000,
                utc_offset_minutes: 0,
            },
        )
        .expect("report");
        let got: Vec<(&str, &str)> = rep
            .files
            .iter()
            .map(|f| (f.event_id.as_str(), f.method.as_str()))
            .collect();
        assert_eq!(got, [("pc/s/2", "mail"), ("pc/s/3", "removable")]);
        assert_eq!(rep.per_day.len(), 2);
        assert_eq!(rep.per_user[0].key, "alice");
        assert!(
            exfil_report(
                &idx,
                &ExfilReportRequest {
                    from_ms: 5,
                    to_ms: 5,
                    utc_offset_minutes: 0
                }
            )
            .is_err()
        );
    }
}
