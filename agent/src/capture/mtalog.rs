//! The mail server's own log as a capture source (issue 20): on a host
//! that runs Postfix or Exim, `[[mta_log]]` entries name log files the
//! agent follows (`follow`), each line parsed (`postfix`, `exim`) into one
//! `MtaLogEvent` record — a line the parser does not understand is kept
//! verbatim with `parsed = false` and counted, never dropped. The
//! collector joins these records to the mails relayed through the agent
//! (queue id, Message-ID) to tell what became of each.
//!
//! Every follower runs on its own thread: reading and parsing are
//! synchronous and cheap, and the buffer's append is awaited on the
//! runtime's handle.

pub mod exim;
pub mod follow;
pub mod header;
pub mod position;
pub mod postfix;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::buffer::Buffer;
use crate::capture::context::CaptureContext;

/// One `[[mta_log]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MtaLogConfig {
    /// The log file (`/var/log/mail.log`, Postfix's `maillog_file`, Exim's
    /// `/var/log/exim4/mainlog`). It may not exist yet: it is waited for.
    pub path: PathBuf,
    /// `"postfix"` or `"exim"`.
    pub format: Format,
    /// Where to start in a file the agent has never read that exists when
    /// the agent first looks: `"end"` (default: only what is logged from
    /// now on) or `"start"` (its whole content). A file that appears later,
    /// and every file after a rotation, is read from its start; a file read
    /// before continues where the agent stopped.
    #[serde(default)]
    pub start_at: StartAt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Postfix,
    Exim,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    #[default]
    End,
    Start,
}

/// Lines recorded and lines not parsed, per follower.
#[derive(Debug, Default)]
pub struct Counters {
    pub lines: AtomicU64,
    pub unparsed: AtomicU64,
    /// The buffer is refusing (a warning once per episode).
    refusing: AtomicBool,
}

impl Counters {
    fn add(&self, lines: u64, unparsed: u64) {
        self.lines.fetch_add(lines, Ordering::Relaxed);
        self.unparsed.fetch_add(unparsed, Ordering::Relaxed);
        if self.refusing.swap(false, Ordering::Relaxed) {
            tracing::info!("MTA log reading resumed: the buffer takes records again");
        }
    }

    /// Whether this refusal starts an episode.
    fn note_refusal(&self) -> bool {
        !self.refusing.swap(true, Ordering::Relaxed)
    }
}

struct Running {
    cfg: MtaLogConfig,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The running followers.
pub struct MtaLogCapture {
    buffer: Arc<Buffer>,
    ctx: Arc<CaptureContext>,
    running: Vec<Running>,
}

impl MtaLogCapture {
    /// Starts a follower per entry (inside a tokio runtime).
    pub fn start(
        configs: &[MtaLogConfig],
        buffer: Arc<Buffer>,
        ctx: Arc<CaptureContext>,
    ) -> anyhow::Result<MtaLogCapture> {
        let mut c = MtaLogCapture {
            buffer,
            ctx,
            running: Vec::new(),
        };
        c.apply(configs)?;
        Ok(c)
    }

    /// Applies a new list of entries (configuration reload): followers of
    /// entries no longer listed (or changed) stop, new ones start; the
    /// others go on undisturbed. A path dropped and listed again later
    /// continues from its saved position.
    pub fn apply(&mut self, configs: &[MtaLogConfig]) -> anyhow::Result<()> {
        validate(configs)?;
        let (keep, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut self.running)
            .into_iter()
            .partition(|r| configs.contains(&r.cfg));
        for r in gone {
            stop_one(r);
        }
        self.running = keep;
        for cfg in configs {
            if self.running.iter().any(|r| &r.cfg == cfg) {
                continue;
            }
            let stop = Arc::new(AtomicBool::new(false));
            let counters = Arc::new(Counters::default());
            let follower = follow::Follower {
                cfg: cfg.clone(),
                buffer: self.buffer.clone(),
                ctx: self.ctx.clone(),
                counters: counters.clone(),
                stop: stop.clone(),
                rt: tokio::runtime::Handle::current(),
            };
            let thread = std::thread::Builder::new()
                .name("mta-log".into())
                .spawn(move || follower.run())?;
            tracing::info!(path = %cfg.path.display(), format = ?cfg.format, "following the MTA log");
            self.running.push(Running {
                cfg: cfg.clone(),
                stop,
                counters,
                thread: Some(thread),
            });
        }
        Ok(())
    }

    /// (path, lines recorded, lines not parsed) per follower.
    pub fn counts(&self) -> Vec<(PathBuf, u64, u64)> {
        self.running
            .iter()
            .map(|r| {
                (
                    r.cfg.path.clone(),
                    r.counters.lines.load(Ordering::Relaxed),
                    r.counters.unparsed.load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// Logs the counts (the agent does every few minutes and at stop).
    pub fn log_counts(&self) {
        for (path, lines, unparsed) in self.counts() {
            tracing::info!(path = %path.display(), lines, unparsed, "MTA log lines recorded (unparsed ones are kept verbatim)");
        }
    }

    /// Stops every follower (each finishes the batch it is writing).
    pub async fn stop(mut self) {
        self.log_counts();
        let running = std::mem::take(&mut self.running);
        let _ = tokio::task::spawn_blocking(move || running.into_iter().for_each(stop_one)).await;
    }
}

fn stop_one(mut r: Running) {
    r.stop.store(true, Ordering::Relaxed);
    if let Some(t) = r.thread.take() {
        let _ = t.join();
    }
}

/// The same path twice would record every line twice.
pub fn validate(configs: &[MtaLogConfig]) -> anyhow::Result<()> {
    for (i, c) in configs.iter().enumerate() {
        if let Some(j) = configs[..i].iter().position(|o| o.path == c.path) {
            anyhow::bail!(
                "field `mta_log[{i}].path`: {} is already `mta_log[{j}].path`; list each log file once",
                c.path.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
