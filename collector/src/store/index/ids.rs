//! The ids of every event a search filter matches, without order or pages:
//! what a legal hold covers (`holds.rs` `held_set`). Memory is the matching
//! documents' addresses (8 bytes each) plus what the caller keeps of the
//! ids; documents are read in address order, so each stored block is
//! decompressed once.

use kiroku_common::mail::InternalDomains;
use kiroku_proto::SearchRequest;
use tantivy::collector::DocSetCollector;
use tantivy::schema::Value;
use tantivy::{DocAddress, TantivyDocument};

use super::{EventIndex, IndexError, TantivyIndex, legacy};

impl EventIndex {
    /// Calls `f` with the id of every event `r` matches (its page fields
    /// are ignored) and returns how many. Refused while the index is
    /// rebuilt for a new schema: new events then go only into the index
    /// being built, so the one that serves would not see them all (a hold
    /// must never look smaller than it is).
    pub fn each_matching_id(
        &self,
        r: &SearchRequest,
        f: impl FnMut(String),
    ) -> Result<u64, IndexError> {
        let (serving, rebuilding) = {
            let ix = self.indexes();
            (ix.serving.clone(), ix.building.is_some())
        };
        if rebuilding || !serving.is_current() {
            if let Some(what) = legacy::refusal(r, &serving.missing) {
                return Err(self.needs_rebuild(&what));
            }
            if rebuilding {
                return Err(self.needs_rebuild("finding every event a legal hold covers"));
            }
        }
        let internal = self.internal_domains();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            serving.matching_ids(r, &internal, f)
        }))
        .unwrap_or_else(|_| Err(self.needs_rebuild("this filter")))
    }
}

impl TantivyIndex {
    fn matching_ids(
        &self,
        r: &SearchRequest,
        internal: &InternalDomains,
        mut f: impl FnMut(String),
    ) -> Result<u64, IndexError> {
        let q = self.build_query(r, internal)?;
        let searcher = self.reader.searcher();
        let found = searcher
            .search(&q, &DocSetCollector)
            .map_err(|e| self.terr(e))?;
        let mut addrs: Vec<DocAddress> = found.into_iter().collect();
        addrs.sort_unstable();
        for addr in &addrs {
            let doc: TantivyDocument = searcher.doc(*addr).map_err(|e| self.terr(e))?;
            match doc.get_first(self.f.event_id).and_then(|v| v.as_str()) {
                Some(id) => f(id.to_owned()),
                None => {
                    return Err(IndexError::Other {
                        path: self.path.clone(),
                        message: format!(
                            "document {addr:?} has no event id; {}",
                            crate::store::REPAIR_HINT
                        ),
                    });
                }
            }
        }
        Ok(addrs.len() as u64)
    }
}
