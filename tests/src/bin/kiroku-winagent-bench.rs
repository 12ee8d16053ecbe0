//! The Windows agent under Wine (issue 22), side by side with the Linux
//! agent in one run: idle RSS and CPU of each agent connected to a
//! collector, the binary sizes, then the relay overhead — the same load
//! (`load.rs`) directly to a real Postfix, through the Linux agent and
//! through the Windows agent under Wine, alternating rounds, medians — as
//! `kiroku-relay-bench` does for the Linux agent alone (plain SMTP on both
//! hops, no collector during the load: the agents buffer).
//!
//! Wine caveat: the Windows agent is a Linux process running Wine's
//! loader, so its /proc numbers include Wine's own DLLs in the RSS, and
//! part of its work (handles, waits, some socket calls) is done by the
//! `wineserver` process, reported separately. Neither is what the agent
//! costs on real Windows.
//!
//! Needs root (Postfix), Wine and mingw. Run: `scripts/bench-winagent.sh`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use kiroku_tests::mta::Postfix;
use kiroku_tests::winagent::WinAgent;
use kiroku_tests::wine::{Wine, build_shim};
use kiroku_tests::{Env, Mode, free_port, load};

#[derive(Parser)]
struct Args {
    /// Alternating direct/Linux/Windows rounds per case; medians reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Mails per round for 10 KB messages.
    #[arg(long, default_value_t = 500)]
    small: usize,
    /// Mails per round for 1 MB messages.
    #[arg(long, default_value_t = 16)]
    big: usize,
    /// Seconds of the idle measurement.
    #[arg(long, default_value_t = 30)]
    idle_secs: u64,
    /// The Windows agent exe (default: the release cross-build).
    #[arg(long)]
    win_exe: Option<PathBuf>,
    /// The Linux agent (default: kiroku-agent next to this program).
    #[arg(long)]
    linux_agent: Option<PathBuf>,
}

/// A field (kB) of /proc/<pid>/status.
fn kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of a process, in clock ticks (/proc/<pid>/stat fields 14
/// and 15, counted after the parenthesised command name).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) is index 11, stime 12.
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

/// The `wineserver` of `prefix` (its environment names the prefix).
fn wineserver_pid(prefix: &Path) -> Option<u32> {
    let want = format!("WINEPREFIX={}", prefix.display());
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            String::from_utf8_lossy(&cmd).contains("wineserver")
                && env.split(|b| *b == 0).any(|v| v == want.as_bytes())
        })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// A Wine directory of its own for the release exe (the tests use the
/// debug one), in the shared prefix of this target dir.
fn wine_for(exe: &Path, target: &Path) -> anyhow::Result<Wine> {
    let root = target.join("wine");
    let bin_dir = root.join("bench");
    std::fs::create_dir_all(&bin_dir)?;
    let dll = bin_dir.join("bcryptprimitives.dll");
    if !dll.exists() {
        build_shim(&dll).map_err(anyhow::Error::msg)?;
    }
    std::fs::copy(exe, bin_dir.join("kiroku-agent.exe"))
        .with_context(|| format!("copying {}", exe.display()))?;
    let wine = Wine {
        prefix: root.join("prefix"),
        bin_dir,
    };
    let out = wine.command(&wine.agent_exe()).arg("--version").output()?;
    anyhow::ensure!(
        out.status.success(),
        "the agent exe does not start under Wine: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(wine)
}

fn size_mb(p: &Path) -> String {
    std::fs::metadata(p).map_or_else(
        |e| format!("? ({e})"),
        |m| format!("{:.1} MB", m.len() as f64 / 1e6),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    if let Some(why) = Postfix::unavailable() {
        anyhow::bail!("cannot run: {why}");
    }
    let me = std::env::current_exe()?;
    let here = me.parent().context("bench directory")?.to_owned();
    let target = here.parent().context("target directory")?.to_owned();
    let win_exe = a
        .win_exe
        .clone()
        .unwrap_or_else(|| target.join("x86_64-pc-windows-gnu/release/kiroku-agent.exe"));
    let linux_agent = a
        .linux_agent
        .clone()
        .unwrap_or_else(|| here.join("kiroku-agent"));
    let wine = wine_for(&win_exe, &target)?;

    println!(
        "machine: {} cores, Linux {}, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        String::from_utf8_lossy(
            &std::process::Command::new("/usr/lib/wine/wine64")
                .arg("--version")
                .output()?
                .stdout
        )
        .trim()
    );
    println!(
        "binaries: Windows {} = {}, Linux {} = {}",
        win_exe.display(),
        size_mb(&win_exe),
        linux_agent.display(),
        size_mb(&linux_agent)
    );

    let env = Env::new()?;
    let pf = Postfix::start_with_limit(&env, 200_000_000)?;
    let mut collector = env.start_collector()?;
    let smtp_extra = "upstream_tls = \"off\"\nmax_message_bytes = 104857600\n";
    let (lin_port, win_port) = (free_port(), free_port());
    let lin = env.start_agent_program(
        &linux_agent,
        "bench-linux",
        lin_port,
        &Mode::Relay(pf.port),
        smtp_extra,
    )?;
    let win = env.start_windows_agent_with(
        &wine,
        "bench-windows",
        win_port,
        &Mode::Relay(pf.port),
        &WinAgent {
            smtp_extra,
            ..WinAgent::default()
        },
    )?;
    let ws = wineserver_pid(&wine.prefix);

    // Idle: both agents connected to the collector, nothing to capture.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let ticks = sysconf_ticks();
    let before = (
        cpu_ticks(lin.pid()),
        cpu_ticks(win.pid()),
        ws.map_or(0, cpu_ticks),
    );
    tokio::time::sleep(Duration::from_secs(a.idle_secs)).await;
    let after = (
        cpu_ticks(lin.pid()),
        cpu_ticks(win.pid()),
        ws.map_or(0, cpu_ticks),
    );
    let pct = |b: u64, a2: u64| (a2 - b) as f64 / ticks / a.idle_secs as f64 * 100.0;
    println!("\nidle over {} s, connected to the collector:", a.idle_secs);
    println!("| agent | RSS kB | peak RSS kB | CPU % of one core |");
    println!("|---|---|---|---|");
    println!(
        "| Linux | {} | {} | {:.2} |",
        kb(lin.pid(), "VmRSS"),
        kb(lin.pid(), "VmHWM"),
        pct(before.0, after.0)
    );
    println!(
        "| Windows under Wine | {} | {} | {:.2} |",
        kb(win.pid(), "VmRSS"),
        kb(win.pid(), "VmHWM"),
        pct(before.1, after.1)
    );
    if let Some(ws) = ws {
        println!(
            "| (wineserver of the prefix) | {} | {} | {:.2} |",
            kb(ws, "VmRSS"),
            kb(ws, "VmHWM"),
            pct(before.2, after.2)
        );
    }

    // The load: no collector (as kiroku-relay-bench).
    collector.kill9();
    let direct = format!("127.0.0.1:{}", pf.port);
    let (via_lin, via_win) = (
        format!("127.0.0.1:{lin_port}"),
        format!("127.0.0.1:{win_port}"),
    );
    let submit = load::Submit::LockStep;
    println!(
        "\n| size | clients | direct mails/s | Linux relay mails/s | Linux relay/direct | Windows (Wine) relay mails/s | Windows relay/direct | direct p50 ms | Linux p50 ms | Windows p50 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let ws_before = ws.map_or(0, cpu_ticks);
    let win_before = cpu_ticks(win.pid());
    for (size, label, mails, clients) in [
        (10_240, "10 KB", a.small, 1),
        (10_240, "10 KB", a.small, 8),
        (1_000_000, "1 MB", a.big, 1),
    ] {
        let (mut d, mut l, mut w) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..a.rounds {
            d.push(load::run(&direct, mails, clients, size, submit).await?);
            l.push(load::run(&via_lin, mails, clients, size, submit).await?);
            w.push(load::run(&via_win, mails, clients, size, submit).await?);
        }
        let m =
            |v: &[load::Stats], f: &dyn Fn(&load::Stats) -> f64| median(v.iter().map(f).collect());
        let rate = |v: &[load::Stats]| m(v, &|s| s.per_second());
        let p50 = |v: &[load::Stats]| m(v, &|s| s.ms(0.5));
        let (dt, lt, wt) = (rate(&d), rate(&l), rate(&w));
        println!(
            "| {label} | {clients} | {dt:.0} | {lt:.0} | {:.2} | {wt:.0} | {:.2} | {:.2} | {:.2} | {:.2} |",
            lt / dt,
            wt / dt,
            p50(&d),
            p50(&l),
            p50(&w)
        );
    }
    let (ws_cpu, win_cpu) = (
        ws.map_or(0, cpu_ticks) - ws_before,
        cpu_ticks(win.pid()) - win_before,
    );
    println!(
        "\nduring the load: Windows agent CPU {:.1} s, wineserver {:.1} s; Windows agent peak RSS {} kB, Linux agent peak RSS {} kB",
        win_cpu as f64 / ticks,
        ws_cpu as f64 / ticks,
        kb(win.pid(), "VmHWM"),
        kb(lin.pid(), "VmHWM")
    );
    drop((lin, win, pf));
    Ok(())
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux).
fn sysconf_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}
