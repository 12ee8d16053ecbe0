//! File capture under a reloadable configuration: started once the buffer
//! is open, and stopped and started again when `[files]` changes.
//!
//! A restart of file capture is how new roots and exclusions take effect:
//! the watcher drains what it holds (pending records are written) and the
//! new one's catch-up scan compares every root with the kept state
//! (`files/state.rs`), so a change made while the two hand over is
//! recorded by the scan (`mechanism = "scan"`) rather than lost, and a
//! root added by the reload is learned silently, as at a first start
//! (`files/catchup.rs`). The cost is that scan: every root is walked again
//! (bounded by `files.catchup_max_secs`).

use std::path::PathBuf;
use std::sync::Arc;

use crate::buffer::Buffer;
use crate::capture::context::CaptureContext;
use crate::capture::files::FileCapture;
use crate::config::FilesConfig;
use crate::gaps::Gaps;

/// The file capture in force and the settings it was started from.
pub struct FilesRunner {
    data_dir: PathBuf,
    buffer: Arc<Buffer>,
    gaps: Arc<Gaps>,
    ctx: Arc<CaptureContext>,
    state: tokio::sync::Mutex<State>,
}

struct State {
    cfg: Option<FilesConfig>,
    running: Option<FileCapture>,
    /// Whether `start` ran (the buffer was open); until then a reload
    /// only replaces `cfg`.
    started: bool,
    stopped: bool,
}

impl FilesRunner {
    pub fn new(
        cfg: Option<FilesConfig>,
        data_dir: PathBuf,
        buffer: Arc<Buffer>,
        gaps: Arc<Gaps>,
        ctx: Arc<CaptureContext>,
    ) -> Arc<FilesRunner> {
        Arc::new(FilesRunner {
            data_dir,
            buffer,
            gaps,
            ctx,
            state: tokio::sync::Mutex::new(State {
                cfg,
                running: None,
                started: false,
                stopped: false,
            }),
        })
    }

    /// Starts file capture with the current settings (once; the buffer
    /// must be open).
    pub async fn start(&self) -> anyhow::Result<()> {
        let mut st = self.state.lock().await;
        if st.started || st.stopped {
            return Ok(());
        }
        st.started = true;
        st.running = self.launch(st.cfg.clone())?;
        Ok(())
    }

    /// Puts `cfg` in force: file capture stops and starts again with it.
    /// If it cannot start, the previous settings are started again and the
    /// error returned.
    pub async fn apply(&self, cfg: Option<FilesConfig>) -> anyhow::Result<()> {
        let mut st = self.state.lock().await;
        if st.stopped {
            return Ok(());
        }
        let old = std::mem::replace(&mut st.cfg, cfg.clone());
        if !st.started {
            return Ok(());
        }
        if let Some(running) = st.running.take() {
            running.stop().await;
        }
        match self.launch(cfg) {
            Ok(running) => {
                st.running = running;
                Ok(())
            }
            Err(e) => {
                st.cfg = old.clone();
                st.running = self.launch(old).unwrap_or_else(|e| {
                    tracing::error!(error = %format!("{e:#}"), "file capture could not start again with its previous settings: file capture is off");
                    None
                });
                Err(e)
            }
        }
    }

    /// Stops file capture for good (agent shutdown).
    pub async fn stop(&self) {
        let mut st = self.state.lock().await;
        st.stopped = true;
        if let Some(running) = st.running.take() {
            running.stop().await;
        }
    }

    fn launch(&self, cfg: Option<FilesConfig>) -> anyhow::Result<Option<FileCapture>> {
        match cfg {
            Some(f) if f.enabled() => Ok(Some(FileCapture::start(
                f,
                &self.data_dir,
                self.buffer.clone(),
                self.gaps.clone(),
                self.ctx.clone(),
            )?)),
            Some(_) => {
                tracing::warn!(
                    "[files] has nothing to watch (no watch roots, removable media off): file capture is off"
                );
                Ok(None)
            }
            None => Ok(None),
        }
    }
}
