//! Issue 20's relay fields and filters: AUTH attempts (`AuthEvent`) by
//! claimed user, client address, outcome and reply; the upstream (host:port
//! as the agent was configured) of mail and AUTH records; and each mail's
//! whole transaction time, `timings.total_ms`, as a column that
//! `--min-delay` / `--max-delay` read as one range.
//!
//! An AUTH record reuses the mail-flow fields where they mean the same
//! thing, so the existing filters apply unchanged: `auth_user` (the claimed
//! user, lower case), `client_ip`, `reply_code`, `replies` (the reply's
//! words, in `--text`) and `outcome` ("succeeded" / "failed",
//! [`auth_outcome`]). A mail recorded before issue 20 has no timings and
//! matches no delay filter.

use std::net::IpAddr;
use std::ops::Bound;

use kiroku_common::search::as_v6;
use kiroku_common::vocabulary::auth_outcome;
use kiroku_proto::{AuthEvent, EmailEvent, SearchRequest};
use tantivy::query::{Query, RangeQuery, TermQuery};
use tantivy::schema::IndexRecordOption;
use tantivy::{TantivyDocument, Term};

use super::IndexError;
use super::schema::Fields;

/// An upstream as indexed and looked up: trimmed, lower case.
fn upstream_key(v: &str) -> String {
    v.trim().to_lowercase()
}

/// The fields of an AUTH attempt.
pub(super) fn add_auth(f: &Fields, d: &mut TantivyDocument, a: &AuthEvent) {
    d.add_text(f.outcome, auth_outcome::name(a.success));
    if !a.claimed_user.trim().is_empty() {
        d.add_text(f.auth_user, a.claimed_user.trim().to_lowercase());
    }
    if let Ok(ip) = a.client_ip.trim().parse::<IpAddr>() {
        d.add_ip_addr(f.client_ip, as_v6(ip));
    }
    if a.reply_code != 0 {
        d.add_u64(f.reply_code, u64::from(a.reply_code));
    }
    if !a.reply.trim().is_empty() {
        d.add_text(f.replies, &a.reply);
    }
    if !a.upstream.trim().is_empty() {
        d.add_text(f.upstream, upstream_key(&a.upstream));
    }
}

/// A mail's upstream and total time.
pub(super) fn add_email(f: &Fields, d: &mut TantivyDocument, m: &EmailEvent) {
    if !m.upstream.trim().is_empty() {
        d.add_text(f.upstream, upstream_key(&m.upstream));
    }
    if let Some(t) = &m.timings {
        d.add_u64(f.total_ms, t.total_ms);
    }
}

fn bad(field: &'static str, message: String) -> IndexError {
    IndexError::BadQuery { field, message }
}

/// The conditions of `r` on these fields, each a query that must match.
pub(super) fn queries(f: &Fields, r: &SearchRequest) -> Result<Vec<Box<dyn Query>>, IndexError> {
    let mut must: Vec<Box<dyn Query>> = Vec::new();
    if !r.upstream.trim().is_empty() {
        must.push(Box::new(TermQuery::new(
            Term::from_field_text(f.upstream, &upstream_key(&r.upstream)),
            IndexRecordOption::Basic,
        )));
    }
    if let Some((lo, hi)) = delay_range(r)? {
        must.push(Box::new(RangeQuery::new(
            Bound::Included(Term::from_field_u64(f.total_ms, lo)),
            match hi {
                Some(hi) => Bound::Excluded(Term::from_field_u64(f.total_ms, hi)),
                None => Bound::Unbounded,
            },
        )));
    }
    Ok(must)
}

/// `[min, max)` of `total_ms` the request asks for (max None: unbounded),
/// or None when it sets neither bound.
pub(super) fn delay_range(r: &SearchRequest) -> Result<Option<(u64, Option<u64>)>, IndexError> {
    let (min, max) = (r.min_delay_ms, r.max_delay_ms);
    if min == 0 && max == 0 {
        return Ok(None);
    }
    if max != 0 && max <= min {
        return Err(bad(
            "max_delay_ms",
            format!(
                "the delay range is empty: at least {min} ms and below {max} ms; give a --max-delay above --min-delay"
            ),
        ));
    }
    Ok(Some((min, (max != 0).then_some(max))))
}

#[cfg(test)]
mod tests {
    use super::super::{EventIndex, GroupBy, StatsQuery};
    use super::*;
    use kiroku_proto::{Event, PhaseTimings, event::Kind};

    fn attempt(n: u32, user: &str, ip: &str, success: bool) -> Event {
        Event {
            event_id: format!("a1/s/{n}"),
            agent_id: "a1".into(),
            observed_at_ms: i64::from(n) * 1000,
            kind: Some(Kind::Auth(AuthEvent {
                mechanism: "PLAIN".into(),
                claimed_user: user.into(),
                success,
                reply_code: if success { 235 } else { 535 },
                reply: if success {
                    "235 2.7.0 Authentication successful".into()
                } else {
                    "535 5.7.8 Error: authentication failed".into()
                },
                client_ip: ip.into(),
                upstream: "127.0.0.1:2525".into(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn mail(n: u32, total_ms: Option<u64>) -> Event {
        Event {
            event_id: format!("a1/m/{n}"),
            agent_id: "a1".into(),
            observed_at_ms: i64::from(n) * 1000,
            kind: Some(Kind::Email(EmailEvent {
                upstream: "MX.example.org:25".into(),
                timings: total_ms.map(|t| PhaseTimings {
                    total_ms: t,
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn auth_records_searched_and_counted_by_user_and_client() {
        let dir = tempfile::tempdir().expect("tempdir");
        let idx = EventIndex::open(dir.path()).expect("open");
        let events = [
            attempt(1, "Alice", "127.0.0.2", false),
            attempt(2, "alice", "127.0.0.2", false),
            attempt(3, "alice", "127.0.0.2", true),
            attempt(4, "bob", "127.0.0.3", false),
            attempt(5, "", "::ffff:127.0.0.3", false),
        ];
        idx.add(&events).expect("add");
        idx.commit().expect("commit");
        let count = |r: SearchRequest| idx.search(&r, 0, 10).expect("search").1;
        let auth = |r: SearchRequest| SearchRequest {
            kind: "auth".into(),
            ..r
        };
        let failed = || SearchRequest {
            outcome: "failed".into(),
            ..Default::default()
        };
        assert_eq!(count(auth(failed())), 4);
        assert_eq!(
            count(auth(SearchRequest {
                auth_user: "ALICE".into(),
                ..failed()
            })),
            2
        );
        assert_eq!(
            count(auth(SearchRequest {
                client_ip: "127.0.0.3".into(),
                ..failed()
            })),
            2
        );
        assert_eq!(
            count(auth(SearchRequest {
                outcome: "succeeded".into(),
                client_ip: "127.0.0.0/30".into(),
                ..Default::default()
            })),
            1
        );
        assert_eq!(
            count(auth(SearchRequest {
                reply_code: "5xx".into(),
                upstream: "127.0.0.1:2525".into(),
                ..Default::default()
            })),
            4
        );
        let stats = |by| {
            let q = StatsQuery {
                by,
                top: 0,
                zone: jiff::tz::TimeZone::UTC,
                zone_name: "UTC".into(),
            };
            let s = idx.stats(&auth(failed()), &q).expect("stats");
            let mut groups: Vec<(String, u64)> = s
                .groups
                .iter()
                .map(|g| (g.key.clone(), g.tally.count))
                .collect();
            groups.sort();
            (groups, s.none.count)
        };
        assert_eq!(
            stats(GroupBy::User),
            (vec![("alice".into(), 2), ("bob".into(), 1)], 1)
        );
        assert_eq!(
            stats(GroupBy::ClientIp),
            (vec![("127.0.0.2".into(), 2), ("127.0.0.3".into(), 2)], 0)
        );
    }

    #[test]
    fn delay_and_upstream_filters() {
        let dir = tempfile::tempdir().expect("tempdir");
        let idx = EventIndex::open(dir.path()).expect("open");
        let events = [
            mail(1, Some(120)),
            mail(2, Some(5_000)),
            mail(3, Some(61_000)),
            mail(4, None),
        ];
        idx.add(&events).expect("add");
        idx.commit().expect("commit");
        let ids = |min, max| {
            let r = SearchRequest {
                min_delay_ms: min,
                max_delay_ms: max,
                ascending: true,
                ..Default::default()
            };
            let (found, _, _) = idx.search(&r, 0, 10).expect("search");
            found.into_iter().map(|e| e.event_id).collect::<Vec<_>>()
        };
        assert_eq!(ids(5_000, 0), ["a1/m/2", "a1/m/3"]);
        assert_eq!(ids(0, 60_000), ["a1/m/1", "a1/m/2"]);
        assert_eq!(ids(1_000, 60_000), ["a1/m/2"]);
        let r = SearchRequest {
            upstream: "mx.example.org:25".into(),
            ..Default::default()
        };
        assert_eq!(idx.search(&r, 0, 10).expect("search").1, 4);
        let empty = SearchRequest {
            min_delay_ms: 10,
            max_delay_ms: 10,
            ..Default::default()
        };
        assert!(idx.search(&empty, 0, 10).is_err());
    }

    #[test]
    fn delay_ranges() {
        let r = |min, max| SearchRequest {
            min_delay_ms: min,
            max_delay_ms: max,
            ..Default::default()
        };
        assert_eq!(delay_range(&r(0, 0)).expect("none"), None);
        assert_eq!(delay_range(&r(5_000, 0)).expect("min"), Some((5_000, None)));
        assert_eq!(
            delay_range(&r(0, 60_000)).expect("max"),
            Some((0, Some(60_000)))
        );
        assert_eq!(
            delay_range(&r(5_000, 60_000)).expect("both"),
            Some((5_000, Some(60_000)))
        );
        for (min, max) in [(5_000, 5_000), (60_000, 5_000)] {
            let e = delay_range(&r(min, max)).expect_err("empty").to_string();
            assert!(e.contains("--max-delay"), "{e}");
        }
    }
}
