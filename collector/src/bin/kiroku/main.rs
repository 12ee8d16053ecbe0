//! `kiroku`: the investigator and admin CLI — certificates, search, show,
//! raw download, hosts, trace, alerts, reports — and `kiroku quickstart`, which runs a collector and
//! an agent on loopback in one command.

mod annotations;
mod audit;
mod checkpoint;
mod client;
mod investigate;
mod output;
mod quickstart;
mod stats;
mod verify;
mod zone;

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kiroku_common::pki::{PkiDir, Role};
use kiroku_common::quote::terminal;
use kiroku_proto::{GetEventRequest, GetRawRequest, ListHostsRequest, SearchRequest};
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
    /// The audit log of queries and administrative actions, its hash chain
    /// checked (admins only). Exits with status 3 when the chain is broken.
    Audit(audit::AuditArgs),
    /// Check the store: chains, checkpoints, blobs, index, audit log
    /// (admins only). Exits with status 3 when anything was altered.
    Verify(verify::VerifyArgs),
    /// Signed checkpoints of the journal, checked offline.
    #[command(subcommand)]
    Checkpoint(checkpoint::CheckpointCmd),
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
        /// agent, investigator, admin, collector or signer (the collector's
        /// checkpoint signing key: `[checkpoint] signing_cert/signing_key`).
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
    /// Oldest first (default: newest first).
    #[arg(long)]
    asc: bool,
}

/// The filters of a search (also those of `stats`).
#[derive(clap::Args, Debug)]
struct SearchArgs {
    /// Start of the time range: a date (YYYY-MM-DD, midnight in the --tz
    /// zone), a local time (YYYY-MM-DD HH:MM), RFC 3339 with an offset, or
    /// relative (30m, 24h, 7d).
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
    /// Any envelope or header address; wildcards * and ? ('*@gmail.com').
    #[arg(long)]
    address: Option<String>,
    /// MAIL FROM or From:; wildcards * and ? ('bob*@example.com').
    #[arg(long)]
    sender: Option<String>,
    /// RCPT TO, To:, Cc: or Bcc; wildcards * and ? ('*@gmail.com': that
    /// domain exactly).
    #[arg(long)]
    recipient: Option<String>,
    /// A sender's domain, subdomains included (example.com finds
    /// bob@mx.example.com).
    #[arg(long)]
    sender_domain: Option<String>,
    /// A recipient's domain, subdomains included.
    #[arg(long)]
    recipient_domain: Option<String>,
    /// SMTP client address or network: 10.1.2.3, 10.1.0.0/16, 2001:db8::/32.
    #[arg(long)]
    client_ip: Option<String>,
    /// Message-ID header (with or without <>).
    #[arg(long)]
    message_id: Option<String>,
    /// The upstream's queue id ("queued as ...").
    #[arg(long)]
    queue_id: Option<String>,
    /// Reply code (550) or class (4xx, 5xx): the final reply or any
    /// recipient's.
    #[arg(long)]
    reply_code: Option<String>,
    /// SMTP AUTH login of the client.
    #[arg(long)]
    auth_user: Option<String>,
    /// Mail flow by the collector's internal_domains: outbound, inbound,
    /// internal or transit.
    #[arg(long)]
    direction: Option<String>,
    /// Mail with a recipient outside the collector's internal_domains.
    #[arg(long, conflicts_with = "internal")]
    external: bool,
    /// Mail whose recipients are all inside the collector's
    /// internal_domains.
    #[arg(long)]
    internal: bool,
    /// Full text over subject, body, the text of the attachments and the
    /// upstream's replies.
    #[arg(long)]
    text: Option<String>,
    #[arg(long)]
    subject: Option<String>,
    #[arg(long)]
    has_attachment: bool,
    /// Words of an attachment's file name.
    #[arg(long)]
    attachment: Option<String>,
    /// Words in the text of an attachment (PDF, Word, Excel, PowerPoint,
    /// text, HTML), searchable once the collector has read it.
    #[arg(long)]
    attachment_text: Option<String>,
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
    /// email, file, host_change, gap (unrecorded) or integrity (a chain break).
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
        Cmd::Certs { cmd } => certs(cmd),
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
            if json {
                let mut v = output::json(&ev);
                if let (Some(a), Some(o)) = (&ann, v.as_object_mut()) {
                    o.insert("annotations".into(), serde_json::to_value(a)?);
                }
                println!("{v}");
            } else {
                print!("{}", output::detail(&ev, &zone));
                if let Some(a) = &ann {
                    print!("{}", annotations::detail(a));
                }
            }
            Ok(())
        }
        Cmd::Raw { event_id, output } => raw(&cli.connect, event_id, output).await,
        Cmd::Hosts { json } => {
            let zone = zone()?;
            let mut q = cli.connect.query().await?;
            let resp = q.list_hosts(ListHostsRequest {}).await?.into_inner();
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

async fn search(
    connect: &client::ConnectArgs,
    cmd: SearchCmd,
    zone: &zone::Zone,
) -> anyhow::Result<()> {
    let mut req = search_request(cmd.filter, zone)?;
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

/// The search request of the filter flags (no page set).
fn search_request(a: SearchArgs, zone: &zone::Zone) -> anyhow::Result<SearchRequest> {
    let now = kiroku_common::now_ms();
    let s = |o: Option<String>| o.unwrap_or_default();
    let mut req = SearchRequest {
        from_ms: a
            .from
            .as_deref()
            .map(|t| zone::parse_time(t, now, zone))
            .transpose()?
            .unwrap_or(0),
        to_ms: a
            .to
            .as_deref()
            .map(|t| zone::parse_time(t, now, zone))
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
        sender_domain: s(a.sender_domain),
        recipient_domain: s(a.recipient_domain),
        client_ip: s(a.client_ip),
        message_id: s(a.message_id),
        queue_id: s(a.queue_id),
        reply_code: s(a.reply_code),
        auth_user: s(a.auth_user),
        direction: s(a.direction),
        external: a.external,
        internal: a.internal,
        ascending: false,
        attachment_text: s(a.attachment_text),
    };
    if !req.operation.is_empty() {
        req.operation = kiroku_common::vocabulary::file_operation(&req.operation)
            .map_err(|e| anyhow::anyhow!("{}", e.replacen(": use", " for --op: use", 1)))?;
    }
    check_search_flags(&req)?;
    Ok(req)
}

/// Checks the values of the mail-flow flags before anything is sent, so
/// the error names the flag (the collector checks them again).
fn check_search_flags(r: &SearchRequest) -> anyhow::Result<()> {
    use kiroku_common::{mail, search};
    let flag =
        |name: &str, res: Result<(), String>| res.map_err(|m| anyhow::anyhow!("--{name}: {m}"));
    for (name, v) in [
        ("address", &r.address),
        ("sender", &r.sender),
        ("recipient", &r.recipient),
    ] {
        if !v.trim().is_empty() {
            flag(name, search::AddressPattern::parse(v).map(drop))?;
        }
    }
    for (name, v) in [
        ("sender-domain", &r.sender_domain),
        ("recipient-domain", &r.recipient_domain),
    ] {
        if !v.trim().is_empty() {
            flag(name, mail::normalise_domain(v).map(drop))?;
        }
    }
    if !r.client_ip.trim().is_empty() {
        flag("client-ip", search::ip_range(&r.client_ip).map(drop))?;
    }
    if !r.reply_code.trim().is_empty() {
        flag("reply-code", search::reply_codes(&r.reply_code).map(drop))?;
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

#[cfg(test)]
mod tests {
    #[test]
    fn bad_flag_values_name_the_flag() {
        use kiroku_proto::SearchRequest;
        for (r, flag) in [
            (
                SearchRequest {
                    client_ip: "10.1.0.0/40".into(),
                    ..Default::default()
                },
                "--client-ip",
            ),
            (
                SearchRequest {
                    reply_code: "7xx".into(),
                    ..Default::default()
                },
                "--reply-code",
            ),
            (
                SearchRequest {
                    recipient_domain: "not a domain".into(),
                    ..Default::default()
                },
                "--recipient-domain",
            ),
            (
                SearchRequest {
                    sender: "*".repeat(9),
                    ..Default::default()
                },
                "--sender",
            ),
        ] {
            let e = super::check_search_flags(&r).expect_err(flag).to_string();
            assert!(e.starts_with(flag), "{e}");
        }
        let ok = SearchRequest {
            client_ip: "2001:db8::/32".into(),
            reply_code: "4xx".into(),
            recipient: "*@gmail.com".into(),
            ..Default::default()
        };
        super::check_search_flags(&ok).expect("valid values");
    }
}
