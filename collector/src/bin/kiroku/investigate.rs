//! `kiroku trace`, `kiroku alerts` and `kiroku report exfil` (`kiroku report
//! network` is `netreport.rs`): the
//! investigations, rendered as tables (and a bar chart) for people and as
//! JSON / CSV for scripts.

use comfy_table::{ContentArrangement, Table, presets::UTF8_BORDERS_ONLY};
use kiroku_common::alert_json;
use kiroku_common::mail::{corrected_ms, event_user, outcome_name};
use kiroku_common::vocabulary::file_op;
use kiroku_proto::{
    Alert, AlertsRequest, Event, ExfilFile, ExfilReport, ExfilReportRequest, TraceRequest,
    event::Kind,
};
use tokio_stream::StreamExt;

use crate::client::ConnectArgs;
use crate::output::{self, count, safe, safe_row};
use crate::zone::{self, Zone, format as time};

#[derive(clap::Args, Debug)]
pub struct TraceArgs {
    /// SHA-256 of the content (attachment, raw message or file).
    sha256: String,
    /// Most events to show (oldest first).
    #[arg(long, default_value_t = 1000)]
    limit: u32,
    /// JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct AlertsArgs {
    /// Keep running and show alerts as they fire.
    #[arg(long)]
    follow: bool,
    /// Also show alerts fired since then: relative (1h, 7d), RFC 3339 or a
    /// date. Default: 24h, or none with --follow.
    #[arg(long)]
    since: Option<String>,
    /// JSON lines instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum ReportCmd {
    /// Files that left by mail or on removable media: per day and per user,
    /// a daily bar chart, and the newest files (--all-files or --csv: every
    /// file).
    Exfil(ExfilArgs),
    /// What one host talked to (issue 21): per process and per peer, a
    /// timeline chart, the P2P findings and the network gaps.
    Network(crate::netreport::NetworkArgs),
}

#[derive(clap::Args, Debug)]
pub struct ExfilArgs {
    /// Start: a date (midnight in the --tz zone), a local time, RFC 3339 or
    /// relative (7d).
    #[arg(long)]
    from: String,
    /// End (exclusive), same forms; default now.
    #[arg(long)]
    to: Option<String>,
    /// Days cut at this fixed offset from UTC (+09:00, -05:30 or minutes)
    /// instead of in the CLI's time zone (--tz, which follows
    /// daylight-saving changes). Not together with --tz.
    #[arg(long, allow_hyphen_values = true)]
    utc_offset: Option<String>,
    /// Only files that left by this method: mail or removable.
    #[arg(long, value_parser = ["mail", "removable"])]
    method: Option<String>,
    /// Only files of this user (as the report names users).
    #[arg(long)]
    user: Option<String>,
    /// Only files from this host (hostname or FQDN; the agent id for a
    /// host without a name).
    #[arg(long)]
    host: Option<String>,
    /// Only the N users with the most files (then bytes) in the per-user
    /// totals; the per-day totals and the file list are not cut.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    top: Option<u32>,
    /// Newest files to list; the totals always count every file.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    max_files: u32,
    /// List every file (streamed from the collector), not only the newest.
    #[arg(long)]
    all_files: bool,
    /// The report as JSON.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Every file as CSV (streamed from the collector), without the totals.
    #[arg(long)]
    csv: bool,
    /// Only mail with a recipient outside the collector's internal_domains
    /// (removable copies are left out).
    #[arg(long, conflicts_with = "internal")]
    external: bool,
    /// Only mail whose recipients are all inside the collector's
    /// internal_domains (removable copies are left out).
    #[arg(long)]
    internal: bool,
}

/// What an event did with the content, in one line.
fn what(e: &Event, sha: &str, inside: &[String]) -> String {
    match &e.kind {
        Some(Kind::Email(m)) => {
            let to: Vec<&str> = m.rcpt_to.iter().map(|r| r.address.as_str()).collect();
            let mut names: Vec<&str> = m
                .attachments
                .iter()
                .filter(|a| a.sha256 == sha)
                .map(|a| a.filename.as_str())
                .collect();
            if m.raw_sha256 == sha {
                names.push("(the raw message)");
            }
            names.extend(inside.iter().map(|p| p.as_str()));
            format!(
                "mail {} → {}: {} [{}]",
                m.mail_from,
                to.join(", "),
                names.join(", "),
                outcome_name(m.outcome)
            )
        }
        Some(Kind::File(f)) => match f.operation.as_str() {
            file_op::COPY_TO_REMOVABLE => {
                let mut s = format!("copy to removable {}: {}", f.volume, f.path);
                if !f.volume_label.is_empty() {
                    s.push_str(&format!(" [{}]", f.volume_label));
                }
                if !f.source_path.is_empty() {
                    s.push_str(&format!(" (from {})", f.source_path));
                }
                s
            }
            file_op::RENAME => format!("rename {} → {}", f.old_path, f.path),
            op => format!("{op} {}", f.path),
        },
        _ => String::new(),
    }
}

/// Where `sha` sits inside a mail's attachments when it is none of them
/// (a file in an attached mail, TNEF or an archive), from the mail's
/// annotations.
async fn inside(
    q: &mut kiroku_proto::query_client::QueryClient<tonic::transport::Channel>,
    e: &Event,
    sha: &str,
) -> anyhow::Result<Vec<String>> {
    let Some(Kind::Email(m)) = &e.kind else {
        return Ok(Vec::new());
    };
    if m.raw_sha256 == sha || m.attachments.iter().any(|a| a.sha256 == sha) {
        return Ok(Vec::new());
    }
    let a = match q
        .get_annotations(kiroku_proto::GetAnnotationsRequest {
            event_id: e.event_id.clone(),
        })
        .await
    {
        Ok(a) => a.into_inner(),
        Err(s) if s.code() == tonic::Code::Unimplemented => return Ok(Vec::new()),
        Err(s) => return Err(s.into()),
    };
    Ok(crate::annotations::paths_with(&a, sha)
        .into_iter()
        .map(|p| format!("inside {p}"))
        .collect())
}

pub async fn trace(connect: &ConnectArgs, a: TraceArgs, zone: &Zone) -> anyhow::Result<()> {
    let sha = a.sha256.trim().to_lowercase();
    let mut q = connect.query().await?;
    let resp = q
        .trace(TraceRequest {
            sha256: sha.clone(),
            limit: a.limit,
        })
        .await?
        .into_inner();
    if a.json {
        for e in &resp.events {
            println!("{}", output::json(e));
        }
    } else {
        let mut t = Table::new();
        t.load_preset(UTF8_BORDERS_ONLY)
            .set_content_arrangement(ContentArrangement::Dynamic)
            .set_header(["time", "host", "user", "what", "event id"]);
        for e in &resp.events {
            let inside = inside(&mut q, e, &sha).await?;
            let host = e
                .host
                .as_ref()
                .map(|h| h.hostname.clone())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| e.agent_id.clone());
            t.add_row(safe_row([
                time(corrected_ms(e), zone),
                host,
                event_user(e),
                what(e, &sha, &inside),
                e.event_id.clone(),
            ]));
        }
        println!("{t}");
    }
    eprintln!(
        "{}{}",
        count(resp.events.len() as u64, "event", "events"),
        if resp.truncated {
            " (truncated: more matched; raise --limit)"
        } else {
            ""
        }
    );
    Ok(())
}

fn print_alert(a: &Alert, json: bool, zone: &Zone) {
    if json {
        println!("{}", alert_json(a));
    } else {
        println!(
            "{}  {:<20} {:<20} {}  {}",
            time(a.fired_at_ms, zone),
            safe(&a.rule),
            safe(&a.kind),
            safe(&a.event_id),
            safe(&a.summary)
        );
    }
}

pub async fn alerts(connect: &ConnectArgs, a: AlertsArgs, zone: &Zone) -> anyhow::Result<()> {
    let now = kiroku_common::now_ms();
    let since = match (&a.since, a.follow) {
        (Some(s), _) => zone::parse_time(s, now, zone)?,
        (None, false) => now - 86_400_000,
        (None, true) => 0,
    };
    let mut q = connect.query().await?;
    let mut stream = q
        .alerts(AlertsRequest {
            from_ms: since,
            follow: a.follow,
        })
        .await?
        .into_inner();
    let mut n = 0u64;
    while let Some(alert) = stream.next().await {
        print_alert(&alert?, a.json, zone);
        n += 1;
    }
    if !a.follow {
        eprintln!("{}", count(n, "alert", "alerts"));
    }
    Ok(())
}

/// `+09:00`, `-05:30`, `540` → minutes east of UTC.
fn parse_offset(s: &str) -> anyhow::Result<i32> {
    let s = s.trim();
    if let Ok(m) = s.parse::<i32>() {
        return Ok(m);
    }
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'+') => (1, &s[1..]),
        Some(b'-') => (-1, &s[1..]),
        _ => (1, s),
    };
    let (h, m) = rest.split_once(':').unwrap_or((rest, "0"));
    match (h.parse::<i32>(), m.parse::<i32>()) {
        (Ok(h), Ok(m)) if h <= 14 && m < 60 => Ok(sign * (h * 60 + m)),
        _ => anyhow::bail!("cannot read UTC offset {s:?}: use +09:00, -05:30 or minutes (540)"),
    }
}

/// A time argument of the report. With `--utc-offset`, a date or a local
/// time is at that offset (as the report's days are); else in the zone.
fn report_time(s: &str, now: i64, days: &Days, zone: &Zone) -> anyhow::Result<i64> {
    match days {
        Days::Offset(minutes) => zone::parse_time(s, now, &Zone::fixed(*minutes)),
        Days::Zone(_) | Days::CurrentOffset(_) => zone::parse_time(s, now, zone),
    }
}

/// How the report cuts days.
#[derive(Debug, PartialEq)]
enum Days {
    /// `--utc-offset`: a fixed offset, in minutes.
    Offset(i32),
    /// The CLI's zone, by its IANA name.
    Zone(String),
    /// The CLI's zone has no IANA name (a POSIX `TZ` rule): its offset now.
    CurrentOffset(i32),
}

impl Days {
    fn of(utc_offset: Option<&str>, zone: &Zone, tz_flag: bool) -> anyhow::Result<Days> {
        if let Some(off) = utc_offset {
            if tz_flag {
                anyhow::bail!(
                    "--tz and --utc-offset both cut the report's days: give one (--tz follows daylight-saving changes, --utc-offset is fixed)"
                );
            }
            return Ok(Days::Offset(parse_offset(off)?));
        }
        Ok(match zone.iana_name() {
            Some(name) => Days::Zone(name.to_owned()),
            None => Days::CurrentOffset(zone.offset_minutes_now()),
        })
    }

    /// (time_zone, utc_offset_minutes) of the request.
    fn request(&self) -> (String, i32) {
        match self {
            Days::Offset(m) | Days::CurrentOffset(m) => (String::new(), *m),
            Days::Zone(name) => (name.clone(), 0),
        }
    }

    /// How the report's heading names its days.
    fn describe(&self) -> String {
        let offset = |m: &i32| {
            format!(
                "UTC{}{:02}:{:02}",
                if *m < 0 { '-' } else { '+' },
                m.abs() / 60,
                m.abs() % 60
            )
        };
        match self {
            Days::Offset(m) => offset(m),
            Days::Zone(name) => name.clone(),
            Days::CurrentOffset(m) => format!("{} (the zone's offset now)", offset(m)),
        }
    }
}

pub fn human_bytes(n: u64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// `glyph` repeated for `value` on a scale where `max` is `width` long (a
/// value above 0 gets at least one): the bars of the reports' charts.
pub fn bar(glyph: &str, value: u64, max: u64, width: u64) -> String {
    let len = (u128::from(value) * u128::from(width)).div_ceil(u128::from(max.max(1)));
    glyph.repeat(len.min(u128::from(width)) as usize)
}

/// One bar per day and method, scaled to the busiest.
pub fn bar_chart(r: &ExfilReport) -> String {
    const WIDTH: u64 = 40;
    let max = r.per_day.iter().map(|c| c.files).max().unwrap_or(0).max(1);
    let mut out = String::new();
    let mut last_day = "";
    for c in &r.per_day {
        let day = if c.key == last_day {
            ""
        } else {
            c.key.as_str()
        };
        last_day = &c.key;
        let glyph = if c.method == "mail" { "█" } else { "▒" };
        out.push_str(&format!(
            "{day:<10}  {:<9} {} {} ({})\n",
            safe(&c.method),
            bar(glyph, c.files, max, WIDTH),
            count(c.files, "file", "files"),
            human_bytes(c.bytes)
        ));
    }
    out
}

/// Every file of the report, oldest first, as the collector streams them.
async fn every_file(
    q: &mut kiroku_proto::query_client::QueryClient<tonic::transport::Channel>,
    req: ExfilReportRequest,
    mut each: impl FnMut(ExfilFile) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let mut stream = q.exfil_files(req).await?.into_inner();
    let mut n = 0;
    while let Some(batch) = stream.next().await {
        for f in batch?.files {
            each(f)?;
            n += 1;
        }
    }
    Ok(n)
}

const CSV_HEADER: [&str; 10] = [
    "day",
    "time",
    "method",
    "user",
    "host",
    "file",
    "sha256",
    "size",
    "destination",
    "event_id",
];

pub async fn report(
    connect: &ConnectArgs,
    cmd: ReportCmd,
    zone: &Zone,
    tz_flag: bool,
) -> anyhow::Result<()> {
    let a = match cmd {
        ReportCmd::Exfil(a) => a,
        ReportCmd::Network(a) => return crate::netreport::run(connect, a, zone).await,
    };
    let now = kiroku_common::now_ms();
    let days = Days::of(a.utc_offset.as_deref(), zone, tz_flag)?;
    if let Days::CurrentOffset(_) = days {
        eprintln!(
            "note: the time zone {} ({}) has no IANA name: days are cut at its offset now, which is wrong across a daylight-saving change; give --tz with a name such as Europe/Berlin",
            zone.describe(),
            zone.source()
        );
    }
    let (time_zone, utc_offset_minutes) = days.request();
    let s = |o: &Option<String>| o.clone().unwrap_or_default();
    let req = ExfilReportRequest {
        from_ms: report_time(&a.from, now, &days, zone)?,
        to_ms: match &a.to {
            Some(t) => report_time(t, now, &days, zone)?,
            None => now,
        },
        utc_offset_minutes,
        time_zone,
        method: s(&a.method),
        user: s(&a.user),
        host: s(&a.host),
        top_users: a.top.unwrap_or(0),
        // With every file streamed, the report itself need list none (0
        // would mean the collector's default).
        max_files: if a.all_files { 1 } else { a.max_files },
        recipients: match (a.external, a.internal) {
            (true, _) => "external".into(),
            (_, true) => "internal".into(),
            _ => String::new(),
        },
    };
    let (from, to) = (req.from_ms, req.to_ms);
    let mut q = connect.query().await?;
    if a.csv {
        // CSV is for scripts: exact values, times in UTC.
        let mut w = csv::Writer::from_writer(std::io::stdout().lock());
        w.write_record(CSV_HEADER)?;
        let n = every_file(&mut q, req, |f| {
            w.write_record([
                f.day.as_str(),
                &kiroku_common::rfc3339_ms(f.at_ms),
                &f.method,
                &f.user,
                &f.host,
                &f.filename,
                &f.sha256,
                &f.size.to_string(),
                &f.destination,
                &f.event_id,
            ])?;
            Ok(())
        })
        .await?;
        w.flush()?;
        eprintln!("{}", count(n, "file", "files"));
        return Ok(());
    }
    let mut r = q.exfil_report(req.clone()).await?.into_inner();
    if a.all_files {
        r.files.clear();
        every_file(&mut q, req, |f| {
            r.files.push(f);
            Ok(())
        })
        .await?;
        r.files_truncated = false;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "Files that left from {} to {} (days in {}):\n",
        time(from, zone),
        time(to, zone),
        days.describe()
    );
    print!("{}", bar_chart(&r));
    let mut users = Table::new();
    users
        .load_preset(UTF8_BORDERS_ONLY)
        .set_header(["user", "method", "files", "bytes"]);
    for c in &r.per_user {
        users.add_row(safe_row([
            c.key.clone(),
            c.method.clone(),
            c.files.to_string(),
            human_bytes(c.bytes),
        ]));
    }
    println!("\n{users}");
    if (r.per_user.len() as u64) < r.users_total || a.top.is_some() {
        let shown = r
            .per_user
            .iter()
            .map(|c| c.key.as_str())
            .collect::<std::collections::HashSet<_>>()
            .len() as u64;
        println!(
            "top {} of {} by files, then bytes",
            shown,
            count(r.users_total, "user", "users")
        );
    }
    let mut files = Table::new();
    files
        .load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(["time", "method", "user", "host", "file", "size", "to"]);
    for f in &r.files {
        files.add_row(safe_row([
            time(f.at_ms, zone),
            f.method.clone(),
            f.user.clone(),
            f.host.clone(),
            f.filename.clone(),
            human_bytes(f.size),
            f.destination.clone(),
        ]));
    }
    println!("\n{files}");
    println!("{}", files_note(&r));
    Ok(())
}

/// How many files the report counts and how many it lists.
fn files_note(r: &ExfilReport) -> String {
    let listed = r.files.len() as u64;
    // A collector older than `files_total` lists every file.
    let total = r.files_total.max(listed);
    if total > listed {
        format!(
            "{}; the newest {listed} {} listed, {} {} not: --all-files lists every file, --csv exports them",
            count(total, "file", "files"),
            if listed == 1 { "is" } else { "are" },
            count(total - listed, "earlier one", "earlier ones"),
            if total - listed == 1 { "is" } else { "are" },
        )
    } else {
        count(total, "file", "files")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets() {
        for (s, m) in [("+09:00", 540), ("-05:30", -330), ("540", 540), ("0", 0)] {
            assert_eq!(parse_offset(s).ok(), Some(m), "{s}");
        }
        assert!(parse_offset("JST").is_err());
        let tokyo = Zone::fixed(540);
        assert_eq!(
            report_time("1970-01-02", 0, &Days::Offset(540), &Zone::utc()).ok(),
            Some(86_400_000 - 540 * 60_000)
        );
        assert_eq!(
            report_time("1970-01-02", 0, &Days::Zone("UTC".into()), &tokyo).ok(),
            Some(86_400_000 - 540 * 60_000)
        );
    }

    #[test]
    fn days_of_the_report() {
        let tokyo = crate::zone::zone(Some("Asia/Tokyo"), None).expect("zone");
        // (--utc-offset, --tz given, days, request)
        for (offset, tz_flag, want, request) in [
            (
                None,
                true,
                Days::Zone("Asia/Tokyo".into()),
                ("Asia/Tokyo", 0),
            ),
            (
                None,
                false,
                Days::Zone("Asia/Tokyo".into()),
                ("Asia/Tokyo", 0),
            ),
            // A zone from the config or TZ gives way to an explicit offset.
            (Some("-05:00"), false, Days::Offset(-300), ("", -300)),
        ] {
            let days = Days::of(offset, &tokyo, tz_flag).expect("days");
            let (zone, minutes) = days.request();
            assert_eq!(days, want);
            assert_eq!((zone.as_str(), minutes), request);
        }
        let e = Days::of(Some("+09:00"), &tokyo, true).expect_err("both");
        assert!(e.to_string().starts_with("--tz and --utc-offset"), "{e}");
        assert_eq!(Days::Offset(-330).describe(), "UTC-05:30");
        assert_eq!(
            Days::of(None, &Zone::fixed(540), false).expect("days"),
            Days::CurrentOffset(540)
        );
    }

    #[test]
    fn files_note_says_what_is_left_out() {
        let listed = |n: usize, total: u64| ExfilReport {
            files: vec![ExfilFile::default(); n],
            files_total: total,
            files_truncated: total > n as u64,
            ..Default::default()
        };
        for (r, want) in [
            (listed(3, 3), "3 files".to_string()),
            (listed(1, 1), "1 file".to_string()),
            (
                listed(1, 2),
                "2 files; the newest 1 is listed, 1 earlier one is not: --all-files lists every file, --csv exports them".to_string(),
            ),
            // An older collector: no total, every file listed.
            (listed(3, 0), "3 files".to_string()),
            (
                listed(100, 212_802),
                "212802 files; the newest 100 are listed, 212702 earlier ones are not: --all-files lists every file, --csv exports them".to_string(),
            ),
        ] {
            assert_eq!(files_note(&r), want);
        }
    }
}
