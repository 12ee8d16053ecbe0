//! `kiroku-collector`: the central collector binary.

use std::path::PathBuf;

use clap::Parser;

/// Kiroku collector: receives events from agents over mTLS gRPC, stores,
/// de-duplicates and indexes them, and answers investigators' queries.
#[derive(Parser)]
#[command(version = kiroku_collector::test_hooks::VERSION, about)]
struct Cli {
    /// Collector configuration file (TOML); see packaging/collector.example.toml.
    #[arg(short, long, env = "KIROKU_COLLECTOR_CONFIG")]
    config: PathBuf,
    /// Check the configuration and exit.
    #[arg(long)]
    check: bool,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// Check a stopped collector's data directory and recover what can be
    /// recovered: verifies the event journal, the index (rebuilt from the
    /// journal when damaged, incomplete or missing), the metadata (rebuilt
    /// from the journal when it does not open), every blob and the audit
    /// chain. Exits 0 when everything is sound or was recovered, 1 when
    /// something is lost (the report says what).
    Repair {
        /// Rebuild the index from the journal even if it looks sound.
        #[arg(long)]
        rebuild_index: bool,
    },
    /// Apply the current analysis (attached mail, TNEF, archives, types,
    /// S/MIME and PGP, attachment text) to mail already stored, with the
    /// collector stopped. Resumable: mail already analysed by this version
    /// is skipped (unless something outside the mail cut its analysis
    /// short: a reader's timeout, an I/O error), and what an interrupted
    /// run left queued the collector finishes at its next start.
    Reanalyse {
        /// From this time (RFC 3339, or a date: midnight UTC); default: the
        /// beginning.
        #[arg(long)]
        from: Option<String>,
        /// Up to this time, excluded; default: now.
        #[arg(long)]
        to: Option<String>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
        /// Analyse again every mail in the range, also those this version
        /// analysed, and read every file again (the per-file cache is not
        /// used): after a reader was fixed or a limit raised.
        #[arg(long)]
        force: bool,
    },
}

fn main() -> std::process::ExitCode {
    // The attachment text reader's subprocess (analysis/text/runner.rs):
    // no configuration, no logging, only stdin to stdout.
    let mut args = std::env::args();
    if args.nth(1).as_deref() == Some(kiroku_collector::analysis::text::SUBCOMMAND) {
        return kiroku_collector::analysis::text::child_main(args);
    }
    let cli = Cli::parse();
    kiroku_common::init_logging("info");
    let cfg = match kiroku_collector::CollectorConfig::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kiroku-collector: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    match cli.cmd {
        Some(Cmd::Repair { rebuild_index }) => return repair(&cfg, rebuild_index),
        Some(Cmd::Reanalyse {
            from,
            to,
            quiet,
            force,
        }) => return reanalyse(&cfg, from, to, quiet, force),
        None => {}
    }
    if cli.check {
        if let Some(a) = &cfg.alerts
            && let Err(e) = cfg.internal().map_err(|m| m.to_string()).and_then(|d| {
                let set = kiroku_collector::alerts::RuleSet::load(&a.rules, &d)
                    .map_err(|e| e.to_string())?;
                // A route may only name the notifiers configured here.
                let mut configured = Vec::new();
                if a.webhook.is_some() {
                    configured.push("webhook");
                }
                if a.mail.is_some() {
                    configured.push("mail");
                }
                set.check_routes(&configured).map_err(|e| e.to_string())
            })
        {
            eprintln!("kiroku-collector: {e}");
            return std::process::ExitCode::from(2);
        }
        println!("{}: configuration OK", cli.config.display());
        return std::process::ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kiroku-collector: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(kiroku_collector::server::serve(
        cfg,
        kiroku_collector::shutdown_signal(),
    )) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiroku-collector: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Whether something listens on the collector's address: a running
/// collector holds the metadata store's lock, so `repair` and
/// `reanalyse` refuse to run under it.
fn collector_running(cfg: &kiroku_collector::CollectorConfig, what: &str) -> bool {
    let up =
        std::net::TcpStream::connect_timeout(&cfg.listen, std::time::Duration::from_millis(300))
            .is_ok();
    if up {
        eprintln!(
            "kiroku-collector: something is listening on {} (the collector?); stop it before {what} {}",
            cfg.listen,
            cfg.data_dir.display()
        );
    }
    up
}

fn reanalyse(
    cfg: &kiroku_collector::CollectorConfig,
    from: Option<String>,
    to: Option<String>,
    quiet: bool,
    force: bool,
) -> std::process::ExitCode {
    use kiroku_collector::analysis::reanalyse;
    if collector_running(cfg, "reanalysing") {
        return std::process::ExitCode::from(2);
    }
    let parse =
        |s: Option<String>, default: i64| s.map_or(Ok(default), |s| reanalyse::parse_time(&s));
    let (from_ms, to_ms) = match (parse(from, i64::MIN), parse(to, kiroku_common::now_ms())) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("kiroku-collector: reanalyse: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match reanalyse::run(&cfg.data_dir, &cfg.analysis, from_ms, to_ms, quiet, force) {
        Ok(r) => {
            println!(
                "reanalysed {} mails of {} in the range ({} were already analysed by analysis version {} and left as they are)",
                r.analysed,
                r.in_range,
                r.up_to_date,
                kiroku_collector::analysis::VERSION
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "kiroku-collector: reanalyse of {} failed: {e:#}",
                cfg.data_dir.display()
            );
            std::process::ExitCode::FAILURE
        }
    }
}

fn repair(cfg: &kiroku_collector::CollectorConfig, rebuild_index: bool) -> std::process::ExitCode {
    use kiroku_collector::store::repair;
    let dir = &cfg.data_dir;
    if collector_running(cfg, "repairing") {
        return std::process::ExitCode::from(2);
    }
    eprintln!("repairing {}", dir.display());
    match repair::repair(
        dir,
        repair::RepairOptions {
            rebuild_index,
            quiet: false,
        },
    ) {
        Ok(r) => {
            for l in &r.lines {
                println!("{l}");
            }
            if r.problems.is_empty() {
                println!(
                    "OK: everything in {} is sound or was recovered",
                    dir.display()
                );
                std::process::ExitCode::SUCCESS
            } else {
                for p in &r.problems {
                    println!("LOST: {p}");
                }
                std::process::ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!(
                "kiroku-collector: repair of {} failed: {e:#}",
                dir.display()
            );
            std::process::ExitCode::FAILURE
        }
    }
}
