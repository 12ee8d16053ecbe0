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
    let dir = tempfile::tempdir().unwrap();
    let meta = MetaStore::open(&dir.path().join("meta")).unwrap();
    let store = DeliveryStore::open(&meta).unwrap();
    let idx = EventIndex::open(&dir.path().join("index")).unwrap();
    idx.set_derived(derived_source(Arc::new(|_: &Event| None), store.clone()));
    let (a, b) = (mail("ws1/s/1", "QA"), mail("ws1/s/2", "QB"));
    store.ingest(&[a.clone(), b.clone()], 1).unwrap();
    idx.add(&[a.clone(), b]).unwrap();
    idx.commit().unwrap();
    let find = |status: &str| {
        let r = SearchRequest {
            delivery: status.into(),
            ..Default::default()
        };
        let (found, _, _) = idx.search(&r, 0, 10).unwrap();
        let mut ids: Vec<String> = found.into_iter().map(|e| e.event_id).collect();
        ids.sort();
        ids
    };
    assert_eq!(find("unknown"), ["ws1/s/1", "ws1/s/2"]);
    assert!(find("deferred").is_empty());
    // A deferral for the first: re-indexed as the committer does.
    let changed = store
        .ingest(&[line("ws1/s/3", "QA", "deferred")], 2)
        .unwrap();
    assert_eq!(changed, ["ws1/s/1"]);
    idx.add(&[a.clone()]).unwrap();
    idx.commit().unwrap();
    assert_eq!(find("deferred"), ["ws1/s/1"]);
    assert_eq!(find("unknown"), ["ws1/s/2"]);
    store
        .ingest(&[line("ws1/s/4", "QA", "bounced")], 3)
        .unwrap();
    idx.add(&[a]).unwrap();
    idx.commit().unwrap();
    assert_eq!(find("BOUNCED "), ["ws1/s/1"], "trimmed, any case");
    assert!(find("deferred").is_empty());
    let r = SearchRequest {
        delivery: "lost".into(),
        ..Default::default()
    };
    let err = idx.search(&r, 0, 10).unwrap_err().to_string();
    assert!(err.contains("unknown delivery status \"lost\""), "{err}");
    assert!(
        err.contains("delivered, deferred, bounced, expired, unknown"),
        "{err}"
    );
}
