//! The tantivy index over events. Each document holds the searchable fields
//! and the whole event (prost-encoded, stored), so the index is also where
//! `GetEvent` reads from. Adding an event first deletes any document with
//! the same `event_id` in the same commit, which makes re-indexing after a
//! crash idempotent.
//!
//! Because the events are stored whole, a schema change costs no data: an
//! index written with another schema is rebuilt from its stored events on
//! open ([`EventIndex::open`]), with progress in the log.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use kiroku_proto::{Event, SearchRequest, event::Kind};
use prost::Message;
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{AllQuery, BooleanQuery, Occur, Query, QueryParser, RangeQuery, TermQuery};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TEXT, Value,
};
use tantivy::{
    DocAddress, Index, IndexReader, IndexWriter, Order, ReloadPolicy, TantivyDocument, Term,
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
        sha256: b.add_text_field("sha256", STRING),
        tag: b.add_text_field("tag", STRING),
        outcome: b.add_text_field("outcome", STRING),
        event: b.add_bytes_field("event", STORED),
    };
    (b.build(), f)
}

/// Event kinds as the `kind` filter names them.
pub const KINDS: [&str; 3] = ["email", "file", "host_change"];

fn other(path: &Path, e: &dyn std::fmt::Display) -> IndexError {
    IndexError::Other {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// The event's time on the collector's clock: observed_at corrected by the
/// agent's measured offset (agent − collector), or observed_at when the
/// offset was not measured.
pub fn corrected_ms(e: &Event) -> i64 {
    if e.clock_offset_known {
        e.observed_at_ms - e.clock_offset_ms
    } else {
        e.observed_at_ms
    }
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
    pub fn open(path: &Path) -> Result<EventIndex, IndexError> {
        let terr = |source| IndexError::Tantivy {
            path: path.to_owned(),
            source,
        };
        std::fs::create_dir_all(path).map_err(|e| IndexError::Other {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let (schema, f) = schema();
        let rebuild = path.with_extension("rebuild");
        let old = path.with_extension("old");
        // A crash between the two renames below leaves the finished rebuild
        // beside the old index: finish the swap.
        if old.exists() && rebuild.exists() && !path.join("meta.json").exists() {
            let _ = std::fs::remove_dir_all(path);
            std::fs::rename(&rebuild, path).map_err(|e| other(path, &e))?;
        }
        let _ = std::fs::remove_dir_all(&rebuild);
        let _ = std::fs::remove_dir_all(&old);
        std::fs::create_dir_all(path).map_err(|e| other(path, &e))?;
        let dir = tantivy::directory::MmapDirectory::open(path).map_err(|e| other(path, &e))?;
        let index = if Index::exists(&dir).map_err(|e| other(path, &e))? {
            let index = Index::open(dir).map_err(terr)?;
            if index.schema() == schema {
                index
            } else {
                drop(index);
                Self::rebuild(path, &rebuild, &old)?;
                let dir =
                    tantivy::directory::MmapDirectory::open(path).map_err(|e| other(path, &e))?;
                Index::open(dir).map_err(terr)?
            }
        } else {
            Index::create(dir, schema, Default::default()).map_err(terr)?
        };
        Self::from_index(path, index, f)
    }

    fn from_index(path: &Path, index: Index, f: Fields) -> Result<EventIndex, IndexError> {
        let terr = |source| IndexError::Tantivy {
            path: path.to_owned(),
            source,
        };
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

    /// Rebuilds the index at `path`, written with an older schema, into
    /// `rebuild` from the events it stores, then swaps it in (the old one
    /// passes through `old` and is removed). Idempotent after a crash.
    fn rebuild(path: &Path, rebuild: &Path, old: &Path) -> Result<(), IndexError> {
        let terr = |source| IndexError::Tantivy {
            path: path.to_owned(),
            source,
        };
        tracing::warn!(index = %path.display(), "index schema changed: rebuilding it from the stored events");
        let source = Index::open_in_dir(path).map_err(terr)?;
        let event_field = source.schema().get_field("event").map_err(terr)?;
        let searcher = source.reader().map_err(terr)?.searcher();
        let total: u64 = searcher.num_docs();
        std::fs::create_dir_all(rebuild).map_err(|e| other(rebuild, &e))?;
        let (schema, f) = schema();
        let target = Index::create_in_dir(rebuild, schema).map_err(terr)?;
        let target = Self::from_index(rebuild, target, f)?;
        let mut done = 0u64;
        let mut batch = Vec::new();
        for (ord, seg) in searcher.segment_readers().iter().enumerate() {
            for doc in seg.doc_ids_alive() {
                let d: TantivyDocument = searcher
                    .doc(DocAddress::new(ord as u32, doc))
                    .map_err(terr)?;
                let bytes = d
                    .get_first(event_field)
                    .and_then(|v| v.as_bytes())
                    .unwrap_or_default();
                match Event::decode(bytes) {
                    Ok(e) => batch.push(e),
                    Err(e) => {
                        tracing::error!(index = %path.display(), error = %e, "a stored event does not decode; it is left out of the rebuilt index")
                    }
                }
                done += 1;
                if batch.len() >= 10_000 {
                    target.add(&batch)?;
                    batch.clear();
                    tracing::info!(done, total, "rebuilding the index");
                }
            }
        }
        target.add(&batch)?;
        target.commit()?;
        drop(target);
        drop(searcher);
        drop(source);
        std::fs::rename(path, old).map_err(|e| other(path, &e))?;
        std::fs::rename(rebuild, path).map_err(|e| other(path, &e))?;
        let _ = std::fs::remove_dir_all(old);
        tracing::info!(events = done, index = %path.display(), "index rebuilt");
        Ok(())
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
        if let Some(Kind::HostChange(_)) = &e.kind {
            d.add_text(f.kind, "host_change");
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
                d.add_text(f.sha256, &a.sha256);
            }
            if !m.raw_sha256.is_empty() {
                d.add_text(f.sha256, &m.raw_sha256);
            }
        }
        d.add_bytes(f.event, &e.encode_to_vec());
        d
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

    /// Number of indexed events.
    pub fn count(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    fn build_query(&self, r: &SearchRequest) -> Result<Box<dyn Query>, IndexError> {
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
            (f.sha256, &r.sha256),
            (f.outcome, &r.outcome),
        ] {
            if !v.is_empty() {
                must.push(term(field, &v.trim().to_lowercase()));
            }
        }
        if !r.agent_id.is_empty() {
            must.push(term(f.agent_id, &r.agent_id));
        }
        if !r.kind.is_empty() {
            let kind = r.kind.trim().to_lowercase();
            if !KINDS.contains(&kind.as_str()) {
                return Err(IndexError::BadQuery {
                    field: "kind",
                    message: format!("unknown kind {:?}: use one of {}", r.kind, KINDS.join(", ")),
                });
            }
            must.push(term(f.kind, &kind));
        }
        if !r.tag.is_empty() {
            must.push(term(f.tag, &r.tag));
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

    #[test]
    fn an_index_with_another_schema_is_rebuilt_from_its_events() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("index");
        {
            // An older layout: only the id and the stored event.
            let mut b = Schema::builder();
            let id = b.add_text_field("event_id", STRING | STORED);
            let ev = b.add_bytes_field("event", STORED);
            std::fs::create_dir_all(&path).expect("mkdir");
            let old = Index::create_in_dir(&path, b.build()).expect("create");
            let mut w: IndexWriter = old.writer_with_num_threads(1, 15_000_000).expect("writer");
            for i in 1..=3 {
                let e = mail(
                    &format!("a1/s/{i}"),
                    i * 1000,
                    "alice@x.com",
                    "bob@y.com",
                    "old",
                    Some("q.xlsx"),
                );
                let mut d = TantivyDocument::default();
                d.add_text(id, &e.event_id);
                d.add_bytes(ev, &e.encode_to_vec());
                w.add_document(d).expect("add");
            }
            w.commit().expect("commit");
        }
        let idx = EventIndex::open(&path).expect("open rebuilds");
        let r = SearchRequest {
            sender: "alice@x.com".into(),
            ..Default::default()
        };
        let (events, total, _) = idx.search(&r, 0, 10).expect("search");
        assert_eq!(total, 3);
        assert_eq!(events[0].event_id, "a1/s/3");
        assert!(!path.with_extension("rebuild").exists());
        assert!(!path.with_extension("old").exists());
        drop(idx);
        // Opening again keeps it (same schema now).
        let idx = EventIndex::open(&path).expect("reopen");
        assert_eq!(idx.search(&r, 0, 10).expect("search").1, 3);
    }
}
