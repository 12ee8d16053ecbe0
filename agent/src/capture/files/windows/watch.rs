//! The Windows watcher: not built yet (issue 22). Until it is, file
//! capture on Windows refuses to start with an error saying so, and mail
//! capture runs on.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::SyncSender;

use super::Observed;
use super::catchup::Watching;
use super::coalesce::Exclusions;
use super::state::FileState;
use crate::capture::context::CaptureContext;
use crate::config::FilesConfig;

pub(in crate::capture::files) struct Watcher;

impl Watcher {
    pub(in crate::capture::files) fn new(
        _cfg: FilesConfig,
        _ctx: Arc<CaptureContext>,
        _out: SyncSender<Observed>,
        _stop: Arc<AtomicBool>,
        _exclude: Exclusions,
        _state: Arc<FileState>,
    ) -> std::io::Result<Watcher> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "file capture is not available on Windows in this build",
        ))
    }

    pub(in crate::capture::files) fn tell_when_watching(
        &mut self,
        _scans: std::sync::mpsc::Sender<Watching>,
    ) {
    }

    pub(in crate::capture::files) fn run(self) {}
}
