//! The tantivy index over events. Each document holds the searchable fields
//! and the whole event (prost-encoded, stored), so the index is also where
//! `GetEvent` reads from. Adding an event first deletes any document with
//! the same `event_id` in the same commit, which makes re-indexing after a
//! crash idempotent.
//!
//! [`EventIndex`] is what the rest of the collector sees. It holds the
//! index that serves queries and, while an index of an older schema is
//! rebuilt from the journal (`index/rebuild.rs`), the one being built:
//! new events go into the new one, queries are answered by the old one
//! (with its own schema; a filter it does not have is refused, see
//! `index/legacy.rs`) until the rebuild switches them. [`TantivyIndex`] is
//! one tantivy index directory with its fields.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use kiroku_common::mail::InternalDomains;

use super::journal::Provenance;

use kiroku_proto::{Event, SearchRequest};
use prost::Message;
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{Query, TermQuery};
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::{
    DocAddress, Index, IndexReader, IndexWriter, Order, ReloadPolicy, TantivyDocument, Term,
};

pub mod analyzer;
mod exclusions;
mod exfil;
mod filters;
mod ids;
mod incidents;
mod legacy;
mod limits;
mod mailflow;
mod merges;
mod mtalog;
mod network;
mod provenance;
mod purge;
mod rebuild;
mod relay;
mod schema;
mod stats;
pub use exfil::{ExfilEvent, ExfilFilter, ExfilScan};
pub use limits::{check_exfil, check_search};
pub use mailflow::{DIRECTIONS, message_id_key};
pub use merges::Headroom;
pub use rebuild::{RebuildState, RebuildStatus};
use schema::Fields;
pub use schema::{SCHEMA_VERSION, corrected_ms, outcome_name, sha_key};
pub use stats::{DEFAULT_TOP, GROUP_BYS, Group, GroupBy, MAX_TOP, Stats, StatsQuery, Tally};

/// What the collector derived from an event's content (its annotations,
/// `analysis/store.rs`), indexed with the event: the hashes of files
/// inside its attachments go with the attachment hashes, their names with
/// the attachment names, the derived tags with the tags.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Derived {
    pub annotations: kiroku_proto::Annotations,
    /// Text extracted from the event's attachments (the text work of
    /// issue 17 indexes it).
    pub texts: Vec<String>,
    /// Issue 20: the mail's delivery status from the MTA's log
    /// (`delivery/store.rs`); empty: nothing joined ("unknown").
    pub delivery: String,
}

/// Where the index finds an event's [`Derived`] fields whenever it adds
/// the event (ingest, re-index after analysis, rebuild): the annotation
/// store, so a rebuild takes what was derived instead of redoing it.
pub type DerivedSource = Arc<dyn Fn(&Event) -> Option<Derived> + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index {path}: {source}")]
    Tantivy {
        path: PathBuf,
        source: tantivy::TantivyError,
    },
    #[error("invalid query in field `{field}`: {message}")]
    BadQuery {
        field: &'static str,
        message: String,
    },
    /// A request the index of the older schema, which serves queries while
    /// the new one is built, cannot answer.
    #[error(
        "{what} needs the rebuilt index: the collector is rebuilding its index for a new schema ({percent}% done; `kiroku hosts` shows the progress) and until then answers from the previous index, which does not have it. Try again once the rebuild is done"
    )]
    NeedsRebuild { what: String, percent: u32 },
    #[error("index {path}: {message}")]
    Other { path: PathBuf, message: String },
}

/// The collector's event index (see the module documentation).
pub struct EventIndex {
    shared: Arc<rebuild::Shared>,
    /// The collector's `internal_domains`, read by every query that asks
    /// for internal or external mail (see `index/mailflow.rs`).
    internal: RwLock<Arc<InternalDomains>>,
    /// Held by whoever adds and commits a group (the committer, the
    /// analysis worker's re-index), so one's rollback never drops the
    /// other's additions and neither commits the other's half-done group.
    group: Mutex<()>,
}

/// What serves queries and what new events go into.
struct Indexes {
    serving: Arc<TantivyIndex>,
    /// The index of the current schema being rebuilt from the journal.
    building: Option<Arc<TantivyIndex>>,
}

/// One tantivy index directory: its schema's fields, reader and (for an
/// index of the current schema) writer.
pub struct TantivyIndex {
    path: PathBuf,
    index: Index,
    /// None for an index of an older schema: it is only read.
    writer: Mutex<Option<IndexWriter>>,
    reader: IndexReader,
    f: Fields,
    /// Fields of the current schema this index does not have (an index of
    /// an older schema; their handles in `f` must not be used).
    missing: Vec<String>,
    /// The schema version the index was written under.
    version: u32,
    /// Written with every commit (tantivy keeps only the last commit's):
    /// a rebuild's progress through the journal.
    payload: Mutex<Option<String>>,
    /// Of the current schema version, all its fields, and written to.
    current: bool,
}

/// Writer heap (tantivy splits it across its indexing threads).
const WRITER_HEAP: usize = 64 * 1024 * 1024;
pub const MAX_PAGE: u32 = 1000;
pub const DEFAULT_PAGE: u32 = 50;
/// Values of the `kind` filter.
pub const KINDS: [&str; 10] = [
    "email",
    "file",
    "host_change",
    "gap",
    "integrity",
    "incident",
    "auth",
    "mta_log",
    // Issue 21.
    "network",
    "p2p",
];

fn poisoned(path: &Path) -> IndexError {
    IndexError::Other {
        path: path.to_owned(),
        message: "index writer lock poisoned".into(),
    }
}

impl EventIndex {
    /// Opens (or creates) the index at `path`. An index written under an
    /// older schema serves queries as it is; [`EventIndex::start_rebuild`]
    /// builds its successor from the journal in the background.
    pub fn open(path: &Path) -> Result<EventIndex, IndexError> {
        Ok(EventIndex {
            shared: Arc::new(rebuild::Shared::open(path)?),
            internal: RwLock::default(),
            group: Mutex::new(()),
        })
    }

    /// Creates an empty index of the current schema at `path` (which must
    /// not hold one), for a rebuild.
    pub fn create(path: &Path) -> Result<EventIndex, IndexError> {
        let one = TantivyIndex::open_current(path)?;
        Ok(EventIndex {
            shared: Arc::new(rebuild::Shared::new(path, one)),
            internal: RwLock::default(),
            group: Mutex::new(()),
        })
    }

    /// Sets the organisation's own mail domains (the collector's
    /// `internal_domains`); queries from then on use them.
    pub fn set_internal_domains(&self, domains: InternalDomains) {
        let domains = Arc::new(domains);
        match self.internal.write() {
            Ok(mut d) => *d = domains,
            Err(p) => *p.into_inner() = domains,
        }
    }

    /// The index at `path` with `text` as the analyzer of every full-text
    /// field in place of [`analyzer::index_analyzer`]. Only for the
    /// analyzer cost benchmark (`collector/examples/analyzer_cost.rs`),
    /// which indexes the same events with tantivy's default analyzer and
    /// with ours; the collector never calls it.
    #[doc(hidden)]
    pub fn open_with_analyzer(
        path: &Path,
        text: tantivy::tokenizer::TextAnalyzer,
    ) -> Result<EventIndex, IndexError> {
        let idx = Self::open(path)?;
        idx.serving()
            .index
            .tokenizers()
            .register(analyzer::NAME, text);
        Ok(idx)
    }

    /// Waits for the merges in progress and closes the index: for `repair`,
    /// which moves the directory next (a merge still running would write
    /// into a path that is gone), and the analyzer cost benchmark, whose
    /// figures include the merges its commits started.
    pub fn close_after_merges(self) -> Result<(), IndexError> {
        let serving = self.serving();
        let writer = serving
            .writer
            .lock()
            .map_err(|_| poisoned(&serving.path))?
            .take();
        match writer {
            Some(w) => w
                .wait_merging_threads()
                .map_err(|source| IndexError::Tantivy {
                    path: serving.path.clone(),
                    source,
                }),
            None => Ok(()),
        }
    }

    /// The internal domains queries compare with.
    pub fn internal_domains(&self) -> Arc<InternalDomains> {
        match self.internal.read() {
            Ok(d) => d.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn indexes(&self) -> std::sync::RwLockReadGuard<'_, Indexes> {
        self.shared
            .indexes
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The index that answers queries.
    fn serving(&self) -> Arc<TantivyIndex> {
        self.indexes().serving.clone()
    }

    /// Refuses a request that needs the index of the current schema (an
    /// aggregation, say) while one of an older schema serves; `what` names
    /// the request in the refusal.
    pub fn require_current(&self, what: &str) -> Result<(), IndexError> {
        if self.serving().is_current() {
            Ok(())
        } else {
            Err(self.needs_rebuild(what))
        }
    }

    /// The serving index, when it has all of `fields`.
    fn serving_with(&self, what: &str, fields: &[&str]) -> Result<Arc<TantivyIndex>, IndexError> {
        let s = self.serving();
        if fields.iter().any(|f| s.missing.iter().any(|m| m == f)) {
            return Err(self.needs_rebuild(what));
        }
        Ok(s)
    }

    fn needs_rebuild(&self, what: &str) -> IndexError {
        IndexError::NeedsRebuild {
            what: what.to_owned(),
            percent: self.rebuild_status().map_or(0, |s| s.percent as u32),
        }
    }

    /// Where new events go: the index being built during a rebuild.
    fn writing<T>(
        &self,
        f: impl FnOnce(&TantivyIndex) -> Result<T, IndexError>,
    ) -> Result<T, IndexError> {
        // Held across the call: the rebuild's switch waits for it. While
        // the switch runs (it may wait minutes for the new index's merges),
        // writers wait here, queries do not.
        loop {
            let ix = self.indexes();
            if !self
                .shared
                .switching
                .load(std::sync::atomic::Ordering::SeqCst)
            {
                return f(ix.building.as_ref().unwrap_or(&ix.serving));
            }
            drop(ix);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Adds events (replacing any with the same id), each with its derived
    /// fields ([`EventIndex::set_derived`]) and the journal provenance the
    /// replaced document had (a re-index after analysis keeps it). Not
    /// visible or durable until [`EventIndex::commit`].
    pub fn add(&self, events: &[Event]) -> Result<(), IndexError> {
        let derive = self.shared.derived();
        self.writing(|ix| ix.add(events, derive.as_ref(), None))
    }

    /// [`EventIndex::add`] with each event's place in the journal
    /// (`provenance[i]` is that of `events[i]`).
    pub fn add_recorded(
        &self,
        events: &[Event],
        provenance: &[Provenance],
    ) -> Result<(), IndexError> {
        let derive = self.shared.derived();
        self.writing(|ix| ix.add(events, derive.as_ref(), Some(provenance)))
    }

    /// Sets where the derived fields of each added event come from.
    pub fn set_derived(&self, source: DerivedSource) {
        self.shared.set_derived(source);
    }

    /// The lock of a group of adds and its commit (or rollback); see
    /// `group`.
    pub fn write_group(&self) -> std::sync::MutexGuard<'_, ()> {
        self.group.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Durable commit (tantivy fsyncs), then makes the new events searchable.
    pub fn commit(&self) -> Result<(), IndexError> {
        self.writing(|ix| ix.commit())
    }

    /// Drops uncommitted additions (after a failed batch).
    pub fn rollback(&self) -> Result<(), IndexError> {
        // tantivy's rollback replaces the writer, and its merge policy with
        // the default: the reserve's policy is set again.
        let headroom = self
            .shared
            .headroom
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        self.writing(|ix| {
            ix.rollback()?;
            if let Some(h) = headroom {
                ix.limit_merges(h);
            }
            Ok(())
        })
    }

    /// Holds merges back while they would not fit above the free-space
    /// reserve (`headroom`: bytes that may still be written). The rebuild
    /// pauses on it too.
    pub fn limit_merges(&self, headroom: Headroom) {
        *self
            .shared
            .headroom
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(headroom.clone());
        let ix = self.indexes();
        ix.serving.limit_merges(headroom.clone());
        if let Some(b) = &ix.building {
            b.limit_merges(headroom);
        }
    }

    /// The event `event_id`. During a rebuild an event that arrived since
    /// it began is only in the index being built: both are asked.
    pub fn get(&self, event_id: &str) -> Result<Option<Event>, IndexError> {
        let (serving, building) = {
            let ix = self.indexes();
            (ix.serving.clone(), ix.building.clone())
        };
        if let Some(b) = building
            && let Some(e) = b.get(event_id)?
        {
            return Ok(Some(e));
        }
        if serving
            .missing
            .iter()
            .any(|m| m == "event_id" || m == "event")
        {
            return Err(self.needs_rebuild("reading an event"));
        }
        serving.get(event_id)
    }

    /// Calls `f` with every stored event of the serving index (unordered).
    pub fn for_each_stored(
        &self,
        f: impl FnMut(Event) -> Result<(), super::journal::JournalError>,
    ) -> anyhow::Result<()> {
        self.serving_with("reading stored events", &["event"])?
            .for_each_stored(f)
    }

    /// Checks every index file against its checksum; returns the damaged
    /// files (empty when the index is sound).
    pub fn damaged_files(path: &Path) -> Result<Vec<PathBuf>, IndexError> {
        let terr = |source| IndexError::Tantivy {
            path: path.to_owned(),
            source,
        };
        let index = Index::open_in_dir(path).map_err(terr)?;
        let bad = index.validate_checksum().map_err(terr)?;
        let mut v: Vec<PathBuf> = bad.into_iter().map(|p| path.join(p)).collect();
        v.sort();
        Ok(v)
    }

    /// Number of events in the serving index.
    pub fn count(&self) -> u64 {
        self.serving().count()
    }

    /// Events carrying content `sha256`: attachment, raw message or file.
    pub fn by_hash(&self, sha256: &str, cap: usize) -> Result<(Vec<Event>, bool), IndexError> {
        self.serving_with("a trace", &["sha256", "observed_at", "event"])?
            .by_hash(sha256, cap)
    }

    /// File events whose `source_path` is `path` (copies of that file).
    pub fn by_source_path(&self, path: &str, cap: usize) -> Result<(Vec<Event>, bool), IndexError> {
        self.serving_with("a trace", &["source_path", "observed_at", "event"])?
            .by_source_path(path, cap)
    }

    /// The exfiltration report's events in `[from_ms, to_ms)` that
    /// `filter` keeps; with `external`, only mail whose accepted recipients
    /// are external (`Some(true)`) or all internal (`Some(false)`).
    pub fn exfil_scan(
        &self,
        from_ms: i64,
        to_ms: i64,
        filter: &ExfilFilter,
        external: Option<bool>,
    ) -> Result<ExfilScan, IndexError> {
        // One index for the whole call: a query built with one index's
        // field handles must never run on another (the rebuild's switch may
        // come in between two lookups of the serving index).
        let s = self.serving_with("the exfiltration report", exfil::FIELDS)?;
        let also = match external {
            None => None,
            Some(external) => {
                if mailflow::RECIPIENT_FIELDS
                    .iter()
                    .any(|f| s.missing.iter().any(|m| m == f))
                {
                    return Err(
                        self.needs_rebuild("the exfiltration report's internal/external filter")
                    );
                }
                Some(s.recipients_query(external, &self.internal_domains())?)
            }
        };
        s.exfil_scan(from_ms, to_ms, filter, also)
    }

    /// Newest first. Returns (events, total hits, next offset if more).
    /// While an index of an older schema serves, a request that uses a
    /// filter it does not have is refused ([`IndexError::NeedsRebuild`]).
    pub fn search(
        &self,
        r: &SearchRequest,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<Event>, u64, Option<usize>), IndexError> {
        let s = self.serving();
        let internal = self.internal_domains();
        if s.is_current() {
            return s.search(r, &internal, offset, limit);
        }
        if let Some(what) = legacy::refusal(r, &s.missing) {
            return Err(self.needs_rebuild(&what));
        }
        // A legacy filter whose query came to read a field added since
        // (its handle is not in the old schema, where tantivy panics on
        // it) is refused like a new filter rather than failing obscurely.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            s.search(r, &internal, offset, limit)
        }))
        .unwrap_or_else(|_| Err(self.needs_rebuild("this search")))
    }

    /// Where the rebuild of an index of an older schema stands; None when
    /// none was needed since the collector started.
    pub fn rebuild_status(&self) -> Option<RebuildStatus> {
        self.shared.status()
    }
}

impl TantivyIndex {
    /// Opens the index at `path` under the current schema, creating it
    /// (with its schema version) when there is none. Fails with a tantivy
    /// `SchemaError` when the index there has another schema.
    fn open_current(path: &Path) -> Result<TantivyIndex, IndexError> {
        let terr = |source| IndexError::Tantivy {
            path: path.to_owned(),
            source,
        };
        let other = |e: &dyn std::fmt::Display| IndexError::Other {
            path: path.to_owned(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(path).map_err(|e| other(&e))?;
        if !path.join("meta.json").exists() {
            // A new index: it is of the current schema from its start.
            rebuild::write_version(path, SCHEMA_VERSION)?;
        }
        let (schema, f) = schema::schema();
        let dir = tantivy::directory::MmapDirectory::open(path).map_err(|e| other(&e))?;
        let index = Index::open_or_create(dir, schema).map_err(terr)?;
        let writer = index
            .writer_with_num_threads(1, WRITER_HEAP)
            .map_err(terr)?;
        let payload = index.load_metas().map_err(terr)?.payload;
        Self::with(path, index, Some(writer), f, Vec::new(), payload)
    }

    /// Opens the index at `path` read-only under the schema it was written
    /// with, its fields found by name ([`TantivyIndex::missing`] lists
    /// those of the current schema it lacks).
    fn open_legacy(path: &Path) -> Result<TantivyIndex, IndexError> {
        let terr = |source| IndexError::Tantivy {
            path: path.to_owned(),
            source,
        };
        let index = Index::open_in_dir(path).map_err(terr)?;
        let (f, missing) = schema::fields_in(&index.schema());
        Self::with(path, index, None, f, missing, None)
    }

    fn with(
        path: &Path,
        index: Index,
        writer: Option<IndexWriter>,
        f: Fields,
        missing: Vec<String>,
        payload: Option<String>,
    ) -> Result<TantivyIndex, IndexError> {
        // Every index knows the CJK analyzer: the current schema's text
        // fields name it (an older schema's fields keep their own).
        analyzer::register(&index);
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|source| IndexError::Tantivy {
                path: path.to_owned(),
                source,
            })?;
        let version = rebuild::read_version(path);
        let current = version == SCHEMA_VERSION && missing.is_empty() && writer.is_some();
        Ok(TantivyIndex {
            path: path.to_owned(),
            current,
            version,
            index,
            writer: Mutex::new(writer),
            reader,
            f,
            missing,
            payload: Mutex::new(payload),
        })
    }

    /// Written under the current schema (and so never rebuilt). Decided
    /// when the index is opened: the query path never waits on the
    /// writer's lock, which a commit holds.
    fn is_current(&self) -> bool {
        self.current
    }

    fn terr(&self, source: tantivy::TantivyError) -> IndexError {
        IndexError::Tantivy {
            path: self.path.clone(),
            source,
        }
    }

    /// The writer, or an error for an index that is only read.
    fn with_writer<T>(
        &self,
        f: impl FnOnce(&mut IndexWriter) -> Result<T, IndexError>,
    ) -> Result<T, IndexError> {
        let mut w = self.writer.lock().map_err(|_| poisoned(&self.path))?;
        match w.as_mut() {
            Some(w) => f(w),
            None => Err(IndexError::Other {
                path: self.path.clone(),
                message: "this index has an older schema and is only read while its successor is rebuilt; new events go to the new one".into(),
            }),
        }
    }

    fn add(
        &self,
        events: &[Event],
        derive: Option<&DerivedSource>,
        provenance: Option<&[Provenance]>,
    ) -> Result<(), IndexError> {
        self.with_writer(|w| self.add_with(w, events, derive, provenance))
    }

    /// Adds `events`; without `provenance`, each keeps the one its
    /// replaced document had.
    fn add_with(
        &self,
        w: &mut IndexWriter,
        events: &[Event],
        derive: Option<&DerivedSource>,
        provenance: Option<&[Provenance]>,
    ) -> Result<(), IndexError> {
        let searcher = provenance.is_none().then(|| self.reader.searcher());
        for (i, e) in events.iter().enumerate() {
            let derived = derive.and_then(|d| d(e));
            let prov = match (provenance, &searcher) {
                (Some(p), _) => p.get(i).copied(),
                (None, Some(s)) => self.provenance_in(s, &e.event_id)?,
                (None, None) => None,
            };
            let mut doc = self.document(e, derived.as_ref());
            if let Some(p) = prov {
                self.add_provenance(&mut doc, &p);
            }
            w.delete_term(Term::from_field_text(self.f.event_id, &e.event_id));
            w.add_document(doc).map_err(|e| self.terr(e))?;
        }
        Ok(())
    }

    fn limit_merges(&self, headroom: Headroom) {
        let policy = merges::ReserveMergePolicy::new(self.path.clone(), headroom);
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = w.as_mut() {
            w.set_merge_policy(Box::new(policy));
        }
    }

    fn commit(&self) -> Result<(), IndexError> {
        self.with_writer(|w| self.commit_with(w))?;
        self.reader.reload().map_err(|e| self.terr(e))
    }

    /// Commits with this index's payload (tantivy keeps only the payload
    /// of the last commit, so every commit carries it).
    fn commit_with(&self, w: &mut IndexWriter) -> Result<(), IndexError> {
        let payload = self
            .payload
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut prepared = w.prepare_commit().map_err(|e| self.terr(e))?;
        if let Some(p) = &payload {
            prepared.set_payload(p);
        }
        prepared.commit().map_err(|e| self.terr(e))?;
        Ok(())
    }

    fn rollback(&self) -> Result<(), IndexError> {
        self.with_writer(|w| w.rollback().map(drop).map_err(|e| self.terr(e)))
    }

    fn decode(&self, searcher: &tantivy::Searcher, addr: DocAddress) -> Result<Event, IndexError> {
        let doc: TantivyDocument = searcher.doc(addr).map_err(|e| self.terr(e))?;
        let bytes = doc
            .get_first(self.f.event)
            .and_then(|v| v.as_bytes())
            .unwrap_or_default();
        Event::decode(bytes).map_err(|e| IndexError::Other {
            path: self.path.clone(),
            message: format!("stored event does not decode: {e}"),
        })
    }

    fn get(&self, event_id: &str) -> Result<Option<Event>, IndexError> {
        let searcher = self.reader.searcher();
        let q = TermQuery::new(
            Term::from_field_text(self.f.event_id, event_id),
            IndexRecordOption::Basic,
        );
        let hits = searcher
            .search(&q, &TopDocs::with_limit(1).order_by_score())
            .map_err(|e| self.terr(e))?;
        match hits.first() {
            Some((_, addr)) => Ok(Some(self.decode(&searcher, *addr)?)),
            None => Ok(None),
        }
    }

    fn for_each_stored(
        &self,
        mut f: impl FnMut(Event) -> Result<(), super::journal::JournalError>,
    ) -> anyhow::Result<()> {
        let searcher = self.reader.searcher();
        for (ord, seg) in searcher.segment_readers().iter().enumerate() {
            for doc in seg.doc_ids_alive() {
                f(self.decode(&searcher, DocAddress::new(ord as u32, doc))?)?;
            }
        }
        Ok(())
    }

    fn count(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Every event matching `q`, newest first, at most `cap`; true when
    /// there were more.
    fn all_matching(&self, q: &dyn Query, cap: usize) -> Result<(Vec<Event>, bool), IndexError> {
        let searcher = self.reader.searcher();
        let hits = searcher
            .search(
                q,
                &TopDocs::with_limit(cap + 1)
                    .order_by_fast_field::<i64>("observed_at", Order::Desc),
            )
            .map_err(|e| self.terr(e))?;
        let more = hits.len() > cap;
        let events = hits
            .iter()
            .take(cap)
            .map(|(_, addr)| self.decode(&searcher, *addr))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((events, more))
    }

    /// Events carrying content `sha256`: attachment, raw message or file.
    fn by_hash(&self, sha256: &str, cap: usize) -> Result<(Vec<Event>, bool), IndexError> {
        let q = TermQuery::new(
            Term::from_field_bytes(self.f.sha256, &sha_key(sha256)),
            IndexRecordOption::Basic,
        );
        self.all_matching(&q, cap)
    }

    /// File events whose `source_path` is `path` (copies of that file).
    fn by_source_path(&self, path: &str, cap: usize) -> Result<(Vec<Event>, bool), IndexError> {
        let q = TermQuery::new(
            Term::from_field_text(self.f.source_path, path),
            IndexRecordOption::Basic,
        );
        self.all_matching(&q, cap)
    }

    /// Newest first (oldest first with `ascending`). Returns (events,
    /// total hits, next offset if more).
    fn search(
        &self,
        r: &SearchRequest,
        internal: &InternalDomains,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<Event>, u64, Option<usize>), IndexError> {
        let q = self.build_query(r, internal)?;
        let searcher = self.reader.searcher();
        let (hits, total) = searcher
            .search(
                &q,
                &(
                    TopDocs::with_limit(limit.max(1))
                        .and_offset(offset)
                        .order_by_fast_field::<i64>(
                            if r.corrected_time {
                                "corrected_at"
                            } else {
                                "observed_at"
                            },
                            if r.ascending { Order::Asc } else { Order::Desc },
                        ),
                    Count,
                ),
            )
            .map_err(|e| self.terr(e))?;
        let events = hits
            .iter()
            .map(|(_, addr)| self.decode(&searcher, *addr))
            .collect::<Result<Vec<_>, _>>()?;
        let next = offset + events.len();
        let more = (next as u64) < total as u64 && !events.is_empty();
        Ok((events, total as u64, more.then_some(next)))
    }
}

#[cfg(test)]
mod tests;
