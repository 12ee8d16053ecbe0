//! `kiroku certs enroll-token`: one-time enrollment tokens, made by the
//! collector (admins; audited) and printed one per line, or written to a
//! file (private) with `--out`. Agents enroll with one each
//! (`[collector] enroll_token`, `enroll_endpoint`).
//! `kiroku certs enroll-tokens` lists the batches (and one batch's tokens,
//! by reference, with their state); `kiroku certs revoke-enroll-tokens`
//! revokes unused ones (audited).

use std::io::Write;
use std::path::PathBuf;

use comfy_table::{ContentArrangement, Table, presets::UTF8_BORDERS_ONLY};
use kiroku_proto::{CreateEnrollTokensRequest, ListEnrollTokensRequest, RevokeEnrollTokensRequest};

use crate::client::ConnectArgs;
use crate::output::{count, safe, safe_row, shorten};
use crate::zone::{Zone, format as time};

#[derive(clap::Args, Debug)]
pub struct ListTokensArgs {
    /// Only this batch, with each of its tokens (its reference: the first
    /// 12 hex digits of the token's SHA-256), state and the agent it
    /// enrolled.
    #[arg(long)]
    pub batch: Option<String>,
    /// One JSON object per line (batches, or the batch's tokens).
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["batch", "token"])))]
pub struct RevokeTokensArgs {
    /// Revoke every unused token of this batch.
    #[arg(long)]
    pub batch: Option<String>,
    /// Revoke this token (the token itself, or its reference from
    /// `kiroku certs enroll-tokens --batch`); repeatable.
    #[arg(long)]
    pub token: Vec<String>,
    /// Why (kept with the tokens and in the audit log).
    #[arg(long)]
    pub reason: String,
}

#[derive(clap::Args, Debug)]
pub struct EnrollTokenArgs {
    /// The group the enrolled agents' certificates carry (retention
    /// overrides by group); none when absent.
    #[arg(long)]
    pub group: Option<String>,
    /// How many tokens (each enrolls one agent, once).
    #[arg(long, default_value_t = 1)]
    pub count: u32,
    /// How long the tokens stay valid: 7d, 12h, 30m, 45s, 2w (at most 365d).
    #[arg(long, default_value = "7d")]
    pub expires: String,
    /// Write the tokens to this file (one per line, created private, never
    /// overwritten) instead of printing them.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A note kept with the batch in the audit log (e.g. the rollout).
    #[arg(long, default_value = "")]
    pub note: String,
}

pub async fn run(connect: &ConnectArgs, a: EnrollTokenArgs) -> anyhow::Result<()> {
    let ms = kiroku_collector::agents::parse_span(&a.expires)
        .map_err(|m| anyhow::anyhow!("--expires: {m}"))?;
    let mut out = match &a.out {
        Some(p) => Some(
            kiroku_common::os::create_private(
                std::fs::OpenOptions::new().write(true).create_new(true),
            )
            .open(p)
            .map_err(|e| {
                anyhow::anyhow!(
                    "--out {}: {e} (give a file that does not exist)",
                    p.display()
                )
            })?,
        ),
        None => None,
    };
    let r = connect
        .enroll_admin()
        .await?
        .create_enroll_tokens(CreateEnrollTokensRequest {
            group: a.group.clone().unwrap_or_default(),
            count: a.count,
            expires_in_s: (ms / 1000).max(1),
            note: a.note.clone(),
        })
        .await?
        .into_inner();
    let expires = jiff::Timestamp::from_millisecond(r.expires_ms)
        .map(|t| t.to_string())
        .unwrap_or_default();
    let mut text = r.tokens.join("\n");
    text.push('\n');
    match (&mut out, &a.out) {
        (Some(f), Some(p)) => {
            f.write_all(text.as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", p.display()))?;
            eprintln!(
                "{} enrollment tokens (batch {}, group {}, valid until {expires}) written to {}",
                r.tokens.len(),
                r.batch,
                a.group.as_deref().unwrap_or("(none)"),
                p.display()
            );
        }
        _ => {
            print!("{text}");
            eprintln!(
                "{} enrollment token(s), batch {}, group {}, valid until {expires}: each enrolls one agent once ([collector] enroll_token)",
                r.tokens.len(),
                r.batch,
                a.group.as_deref().unwrap_or("(none)"),
            );
        }
    }
    Ok(())
}

/// `kiroku certs enroll-tokens`.
pub async fn list(connect: &ConnectArgs, a: ListTokensArgs, zone: &Zone) -> anyhow::Result<()> {
    let r = connect
        .enroll_admin()
        .await?
        .list_enroll_tokens(ListEnrollTokensRequest {
            batch: a.batch.clone().unwrap_or_default(),
        })
        .await?
        .into_inner();
    if a.json {
        if a.batch.is_some() {
            for t in &r.tokens {
                println!("{}", serde_json::to_string(t)?);
            }
        } else {
            for b in &r.batches {
                println!("{}", serde_json::to_string(b)?);
            }
        }
        return Ok(());
    }
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic);
    if a.batch.is_some() {
        t.set_header(["token", "state", "agent", "when", "expires", "revoked"]);
        for k in &r.tokens {
            let when = match k.state.as_str() {
                "used" => time(k.used_ms, zone),
                "revoked" => time(k.revoked_ms, zone),
                _ => String::new(),
            };
            let revoked = if k.revoked_ms == 0 {
                String::new()
            } else {
                format!("by {}: {}", k.revoked_by, shorten(&k.revoke_reason, 60))
            };
            t.add_row(safe_row([
                k.token_ref.clone(),
                k.state.clone(),
                k.used_by.clone(),
                when,
                time(k.expires_ms, zone),
                revoked,
            ]));
        }
    } else {
        t.set_header([
            "batch", "created", "group", "note", "expires", "unused", "used", "expired", "revoked",
        ]);
        for b in &r.batches {
            t.add_row(safe_row([
                b.batch.clone(),
                format!("{} by {}", time(b.created_ms, zone), b.created_by),
                if b.group.is_empty() {
                    "(none)".into()
                } else {
                    b.group.clone()
                },
                shorten(&b.note, 40),
                time(b.expires_ms, zone),
                b.unused.to_string(),
                b.used.to_string(),
                b.expired.to_string(),
                b.revoked.to_string(),
            ]));
        }
    }
    println!("{t}");
    match &a.batch {
        Some(b) => eprintln!(
            "{} in batch {}",
            count(r.tokens.len() as u64, "token", "tokens"),
            safe(b)
        ),
        None => eprintln!(
            "{}; `--batch ID` lists a batch's tokens",
            count(r.batches.len() as u64, "batch", "batches")
        ),
    }
    Ok(())
}

/// `kiroku certs revoke-enroll-tokens`.
pub async fn revoke(connect: &ConnectArgs, a: RevokeTokensArgs) -> anyhow::Result<()> {
    let r = connect
        .enroll_admin()
        .await?
        .revoke_enroll_tokens(RevokeEnrollTokensRequest {
            batch: a.batch.clone().unwrap_or_default(),
            tokens: a.token.clone(),
            reason: a.reason.clone(),
        })
        .await?
        .into_inner();
    for line in &r.not_revoked {
        eprintln!("not revoked: {}", safe(line));
    }
    println!(
        "revoked {}: they no longer enroll an agent",
        count(u64::from(r.revoked), "token", "tokens")
    );
    Ok(())
}
