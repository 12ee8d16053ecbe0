//! Where each indexed event is in the journal: the SHA-256 of the bytes
//! its agent recorded, its leaf in the journal chain and whether the
//! collector re-encoded it (`store/journal/entry.rs`). Stored with the
//! document, read by event id: ingest compares a resent event's hash with
//! the stored one (a different event under a stored sequence number),
//! proofs and exports find an event's leaf ([`crate::store::Store::leaf_of`]).

use tantivy::collector::TopDocs;
use tantivy::query::TermQuery;
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::{TantivyDocument, Term};

use super::{EventIndex, IndexError, TantivyIndex};
use crate::store::journal::Provenance;

const FIELDS: [&str; 3] = ["recorded_sha256", "journal_leaf", "recorded_reencoded"];

impl TantivyIndex {
    pub(super) fn add_provenance(&self, d: &mut TantivyDocument, p: &Provenance) {
        d.add_bytes(self.f.recorded_sha256, &p.recorded_sha256);
        if let Some(leaf) = p.leaf {
            d.add_u64(self.f.journal_leaf, leaf);
        }
        d.add_bool(self.f.recorded_reencoded, p.reencoded);
    }

    fn has_provenance(&self) -> bool {
        !FIELDS.iter().any(|f| self.missing.iter().any(|m| m == f))
    }

    /// The provenance of `event_id` as `searcher` (a view of this index)
    /// sees it; none for an event indexed without one.
    pub(super) fn provenance_in(
        &self,
        searcher: &tantivy::Searcher,
        event_id: &str,
    ) -> Result<Option<Provenance>, IndexError> {
        if !self.has_provenance() {
            return Ok(None);
        }
        let q = TermQuery::new(
            Term::from_field_text(self.f.event_id, event_id),
            IndexRecordOption::Basic,
        );
        let hits = searcher
            .search(&q, &TopDocs::with_limit(1).order_by_score())
            .map_err(|e| self.terr(e))?;
        let Some((_, addr)) = hits.first() else {
            return Ok(None);
        };
        let doc: TantivyDocument = searcher.doc(*addr).map_err(|e| self.terr(e))?;
        let sha = doc
            .get_first(self.f.recorded_sha256)
            .and_then(|v| v.as_bytes())
            .and_then(|b| <[u8; 32]>::try_from(b).ok());
        let Some(recorded_sha256) = sha else {
            return Ok(None);
        };
        Ok(Some(Provenance {
            recorded_sha256,
            leaf: doc.get_first(self.f.journal_leaf).and_then(|v| v.as_u64()),
            reencoded: doc
                .get_first(self.f.recorded_reencoded)
                .and_then(|v| v.as_bool())
                .unwrap_or(true),
        }))
    }
}

impl EventIndex {
    /// Where `event_id` is in the journal, as far as the committed index
    /// knows (none for an unknown event or one indexed without it). During
    /// a rebuild both indexes are asked.
    pub fn provenance(&self, event_id: &str) -> Result<Option<Provenance>, IndexError> {
        let (serving, building) = {
            let ix = self.indexes();
            (ix.serving.clone(), ix.building.clone())
        };
        if let Some(b) = building
            && let Some(p) = b.provenance_in(&b.reader.searcher(), event_id)?
        {
            return Ok(Some(p));
        }
        serving.provenance_in(&serving.reader.searcher(), event_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiroku_proto::Event;

    #[test]
    fn provenance_is_stored_and_kept_by_a_re_index() {
        let d = tempfile::tempdir().expect("tempdir");
        let idx = EventIndex::open(d.path()).expect("open");
        let ev = |id: &str| Event {
            event_id: id.into(),
            agent_id: "a".into(),
            kind: Some(kiroku_proto::event::Kind::Gap(Default::default())),
            ..Default::default()
        };
        let p = Provenance {
            recorded_sha256: [9; 32],
            leaf: Some(41),
            reencoded: false,
        };
        idx.add_recorded(&[ev("a/s/1"), ev("a/s/2")], &[p, Provenance::default()])
            .expect("add");
        idx.commit().expect("commit");
        assert_eq!(idx.provenance("a/s/1").expect("read"), Some(p));
        let none = idx.provenance("a/s/2").expect("read").expect("some");
        assert_eq!((none.leaf, none.reencoded), (None, false));
        assert_eq!(idx.provenance("a/s/3").expect("read"), None);
        // The analysis worker re-indexes an event without its provenance.
        let mut again = ev("a/s/1");
        again.tags.push("analysed".into());
        idx.add(&[again]).expect("re-add");
        idx.commit().expect("commit");
        assert_eq!(idx.provenance("a/s/1").expect("read"), Some(p));
        assert_eq!(idx.count(), 2);
    }
}
