//! The collector's Query requests as they come off the wire, run against a
//! real (temporary) index: the first byte picks the request type, the rest
//! is decoded (prost) as a `SearchRequest`, `TraceRequest`,
//! `ExfilReportRequest` or `AggregateRequest` and handled as the Query
//! service does without the
//! server: Search's page bounds (`query::page_of`) and the index search
//! with its query building (`EventIndex::search`: filters, full-text
//! syntax, time ranges, order), Trace's argument check (`query::trace_args`)
//! and `investigate::trace`, `investigate::exfil_report`, and Aggregate's
//! argument check (`query::aggregate_args`) and `EventIndex::stats`. The index
//! holds a few events of every kind, some with extreme times and offsets
//! (which an agent may send).
//!
//! A search input whose first byte has its high bit set has its
//! full-text fields repeated up to ~8,000 times (the low seven bits pick
//! how often), so a few bytes such as `(` or `NOT ` become the deep
//! nesting that once overflowed the query parser's stack and aborted the
//! collector (`fuzz/dicts/grpc_query.dict` holds such tokens); the bounds
//! in `store/index/limits.rs` must refuse them as a bad query. A stack
//! overflow here ends the fuzzer with a crash, as it ended the collector.
//!
//! Checked: no panic (debug assertions on: an overflow is a panic); a
//! message re-encodes to one that decodes the same; a search returns at
//! most the page size and never more than its total; an index error is a
//! bad query (the caller's fault), never an internal one; a trace returns
//! at most its limit, oldest first; an exfiltration report lists at most
//! `EXFIL_FILES_MAX` files, all in its range, and no more than it counts;
//! an aggregate returns at most its top (time buckets: `MAX_TOP`) groups,
//! and for a grouping with one value per event its groups, the rest and
//! the events without a value add up to the total.
#![no_main]

use std::sync::OnceLock;

use kiroku_collector::investigate::{EXFIL_FILES_MAX, ExfilError, exfil_report, trace};
use kiroku_collector::query::{aggregate_args, page_of, trace_args};
use kiroku_collector::store::index::{DEFAULT_TOP, EventIndex, IndexError, MAX_TOP};
use kiroku_proto::{
    AggregateRequest, Attachment, EmailEvent, Event, ExfilReportRequest, FileEvent, Recipient,
    SearchRequest, TraceRequest, event::Kind,
};
use libfuzzer_sys::fuzz_target;
use prost::Message;

const SHA: &str = "5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef";

fn index() -> &'static EventIndex {
    static INDEX: OnceLock<(tempfile::TempDir, EventIndex)> = OnceLock::new();
    &INDEX
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("temp dir");
            let idx = EventIndex::open(&dir.path().join("index")).expect("index");
            let mut events = Vec::new();
            for (i, (at, offset, known)) in [
                (1_795_000_000_000, 0, true),
                (1_795_000_100_000, 120_000, true),
                (0, 0, false),
                (i64::MAX, -1, true),
                (i64::MIN, 1, true),
                (-86_400_000, i64::MAX, true),
            ]
            .into_iter()
            .enumerate()
            {
                let seq = i as u64 + 1;
                events.push(Event {
                    event_id: format!("a1/s1/{seq}"),
                    agent_id: "a1".into(),
                    stream_id: "s1".into(),
                    seq,
                    observed_at_ms: at,
                    received_at_ms: at,
                    clock_offset_ms: offset,
                    clock_offset_known: known,
                    user: "alice".into(),
                    tags: vec!["clock-skew".into()],
                    kind: Some(if i % 2 == 0 {
                        Kind::Email(EmailEvent {
                            mail_from: "alice@corp.example".into(),
                            rcpt_to: vec![Recipient {
                                address: "bob@example.org".into(),
                                reply_code: 250,
                                ..Default::default()
                            }],
                            subject: format!("budget {i}"),
                            body_text: "quarterly numbers".into(),
                            attachment_count: 1,
                            attachments: vec![Attachment {
                                filename: "q3.xlsx".into(),
                                sha256: SHA.into(),
                                size: 1234,
                                ..Default::default()
                            }],
                            outcome: 1,
                            ..Default::default()
                        })
                    } else {
                        Kind::File(FileEvent {
                            operation: "copy_to_removable".into(),
                            path: "/media/usb/q3.xlsx".into(),
                            source_path: "/home/alice/q3.xlsx".into(),
                            sha256: SHA.into(),
                            removable: true,
                            ..Default::default()
                        })
                    }),
                    ..Default::default()
                });
            }
            idx.add(&events).expect("add");
            idx.commit().expect("commit");
            (dir, idx)
        })
        .1
}

fn roundtrip<M: Message + Default + PartialEq + std::fmt::Debug>(m: &M) {
    let again = M::decode(m.encode_to_vec().as_slice()).expect("re-encoded message decodes");
    assert_eq!(&again, m, "re-encoding changed the message");
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let idx = index();
    match which % 4 {
        0 => {
            let Ok(mut r) = SearchRequest::decode(rest) else {
                return;
            };
            roundtrip(&r);
            if which & 0x80 != 0 {
                let times = usize::from(which & 0x7f) * 64 + 1;
                for t in [&mut r.text, &mut r.subject, &mut r.attachment_name] {
                    *t = t.repeat(times);
                }
            }
            let Ok((offset, size)) = page_of(&r) else {
                return;
            };
            match idx.search(&r, offset, size) {
                Ok((events, total, next)) => {
                    assert!(events.len() <= size.max(1), "{} > {size}", events.len());
                    assert!(events.len() as u64 <= total);
                    if let Some(n) = next {
                        assert_eq!(n, offset + events.len());
                    }
                }
                Err(IndexError::BadQuery { .. }) => {}
                Err(e) => panic!("internal error for {r:?}: {e}"),
            }
        }
        1 => {
            let Ok(r) = TraceRequest::decode(rest) else {
                return;
            };
            roundtrip(&r);
            let Ok((sha, limit)) = trace_args(&r) else {
                return;
            };
            let (events, _) = trace(idx, &sha, limit).expect("trace of a valid hash");
            assert!(events.len() <= limit);
        }
        3 => {
            let Ok(r) = AggregateRequest::decode(rest) else {
                return;
            };
            roundtrip(&r);
            let Ok((filter, q)) = aggregate_args(&r) else {
                return;
            };
            match idx.stats(&filter, &q) {
                Ok(s) => {
                    let top = match (q.top, q.by.name()) {
                        (0, "hour" | "day") => MAX_TOP,
                        (0, _) => DEFAULT_TOP,
                        (n, _) => n,
                    };
                    let cyclic = matches!(q.by.name(), "hour-of-day" | "weekday");
                    assert!(cyclic || s.groups.len() <= top as usize, "{s:?}");
                    if !q.by.multi_valued() {
                        let counted: u64 = s.groups.iter().map(|g| g.tally.count).sum();
                        assert_eq!(counted + s.other.count + s.none.count, s.total.count, "{s:?}");
                    }
                }
                Err(IndexError::BadQuery { .. }) => {}
                Err(e) => panic!("internal error for {r:?}: {e}"),
            }
        }
        _ => {
            let Ok(r) = ExfilReportRequest::decode(rest) else {
                return;
            };
            roundtrip(&r);
            match exfil_report(idx, &r) {
                Ok(rep) => {
                    for f in &rep.files {
                        assert!(
                            f.at_ms >= r.from_ms && f.at_ms < r.to_ms,
                            "{f:?} outside {r:?}"
                        );
                    }
                    assert!(rep.files.len() <= EXFIL_FILES_MAX);
                    let listed = rep.files.len() as u64;
                    assert!(listed <= rep.files_total, "{rep:?}");
                    assert_eq!(rep.files_truncated, listed < rep.files_total);
                }
                Err(ExfilError::BadRequest(_)) => {}
                Err(e) => panic!("internal error for {r:?}: {e}"),
            }
        }
    }
});
