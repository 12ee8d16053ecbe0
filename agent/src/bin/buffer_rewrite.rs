//! `kiroku-agent-buffer-rewrite`: TEST-ONLY. Rewrites the subject of a mail
//! event queued in a stopped agent's buffer, through the buffer's own API
//! and without fixing the stream hash chain, as an attacker with root on
//! the agent host could. The evidence tests use it to show the collector
//! catches such a rewrite (and to list what the buffer holds: queued
//! events, kept checkpoints). Built only with the agent's `test-hooks`
//! feature (`required-features` in Cargo.toml): never in a release.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kiroku_proto::event::Kind;

/// Rewrites a queued mail event's subject in a stopped agent's buffer
/// (test builds only).
#[derive(Parser)]
#[command(version = kiroku_agent::test_hooks::VERSION)]
struct Cli {
    /// The agent's data directory (`data_dir` in its configuration).
    #[arg(long)]
    data: PathBuf,
    /// Lists the queued events (`<seq> <kind> <subject>`, tab-separated)
    /// instead of rewriting one.
    #[arg(long, conflicts_with_all = ["seq", "subject"])]
    list: bool,
    /// Lists the collector's checkpoints the agent kept (`<number>
    /// <sha256 of the encoded SignedCheckpoint>`, tab-separated).
    #[arg(long, conflicts_with_all = ["seq", "subject", "list"])]
    checkpoints: bool,
    /// Sequence number of the queued event to rewrite.
    #[arg(long, required_unless_present_any = ["list", "checkpoints"])]
    seq: Option<u64>,
    /// The new subject.
    #[arg(long, required_unless_present_any = ["list", "checkpoints"])]
    subject: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    kiroku_common::init_logging("warn");
    let buffer = match kiroku_agent::buffer::Buffer::open(&cli.data, u64::MAX, 8 << 20) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("kiroku-agent-buffer-rewrite: {e} (is the agent stopped?)");
            return ExitCode::FAILURE;
        }
    };
    if cli.list {
        return list(&buffer);
    }
    if cli.checkpoints {
        return checkpoints(&buffer);
    }
    let (Some(seq), Some(subject)) = (cli.seq, cli.subject) else {
        eprintln!("kiroku-agent-buffer-rewrite: --seq and --subject are required");
        return ExitCode::from(2);
    };
    let r = buffer.rewrite_queued(seq, move |event| match &mut event.kind {
        Some(Kind::Email(m)) => {
            m.subject = subject;
            Ok(())
        }
        _ => Err("not a mail event: only a mail's subject can be rewritten".into()),
    });
    match r {
        Ok((before, after)) => {
            println!(
                "rewrote event {seq} in {}: sha256 {before} -> {after} (chain not fixed)",
                cli.data.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kiroku-agent-buffer-rewrite: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints every queued event: sequence number, kind, subject (mails).
fn list(buffer: &kiroku_agent::buffer::Buffer) -> ExitCode {
    match buffer.read_batch(0, usize::MAX, usize::MAX) {
        Ok(events) => {
            for e in events {
                let (kind, subject) = match &e.kind {
                    Some(Kind::Email(m)) => ("email", m.subject.as_str()),
                    Some(Kind::File(_)) => ("file", ""),
                    Some(Kind::HostChange(_)) => ("host_change", ""),
                    Some(Kind::Gap(_)) => ("gap", ""),
                    Some(Kind::Integrity(_)) => ("integrity", ""),
                    Some(Kind::Incident(i)) => ("incident", i.kind.as_str()),
                    Some(Kind::Auth(a)) => ("auth", a.claimed_user.as_str()),
                    Some(Kind::MtaLog(l)) => ("mta_log", l.queue_id.as_str()),
                    Some(Kind::Network(n)) => ("network", n.phase.as_str()),
                    Some(Kind::P2p(p)) => ("p2p", p.phase.as_str()),
                    None => ("none", ""),
                };
                println!("{}\t{kind}\t{subject}", e.seq);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kiroku-agent-buffer-rewrite: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints every kept checkpoint: its number and the SHA-256 of its bytes.
fn checkpoints(buffer: &kiroku_agent::buffer::Buffer) -> ExitCode {
    use prost::Message;
    match buffer.checkpoints() {
        Ok(kept) => {
            for signed in kept {
                let number = kiroku_proto::SignedCheckpoint::decode(signed.as_slice())
                    .ok()
                    .and_then(|s| kiroku_proto::Checkpoint::decode(s.checkpoint.as_slice()).ok())
                    .map_or(0, |c| c.number);
                println!("{number}\t{}", kiroku_common::sha256_hex(&signed));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kiroku-agent-buffer-rewrite: {e}");
            ExitCode::FAILURE
        }
    }
}
