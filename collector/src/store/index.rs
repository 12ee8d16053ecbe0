//! The tantivy index over events. Each document holds the searchable fields
//! and the whole event (prost-encoded, stored), so the index is also where
//! `GetEvent` reads from. Adding an event first deletes any document with
//! the same `event_id` in the same commit, which makes re-indexing after a
//! crash idempotent.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use kiroku_proto::{Event, SearchRequest};
use prost::Message;
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{Query, TermQuery};
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::{
    DocAddress, Index, IndexReader, IndexWriter, Order, ReloadPolicy, TantivyDocument, Term,
};

mod exfil;
mod filters;
mod limits;
mod merges;
mod rebuild;
mod schema;
mod stats;
pub use exfil::{ExfilEvent, ExfilScan};
pub use limits::check_search;
pub use merges::Headroom;
use schema::Fields;
pub use schema::{corrected_ms, outcome_name, sha_key};
pub use stats::{
    DEFAULT_TOP, GROUP_BYS, Group, GroupBy, MAX_TOP, Stats, StatsQuery, Tally, domain_of,
};

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
    #[error("index {path}: {message}")]
    Other { path: PathBuf, message: String },
}

pub struct EventIndex {
    path: PathBuf,
    index: Index,
    writer: Mutex<IndexWriter>,
    reader: IndexReader,
    f: Fields,
}

/// Writer heap (tantivy splits it across its indexing threads).
const WRITER_HEAP: usize = 64 * 1024 * 1024;
pub const MAX_PAGE: u32 = 1000;
pub const DEFAULT_PAGE: u32 = 50;
/// Values of the `kind` filter.
pub const KINDS: [&str; 4] = ["email", "file", "host_change", "gap"];

impl EventIndex {
    /// Opens (or creates) the index. An index written with another schema
    /// (a collector version with fewer fields) is rebuilt from the events
    /// its documents store; the old one is kept beside it.
    pub fn open(path: &Path) -> Result<EventIndex, IndexError> {
        Self::finish_interrupted_rebuild(path);
        match Self::open_exact(path) {
            Err(IndexError::Tantivy {
                source: tantivy::TantivyError::SchemaError(_),
                ..
            }) => {
                Self::rebuild(path)?;
                Self::open_exact(path)
            }
            r => r,
        }
    }

    fn open_exact(path: &Path) -> Result<EventIndex, IndexError> {
        let terr = |source| IndexError::Tantivy {
            path: path.to_owned(),
            source,
        };
        std::fs::create_dir_all(path).map_err(|e| IndexError::Other {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let (schema, f) = schema::schema();
        let dir = tantivy::directory::MmapDirectory::open(path).map_err(|e| IndexError::Other {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let index = Index::open_or_create(dir, schema).map_err(terr)?;
        let writer = index
            .writer_with_num_threads(1, WRITER_HEAP)
            .map_err(terr)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(terr)?;
        Ok(EventIndex {
            path: path.to_owned(),
            index,
            writer: Mutex::new(writer),
            reader,
            f,
        })
    }

    fn terr(&self, source: tantivy::TantivyError) -> IndexError {
        IndexError::Tantivy {
            path: self.path.clone(),
            source,
        }
    }

    /// Adds events (replacing any with the same id). Not visible or durable
    /// until [`EventIndex::commit`].
    pub fn add(&self, events: &[Event]) -> Result<(), IndexError> {
        let w = self.writer.lock().map_err(|_| IndexError::Other {
            path: self.path.clone(),
            message: "index writer lock poisoned".into(),
        })?;
        for e in events {
            w.delete_term(Term::from_field_text(self.f.event_id, &e.event_id));
            w.add_document(self.document(e)).map_err(|e| self.terr(e))?;
        }
        Ok(())
    }

    /// Holds merges back while they would not fit above the free-space
    /// reserve (`headroom`: bytes that may still be written).
    pub fn limit_merges(&self, headroom: Headroom) {
        let policy = merges::ReserveMergePolicy::new(self.path.clone(), headroom);
        match self.writer.lock() {
            Ok(w) => w.set_merge_policy(Box::new(policy)),
            Err(p) => p.into_inner().set_merge_policy(Box::new(policy)),
        }
    }

    /// Durable commit (tantivy fsyncs), then makes the new events searchable.
    pub fn commit(&self) -> Result<(), IndexError> {
        let mut w = self.writer.lock().map_err(|_| IndexError::Other {
            path: self.path.clone(),
            message: "index writer lock poisoned".into(),
        })?;
        w.commit().map_err(|e| self.terr(e))?;
        drop(w);
        self.reader.reload().map_err(|e| self.terr(e))
    }

    /// Drops uncommitted additions (after a failed batch).
    pub fn rollback(&self) -> Result<(), IndexError> {
        let mut w = self.writer.lock().map_err(|_| IndexError::Other {
            path: self.path.clone(),
            message: "index writer lock poisoned".into(),
        })?;
        w.rollback().map_err(|e| self.terr(e))?;
        Ok(())
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

    pub fn get(&self, event_id: &str) -> Result<Option<Event>, IndexError> {
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

    /// Calls `f` with every stored event (unordered).
    pub fn for_each_stored(
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

    /// Creates an empty index of the current schema at `path` (which must
    /// not hold one), for a rebuild.
    pub fn create(path: &Path) -> Result<EventIndex, IndexError> {
        Self::open_exact(path)
    }

    /// Number of indexed events.
    pub fn count(&self) -> u64 {
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
    pub fn by_hash(&self, sha256: &str, cap: usize) -> Result<(Vec<Event>, bool), IndexError> {
        let q = TermQuery::new(
            Term::from_field_bytes(self.f.sha256, &sha_key(sha256)),
            IndexRecordOption::Basic,
        );
        self.all_matching(&q, cap)
    }

    /// File events whose `source_path` is `path` (copies of that file).
    pub fn by_source_path(&self, path: &str, cap: usize) -> Result<(Vec<Event>, bool), IndexError> {
        let q = TermQuery::new(
            Term::from_field_text(self.f.source_path, path),
            IndexRecordOption::Basic,
        );
        self.all_matching(&q, cap)
    }

    /// Newest first. Returns (events, total hits, next offset if more).
    pub fn search(
        &self,
        r: &SearchRequest,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<Event>, u64, Option<usize>), IndexError> {
        let q = self.build_query(r)?;
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
                            Order::Desc,
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
