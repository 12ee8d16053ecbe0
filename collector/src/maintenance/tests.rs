//! A run's part over a real store in a temporary directory: the whole
//! journal verified, a stopped part resumed where it stopped, events
//! missing from the index indexed again, a missing blob reported.

use std::sync::atomic::{AtomicUsize, Ordering};

use kiroku_proto::{EmailEvent, Event, MaintenanceReport, event};

use super::run::{End, Env, Part};
use super::state::{RunState, State};
use crate::holds::Holds;
use crate::retention::Retention;
use crate::store::Store;

fn ev(i: u64, raw: &str) -> Event {
    Event {
        event_id: format!("a/s/{i}"),
        agent_id: "a".into(),
        stream_id: "s".into(),
        seq: i,
        received_at_ms: 1_000 + i as i64,
        kind: Some(event::Kind::Email(EmailEvent {
            raw_sha256: raw.into(),
            ..EmailEvent::default()
        })),
        ..Event::default()
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    retention: std::sync::Arc<Retention>,
    holds: Holds,
    marks: crate::retention::marks::Marks,
    state: State,
}

fn fixture(n: u64, indexed: impl Fn(u64) -> bool) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    let events: Vec<Event> = (0..n).map(|i| ev(i, "")).collect();
    for chunk in events.chunks(100) {
        store.journal.append(chunk).expect("append");
    }
    let to_index: Vec<Event> = events.iter().filter(|e| indexed(e.seq)).cloned().collect();
    store.index.add(&to_index).expect("index");
    store.index.commit().expect("commit");
    let holds = Holds::open(&store.meta).expect("holds");
    let state = State::open(&store.meta).expect("state");
    let marks = crate::retention::marks::Marks::open(&store.meta).expect("marks");
    Fixture {
        marks,
        _dir: dir,
        retention: Retention::new(Default::default()),
        store,
        holds,
        state,
    }
}

fn new_run(f: &Fixture) -> RunState {
    RunState {
        run_id: "m-test".into(),
        end_leaf: f.store.journal.head().next_leaf,
        windows: 1,
        ..RunState::default()
    }
}

fn part_report(run: &RunState) -> MaintenanceReport {
    MaintenanceReport {
        run_id: run.run_id.clone(),
        from_leaf: run.next_leaf,
        to_leaf: run.next_leaf,
        ..MaintenanceReport::default()
    }
}

/// Runs a part that is stopped after `batches` batches (None: never).
fn run_part(
    f: &Fixture,
    run: RunState,
    batches: Option<usize>,
) -> (End, RunState, MaintenanceReport) {
    let calls = AtomicUsize::new(0);
    let stop = move || {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        batches
            .filter(|b| n >= *b)
            .map(|_| End::Stopped("test".into()))
    };
    let env = Env {
        store: &f.store,
        retention: &f.retention,
        holds: &f.holds,
        marks: &f.marks,
        state: &f.state,
        should_stop: &stop,
    };
    let report = part_report(&run);
    let mut part = Part::new(env, run, report);
    let end = part.go().expect("run");
    let r = part.summarised();
    (end, part.run.clone(), r)
}

#[test]
fn a_run_verifies_the_whole_journal() {
    let f = fixture(1200, |_| true);
    let (end, run, r) = run_part(&f, new_run(&f), None);
    assert_eq!(end, End::Complete);
    assert_eq!(r.verified, 1200);
    assert_eq!(run.next_leaf, 1200);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.repaired, 0);
    // Progress is durable.
    assert_eq!(
        f.state.run().expect("state").map(|r| r.next_leaf),
        Some(1200)
    );
}

#[test]
fn a_stopped_part_resumes_where_it_stopped() {
    let f = fixture(1200, |_| true);
    let (end, run, r1) = run_part(&f, new_run(&f), Some(1));
    assert_eq!(end, End::Stopped("test".into()));
    assert_eq!(r1.verified, 512);
    assert_eq!(run.next_leaf, 512);
    // The cursor as kept in meta, as a new process would read it.
    let kept = f.state.run().expect("state").expect("a run");
    assert_eq!(kept, run);
    let (end, run, r2) = run_part(&f, kept, None);
    assert_eq!(end, End::Complete);
    assert_eq!(r2.from_leaf, 512);
    assert_eq!(r2.verified, 1200 - 512);
    assert_eq!(run.next_leaf, 1200);
    assert!(r2.problems.is_empty(), "{:?}", r2.problems);
}

#[test]
fn events_missing_from_the_index_are_indexed_again() {
    let f = fixture(300, |seq| seq % 10 != 3);
    assert_eq!(f.store.index.count(), 270);
    let (end, _, r) = run_part(&f, new_run(&f), None);
    assert_eq!(end, End::Complete);
    assert_eq!(r.repaired, 30);
    assert_eq!(f.store.index.count(), 300);
    assert!(f.store.index.get("a/s/13").expect("get").is_some());
    let (_, _, again) = run_part(&f, new_run(&f), None);
    assert_eq!(again.repaired, 0, "nothing left to repair");
}

#[test]
fn a_missing_raw_message_is_a_problem_with_what_to_do() {
    let f = fixture(0, |_| true);
    let sha = "ab".repeat(32);
    f.store.journal.append(&[ev(1, &sha)]).expect("append");
    f.store.index.add(&[ev(1, &sha)]).expect("index");
    f.store.index.commit().expect("commit");
    let (_, _, r) = run_part(&f, new_run(&f), None);
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert!(r.problems[0].contains(&sha), "{}", r.problems[0]);
    assert!(r.problems[0].contains("restore"), "{}", r.problems[0]);
    assert_eq!(super::summary::severity(&r), "action");
}

#[test]
fn a_broken_link_is_reported() {
    let f = fixture(50, |_| true);
    // A run that believes the entry before leaf 10 hashed otherwise: the
    // link from leaf 10 does not hold.
    let mut run = new_run(&f);
    run.next_leaf = 10;
    run.last_hash = hex::encode([7u8; 32]);
    let (_, _, r) = run_part(&f, run, None);
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert!(r.problems[0].contains("entry 10"), "{}", r.problems[0]);
    assert_eq!(r.verified, 40);
}
