//! Investigations over the index: `trace` (everywhere a content hash went,
//! oldest first) and the exfiltration report (files that left by mail or on
//! removable media over a time range). Pure functions of the index; the
//! Query service calls them on a blocking thread.
//!
//! Time is the *corrected* event time, `kiroku_common::mail::corrected_ms`
//! (the same as the index orders a search by).

use kiroku_common::vocabulary::file_op;
use std::collections::{HashMap, HashSet};

use kiroku_proto::{
    Event, ExfilCount, ExfilFile, ExfilReport, ExfilReportRequest, Outcome, event::Kind,
};

use kiroku_common::mail::{accepted_recipients, corrected_ms, event_user, real_attachments};
use kiroku_common::zone::{self, Days, day_name};

use crate::store::index::{
    EventIndex, ExfilEvent, ExfilFilter, ExfilScan, IndexError, check_exfil,
};

/// Most index hits one investigation reads.
const SCAN_CAP: usize = 100_000;
/// Default and largest `TraceRequest.limit`.
pub const TRACE_DEFAULT: usize = 1000;
pub const TRACE_MAX: usize = 10_000;
/// Default and largest `ExfilReportRequest.max_files`: a report is read by
/// a person; every file is exported through the ExfilFiles stream.
pub const EXFIL_FILES_DEFAULT: usize = 1000;
pub const EXFIL_FILES_MAX: usize = 10_000;
/// Events whose files make one ExfilFiles message (a few hundred KB).
pub const EXFIL_BATCH: usize = 2000;

#[derive(Debug, thiserror::Error)]
pub enum ExfilError {
    /// The request cannot be answered as asked; the message says why.
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Index(#[from] IndexError),
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
    events.sort_by(|a, b| (corrected_ms(a), &a.event_id).cmp(&(corrected_ms(b), &b.event_id)));
    if events.len() > limit {
        events.truncate(limit);
        truncated = true;
    }
    Ok((events, truncated))
}

/// `YYYY-MM-DD` of `ms` at `offset_min` from UTC.
pub fn day(ms: i64, offset_min: i32) -> String {
    day_name(Days::fixed(offset_min).day(ms))
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
        at_ms: corrected_ms(e),
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
        Some(Kind::File(f)) if f.operation == file_op::COPY_TO_REMOVABLE => vec![ExfilFile {
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

/// The methods (channels) files leave by.
pub const EXFIL_METHODS: [&str; 2] = ["mail", "removable"];

/// How a request cuts days: in its IANA `time_zone`, else at its
/// `utc_offset_minutes`. Both set is ambiguous and refused.
pub fn exfil_days(r: &ExfilReportRequest) -> Result<Days, ExfilError> {
    // unsigned_abs: i32::MIN has no positive counterpart (an overflow).
    if r.utc_offset_minutes.unsigned_abs() > 14 * 60 {
        return Err(ExfilError::BadRequest(format!(
            "utc_offset_minutes {} is not a UTC offset (-840..=840)",
            r.utc_offset_minutes
        )));
    }
    if r.time_zone.trim().is_empty() {
        return Ok(Days::fixed(r.utc_offset_minutes));
    }
    if r.utc_offset_minutes != 0 {
        return Err(ExfilError::BadRequest(format!(
            "both time_zone {} and utc_offset_minutes {} are set: send one",
            kiroku_common::quote::quote(&r.time_zone),
            r.utc_offset_minutes
        )));
    }
    zone::lookup(&r.time_zone)
        .map(Days::new)
        .map_err(|e| ExfilError::BadRequest(format!("time_zone: {e}")))
}

/// The events whose files left in [from_ms, to_ms) by mail or on
/// removable media and match the request's method, user and host, the
/// request checked. What the report and the ExfilFiles stream read;
/// `files_total` of a scan says how many files.
pub fn exfil_scan(index: &EventIndex, r: &ExfilReportRequest) -> Result<ExfilScan, ExfilError> {
    // A bound exceeded is the caller's mistake, like any other bad field.
    check_exfil(r).map_err(|e| ExfilError::BadRequest(e.to_string()))?;
    if r.to_ms <= r.from_ms {
        return Err(ExfilError::BadRequest(format!(
            "to_ms ({}) must be after from_ms ({})",
            r.to_ms, r.from_ms
        )));
    }
    exfil_days(r)?;
    let method = r.method.trim().to_lowercase();
    if !method.is_empty() && !EXFIL_METHODS.contains(&method.as_str()) {
        return Err(ExfilError::BadRequest(format!(
            "unknown method {}: use {}",
            kiroku_common::quote::quote(&r.method),
            EXFIL_METHODS.join(" or ")
        )));
    }
    let filter = ExfilFilter {
        method,
        user: r.user.clone(),
        host: r.host.clone(),
    };
    let recipients = match r.recipients.trim().to_lowercase().as_str() {
        "" => None,
        "external" => Some(true),
        "internal" => Some(false),
        other => {
            return Err(ExfilError::BadRequest(format!(
                "recipients {} is not internal or external",
                kiroku_common::quote::quote(other)
            )));
        }
    };
    // A filter the collector cannot apply (no internal_domains set) is the
    // request's fault, not the index's.
    index
        .exfil_scan(r.from_ms, r.to_ms, &filter, recipients)
        .map_err(|e| match e {
            IndexError::BadQuery { message, .. } => {
                ExfilError::BadRequest(format!("recipients: {message}"))
            }
            e => ExfilError::Index(e),
        })
}

/// Files the events of a scan sent.
pub fn files_total(events: &[ExfilEvent]) -> u64 {
    events.iter().map(|e| e.files).sum()
}

/// Files that left in [from_ms, to_ms) by mail or on removable media:
/// totals per day and per user over all of them (users by volume, cut to
/// `top_users`), and the newest `max_files` (default
/// [`EXFIL_FILES_DEFAULT`]) listed oldest first.
pub fn exfil_report(index: &EventIndex, r: &ExfilReportRequest) -> Result<ExfilReport, ExfilError> {
    let mut scan = exfil_scan(index, r)?;
    let mut days = exfil_days(r)?;
    let max = match r.max_files {
        0 => EXFIL_FILES_DEFAULT,
        n => (n as usize).min(EXFIL_FILES_MAX),
    };
    let mut events = std::mem::take(&mut scan.events);
    let (per_day, mut per_user) = totals(&scan, &events, &mut days);
    let users_total = by_volume(&mut per_user, r.top_users);
    let files_total = files_total(&events);
    // Every event sent at least one file: the newest `max` events hold the
    // newest `max` files.
    let newest = match events.len().checked_sub(max) {
        Some(cut) if cut > 0 => {
            events.select_nth_unstable_by_key(cut, ExfilEvent::time_order);
            &events[cut..]
        }
        _ => &events[..],
    };
    let mut files = scan.rows(newest)?;
    in_time_order(&mut files, &mut days);
    if files.len() > max {
        files.drain(..files.len() - max);
    }
    Ok(ExfilReport {
        per_day,
        per_user,
        files_truncated: (files.len() as u64) < files_total,
        files_total,
        files,
        users_total,
    })
}

/// Orders per-user counts by the user's volume over every method (most
/// files, then most bytes, then name), each user's methods by name, and
/// keeps the first `top` users (0: all). Returns how many users there were.
fn by_volume(per_user: &mut Vec<ExfilCount>, top: u32) -> u64 {
    let mut volume: HashMap<String, (u64, u64)> = HashMap::new();
    for c in per_user.iter() {
        let v = volume.entry(c.key.clone()).or_default();
        v.0 += c.files;
        v.1 = v.1.saturating_add(c.bytes);
    }
    let users = volume.len();
    per_user.sort_by(|a, b| {
        let (va, vb) = (volume[&a.key], volume[&b.key]);
        (vb.0, vb.1)
            .cmp(&(va.0, va.1))
            .then_with(|| a.key.cmp(&b.key))
            .then_with(|| a.method.cmp(&b.method))
    });
    if top > 0 && (top as usize) < users {
        let mut kept = 0;
        let mut last: Option<&str> = None;
        let cut = per_user
            .iter()
            .position(|c| {
                if last != Some(c.key.as_str()) {
                    kept += 1;
                    last = Some(c.key.as_str());
                }
                kept > top as usize
            })
            .unwrap_or(per_user.len());
        per_user.truncate(cut);
    }
    users as u64
}

/// Every file of a scan, oldest first, handed to `send` about
/// [`EXFIL_BATCH`] events' files at a time until it returns false.
pub fn each_exfil_batch(
    mut scan: ExfilScan,
    mut days: Days,
    mut send: impl FnMut(Vec<ExfilFile>) -> bool,
) -> Result<(), IndexError> {
    let mut events = std::mem::take(&mut scan.events);
    // A batch is a time window: within a segment its rows are consecutive
    // dictionary terms (see `store/index/exfil.rs`).
    events.sort_unstable_by_key(ExfilEvent::time_order);
    for batch in events.chunks(EXFIL_BATCH) {
        let mut files = scan.rows(batch)?;
        in_time_order(&mut files, &mut days);
        if !send(files) {
            break;
        }
    }
    Ok(())
}

/// Sets each file's day and sorts them by time.
fn in_time_order(files: &mut [ExfilFile], days: &mut Days) {
    for f in files.iter_mut() {
        f.day = day_name(days.day(f.at_ms));
    }
    files.sort_by(|a, b| (a.at_ms, &a.event_id).cmp(&(b.at_ms, &b.event_id)));
}

/// (per day, per user) counts of files and bytes by channel, sorted by
/// key then channel.
fn totals(
    scan: &ExfilScan,
    events: &[ExfilEvent],
    days_of: &mut Days,
) -> (Vec<ExfilCount>, Vec<ExfilCount>) {
    let mut days: HashMap<(i64, u32), (u64, u64)> = HashMap::new();
    let mut users: HashMap<(u32, u32), (u64, u64)> = HashMap::new();
    for e in events {
        let day = days_of.day(e.at_ms);
        for c in [
            days.entry((day, e.method)).or_default(),
            users.entry((e.user, e.method)).or_default(),
        ] {
            c.0 += e.files;
            c.1 = c.1.saturating_add(e.bytes);
        }
    }
    let counts = |rows: Vec<(String, u32, (u64, u64))>| {
        let mut out: Vec<ExfilCount> = rows
            .into_iter()
            .map(|(key, method, (files, bytes))| ExfilCount {
                key,
                method: scan.name(method).to_owned(),
                files,
                bytes,
            })
            .collect();
        out.sort_by(|a, b| (&a.key, &a.method).cmp(&(&b.key, &b.method)));
        out
    };
    (
        counts(
            days.into_iter()
                .map(|((d, m), c)| (day_name(d), m, c))
                .collect(),
        ),
        counts(
            users
                .into_iter()
                .map(|((u, m), c)| (scan.name(u).to_owned(), m, c))
                .collect(),
        ),
    )
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
                ..Default::default()
            },
        )
        .expect("report");
        assert_eq!((rep.files_total, rep.files_truncated), (2, false));
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
                    ..Default::default()
                }
            )
            .is_err()
        );
    }

    /// A mail at `at` with `n` attachments of 10 bytes each.
    fn mail_with(n: usize) -> Kind {
        let Kind::Email(mut m) = mail(Outcome::Delivered, "") else {
            unreachable!()
        };
        m.attachments = (0..n)
            .map(|i| Attachment {
                filename: format!("f{i}.pdf"),
                size: 10,
                sha256: format!("{i:064x}"),
                ..Default::default()
            })
            .collect();
        m.attachment_count = n as u32;
        Kind::Email(m)
    }

    /// Five mails of two files (t = 1..=5 h), three copies to removable
    /// media (t = 1.5, 2.5, 3.5 h) by bob, in two segments, one event
    /// indexed twice (the first copy deleted), and a rejected mail.
    fn report_index() -> (tempfile::TempDir, EventIndex) {
        let dir = tempfile::tempdir().expect("tempdir");
        let idx = EventIndex::open(dir.path()).expect("open");
        const H: i64 = 3_600_000;
        let mails: Vec<Event> = (1..=5)
            .map(|i| ev(&format!("pc/m/{i}"), i * H, mail_with(2)))
            .collect();
        let copies: Vec<Event> = (1..=3)
            .map(|i| {
                let mut e = ev(
                    &format!("pc/c/{i}"),
                    i * H + H / 2,
                    file("copy_to_removable", &format!("/media/usb/{i}"), "", ""),
                );
                e.user = "bob".into();
                e
            })
            .collect();
        idx.add(&mails[..3]).expect("add");
        idx.add(&copies).expect("add");
        idx.commit().expect("commit");
        idx.add(&mails[2..]).expect("add");
        idx.add(&[ev("pc/m/9", 4 * H, mail(Outcome::Rejected, "ab"))])
            .expect("add");
        idx.commit().expect("commit");
        (dir, idx)
    }

    fn ids(files: &[ExfilFile]) -> Vec<String> {
        files
            .iter()
            .map(|f| format!("{}:{}", f.event_id, f.filename))
            .collect()
    }

    #[test]
    fn the_report_lists_the_newest_files_and_counts_them_all() {
        let (_dir, idx) = report_index();
        let every = ids(&exfil_report(
            &idx,
            &ExfilReportRequest {
                from_ms: 0,
                to_ms: 10 * 3_600_000,
                max_files: 100,
                ..Default::default()
            },
        )
        .expect("report")
        .files);
        assert_eq!(every.len(), 13, "{every:?}");
        assert_eq!(every[0], "pc/m/1:f0.pdf");
        assert_eq!(every[2], "pc/c/1:/media/usb/1");
        // (max_files, files listed: the newest, oldest first)
        for (max, want) in [
            (0, 13),
            (1, 1),
            (4, 4),
            (5, 5),
            // The oldest listed is the second file of a mail.
            (6, 6),
            (13, 13),
            (20_000, 13),
        ] {
            let rep = exfil_report(
                &idx,
                &ExfilReportRequest {
                    from_ms: 0,
                    to_ms: 10 * 3_600_000,
                    utc_offset_minutes: 540,
                    max_files: max,
                    ..Default::default()
                },
            )
            .expect("report");
            assert_eq!(ids(&rep.files), every[13 - want..], "max_files {max}");
            assert_eq!(rep.files_total, 13, "max_files {max}");
            assert_eq!(rep.files_truncated, want < 13, "max_files {max}");
            // The totals do not depend on what is listed.
            let sum = |c: &[ExfilCount]| {
                c.iter()
                    .fold((0, 0), |(f, b), c| (f + c.files, b + c.bytes))
            };
            assert_eq!(sum(&rep.per_day), (13, 10 * 10 + 3 * 5));
            assert_eq!(sum(&rep.per_user), (13, 10 * 10 + 3 * 5));
            let users: Vec<(&str, &str, u64)> = rep
                .per_user
                .iter()
                .map(|c| (c.key.as_str(), c.method.as_str(), c.files))
                .collect();
            assert_eq!(users, [("alice", "mail", 10), ("bob", "removable", 3)]);
            // At UTC+9 every one of these is on 1970-01-01.
            assert_eq!(rep.per_day.len(), 2);
            assert!(rep.files.iter().all(|f| f.day == "1970-01-01"));
        }
    }

    #[test]
    fn days_split_at_the_offset() {
        let (_dir, idx) = report_index();
        // At UTC-03:00, t < 3 h is still 1969-12-31.
        let rep = exfil_report(
            &idx,
            &ExfilReportRequest {
                from_ms: 0,
                to_ms: 10 * 3_600_000,
                utc_offset_minutes: -180,
                ..Default::default()
            },
        )
        .expect("report");
        let days: Vec<(&str, &str, u64, u64)> = rep
            .per_day
            .iter()
            .map(|c| (c.key.as_str(), c.method.as_str(), c.files, c.bytes))
            .collect();
        assert_eq!(
            days,
            [
                ("1969-12-31", "mail", 4, 40),
                ("1969-12-31", "removable", 2, 10),
                ("1970-01-01", "mail", 6, 60),
                ("1970-01-01", "removable", 1, 5),
            ]
        );
        // A range cuts by the files' corrected time.
        let rep = exfil_report(
            &idx,
            &ExfilReportRequest {
                from_ms: 2 * 3_600_000,
                to_ms: 3 * 3_600_000,
                max_files: 1,
                ..Default::default()
            },
        )
        .expect("report");
        assert_eq!(ids(&rep.files), ["pc/c/2:/media/usb/2"]);
        assert_eq!((rep.files_total, rep.files_truncated), (3, true));
    }

    #[test]
    fn the_stream_gives_every_file_oldest_first() {
        let (_dir, idx) = report_index();
        let r = ExfilReportRequest {
            from_ms: 0,
            to_ms: 10 * 3_600_000,
            max_files: 1,
            ..Default::default()
        };
        let listed = exfil_report(
            &idx,
            &ExfilReportRequest {
                max_files: 100,
                ..r.clone()
            },
        )
        .expect("report")
        .files;
        let scan = exfil_scan(&idx, &r).expect("scan");
        assert_eq!(files_total(&scan.events), 13);
        let mut streamed = Vec::new();
        each_exfil_batch(scan, Days::fixed(0), |files| {
            streamed.extend(files);
            true
        })
        .expect("stream");
        assert_eq!(streamed, listed);
        // A receiver that goes away stops the stream.
        let mut batches = 0;
        each_exfil_batch(exfil_scan(&idx, &r).expect("scan"), Days::fixed(0), |_| {
            batches += 1;
            false
        })
        .expect("stream");
        assert_eq!(batches, 1);
        assert!(matches!(
            exfil_scan(
                &idx,
                &ExfilReportRequest {
                    utc_offset_minutes: 900,
                    ..r.clone()
                }
            ),
            Err(ExfilError::BadRequest(_))
        ));
    }

    fn report(r: ExfilReportRequest) -> Result<ExfilReport, ExfilError> {
        let (_dir, idx) = report_index();
        exfil_report(
            &idx,
            &ExfilReportRequest {
                from_ms: 0,
                to_ms: 10 * 3_600_000,
                max_files: 100,
                ..r
            },
        )
    }

    #[test]
    fn days_cut_in_a_named_zone() {
        // America/Sao_Paulo was UTC-03:00 in 1970 (no summer time then):
        // the same days as a fixed -180.
        let rep = report(ExfilReportRequest {
            time_zone: "America/Sao_Paulo".into(),
            ..Default::default()
        })
        .expect("report");
        let days: Vec<(&str, u64)> = rep
            .per_day
            .iter()
            .map(|c| (c.key.as_str(), c.files))
            .collect();
        assert_eq!(
            days,
            [
                ("1969-12-31", 4),
                ("1969-12-31", 2),
                ("1970-01-01", 6),
                ("1970-01-01", 1)
            ]
        );
        assert_eq!(rep.files[0].day, "1969-12-31");
        // (request, what is wrong with it)
        for (r, want) in [
            (
                ExfilReportRequest {
                    time_zone: "Asia/Tokio".into(),
                    ..Default::default()
                },
                "time_zone: unknown time zone \"Asia/Tokio\"",
            ),
            (
                ExfilReportRequest {
                    time_zone: "Asia/Tokyo".into(),
                    utc_offset_minutes: 540,
                    ..Default::default()
                },
                "both time_zone \"Asia/Tokyo\" and utc_offset_minutes 540 are set",
            ),
            (
                ExfilReportRequest {
                    method: "usb".into(),
                    ..Default::default()
                },
                "unknown method \"usb\": use mail or removable",
            ),
        ] {
            match report(r) {
                Err(ExfilError::BadRequest(m)) => assert!(m.starts_with(want), "{m}"),
                other => panic!("{want}: {other:?}"),
            }
        }
        assert!(matches!(
            report(ExfilReportRequest {
                host: "h".repeat(5000),
                ..Default::default()
            }),
            Err(ExfilError::BadRequest(m)) if m.contains("`host`")
        ));
    }

    #[test]
    fn filters_keep_their_method_user_and_host() {
        // (filter, files kept, users listed)
        for (r, files, users) in [
            (ExfilReportRequest::default(), 13, vec!["alice", "bob"]),
            (
                ExfilReportRequest {
                    method: "Removable".into(),
                    ..Default::default()
                },
                3,
                vec!["bob"],
            ),
            (
                ExfilReportRequest {
                    method: "mail".into(),
                    user: "ALICE".into(),
                    ..Default::default()
                },
                10,
                vec!["alice"],
            ),
            (
                ExfilReportRequest {
                    method: "mail".into(),
                    user: "bob".into(),
                    ..Default::default()
                },
                0,
                vec![],
            ),
            // The events carry no hostname: the agent id names the host.
            (
                ExfilReportRequest {
                    host: "pc".into(),
                    ..Default::default()
                },
                13,
                vec!["alice", "bob"],
            ),
            (
                ExfilReportRequest {
                    host: "other".into(),
                    ..Default::default()
                },
                0,
                vec![],
            ),
        ] {
            let what = format!("{r:?}");
            let rep = report(r).expect("report");
            assert_eq!(rep.files_total, files, "{what}");
            assert_eq!(rep.files.len() as u64, files, "{what}");
            let listed: Vec<&str> = rep.per_user.iter().map(|c| c.key.as_str()).collect();
            assert_eq!(listed, users, "{what}");
        }
    }

    #[test]
    fn users_by_volume_and_the_top_ones() {
        let c = |key: &str, method: &str, files, bytes| ExfilCount {
            key: key.into(),
            method: method.into(),
            files,
            bytes,
        };
        let all = vec![
            c("alice", "mail", 2, 10),
            c("bob", "mail", 1, 1),
            c("bob", "removable", 2, 100),
            c("carol", "removable", 3, 50),
            c("dave", "mail", 1, 5),
        ];
        // (top, users in order) — bob and carol have 3 files each, bob more bytes.
        for (top, want) in [
            (0, vec!["bob", "bob", "carol", "alice", "dave"]),
            (1, vec!["bob", "bob"]),
            (2, vec!["bob", "bob", "carol"]),
            (4, vec!["bob", "bob", "carol", "alice", "dave"]),
            (9, vec!["bob", "bob", "carol", "alice", "dave"]),
        ] {
            let mut v = all.clone();
            assert_eq!(by_volume(&mut v, top), 4, "top {top}");
            let keys: Vec<&str> = v.iter().map(|c| c.key.as_str()).collect();
            assert_eq!(keys, want, "top {top}");
        }
        let rep = report(ExfilReportRequest {
            top_users: 1,
            ..Default::default()
        })
        .expect("report");
        assert_eq!((rep.per_user.len(), rep.users_total), (1, 2));
        assert_eq!(rep.per_user[0].key, "alice");
    }

    /// Review of issue 16: the offset's absolute value overflowed on
    /// `i32::MIN` (a panic in a debug build).
    #[test]
    fn the_most_negative_offset_is_refused_not_overflowed() {
        for minutes in [i32::MIN, i32::MAX, 841, -841] {
            let r = ExfilReportRequest {
                utc_offset_minutes: minutes,
                ..Default::default()
            };
            assert!(
                matches!(exfil_days(&r), Err(ExfilError::BadRequest(_))),
                "{minutes}"
            );
        }
        let ok = ExfilReportRequest {
            utc_offset_minutes: -840,
            ..Default::default()
        };
        assert!(exfil_days(&ok).is_ok());
    }
}
