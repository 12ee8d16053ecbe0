//! `kiroku hold create|list|release`: legal holds. Events a hold's filter
//! matches (now or later) and their blobs are never purged while it is in
//! force. Investigators and admins create and list holds; only an admin
//! releases one.

use comfy_table::{ContentArrangement, Table, presets::UTF8_BORDERS_ONLY};
use kiroku_collector::holds::describe_filter;
use kiroku_proto::{Hold, HoldCreateRequest, HoldListRequest, HoldReleaseRequest};

use crate::client::ConnectArgs;
use crate::filters::{self, SearchArgs};
use crate::output::{count, safe, safe_row, shorten};
use crate::zone::{Zone, format as time};

#[derive(clap::Subcommand, Debug)]
pub enum HoldCmd {
    /// Put a legal hold on every event a search filter matches (at least
    /// one filter flag is required): they are never purged while it holds.
    Create(Box<CreateArgs>),
    /// The holds in force, each with the number of events it covers now.
    List {
        /// Released holds too (who released them, when and why).
        #[arg(long)]
        all: bool,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Release a hold (admins only), by id or every hold of a case.
    Release {
        /// The hold's id (h-3), as `kiroku hold list` shows it.
        #[arg(required_unless_present = "case", conflicts_with = "case")]
        id: Option<String>,
        /// Release every hold of this case instead.
        #[arg(long = "case")]
        case: Option<String>,
        /// Why it is released (kept with the hold and in the audit log).
        #[arg(long)]
        reason: String,
    },
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// The case (matter, investigation) the hold is for.
    #[arg(long = "case")]
    case: String,
    /// Why the events must be kept (kept with the hold and in the audit
    /// log).
    #[arg(long)]
    reason: String,
    #[command(flatten)]
    filter: SearchArgs,
    /// JSON instead of a sentence.
    #[arg(long)]
    json: bool,
}

pub async fn run(connect: &ConnectArgs, cmd: HoldCmd, zone: &Zone) -> anyhow::Result<()> {
    match cmd {
        HoldCmd::Create(a) => {
            let a = *a;
            let filter = filters::search_request(a.filter, zone)?;
            if kiroku_collector::holds::filter_is_empty(&filter) {
                anyhow::bail!(
                    "a hold needs at least one filter flag naming what it holds (--user, --address, --agent, --from/--to, --sha256, --tag, ...)"
                );
            }
            let h = connect
                .admin()
                .await?
                .hold_create(HoldCreateRequest {
                    case_name: a.case,
                    reason: a.reason,
                    filter: Some(filter),
                })
                .await?
                .into_inner();
            if a.json {
                println!("{}", serde_json::to_string(&h)?);
            } else {
                println!(
                    "hold {} created for case {}: {} held now (and any that match later)",
                    safe(&h.id),
                    safe(&h.case_name),
                    count(h.events, "event", "events")
                );
            }
        }
        HoldCmd::List { all, json } => {
            let r = connect
                .admin()
                .await?
                .hold_list(HoldListRequest {
                    include_released: all,
                })
                .await?
                .into_inner();
            if json {
                for h in &r.holds {
                    println!("{}", serde_json::to_string(h)?);
                }
            } else {
                println!("{}", table(&r.holds, zone));
                eprintln!(
                    "{}",
                    count(
                        r.holds.len() as u64,
                        if all { "hold" } else { "hold in force" },
                        if all { "holds" } else { "holds in force" }
                    )
                );
            }
        }
        HoldCmd::Release { id, case, reason } => {
            let h = connect
                .admin()
                .await?
                .hold_release(HoldReleaseRequest {
                    id: id.or(case).unwrap_or_default(),
                    reason,
                })
                .await?
                .into_inner();
            println!("released {} of case {}", safe(&h.id), safe(&h.case_name));
        }
    }
    Ok(())
}

fn table(holds: &[Hold], zone: &Zone) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header([
            "id", "case", "events", "created", "reason", "filter", "released",
        ]);
    for h in holds {
        let released = if h.released_at_ms == 0 {
            "in force".to_owned()
        } else {
            format!(
                "{} by {}: {}",
                time(h.released_at_ms, zone),
                h.released_by,
                shorten(&h.release_reason, 60)
            )
        };
        t.add_row(safe_row([
            h.id.clone(),
            h.case_name.clone(),
            if h.released_at_ms == 0 {
                h.events.to_string()
            } else {
                String::new()
            },
            format!("{} by {}", time(h.created_at_ms, zone), h.created_by),
            shorten(&h.reason, 60),
            shorten(&describe_filter(&h.filter.clone().unwrap_or_default()), 80),
            released,
        ]));
    }
    t.to_string()
}
