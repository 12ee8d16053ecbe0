//! The tantivy index over events. Each document holds the searchable fields
//! and the whole event (prost-encoded, stored), so the index is also where
//! `GetEvent` reads from. Adding an event first deletes any document with
//! the same `event_id` in the same commit, which makes re-indexing after a
//! crash idempotent.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use kiroku_common::vocabulary;
use kiroku_proto::{Event, SearchRequest, event::Kind};
use prost::Message;
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{
    AllQuery, BooleanQuery, Occur, PhraseQuery, Query, QueryParser, RangeQuery, TermQuery,
};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TEXT, Value,
};
use tantivy::{
    DocAddress, Index, IndexReader, IndexWriter, Order, ReloadPolicy, TantivyDocument, Term,
};

mod exfil;
mod limits;
mod merges;
pub use exfil::{ExfilEvent, ExfilScan};
pub use limits::check_search;
pub use merges::Headroom;

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

#[derive(Clone, Copy)]
struct Fields {
    event_id: Field,
    agent_id: Field,
    kind: Field,
    observed_at: Field,
    corrected_at: Field,
    host: Field,
    user: Field,
    sender: Field,
    recipient: Field,
    address: Field,
    subject: Field,
    body: Field,
    has_attachment: Field,
    attachment_name: Field,
    sha256: Field,
    tag: Field,
    outcome: Field,
    event: Field,
    path: Field,
    operation: Field,
    removable: Field,
    // Investigations (trace, exfil report).
    source_path: Field,
    exfil: Field,
    exfil_user: Field,
    exfil_at: Field,
    exfil_files: Field,
    exfil_bytes: Field,
    exfil_rows: Field,
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

/// The event's time on the collector's clock: observed_at corrected by the
/// agent's measured offset (agent − collector), or observed_at when the
/// offset was not measured.
pub fn corrected_ms(e: &Event) -> i64 {
    // Both come from the agent: saturate rather than overflow (a panic in
    // a debug build, a time wrapped to the other end of the range in a
    // release build; found by fuzz/grpc_query).
    if e.clock_offset_known {
        e.observed_at_ms.saturating_sub(e.clock_offset_ms)
    } else {
        e.observed_at_ms
    }
}

/// Bytes of the SHA-256 `hex` (lower case, as agents record it and
/// queries normalise it) indexed and looked up: the first 16 bytes (128
/// bits: a collision needs about 2^64 hashes, and every caller that shows
/// a match shows the event's full hash). Anything else is indexed as its
/// own bytes, so it still finds itself.
pub fn sha_key(hex: &str) -> Vec<u8> {
    let mut key = vec![0u8; 16];
    if kiroku_common::is_sha256_hex(hex) && hex::decode_to_slice(&hex[..32], &mut key).is_ok() {
        return key;
    }
    hex.as_bytes().to_vec()
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let f = Fields {
        event_id: b.add_text_field("event_id", STRING | STORED),
        agent_id: b.add_text_field("agent_id", STRING),
        kind: b.add_text_field("kind", STRING),
        observed_at: b.add_i64_field("observed_at", INDEXED | FAST),
        // observed_at - clock_offset_ms: the collector's timeline.
        corrected_at: b.add_i64_field("corrected_at", INDEXED | FAST),
        host: b.add_text_field("host", STRING),
        user: b.add_text_field("user", STRING),
        sender: b.add_text_field("sender", STRING),
        recipient: b.add_text_field("recipient", STRING),
        address: b.add_text_field("address", STRING),
        subject: b.add_text_field("subject", TEXT),
        body: b.add_text_field("body", TEXT),
        has_attachment: b.add_bool_field("has_attachment", INDEXED),
        attachment_name: b.add_text_field("attachment_name", TEXT),
        // Content hashes as the first 16 bytes of the SHA-256 (see
        // [`sha_key`]): a third of the index bytes of a file event was the
        // 64-character hex term, and building its dictionary the largest
        // CPU cost of ingest (BENCHMARKS.md, "Profile of small-event
        // ingest").
        sha256: b.add_bytes_field("sha256", INDEXED),
        tag: b.add_text_field("tag", STRING),
        outcome: b.add_text_field("outcome", STRING),
        event: b.add_bytes_field("event", STORED),
        path: b.add_text_field("path", TEXT),
        operation: b.add_text_field("operation", STRING),
        removable: b.add_bool_field("removable", INDEXED),
        // Investigations: a file event's `source_path` (exact).
        source_path: b.add_text_field("source_path", STRING),
        // The exfiltration report (`index/exfil.rs`), only on events that
        // sent files out: the channel ("mail", "removable"), who, when
        // (the rows' corrected time), how many files and bytes — the
        // totals per day and per user are column reads — and the rows
        // themselves, read only for the files a report lists or streams.
        exfil: b.add_text_field("exfil", FAST),
        exfil_user: b.add_text_field("exfil_user", FAST),
        exfil_at: b.add_i64_field("exfil_at", FAST),
        exfil_files: b.add_u64_field("exfil_files", FAST),
        exfil_bytes: b.add_u64_field("exfil_bytes", FAST),
        exfil_rows: b.add_bytes_field("exfil_rows", FAST),
    };
    (b.build(), f)
}

/// Lower-cased outcome name as used in filters and the CLI.
pub fn outcome_name(v: i32) -> &'static str {
    match kiroku_proto::Outcome::try_from(v) {
        Ok(kiroku_proto::Outcome::Delivered) => "delivered",
        Ok(kiroku_proto::Outcome::Rejected) => "rejected",
        Ok(kiroku_proto::Outcome::Aborted) => "aborted",
        Ok(kiroku_proto::Outcome::Captured) => "captured",
        _ => "unknown",
    }
}

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

    /// A crash between the two renames of [`EventIndex::rebuild`] leaves no
    /// index at `path` but a finished rebuild beside it: move it in place.
    fn finish_interrupted_rebuild(path: &Path) {
        let fresh = path.with_extension("rebuilding");
        if !path.join("meta.json").exists() && fresh.join("meta.json").exists() {
            let _ = std::fs::remove_dir_all(path);
            match std::fs::rename(&fresh, path) {
                Ok(()) => {
                    tracing::warn!(index = %path.display(), "finished an index rebuild interrupted by a crash")
                }
                Err(e) => {
                    tracing::error!(index = %path.display(), error = %e, "cannot finish an interrupted index rebuild")
                }
            }
        }
    }

    /// Re-indexes every stored event of the index at `path` under the
    /// current schema, into a new directory that then takes its place; the
    /// old one moves to `<path>.pre-<unix time>`.
    fn rebuild(path: &Path) -> Result<(), IndexError> {
        let terr = |source| IndexError::Tantivy {
            path: path.to_owned(),
            source,
        };
        let other = |message: String| IndexError::Other {
            path: path.to_owned(),
            message,
        };
        tracing::warn!(index = %path.display(), "the index was written with another schema: rebuilding it from its stored events");
        let old = Index::open_in_dir(path).map_err(terr)?;
        let event = old.schema().get_field("event").map_err(|_| {
            other("the index has another schema and no stored events to rebuild from: move the directory aside and start the collector again".into())
        })?;
        let fresh_path = path.with_extension("rebuilding");
        if fresh_path.exists() {
            std::fs::remove_dir_all(&fresh_path)
                .map_err(|e| other(format!("removing {}: {e}", fresh_path.display())))?;
        }
        let fresh = Self::open_exact(&fresh_path)?;
        let reader = old.reader().map_err(terr)?;
        let searcher = reader.searcher();
        let mut batch = Vec::new();
        let mut n = 0u64;
        for (ord, seg) in searcher.segment_readers().iter().enumerate() {
            for doc in seg.doc_ids_alive() {
                let d: TantivyDocument = searcher
                    .doc(DocAddress::new(ord as u32, doc))
                    .map_err(terr)?;
                let bytes = d
                    .get_first(event)
                    .and_then(|v| v.as_bytes())
                    .unwrap_or_default();
                batch.push(
                    Event::decode(bytes)
                        .map_err(|e| other(format!("stored event does not decode: {e}")))?,
                );
                if batch.len() >= 10_000 {
                    fresh.add(&batch)?;
                    fresh.commit()?;
                    n += batch.len() as u64;
                    batch.clear();
                }
            }
        }
        fresh.add(&batch)?;
        fresh.commit()?;
        n += batch.len() as u64;
        drop((fresh, searcher, reader, old));
        let aside = path.with_extension(format!("pre-{}", kiroku_common::now_ms() / 1000));
        std::fs::rename(path, &aside)
            .map_err(|e| other(format!("moving the old index to {}: {e}", aside.display())))?;
        std::fs::rename(&fresh_path, path).map_err(|e| {
            other(format!(
                "moving the rebuilt index {} into place: {e}",
                fresh_path.display()
            ))
        })?;
        tracing::warn!(index = %path.display(), events = n, old = %aside.display(), "index rebuilt; delete the old copy once satisfied");
        Ok(())
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
        let (schema, f) = schema();
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

    fn document(&self, e: &Event) -> TantivyDocument {
        let f = &self.f;
        let mut d = TantivyDocument::default();
        d.add_text(f.event_id, &e.event_id);
        d.add_text(f.agent_id, &e.agent_id);
        d.add_i64(f.observed_at, e.observed_at_ms);
        d.add_i64(f.corrected_at, corrected_ms(e));
        if let Some(h) = &e.host {
            for name in [&h.hostname, &h.fqdn] {
                if !name.is_empty() {
                    d.add_text(f.host, name.to_lowercase());
                }
            }
        }
        if !e.user.is_empty() {
            d.add_text(f.user, e.user.to_lowercase());
        }
        for t in &e.tags {
            d.add_text(f.tag, t);
        }
        if let Some(Kind::Email(m)) = &e.kind {
            d.add_text(f.kind, "email");
            d.add_text(f.outcome, outcome_name(m.outcome));
            // Who logged in to the mail server is a user too: `--user`
            // finds mail by the desktop account or the SMTP login.
            if !m.auth_user.is_empty() {
                d.add_text(f.user, m.auth_user.to_lowercase());
            }
            let senders = std::iter::once(&m.mail_from).chain(&m.from);
            let recipients = m
                .rcpt_to
                .iter()
                .map(|r| &r.address)
                .chain(&m.to)
                .chain(&m.cc)
                .chain(&m.bcc);
            for a in senders.filter(|a| !a.is_empty()) {
                d.add_text(f.sender, a.to_lowercase());
                d.add_text(f.address, a.to_lowercase());
            }
            for a in recipients.filter(|a| !a.is_empty()) {
                d.add_text(f.recipient, a.to_lowercase());
                d.add_text(f.address, a.to_lowercase());
            }
            d.add_text(f.subject, &m.subject);
            d.add_text(f.body, &m.body_text);
            d.add_bool(f.has_attachment, m.attachment_count > 0);
            for a in &m.attachments {
                d.add_text(f.attachment_name, &a.filename);
                d.add_bytes(f.sha256, &sha_key(&a.sha256));
            }
            if !m.raw_sha256.is_empty() {
                d.add_bytes(f.sha256, &sha_key(&m.raw_sha256));
            }
        }
        match &e.kind {
            Some(Kind::File(file)) => {
                d.add_text(f.kind, "file");
                d.add_text(f.operation, &file.operation);
                for p in [&file.path, &file.old_path] {
                    if !p.is_empty() {
                        d.add_text(f.path, p);
                    }
                }
                d.add_bool(f.removable, file.removable);
                // The same field as attachment hashes: `--sha256` finds a
                // file wherever it went, by mail or on disk.
                if !file.sha256.is_empty() {
                    d.add_bytes(f.sha256, &sha_key(&file.sha256));
                }
                // Investigations (trace).
                if !file.source_path.is_empty() {
                    d.add_text(f.source_path, &file.source_path);
                }
            }
            Some(Kind::HostChange(_)) => d.add_text(f.kind, "host_change"),
            Some(Kind::Gap(g)) => {
                // What the agent could not record: found by the addresses
                // and paths it names, as the records it stands for would be.
                d.add_text(f.kind, "gap");
                d.add_text(f.operation, &g.reason);
                for a in g.senders.iter().filter(|a| !a.is_empty()) {
                    d.add_text(f.sender, a.to_lowercase());
                    d.add_text(f.address, a.to_lowercase());
                }
                for a in g.recipients.iter().filter(|a| !a.is_empty()) {
                    d.add_text(f.recipient, a.to_lowercase());
                    d.add_text(f.address, a.to_lowercase());
                }
                for p in g.paths.iter().filter(|p| !p.is_empty()) {
                    d.add_text(f.path, p);
                }
                d.add_text(f.body, &g.detail);
            }
            _ => {}
        }
        exfil::add_fields(f, &mut d, &crate::investigate::exfil_files(e));
        d.add_bytes(f.event, &e.encode_to_vec());
        d
    }

    /// Words of a path as a phrase: `alice/q3 report.pdf` finds
    /// `/home/alice/Q3 Report.pdf`. Built from the field's own tokenizer,
    /// so path characters are never query syntax.
    fn path_query(&self, text: &str) -> Result<Box<dyn Query>, IndexError> {
        let mut analyzer = self
            .index
            .tokenizer_for_field(self.f.path)
            .map_err(|e| self.terr(e))?;
        let mut stream = analyzer.token_stream(text);
        let mut terms = Vec::new();
        while stream.advance() {
            terms.push(Term::from_field_text(self.f.path, &stream.token().text));
        }
        Ok(match terms.len() {
            0 => {
                return Err(IndexError::BadQuery {
                    field: "path",
                    message: format!(
                        "{} has no words to search for",
                        kiroku_common::quote::quote(text)
                    ),
                });
            }
            1 => Box::new(TermQuery::new(terms.remove(0), IndexRecordOption::Basic)),
            _ => Box::new(PhraseQuery::new(terms)),
        })
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

    fn build_query(&self, r: &SearchRequest) -> Result<Box<dyn Query>, IndexError> {
        check_search(r)?;
        let f = &self.f;
        let mut must: Vec<Box<dyn Query>> = Vec::new();
        let term = |field: Field, v: &str| -> Box<dyn Query> {
            Box::new(TermQuery::new(
                Term::from_field_text(field, v),
                IndexRecordOption::Basic,
            ))
        };
        for (field, v) in [
            (f.host, &r.host),
            (f.user, &r.user),
            (f.address, &r.address),
            (f.sender, &r.sender),
            (f.recipient, &r.recipient),
            (f.outcome, &r.outcome),
        ] {
            if !v.is_empty() {
                must.push(term(field, &v.trim().to_lowercase()));
            }
        }
        if !r.sha256.is_empty() {
            must.push(Box::new(TermQuery::new(
                Term::from_field_bytes(f.sha256, &sha_key(&r.sha256.trim().to_lowercase())),
                IndexRecordOption::Basic,
            )));
        }
        if !r.kind.is_empty() {
            let kind = r.kind.trim().to_lowercase();
            if !KINDS.contains(&kind.as_str()) {
                return Err(IndexError::BadQuery {
                    field: "kind",
                    message: format!(
                        "unknown kind {}: use one of {}",
                        kiroku_common::quote::quote(&kind),
                        KINDS.join(", ")
                    ),
                });
            }
            must.push(term(f.kind, &kind));
        }
        if !r.operation.is_empty() {
            let op = vocabulary::file_operation(&r.operation).map_err(|message| {
                IndexError::BadQuery {
                    field: "operation",
                    message,
                }
            })?;
            must.push(term(f.operation, &op));
        }
        if r.removable {
            must.push(Box::new(TermQuery::new(
                Term::from_field_bool(f.removable, true),
                IndexRecordOption::Basic,
            )));
        }
        if !r.path.trim().is_empty() {
            must.push(self.path_query(&r.path)?);
        }
        if !r.agent_id.is_empty() {
            must.push(term(f.agent_id, &r.agent_id));
        }
        if !r.tag.is_empty() {
            must.push(term(f.tag, &r.tag));
        }
        match r.alert.trim() {
            "" => {}
            // Any alert: every tag from "alert:" up to (not including) "alert;".
            "*" => must.push(Box::new(RangeQuery::new(
                Bound::Included(Term::from_field_text(f.tag, "alert:")),
                Bound::Excluded(Term::from_field_text(f.tag, "alert;")),
            ))),
            rule => must.push(term(f.tag, &format!("alert:{rule}"))),
        }
        if r.has_attachment {
            must.push(Box::new(TermQuery::new(
                Term::from_field_bool(f.has_attachment, true),
                IndexRecordOption::Basic,
            )));
        }
        if r.from_ms != 0 || r.to_ms != 0 {
            let time = if r.corrected_time {
                f.corrected_at
            } else {
                f.observed_at
            };
            let lo = if r.from_ms != 0 {
                Bound::Included(Term::from_field_i64(time, r.from_ms))
            } else {
                Bound::Unbounded
            };
            let hi = if r.to_ms != 0 {
                Bound::Excluded(Term::from_field_i64(time, r.to_ms))
            } else {
                Bound::Unbounded
            };
            must.push(Box::new(RangeQuery::new(lo, hi)));
        }
        for (name, fields, text) in [
            ("text", vec![f.subject, f.body], &r.text),
            ("subject", vec![f.subject], &r.subject),
            (
                "attachment_name",
                vec![f.attachment_name],
                &r.attachment_name,
            ),
        ] {
            if text.trim().is_empty() {
                continue;
            }
            let mut qp = QueryParser::for_index(&self.index, fields);
            qp.set_conjunction_by_default();
            let q = qp.parse_query(text).map_err(|e| IndexError::BadQuery {
                field: name,
                message: e.to_string(),
            })?;
            must.push(q);
        }
        Ok(match must.len() {
            0 => Box::new(AllQuery),
            _ => Box::new(BooleanQuery::new(
                must.into_iter().map(|q| (Occur::Must, q)).collect(),
            )),
        })
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
mod tests {
    use super::*;
    use kiroku_proto::{Attachment, EmailEvent, Recipient};

    /// Found by fuzz/grpc_query: an agent's extreme time and clock offset
    /// overflowed (a panic while indexing, in a debug build).
    #[test]
    fn extreme_agent_times_and_offsets_are_indexed_and_searched() {
        let dir = tempfile::tempdir().expect("temp dir");
        let idx = EventIndex::open(&dir.path().join("index")).expect("index");
        let mut events = Vec::new();
        for (i, (at, offset)) in [(i64::MIN, 1), (i64::MAX, -1), (-86_400_000, i64::MAX)]
            .into_iter()
            .enumerate()
        {
            let mut e = mail(&format!("a1/s1/{i}"), at, "a@x", "b@y", "budget", None);
            e.clock_offset_ms = offset;
            e.clock_offset_known = true;
            assert_eq!(corrected_ms(&e), at.saturating_sub(offset));
            assert_eq!(crate::investigate::event_time(&e), corrected_ms(&e));
            events.push(e);
        }
        idx.add(&events).expect("add");
        idx.commit().expect("commit");
        let r = SearchRequest {
            text: "budget".into(),
            ..Default::default()
        };
        let (found, total, _) = idx.search(&r, 0, 10).expect("search");
        assert_eq!((found.len(), total), (3, 3));
    }

    #[test]
    fn hashes_are_found_by_their_hex_in_either_case_and_others_by_themselves() {
        let dir = tempfile::tempdir().expect("temp dir");
        let idx = EventIndex::open(&dir.path().join("index")).expect("index");
        let a = mail("a1/s1/1", 1_000, "a@x", "b@y", "one", Some("x.pdf"));
        let mut b = mail("a1/s1/2", 2_000, "a@x", "b@y", "two", Some("y.pdf"));
        if let Some(Kind::Email(m)) = b.kind.as_mut() {
            m.attachments[0].sha256 = "cd".repeat(32);
            m.raw_sha256 = "not-a-hash".into();
        }
        idx.add(&[a, b]).expect("add");
        idx.commit().expect("commit");
        let find = |sha: &str| {
            let r = SearchRequest {
                sha256: sha.into(),
                ..Default::default()
            };
            let (found, _, _) = idx.search(&r, 0, 10).expect("search");
            found.into_iter().map(|e| e.event_id).collect::<Vec<_>>()
        };
        assert_eq!(find(&"ab".repeat(32)), ["a1/s1/1"]);
        assert_eq!(find(&"AB".repeat(32)), ["a1/s1/1"], "upper-case hex");
        assert_eq!(find(&"cd".repeat(32)), ["a1/s1/2"]);
        assert_eq!(find("not-a-hash"), ["a1/s1/2"]);
        assert!(find(&"ef".repeat(32)).is_empty());
        assert!(
            find(&"ab".repeat(16)).is_empty(),
            "half a hash is not a hash"
        );
        let (by, _) = idx.by_hash(&"cd".repeat(32), 10).expect("by_hash");
        assert_eq!(by.len(), 1);
        assert_eq!(sha_key(&"ab".repeat(32)), vec![0xab; 16]);
    }

    fn mail(id: &str, at: i64, from: &str, to: &str, subject: &str, att: Option<&str>) -> Event {
        Event {
            event_id: id.into(),
            agent_id: "a1".into(),
            observed_at_ms: at,
            user: "Alice".into(),
            kind: Some(Kind::Email(EmailEvent {
                mail_from: from.into(),
                rcpt_to: vec![Recipient {
                    address: to.into(),
                    reply_code: 250,
                    ..Default::default()
                }],
                subject: subject.into(),
                body_text: "quarterly numbers inside".into(),
                attachment_count: u32::from(att.is_some()),
                attachments: att
                    .map(|n| Attachment {
                        filename: n.into(),
                        sha256: "ab".repeat(32),
                        ..Default::default()
                    })
                    .into_iter()
                    .collect(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn filters_order_paging_and_idempotent_add() {
        let dir = tempfile::tempdir().expect("tempdir");
        let idx = EventIndex::open(dir.path()).expect("open");
        idx.add(&[
            mail(
                "a1/s/1",
                1000,
                "alice@x.com",
                "bob@y.com",
                "Budget plan",
                Some("budget 2025.xlsx"),
            ),
            mail("a1/s/2", 3000, "alice@x.com", "carol@z.com", "Lunch", None),
            mail(
                "a1/s/3",
                2000,
                "dave@x.com",
                "bob@y.com",
                "Budget review",
                None,
            ),
        ])
        .expect("add");
        idx.commit().expect("commit");
        // Re-adding the same id replaces, never duplicates.
        idx.add(&[mail(
            "a1/s/1",
            1000,
            "alice@x.com",
            "bob@y.com",
            "Budget plan",
            Some("budget 2025.xlsx"),
        )])
        .expect("add");
        idx.commit().expect("commit");
        assert_eq!(idx.count(), 3);

        let ids = |r: SearchRequest| -> Vec<String> {
            idx.search(&r, 0, 10)
                .expect("search")
                .0
                .into_iter()
                .map(|e| e.event_id)
                .collect()
        };
        let all = ids(SearchRequest::default());
        assert_eq!(all, vec!["a1/s/2", "a1/s/3", "a1/s/1"], "newest first");
        let cases: Vec<(SearchRequest, Vec<&str>)> = vec![
            (
                SearchRequest {
                    sender: "ALICE@x.com".into(),
                    ..Default::default()
                },
                vec!["a1/s/2", "a1/s/1"],
            ),
            (
                SearchRequest {
                    recipient: "bob@y.com".into(),
                    ..Default::default()
                },
                vec!["a1/s/3", "a1/s/1"],
            ),
            (
                SearchRequest {
                    text: "budget".into(),
                    ..Default::default()
                },
                vec!["a1/s/3", "a1/s/1"],
            ),
            (
                SearchRequest {
                    has_attachment: true,
                    ..Default::default()
                },
                vec!["a1/s/1"],
            ),
            (
                SearchRequest {
                    attachment_name: "budget".into(),
                    ..Default::default()
                },
                vec!["a1/s/1"],
            ),
            (
                SearchRequest {
                    sha256: "ab".repeat(32),
                    ..Default::default()
                },
                vec!["a1/s/1"],
            ),
            (
                SearchRequest {
                    from_ms: 1500,
                    to_ms: 3000,
                    ..Default::default()
                },
                vec!["a1/s/3"],
            ),
            (
                SearchRequest {
                    user: "alice".into(),
                    address: "carol@z.com".into(),
                    ..Default::default()
                },
                vec!["a1/s/2"],
            ),
        ];
        for (req, want) in cases {
            assert_eq!(ids(req.clone()), want, "{req:?}");
        }
        let (page, total, next) = idx.search(&SearchRequest::default(), 0, 2).expect("page");
        assert_eq!((page.len(), total, next), (2, 3, Some(2)));
        let (page, _, next) = idx.search(&SearchRequest::default(), 2, 2).expect("page");
        assert_eq!((page.len(), next), (1, None));
        assert!(idx.get("a1/s/3").expect("get").is_some());
        assert!(idx.get("nope").expect("get").is_none());
        assert!(matches!(
            idx.search(
                &SearchRequest {
                    text: "subject:(".into(),
                    ..Default::default()
                },
                0,
                1
            ),
            Err(IndexError::BadQuery { .. })
        ));
    }

    fn file(id: &str, at: i64, op: &str, path: &str, old: &str, removable: bool) -> Event {
        Event {
            event_id: id.into(),
            agent_id: "a1".into(),
            observed_at_ms: at,
            kind: Some(Kind::File(kiroku_proto::FileEvent {
                operation: op.into(),
                path: path.into(),
                old_path: old.into(),
                removable,
                sha256: if op == "copy_to_removable" {
                    "cd".repeat(32)
                } else {
                    String::new()
                },
                uid: -1,
                mechanism: "inotify".into(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn file_event_filters() {
        let dir = tempfile::tempdir().expect("tempdir");
        let idx = EventIndex::open(dir.path()).expect("open");
        idx.add(&[
            mail("m/1", 500, "alice@x.com", "bob@y.com", "hi", None),
            file(
                "f/1",
                1000,
                "create",
                "/home/alice/Q3 Report.pdf",
                "",
                false,
            ),
            file(
                "f/2",
                2000,
                "rename",
                "/home/alice/final.pdf",
                "/home/alice/Q3 Report.pdf",
                false,
            ),
            file(
                "f/3",
                3000,
                "copy_to_removable",
                "/media/usb/final (1).pdf",
                "",
                true,
            ),
        ])
        .expect("add");
        idx.commit().expect("commit");
        let ids = |r: SearchRequest| -> Vec<String> {
            idx.search(&r, 0, 10)
                .expect("search")
                .0
                .into_iter()
                .map(|e| e.event_id)
                .collect()
        };
        let cases: Vec<(SearchRequest, Vec<&str>)> = vec![
            (
                SearchRequest {
                    kind: "file".into(),
                    ..Default::default()
                },
                vec!["f/3", "f/2", "f/1"],
            ),
            (
                SearchRequest {
                    kind: "Email".into(),
                    ..Default::default()
                },
                vec!["m/1"],
            ),
            (
                SearchRequest {
                    path: "q3 report".into(),
                    ..Default::default()
                },
                vec!["f/2", "f/1"],
            ),
            (
                SearchRequest {
                    path: "final (1).pdf".into(),
                    ..Default::default()
                },
                vec!["f/3"],
            ),
            (
                SearchRequest {
                    operation: "rename".into(),
                    ..Default::default()
                },
                vec!["f/2"],
            ),
            (
                SearchRequest {
                    removable: true,
                    ..Default::default()
                },
                vec!["f/3"],
            ),
            (
                SearchRequest {
                    sha256: "cd".repeat(32),
                    ..Default::default()
                },
                vec!["f/3"],
            ),
        ];
        for (req, want) in cases {
            assert_eq!(ids(req.clone()), want, "{req:?}");
        }
        for bad in [
            SearchRequest {
                kind: "fax".into(),
                ..Default::default()
            },
            SearchRequest {
                path: "/".into(),
                ..Default::default()
            },
            SearchRequest {
                operation: "bogus".into(),
                ..Default::default()
            },
            // fuzz/regressions/grpc_query/text-3000-nested-parens: this
            // overflowed the parser's stack (an abort, not a panic).
            SearchRequest {
                text: format!("{}a{}", "(".repeat(3000), ")".repeat(3000)),
                ..Default::default()
            },
            SearchRequest {
                subject: "NOT ".repeat(500) + "a",
                ..Default::default()
            },
        ] {
            assert!(
                matches!(idx.search(&bad, 0, 1), Err(IndexError::BadQuery { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn an_index_with_an_older_schema_is_rebuilt_from_stored_events() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("index");
        {
            // What an older collector wrote: fewer fields.
            let mut b = Schema::builder();
            let id = b.add_text_field("event_id", STRING | STORED);
            let event = b.add_bytes_field("event", STORED);
            std::fs::create_dir_all(&path).expect("mkdir");
            let index = Index::create_in_dir(&path, b.build()).expect("create");
            let mut w: IndexWriter = index
                .writer_with_num_threads(1, 15_000_000)
                .expect("writer");
            let e = file("f/1", 1000, "create", "/home/a/plan.txt", "", false);
            let mut d = TantivyDocument::default();
            d.add_text(id, &e.event_id);
            d.add_bytes(event, &e.encode_to_vec());
            w.add_document(d).expect("add");
            w.commit().expect("commit");
        }
        let idx = EventIndex::open(&path).expect("rebuilt");
        assert_eq!(idx.count(), 1);
        let (found, _, _) = idx
            .search(
                &SearchRequest {
                    kind: "file".into(),
                    path: "plan".into(),
                    ..Default::default()
                },
                0,
                10,
            )
            .expect("search");
        assert_eq!(found.len(), 1, "new fields are indexed");
        let kept = std::fs::read_dir(dir.path())
            .expect("ls")
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("index.pre-"));
        assert!(kept, "the old index is kept beside the new one");
    }

    #[test]
    fn corrected_time_orders_by_the_collector_clock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let idx = EventIndex::open(dir.path()).expect("open");
        // Host A's clock is 120 s ahead: its mail at collector time 1000 s
        // says 1120 s. Host B (no skew) mails one second later.
        let mut a = mail("a/s/1", 1_120_000, "a@x", "r@y", "first", None);
        a.clock_offset_ms = 120_000;
        a.clock_offset_known = true;
        let mut b = mail("b/s/1", 1_001_000, "b@x", "r@y", "second", None);
        b.clock_offset_known = true;
        idx.add(&[a, b]).expect("add");
        idx.commit().expect("commit");
        let ids = |r: &SearchRequest| -> Vec<String> {
            let (ev, _, _) = idx.search(r, 0, 10).expect("search");
            ev.into_iter().map(|e| e.event_id).collect()
        };
        let mut r = SearchRequest::default();
        assert_eq!(ids(&r), ["a/s/1", "b/s/1"], "agent clocks: a looks newer");
        r.corrected_time = true;
        assert_eq!(ids(&r), ["b/s/1", "a/s/1"], "corrected: b is newer");
        r.from_ms = 1_000_500;
        assert_eq!(ids(&r), ["b/s/1"]);
        r.corrected_time = false;
        assert_eq!(ids(&r), ["a/s/1", "b/s/1"]);
    }
}
