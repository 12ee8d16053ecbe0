//! Network activity as a capture source (issue 21): every TCP connection
//! and UDP flow of the host with its process, counters and peer
//! (`NetworkEvent`), and P2P detections made from them (`P2pEvent`).
//!
//! Layers, top down:
//! - this module: the runner (one thread) that dumps sockets every
//!   `network.dump_interval_ms`, takes destroy notifications in between,
//!   feeds the flow table and the P2P detector and appends their records
//!   to the buffer;
//! - `flows`: the flow table (open / update / close / listen records,
//!   deltas, coalescing into summaries, rate limits, exclusions, the state
//!   that lets a restarted agent continue a flow instead of opening it
//!   again);
//! - `p2p`: the P2P detector (reasons, episodes) and the wire recognisers
//!   it uses on inspected packets;
//! - `names`: remote names from inspected DNS answers and cached,
//!   rate-limited reverse DNS that never blocks the runner;
//! - `platform`: the OS interfaces (`SocketTable`, `ProcessTable`,
//!   `PacketInspector`), implemented for Linux in `linux/`.

pub mod config;
pub mod flows;
#[cfg(target_os = "linux")]
pub mod linux;
pub mod names;
pub mod p2p;
pub mod platform;

pub use config::NetworkConfig;
pub mod runner;
pub mod validate;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::buffer::Buffer;
use crate::capture::context::CaptureContext;
use crate::gaps::Gaps;

/// The running network capture (one thread).
pub struct NetworkCapture {
    cfg: NetworkConfig,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Whether this process has capability `bit` in its effective set
/// (`CapEff` in /proc/self/status); None when that cannot be read.
pub fn has_capability(bit: u32) -> Option<bool> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    let caps = u64::from_str_radix(hex, 16).ok()?;
    Some(caps & (1u64 << bit) != 0)
}

/// CAP_NET_RAW's bit (linux/capability.h).
pub const CAP_NET_RAW: u32 = 13;

impl NetworkCapture {
    /// Starts the capture when `[network] enabled = true` (inside a tokio
    /// runtime; the thread waits for the buffer to open). A capture that
    /// cannot open its OS sources is logged as an error and not started:
    /// the rest of the agent runs.
    pub fn start(
        cfg: &NetworkConfig,
        collector: &str,
        buffer: Arc<Buffer>,
        ctx: Arc<CaptureContext>,
        gaps: Arc<Gaps>,
    ) -> Option<NetworkCapture> {
        if !cfg.enabled {
            return None;
        }
        match Self::try_start(cfg, collector, buffer, ctx, gaps) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "network capture cannot start; the agent runs without it (network.enabled = true)");
                None
            }
        }
    }

    #[cfg(target_os = "linux")]
    fn try_start(
        cfg: &NetworkConfig,
        collector: &str,
        buffer: Arc<Buffer>,
        ctx: Arc<CaptureContext>,
        gaps: Arc<Gaps>,
    ) -> anyhow::Result<NetworkCapture> {
        use anyhow::Context;
        let sockets = platform::open_sockets().context("opening the socket table (sock_diag)")?;
        let procs = match platform::open_processes() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "network capture: the process table cannot be read; flows are recorded with their uid only (attribution \"uid\")");
                Box::new(runner::NoProcesses)
            }
        };
        for limit in sockets.limits().into_iter().chain(procs.limits()) {
            tracing::warn!("network capture cannot see everything here: {limit}");
        }
        let inspector = if cfg.inspect {
            match platform::open_inspector() {
                Ok(i) => Some(i),
                Err(e) => {
                    let why = if has_capability(CAP_NET_RAW) == Some(false) {
                        " (the agent lacks CAP_NET_RAW: the packaged unit grants it)"
                    } else {
                        ""
                    };
                    tracing::warn!(error = %e, "network.inspect = true but packet inspection cannot start{why}: P2P handshakes, DHT messages, tracker announces and DNS answers are not seen; detection works from behaviour only");
                    None
                }
            }
        } else {
            None
        };
        let stop = Arc::new(AtomicBool::new(false));
        let runner = runner::Runner {
            cfg: cfg.clone(),
            collector: collector.to_owned(),
            sources: runner::Sources {
                sockets,
                procs,
                inspector,
            },
            buffer,
            ctx,
            gaps,
            stop: stop.clone(),
            rt: tokio::runtime::Handle::current(),
        };
        let thread = std::thread::Builder::new()
            .name("network".into())
            .spawn(move || runner.run())?;
        tracing::info!(
            dump_interval_ms = cfg.dump_interval_ms,
            inspect = cfg.inspect,
            loopback = cfg.loopback,
            "recording network activity"
        );
        Ok(NetworkCapture {
            cfg: cfg.clone(),
            stop,
            thread: Some(thread),
        })
    }

    #[cfg(not(target_os = "linux"))]
    fn try_start(
        _cfg: &NetworkConfig,
        _collector: &str,
        _buffer: Arc<Buffer>,
        _ctx: Arc<CaptureContext>,
        _gaps: Arc<Gaps>,
    ) -> anyhow::Result<NetworkCapture> {
        anyhow::bail!("network capture is implemented for Linux only")
    }

    /// The settings it runs with.
    pub fn config(&self) -> &NetworkConfig {
        &self.cfg
    }

    /// Stops the thread (it writes the summaries in progress first) and
    /// waits for it. Blocking: call from a blocking context.
    pub fn stop_blocking(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// [`NetworkCapture::stop_blocking`] from async code.
    pub async fn stop(self) {
        let _ = tokio::task::spawn_blocking(move || self.stop_blocking()).await;
    }
}
#[cfg(test)]
mod runner_tests;
