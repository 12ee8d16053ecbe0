//! Relay incidents in the index (issue 20): an `IncidentEvent` is found
//! by its incident kind (`--incident`), its state (`--outcome open |
//! still_open | closed`), the upstream (`--upstream host:port`), every
//! client address it names (`--client-ip`, the last one and the distinct
//! ones listed), the upstream's reply code (`--reply-code`) and the words
//! of its error and detail (`--text`); its count is a column.
//!
//! `upstream` is indexed for mail and AUTH records too (`index/relay.rs`),
//! so the same filter finds what went to one MTA.

use std::net::IpAddr;

use kiroku_common::search::as_v6;
use kiroku_proto::{IncidentEvent, SearchRequest};
use tantivy::TantivyDocument;
use tantivy::Term;
use tantivy::query::{Query, TermQuery};
use tantivy::schema::IndexRecordOption;

use super::IndexError;
use super::schema::Fields;

/// The fields of an incident record.
pub(super) fn add_incident(f: &Fields, d: &mut TantivyDocument, i: &IncidentEvent) {
    d.add_text(f.kind, "incident");
    d.add_text(f.incident, &i.kind);
    d.add_text(f.outcome, &i.state);
    if !i.upstream.is_empty() {
        d.add_text(f.upstream, super::relay::upstream_key(&i.upstream));
    }
    let mut ips: Vec<IpAddr> = std::iter::once(&i.client_ip)
        .chain(&i.client_ips)
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    ips.sort();
    ips.dedup();
    for ip in ips {
        d.add_ip_addr(f.client_ip, as_v6(ip));
    }
    if i.reply_code != 0 {
        d.add_u64(f.reply_code, u64::from(i.reply_code));
    }
    d.add_u64(f.incident_count, i.count);
    d.add_text(f.body, &i.last_error);
    d.add_text(f.body, &i.detail);
    d.add_text(f.replies, &i.reply);
}

/// The query of `--incident` (`--upstream` is `index/relay.rs`'s).
pub(super) fn queries(f: &Fields, r: &SearchRequest) -> Result<Vec<Box<dyn Query>>, IndexError> {
    let term = |field, v: &str| -> Box<dyn Query> {
        Box::new(TermQuery::new(
            Term::from_field_text(field, v),
            IndexRecordOption::Basic,
        ))
    };
    let mut must = Vec::new();
    if !r.incident.trim().is_empty() {
        let kind = kiroku_common::vocabulary::incident_kind(&r.incident).map_err(|message| {
            IndexError::BadQuery {
                field: "incident",
                message,
            }
        })?;
        must.push(term(f.incident, &kind));
    }
    Ok(must)
}

#[cfg(test)]
mod tests {
    use kiroku_proto::event::Kind;
    use kiroku_proto::{EmailEvent, Event, IncidentEvent, SearchRequest};

    use super::super::EventIndex;

    fn incident(id: &str, kind: &str, state: &str, upstream: &str, ips: &[&str]) -> Event {
        Event {
            event_id: id.into(),
            agent_id: "a1".into(),
            observed_at_ms: 1_000,
            kind: Some(Kind::Incident(IncidentEvent {
                kind: kind.into(),
                state: state.into(),
                upstream: upstream.into(),
                client_ip: ips.first().map(|s| s.to_string()).unwrap_or_default(),
                client_ips: ips.iter().map(|s| s.to_string()).collect(),
                count: 100,
                reply_code: if kind == "upstream_refused" { 554 } else { 0 },
                last_error: format!("{kind} at {upstream}"),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn incidents_are_found_by_kind_state_upstream_client_and_code() {
        let dir = tempfile::tempdir().expect("temp dir");
        let idx = EventIndex::open(&dir.path().join("index")).expect("index");
        let mail = Event {
            event_id: "m".into(),
            agent_id: "a1".into(),
            observed_at_ms: 1_000,
            kind: Some(Kind::Email(EmailEvent {
                upstream: "MX.example.org:25".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        idx.add(&[
            incident(
                "u1",
                "upstream_unreachable",
                "open",
                "127.0.0.1:25",
                &["127.0.0.2"],
            ),
            incident(
                "u2",
                "upstream_unreachable",
                "closed",
                "127.0.0.1:25",
                &["127.0.0.2", "127.0.0.3"],
            ),
            incident(
                "r1",
                "upstream_refused",
                "closed",
                "mx.example.org:25",
                &["10.1.2.3"],
            ),
            incident(
                "g1",
                "client_gone_before_mail",
                "closed",
                "127.0.0.1:25",
                &["192.0.2.9"],
            ),
            mail,
        ])
        .expect("add");
        idx.commit().expect("commit");
        let find = |r: SearchRequest| {
            let (found, _, _) = idx.search(&r, 0, 10).expect("search");
            let mut ids: Vec<String> = found.into_iter().map(|e| e.event_id).collect();
            ids.sort();
            ids
        };
        let req = |f: fn(&mut SearchRequest)| {
            let mut r = SearchRequest::default();
            f(&mut r);
            r
        };
        let cases: Vec<(&str, SearchRequest, Vec<&str>)> = vec![
            (
                "kind",
                req(|r| r.kind = "incident".into()),
                vec!["g1", "r1", "u1", "u2"],
            ),
            (
                "incident kind",
                req(|r| r.incident = " Upstream_Unreachable ".into()),
                vec!["u1", "u2"],
            ),
            (
                "state",
                req(|r| {
                    r.incident = "upstream_unreachable".into();
                    r.outcome = "closed".into();
                }),
                vec!["u2"],
            ),
            (
                "upstream, mail too",
                req(|r| r.upstream = "mx.example.org:25".into()),
                vec!["m", "r1"],
            ),
            (
                "any listed client",
                req(|r| r.client_ip = "127.0.0.3".into()),
                vec!["u2"],
            ),
            (
                "client network",
                req(|r| {
                    r.kind = "incident".into();
                    r.client_ip = "127.0.0.0/8".into();
                }),
                vec!["u1", "u2"],
            ),
            (
                "reply code",
                req(|r| r.reply_code = "5xx".into()),
                vec!["r1"],
            ),
            (
                "words of the error",
                req(|r| r.text = "refused".into()),
                vec!["r1"],
            ),
        ];
        for (name, r, want) in cases {
            assert_eq!(find(r), want, "{name}");
        }
        let err = idx
            .search(&req(|r| r.incident = "down".into()), 0, 10)
            .expect_err("unknown kind");
        assert!(err.to_string().contains("upstream_unreachable"), "{err}");
    }
}
