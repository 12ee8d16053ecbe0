//! `kiroku maintenance status|start|stop|report`: the daily maintenance
//! window — its state, the next start and planned end, protect mode, disk
//! use per part; starting and stopping a run (admins); the summaries of
//! past runs.

use kiroku_collector::maintenance::summary;
use kiroku_common::quote::terminal;
use kiroku_proto::{MaintenanceReport, MaintenanceReportsRequest, MaintenanceRequest};

use crate::client::ConnectArgs;
use crate::zone::{self, Zone};

#[derive(clap::Subcommand, Debug)]
pub enum MaintenanceCmd {
    /// State, next window, the run in progress or unfinished, the last
    /// summary, protect mode, disk use per part, oldest event kept.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Start (or resume) a run now (admins). Inside the window it stops
    /// at the window's end; outside it runs until the end of the store or
    /// `kiroku maintenance stop`.
    Start,
    /// Stop the run in progress after its current batch (admins); it
    /// resumes there in the next window.
    Stop,
    /// The summaries of past runs, newest first.
    Report {
        /// Most summaries to show.
        #[arg(long, default_value_t = 1)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn report_text(r: &MaintenanceReport, zone: &Zone) -> String {
    // Control characters are neutralised line by line (the text's own
    // line breaks stay).
    summary::text(r, &|ms| zone::format(ms, zone))
        .lines()
        .map(|l| terminal(l).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

pub async fn run(connect: &ConnectArgs, cmd: MaintenanceCmd, zone: &Zone) -> anyhow::Result<()> {
    let mut admin = connect.admin().await?;
    match cmd {
        MaintenanceCmd::Status { json } => {
            let s = admin
                .maintenance(MaintenanceRequest {
                    action: "status".into(),
                })
                .await?
                .into_inner();
            if json {
                println!("{}", serde_json::to_string(&s)?);
                return Ok(());
            }
            println!("state: {}", s.state);
            println!(
                "window: {} to {} (zone {})",
                zone::format(s.next_start_ms, zone),
                zone::format(s.planned_end_ms, zone),
                terminal(&s.time_zone)
            );
            println!("{}", terminal(&s.message));
            if s.protect_pending {
                println!(
                    "PROTECT MODE pending: the next run verifies and repairs but purges nothing, because {}",
                    terminal(&s.protect_reason)
                );
            }
            println!(
                "events: {}, marked for purging: {}, holds in force: {}, oldest event kept: {}",
                s.events,
                s.marked,
                s.holds,
                zone::format(s.oldest_event_ms, zone)
            );
            let disk: Vec<String> = s
                .disk
                .iter()
                .map(|d| format!("{} {}", d.part, bytes(d.bytes)))
                .collect();
            println!("disk: {}", disk.join(", "));
            if let Some(c) = &s.current {
                println!("\ncurrent run:\n{}", report_text(c, zone));
            }
            if let Some(l) = &s.last {
                println!("\nlast summary:\n{}", report_text(l, zone));
            }
        }
        MaintenanceCmd::Start | MaintenanceCmd::Stop => {
            let action = if matches!(cmd, MaintenanceCmd::Start) {
                "start"
            } else {
                "stop"
            };
            let s = admin
                .maintenance(MaintenanceRequest {
                    action: action.into(),
                })
                .await?
                .into_inner();
            println!("{}", terminal(&s.message));
        }
        MaintenanceCmd::Report { limit, json } => {
            let r = admin
                .maintenance_reports(MaintenanceReportsRequest { limit })
                .await?
                .into_inner();
            if r.reports.is_empty() && !json {
                println!("no maintenance run has ended yet");
            }
            for rep in &r.reports {
                if json {
                    println!("{}", serde_json::to_string(rep)?);
                } else {
                    println!("{}", report_text(rep, zone));
                }
            }
        }
    }
    Ok(())
}
