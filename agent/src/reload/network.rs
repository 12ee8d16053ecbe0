//! The network capture across reloads: a changed `[network]` section stops
//! the running capture (it writes its summaries in progress) and starts a
//! new one with the new settings. The flows' state is in the buffer
//! (`capture/network/flows/persist.rs`), so flows in progress continue
//! with `update` records instead of a second `open`. Restarting is chosen
//! over changing the running table in place: every setting (intervals,
//! limits, exclusions, inspection) then means the same after a reload as
//! at a start.

use std::sync::{Arc, Mutex};

use super::MtaLogHook;
use crate::buffer::Buffer;
use crate::capture::context::CaptureContext;
use crate::capture::network::{NetworkCapture, NetworkConfig};
use crate::config::AgentConfig;
use crate::gaps::Gaps;

/// The running network capture (if any) and what starting one needs.
#[derive(Clone)]
pub struct NetworkSlot {
    running: Arc<Mutex<Option<NetworkCapture>>>,
    collector: String,
    buffer: Arc<Buffer>,
    ctx: Arc<CaptureContext>,
    gaps: Arc<Gaps>,
}

impl NetworkSlot {
    pub fn new(
        collector: String,
        buffer: Arc<Buffer>,
        ctx: Arc<CaptureContext>,
        gaps: Arc<Gaps>,
    ) -> NetworkSlot {
        NetworkSlot {
            running: Arc::new(Mutex::new(None)),
            collector,
            buffer,
            ctx,
            gaps,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<NetworkCapture>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a capture with `cfg` (none when it is disabled); blocking
    /// when one runs already (it is stopped first).
    pub fn start(&self, cfg: &NetworkConfig) {
        let mut slot = self.lock();
        if let Some(old) = slot.take() {
            if old.config() == cfg {
                *slot = Some(old);
                return;
            }
            tracing::info!("network capture restarting with the reloaded [network] settings");
            old.stop_blocking();
        }
        *slot = NetworkCapture::start(
            cfg,
            &self.collector,
            self.buffer.clone(),
            self.ctx.clone(),
            self.gaps.clone(),
        );
    }

    /// Stops the running capture (agent shutdown).
    pub async fn stop(&self) {
        let running = self.lock().take();
        if let Some(n) = running {
            n.stop().await;
        }
    }
}

/// The reload hook that applies a changed `[network]` section.
pub fn network_hook(slot: NetworkSlot) -> MtaLogHook {
    Box::new(move |cfg: &AgentConfig| {
        slot.start(&cfg.network);
        Ok(())
    })
}
