//! `-word` and `-"a phrase"` over phrase queries, without tantivy 0.27's
//! phrase-exclusion assertion.
//!
//! A `MustNot` clause becomes an exclusion set that tantivy probes with
//! `DocSet::seek_danger`, whose contract lets the probed set be left
//! past the next target ("invalid state"). `PhraseScorer::seek_danger`
//! nevertheless asserts (debug builds) that the target is not below its
//! current document, so excluding a phrase panics in a debug build as
//! soon as the phrase has no match left in a segment (tantivy issue
//! #2811, still open). Every Japanese word of two or more characters is a
//! phrase of its bigrams, so `売上 -至急` hit it. [`guard`] wraps every
//! excluded clause in a scorer that answers `seek_danger` with plain
//! forward seeks, which the phrase scorer handles in every build. The
//! results are the same; only the excluded clauses lose tantivy's
//! shortcut for them.

use tantivy::query::{BooleanQuery, EnableScoring, Explanation, Occur, Query, Scorer, Weight};
use tantivy::{DocId, DocSet, Score, SegmentReader, Term};

/// `q` with every `MustNot` clause of every boolean query in it guarded.
pub(super) fn guard(q: Box<dyn Query>) -> Box<dyn Query> {
    let Some(b) = q.downcast_ref::<BooleanQuery>() else {
        return q;
    };
    let clauses = b
        .clauses()
        .iter()
        .map(|(occur, sub)| {
            let sub = guard(sub.box_clone());
            match occur {
                Occur::MustNot => (*occur, Box::new(ForwardSeek(sub)) as Box<dyn Query>),
                _ => (*occur, sub),
            }
        })
        .collect();
    Box::new(BooleanQuery::with_minimum_required_clauses(
        clauses,
        b.get_minimum_number_should_match(),
    ))
}

#[derive(Debug)]
struct ForwardSeek(Box<dyn Query>);

impl Clone for ForwardSeek {
    fn clone(&self) -> Self {
        ForwardSeek(self.0.box_clone())
    }
}

impl Query for ForwardSeek {
    fn weight(&self, enable_scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(ForwardSeekWeight(self.0.weight(enable_scoring)?)))
    }

    fn query_terms<'a>(&'a self, visitor: &mut dyn FnMut(&'a Term, bool)) {
        self.0.query_terms(visitor)
    }
}

struct ForwardSeekWeight(Box<dyn Weight>);

impl Weight for ForwardSeekWeight {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        Ok(Box::new(ForwardSeekScorer(self.0.scorer(reader, boost)?)))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        self.0.explain(reader, doc)
    }
}

/// Delegates everything but `seek_danger`, which stays the trait's
/// default: seek forward only when behind the target, never leave an
/// invalid state.
struct ForwardSeekScorer(Box<dyn Scorer>);

impl DocSet for ForwardSeekScorer {
    fn advance(&mut self) -> DocId {
        self.0.advance()
    }

    fn seek(&mut self, target: DocId) -> DocId {
        if self.0.doc() >= target {
            return self.0.doc();
        }
        self.0.seek(target)
    }

    fn doc(&self) -> DocId {
        self.0.doc()
    }

    fn size_hint(&self) -> u32 {
        self.0.size_hint()
    }
}

impl Scorer for ForwardSeekScorer {
    fn score(&mut self) -> Score {
        self.0.score()
    }
}
