//! The checks of `verify` that need a store: the index against the
//! journal (what the end-to-end tamper tests leave to the index being
//! right), and the options narrowing them.

use kiroku_proto::{EmailEvent, Event, VerifyFinding, event::Kind, verify_response};

use super::{Options, run};
use crate::store::Store;

fn mail(seq: u64, subject: &str) -> Event {
    Event {
        event_id: format!("pc/s/{seq}"),
        agent_id: "pc".into(),
        stream_id: "s".into(),
        seq,
        received_at_ms: 1_000 + seq as i64,
        kind: Some(Kind::Email(EmailEvent {
            subject: subject.into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// A store with `n` mails journalled and indexed as ingest does.
fn store(dir: &std::path::Path, n: u64) -> Store {
    let s = Store::open(dir).expect("open");
    let events: Vec<Event> = (1..=n).map(|i| mail(i, &format!("seed {i}"))).collect();
    s.journal.append(&events).expect("journal");
    s.index.add(&events).expect("index");
    s.index.commit().expect("commit");
    s
}

fn findings(s: &Store, opts: &Options) -> Vec<VerifyFinding> {
    let mut out = Vec::new();
    let summary = run(s, None, None, opts, &mut |m| {
        if let Some(verify_response::Msg::Finding(f)) = m.msg {
            out.push(f);
        }
    })
    .expect("verify");
    assert_eq!(
        summary.alterations,
        out.iter().filter(|f| f.alteration).count() as u64
    );
    out
}

#[test]
fn an_intact_store_has_no_findings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(dir.path(), 5);
    assert_eq!(findings(&s, &Options::default()), vec![]);
}

#[test]
fn the_index_serving_other_content_than_the_journal_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(dir.path(), 5);
    // The forged subject of the outside review, in the index only.
    s.index.add(&[mail(3, "PWND 3")]).expect("add");
    s.index.commit().expect("commit");
    let f = findings(&s, &Options::default());
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(
        (f[0].what.as_str(), f[0].event_id.as_str(), f[0].alteration),
        ("index_mismatch", "pc/s/3", true)
    );
    // Tags are the collector's (alerts added later): not compared.
    let mut tagged = mail(3, "seed 3");
    tagged.tags.push("alert:usb".into());
    s.index.add(&[tagged]).expect("add");
    s.index.commit().expect("commit");
    assert_eq!(findings(&s, &Options::default()), vec![]);
}

#[test]
fn an_event_only_the_index_holds_is_named_and_the_options_narrow_the_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(dir.path(), 5);
    s.index.add(&[mail(99, "invented")]).expect("add");
    s.index.commit().expect("commit");
    let f = findings(&s, &Options::default());
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(
        (f[0].what.as_str(), f[0].event_id.as_str()),
        ("index_mismatch", "pc/s/99")
    );
    // Limited to another agent, nothing of this one is checked.
    let other = Options {
        agent_id: "elsewhere".into(),
        ..Default::default()
    };
    assert_eq!(findings(&s, &other), vec![]);
    // --skip-index leaves the index alone.
    let skip = Options {
        skip_index: true,
        ..Default::default()
    };
    assert_eq!(findings(&s, &skip), vec![]);
}

#[test]
fn events_journalled_after_the_last_indexed_are_not_indexed_yet_not_altered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(dir.path(), 5);
    // Journalled, never indexed: a crash between journal and index commit.
    s.journal
        .append(&[mail(6, "seed 6"), mail(7, "seed 7")])
        .expect("journal");
    let f = findings(&s, &Options::default());
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(
        (f[0].what.as_str(), f[0].alteration),
        ("not_indexed_yet", false)
    );
    assert!(f[0].detail.contains("last 2"), "{f:#?}");
}
