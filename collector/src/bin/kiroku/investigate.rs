//! `kiroku trace`, `kiroku alerts` and `kiroku report exfil`: the
//! investigations, rendered as tables (and a bar chart) for people and as
//! JSON / CSV for scripts.

use comfy_table::{ContentArrangement, Table, presets::UTF8_BORDERS_ONLY};
use kiroku_collector::alerts::notify::alert_json;
use kiroku_collector::investigate::{event_time, event_user};
use kiroku_proto::{
    Alert, AlertsRequest, Event, ExfilFile, ExfilReport, ExfilReportRequest, TraceRequest,
    event::Kind,
};
use tokio_stream::StreamExt;

use crate::client::ConnectArgs;
use crate::output;

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
}

#[derive(clap::Args, Debug)]
pub struct ExfilArgs {
    /// Start: a date (midnight at --utc-offset), RFC 3339 or relative (7d).
    #[arg(long)]
    from: String,
    /// End (exclusive), same forms; default now.
    #[arg(long)]
    to: Option<String>,
    /// Day boundaries at this offset from UTC: +09:00, -05:30 or minutes.
    #[arg(long, default_value = "+00:00", allow_hyphen_values = true)]
    utc_offset: String,
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
}

/// What an event did with the content, in one line.
fn what(e: &Event, sha: &str) -> String {
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
            format!(
                "mail {} → {}: {} [{}]",
                m.mail_from,
                to.join(", "),
                names.join(", "),
                kiroku_collector::store::index::outcome_name(m.outcome)
            )
        }
        Some(Kind::File(f)) => match f.operation.as_str() {
            "copy_to_removable" => {
                let mut s = format!("copy to removable {}: {}", f.volume, f.path);
                if !f.volume_label.is_empty() {
                    s.push_str(&format!(" [{}]", f.volume_label));
                }
                if !f.source_path.is_empty() {
                    s.push_str(&format!(" (from {})", f.source_path));
                }
                s
            }
            "rename" => format!("rename {} → {}", f.old_path, f.path),
            op => format!("{op} {}", f.path),
        },
        _ => String::new(),
    }
}

pub async fn trace(connect: &ConnectArgs, a: TraceArgs) -> anyhow::Result<()> {
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
            let host = e
                .host
                .as_ref()
                .map(|h| h.hostname.clone())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| e.agent_id.clone());
            t.add_row([
                output::time(event_time(e)),
                host,
                event_user(e),
                what(e, &sha),
                e.event_id.clone(),
            ]);
        }
        println!("{t}");
    }
    eprintln!(
        "{} events{}",
        resp.events.len(),
        if resp.truncated {
            " (truncated: more matched; raise --limit)"
        } else {
            ""
        }
    );
    Ok(())
}

fn print_alert(a: &Alert, json: bool) {
    if json {
        println!("{}", alert_json(a));
    } else {
        println!(
            "{}  {:<20} {:<20} {}  {}",
            output::time(a.fired_at_ms),
            a.rule,
            a.kind,
            a.event_id,
            a.summary
        );
    }
}

pub async fn alerts(connect: &ConnectArgs, a: AlertsArgs) -> anyhow::Result<()> {
    let now = kiroku_common::now_ms();
    let since = match (&a.since, a.follow) {
        (Some(s), _) => crate::parse_time(s, now)?,
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
        print_alert(&alert?, a.json);
        n += 1;
    }
    if !a.follow {
        eprintln!("{n} alerts");
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

/// A time argument; a bare date is midnight at `offset_min`.
fn report_time(s: &str, now: i64, offset_min: i32) -> anyhow::Result<i64> {
    let date_fmt = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = time::Date::parse(s.trim(), &date_fmt) {
        return Ok(
            d.midnight().assume_utc().unix_timestamp() * 1000 - i64::from(offset_min) * 60_000
        );
    }
    crate::parse_time(s, now)
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
        let len = (c.files * WIDTH).div_ceil(max) as usize;
        let bar = if c.method == "mail" { "█" } else { "▒" };
        out.push_str(&format!(
            "{day:<10}  {:<9} {} {} ({})\n",
            c.method,
            bar.repeat(len),
            c.files,
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

pub async fn report(connect: &ConnectArgs, cmd: ReportCmd) -> anyhow::Result<()> {
    let ReportCmd::Exfil(a) = cmd;
    let now = kiroku_common::now_ms();
    let offset = parse_offset(&a.utc_offset)?;
    let req = ExfilReportRequest {
        from_ms: report_time(&a.from, now, offset)?,
        to_ms: match &a.to {
            Some(t) => report_time(t, now, offset)?,
            None => now,
        },
        utc_offset_minutes: offset,
        // With every file streamed, the report itself need list none (0
        // would mean the collector's default).
        max_files: if a.all_files { 1 } else { a.max_files },
    };
    let (from, to) = (req.from_ms, req.to_ms);
    let mut q = connect.query().await?;
    if a.csv {
        let mut w = csv::Writer::from_writer(std::io::stdout().lock());
        w.write_record(CSV_HEADER)?;
        let n = every_file(&mut q, req, |f| {
            w.write_record([
                f.day.as_str(),
                &output::time(f.at_ms),
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
        eprintln!("{n} files");
        return Ok(());
    }
    let mut r = q.exfil_report(req).await?.into_inner();
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
        "Files that left from {} to {} (days at UTC{}):\n",
        output::time(from),
        output::time(to),
        a.utc_offset
    );
    print!("{}", bar_chart(&r));
    let mut users = Table::new();
    users
        .load_preset(UTF8_BORDERS_ONLY)
        .set_header(["user", "method", "files", "bytes"]);
    for c in &r.per_user {
        users.add_row([
            c.key.clone(),
            c.method.clone(),
            c.files.to_string(),
            human_bytes(c.bytes),
        ]);
    }
    println!("\n{users}");
    let mut files = Table::new();
    files
        .load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(["time", "method", "user", "host", "file", "size", "to"]);
    for f in &r.files {
        files.add_row([
            output::time(f.at_ms),
            f.method.clone(),
            f.user.clone(),
            f.host.clone(),
            f.filename.clone(),
            human_bytes(f.size),
            f.destination.clone(),
        ]);
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
            "{total} files; the newest {listed} are listed, {} earlier ones are not: --all-files lists every file, --csv exports them",
            total - listed
        )
    } else {
        format!("{total} files")
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
        assert_eq!(
            report_time("1970-01-02", 0, 540).ok(),
            Some(86_400_000 - 540 * 60_000)
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
