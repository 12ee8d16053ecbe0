//! `kiroku retention plan [--policy FILE]`: what the policy in force (or a
//! candidate file) would mark and free now, per rule; `kiroku purge
//! --user U|--address A [filters] --reason R [--dry-run]`: erasure on
//! request (holds win); `kiroku purge undo [filters] --reason R`: restore
//! marked events in their grace period. Admins only.

use std::path::PathBuf;

use anyhow::Context;
use kiroku_common::quote::terminal;
use kiroku_proto::{PurgeRequest, PurgeResponse, RetentionPlanRequest};

use crate::client::ConnectArgs;
use crate::filters::{SearchArgs, search_request};
use crate::investigate::human_bytes as bytes;
use crate::output::count;
use crate::zone::{self, Zone};

#[derive(clap::Subcommand, Debug)]
pub enum RetentionCmd {
    /// What the policy in force (or --policy FILE, a candidate) would mark
    /// and free now, per rule, and which rules a candidate shortens (with
    /// when that would take effect). Changes nothing.
    Plan {
        /// A candidate policy file (TOML, as `[retention] policy`).
        #[arg(long)]
        policy: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

/// `kiroku purge`: erasure on request.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct PurgeArgs {
    #[command(subcommand)]
    undo: Option<PurgeSub>,
    #[command(flatten)]
    args: PurgeFilter,
}

#[derive(clap::Subcommand, Debug)]
enum PurgeSub {
    /// Restore the marked events the filter matches (in their grace
    /// period, not purged yet); they are not marked again for the
    /// policy's `undo_exempt` (default 30 days).
    Undo(PurgeFilter),
}

#[derive(clap::Args, Debug)]
struct PurgeFilter {
    #[command(flatten)]
    filter: SearchArgs,
    /// Why (required): in every tombstone and in the audit log.
    #[arg(long)]
    reason: Option<String>,
    /// Say what would happen; change nothing.
    #[arg(long)]
    dry_run: bool,
    #[arg(long)]
    json: bool,
}

pub async fn retention(
    connect: &ConnectArgs,
    cmd: RetentionCmd,
    zone: &Zone,
) -> anyhow::Result<()> {
    let RetentionCmd::Plan { policy, json } = cmd;
    let policy_toml = match &policy {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("reading the candidate policy {}", p.display()))?,
        None => String::new(),
    };
    let mut admin = connect.admin().await?;
    let plan = admin
        .retention_plan(RetentionPlanRequest { policy_toml })
        .await?
        .into_inner();
    if json {
        println!("{}", serde_json::to_string(&plan)?);
        return Ok(());
    }
    let which = match &policy {
        Some(p) => format!("candidate {}", p.display()),
        None => "the policy in force".into(),
    };
    println!(
        "retention plan at {} ({}): {} scanned, oldest kept {}",
        zone::format(plan.at_ms, zone),
        terminal(&which),
        count(plan.events_scanned, "event", "events"),
        zone::format(plan.oldest_event_ms, zone)
    );
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING);
    t.set_header(["RULE", "PERIOD", "EVENTS", "EXPIRED", "FREES"]);
    for r in &plan.rules {
        t.add_row([
            terminal(&r.rule).into_owned(),
            terminal(&r.period).into_owned(),
            r.events.to_string(),
            r.expired.to_string(),
            bytes(r.bytes),
        ]);
    }
    println!("{t}");
    println!(
        "would mark now: {}; held back by legal holds: {}; marked (grace period): {}, of which due: {}; would free about {}",
        plan.would_mark,
        plan.held_back,
        plan.marked,
        plan.due,
        bytes(plan.bytes_freed)
    );
    for s in &plan.shortened {
        println!("shortens: {}", terminal(s));
    }
    for p in &plan.problems {
        println!("problem: {}", terminal(p));
    }
    Ok(())
}

pub async fn purge(connect: &ConnectArgs, a: PurgeArgs, zone: &Zone) -> anyhow::Result<()> {
    let (undo, f) = match a.undo {
        Some(PurgeSub::Undo(f)) => (true, f),
        None => (false, a.args),
    };
    // Optional for clap (the flags are shared with `undo`), required here.
    let Some(reason) = f.reason.filter(|r| !r.trim().is_empty()) else {
        anyhow::bail!("--reason is required: it goes into the tombstones and the audit log");
    };
    let req = PurgeRequest {
        filter: Some(search_request(f.filter, zone)?),
        reason,
        undo,
        dry_run: f.dry_run,
    };
    let mut admin = connect.admin().await?;
    let r = admin.purge(req).await?.into_inner();
    if f.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    println!("{}", summary(&r, undo, f.dry_run));
    for n in &r.notes {
        println!("{}", terminal(n));
    }
    Ok(())
}

fn summary(r: &PurgeResponse, undo: bool, dry_run: bool) -> String {
    let matched = count(r.matched, "event matches", "events match");
    if undo {
        return format!(
            "{matched}; {} {}",
            count(r.restored, "marked event", "marked events"),
            if dry_run {
                "would be restored"
            } else {
                "restored"
            }
        );
    }
    if dry_run {
        return format!("{matched}; {} under a legal hold", r.held_back);
    }
    format!(
        "{matched}; {} purged (erased on request), {} kept under a legal hold, {} freed",
        r.purged,
        r.held_back,
        bytes(r.bytes_freed)
    )
}
