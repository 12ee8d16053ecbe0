//! `kiroku-collector`: the central collector binary.

use std::path::PathBuf;

use clap::Parser;

/// Kiroku collector: receives events from agents over mTLS gRPC, stores,
/// de-duplicates and indexes them, and answers investigators' queries.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Collector configuration file (TOML); see packaging/collector.example.toml.
    #[arg(short, long, env = "KIROKU_COLLECTOR_CONFIG")]
    config: PathBuf,
    /// Check the configuration and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    kiroku_common::init_logging("info");
    let cfg = match kiroku_collector::CollectorConfig::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kiroku-collector: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    if cli.check {
        if let Some(a) = &cfg.alerts
            && let Err(e) = kiroku_collector::alerts::RuleSet::load(&a.rules)
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
