//! Documents are read in a subprocess: `kiroku-collector extract-text
//! <format> <max text bytes> <max memory bytes> <cpu seconds>` reads the
//! attachment on its standard input and writes one status line, then the
//! text, on its standard output.
//!
//! Why a process: a reader stuck in a hostile PDF or a decompression bomb
//! cannot be stopped from another thread, and its memory cannot be
//! bounded from outside it; a process is killed at its deadline, and the
//! child limits its own address space (RLIMIT_AS: an allocation past it
//! fails, the child aborts) and CPU time (RLIMIT_CPU) before it reads a
//! byte. Whatever happens to the child, the caller gets a status.

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{Extracted, Format, TextLimits};

/// The subcommand's name (hidden: only the collector runs it).
pub const SUBCOMMAND: &str = "extract-text";

/// Bytes of the child's error output kept for the status.
const STDERR_KEPT: u64 = 16 << 10;

pub(super) fn run(format: Format, data: &[u8], limits: &TextLimits) -> Extracted {
    let program = match &limits.program {
        Some(p) => p.clone(),
        None => match std::env::current_exe() {
            Ok(p) => p,
            Err(e) => return Extracted::unreadable(format!("the reader cannot start ({e})")),
        },
    };
    let secs = limits.timeout_secs.max(1);
    let child = Command::new(&program)
        .arg(SUBCOMMAND)
        .arg(format.word())
        .arg(limits.max_text_bytes.to_string())
        .arg(limits.max_memory_bytes.to_string())
        .arg(secs.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return Extracted::unreadable(format!(
                "the reader {} cannot start ({e})",
                program.display()
            ));
        }
    };
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let max_out = limits.max_text_bytes as u64 + 4096;
    std::thread::scope(|s| {
        // Fed and drained from threads, so that neither pipe can fill up
        // and stall the child (or this thread) before the deadline.
        s.spawn(move || {
            if let Some(mut i) = stdin {
                // A child that stops early closes the pipe: not an error.
                let _ = i.write_all(data);
            }
        });
        let out = s.spawn(move || read_bounded(stdout, max_out));
        let err = s.spawn(move || read_bounded(stderr, STDERR_KEPT));
        let exit = wait_until(&mut child, Instant::now() + Duration::from_secs(secs));
        let out = out.join().unwrap_or_default();
        let err = err.join().unwrap_or_default();
        match exit {
            None => Extracted::status(format!("timed out after {} s", limits.timeout_secs.max(1))),
            Some(status) => answer(status, &out, &err, limits),
        }
    })
}

fn read_bounded(r: Option<impl Read>, max: u64) -> Vec<u8> {
    let mut v = Vec::new();
    if let Some(r) = r {
        let _ = r.take(max).read_to_end(&mut v);
    }
    v
}

/// The child's exit status, or None when it was still running at the
/// deadline (it is then killed and reaped).
fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(25));
            }
            // Past the deadline, or the child cannot be waited for.
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// What the child's exit and output say.
fn answer(status: ExitStatus, out: &[u8], err: &[u8], limits: &TextLimits) -> Extracted {
    let err = String::from_utf8_lossy(err);
    let last_err = err
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    if status.success() {
        let out = String::from_utf8_lossy(out);
        return match out.split_once('\n') {
            Some((status, text)) if !status.is_empty() => Extracted {
                text: text.to_owned(),
                status: status.to_owned(),
            },
            _ => Extracted::unreadable("the reader gave no answer"),
        };
    }
    if err.contains("memory allocation of") {
        return Extracted::unreadable(format!(
            "the reader ran out of memory (limit {} MiB)",
            limits.max_memory_bytes >> 20
        ));
    }
    match status.signal() {
        Some(s) if s == rustix::process::Signal::XCPU.as_raw() => {
            Extracted::status(format!("timed out after {} s", limits.timeout_secs.max(1)))
        }
        Some(s) => Extracted::unreadable(format!("the reader stopped on signal {s} {last_err}")),
        None => Extracted::unreadable(format!(
            "the reader failed ({status}): {}",
            kiroku_common::quote::quote(last_err)
        )),
    }
}

/// The `extract-text` subcommand (`args`: what follows its name): the
/// child side of [`run`].
pub fn child_main(args: impl Iterator<Item = String>) -> ExitCode {
    let args: Vec<String> = args.collect();
    let parsed = match args.as_slice() {
        [format, max_text, max_memory, cpu] => Format::from_word(format).zip(
            max_text
                .parse::<usize>()
                .ok()
                .zip(max_memory.parse::<u64>().ok())
                .zip(cpu.parse::<u64>().ok()),
        ),
        _ => None,
    };
    let Some((format, ((max_text, max_memory), cpu))) = parsed else {
        eprintln!(
            "usage: kiroku-collector {SUBCOMMAND} <plain|html|pdf|ooxml|xls> <max text bytes> \
             <max memory bytes> <cpu seconds> < document (run by the collector itself)"
        );
        return ExitCode::from(2);
    };
    limit_self(max_memory, cpu);
    let mut data = Vec::new();
    if let Err(e) = std::io::stdin().lock().read_to_end(&mut data) {
        eprintln!("kiroku-collector {SUBCOMMAND}: cannot read the document from stdin: {e}");
        return ExitCode::FAILURE;
    }
    // A panic in a reader is a property of the document: it becomes the
    // status, not a crash report.
    std::panic::set_hook(Box::new(|_| {}));
    let got = std::panic::catch_unwind(|| super::read(format, &data, None, max_text))
        .unwrap_or_else(|p| {
            let why = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Extracted::unreadable(format!("the reader failed: {why}"))
        });
    let status = got.status.replace(['\r', '\n'], " ");
    let mut stdout = std::io::stdout().lock();
    let written = writeln!(stdout, "{status}")
        .and_then(|()| stdout.write_all(got.text.as_bytes()))
        .and_then(|()| stdout.flush());
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

/// The child's own limits, set before it reads the document. Where the
/// system refuses one, the parent's deadline still holds.
fn limit_self(max_memory: u64, cpu: u64) {
    use rustix::process::{Resource, Rlimit, setrlimit};
    for (resource, value) in [(Resource::As, max_memory), (Resource::Cpu, cpu + 1)] {
        if let Err(e) = setrlimit(
            resource,
            Rlimit {
                current: Some(value),
                maximum: Some(value),
            },
        ) {
            eprintln!("kiroku-collector {SUBCOMMAND}: cannot set {resource:?} to {value}: {e}");
        }
    }
}
