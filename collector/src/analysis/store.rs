//! The annotation store: what the collector derived from stored content,
//! kept beside the events (never in them: the event is kept as its agent
//! recorded it), and the durable queue of events waiting for analysis.
//!
//! Layout (trees of the collector's meta sled, `store/meta.rs`):
//! - `analysis_files`: a file's SHA-256 → `u32 BE analysis version` then a
//!   prost `AttachmentAnalysis` holding what depends on the content only
//!   (size, detected type, container, encryption, members, text status).
//!   The same file in a second mail, or an index rebuild, reuses it.
//! - `analysis_events`: an event id → prost `Annotations` (what the
//!   `GetAnnotations` call answers and the index's derived fields are made
//!   of).
//! - `analysis_text`: a file's SHA-256 → its extracted text, zstd.
//! - `analysis_queue`: `u64 BE` sequence → event id: events waiting for
//!   the worker. Written by the committer in the same meta flush that makes
//!   the event's high-water mark durable, so an acknowledged event always
//!   has its pending analysis on disk (a kill -9 loses none); an entry
//!   leaves only once the annotations are stored and the event re-indexed.
//!
//! The struct's methods are the whole interface the rest of the collector
//! uses; a store on another database (PostgreSQL) implements the same.

use std::collections::HashSet;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use kiroku_proto::{Annotations, AttachmentAnalysis};
use prost::Message;

use crate::store::meta::{MetaError, MetaStore};

const FILES: &str = "analysis_files";
const EVENTS: &str = "analysis_events";
const TEXTS: &str = "analysis_text";
const QUEUE: &str = "analysis_queue";

/// Largest extracted text kept per file (bytes of UTF-8); longer text is
/// cut at a character boundary.
pub const MAX_TEXT_BYTES: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum AnnotationError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("annotation store, {what}: {source}")]
    Sled {
        what: &'static str,
        source: sled::Error,
    },
    #[error("annotation store, {what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
}

fn sled_err(what: &'static str) -> impl FnOnce(sled::Error) -> AnnotationError {
    move |source| AnnotationError::Sled { what, source }
}

/// One event waiting in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    key: [u8; 8],
    pub event_id: String,
}

/// The annotation store (see the module documentation). Cheap to clone:
/// the trees are handles into one sled database.
#[derive(Clone)]
pub struct AnnotationStore {
    files: sled::Tree,
    events: sled::Tree,
    texts: sled::Tree,
    queue: sled::Tree,
    next: Arc<AtomicU64>,
    /// Bumped by every enqueue; the worker waits on it when idle.
    wake: Arc<(Mutex<u64>, Condvar)>,
    /// What the workers did since the collector started.
    pub progress: Arc<Progress>,
}

/// What the analysis workers did since the collector started (`kiroku
/// hosts`, the log).
#[derive(Default)]
pub struct Progress {
    pub analysed: AtomicU64,
    pub reindexed: AtomicU64,
    pub failed_batches: AtomicU64,
    pub workers: AtomicU64,
    /// Events whose analysis panicked (recorded as failed, see worker.rs).
    pub panics: AtomicU64,
    /// Worker threads that died and were started again.
    pub restarts: AtomicU64,
}

impl AnnotationStore {
    pub fn open(meta: &MetaStore) -> Result<AnnotationStore, AnnotationError> {
        let queue = meta.tree(QUEUE)?;
        let next = queue
            .last()
            .map_err(sled_err("reading the queue"))?
            .and_then(|(k, _)| <[u8; 8]>::try_from(k.as_ref()).ok())
            .map_or(0, |k| u64::from_be_bytes(k) + 1);
        Ok(AnnotationStore {
            files: meta.tree(FILES)?,
            events: meta.tree(EVENTS)?,
            texts: meta.tree(TEXTS)?,
            queue,
            next: Arc::new(AtomicU64::new(next)),
            wake: Arc::default(),
            progress: Arc::default(),
        })
    }

    /// The annotations of `event_id`, if it was analysed.
    pub fn annotations(&self, event_id: &str) -> Result<Option<Annotations>, AnnotationError> {
        Ok(self
            .events
            .get(event_id.as_bytes())
            .map_err(sled_err("reading annotations"))?
            .and_then(|v| Annotations::decode(v.as_ref()).ok()))
    }

    /// Stores (replaces) an event's annotations. Durable with the next
    /// meta flush.
    pub fn put_annotations(&self, a: &Annotations) -> Result<(), AnnotationError> {
        self.events
            .insert(a.event_id.as_bytes(), a.encode_to_vec())
            .map_err(sled_err("writing annotations"))?;
        Ok(())
    }

    /// What is known of the content `sha256` from analysis `version`
    /// (None: not analysed, or by another version).
    pub fn file(
        &self,
        sha256: &str,
        version: u32,
    ) -> Result<Option<AttachmentAnalysis>, AnnotationError> {
        let Some(v) = self
            .files
            .get(sha256.as_bytes())
            .map_err(sled_err("reading a file analysis"))?
        else {
            return Ok(None);
        };
        let (head, body) = v.split_at(4.min(v.len()));
        if head != version.to_be_bytes() {
            return Ok(None);
        }
        Ok(AttachmentAnalysis::decode(body).ok())
    }

    /// Keeps the content-only analysis of a file (its `sha256` is the key).
    pub fn put_file(&self, a: &AttachmentAnalysis, version: u32) -> Result<(), AnnotationError> {
        let mut v = version.to_be_bytes().to_vec();
        a.encode(&mut v).map_err(|e| AnnotationError::Io {
            what: "encoding a file analysis",
            source: std::io::Error::other(e),
        })?;
        self.files
            .insert(a.sha256.as_bytes(), v)
            .map_err(sled_err("writing a file analysis"))?;
        Ok(())
    }

    /// The text extracted from the content `sha256` (or kept under a text
    /// key, see `AttachmentAnalysis.text_key`).
    pub fn text(&self, sha256: &str) -> Result<Option<String>, AnnotationError> {
        let Some(v) = self
            .texts
            .get(sha256.as_bytes())
            .map_err(sled_err("reading extracted text"))?
        else {
            return Ok(None);
        };
        let mut out = String::new();
        zstd::Decoder::new(v.as_ref())
            .and_then(|mut d| d.read_to_string(&mut out))
            .map_err(|source| AnnotationError::Io {
                what: "decompressing extracted text",
                source,
            })?;
        Ok(Some(out))
    }

    /// Keeps the text extracted from `sha256` (compressed; cut at
    /// [`MAX_TEXT_BYTES`]). Returns the bytes kept.
    pub fn put_text(&self, sha256: &str, text: &str) -> Result<usize, AnnotationError> {
        let text = cut_at_char(text, MAX_TEXT_BYTES);
        let packed =
            zstd::encode_all(text.as_bytes(), 3).map_err(|source| AnnotationError::Io {
                what: "compressing extracted text",
                source,
            })?;
        self.texts
            .insert(sha256.as_bytes(), packed)
            .map_err(sled_err("writing extracted text"))?;
        Ok(text.len())
    }

    /// The index's source of derived fields: an event's stored
    /// annotations and the texts of its files (never a new analysis).
    pub fn derived_source(&self) -> crate::store::index::DerivedSource {
        let store = self.clone();
        std::sync::Arc::new(move |e: &kiroku_proto::Event| store.derived(e))
    }

    /// The derived fields of `e`, when it was analysed. A store that
    /// cannot be read indexes the event without them (logged); the next
    /// re-index or rebuild adds them.
    pub fn derived(&self, e: &kiroku_proto::Event) -> Option<crate::store::index::Derived> {
        if !matches!(e.kind, Some(kiroku_proto::event::Kind::Email(_))) {
            return None;
        }
        let annotations = match self.annotations(&e.event_id) {
            Ok(a) => a?,
            Err(err) => {
                tracing::warn!(event_id = %e.event_id, error = %err, "annotations not readable; the event is indexed without its derived fields");
                return None;
            }
        };
        let mut texts = Vec::new();
        for a in annotations.attachments.iter().filter(|a| a.text_bytes > 0) {
            let key = if a.text_key.is_empty() {
                &a.sha256
            } else {
                &a.text_key
            };
            if let Ok(Some(t)) = self.text(key) {
                // `text_bytes` is what this event may index of it (the
                // event's text budget may allow less than was kept).
                let keep = cut_at_char(&t, a.text_bytes as usize);
                texts.push(if keep.len() == t.len() {
                    t
                } else {
                    keep.to_owned()
                });
            }
        }
        Some(crate::store::index::Derived {
            annotations,
            texts,
            ..Default::default()
        })
    }

    /// Queues events for analysis. Durable with the next meta flush (the
    /// committer's, which also makes the events' high-water marks durable).
    pub fn enqueue<'a>(
        &self,
        event_ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<usize, AnnotationError> {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for id in event_ids {
            let key = self.next.fetch_add(1, Ordering::SeqCst).to_be_bytes();
            batch.insert(&key, id.as_bytes());
            n += 1;
        }
        if n > 0 {
            self.queue
                .apply_batch(batch)
                .map_err(sled_err("queueing events for analysis"))?;
        }
        Ok(n)
    }

    /// Wakes the worker after an enqueue was made durable.
    pub fn notify(&self) {
        let (m, c) = &*self.wake;
        let mut g = m.lock().unwrap_or_else(|p| p.into_inner());
        *g = g.wrapping_add(1);
        c.notify_all();
    }

    /// Waits until [`AnnotationStore::notify`] is called or `timeout`
    /// passes.
    pub fn wait(&self, timeout: Duration) {
        let (m, c) = &*self.wake;
        let g = m.lock().unwrap_or_else(|p| p.into_inner());
        let seen = *g;
        let _ = c.wait_timeout_while(g, timeout, |n| *n == seen);
    }

    /// Where the analysis stands, for `ListHosts`.
    pub fn status(&self) -> kiroku_proto::AnalysisStatus {
        let p = &self.progress;
        let pending = self.pending() as u64;
        let analysed = p.analysed.load(Ordering::Relaxed);
        let failed_batches = p.failed_batches.load(Ordering::Relaxed);
        let workers = p.workers.load(Ordering::Relaxed) as u32;
        let mut message = format!(
            "analysis (version {}): {pending} mails waiting, {analysed} analysed since start, {workers} workers",
            super::VERSION
        );
        let panics = p.panics.load(Ordering::Relaxed);
        let restarts = p.restarts.load(Ordering::Relaxed);
        if panics > 0 {
            message.push_str(&format!(
                "; the analysis of {panics} mails failed with a panic (recorded in their annotations, see the collector's log)"
            ));
        }
        if restarts > 0 {
            message.push_str(&format!(
                "; {restarts} workers died and were restarted (see the collector's log)"
            ));
        }
        if failed_batches > 0 {
            message.push_str(&format!(
                "; {failed_batches} batches failed and were retried (see the collector's log)"
            ));
        }
        kiroku_proto::AnalysisStatus {
            pending,
            analysed,
            failed_batches,
            version: super::VERSION,
            workers,
            message,
        }
    }

    /// Events waiting for analysis.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// Up to `n` queued events, oldest first, leaving out those in `busy`
    /// (taken by another worker).
    pub fn next_batch(
        &self,
        n: usize,
        busy: &HashSet<String>,
    ) -> Result<Vec<Pending>, AnnotationError> {
        let mut out = Vec::new();
        for kv in self.queue.iter() {
            let (k, v) = kv.map_err(sled_err("reading the queue"))?;
            let Ok(key) = <[u8; 8]>::try_from(k.as_ref()) else {
                continue;
            };
            let event_id = String::from_utf8_lossy(&v).into_owned();
            if busy.contains(&event_id) {
                continue;
            }
            out.push(Pending { key, event_id });
            if out.len() >= n {
                break;
            }
        }
        Ok(out)
    }

    /// Removes handled entries (durable with the next meta flush).
    pub fn done(&self, handled: &[Pending]) -> Result<(), AnnotationError> {
        let mut batch = sled::Batch::default();
        for p in handled {
            batch.remove(&p.key);
        }
        self.queue
            .apply_batch(batch)
            .map_err(sled_err("removing handled queue entries"))
    }
}

/// `s` cut to at most `max` bytes at a character boundary.
pub fn cut_at_char(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiroku_proto::ArchiveMember;

    fn open() -> (tempfile::TempDir, MetaStore, AnnotationStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta = MetaStore::open(&dir.path().join("meta")).expect("meta");
        let s = AnnotationStore::open(&meta).expect("annotation store");
        (dir, meta, s)
    }

    #[test]
    fn annotations_files_and_text_round_trip() {
        let (_d, _m, s) = open();
        assert_eq!(s.annotations("a/s/1").expect("read"), None);
        let a = Annotations {
            event_id: "a/s/1".into(),
            version: 1,
            tags: vec!["type-mismatch".into()],
            ..Default::default()
        };
        s.put_annotations(&a).expect("put");
        assert_eq!(s.annotations("a/s/1").expect("read"), Some(a));

        let f = AttachmentAnalysis {
            sha256: "ab".repeat(32),
            container: "zip".into(),
            members: vec![ArchiveMember {
                path: "x.txt".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        s.put_file(&f, 3).expect("put file");
        assert_eq!(s.file(&f.sha256, 3).expect("read"), Some(f.clone()));
        // Another analysis version does not reuse it.
        assert_eq!(s.file(&f.sha256, 4).expect("read"), None);

        let long = "社外秘".repeat(MAX_TEXT_BYTES / 9 + 10);
        let kept = s.put_text(&f.sha256, &long).expect("put text");
        assert!(kept <= MAX_TEXT_BYTES && kept > MAX_TEXT_BYTES - 3);
        let back = s.text(&f.sha256).expect("read").expect("text");
        assert_eq!(back.len(), kept);
        assert!(long.starts_with(&back));
    }

    #[test]
    fn the_queue_is_ordered_skips_busy_entries_and_survives_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let meta = MetaStore::open(&dir.path().join("meta")).expect("meta");
            let s = AnnotationStore::open(&meta).expect("store");
            assert_eq!(s.enqueue(["e1", "e2", "e3"]).expect("enqueue"), 3);
            let busy: HashSet<String> = ["e1".to_owned()].into();
            let got = s.next_batch(10, &busy).expect("batch");
            let ids: Vec<&str> = got.iter().map(|p| p.event_id.as_str()).collect();
            assert_eq!(ids, ["e2", "e3"]);
            s.done(&got[..1]).expect("done");
            meta.flush().expect("flush");
        }
        // sled's flusher thread can hold the database's lock a moment
        // after the last handle is dropped.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let meta = loop {
            match MetaStore::open(&dir.path().join("meta")) {
                Ok(m) => break m,
                Err(e) if std::time::Instant::now() > deadline => panic!("reopening: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        let s = AnnotationStore::open(&meta).expect("store");
        assert_eq!(s.pending(), 2);
        s.enqueue(["e4"]).expect("enqueue");
        let ids: Vec<String> = s
            .next_batch(10, &HashSet::new())
            .expect("batch")
            .into_iter()
            .map(|p| p.event_id)
            .collect();
        assert_eq!(ids, ["e1", "e3", "e4"]);
    }
}
