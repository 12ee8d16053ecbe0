//! `[analysis]` in the collector config and the bounds of one event's
//! analysis (`Limits`): what a run may read, open, spend and index.

use kiroku_proto::Annotations;
use serde::{Deserialize, Serialize};

use super::{VERSION, archive, text};

/// `[analysis]` in the collector config.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalysisConfig {
    /// Worker threads analysing stored mail (0: one per two cores, at
    /// least one, at most four). Each holds at most `max_file_bytes` of a
    /// file in memory (plus what archive listing and text extraction
    /// expand, bounded by their own limits).
    pub workers: usize,
    /// Files larger than this are typed from their first 64 KiB only and
    /// not opened (their analysis says so).
    pub max_file_bytes: u64,
    /// `[analysis.archives]`: the bounds of one attachment's archive
    /// listing (zip bombs), see [`archive::ArchiveLimits`].
    pub archives: archive::ArchiveLimits,
    /// `[analysis.text]`: the bounds of one attachment's text extraction
    /// (size, text kept, time, memory), see [`text::TextLimits`].
    pub text: text::TextLimits,
    /// Wall time one mail's analysis may take, all its attachments
    /// together (milliseconds); the files not reached are recorded as
    /// "not analysed: event budget" and retried by `reanalyse`.
    pub max_event_millis: u64,
    /// Bytes of files and archive members one mail's analysis may go
    /// through, all its attachments together.
    pub max_event_expanded_bytes: u64,
    /// Attachment text indexed for one mail, all its attachments together
    /// (bytes of UTF-8): the index document of a mail with 500 documents
    /// stays bounded.
    pub max_event_text_bytes: u64,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        AnalysisConfig {
            workers: 0,
            max_file_bytes: 64 << 20,
            archives: archive::ArchiveLimits::default(),
            text: text::TextLimits::default(),
            max_event_millis: 120_000,
            max_event_expanded_bytes: 4 << 30,
            max_event_text_bytes: 8 << 20,
        }
    }
}

impl AnalysisConfig {
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            return self.workers;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores / 2).clamp(1, 4)
    }
}

/// Bounds of one event's analysis.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest file read into memory ([`read`](super::read)).
    pub max_file_bytes: u64,
    /// Deepest nesting of attached messages and TNEF opened.
    pub max_depth: u32,
    /// Most files found inside one mail's attachments (attached messages,
    /// TNEF) that are analysed.
    pub max_nested_files: usize,
    pub archive: archive::ArchiveLimits,
    pub text: text::TextLimits,
    /// The event's budget: wall time, bytes gone through, text indexed
    /// (see [`AnalysisConfig`]).
    pub max_event_millis: u64,
    pub max_event_expanded_bytes: u64,
    pub max_event_text_bytes: u64,
    /// Ignore the per-file cache and analyse again mail analysed by this
    /// version (`reanalyse --force`): every file is opened and read again.
    pub fresh: bool,
    /// Analyse again mail whose annotations are marked for it
    /// (`Annotations.retry`: `reanalyse`).
    pub redo_retry: bool,
}

impl Default for Limits {
    fn default() -> Self {
        let c = AnalysisConfig::default();
        Limits {
            max_file_bytes: c.max_file_bytes,
            max_depth: 4,
            max_nested_files: 500,
            archive: c.archives,
            text: c.text,
            max_event_millis: c.max_event_millis,
            max_event_expanded_bytes: c.max_event_expanded_bytes,
            max_event_text_bytes: c.max_event_text_bytes,
            fresh: false,
            redo_retry: false,
        }
    }
}

impl Limits {
    pub fn from_config(c: &AnalysisConfig) -> Limits {
        Limits {
            max_file_bytes: c.max_file_bytes,
            archive: c.archives.clone(),
            text: c.text.clone(),
            max_event_millis: c.max_event_millis,
            max_event_expanded_bytes: c.max_event_expanded_bytes,
            max_event_text_bytes: c.max_event_text_bytes,
            ..Limits::default()
        }
    }
}

impl Limits {
    /// Whether a mail with these annotations is analysed again.
    pub fn redo(&self, a: &Annotations) -> bool {
        a.version != VERSION || self.fresh || (self.redo_retry && a.retry)
    }
}
