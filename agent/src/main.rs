//! `kiroku-agent`: the endpoint agent binary.

use std::path::PathBuf;

use clap::Parser;

/// Kiroku endpoint agent: captures outgoing mail, buffers it durably and
/// ships it to the collector over mutually authenticated gRPC.
#[derive(Parser)]
#[command(version = kiroku_agent::test_hooks::VERSION, about)]
#[command(subcommand_negates_reqs = true)]
struct Cli {
    /// Agent configuration file (TOML); see packaging/agent.example.toml.
    /// On Windows it defaults to %ProgramData%\Kiroku\agent.toml.
    #[arg(short, long, env = "KIROKU_AGENT_CONFIG", required = cfg!(not(windows)))]
    config: Option<PathBuf>,
    /// Check the configuration and exit.
    #[arg(long)]
    check: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Install, uninstall, start or stop the Windows service.
    #[command(subcommand, hide = cfg!(not(windows)))]
    Service(kiroku_agent::service::ServiceCommand),
}

fn main() -> std::process::ExitCode {
    kiroku_agent::memory::limit_arenas();
    // `kiroku-agent config write …` (the MSI's and install.ps1's step).
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if let Some(code) = kiroku_agent::deploy::dispatch(&args) {
        return code;
    }
    let cli = Cli::parse();
    if let Some(Command::Service(cmd)) = cli.command {
        // The service logs to its own file and the event log.
        return kiroku_agent::service::command(cmd);
    }
    kiroku_common::init_logging("info");
    let Some(config) = cli.config.or_else(kiroku_agent::service::default_config) else {
        eprintln!("kiroku-agent: --config <FILE> is required");
        return std::process::ExitCode::from(2);
    };
    let (cfg, file) = match kiroku_agent::reload::ConfigFile::load(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kiroku-agent: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    if cli.check {
        // Warnings describe the machine, not the file: the agent starts and
        // reports them itself, so they do not fail the check (exit 0), but
        // they are never hidden behind a plain "OK".
        let warnings = cfg.warnings();
        for w in &warnings {
            eprintln!("kiroku-agent: warning: {}: {w}", config.display());
        }
        match warnings.len() {
            0 => println!("{}: configuration OK", config.display()),
            n => println!(
                "{}: configuration valid, with {n} warning{} (see above)",
                config.display(),
                if n == 1 { "" } else { "s" }
            ),
        }
        return std::process::ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kiroku-agent: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(kiroku_agent::run(cfg, file)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiroku-agent: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
