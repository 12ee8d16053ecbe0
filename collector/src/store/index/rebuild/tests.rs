use std::sync::atomic::AtomicU64;

use kiroku_proto::event::Kind;
use kiroku_proto::{EmailEvent, Event, SearchRequest};
use prost::Message;
use tantivy::schema::{STORED, STRING, Schema};
use tantivy::{Index, IndexWriter, TantivyDocument};

use super::carry_over::carry_over;
use super::*;
use crate::store::journal::Journal;

fn mail(id: &str, at: i64, from: &str) -> Event {
    Event {
        event_id: id.into(),
        agent_id: "a".into(),
        stream_id: "s".into(),
        observed_at_ms: at,
        kind: Some(Kind::Email(EmailEvent {
            mail_from: from.into(),
            subject: format!("subject of {id}"),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// A data directory as the previous collector left it: the journal and an
/// index of the same schema without a version file (version 1).
fn previous(dir: &Path, events: &[Event]) -> Journal {
    let journal = Journal::open(&dir.join("journal")).expect("journal");
    journal.append(events).expect("append");
    let idx = EventIndex::create(&dir.join("index")).expect("create");
    idx.add(events).expect("add");
    idx.commit().expect("commit");
    drop(idx);
    std::fs::remove_file(dir.join("index").join(VERSION_FILE)).expect("no version");
    journal
}

fn ids(idx: &EventIndex, r: &SearchRequest) -> Vec<String> {
    let (found, _, _) = idx.search(r, 0, 100).expect("search");
    let mut v: Vec<String> = found.into_iter().map(|e| e.event_id).collect();
    v.sort();
    v
}

fn by_sender(s: &str) -> SearchRequest {
    SearchRequest {
        sender: s.into(),
        ..Default::default()
    }
}

fn aside(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("ls")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains("index.pre-"))
        .collect()
}

#[test]
fn the_old_index_serves_while_the_new_one_is_built_resumed_and_switched_in() {
    let d = tempfile::tempdir().expect("tempdir");
    let old: Vec<Event> = (1..=10)
        .map(|i| mail(&format!("a/s/{i}"), 1000 + i, "alice@corp.example"))
        .collect();
    let journal = previous(d.path(), &old);
    let path = d.path().join("index");

    let idx = EventIndex::open(&path).expect("open");
    assert!(!idx.serving().is_current(), "version 1 is not current");
    let mut job = idx
        .prepare_rebuild(&journal)
        .expect("prepare")
        .expect("a rebuild is needed");
    job.batch = 3;
    assert_eq!(job.step(&idx.shared).expect("step"), Step::Batch);
    assert_eq!(job.progress.events, 3);
    // The old index answers; a new event goes into the new index, where
    // GetEvent finds it at once, while searches see it after the switch.
    assert_eq!(ids(&idx, &by_sender("alice@corp.example")).len(), 10);
    let fresh = mail("b/s/1", 5000, "bob@corp.example");
    journal
        .append(std::slice::from_ref(&fresh))
        .expect("append");
    idx.add(std::slice::from_ref(&fresh)).expect("add");
    idx.commit().expect("commit");
    assert!(idx.get("b/s/1").expect("get").is_some(), "in the new index");
    assert!(idx.get("a/s/7").expect("get").is_some(), "in the old index");
    assert!(ids(&idx, &by_sender("bob@corp.example")).is_empty());
    let s = job.status(RebuildState::Rebuilding, String::new());
    assert!(s.percent > 0.0 && s.percent < 100.0, "{s:?}");
    assert_eq!((s.events_done, s.events_total), (3, 10));

    // A crash: the next start resumes from the last commit's position.
    drop(job);
    drop(idx);
    let idx = EventIndex::open(&path).expect("reopen");
    let mut job = idx
        .prepare_rebuild(&journal)
        .expect("prepare")
        .expect("still needed");
    assert_eq!(job.progress.events, 3, "resumed, not restarted");
    job.batch = 4;
    let mut steps = 0;
    while job.step(&idx.shared).expect("step") == Step::Batch {
        steps += 1;
    }
    assert_eq!(steps, 2, "the eight events left, in batches of four");
    assert_eq!(
        job.progress.events, 11,
        "the journal up to this start's end, b/s/1 included"
    );
    let kept = idx.shared.switch().expect("switch");

    assert!(kept.join("meta.json").exists(), "the old index is kept");
    assert!(!next_path(&path).exists());
    assert_eq!(read_version(&path), SCHEMA_VERSION);
    assert!(idx.serving().is_current());
    assert_eq!(idx.count(), 11, "each event once");
    assert_eq!(ids(&idx, &by_sender("bob@corp.example")), ["b/s/1"]);
    assert_eq!(ids(&idx, &by_sender("alice@corp.example")).len(), 10);
    let later = mail("b/s/2", 6000, "bob@corp.example");
    idx.add(std::slice::from_ref(&later))
        .expect("add after the switch");
    idx.commit().expect("commit");
    assert_eq!(ids(&idx, &by_sender("bob@corp.example")).len(), 2);
    drop(idx);

    let idx = EventIndex::open(&path).expect("reopen");
    assert!(idx.serving().is_current());
    assert!(idx.prepare_rebuild(&journal).expect("prepare").is_none());
    assert_eq!(idx.count(), 12);
}

#[test]
fn a_crash_between_the_renames_is_finished_at_the_next_open() {
    let d = tempfile::tempdir().expect("tempdir");
    let old = [mail("a/s/1", 1000, "alice@corp.example")];
    let journal = previous(d.path(), &old);
    let path = d.path().join("index");
    let idx = EventIndex::open(&path).expect("open");
    let mut job = idx
        .prepare_rebuild(&journal)
        .expect("prepare")
        .expect("job");
    // Not complete yet: without the old index, it is not moved in.
    assert_eq!(job.step(&idx.shared).expect("step"), Step::Batch);
    let building = job.building.clone();
    drop(job);
    drop(idx);
    let moved = path.with_extension("pre-test");
    std::fs::rename(&path, &moved).expect("rename");
    finish_interrupted_switch(&path);
    assert!(!path.exists(), "an incomplete rebuild is not put in place");
    std::fs::rename(&moved, &path).expect("rename back");

    // Complete (its last commit says so), the old one moved aside, the
    // crash before the second rename.
    building.set_progress(&Progress {
        complete: true,
        ..Progress::of(&building).expect("progress")
    });
    building.commit().expect("commit");
    drop(building);
    std::fs::rename(&path, &moved).expect("rename");
    let idx = EventIndex::open(&path).expect("open");
    assert!(idx.serving().is_current(), "the complete rebuild took over");
    assert_eq!(
        idx.get("a/s/1")
            .expect("get")
            .map(|e| e.event_id)
            .as_deref(),
        Some("a/s/1")
    );
    assert!(!next_path(&path).exists());
    assert_eq!(
        aside(d.path()),
        [moved],
        "the old index is where it was moved"
    );
}

#[test]
fn the_rebuild_pauses_below_the_reserve_and_resumes_when_space_returns() {
    let d = tempfile::tempdir().expect("tempdir");
    let journal = previous(d.path(), &[mail("a/s/1", 1000, "alice@corp.example")]);
    let idx = EventIndex::open(&d.path().join("index")).expect("open");
    let room = Arc::new(AtomicU64::new(0));
    let r = room.clone();
    idx.limit_merges(Arc::new(move || Some(r.load(Ordering::Relaxed))));
    let mut job = idx
        .prepare_rebuild(&journal)
        .expect("prepare")
        .expect("job");
    match job.step(&idx.shared).expect("step") {
        Step::Paused(why) => assert!(why.contains("min_free_bytes"), "{why}"),
        other => panic!("not paused: {other:?}"),
    }
    assert_eq!(job.progress.events, 0);
    room.store(u64::MAX, Ordering::Relaxed);
    assert_eq!(job.step(&idx.shared).expect("step"), Step::Batch);
    assert_eq!(job.step(&idx.shared).expect("step"), Step::CaughtUp);
}

#[test]
fn an_index_with_fewer_fields_answers_what_it_has_until_rebuilt() {
    let d = tempfile::tempdir().expect("tempdir");
    let path = d.path().join("index");
    let e = mail("f/s/1", 1000, "alice@corp.example");
    {
        // What a much older collector wrote: two fields.
        let mut b = Schema::builder();
        let id = b.add_text_field("event_id", STRING | STORED);
        let event = b.add_bytes_field("event", STORED);
        std::fs::create_dir_all(&path).expect("mkdir");
        let index = Index::create_in_dir(&path, b.build()).expect("create");
        let mut w: IndexWriter = index
            .writer_with_num_threads(1, 15_000_000)
            .expect("writer");
        let mut doc = TantivyDocument::default();
        doc.add_text(id, &e.event_id);
        doc.add_bytes(event, &e.encode_to_vec());
        w.add_document(doc).expect("add");
        w.commit().expect("commit");
    }
    let journal = Journal::open(&d.path().join("journal")).expect("journal");
    journal.append(std::slice::from_ref(&e)).expect("append");
    let idx = EventIndex::open(&path).expect("open");
    assert!(idx.get("f/s/1").expect("get").is_some());
    match idx.search(&by_sender("alice@corp.example"), 0, 10) {
        Err(IndexError::NeedsRebuild { what, percent: 0 }) => {
            assert_eq!(what, "ordering by this time")
        }
        other => panic!("not refused: {other:?}"),
    }
    assert!(matches!(
        idx.require_current("an aggregation"),
        Err(IndexError::NeedsRebuild { .. })
    ));
    let mut job = idx
        .prepare_rebuild(&journal)
        .expect("prepare")
        .expect("job");
    while job.step(&idx.shared).expect("step") == Step::Batch {}
    idx.shared.switch().expect("switch");
    assert_eq!(ids(&idx, &by_sender("alice@corp.example")), ["f/s/1"]);
    assert!(idx.require_current("an aggregation").is_ok());
}

#[test]
fn a_successor_of_another_version_is_started_over() {
    let d = tempfile::tempdir().expect("tempdir");
    let journal = previous(d.path(), &[mail("a/s/1", 1000, "alice@corp.example")]);
    let path = d.path().join("index");
    let idx = EventIndex::open(&path).expect("open");
    let mut job = idx
        .prepare_rebuild(&journal)
        .expect("prepare")
        .expect("job");
    assert_eq!(job.step(&idx.shared).expect("step"), Step::Batch);
    drop(job);
    drop(idx);
    write_version(&next_path(&path), SCHEMA_VERSION + 1).expect("version");
    let idx = EventIndex::open(&path).expect("open");
    let job = idx
        .prepare_rebuild(&journal)
        .expect("prepare")
        .expect("job");
    assert_eq!(job.progress, Progress::default(), "started over");
}

#[test]
fn events_only_the_old_index_holds_are_carried_over_before_the_switch() {
    let d = tempfile::tempdir().expect("tempdir");
    let all: Vec<Event> = (1..=7)
        .map(|i| mail(&format!("a/s/{i}"), 1000 + i, "alice@corp.example"))
        .collect();
    // The journal lost two of the old index's events (damage it skipped,
    // or a data directory from before the journal).
    let journal = Journal::open(&d.path().join("journal")).expect("journal");
    journal.append(&all[..5]).expect("append");
    let path = d.path().join("index");
    {
        let idx = EventIndex::create(&path).expect("create");
        idx.add(&all).expect("add");
        idx.commit().expect("commit");
    }
    std::fs::remove_file(path.join(VERSION_FILE)).expect("no version");
    let idx = EventIndex::open(&path).expect("open");
    assert_eq!(idx.count(), 7, "the old index holds seven");
    let mut job = idx
        .prepare_rebuild(&journal)
        .expect("prepare")
        .expect("a rebuild is needed");
    while job.step(&idx.shared).expect("step") == Step::Batch {}
    assert_eq!(job.progress.events, 5, "the journal has five");
    assert_eq!(carry_over(&idx.shared, &job.building).expect("carry"), 2);
    idx.shared.switch().expect("switch");
    assert_eq!(idx.count(), 7, "nothing the old index answered is lost");
    assert!(idx.get("a/s/6").expect("get").is_some());
    assert_eq!(carry_over(&idx.shared, &idx.serving()).expect("again"), 0);
}

/// The rebuild indexes each event with its derived fields from the
/// annotation store (the source the store sets), never by analysing again:
/// a file found inside a mail is searchable by hash, name and tag after
/// the switch, and the source was asked once per event.
#[test]
fn the_rebuild_takes_derived_fields_from_the_annotation_store() {
    use kiroku_proto::{Annotations, ArchiveMember, AttachmentAnalysis};
    let d = tempfile::tempdir().expect("tempdir");
    let old: Vec<Event> = (1..=3)
        .map(|i| mail(&format!("a/s/{i}"), 1000 + i, "alice@corp.example"))
        .collect();
    let journal = previous(d.path(), &old);
    let path = d.path().join("index");
    let idx = EventIndex::open(&path).expect("open");
    let member = "ab".repeat(32);
    let asked = Arc::new(AtomicU64::new(0));
    let (m, n) = (member.clone(), asked.clone());
    idx.set_derived(Arc::new(move |e: &Event| {
        n.fetch_add(1, Ordering::Relaxed);
        (e.event_id == "a/s/2").then(|| super::super::Derived {
            annotations: Annotations {
                event_id: e.event_id.clone(),
                tags: vec!["type-mismatch".into()],
                attachments: vec![AttachmentAnalysis {
                    name: "plan.zip".into(),
                    members: vec![ArchiveMember {
                        path: "hr/payroll.xlsx".into(),
                        sha256: m.clone(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            },
            texts: Vec::new(),
            delivery: String::new(),
        })
    }));
    let mut job = idx
        .prepare_rebuild(&journal)
        .expect("prepare")
        .expect("a rebuild is needed");
    while job.step(&idx.shared).expect("step") == Step::Batch {}
    idx.shared.switch().expect("switch");
    let want = vec!["a/s/2".to_owned()];
    for r in [
        SearchRequest {
            sha256: member.clone(),
            ..Default::default()
        },
        SearchRequest {
            tag: "type-mismatch".into(),
            ..Default::default()
        },
        SearchRequest {
            attachment_name: "payroll.xlsx".into(),
            ..Default::default()
        },
    ] {
        assert_eq!(ids(&idx, &r), want, "{r:?}");
    }
    assert_eq!(asked.load(Ordering::Relaxed), 3, "once per event");
}
