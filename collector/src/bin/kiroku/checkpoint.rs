//! `kiroku checkpoint check FILE... --ca ca.pem [--tsa-ca tsa-ca.pem]`:
//! checks checkpoint files (`<data_dir>/checkpoints/*.ckp`, or a bundle's)
//! offline, with the CA certificate alone: the signature by a signer
//! certificate that CA issued, and the RFC 3161 time stamp against the
//! TSA's CA. Exits non-zero when any does not hold or is unsigned.

use std::path::PathBuf;

use kiroku_collector::integrity::check::{Problem, inspect_checkpoint};
use kiroku_collector::integrity::checkpoint::ledger::read_file;
use kiroku_common::quote::terminal;

#[derive(clap::Subcommand)]
pub enum CheckpointCmd {
    /// Check checkpoint files (.ckp) with the CA certificate alone.
    Check {
        /// Checkpoint files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The Kiroku CA certificate (PEM) that issued the signer
        /// certificates.
        #[arg(long)]
        ca: PathBuf,
        /// The TSA's CA certificate (PEM), to check time stamps; without
        /// it a time stamp is reported as not checked.
        #[arg(long)]
        tsa_ca: Option<PathBuf>,
        /// One JSON object per file.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: CheckpointCmd) -> anyhow::Result<()> {
    let CheckpointCmd::Check {
        files,
        ca,
        tsa_ca,
        json,
    } = cmd;
    let ca_pem = std::fs::read(&ca).map_err(|e| anyhow::anyhow!("{}: {e}", ca.display()))?;
    let tsa_pem = match &tsa_ca {
        Some(p) => Some(std::fs::read(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?),
        None => None,
    };
    let mut bad = 0usize;
    for f in &files {
        let (ok, line, value) = check_one(f, &ca_pem, tsa_pem.as_deref());
        if !ok {
            bad += 1;
        }
        if json {
            println!("{value}");
        } else {
            println!("{}", terminal(&line));
        }
    }
    if bad > 0 {
        anyhow::bail!("{bad} of {} checkpoints do not hold", files.len());
    }
    Ok(())
}

/// Whether the file holds, a line for people and a JSON object.
fn check_one(
    f: &std::path::Path,
    ca_pem: &[u8],
    tsa_pem: Option<&[u8]>,
) -> (bool, String, serde_json::Value) {
    let name = f.display().to_string();
    let signed = match read_file(f) {
        Ok(s) => s,
        Err(e) => {
            let v = serde_json::json!({"file": name, "ok": false, "finding": "altered", "problem": e.to_string()});
            return (false, format!("{name}: ALTERED: {e}"), v);
        }
    };
    match inspect_checkpoint(&signed, ca_pem, tsa_pem) {
        Ok(c) => {
            let cp = &c.checkpoint;
            let stamp = match (&c.timestamp, c.timestamp_unchecked) {
                (Some(ts), _) => format!(
                    "time-stamped {} by {}",
                    kiroku_common::rfc3339_ms(ts.at_ms),
                    ts.tsa
                ),
                (None, true) => "time stamp not checked (no --tsa-ca)".into(),
                (None, false) => "no time stamp".into(),
            };
            let line = format!(
                "{name}: OK checkpoint {} of {}: leaves {}..{} root {} signed by {}; {stamp}",
                cp.number,
                cp.collector,
                cp.first_leaf,
                cp.first_leaf + cp.leaves,
                hex::encode(&cp.merkle_root),
                c.signer
            );
            let v = serde_json::json!({
                "file": name, "ok": true, "number": cp.number, "collector": cp.collector,
                "at_ms": cp.at_ms, "first_leaf": cp.first_leaf, "leaves": cp.leaves,
                "merkle_root": hex::encode(&cp.merkle_root), "signer": c.signer.to_string(),
                "streams": cp.streams.len(), "audit_seq": cp.audit_seq,
                "timestamp_ms": c.timestamp.as_ref().map(|t| t.at_ms),
                "tsa": c.timestamp.as_ref().map(|t| t.tsa.clone()),
                "timestamp_unchecked": c.timestamp_unchecked,
            });
            (true, line, v)
        }
        Err(p) => {
            let number = match &p {
                Problem::Unsigned { checkpoint, .. } => Some(checkpoint.number),
                _ => None,
            };
            let v = serde_json::json!({
                "file": name, "ok": false, "finding": p.finding(), "problem": p.to_string(),
                "number": number,
            });
            (
                false,
                format!("{name}: {}: {p}", p.finding().to_uppercase()),
                v,
            )
        }
    }
}
