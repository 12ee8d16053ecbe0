//! The tantivy index over events. Each document holds the searchable fields
//! and the whole event (prost-encoded, stored), so the index is also where
//! `GetEvent` reads from. Adding an event first deletes any document with
//! the same `event_id` in the same commit, which makes re-indexing after a
//! crash idempotent.

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
    // Investigations (trace, exfil report).
    source_path: Field,
    exfil: Field,
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
        // Investigations: a file event's `source_path` (exact), and the
        // channel by which content left ("mail", "removable").
        source_path: b.add_text_field("source_path", STRING),
        exfil: b.add_text_field("exfil", STRING),
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
                d.add_text(f.sha256, &a.sha256);
            }
            if !m.raw_sha256.is_empty() {
                d.add_text(f.sha256, &m.raw_sha256);
            }
        }
        // Investigations (trace, exfil report).
        match &e.kind {
            Some(Kind::File(file)) => {
                // The same field as attachment hashes, so a hash is found
                // wherever it went (the file-capture branch adds this too).
                if !file.sha256.is_empty() {
                    d.add_text(f.sha256, &file.sha256);
                }
                if !file.source_path.is_empty() {
                    d.add_text(f.source_path, &file.source_path);
                }
                if file.operation == "copy_to_removable" {
                    d.add_text(f.exfil, "removable");
                }
            }
            Some(Kind::Email(m)) if !m.attachments.is_empty() => d.add_text(f.exfil, "mail"),
            _ => {}
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
            let lo = if r.from_ms != 0 {
                Bound::Included(Term::from_field_i64(f.observed_at, r.from_ms))
            } else {
                Bound::Unbounded
            };
            let hi = if r.to_ms != 0 {
                Bound::Excluded(Term::from_field_i64(f.observed_at, r.to_ms))
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
            Term::from_field_text(self.f.sha256, sha256),
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

    /// Mails with attachments and copies to removable media observed in
    /// [from_ms, to_ms).
    pub fn exfil_candidates(
        &self,
        from_ms: i64,
        to_ms: i64,
        cap: usize,
    ) -> Result<(Vec<Event>, bool), IndexError> {
        let channel = BooleanQuery::new(
            ["mail", "removable"]
                .into_iter()
                .map(|c| -> (Occur, Box<dyn Query>) {
                    (
                        Occur::Should,
                        Box::new(TermQuery::new(
                            Term::from_field_text(self.f.exfil, c),
                            IndexRecordOption::Basic,
                        )),
                    )
                })
                .collect(),
        );
        let range = RangeQuery::new(
            Bound::Included(Term::from_field_i64(self.f.observed_at, from_ms)),
            Bound::Excluded(Term::from_field_i64(self.f.observed_at, to_ms)),
        );
        let q = BooleanQuery::new(vec![
            (Occur::Must, Box::new(channel)),
            (Occur::Must, Box::new(range)),
        ]);
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
                        .order_by_fast_field::<i64>("observed_at", Order::Desc),
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
}
