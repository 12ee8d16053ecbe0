//! Agent cost of reading mail for the record (issue 17: one lenient MIME
//! walker), two agent builds side by side in one run: CPU per MB of mail
//! relayed, and the agent's memory while a message of about 54 MB (a 40 MB
//! ZIP attachment, base64) passes.
//!
//! Each agent relays to its own aiosmtpd sink (plain SMTP, no collector:
//! the agent buffers what it records). The memory figure is taken first,
//! on a fresh agent, so its peak is that message's. Then rounds alternate
//! between the builds; each round sends the same mails (about 1 MB: a
//! text body and two base64 attachments, a PDF-like and an XLSX-like one)
//! and reads the agent's CPU time (utime + stime from /proc) around it.
//!
//! Run: `flock /work/bench.lock target/debug/kiroku-mime-bench --before
//! <old kiroku-agent> --after <new kiroku-agent>` (release builds of the
//! agents; the load generator's own speed does not enter the figures).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine;
use clap::Parser;
use kiroku_tests::{Env, Mode, Upstream, free_port};
use rand::RngCore;

#[derive(Parser)]
struct Args {
    /// The agent build to compare against (e.g. main's).
    #[arg(long)]
    before: PathBuf,
    /// The agent build measured (default: this build's kiroku-agent).
    #[arg(long)]
    after: Option<PathBuf>,
    /// Alternating rounds; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Mails of about 1 MB per round.
    #[arg(long, default_value_t = 40)]
    mails: usize,
    /// Size of the large message's ZIP attachment in MB (decoded; the
    /// message is about 4/3 of it, base64); 0 skips the large message.
    #[arg(long, default_value_t = 40)]
    attachment_mb: usize,
}

fn proc_field(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds (user + system) the process used so far.
fn cpu_seconds(pid: u32, ticks: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13
    // after the name (state is field 3).
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) as f64 / ticks
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn random(n: usize, head: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::rng().fill_bytes(&mut v);
    v[..head.len()].copy_from_slice(head);
    v
}

/// base64 in 76-character lines.
fn b64_lines(data: &[u8]) -> String {
    let s = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = String::with_capacity(s.len() + s.len() / 38);
    for chunk in s.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push_str("\r\n");
    }
    out
}

/// A multipart/mixed mail: a text body and the given files.
fn mail(n: usize, files: &[(&str, &str, &[u8])]) -> Vec<u8> {
    let mut m = format!(
        "From: bench@example.com\r\nTo: sink@example.test\r\nSubject: mime bench {n}\r\n\
         Message-ID: <mime-bench-{n}@example.com>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"BENCH\"\r\n\r\n\
         --BENCH\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    );
    for _ in 0..200 {
        m.push_str("The quarterly figures are attached; please review before Friday.\r\n");
    }
    for (name, ctype, data) in files {
        m.push_str(&format!(
            "--BENCH\r\nContent-Type: {ctype}; name=\"{name}\"\r\n\
             Content-Disposition: attachment; filename=\"{name}\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n"
        ));
        m.push_str(&b64_lines(data));
    }
    m.push_str("--BENCH--\r\n");
    m.into_bytes()
}

/// One SMTP transaction on a new connection; the server's final reply
/// code.
fn send(port: u16, raw: &[u8]) -> anyhow::Result<u16> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(300)))?;
    let mut r = BufReader::new(stream.try_clone()?);
    let mut w = std::io::BufWriter::with_capacity(1 << 20, stream);
    let mut reply = || -> anyhow::Result<u16> {
        loop {
            let mut line = String::new();
            if r.read_line(&mut line)? == 0 {
                anyhow::bail!("connection closed");
            }
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0));
            }
        }
    };
    reply()?;
    for cmd in [
        "EHLO bench.example\r\n",
        "MAIL FROM:<bench@example.com>\r\n",
        "RCPT TO:<sink@example.test>\r\n",
        "DATA\r\n",
    ] {
        w.write_all(cmd.as_bytes())?;
        w.flush()?;
        reply()?;
    }
    for line in raw.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            w.write_all(b".")?;
        }
        w.write_all(line)?;
    }
    w.write_all(b".\r\n")?;
    w.flush()?;
    let code = reply()?;
    w.write_all(b"QUIT\r\n")?;
    w.flush()?;
    Ok(code)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let after = a
        .after
        .clone()
        .unwrap_or_else(|| kiroku_tests::bin("kiroku-agent"));
    let env = Env::new()?;
    let ticks = clock_ticks();
    let builds = [("before", a.before.clone()), ("after", after)];
    let mut agents = Vec::new();
    let mut sinks = Vec::new();
    for (label, program) in &builds {
        let sink = Upstream::start_with(&env, &["--max-size", "200000000"])?;
        let smtp = free_port();
        let agent = env.start_agent_program(
            program,
            label,
            smtp,
            &Mode::Relay(sink.port),
            "upstream_tls = \"off\"\nmax_message_bytes = 104857600\n",
        )?;
        agents.push((label, smtp, agent));
        sinks.push(sink);
    }
    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );

    if a.attachment_mb > 0 {
        std::thread::sleep(Duration::from_secs(2));
        let zip = random(a.attachment_mb * 1_000_000, b"PK\x03\x04");
        let huge = mail(0, &[("archive.zip", "application/zip", &zip)]);
        println!(
            "\n{:.1} MB message ({} MB ZIP attachment), each build fresh:\n",
            huge.len() as f64 / 1e6,
            a.attachment_mb
        );
        println!("| build | agent RSS idle kB | peak (VmHWM) kB | growth kB | seconds |");
        println!("|---|---|---|---|---|");
        for (label, smtp, agent) in &agents {
            let pid = agent.pid();
            let idle = proc_field(pid, "VmRSS");
            let t = Instant::now();
            let code = send(*smtp, &huge)?;
            anyhow::ensure!(code == 250, "{label}: large message refused ({code})");
            let secs = t.elapsed().as_secs_f64();
            // The record is built after the relay; let it finish.
            std::thread::sleep(Duration::from_secs(3));
            let hwm = proc_field(pid, "VmHWM");
            println!(
                "| {label} | {idle} | {hwm} | {} | {secs:.2} |",
                hwm.saturating_sub(idle)
            );
        }
    }

    let pdf = random(300_000, b"%PDF-1.7\n");
    let xlsx = random(400_000, b"PK\x03\x04");
    let mails: Vec<Vec<u8>> = (0..a.mails)
        .map(|n| {
            mail(
                n,
                &[
                    ("report.pdf", "application/pdf", &pdf),
                    (
                        "figures.xlsx",
                        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                        &xlsx,
                    ),
                ],
            )
        })
        .collect();
    let mb: f64 = mails.iter().map(|m| m.len() as f64).sum::<f64>() / 1e6;
    let mut per_mb: Vec<Vec<f64>> = vec![Vec::new(); agents.len()];
    for _ in 0..a.rounds {
        for (i, (label, smtp, agent)) in agents.iter().enumerate() {
            let pid = agent.pid();
            let before = cpu_seconds(pid, ticks);
            for m in &mails {
                let code = send(*smtp, m)?;
                anyhow::ensure!(code == 250, "{label}: mail refused ({code})");
            }
            // Records are built once the upstream accepted; let the last
            // ones finish before reading the clock.
            std::thread::sleep(Duration::from_secs(2));
            let used = cpu_seconds(pid, ticks) - before;
            per_mb[i].push(used * 1000.0 / mb);
        }
    }
    println!(
        "\n{} mails of {:.2} MB (text + PDF-like + XLSX-like, base64) per round, {} alternating rounds, medians:\n",
        a.mails,
        mb / a.mails as f64,
        a.rounds
    );
    println!("| build | agent CPU ms per MB | rounds |");
    println!("|---|---|---|");
    for (i, (label, _, _)) in agents.iter().enumerate() {
        let v = &per_mb[i];
        let all: Vec<String> = v.iter().map(|x| format!("{x:.1}")).collect();
        println!(
            "| {label} | {:.1} | {} |",
            median(v.clone()),
            all.join(", ")
        );
    }
    drop(agents);
    drop(sinks);
    Ok(())
}
