//! Which audit entries concern the events of a case (the rule is stated
//! in `export.rs`): entries naming an exported event by id or by a
//! content hash, and entries holding the same search as the export's.
//! Pure: an entry in, a reason out.
//!
//! The audit log keeps a call's request as its `Debug` text, so "the same
//! search" is decided on that text: the time range and paging fields
//! (`from_ms`, `to_ms`, `page_size`, `page_token`, `ascending`,
//! `corrected_time`) are set to fixed values on both sides, then the
//! export's `SearchRequest { … }` must appear in the entry, and the
//! entry's own time range must include an exported event.

use std::collections::HashSet;
use std::sync::LazyLock;

use kiroku_proto::{AuditEntry, SearchRequest};
use regex::Regex;

use super::build::Selected;

/// The paging and time fields of a `SearchRequest`'s `Debug` text.
static VARYING: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"\b(from_ms|to_ms|page_size): -?\d+|\bpage_token: "(?:[^"\\]|\\.)*"|\b(ascending|corrected_time): (?:true|false)"#,
    )
    .unwrap_or_else(|e| panic!("audit_select VARYING pattern: {e}"))
});

/// A run of 64 hex digits (a SHA-256) in an entry.
static SHA: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b[0-9a-fA-F]{64}\b").unwrap_or_else(|e| panic!("audit_select SHA pattern: {e}"))
});

/// What the exported events are known by.
pub struct Concern {
    /// Event ids as `Debug` quotes them (`"host/smtp/3"`), so `h/s/1`
    /// does not match `h/s/10`.
    ids: Vec<String>,
    hashes: HashSet<String>,
    /// The export's filter, its varying fields fixed.
    search: String,
    /// Each event's agent-clock and corrected times.
    times: Vec<i64>,
}

impl Concern {
    pub fn new(filter: &SearchRequest, events: &[Selected]) -> Concern {
        let mut times: Vec<i64> = events.iter().flat_map(|e| e.times).collect();
        times.sort_unstable();
        Concern {
            ids: events.iter().map(|e| format!("{:?}", e.event_id)).collect(),
            hashes: events
                .iter()
                .flat_map(|e| e.hashes.iter().cloned())
                .collect(),
            search: fixed(&format!("{filter:?}")),
            times,
        }
    }

    /// Why `e` concerns the exported events, or None.
    pub fn reason(&self, e: &AuditEntry) -> Option<&'static str> {
        let texts = [e.filter.as_str(), e.detail.as_str()];
        if texts
            .iter()
            .any(|t| self.ids.iter().any(|id| t.contains(id.as_str())))
        {
            return Some("names an exported event");
        }
        if texts.iter().any(|t| {
            SHA.find_iter(t)
                .any(|m| self.hashes.contains(&m.as_str().to_lowercase()))
        }) {
            return Some("names the content hash of an exported event");
        }
        if texts.iter().any(|t| self.same_search(t)) {
            return Some("the same search, over a time that includes an exported event");
        }
        None
    }

    fn same_search(&self, text: &str) -> bool {
        let Some(start) = text.find("SearchRequest {") else {
            return false;
        };
        let text = &text[start..];
        if !fixed(text).starts_with(&self.search) {
            return false;
        }
        let (from, to) = (field_i64(text, "from_ms"), field_i64(text, "to_ms"));
        self.times.iter().any(|&t| t >= from && (to == 0 || t < to))
    }
}

/// The `Debug` text with its time and paging fields fixed.
fn fixed(text: &str) -> String {
    VARYING
        .replace_all(text, |c: &regex::Captures| {
            let name = c
                .get(1)
                .or_else(|| c.get(2))
                .map(|m| m.as_str())
                .unwrap_or("page_token");
            format!("{name}: _")
        })
        .into_owned()
}

/// The first `name: <integer>` in a `Debug` text; 0 when absent.
fn field_i64(text: &str, name: &str) -> i64 {
    let key = format!("{name}: ");
    text.find(&key)
        .map(|i| &text[i + key.len()..])
        .and_then(|rest| {
            let end = rest
                .find(|c: char| c != '-' && !c.is_ascii_digit())
                .unwrap_or(rest.len());
            rest[..end].parse().ok()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiroku_proto::event::Kind;
    use kiroku_proto::{EmailEvent, Event, FileEvent};

    fn mail(id: &str, at: i64, raw: &str) -> Event {
        Event {
            event_id: id.into(),
            observed_at_ms: at,
            kind: Some(Kind::Email(EmailEvent {
                raw_sha256: raw.into(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn entry(call: &str, filter: String) -> AuditEntry {
        AuditEntry {
            call: call.into(),
            filter,
            ..Default::default()
        }
    }

    #[test]
    fn which_entries_concern_the_case() {
        let raw = "ab".repeat(32);
        let file_sha = "cd".repeat(32);
        let filter = SearchRequest {
            sender: "bob@example.com".into(),
            from_ms: 1_000,
            ..Default::default()
        };
        let events = [
            mail("h/s/1", 5_000, &raw),
            Event {
                event_id: "h/f/2".into(),
                observed_at_ms: 6_000,
                kind: Some(Kind::File(FileEvent {
                    sha256: file_sha.clone(),
                    ..Default::default()
                })),
                ..Default::default()
            },
        ];
        let c = Concern::new(&filter, &events.map(|e| Selected::of(&e)));
        let search = |f: SearchRequest| format!("{f:?}");
        let same = |from_ms, to_ms, page_size| SearchRequest {
            from_ms,
            to_ms,
            page_size,
            page_token: "50".into(),
            ..filter.clone()
        };
        for (e, want) in [
            (entry("GetRaw", r#"event_id: "h/s/1""#.into()), true),
            (entry("GetEvent", r#"event_id: "h/s/10""#.into()), false),
            (entry("GetEvent", r#"event_id: "x/h/s/1""#.into()), false),
            (
                entry(
                    "Trace",
                    format!("sha256: {:?}, limit: 10", file_sha.to_uppercase()),
                ),
                true,
            ),
            (
                entry("Trace", format!("sha256: {:?}, limit: 10", "ef".repeat(32))),
                false,
            ),
            (entry("Search", search(same(0, 0, 50))), true),
            (entry("Search", search(same(5_500, 0, 10))), true),
            (entry("Search", search(same(7_000, 0, 10))), false),
            (entry("Search", search(same(0, 5_000, 10))), false),
            (
                entry(
                    "SearchStream",
                    format!("{} (streamed; results: …)", search(same(0, 0, 0))),
                ),
                true,
            ),
            (
                entry(
                    "Aggregate",
                    format!(
                        "AggregateRequest {{ filter: Some({}), by: \"user\" }}",
                        search(same(0, 0, 0))
                    ),
                ),
                true,
            ),
            (
                entry(
                    "Search",
                    search(SearchRequest {
                        subject: "x".into(),
                        ..same(0, 0, 0)
                    }),
                ),
                false,
            ),
            (entry("ListHosts", String::new()), false),
        ] {
            assert_eq!(c.reason(&e).is_some(), want, "{e:?}");
        }
        let admin = AuditEntry {
            kind: "admin".into(),
            call: "ExportCase".into(),
            detail: r#"case "x": 1 event ["h/f/2"]"#.into(),
            ..Default::default()
        };
        assert!(c.reason(&admin).is_some());
    }

    #[test]
    fn fixed_fields() {
        assert_eq!(
            fixed(r#"A { from_ms: -5, page_token: "a\"b", ascending: true, host: "from_ms" }"#),
            r#"A { from_ms: _, page_token: _, ascending: _, host: "from_ms" }"#
        );
        assert_eq!(field_i64("x { from_ms: -12, to_ms: 7 }", "to_ms"), 7);
        assert_eq!(field_i64("x { from_ms: -12 }", "from_ms"), -12);
        assert_eq!(field_i64("x {}", "to_ms"), 0);
    }
}
