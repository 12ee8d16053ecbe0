//! Bounds on a search request, checked before any of it reaches a parser.
//!
//! tantivy's query parser is recursive descent: every `(`, every `NOT` and
//! every `field:(` is a level of recursion, and a `text` of 3,000 nested
//! parentheses overflowed the stack of the thread parsing it, which aborts
//! the whole collector (a stack overflow is not a panic that can be
//! caught). So the text fields are measured here first, by a scan that
//! knows the parser's quoting (`"…"` phrases, `\` escapes) and never
//! recurses: length, nesting depth and clause count each have a limit,
//! and a request over one is refused as invalid naming the field and the
//! limit. The other string fields are exact terms (no parser) or, for
//! `path`, words cut by the field's tokenizer; they are bounded in length
//! (and `path` in words) so neither the index lookup nor the audit log
//! grows with what a caller sends. The limits are far above what a person
//! types; a script that needs more should split its query.

use kiroku_proto::SearchRequest;

use super::IndexError;

/// Bytes of a full-text query (`text`, `subject`, `attachment_name`,
/// `attachment_text`).
pub const MAX_QUERY_BYTES: usize = 2048;
/// Nesting of a full-text query: open parentheses plus `NOT`s in effect.
pub const MAX_QUERY_DEPTH: usize = 16;
/// Terms, phrases and operators of a full-text query.
pub const MAX_QUERY_CLAUSES: usize = 64;
/// Bytes of an exact-match field (host, address, tag, ...).
pub const MAX_TERM_BYTES: usize = 1024;
/// Bytes and words of `path`.
pub const MAX_PATH_BYTES: usize = 4096;
pub const MAX_PATH_WORDS: usize = 256;

fn refuse(field: &'static str, message: String) -> IndexError {
    IndexError::BadQuery { field, message }
}

/// What a scan of a full-text query found.
#[derive(Debug, Default, PartialEq, Eq)]
struct Shape {
    depth: usize,
    clauses: usize,
}

/// Measures a full-text query the way the parser will read it, without
/// recursion: the deepest nesting (an unquoted `(` opens a level until its
/// `)`; each `NOT` opens one until the leaf it applies to, a word or a
/// group, ends) and the number of clauses (unquoted words, phrases and
/// operators).
fn shape(q: &str) -> Shape {
    let mut m = Measure::default();
    let mut chars = q.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                m.word.push(c);
                if let Some(n) = chars.next() {
                    m.word.push(n);
                }
            }
            '"' => {
                m.end_word();
                // A phrase is one leaf; its content is not syntax.
                let mut escaped = false;
                for p in chars.by_ref() {
                    match (escaped, p) {
                        (false, '\\') => escaped = true,
                        (false, '"') => break,
                        _ => escaped = false,
                    }
                }
                m.word.push('"');
            }
            '(' => {
                m.end_word();
                m.groups.push(m.pending);
                m.outer_nots += m.pending;
                m.pending = 0;
                m.note_depth();
            }
            ')' => {
                m.end_word();
                m.pending = 0;
                if let Some(n) = m.groups.pop() {
                    m.outer_nots -= n;
                }
            }
            c if c.is_whitespace() => m.end_word(),
            c => m.word.push(c),
        }
    }
    m.end_word();
    m.shape
}

/// The state of [`shape`]'s scan.
#[derive(Default)]
struct Measure {
    shape: Shape,
    word: String,
    /// Per open group: the NOTs that applied to it.
    groups: Vec<usize>,
    /// The sum of `groups`.
    outer_nots: usize,
    /// NOTs waiting for their leaf at the current level.
    pending: usize,
}

impl Measure {
    fn note_depth(&mut self) {
        let d = self.groups.len() + self.outer_nots + self.pending;
        self.shape.depth = self.shape.depth.max(d);
    }

    fn end_word(&mut self) {
        if self.word.is_empty() {
            return;
        }
        self.shape.clauses += 1;
        if self.word == "NOT" {
            self.pending += 1;
            self.note_depth();
        } else if !matches!(self.word.as_str(), "AND" | "OR") && !self.word.ends_with(':') {
            // A leaf: the NOTs waiting for it are done.
            self.note_depth();
            self.pending = 0;
        }
        self.word.clear();
    }
}

/// Refuses a full-text query over a limit, before the parser sees it.
fn check_text(field: &'static str, q: &str) -> Result<(), IndexError> {
    if q.len() > MAX_QUERY_BYTES {
        return Err(refuse(
            field,
            format!(
                "the query is {} bytes; at most {MAX_QUERY_BYTES} are accepted",
                q.len()
            ),
        ));
    }
    let s = shape(q);
    if s.depth > MAX_QUERY_DEPTH {
        return Err(refuse(
            field,
            format!(
                "the query nests {} levels deep (parentheses and NOT); at most {MAX_QUERY_DEPTH} are accepted",
                s.depth
            ),
        ));
    }
    if s.clauses > MAX_QUERY_CLAUSES {
        return Err(refuse(
            field,
            format!(
                "the query has {} terms and operators; at most {MAX_QUERY_CLAUSES} are accepted",
                s.clauses
            ),
        ));
    }
    Ok(())
}

fn check_len(field: &'static str, v: &str, max: usize) -> Result<(), IndexError> {
    if v.len() > max {
        return Err(refuse(
            field,
            format!("the value is {} bytes; at most {max} are accepted", v.len()),
        ));
    }
    Ok(())
}

/// Checks every string of a search request against its limit. Runs before
/// anything is parsed or looked up; `EventIndex::search` runs it too, so
/// no caller can skip it.
pub fn check_search(r: &SearchRequest) -> Result<(), IndexError> {
    for (field, v) in [
        ("text", &r.text),
        ("subject", &r.subject),
        ("attachment_name", &r.attachment_name),
        ("attachment_text", &r.attachment_text),
    ] {
        check_text(field, v)?;
    }
    for (field, v) in [
        ("host", &r.host),
        ("user", &r.user),
        ("agent_id", &r.agent_id),
        ("address", &r.address),
        ("sender", &r.sender),
        ("recipient", &r.recipient),
        ("sha256", &r.sha256),
        ("tag", &r.tag),
        ("page_token", &r.page_token),
        ("outcome", &r.outcome),
        ("kind", &r.kind),
        ("operation", &r.operation),
        ("alert", &r.alert),
        ("sender_domain", &r.sender_domain),
        ("recipient_domain", &r.recipient_domain),
        ("client_ip", &r.client_ip),
        ("message_id", &r.message_id),
        ("queue_id", &r.queue_id),
        ("reply_code", &r.reply_code),
        ("auth_user", &r.auth_user),
        ("direction", &r.direction),
        ("incident", &r.incident),
        ("upstream", &r.upstream),
        ("delivery", &r.delivery),
        // Issue 21.
        ("process", &r.process),
        ("remote_ip", &r.remote_ip),
        ("protocol", &r.protocol),
        ("p2p_reason", &r.p2p_reason),
        ("info_hash", &r.info_hash),
        ("net_direction", &r.net_direction),
        ("net_phase", &r.net_phase),
    ] {
        check_len(field, v, MAX_TERM_BYTES)?;
    }
    super::relay::delay_range(r)?;
    check_len("path", &r.path, MAX_PATH_BYTES)?;
    let words = r
        .path
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .count();
    if words > MAX_PATH_WORDS {
        return Err(refuse(
            "path",
            format!("the path has {words} words; at most {MAX_PATH_WORDS} are accepted"),
        ));
    }
    Ok(())
}

/// Checks the strings of an exfiltration report request against their
/// limits, before any is looked up.
pub fn check_exfil(r: &kiroku_proto::ExfilReportRequest) -> Result<(), IndexError> {
    for (field, v) in [
        ("time_zone", &r.time_zone),
        ("method", &r.method),
        ("user", &r.user),
        ("host", &r.host),
    ] {
        check_len(field, v, MAX_TERM_BYTES)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_of_queries() {
        for (q, depth, clauses) in [
            ("", 0, 0),
            ("invoice", 0, 1),
            ("invoice AND (q3 OR q4)", 1, 5),
            ("((((a))))", 4, 1),
            ("NOT NOT NOT a", 3, 4),
            ("(NOT a) (NOT b)", 2, 4),
            ("NOT a NOT b NOT c", 1, 6),
            ("NOT (NOT (a))", 4, 3),
            ("subject:(a OR b)", 1, 4),
            ("\"((((((((\" x", 0, 2),
            ("\"a \\\" ((((\" b", 0, 2),
            ("\\(\\(\\( a", 0, 2),
            ("))))((", 2, 0),
            ("(((", 3, 0),
        ] {
            assert_eq!(shape(q), Shape { depth, clauses }, "{q:?}");
        }
    }

    #[test]
    fn limits_name_the_field_and_the_limit() {
        let deep = format!("{}a{}", "(".repeat(3000), ")".repeat(3000));
        for field in ["text", "subject", "attachment_name", "attachment_text"] {
            let mut r = SearchRequest::default();
            match field {
                "text" => r.text = deep.clone(),
                "subject" => r.subject = deep.clone(),
                "attachment_text" => r.attachment_text = deep.clone(),
                _ => r.attachment_name = deep.clone(),
            }
            let e = check_search(&r).expect_err("refused").to_string();
            assert!(e.contains(field) && e.contains("2048"), "{e}");
        }
        let r = SearchRequest {
            text: "(".repeat(17) + "a",
            ..Default::default()
        };
        let e = check_search(&r).expect_err("too deep").to_string();
        assert!(e.contains("`text`") && e.contains("at most 16"), "{e}");
        let r = SearchRequest {
            subject: "NOT ".repeat(40) + "a",
            ..Default::default()
        };
        assert!(check_search(&r).is_err());
        let r = SearchRequest {
            text: "a ".repeat(65),
            ..Default::default()
        };
        let e = check_search(&r).expect_err("too many clauses").to_string();
        assert!(e.contains("64"), "{e}");
        let r = SearchRequest {
            host: "h".repeat(2000),
            ..Default::default()
        };
        let e = check_search(&r).expect_err("long host").to_string();
        assert!(e.contains("`host`") && e.contains("1024"), "{e}");
        let r = SearchRequest {
            text: "(invoice OR receipt) AND NOT \"draft (old)\"".into(),
            subject: "q3".into(),
            path: "/home/alice/Q3 Report.pdf".into(),
            ..Default::default()
        };
        check_search(&r).expect("ordinary queries pass");
    }
}
