//! `kiroku report network`: what one host talked to over a time range —
//! totals, a timeline bar chart (out █, in ▒), the processes and the
//! peers by volume, the P2P findings and the network gaps (what the agent
//! could not record) — for people, in the CLI's zone; `--json` (the
//! collector's `NetworkReport` as JSON) and `--csv <table>` (one table,
//! exact values, times in UTC) for scripts.

use comfy_table::{ContentArrangement, Table, presets::UTF8_BORDERS_ONLY};
use kiroku_common::mail::corrected_ms;
use kiroku_proto::{Event, NetworkReport, NetworkReportRequest, P2pEvent, event::Kind};

use crate::client::ConnectArgs;
use crate::investigate::{bar, human_bytes};
use crate::output::{count, safe, safe_row};
use crate::zone::{self, Zone, format as time};

#[derive(clap::Args, Debug)]
pub struct NetworkArgs {
    /// The host (hostname or FQDN, as `kiroku hosts` lists it).
    #[arg(long, required_unless_present = "agent_id")]
    host: Option<String>,
    /// The host by its agent id instead.
    #[arg(long)]
    agent_id: Option<String>,
    /// Start: a date (midnight in the --tz zone), a local time, RFC 3339 or
    /// relative (7d).
    #[arg(long)]
    from: String,
    /// End (exclusive), same forms; default now.
    #[arg(long)]
    to: Option<String>,
    /// Rows of the process and peer tables (most traffic first).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    top: u32,
    /// The timeline's bucket (5m, 1h, 1d); default: chosen from the range
    /// (40-60 buckets).
    #[arg(long, value_name = "SPAN", value_parser = span)]
    bucket: Option<i64>,
    /// The report as JSON.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// One table as CSV: processes, peers, timeline, p2p or gaps.
    #[arg(long, value_name = "TABLE", value_parser = CSV_TABLES)]
    csv: Option<String>,
}

/// The tables `--csv` writes.
const CSV_TABLES: [&str; 5] = ["processes", "peers", "timeline", "p2p", "gaps"];

fn span(s: &str) -> Result<i64, String> {
    match kiroku_collector::agents::parse_span(s)? {
        ms if ms >= 1000 => Ok(ms),
        _ => Err(format!("{s:?}: a bucket is at least 1s")),
    }
}

pub async fn run(connect: &ConnectArgs, a: NetworkArgs, zone: &Zone) -> anyhow::Result<()> {
    let now = kiroku_common::now_ms();
    let from_ms = zone::parse_time(&a.from, now, zone)?;
    let to_ms = match &a.to {
        Some(t) => zone::parse_time(t, now, zone)?,
        None => now,
    };
    if to_ms <= from_ms {
        anyhow::bail!(
            "--to ({}) must be after --from ({})",
            time(to_ms, zone),
            time(from_ms, zone)
        );
    }
    let req = NetworkReportRequest {
        from_ms,
        to_ms,
        host: a.host.clone().unwrap_or_default(),
        agent_id: a.agent_id.clone().unwrap_or_default(),
        top: a.top,
        bucket_ms: a.bucket.unwrap_or(0),
        // The timeline's buckets start on the investigator's wall clock.
        time_zone: zone.iana_name().unwrap_or_default().to_owned(),
    };
    let mut q = connect.query().await?;
    let r = q.network_report(req).await?.into_inner();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    if let Some(table) = &a.csv {
        let mut w = csv::Writer::from_writer(std::io::stdout().lock());
        let rows = csv_rows(&r, table);
        for row in &rows {
            w.write_record(row)?;
        }
        w.flush()?;
        eprintln!(
            "{}",
            count(rows.len().saturating_sub(1) as u64, "row", "rows")
        );
        return Ok(());
    }
    print!("{}", render(&r, zone));
    Ok(())
}

/// The whole report for people.
pub fn render(r: &NetworkReport, zone: &Zone) -> String {
    let mut out = format!(
        "Network activity of {} from {} to {} (times in {}):\n{}, {}, {} out, {} in\n",
        safe(&r.host),
        time(r.from_ms, zone),
        time(r.to_ms, zone),
        zone.describe(),
        count(r.records, "record", "records"),
        count(r.connections, "connection", "connections"),
        human_bytes(r.bytes_out),
        human_bytes(r.bytes_in),
    );
    out.push_str(&format!(
        "\nTimeline ({} buckets; █ out, ▒ in):\n",
        span_name(r.bucket_ms)
    ));
    out.push_str(&timeline_chart(r, zone));
    out.push_str(&format!("\nProcesses:\n{}\n", processes_table(r, zone)));
    if r.other_processes > 0 {
        out.push_str(&format!(
            "and {} with less traffic (--top)\n",
            count(r.other_processes, "other process", "other processes")
        ));
    }
    out.push_str(&format!("\nTop peers:\n{}\n", peers_table(r, zone)));
    if r.other_peers > 0 {
        out.push_str(&format!(
            "and {} with less traffic (--top)\n",
            count(r.other_peers, "other peer", "other peers")
        ));
    }
    out.push_str("\nP2P findings:\n");
    if r.p2p.is_empty() {
        out.push_str("none\n");
    }
    for e in &r.p2p {
        out.push_str(&finding(e, zone));
    }
    out.push_str("\nNetwork gaps (what the agent could not record):\n");
    if r.gaps.is_empty() {
        out.push_str("none\n");
    }
    for e in &r.gaps {
        if let Some(Kind::Gap(g)) = &e.kind {
            out.push_str(&format!(
                "{}  {}: {} between {} and {}{}\n",
                time(corrected_ms(e), zone),
                safe(&g.reason),
                count(g.count, "record", "records"),
                time(g.first_ms, zone),
                time(g.last_ms, zone),
                if g.detail.is_empty() {
                    String::new()
                } else {
                    format!(" — {}", safe(&g.detail))
                }
            ));
        }
    }
    for n in &r.notes {
        out.push_str(&format!("\nnote: {}\n", safe(n)));
    }
    out
}

/// `5m`, `1h`, `2d`, `1500ms`.
fn span_name(ms: i64) -> String {
    for (unit, len) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms >= len && ms % len == 0 {
            return format!("{}{unit}", ms / len);
        }
    }
    format!("{ms}ms")
}

/// A bucket's start as short as its length allows: the day, the minute
/// or the second.
fn bucket_label(ms: i64, bucket_ms: i64, zone: &Zone) -> String {
    let full = time(ms, zone);
    let len = if bucket_ms % 86_400_000 == 0 {
        10
    } else if bucket_ms % 60_000 == 0 {
        16
    } else {
        19
    };
    full.get(..len).unwrap_or(&full).to_owned()
}

/// One line per bucket: bytes out (█) then in (▒), scaled to the busiest
/// bucket, with the figures.
pub fn timeline_chart(r: &NetworkReport, zone: &Zone) -> String {
    const WIDTH: u64 = 40;
    let max = r
        .timeline
        .iter()
        .map(|b| b.bytes_out.saturating_add(b.bytes_in))
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for b in &r.timeline {
        let total = b.bytes_out.saturating_add(b.bytes_in);
        // Each direction with traffic gets at least one mark; the longer
        // gives way when both together would pass the width.
        let (mut outs, mut ins) = (
            bar("█", b.bytes_out, max, WIDTH).chars().count(),
            bar("▒", b.bytes_in, max, WIDTH).chars().count(),
        );
        let over = (outs + ins).saturating_sub(WIDTH as usize);
        if outs >= ins {
            outs -= over;
        } else {
            ins -= over;
        }
        let (outs, ins) = ("█".repeat(outs), "▒".repeat(ins));
        let figures = if total == 0 && b.connections == 0 {
            String::new()
        } else {
            format!(
                " {} out, {} in, {}",
                human_bytes(b.bytes_out),
                human_bytes(b.bytes_in),
                count(b.connections, "connection", "connections")
            )
        };
        out.push_str(&format!(
            "{}  {outs}{ins}{figures}\n",
            bucket_label(b.start_ms, r.bucket_ms, zone)
        ));
    }
    out
}

fn joined<T: ToString>(v: &[T]) -> String {
    v.iter().map(T::to_string).collect::<Vec<_>>().join(", ")
}

fn processes_table(r: &NetworkReport, zone: &Zone) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header([
            "process", "user", "pids", "conns", "peers", "out", "in", "first", "last", "p2p",
        ]);
    for p in &r.processes {
        let name = if p.process.is_empty() {
            "(unknown)".to_owned()
        } else {
            p.process.clone()
        };
        t.add_row(safe_row([
            name,
            p.user.clone(),
            joined(&p.pids),
            p.connections.to_string(),
            p.peers.to_string(),
            human_bytes(p.bytes_out),
            human_bytes(p.bytes_in),
            time(p.first_ms, zone),
            time(p.last_ms, zone),
            if p.p2p { "P2P" } else { "" }.to_owned(),
        ]));
    }
    t
}

fn peers_table(r: &NetworkReport, zone: &Zone) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header([
            "remote",
            "name",
            "ports",
            "processes",
            "conns",
            "out",
            "in",
            "first",
            "last",
        ]);
    for p in &r.peers {
        t.add_row(safe_row([
            p.remote_ip.clone(),
            p.remote_name.clone(),
            joined(&p.ports),
            p.processes.join(", "),
            p.connections.to_string(),
            human_bytes(p.bytes_out),
            human_bytes(p.bytes_in),
            time(p.first_ms, zone),
            time(p.last_ms, zone),
        ]));
    }
    t
}

fn p2p_of(e: &Event) -> Option<&P2pEvent> {
    match &e.kind {
        Some(Kind::P2p(p)) => Some(p),
        _ => None,
    }
}

/// One P2P episode: who, since when, why, how much, with whom.
fn finding(e: &Event, zone: &Zone) -> String {
    let Some(p) = p2p_of(e) else {
        return String::new();
    };
    let proc = p.process.clone().unwrap_or_default();
    let mut s = format!(
        "- {} (pid {}, user {}) {} — {}, from {} to {}: {}, {}, {} out, {} in\n",
        safe(&proc.name),
        proc.pid,
        safe(&proc.user),
        safe(&p.phase),
        safe(&e.event_id),
        time(p.first_ms, zone),
        time(p.last_ms, zone),
        count(p.peers, "peer", "peers"),
        count(p.connections, "connection", "connections"),
        human_bytes(p.bytes_out),
        human_bytes(p.bytes_in),
    );
    for reason in &p.reasons {
        s.push_str(&format!(
            "    reason {}: {}\n",
            safe(&reason.code),
            safe(&reason.detail)
        ));
    }
    if !p.info_hashes.is_empty() {
        s.push_str(&format!(
            "    info_hash {}\n",
            safe(&p.info_hashes.join(", "))
        ));
    }
    if !p.trackers.is_empty() {
        s.push_str(&format!("    trackers {}\n", safe(&p.trackers.join(", "))));
    }
    if !p.sample_peers.is_empty() {
        s.push_str(&format!(
            "    peers (sample) {}\n",
            safe(&p.sample_peers.join(", "))
        ));
    }
    s
}

/// One table of the report as CSV rows, header first: exact numbers,
/// times in UTC (RFC 3339), lists joined by spaces.
pub fn csv_rows(r: &NetworkReport, table: &str) -> Vec<Vec<String>> {
    match table {
        "processes" => csv_processes(r),
        "peers" => csv_peers(r),
        "timeline" => csv_timeline(r),
        "p2p" => csv_p2p(r),
        _ => csv_gaps(r),
    }
}

fn header(h: &[&str]) -> Vec<String> {
    h.iter().map(|s| (*s).to_owned()).collect()
}

fn spaced(v: &[String]) -> String {
    v.join(" ")
}

fn csv_processes(r: &NetworkReport) -> Vec<Vec<String>> {
    let t = kiroku_common::rfc3339_ms;
    let mut rows = vec![header(&[
        "process",
        "exe",
        "user",
        "pids",
        "connections",
        "peers",
        "bytes_out",
        "bytes_in",
        "first",
        "last",
        "p2p",
    ])];
    for p in &r.processes {
        rows.push(vec![
            p.process.clone(),
            p.exe.clone(),
            p.user.clone(),
            p.pids
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(" "),
            p.connections.to_string(),
            p.peers.to_string(),
            p.bytes_out.to_string(),
            p.bytes_in.to_string(),
            t(p.first_ms),
            t(p.last_ms),
            p.p2p.to_string(),
        ]);
    }
    rows
}

fn csv_peers(r: &NetworkReport) -> Vec<Vec<String>> {
    let t = kiroku_common::rfc3339_ms;
    let mut rows = vec![header(&[
        "remote_ip",
        "remote_name",
        "ports",
        "processes",
        "connections",
        "bytes_out",
        "bytes_in",
        "first",
        "last",
    ])];
    for p in &r.peers {
        rows.push(vec![
            p.remote_ip.clone(),
            p.remote_name.clone(),
            p.ports
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(" "),
            spaced(&p.processes),
            p.connections.to_string(),
            p.bytes_out.to_string(),
            p.bytes_in.to_string(),
            t(p.first_ms),
            t(p.last_ms),
        ]);
    }
    rows
}

fn csv_timeline(r: &NetworkReport) -> Vec<Vec<String>> {
    let t = kiroku_common::rfc3339_ms;
    let mut rows = vec![header(&["start", "bytes_out", "bytes_in", "connections"])];
    for b in &r.timeline {
        rows.push(vec![
            t(b.start_ms),
            b.bytes_out.to_string(),
            b.bytes_in.to_string(),
            b.connections.to_string(),
        ]);
    }
    rows
}

fn csv_p2p(r: &NetworkReport) -> Vec<Vec<String>> {
    let t = kiroku_common::rfc3339_ms;
    let mut rows = vec![header(&[
        "event_id",
        "episode_id",
        "phase",
        "process",
        "pid",
        "user",
        "reasons",
        "peers",
        "connections",
        "bytes_out",
        "bytes_in",
        "first",
        "last",
        "info_hashes",
        "trackers",
    ])];
    for e in &r.p2p {
        let Some(p) = p2p_of(e) else { continue };
        let proc = p.process.clone().unwrap_or_default();
        let codes: Vec<String> = p.reasons.iter().map(|x| x.code.clone()).collect();
        rows.push(vec![
            e.event_id.clone(),
            p.episode_id.clone(),
            p.phase.clone(),
            proc.name,
            proc.pid.to_string(),
            proc.user,
            spaced(&codes),
            p.peers.to_string(),
            p.connections.to_string(),
            p.bytes_out.to_string(),
            p.bytes_in.to_string(),
            t(p.first_ms),
            t(p.last_ms),
            spaced(&p.info_hashes),
            spaced(&p.trackers),
        ]);
    }
    rows
}

fn csv_gaps(r: &NetworkReport) -> Vec<Vec<String>> {
    let t = kiroku_common::rfc3339_ms;
    let mut rows = vec![header(&[
        "event_id", "time", "reason", "count", "first", "last", "detail",
    ])];
    for e in &r.gaps {
        let Some(Kind::Gap(g)) = &e.kind else {
            continue;
        };
        rows.push(vec![
            e.event_id.clone(),
            t(corrected_ms(e)),
            g.reason.clone(),
            g.count.to_string(),
            t(g.first_ms),
            t(g.last_ms),
            g.detail.clone(),
        ]);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiroku_proto::TrafficBucket;

    #[test]
    fn the_chart_scales_out_and_in_to_the_busiest_bucket() {
        let b = |start_ms, bytes_out, bytes_in, connections| TrafficBucket {
            start_ms,
            bytes_out,
            bytes_in,
            connections,
        };
        let day = 1_796_515_200_000; // 2026-12-06T00:00:00Z
        let r = NetworkReport {
            bucket_ms: 3_600_000,
            timeline: vec![
                b(day, 0, 0, 0),
                b(day + 3_600_000, 1_000, 3_000, 2),
                b(day + 7_200_000, 4_000, 4_000, 1),
            ],
            ..Default::default()
        };
        let mut r = r;
        // A little in beside much out: still one mark of its own.
        r.timeline.push(b(day + 10_800_000, 7_000, 1, 0));
        let chart = timeline_chart(&r, &Zone::utc());
        let lines: Vec<&str> = chart.lines().collect();
        assert_eq!(lines[0], "2026-12-06 00:00  ");
        assert_eq!(
            lines[1],
            format!(
                "2026-12-06 01:00  {}{} 1.0 KB out, 3.0 KB in, 2 connections",
                "█".repeat(5),
                "▒".repeat(15)
            )
        );
        assert_eq!(
            lines[2],
            format!(
                "2026-12-06 02:00  {}{} 4.0 KB out, 4.0 KB in, 1 connection",
                "█".repeat(20),
                "▒".repeat(20)
            )
        );
        assert!(
            lines[3].starts_with(&format!("2026-12-06 03:00  {}▒ ", "█".repeat(35))),
            "{}",
            lines[3]
        );
    }

    #[test]
    fn labels_and_spans() {
        assert_eq!(span_name(300_000), "5m");
        assert_eq!(span_name(86_400_000), "1d");
        assert_eq!(span_name(1_500), "1500ms");
        let (z, day) = (Zone::fixed(540), 1_796_515_200_000);
        assert_eq!(bucket_label(day, 86_400_000, &z), "2026-12-06");
        assert_eq!(bucket_label(day, 300_000, &z), "2026-12-06 09:00");
        assert_eq!(bucket_label(day + 5_000, 5_000, &z), "2026-12-06 09:00:05");
        assert_eq!(span("5m"), Ok(300_000));
        assert!(span("0s").is_err());
    }
}
