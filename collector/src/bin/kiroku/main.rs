//! `kiroku`: the investigator and admin CLI — certificates, search, show,
//! raw download, hosts, trace, alerts, reports — and `kiroku quickstart`, which runs a collector and
//! an agent on loopback in one command.

mod client;
mod investigate;
mod output;
mod quickstart;
mod stats;

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kiroku_common::pki::{PkiDir, Role};
use kiroku_proto::{GetEventRequest, GetRawRequest, ListHostsRequest, SearchRequest};
use tokio_stream::StreamExt;

#[derive(Parser)]
#[command(version, about = "Kiroku investigator and admin CLI")]
struct Cli {
    #[command(flatten)]
    connect: client::ConnectArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Manage the private CA and certificates.
    Certs {
        #[command(subcommand)]
        cmd: CertsCmd,
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
    /// The audit log of queries, its hash chain checked (admins only).
    /// Exits with status 3 when the chain is broken.
    Audit {
        /// Entries since: RFC 3339, a date, or relative (24h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// Newest entries to show.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Start a collector and an agent on loopback, ready to capture mail.
    Quickstart(quickstart::Args),
}

#[derive(Subcommand)]
enum CertsCmd {
    /// Create a new CA (ca.pem, ca.key) in the PKI directory.
    Init {
        #[arg(long, default_value = "kiroku-pki", env = "KIROKU_PKI")]
        dir: PathBuf,
    },
    /// Issue a key and certificate carrying a role and a name.
    Issue {
        #[arg(long, default_value = "kiroku-pki", env = "KIROKU_PKI")]
        dir: PathBuf,
        /// agent, investigator, admin or collector.
        #[arg(long)]
        role: Role,
        /// Agent id, user name or collector host name.
        #[arg(long)]
        name: String,
        /// Extra DNS names or IP addresses the holder serves under
        /// (collector certificates), repeatable.
        #[arg(long = "san")]
        sans: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
    /// Revoke a certificate: adds it to the CA's revocation list and
    /// rewrites crl.pem. A collector with `crl = ".../crl.pem"` picks it up
    /// within seconds, without a restart. With no --cert, only rewrites
    /// crl.pem (to create an empty one, or renew it before it expires).
    Revoke {
        #[arg(long, default_value = "kiroku-pki", env = "KIROKU_PKI")]
        dir: PathBuf,
        /// The certificate to revoke (PEM).
        #[arg(long)]
        cert: Option<PathBuf>,
        /// Days until the list's nextUpdate.
        #[arg(long, default_value_t = 30)]
        days: u32,
    },
}

#[derive(clap::Args, Debug)]
struct SearchCmd {
    #[command(flatten)]
    filter: SearchArgs,
    /// Most events to show.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Every match (streamed), ignoring --limit.
    #[arg(long)]
    all: bool,
    /// JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

/// The filters of a search (also those of `stats`).
#[derive(clap::Args, Debug)]
struct SearchArgs {
    /// Start of the time range: RFC 3339, YYYY-MM-DD, or relative (30m, 24h, 7d).
    #[arg(long)]
    from: Option<String>,
    /// End of the time range (exclusive), same forms as --from.
    #[arg(long)]
    to: Option<String>,
    #[arg(long)]
    host: Option<String>,
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    agent: Option<String>,
    /// Any envelope or header address.
    #[arg(long)]
    address: Option<String>,
    /// MAIL FROM or From:.
    #[arg(long)]
    sender: Option<String>,
    /// RCPT TO, To:, Cc: or Bcc.
    #[arg(long)]
    recipient: Option<String>,
    /// Full text over subject and body.
    #[arg(long)]
    text: Option<String>,
    #[arg(long)]
    subject: Option<String>,
    #[arg(long)]
    has_attachment: bool,
    /// Words of an attachment's file name.
    #[arg(long)]
    attachment: Option<String>,
    /// SHA-256 of an attachment, a raw message or a file.
    #[arg(long)]
    sha256: Option<String>,
    #[arg(long)]
    tag: Option<String>,
    /// Events tagged by this alert rule ("*" for any alert).
    #[arg(long)]
    alert: Option<String>,
    /// delivered, rejected, aborted, unknown or captured.
    #[arg(long)]
    outcome: Option<String>,
    /// email, file, host_change or gap (what an agent could not record).
    #[arg(long)]
    kind: Option<String>,
    /// File events: words of the path or old path ("alice/q3 report").
    #[arg(long)]
    path: Option<String>,
    /// File events: create, modify, delete, rename, copy_to_removable,
    /// overflow, watch_lost, watch_restored, volume_mounted,
    /// volume_unmounted.
    #[arg(long = "op")]
    operation: Option<String>,
    /// File events on removable volumes only.
    #[arg(long)]
    removable: bool,
    /// Filter and order by corrected time (each agent's clock corrected by
    /// its measured offset to the collector) instead of the agents' clocks.
    #[arg(long)]
    corrected_time: bool,
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
                    "kiroku: {doing}collector refused: {:?}: {}",
                    status.code(),
                    status.message()
                );
            } else {
                eprintln!("kiroku: {e:#}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Certs { cmd } => certs(cmd),
        Cmd::Quickstart(args) => quickstart::run(args).await,
        Cmd::Search(args) => search(&cli.connect, *args).await,
        Cmd::Stats(args) => stats::run(&cli.connect, *args).await,
        Cmd::Trace(args) => investigate::trace(&cli.connect, args).await,
        Cmd::Alerts(args) => investigate::alerts(&cli.connect, args).await,
        Cmd::Report { cmd } => investigate::report(&cli.connect, cmd).await,
        Cmd::Show { event_id, json } => {
            let mut q = cli.connect.query().await?;
            let ev = q
                .get_event(GetEventRequest { event_id })
                .await?
                .into_inner();
            if json {
                println!("{}", output::json(&ev));
            } else {
                print!("{}", output::detail(&ev));
            }
            Ok(())
        }
        Cmd::Raw { event_id, output } => raw(&cli.connect, event_id, output).await,
        Cmd::Hosts { json } => {
            let mut q = cli.connect.query().await?;
            let resp = q.list_hosts(ListHostsRequest {}).await?.into_inner();
            let hosts = resp.hosts;
            if !resp.ingest_paused.is_empty() {
                eprintln!("WARNING: {}", resp.ingest_paused);
            }
            if json {
                for h in &hosts {
                    println!("{}", serde_json::to_string(h)?);
                }
            } else {
                println!("{}", output::hosts(&hosts));
            }
            if resp.revocation_list_expired {
                eprintln!("WARNING: {}", resp.revocation_list);
            } else if !resp.revocation_list.is_empty() && !json {
                println!("{}", resp.revocation_list);
            }
            Ok(())
        }
        Cmd::Audit { since, limit, json } => {
            let now = kiroku_common::now_ms();
            let from_ms = since
                .as_deref()
                .map(|t| parse_time(t, now))
                .transpose()?
                .unwrap_or(0);
            let mut q = cli.connect.query().await?;
            let r = q
                .audit(kiroku_proto::AuditRequest { from_ms, limit })
                .await?
                .into_inner();
            if json {
                for e in &r.entries {
                    println!("{}", serde_json::to_string(e)?);
                }
            } else {
                println!("{}", output::audit(&r.entries));
            }
            if r.chain_ok {
                eprintln!(
                    "audit chain intact: {} entries, head {} (keep a copy elsewhere to anchor it)",
                    r.total, r.head_hash
                );
                Ok(())
            } else {
                eprintln!("AUDIT CHAIN BROKEN: {}", r.problem);
                std::process::exit(3);
            }
        }
    }
}

fn certs(cmd: CertsCmd) -> anyhow::Result<()> {
    match cmd {
        CertsCmd::Init { dir } => {
            let pki = PkiDir::new(&dir);
            pki.init_ca("Kiroku CA")?;
            println!(
                "created CA {} (keep {} secret)",
                pki.ca_cert().display(),
                pki.ca_key().display()
            );
        }
        CertsCmd::Issue {
            dir,
            role,
            name,
            sans,
            days,
        } => {
            let pki = PkiDir::new(&dir);
            let (cert, key) = pki.issue(role, &name, &sans, days)?;
            println!(
                "issued {role} certificate for {name}: {} (key {})",
                cert.display(),
                key.display()
            );
        }
        CertsCmd::Revoke { dir, cert, days } => {
            let pki = PkiDir::new(&dir);
            match cert {
                Some(cert) => {
                    let (crl, who) = pki.revoke(&cert, days)?;
                    println!(
                        "revoked {who} ({}); wrote {}",
                        cert.display(),
                        crl.display()
                    );
                }
                None => {
                    let crl = pki.write_crl(days)?;
                    println!("wrote {}", crl.display());
                }
            }
        }
    }
    Ok(())
}

/// Parses a time argument into Unix milliseconds.
fn parse_time(s: &str, now_ms: i64) -> anyhow::Result<i64> {
    let s = s.trim();
    let units = [
        ("ms", 1i64),
        ("s", 1000),
        ("m", 60_000),
        ("h", 3_600_000),
        ("d", 86_400_000),
        ("w", 604_800_000),
    ];
    for (suffix, mult) in units.iter().rev() {
        if let Some(n) = s.strip_suffix(suffix).and_then(|n| n.parse::<i64>().ok()) {
            return Ok(now_ms - n * mult);
        }
    }
    if let Ok(t) = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return Ok((t.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    let date_fmt = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = time::Date::parse(s, &date_fmt) {
        return Ok(d.midnight().assume_utc().unix_timestamp() * 1000);
    }
    anyhow::bail!(
        "cannot read time {s:?}: use RFC 3339 (2026-11-22T10:00:00Z), a date (2026-11-22) or a relative time (30m, 24h, 7d)"
    )
}

async fn search(connect: &client::ConnectArgs, cmd: SearchCmd) -> anyhow::Result<()> {
    let mut req = search_request(cmd.filter)?;
    req.page_size = cmd.limit;
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
        println!("{}", output::table(&events));
        eprintln!("{} of {} matching events", events.len(), total);
    }
    Ok(())
}

/// The search request of the filter flags (no page set).
fn search_request(a: SearchArgs) -> anyhow::Result<SearchRequest> {
    let now = kiroku_common::now_ms();
    let s = |o: Option<String>| o.unwrap_or_default();
    let mut req = SearchRequest {
        from_ms: a
            .from
            .as_deref()
            .map(|t| parse_time(t, now))
            .transpose()?
            .unwrap_or(0),
        to_ms: a
            .to
            .as_deref()
            .map(|t| parse_time(t, now))
            .transpose()?
            .unwrap_or(0),
        host: s(a.host),
        user: s(a.user),
        agent_id: s(a.agent),
        address: s(a.address),
        sender: s(a.sender),
        recipient: s(a.recipient),
        text: s(a.text),
        subject: s(a.subject),
        has_attachment: a.has_attachment,
        attachment_name: s(a.attachment),
        sha256: s(a.sha256).to_lowercase(),
        tag: s(a.tag),
        alert: s(a.alert),
        outcome: s(a.outcome),
        kind: s(a.kind),
        path: s(a.path),
        operation: s(a.operation),
        removable: a.removable,
        page_size: 0,
        page_token: String::new(),
        corrected_time: a.corrected_time,
    };
    if !req.operation.is_empty() {
        req.operation = kiroku_common::vocabulary::file_operation(&req.operation)
            .map_err(|e| anyhow::anyhow!("{}", e.replacen(": use", " for --op: use", 1)))?;
    }
    Ok(req)
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
            "{event_id}: the download failed after {n} bytes{}",
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
        eprintln!("wrote {n} bytes of {event_id} to {}", output.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn time_arguments() {
        let now = 1_000_000_000_000;
        assert_eq!(
            super::parse_time("7d", now).ok(),
            Some(now - 7 * 86_400_000)
        );
        assert_eq!(super::parse_time("30m", now).ok(), Some(now - 1_800_000));
        assert_eq!(super::parse_time("1970-01-02", now).ok(), Some(86_400_000));
        assert_eq!(
            super::parse_time("1970-01-01T00:00:01Z", now).ok(),
            Some(1000)
        );
        assert!(super::parse_time("last tuesday", now).is_err());
    }
}
