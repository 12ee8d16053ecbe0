//! The index's `delivery` field through [`derived_source`]: what the
//! store holds is what `--delivery` finds, and a re-index after a change
//! moves the mail.

use std::sync::Arc;

use kiroku_proto::{EmailEvent, Event, MtaLogEvent, SearchRequest, event::Kind};

use super::*;
use crate::store::index::EventIndex;
use crate::store::meta::MetaStore;

fn mail(id: &str, queue_id: &str) -> Event {
    Event {
        event_id: id.into(),
        agent_id: "ws1".into(),
        observed_at_ms: 1_000_000,
        kind: Some(Kind::Email(EmailEvent {
            upstream: "127.0.0.1:25".into(),
            upstream_queue_id: queue_id.into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn line(id: &str, queue_id: &str, status: &str) -> Event {
    Event {
        event_id: id.into(),
        agent_id: "ws1".into(),
        observed_at_ms: 1_002_000,
        kind: Some(Kind::MtaLog(MtaLogEvent {
            queue_id: queue_id.into(),
            status: status.into(),
            to: vec!["bob@example.net".into()],
            ..Default::default()
        })),
        ..Default::default()
    }
}

#[test]
fn the_delivery_filter_finds_what_the_store_holds() {
    let dir = tempfile::tempdir().expect("store call");
    let meta = MetaStore::open(&dir.path().join("meta")).expect("store call");
    let store = DeliveryStore::open(&meta).expect("store call");
    let idx = EventIndex::open(&dir.path().join("index")).expect("store call");
    idx.set_derived(derived_source(Arc::new(|_: &Event| None), store.clone()));
    let (a, b) = (mail("ws1/s/1", "QA"), mail("ws1/s/2", "QB"));
    store
        .ingest(&[a.clone(), b.clone()], 1)
        .expect("store call");
    idx.add(&[a.clone(), b]).expect("store call");
    idx.commit().expect("store call");
    let find = |status: &str| {
        let r = SearchRequest {
            delivery: status.into(),
            ..Default::default()
        };
        let (found, _, _) = idx.search(&r, 0, 10).expect("store call");
        let mut ids: Vec<String> = found.into_iter().map(|e| e.event_id).collect();
        ids.sort();
        ids
    };
    assert_eq!(find("unknown"), ["ws1/s/1", "ws1/s/2"]);
    assert!(find("deferred").is_empty());
    // A deferral for the first: re-indexed as the committer does.
    let changed = store
        .ingest(&[line("ws1/s/3", "QA", "deferred")], 2)
        .expect("store call");
    assert_eq!(changed, ["ws1/s/1"]);
    idx.add(std::slice::from_ref(&a)).expect("store call");
    idx.commit().expect("store call");
    assert_eq!(find("deferred"), ["ws1/s/1"]);
    assert_eq!(find("unknown"), ["ws1/s/2"]);
    store
        .ingest(&[line("ws1/s/4", "QA", "bounced")], 3)
        .expect("store call");
    idx.add(&[a]).expect("store call");
    idx.commit().expect("store call");
    assert_eq!(find("BOUNCED "), ["ws1/s/1"], "trimmed, any case");
    assert!(find("deferred").is_empty());
    let r = SearchRequest {
        delivery: "lost".into(),
        ..Default::default()
    };
    let err = idx.search(&r, 0, 10).expect_err("refused").to_string();
    assert!(err.contains("unknown delivery status \"lost\""), "{err}");
    assert!(
        err.contains("delivered, deferred, bounced, expired, unknown"),
        "{err}"
    );
}

/// What the join adds to ingest, against indexing the same mails
/// (`cargo test -p kiroku-collector --lib delivery::tests::cost -- --ignored
/// --nocapture`): 5,000 relayed mails, then one status line for each
/// (which re-indexes its mail).
#[test]
#[ignore = "a measurement, not a check"]
fn cost() {
    let dir = tempfile::tempdir().expect("temp dir");
    let meta = MetaStore::open(&dir.path().join("meta")).expect("meta");
    let store = DeliveryStore::open(&meta).expect("store");
    let idx = EventIndex::open(&dir.path().join("index")).expect("index");
    idx.set_derived(derived_source(Arc::new(|_: &Event| None), store.clone()));
    let n = 5_000;
    let mails: Vec<Event> = (0..n)
        .map(|i| {
            let mut m = mail(&format!("ws1/s/{i}"), &format!("Q{i:08X}"));
            if let Some(Kind::Email(e)) = &mut m.kind {
                e.subject = format!("quarterly report {i}");
                e.body_text = "Hello, please find the figures attached. ".repeat(20);
            }
            m
        })
        .collect();
    let lines: Vec<Event> = (0..n)
        .map(|i| line(&format!("ws1/s/{}", n + i), &format!("Q{i:08X}"), "sent"))
        .collect();
    let t = std::time::Instant::now();
    for c in mails.chunks(100) {
        store.ingest(c, 1).expect("ingest");
    }
    let join_mails = t.elapsed();
    let t = std::time::Instant::now();
    for c in mails.chunks(100) {
        idx.add(c).expect("add");
    }
    idx.commit().expect("commit");
    let index_mails = t.elapsed();
    let t = std::time::Instant::now();
    let mut changed = Vec::new();
    for c in lines.chunks(100) {
        changed.extend(store.ingest(c, 2).expect("ingest"));
    }
    let join_lines = t.elapsed();
    let t = std::time::Instant::now();
    let by_id: std::collections::HashMap<&str, &Event> =
        mails.iter().map(|m| (m.event_id.as_str(), m)).collect();
    for ids in changed.chunks(100) {
        let again: Vec<Event> = ids.iter().map(|id| by_id[id.as_str()].clone()).collect();
        idx.add(&again).expect("add");
    }
    idx.commit().expect("commit");
    let reindex = t.elapsed();
    let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / n as f64;
    println!(
        "per event, µs: join a mail {:.1}, index a mail {:.1}, join a status line {:.1}, re-index its mail {:.1} ({} changed)",
        per(join_mails),
        per(index_mails),
        per(join_lines),
        per(reindex),
        changed.len()
    );
}
