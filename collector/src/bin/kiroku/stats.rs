//! `kiroku stats`: the events a search matches, counted by group (the
//! collector's Aggregate call), as a bar chart, JSON or CSV.

use std::fmt::Write as _;

use kiroku_common::vocabulary::{STATS_GROUP_BYS, STATS_TIME_BUCKETS};
use kiroku_proto::{AggregateRequest, AggregateResponse};
use unicode_width::UnicodeWidthStr;

use crate::client::ConnectArgs;
use crate::investigate::human_bytes;
use crate::zone::Zone;

#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    /// What to count by: a value of the events or a time bucket (hour, day:
    /// in --tz; hour-of-day, weekday: when in the day or week).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(STATS_GROUP_BYS))]
    by: String,
    /// Groups to show, the largest first; the rest are summed as "other".
    /// Default 10; for hour and day every bucket (over --top: the newest).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    top: Option<u32>,
    /// The counts as one JSON object (the Aggregate response).
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// The counts as CSV: row (group, other, none, total), key, events,
    /// bytes, start (RFC 3339, hour and day buckets).
    #[arg(long)]
    csv: bool,
    #[command(flatten)]
    filter: crate::filters::SearchArgs,
}

pub async fn run(connect: &ConnectArgs, a: StatsArgs, zone: &Zone) -> anyhow::Result<()> {
    let filter = crate::filters::search_request(a.filter, zone)?;
    // The collector cuts hours and days in an IANA zone; a POSIX `TZ`
    // rule has no name to send.
    let time_zone = match zone.iana_name() {
        Some(name) => name.to_owned(),
        None if STATS_TIME_BUCKETS.contains(&a.by.as_str()) => {
            anyhow::bail!(
                "--by {}: time buckets need an IANA time zone (Asia/Tokyo); {} has no name: give --tz",
                a.by,
                zone.describe()
            )
        }
        None => String::new(),
    };
    let req = AggregateRequest {
        filter: Some(filter),
        by: a.by,
        top: a.top.unwrap_or(0),
        time_zone,
    };
    let mut q = connect.query().await?;
    let r = q.aggregate(req).await?.into_inner();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else if a.csv {
        let mut w = csv::Writer::from_writer(std::io::stdout().lock());
        for row in csv_rows(&r) {
            w.write_record(&row)?;
        }
        w.flush()?;
    } else {
        let width = comfy_table::Table::new().width().map(usize::from);
        print!("{}", chart(&r, width));
    }
    Ok(())
}

/// The rows of `--csv`, header first. Values are exact (keys unescaped:
/// the csv writer quotes what needs quoting).
fn csv_rows(r: &AggregateResponse) -> Vec<[String; 5]> {
    let start = |ms: i64| {
        if ms == 0 {
            String::new()
        } else {
            kiroku_common::rfc3339_ms(ms)
        }
    };
    let mut rows = vec![["row", "key", "events", "bytes", "start"].map(String::from)];
    for g in &r.groups {
        rows.push([
            "group".into(),
            g.key.clone(),
            g.count.to_string(),
            g.bytes.to_string(),
            start(g.start_ms),
        ]);
    }
    for (row, key, count, bytes, show) in [
        (
            "other",
            format!("{} groups", r.other_groups),
            r.other_count,
            r.other_bytes,
            r.other_groups > 0,
        ),
        (
            "none",
            String::new(),
            r.none_count,
            r.none_bytes,
            r.none_count > 0,
        ),
        ("total", String::new(), r.total_count, r.total_bytes, true),
    ] {
        if show {
            rows.push([
                row.into(),
                key,
                count.to_string(),
                bytes.to_string(),
                String::new(),
            ]);
        }
    }
    rows
}

/// Outside text (an attachment name, an address) made safe to print
/// (`quote::terminal`, as everywhere in the CLI).
fn visible(s: &str) -> String {
    kiroku_common::quote::terminal(s).into_owned()
}

/// Cut to `max` display columns (an ellipsis marks the cut).
fn fit(s: &str, max: usize) -> String {
    if s.width() <= max {
        return s.to_string();
    }
    let mut out = String::new();
    for c in s.chars() {
        if out.width() + c.to_string().width() + 1 > max {
            break;
        }
        out.push(c);
    }
    out.push('…');
    out
}

/// A bar of `value / max` of `width` columns, in eighths of a column.
fn bar(value: u64, max: u64, width: usize) -> String {
    const PARTS: [char; 7] = ['▏', '▎', '▍', '▌', '▋', '▊', '▉'];
    if max == 0 || value == 0 {
        return String::new();
    }
    let eighths = (u128::from(value) * (width as u128) * 8).div_ceil(u128::from(max)) as usize;
    let mut s = "█".repeat(eighths / 8);
    if let Some(part) = (eighths % 8).checked_sub(1) {
        s.push(PARTS[part]);
    }
    s
}

/// Columns of the key, at most.
const KEY_MAX: usize = 40;
/// Columns of a bar when the terminal's width is not known.
const BAR_DEFAULT: usize = 40;

/// The counts as a table with a bar per group, scaled to the largest; the
/// bars fill what `width` (the terminal's) leaves, else 40 columns.
fn chart(r: &AggregateResponse, width: Option<usize>) -> String {
    let mut lines: Vec<(String, u64, u64, bool)> = r
        .groups
        .iter()
        .map(|g| (visible(&g.key), g.count, g.bytes, true))
        .collect();
    if r.other_groups > 0 {
        let s = if r.other_groups == 1 { "" } else { "s" };
        lines.push((
            format!("({} other group{s})", r.other_groups),
            r.other_count,
            r.other_bytes,
            false,
        ));
    }
    if r.none_count > 0 {
        lines.push((
            format!("(no {})", r.by.replace('-', " ")),
            r.none_count,
            r.none_bytes,
            false,
        ));
    }
    lines.push(("total".into(), r.total_count, r.total_bytes, false));
    let key_w = lines
        .iter()
        .map(|l| l.0.width())
        .chain([r.by.width()])
        .max()
        .unwrap_or(0)
        .min(KEY_MAX);
    let count_w = lines
        .iter()
        .map(|l| l.1.to_string().len())
        .chain(["events".len()])
        .max()
        .unwrap_or(0);
    let bytes_w = lines
        .iter()
        .map(|l| human_bytes(l.2).len())
        .chain(["bytes".len()])
        .max()
        .unwrap_or(0);
    let fixed = key_w + 2 + count_w + 2 + bytes_w + 2;
    let bar_w = match width {
        Some(w) => w.saturating_sub(fixed + 1).max(10),
        None => BAR_DEFAULT,
    };
    let max = r.groups.iter().map(|g| g.count).max().unwrap_or(0);
    let pad = |s: &str| {
        let s = fit(s, key_w);
        let fill = key_w.saturating_sub(s.width());
        format!("{s}{}", " ".repeat(fill))
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}  {:>count_w$}  {:>bytes_w$}",
        pad(&r.by),
        "events",
        "bytes"
    );
    for (key, count, bytes, drawn) in &lines {
        let b = if *drawn {
            bar(*count, max, bar_w)
        } else {
            String::new()
        };
        let line = format!(
            "{}  {count:>count_w$}  {:>bytes_w$}  {b}",
            pad(key),
            human_bytes(*bytes)
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    let mut notes = Vec::new();
    if r.groups.first().is_some_and(|g| g.start_ms != 0)
        || r.by.contains("hour")
        || r.by == "weekday"
    {
        notes.push(format!("times in {}", r.time_zone));
    }
    if r.multi_valued {
        notes.push(format!(
            "an event with several {}s counts in each",
            r.by.replace('-', " ")
        ));
    }
    if !notes.is_empty() {
        let _ = writeln!(out, "({})", notes.join("; "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiroku_proto::AggregateGroup;

    fn group(key: &str, count: u64, bytes: u64) -> AggregateGroup {
        AggregateGroup {
            key: key.into(),
            count,
            bytes,
            start_ms: 0,
        }
    }

    fn response() -> AggregateResponse {
        AggregateResponse {
            by: "recipient-domain".into(),
            groups: vec![
                group("partner.example", 80, 2_000_000),
                group("gmail.com", 40, 1_500),
                group("\u{1b}[2Jevil\u{202e}txt.exe", 1, 10),
            ],
            other_count: 5,
            other_bytes: 50,
            other_groups: 3,
            total_count: 130,
            total_bytes: 2_001_600,
            none_count: 4,
            none_bytes: 40,
            multi_valued: true,
            time_zone: "UTC".into(),
        }
    }

    #[test]
    fn bars_in_eighths() {
        for (v, max, w, want) in [
            (0, 10, 8, ""),
            (10, 10, 4, "████"),
            (5, 10, 4, "██"),
            (1, 16, 1, "▏"),
            (3, 8, 1, "▍"),
            (1, 1_000_000, 40, "▏"),
            (u64::MAX, u64::MAX, 2, "██"),
        ] {
            assert_eq!(bar(v, max, w), want, "{v}/{max} of {w}");
        }
    }

    #[test]
    fn chart_without_a_terminal() {
        let c = chart(&response(), None);
        let want = [
            "recipient-domain              events   bytes".to_string(),
            format!(
                "partner.example                   80  2.0 MB  {}",
                "█".repeat(40)
            ),
            format!(
                "gmail.com                         40  1.5 KB  {}",
                "█".repeat(20)
            ),
            "\\u{1b}[2Jevil\\u{202e}txt.exe       1    10 B  ▌".to_string(),
            "(3 other groups)                   5    50 B".to_string(),
            "(no recipient domain)              4    40 B".to_string(),
            "total                            130  2.0 MB".to_string(),
            "(an event with several recipient domains counts in each)".to_string(),
        ];
        assert_eq!(c.lines().collect::<Vec<_>>(), want);
        assert!(!c.contains('\u{1b}') && !c.contains('\u{202e}'), "{c}");
    }

    #[test]
    fn chart_fills_the_terminal() {
        let c = chart(&response(), Some(100));
        for line in c.lines() {
            assert!(line.width() <= 100, "{line}");
        }
        let first = c.lines().nth(1).expect("a group");
        assert_eq!(first.width(), 99, "{first}");
        // A narrow terminal still shows a bar of 10.
        let c = chart(&response(), Some(20));
        assert!(
            c.lines()
                .nth(1)
                .expect("a group")
                .ends_with(&"█".repeat(10))
        );
    }

    #[test]
    fn long_and_wide_keys_are_cut_to_their_column() {
        let mut r = response();
        r.groups[1].key = "報告".repeat(30);
        let c = chart(&r, None);
        let line = c.lines().nth(2).expect("a group");
        assert!(
            line.starts_with(&format!("{}…", "報告".repeat(9) + "報")),
            "{line}"
        );
        // 19 double-width characters and the ellipsis: 39 of 40 columns.
        assert_eq!(fit(&"報告".repeat(30), KEY_MAX).width(), 39);
    }

    #[test]
    fn csv_rows_name_what_they_are() {
        let mut r = response();
        r.groups[0].start_ms = 86_400_000;
        let rows = csv_rows(&r);
        assert_eq!(rows[0], ["row", "key", "events", "bytes", "start"]);
        assert_eq!(
            rows[1],
            [
                "group",
                "partner.example",
                "80",
                "2000000",
                "1970-01-02T00:00:00.000Z"
            ]
        );
        assert_eq!(
            rows[3][1], "\u{1b}[2Jevil\u{202e}txt.exe",
            "CSV stays exact"
        );
        assert_eq!(rows[4], ["other", "3 groups", "5", "50", ""]);
        assert_eq!(rows[5], ["none", "", "4", "40", ""]);
        assert_eq!(rows[6], ["total", "", "130", "2001600", ""]);
        r.other_groups = 0;
        r.none_count = 0;
        assert_eq!(csv_rows(&r).len(), 5);
    }
}
