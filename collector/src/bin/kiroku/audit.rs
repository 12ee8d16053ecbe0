//! `kiroku audit`: the audit log — investigators' queries and
//! administrative actions — with its hash chain checked (admins only).

use kiroku_common::quote::terminal;

use crate::client::ConnectArgs;
use crate::output;
use crate::zone::{self, Zone};

#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    /// Entries since: RFC 3339, a date, or relative (24h, 7d).
    #[arg(long)]
    since: Option<String>,
    /// Newest entries to show.
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Only queries (investigators' calls) or only administrative actions
    /// (reloads, repairs, verify, export, certificates); default both.
    #[arg(long, value_parser = ["query", "admin"])]
    kind: Option<String>,
    #[arg(long)]
    json: bool,
}

/// Prints the entries; exits with status 3 when the chain is broken.
pub async fn run(connect: &ConnectArgs, a: AuditArgs, zone: &Zone) -> anyhow::Result<()> {
    let now = kiroku_common::now_ms();
    let from_ms = a
        .since
        .as_deref()
        .map(|t| zone::parse_time(t, now, zone))
        .transpose()?
        .unwrap_or(0);
    let mut q = connect.query().await?;
    let r = q
        .audit(kiroku_proto::AuditRequest {
            from_ms,
            limit: a.limit,
            kind: a.kind.unwrap_or_default(),
        })
        .await?
        .into_inner();
    if a.json {
        for e in &r.entries {
            println!("{}", serde_json::to_string(e)?);
        }
    } else {
        println!("{}", output::audit(&r.entries, zone));
    }
    if r.chain_ok {
        eprintln!(
            "audit chain intact: {}, head {} (keep a copy elsewhere to anchor it)",
            output::count(r.total, "entry", "entries"),
            r.head_hash
        );
        Ok(())
    } else {
        eprintln!("AUDIT CHAIN BROKEN: {}", terminal(&r.problem));
        std::process::exit(3);
    }
}
