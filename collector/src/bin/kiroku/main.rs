//! `kiroku`: the investigator and admin CLI — certificates, search, show,
//! raw download, hosts, trace, alerts, reports — and `kiroku quickstart`, which runs a collector and
//! an agent on loopback in one command.

mod agents;
mod annotations;
mod audit;
mod certs;
mod checkpoint;
mod client;
mod delivery;
mod enroll_token;
mod export;
mod filters;
mod holds;
mod investigate;
mod maintenance;
mod netreport;
mod output;
mod quickstart;
mod retention;
mod stats;
mod verify;
mod zone;

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kiroku_common::quote::terminal;
use kiroku_proto::{GetEventRequest, GetRawRequest, ListHostsRequest};
use tokio_stream::StreamExt;

#[derive(Parser)]
#[command(version, about = "Kiroku investigator and admin CLI")]
struct Cli {
    #[command(flatten)]
    connect: client::ConnectArgs,
    /// Time zone to show and read times in, an IANA name (Asia/Tokyo).
    /// Default: `timezone` in the CLI config, then TZ, then the system's
    /// zone, then UTC. --json and --csv stay in UTC.
    #[arg(long, global = true, value_name = "ZONE")]
    tz: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Manage the private CA and certificates.
    Certs {
        #[command(subcommand)]
        cmd: certs::CertsCmd,
    },
    /// Search events, newest first.
    Search(Box<SearchCmd>),
    /// Count the events a search matches, grouped (by user, domain, client
    /// IP, outcome, hour, ...), with bytes and a bar chart.
    Stats(Box<stats::StatsArgs>),
    /// Show one event in full.
    Show {
        event_id: String,
        /// JSON instead of the detail view.
        #[arg(long)]
        json: bool,
    },
    /// Download the original message (.eml), byte-identical.
    Raw {
        event_id: String,
        /// Output file ("-" for standard output).
        #[arg(short, long)]
        output: PathBuf,
    },
    /// List the hosts (agents) the collector knows.
    Hosts {
        #[arg(long)]
        json: bool,
        /// Only agents not seen for at least this long (silent agents), and
        /// not connected or retired: e.g. 30d, 12h, 2w.
        #[arg(long, value_name = "SPAN", value_parser = stale_span)]
        stale: Option<i64>,
    },
    /// Agents as accounts: retire one that no longer reports (admins).
    Agents {
        #[command(subcommand)]
        cmd: agents::AgentsCmd,
    },
    /// Everywhere a content hash went (mail attachments, files, copies to
    /// removable media), oldest first.
    Trace(investigate::TraceArgs),
    /// Alerts fired by the collector's rules (replay, then --follow).
    Alerts(investigate::AlertsArgs),
    /// Reports over a time range.
    Report {
        #[command(subcommand)]
        cmd: investigate::ReportCmd,
    },
    /// The audit log of queries and administrative actions, its hash chain
    /// checked (admins only). Exits with status 3 when the chain is broken.
    Audit(audit::AuditArgs),
    /// Check the store: chains, checkpoints, blobs, index, audit log
    /// (admins only). Exits with status 3 when anything was altered.
    Verify(verify::VerifyArgs),
    /// A case bundle: the events a search selects, with their raw mail,
    /// recorded bytes, proofs, checkpoints and audit entries, in a signed
    /// manifest, written into a new or empty directory (admins only).
    Export(Box<export::ExportArgs>),
    /// Check a case bundle offline with the CA certificate (--ca) alone.
    /// Exits with status 3 when anything is missing, extra or altered.
    VerifyBundle(export::VerifyBundleArgs),
    /// Signed checkpoints of the journal, checked offline.
    #[command(subcommand)]
    Checkpoint(checkpoint::CheckpointCmd),
    /// Start a collector and an agent on loopback, ready to capture mail.
    Quickstart(quickstart::Args),
    /// Legal holds: events a case's filter matches are never purged while
    /// the hold is in force (release: admins only).
    #[command(subcommand)]
    Hold(holds::HoldCmd),
    /// Retention: what the policy (or a candidate) would mark and free.
    Retention {
        #[command(subcommand)]
        cmd: retention::RetentionCmd,
    },
    /// Erase a person's records on request (--user, --address or any
    /// search filter; --reason; holds win), or `purge undo` (admins only).
    Purge(Box<retention::PurgeArgs>),
    /// The daily maintenance window: status, start, stop, report.
    Maintenance {
        #[command(subcommand)]
        cmd: maintenance::MaintenanceCmd,
    },
}

#[derive(clap::Args, Debug)]
struct SearchCmd {
    #[command(flatten)]
    filter: filters::SearchArgs,
    /// Most events to show.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Every match (streamed), ignoring --limit.
    #[arg(long)]
    all: bool,
    /// JSON lines instead of a table.
    #[arg(long)]
    json: bool,
    /// Oldest first (default: newest first).
    #[arg(long)]
    asc: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    kiroku_common::init_logging("warn");
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kiroku: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            if let Some(status) = e.downcast_ref::<tonic::Status>() {
                // What the CLI was doing (a context), then the refusal.
                let doing = e
                    .chain()
                    .next()
                    .filter(|c| c.downcast_ref::<tonic::Status>().is_none())
                    .map(|c| format!("{c}: "))
                    .unwrap_or_default();
                eprintln!(
                    "kiroku: {}collector refused: {:?}: {}",
                    terminal(&doing),
                    status.code(),
                    terminal(status.message())
                );
            } else {
                eprintln!("kiroku: {}", terminal(&format!("{e:#}")));
            }
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // Commands that show or read times resolve the zone first, so a wrong
    // zone is reported before anything is asked of the collector.
    let zone = || zone::zone(cli.tz.as_deref(), cli.connect.config_file()?.as_ref());
    match cli.cmd {
        Cmd::Certs {
            cmd: certs::CertsCmd::EnrollToken(args),
        } => enroll_token::run(&cli.connect, args).await,
        Cmd::Certs {
            cmd: certs::CertsCmd::EnrollTokens(args),
        } => enroll_token::list(&cli.connect, args, &zone()?).await,
        Cmd::Certs {
            cmd: certs::CertsCmd::RevokeEnrollTokens(args),
        } => enroll_token::revoke(&cli.connect, args).await,
        Cmd::Certs { cmd } => certs::run(cmd),
        Cmd::Checkpoint(cmd) => checkpoint::run(cmd),
        Cmd::Quickstart(args) => quickstart::run(args).await,
        Cmd::Search(args) => search(&cli.connect, *args, &zone()?).await,
        Cmd::Stats(args) => stats::run(&cli.connect, *args, &zone()?).await,
        Cmd::Trace(args) => investigate::trace(&cli.connect, args, &zone()?).await,
        Cmd::Alerts(args) => investigate::alerts(&cli.connect, args, &zone()?).await,
        Cmd::Report { cmd } => {
            investigate::report(&cli.connect, cmd, &zone()?, cli.tz.is_some()).await
        }
        Cmd::Show { event_id, json } => {
            let zone = zone()?;
            let mut q = cli.connect.query().await?;
            let ev = q
                .get_event(GetEventRequest {
                    event_id: event_id.clone(),
                })
                .await?
                .into_inner();
            // What the collector derived from the mail's content; a
            // collector without the call still shows the event.
            let ann = match q
                .get_annotations(kiroku_proto::GetAnnotationsRequest { event_id })
                .await
            {
                Ok(a) => Some(a.into_inner()),
                Err(s) if s.code() == tonic::Code::Unimplemented => None,
                Err(s) => return Err(s.into()),
            };
            // Issue 20: a mail's downstream fate from the MTA's log.
            let fate = match &ev.kind {
                Some(kiroku_proto::event::Kind::Email(_)) => match q
                    .get_delivery(GetEventRequest {
                        event_id: ev.event_id.clone(),
                    })
                    .await
                {
                    Ok(d) => Some(d.into_inner()),
                    Err(s) if s.code() == tonic::Code::Unimplemented => None,
                    Err(s) => return Err(s.into()),
                },
                _ => None,
            };
            if json {
                let mut v = output::json(&ev);
                if let (Some(a), Some(o)) = (&ann, v.as_object_mut()) {
                    o.insert("annotations".into(), serde_json::to_value(a)?);
                }
                if let (Some(d), Some(o)) = (&fate, v.as_object_mut()) {
                    o.insert("delivery".into(), serde_json::to_value(d)?);
                }
                println!("{v}");
            } else {
                print!("{}", output::detail(&ev, &zone));
                if let Some(d) = &fate {
                    print!("{}", delivery::detail(d, &zone));
                }
                if let Some(a) = &ann {
                    print!("{}", annotations::detail(a));
                }
            }
            Ok(())
        }
        Cmd::Raw { event_id, output } => raw(&cli.connect, event_id, output).await,
        Cmd::Agents { cmd } => agents::run(&cli.connect, cmd).await,
        Cmd::Hosts { json, stale } => {
            let zone = zone()?;
            let mut q = cli.connect.query().await?;
            let resp = q
                .list_hosts(ListHostsRequest {
                    stale_ms: stale.unwrap_or(0),
                })
                .await?
                .into_inner();
            let hosts = resp.hosts;
            if !resp.ingest_paused.is_empty() {
                eprintln!("WARNING: {}", terminal(&resp.ingest_paused));
            }
            if json {
                for h in &hosts {
                    println!("{}", serde_json::to_string(h)?);
                }
            } else {
                println!("{}", output::hosts(&hosts, &zone));
            }
            // The index rebuild after a schema change: on stdout with the
            // table, on stderr beside JSON lines (which are hosts only).
            if let Some(r) = &resp.index_rebuild {
                if json {
                    eprintln!("{}", r.message);
                } else {
                    println!("{}", r.message);
                }
            }
            // The analysis of stored mail, when it is behind.
            if let Some(a) = resp
                .analysis
                .as_ref()
                .filter(|a| a.pending > 0 || a.failed_batches > 0)
            {
                if json {
                    eprintln!("{}", a.message);
                } else {
                    println!("{}", a.message);
                }
            }
            if resp.revocation_list_expired {
                eprintln!("WARNING: {}", terminal(&resp.revocation_list));
            } else if !resp.revocation_list.is_empty() && !json {
                println!("{}", terminal(&resp.revocation_list));
            }
            Ok(())
        }
        Cmd::Audit(args) => audit::run(&cli.connect, args, &zone()?).await,
        Cmd::Verify(args) => verify::run(&cli.connect, args, &zone()?).await,
        Cmd::Export(args) => export::export(&cli.connect, *args, &zone()?).await,
        Cmd::VerifyBundle(args) => export::verify_bundle(&cli.connect, args),
        Cmd::Hold(cmd) => holds::run(&cli.connect, cmd, &zone()?).await,
        Cmd::Retention { cmd } => retention::retention(&cli.connect, cmd, &zone()?).await,
        Cmd::Purge(args) => retention::purge(&cli.connect, *args, &zone()?).await,
        Cmd::Maintenance { cmd } => maintenance::run(&cli.connect, cmd, &zone()?).await,
    }
}

/// `--stale 30d` in milliseconds.
fn stale_span(s: &str) -> Result<i64, String> {
    kiroku_collector::agents::parse_span(s)
}

async fn search(
    connect: &client::ConnectArgs,
    cmd: SearchCmd,
    zone: &zone::Zone,
) -> anyhow::Result<()> {
    let mut req = filters::search_request(cmd.filter, zone)?;
    req.page_size = cmd.limit;
    req.ascending = cmd.asc;
    let (all, json) = (cmd.all, cmd.json);
    let mut q = connect.query().await?;
    let mut events = Vec::new();
    let total;
    if all {
        req.page_size = 0;
        let mut stream = q.search_stream(req).await?.into_inner();
        while let Some(e) = stream.next().await {
            let e = e?;
            if json {
                println!("{}", output::json(&e));
            } else {
                events.push(e);
            }
        }
        total = events.len() as u64;
    } else {
        let resp = q.search(req).await?.into_inner();
        total = resp.total_hits;
        if json {
            for e in &resp.events {
                println!("{}", output::json(e));
            }
        }
        events = resp.events;
    }
    if !json {
        println!("{}", output::table(&events, zone));
        eprintln!(
            "{} of {}",
            events.len(),
            output::count(total, "matching event", "matching events")
        );
    }
    Ok(())
}

async fn raw(
    connect: &client::ConnectArgs,
    event_id: String,
    output: PathBuf,
) -> anyhow::Result<()> {
    let mut q = connect.query().await?;
    let mut stream = q
        .get_raw(GetRawRequest {
            event_id: event_id.clone(),
        })
        .await?
        .into_inner();
    let to_stdout = output.as_os_str() == "-";
    let tmp = output.with_extension("part");
    let mut out: Box<dyn Write> = if to_stdout {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(
            std::fs::File::create(&tmp)
                .with_context(|| format!("cannot create {}", tmp.display()))?,
        )
    };
    let mut n = 0u64;
    let copied: anyhow::Result<()> = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            n += chunk.data.len() as u64;
            out.write_all(&chunk.data)?;
        }
        out.flush()?;
        Ok(())
    }
    .await;
    drop(out);
    if let Err(e) = copied {
        // Never leave part of a message behind as if it were the message
        // (the collector ends the stream with DataLoss when the stored
        // copy does not match its hash).
        if !to_stdout {
            let _ = std::fs::remove_file(&tmp);
        }
        return Err(e.context(format!(
            "{event_id}: the download failed after {}{}",
            output::count(n, "byte", "bytes"),
            if to_stdout {
                "; what was written to standard output is incomplete and must not be used"
            } else {
                "; nothing was kept"
            }
        )));
    }
    if !to_stdout {
        std::fs::rename(&tmp, &output)
            .with_context(|| format!("cannot write {}", output.display()))?;
        eprintln!(
            "wrote {} of {event_id} to {}",
            output::count(n, "byte", "bytes"),
            output.display()
        );
    }
    Ok(())
}
