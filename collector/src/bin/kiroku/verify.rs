//! `kiroku verify`: the collector checks its store (journal chain, agent
//! stream chains, checkpoints, blobs, index, audit log) while it keeps
//! running, and streams what it finds. Progress goes to standard error,
//! findings to standard output; the exit status is 3 when anything was
//! altered, 0 when all is intact (explained gaps and purges included).

use std::io::{IsTerminal, Write};

use kiroku_common::quote::terminal;
use kiroku_proto::{VerifyRequest, verify_response::Msg};

use crate::client::ConnectArgs;
use crate::zone::{self, Zone};

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// Only events received since (RFC 3339, a date, or relative: 24h,
    /// 7d) for the per-event checks; chains and checkpoints are checked
    /// whole.
    #[arg(long)]
    from: Option<String>,
    /// Only events received before this time.
    #[arg(long)]
    to: Option<String>,
    /// Only this agent's events.
    #[arg(long)]
    agent: Option<String>,
    /// Only this stream's events.
    #[arg(long)]
    stream: Option<String>,
    /// Do not read the blobs back (journal, chains and index only: faster).
    #[arg(long)]
    skip_blobs: bool,
    /// Do not compare the index with the journal.
    #[arg(long)]
    skip_index: bool,
    /// Findings and the summary as JSON lines.
    #[arg(long)]
    json: bool,
}

pub async fn run(connect: &ConnectArgs, a: VerifyArgs, zone: &Zone) -> anyhow::Result<()> {
    let now = kiroku_common::now_ms();
    let time = |t: &Option<String>| -> anyhow::Result<i64> {
        Ok(t.as_deref()
            .map(|t| zone::parse_time(t, now, zone))
            .transpose()?
            .unwrap_or(0))
    };
    let req = VerifyRequest {
        from_ms: time(&a.from)?,
        to_ms: time(&a.to)?,
        agent_id: a.agent.unwrap_or_default(),
        stream_id: a.stream.unwrap_or_default(),
        skip_blobs: a.skip_blobs,
        skip_index: a.skip_index,
    };
    let mut q = connect.query().await?;
    let mut stream = q.verify(req).await?.into_inner();
    let tty = std::io::stderr().is_terminal();
    let mut phase = String::new();
    let mut altered = false;
    let mut summary = None;
    while let Some(m) = stream.message().await? {
        match m.msg {
            Some(Msg::Progress(p)) => {
                if tty {
                    let of = if p.total > 0 {
                        format!(
                            " of {} ({:.0}%)",
                            p.total,
                            p.done as f64 * 100.0 / p.total as f64
                        )
                    } else {
                        String::new()
                    };
                    eprint!("\r\x1b[K{}: {}{of}", p.phase, p.done);
                    let _ = std::io::stderr().flush();
                } else if p.phase != phase {
                    eprintln!("checking {}…", p.phase);
                }
                phase = p.phase;
            }
            Some(Msg::Finding(f)) => {
                if tty && !phase.is_empty() {
                    eprint!("\r\x1b[K");
                    phase.clear();
                }
                altered |= f.alteration;
                if a.json {
                    println!("{}", serde_json::to_string(&f)?);
                } else {
                    println!(
                        "{} {}: {}{} — {}",
                        if f.alteration { "ALTERED" } else { "note" },
                        terminal(&f.what),
                        terminal(&f.r#where),
                        if f.event_id.is_empty() {
                            String::new()
                        } else {
                            format!(" (event {})", terminal(&f.event_id))
                        },
                        terminal(&f.detail)
                    );
                }
            }
            Some(Msg::Summary(s)) => summary = Some(s),
            None => {}
        }
    }
    if tty {
        eprint!("\r\x1b[K");
    }
    let Some(s) = summary else {
        anyhow::bail!("the collector ended the verification without a summary");
    };
    if a.json {
        println!("{}", serde_json::to_string(&s)?);
    }
    eprintln!(
        "{} ({} events/s, {:.1} MB/s)",
        terminal(&s.message),
        (s.events as f64 / s.seconds.max(1e-3)) as u64,
        s.bytes as f64 / 1e6 / s.seconds.max(1e-3)
    );
    if altered || s.alterations > 0 {
        std::process::exit(3);
    }
    Ok(())
}
