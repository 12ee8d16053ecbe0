//! A `SearchRequest` as a tantivy query.

use std::ops::Bound;

use kiroku_common::mail::InternalDomains;
use kiroku_common::vocabulary;
use kiroku_proto::SearchRequest;
use tantivy::Term;
use tantivy::query::{
    AllQuery, BooleanQuery, Occur, PhraseQuery, Query, QueryParser, RangeQuery, TermQuery,
};
use tantivy::schema::{Field, FieldType, IndexRecordOption};
use tantivy::tokenizer::{TextAnalyzer, TokenStream};

use super::{IndexError, KINDS, TantivyIndex, analyzer, check_search, exclusions, sha_key};

impl TantivyIndex {
    /// Words of a path as a phrase: `alice/q3 report.pdf` finds
    /// `/home/alice/Q3 Report.pdf`. Built from the field's own analyzer in
    /// its query mode, each term at its position (a run of CJK characters
    /// leaves gaps the index fills), so path characters are never query
    /// syntax.
    pub(super) fn path_query(&self, text: &str) -> Result<Box<dyn Query>, IndexError> {
        let mut analyzer = self.query_analyzer(self.f.path)?;
        let mut stream = analyzer.token_stream(text);
        let mut terms = Vec::new();
        while stream.advance() {
            let t = stream.token();
            terms.push((t.position, Term::from_field_text(self.f.path, &t.text)));
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
            1 => Box::new(TermQuery::new(terms.remove(0).1, IndexRecordOption::Basic)),
            _ => Box::new(PhraseQuery::new_with_offset(terms)),
        })
    }

    /// The analyzer a query for `field` is cut with: the field's own,
    /// in its query mode.
    fn query_analyzer(&self, field: Field) -> Result<TextAnalyzer, IndexError> {
        let schema = self.index.schema();
        let entry = schema.get_field_entry(field);
        let name = match entry.field_type() {
            FieldType::Str(o) => o.get_indexing_options().map(|i| i.tokenizer().to_owned()),
            _ => None,
        };
        name.and_then(|n| analyzer::query_tokenizers().get(&n))
            .ok_or_else(|| IndexError::Other {
                path: self.path.clone(),
                message: format!("field `{}` has no text analyzer", entry.name()),
            })
    }

    /// The query of a search request: every filter set must match.
    pub(super) fn build_query(
        &self,
        r: &SearchRequest,
        internal: &InternalDomains,
    ) -> Result<Box<dyn Query>, IndexError> {
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
            (f.outcome, &r.outcome),
        ] {
            if !v.is_empty() {
                must.push(term(field, &v.trim().to_lowercase()));
            }
        }
        // Addresses (with wildcards), domains, client IP, Message-ID,
        // queue id, reply codes, SMTP login, internal/external, direction.
        must.extend(super::mailflow::Flow { f, internal }.queries(r)?);
        // Relay incidents and the upstream (issue 20).
        must.extend(super::incidents::queries(f, r)?);
        // Upstream, delay range (issue 20).
        must.extend(super::relay::queries(f, r)?);
        // Network and P2P records (issue 21).
        must.extend(super::network::queries(f, r)?);
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
        // Issue 20: the mail's delivery status.
        if !r.delivery.trim().is_empty() {
            let v = r.delivery.trim().to_lowercase();
            if !crate::delivery::STATUSES.contains(&v.as_str()) {
                return Err(IndexError::BadQuery {
                    field: "delivery",
                    message: format!(
                        "unknown delivery status {}: use one of {}",
                        kiroku_common::quote::quote(&v),
                        crate::delivery::STATUSES.join(", ")
                    ),
                });
            }
            must.push(term(f.delivery, &v));
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
        let has = |field: &str| !self.missing.iter().any(|m| m == field);
        // Free text: subject, body, the text of the attachments, and the
        // upstream's replies ("connection refused", "mailbox full"). An
        // index of an older schema (serving while its successor is
        // rebuilt) searches the fields it has.
        let mut text_fields = vec![f.subject, f.body];
        if has("attachment_text") {
            text_fields.push(f.attachment_text);
        }
        if has("replies") {
            text_fields.push(f.replies);
        }
        for (name, fields, text) in [
            ("text", text_fields, &r.text),
            ("subject", vec![f.subject], &r.subject),
            (
                "attachment_name",
                vec![f.attachment_name],
                &r.attachment_name,
            ),
            (
                "attachment_text",
                vec![f.attachment_text],
                &r.attachment_text,
            ),
        ] {
            if text.trim().is_empty() {
                continue;
            }
            let mut qp =
                QueryParser::new(self.index.schema(), fields, analyzer::query_tokenizers());
            qp.set_conjunction_by_default();
            let q = qp
                .parse_query(&ascii_spaces(text))
                .map_err(|e| IndexError::BadQuery {
                    field: name,
                    message: e.to_string(),
                })?;
            must.push(exclusions::guard(q));
        }
        Ok(match must.len() {
            0 => Box::new(AllQuery),
            _ => Box::new(BooleanQuery::new(
                must.into_iter().map(|q| (Occur::Must, q)).collect(),
            )),
        })
    }
}

/// The query with every Unicode space as an ASCII one: the query parser
/// separates words only at ASCII spaces, and a Japanese input method types
/// the ideographic space U+3000 between words.
fn ascii_spaces(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().any(|c| c.is_whitespace() && c != ' ') {
        text.chars()
            .map(|c| if c.is_whitespace() { ' ' } else { c })
            .collect::<String>()
            .into()
    } else {
        text.into()
    }
}
