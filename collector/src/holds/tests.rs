//! Holds on a real store: what a hold covers, ids, release by id and by
//! case, the generation, and the audit-first order.

use kiroku_proto::{EmailEvent, Event, FileEvent, SearchRequest, event::Kind};

use super::{Holds, ReleaseError, describe_filter, filter_is_empty};
use crate::store::Store;

fn mail(seq: u64, user: &str) -> Event {
    Event {
        event_id: format!("pc/s/{seq}"),
        agent_id: "pc".into(),
        stream_id: "s".into(),
        seq,
        user: user.into(),
        received_at_ms: 1_000 + seq as i64,
        kind: Some(Kind::Email(EmailEvent {
            subject: format!("mail {seq}"),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn file(seq: u64, user: &str) -> Event {
    Event {
        event_id: format!("pc/f/{seq}"),
        agent_id: "pc".into(),
        stream_id: "f".into(),
        seq,
        user: user.into(),
        received_at_ms: 5_000 + seq as i64,
        kind: Some(Kind::File(FileEvent {
            path: format!("/home/{user}/doc{seq}.txt"),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn store(dir: &std::path::Path) -> Store {
    let s = Store::open(dir).expect("open");
    let mut events: Vec<Event> = (1..=6)
        .map(|i| mail(i, if i % 2 == 0 { "alice" } else { "bob" }))
        .collect();
    events.extend((1..=3).map(|i| file(i, "alice")));
    s.journal.append(&events).expect("journal");
    s.index.add(&events).expect("index");
    s.index.commit().expect("commit");
    s
}

fn user(u: &str) -> SearchRequest {
    SearchRequest {
        user: u.into(),
        ..Default::default()
    }
}

fn sorted(set: &super::HeldSet) -> Vec<String> {
    let mut v: Vec<String> = set.ids.iter().cloned().collect();
    v.sort();
    v
}

#[test]
fn a_hold_covers_what_its_filter_matches_and_release_ends_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(dir.path());
    let holds = Holds::open(&s.meta).expect("holds");
    assert!(holds.held_set(&s).expect("empty set").ids.is_empty());
    let g0 = holds.generation();

    let mut audited = Vec::new();
    let h1 = holds
        .create(
            "case A",
            "litigation",
            SearchRequest {
                kind: "email".into(),
                ..user("alice")
            },
            "investigator/ivy",
            |h| {
                audited.push(h.id.clone());
                Ok(())
            },
        )
        .expect("create");
    assert_eq!(h1.id, "h-1");
    assert_eq!(audited, ["h-1"]);
    assert_ne!(holds.generation(), g0);
    let set = holds.held_set(&s).expect("set");
    assert_eq!(sorted(&set), ["pc/s/2", "pc/s/4", "pc/s/6"]);
    assert!(set.is_held("pc/s/4") && !set.is_held("pc/f/1"));
    assert_eq!(set.holds, 1);
    assert!(holds.is_current(&set));

    // A second hold of the same case: its events join the set; an event
    // that arrives later and matches is held too.
    let h2 = holds
        .create(
            "case A",
            "files too",
            user("alice"),
            "admin/ann",
            |_| Ok(()),
        )
        .expect("create");
    assert_eq!(h2.id, "h-2");
    assert!(!holds.is_current(&set));
    let later = [file(9, "alice")];
    s.journal.append(&later).expect("journal");
    s.index.add(&later).expect("index");
    s.index.commit().expect("commit");
    let set = holds.held_set(&s).expect("set");
    assert_eq!(set.ids.len(), 7, "{:?}", sorted(&set));
    assert!(set.is_held("pc/f/9"));

    // Release by id, then by case name (what is left of it).
    let r = holds
        .release("h-1", "settled", "admin/ann", |_| Ok(()))
        .expect("release");
    assert_eq!(r.len(), 1);
    assert_eq!(
        (
            r[0].released_by.as_str(),
            r[0].release_reason.as_str(),
            r[0].released_at_ms > 0
        ),
        ("admin/ann", "settled", true)
    );
    assert_eq!(holds.in_force().expect("in force").len(), 1);
    let r = holds
        .release("case A", "closed", "admin/ann", |_| Ok(()))
        .expect("release case");
    assert_eq!(r.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(), ["h-2"]);
    assert!(holds.held_set(&s).expect("set").ids.is_empty());
    assert_eq!(
        holds.all().expect("all").len(),
        2,
        "released holds are kept"
    );
    assert!(matches!(
        holds.release("case A", "again", "admin/ann", |_| Ok(())),
        Err(ReleaseError::AlreadyReleased(_))
    ));
    assert!(matches!(
        holds.release("h-7", "no such", "admin/ann", |_| Ok(())),
        Err(ReleaseError::NotFound(_))
    ));
}

#[test]
fn an_audit_failure_changes_nothing_and_ids_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = store(dir.path());
        let holds = Holds::open(&s.meta).expect("holds");
        let e = holds
            .create("c", "r", user("bob"), "admin/ann", |_| {
                anyhow::bail!("audit log full")
            })
            .expect_err("refused");
        assert!(e.to_string().contains("audit log full"));
        assert!(holds.all().expect("all").is_empty());
        holds
            .create("c", "r", user("bob"), "admin/ann", |_| Ok(()))
            .expect("create");
        let e = holds
            .release("c", "done", "admin/ann", |_| anyhow::bail!("disk"))
            .expect_err("refused");
        assert!(matches!(e, ReleaseError::Store(_)));
        assert_eq!(holds.in_force().expect("in force").len(), 1);
    }
    let s = Store::open(dir.path()).expect("reopen");
    let holds = Holds::open(&s.meta).expect("holds");
    assert_eq!(holds.in_force().expect("in force").len(), 1);
    let h = holds
        .create("d", "r", user("alice"), "admin/ann", |_| Ok(()))
        .expect("create");
    // The id refused by the audit failure is not reused either way: ids
    // only grow.
    assert_eq!(h.id, "h-3");
    assert_eq!(holds.held_set(&s).expect("set").ids.len(), 3 + 6);
}

#[test]
fn filters_a_hold_keeps_and_shows() {
    for (f, empty) in [
        (SearchRequest::default(), true),
        (
            SearchRequest {
                page_size: 10,
                page_token: "50".into(),
                ascending: true,
                corrected_time: true,
                ..Default::default()
            },
            true,
        ),
        (user("alice"), false),
        (
            SearchRequest {
                from_ms: 1,
                ..Default::default()
            },
            false,
        ),
        (
            SearchRequest {
                removable: true,
                ..Default::default()
            },
            false,
        ),
    ] {
        assert_eq!(filter_is_empty(&f), empty, "{f:?}");
    }
    let d = describe_filter(&SearchRequest {
        page_size: 5,
        from_ms: 1_700_000_000_000,
        has_attachment: true,
        ..user("alice")
    });
    assert_eq!(
        d,
        r#"{"from_ms":1700000000000,"has_attachment":true,"user":"alice"}"#
    );
}
