//! `kiroku certs enroll-token`: one-time enrollment tokens, made by the
//! collector (admins; audited) and printed one per line, or written to a
//! file (private) with `--out`. Agents enroll with one each
//! (`[collector] enroll_token`, `enroll_endpoint`).

use std::io::Write;
use std::path::PathBuf;

use kiroku_proto::CreateEnrollTokensRequest;

use crate::client::ConnectArgs;

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
