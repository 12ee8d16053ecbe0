use kiroku_proto::{EmailEvent, Event, event::Kind};

use super::*;
use crate::retention::policy::{Policy, Rules};

const D: i64 = 24 * 3600 * 1000;
const NOW: i64 = 1_796_000_000_000;

fn mail(seq: u64, group: &str, age_days: i64) -> Event {
    let t = NOW - age_days * D;
    Event {
        event_id: format!("host-1/mail/{seq}"),
        agent_id: "host-1".into(),
        stream_id: "mail".into(),
        seq,
        agent_group: group.into(),
        observed_at_ms: t,
        received_at_ms: t,
        kind: Some(Kind::Email(EmailEvent {
            mail_from: format!("u{seq}@corp.example"),
            subject: format!("mail {seq}"),
            ..Default::default()
        })),
        ..Default::default()
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    marks: Marks,
    policy: Policy,
}

fn fixture(events: &[Event]) -> Fixture {
    let dir = tempfile::tempdir().expect("store");
    let store = Store::open(dir.path()).expect("open");
    index_as_ingest(&store, events);
    let marks = Marks::open(&store.meta).expect("store");
    let policy = Policy::new(
        Rules::parse(
            "grace = \"1d\"\n[kind]\nemail = \"30d\"\n[[override]]\ngroup = \"legal\"\nperiod = \"5y\"\n",
        )
        .expect("store"),
    );
    Fixture {
        _dir: dir,
        store,
        marks,
        policy,
    }
}

/// Journals and indexes `events` with their provenance, as ingest does.
fn index_as_ingest(store: &Store, events: &[Event]) {
    use crate::store::journal::{Provenance, entry};
    let stored: Vec<_> = events.iter().map(entry::reencoded).collect();
    let sha: Vec<_> = stored.iter().map(|s| entry::sha256(&s.recorded)).collect();
    let leaves = store.journal.append_stored(stored).expect("journal");
    let provenance: Vec<Provenance> = leaves
        .iter()
        .zip(sha)
        .map(|(leaf, recorded_sha256)| Provenance {
            recorded_sha256,
            leaf: Some(*leaf),
            reencoded: true,
        })
        .collect();
    store
        .index
        .add_recorded(events, &provenance)
        .expect("index");
    store.index.commit().expect("commit");
}

fn held(ids: &[&str]) -> HeldSet {
    HeldSet {
        ids: ids.iter().map(|s| (*s).to_string()).collect(),
        holds: 1,
        generation: 1,
    }
}

#[test]
fn expired_events_are_marked_once_and_the_rest_left_alone() {
    // 1: old, expired; 2: young; 3: old but its group keeps 5y; 1 again
    // (the journal may hold an event twice).
    let events = vec![
        mail(1, "", 40),
        mail(2, "", 10),
        mail(3, "legal", 40),
        mail(1, "", 40),
    ];
    let f = fixture(&events);
    let r = step(
        &f.store,
        &f.policy,
        &f.marks,
        &HeldSet::default(),
        &events,
        NOW,
        false,
    );
    assert_eq!(
        (r.seen, r.expired, r.marked, r.due, r.purged),
        (3, 1, 1, 0, 0),
        "{r:?}"
    );
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    let m = f
        .marks
        .get("host-1/mail/1")
        .expect("store")
        .expect("marked");
    assert_eq!(m.marked_at_ms, NOW);
    assert_eq!(m.purge_after_ms, NOW + D);
    assert!(m.rule.contains("kind email 30d"), "{}", m.rule);
    // A second pass within the grace period: in grace, not marked again.
    let r = step(
        &f.store,
        &f.policy,
        &f.marks,
        &HeldSet::default(),
        &events,
        NOW + D / 2,
        false,
    );
    assert_eq!((r.marked, r.in_grace, r.due), (0, 1, 0), "{r:?}");
    assert_eq!(
        f.marks
            .get("host-1/mail/1")
            .expect("store")
            .expect("store")
            .purge_after_ms,
        NOW + D,
        "the grace period is not restarted"
    );
}

#[test]
fn protect_mode_decides_but_changes_nothing() {
    let events = vec![mail(1, "", 40), mail(2, "", 40)];
    let f = fixture(&events);
    f.marks
        .mark(&Mark {
            event_id: "host-1/mail/2".into(),
            marked_at_ms: NOW - 2 * D,
            purge_after_ms: NOW - D,
            rule: "kind email 30d".into(),
        })
        .expect("store");
    let r = step(
        &f.store,
        &f.policy,
        &f.marks,
        &HeldSet::default(),
        &events,
        NOW,
        true,
    );
    assert_eq!(
        (r.expired, r.marked, r.would_mark, r.due, r.purged),
        (2, 0, 1, 1, 0),
        "{r:?}"
    );
    assert!(f.marks.get("host-1/mail/1").expect("store").is_none());
    assert!(f.marks.get("host-1/mail/2").expect("store").is_some());
    assert_eq!(f.store.index.count(), 2, "nothing purged");
}

#[test]
fn a_hold_during_the_grace_period_saves_the_event() {
    let events = vec![mail(1, "", 40)];
    let f = fixture(&events);
    let none = HeldSet::default();
    let r = step(&f.store, &f.policy, &f.marks, &none, &events, NOW, false);
    assert_eq!(r.marked, 1);
    // The hold comes during the grace period.
    let h = held(&["host-1/mail/1"]);
    let r = step(
        &f.store,
        &f.policy,
        &f.marks,
        &h,
        &events,
        NOW + 2 * D,
        false,
    );
    assert_eq!(
        (r.held_back, r.unmarked, r.due, r.purged),
        (1, 1, 0, 0),
        "{r:?}"
    );
    assert!(f.marks.get("host-1/mail/1").expect("store").is_none());
    assert_eq!(f.store.index.count(), 1);
    // Held and expired but never marked: counted, not marked.
    let r = step(
        &f.store,
        &f.policy,
        &f.marks,
        &h,
        &events,
        NOW + 3 * D,
        false,
    );
    assert_eq!((r.held_back, r.marked), (1, 0), "{r:?}");
}

#[test]
fn a_longer_policy_unmarks_and_undo_exempts() {
    let events = vec![mail(1, "", 40), mail(2, "", 40)];
    let f = fixture(&events);
    let none = HeldSet::default();
    step(&f.store, &f.policy, &f.marks, &none, &events, NOW, false);
    assert_eq!(f.marks.count(), 2);
    // The admin lengthens the policy: the marks go.
    let longer = Policy::new(Rules::parse("[kind]\nemail = \"1y\"\n").expect("store"));
    let r = step(
        &f.store,
        &longer,
        &f.marks,
        &none,
        &events,
        NOW + D / 2,
        false,
    );
    assert_eq!((r.unmarked, r.expired), (2, 0), "{r:?}");
    assert_eq!(f.marks.count(), 0);
    // Undo of event 2 (as `kiroku purge undo` does): exempt for a while.
    f.marks
        .exempt("host-1/mail/2", NOW + 30 * D)
        .expect("store");
    let r = step(
        &f.store,
        &f.policy,
        &f.marks,
        &none,
        &events,
        NOW + D,
        false,
    );
    assert_eq!((r.marked, r.exempt), (1, 1), "{r:?}");
    assert!(f.marks.get("host-1/mail/2").expect("store").is_none());
}

#[test]
fn due_events_whose_index_copy_is_no_longer_expired_are_kept() {
    // The journal's copy has no tag; the index's copy was tagged by an
    // alert since (a rule keeping alerts 10y).
    let journalled = mail(1, "", 40);
    let mut indexed = journalled.clone();
    indexed.tags.push("alert:usb".into());
    let f = fixture(std::slice::from_ref(&journalled));
    index_as_ingest(&f.store, std::slice::from_ref(&indexed));
    let policy = Policy::new(
        Rules::parse(
            "[kind]\nemail = \"30d\"\n[[override]]\ntag = \"alert:*\"\nperiod = \"10y\"\n",
        )
        .expect("store"),
    );
    let none = HeldSet::default();
    let events = vec![journalled];
    step(&f.store, &policy, &f.marks, &none, &events, NOW, false);
    let r = step(
        &f.store,
        &policy,
        &f.marks,
        &none,
        &events,
        NOW + 2 * D,
        false,
    );
    assert_eq!((r.due, r.unmarked, r.purged), (0, 1, 0), "{r:?}");
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(f.store.index.count(), 1);
}

#[test]
fn due_events_are_purged_after_the_grace_period_and_the_rest_stay() {
    let events = vec![mail(1, "", 40), mail(2, "", 10), mail(3, "", 40)];
    let f = fixture(&events);
    let none = HeldSet::default();
    let held3 = held(&["host-1/mail/3"]);
    let r = step(&f.store, &f.policy, &f.marks, &none, &events, NOW, false);
    assert_eq!(r.marked, 2, "{r:?}");
    // Before the grace period ends: nothing purged.
    let r = step(
        &f.store,
        &f.policy,
        &f.marks,
        &held3,
        &events,
        NOW + D - 1,
        false,
    );
    assert_eq!((r.due, r.purged, r.held_back), (0, 0, 1), "{r:?}");
    // After: event 1 purged, 3 held (unmarked), 2 young.
    let r = step(
        &f.store,
        &f.policy,
        &f.marks,
        &held3,
        &events,
        NOW + D,
        false,
    );
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert!(r.deferred.is_empty(), "{:?}", r.deferred);
    assert_eq!((r.due, r.purged), (1, 1), "{r:?}");
    assert!(r.bytes_freed > 0, "{r:?}");
    assert!(f.store.index.get("host-1/mail/1").expect("store").is_none());
    assert!(f.store.index.get("host-1/mail/2").expect("store").is_some());
    assert!(f.store.index.get("host-1/mail/3").expect("store").is_some());
    assert!(
        f.marks.get("host-1/mail/1").expect("store").is_none(),
        "mark forgotten"
    );
    assert_eq!(f.marks.count(), 0, "3 was unmarked by its hold");
}
