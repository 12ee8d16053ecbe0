//! The password-notice wording, and the pairing through the alert engine
//! as the analysis worker drives it, in both orders of arrival.

use std::path::Path;

use kiroku_common::mail::InternalDomains;
use kiroku_proto::{AttachmentAnalysis, EmailEvent, Recipient};

use super::*;
use crate::alerts::{Alerting, RuleSet};
use crate::store::meta::MetaStore;

#[test]
fn password_notices_are_short_and_worded_so() {
    let s = PpapSettings::new(None, &[], None).expect("defaults");
    let cases: &[(&str, &str, bool)] = &[
        (
            "パスワードのお知らせ",
            "先ほどお送りしたファイルの件です。",
            true,
        ),
        ("Re: 見積書", "解凍用: Xy7#pQ", true),
        ("", "暗号化ZIPのPWは別途", true),
        ("password", "", true),
        ("files", "The PW is hunter2", true),
        ("files", "pwd: hunter2", true),
        // Full-width and half-width forms, as Japanese mail has them.
        ("", "ＰＷ：ｈｕｎｔｅｒ２", true),
        ("", "ﾊﾟｽﾜｰﾄﾞ: abc", true),
        ("Re: meeting", "See you at 3.", false),
        ("pwned", "pwnage", false),
        ("見積書", "よろしくお願いいたします。", false),
    ];
    for (subject, body, want) in cases {
        assert_eq!(
            s.is_password_notice(subject, body),
            *want,
            "{subject:?} / {body:?}"
        );
    }
    let long = format!("password: x\n{}", "signature line\n".repeat(100));
    assert!(!s.is_password_notice("", &long), "a long body is no notice");
    let own = PpapSettings::new(Some(5.0), &["kennwort".into()], Some(50)).expect("own");
    assert_eq!(own.window_ms, 5 * 60_000);
    assert!(own.is_password_notice("", "Das Kennwort: x"));
    assert!(!own.is_password_notice("", "password: x"));
    for (w, p, m, field) in [
        (Some(0.0), vec![], None, "window_minutes"),
        (Some(20_000.0), vec![], None, "window_minutes"),
        (None, vec!["(".to_owned()], None, "password_patterns"),
        (None, vec![], Some(0), "max_body_chars"),
    ] {
        let err = PpapSettings::new(w, &p, m).expect_err(field);
        assert_eq!(err.0, field);
    }
}

const RULES: &str = r#"
[[rule]]
name = "enc-out"
kind = "encrypted_attachment"
internal_domains = ["corp.example"]

[[rule]]
name = "ppap"
kind = "ppap"
window_minutes = 30
"#;

fn engine() -> (tempfile::TempDir, Alerting) {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = MetaStore::open(&dir.path().join("meta")).expect("meta");
    let set =
        RuleSet::parse(Path::new("rules.toml"), RULES, &InternalDomains::default()).expect("rules");
    let a = Alerting::new(&meta, set, Vec::new(), 100).expect("engine");
    (dir, a)
}

const MIN: i64 = 60_000;

/// A mail from `from` to `to` sent `minute` minutes in, with an
/// encrypted archive or a body.
fn mail(
    id: &str,
    from: &str,
    to: &[&str],
    minute: i64,
    body: &str,
    encrypted: bool,
) -> (Event, Annotations) {
    let e = Event {
        event_id: id.into(),
        observed_at_ms: 1_700_000_000_000 + minute * MIN,
        user: from.split('@').next().unwrap_or_default().into(),
        kind: Some(Kind::Email(EmailEvent {
            mail_from: from.into(),
            rcpt_to: to
                .iter()
                .map(|a| Recipient {
                    address: (*a).into(),
                    reply_code: 250,
                    ..Default::default()
                })
                .collect(),
            subject: "見積書".into(),
            body_text: body.into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    let a = Annotations {
        event_id: id.into(),
        attachments: vec![AttachmentAnalysis {
            name: "見積書.zip".into(),
            container: "zip".into(),
            encrypted,
            encryption: if encrypted {
                "zipcrypto".into()
            } else {
                String::new()
            },
            ..Default::default()
        }],
        ..Default::default()
    };
    (e, a)
}

/// Feeds the mails in order; the alerts fired (kind, event) and the tags
/// and links derived.
fn run(a: &Alerting, mails: &[(Event, Annotations)]) -> (Vec<(String, String)>, Derived) {
    let mut rx = a.subscribe();
    let mut all = Derived::default();
    for (e, ann) in mails {
        let done = a.analysed(e, ann).expect("analysed");
        all.tags.extend(done.derived.tags);
        all.links.extend(done.derived.links);
        a.dispatch(done.alerts);
    }
    let mut fired = Vec::new();
    while let Ok(alert) = rx.try_recv() {
        fired.push((alert.kind, alert.event_id));
    }
    (fired, all)
}

const PW: &str = "先ほどのファイルのパスワードは Xy7#pQ です。";

#[test]
fn a_pair_fires_once_in_either_order_and_links_both() {
    let archive = mail(
        "A",
        "alice@corp.example",
        &["bob@partner.example"],
        0,
        "ご確認ください。",
        true,
    );
    let notice = mail(
        "N",
        "Alice@Corp.Example",
        &["bob@partner.example", "carol@corp.example"],
        3,
        PW,
        false,
    );
    for order in [[&archive, &notice], [&notice, &archive]] {
        let (_d, a) = engine();
        let mails: Vec<_> = order.iter().map(|m| (*m).clone()).collect();
        let (fired, derived) = run(&a, &mails);
        let ppap: Vec<_> = fired.iter().filter(|f| f.0 == "ppap").collect();
        assert_eq!(ppap.len(), 1, "{fired:?}");
        assert_eq!(
            fired
                .iter()
                .filter(|f| f.0 == "encrypted_attachment")
                .count(),
            1,
            "the archive went outside: {fired:?}"
        );
        for id in ["A", "N"] {
            assert!(
                derived.tags.contains(&(id.into(), "ppap".into())),
                "{id}: {derived:?}"
            );
        }
        assert!(derived.links.contains(&(
            "A".into(),
            Link {
                event_id: "N".into(),
                reason: "ppap: password notice in N".into()
            }
        )));
        assert!(derived.links.contains(&(
            "N".into(),
            Link {
                event_id: "A".into(),
                reason: "ppap: password notice for A".into()
            }
        )));
        // Analysed again (reanalyse, a worker restarted mid-way): nothing
        // fires twice, the tags and links come again.
        let (again, again_derived) = run(&a, &mails);
        assert!(again.is_empty(), "{again:?}");
        let mut links = again_derived.links.clone();
        let mut first = derived.links.clone();
        links.sort_by(|x, y| x.0.cmp(&y.0));
        first.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(links, first);
    }
}

#[test]
fn unrelated_mails_do_not_pair() {
    let to = ["bob@partner.example"];
    let alice = "alice@corp.example";
    let archive = || mail("A", alice, &to, 0, "", true);
    let cases: Vec<(&str, (Event, Annotations))> = vec![
        (
            "other recipients",
            mail("N", alice, &["dave@x.example"], 2, PW, false),
        ),
        ("after the window", mail("N", alice, &to, 31, PW, false)),
        ("before the archive", mail("N", alice, &to, -1, PW, false)),
        (
            "another sender",
            mail("N", "eve@corp.example", &to, 2, PW, false),
        ),
        (
            "no password wording",
            mail("N", alice, &to, 2, "ありがとうございました。", false),
        ),
        ("a second archive", mail("N", alice, &to, 2, PW, true)),
    ];
    for (why, other) in cases {
        for order in [[archive(), other.clone()], [other.clone(), archive()]] {
            let (_d, a) = engine();
            let (fired, _) = run(&a, &order);
            assert!(!fired.iter().any(|f| f.0 == "ppap"), "{why}: {fired:?}");
        }
    }
    // Two notices for one archive: one pair.
    let (_d, a) = engine();
    let (fired, _) = run(
        &a,
        &[
            archive(),
            mail("N1", alice, &to, 1, PW, false),
            mail("N2", alice, &to, 2, PW, false),
        ],
    );
    assert_eq!(
        fired.iter().filter(|f| f.0 == "ppap").count(),
        1,
        "{fired:?}"
    );
}

#[test]
fn encrypted_attachment_fires_for_outside_recipients_only() {
    let (_d, a) = engine();
    let alice = "alice@corp.example";
    let (fired, derived) = run(
        &a,
        &[
            mail("in", alice, &["carol@corp.example"], 0, "", true),
            mail("plain", alice, &["bob@partner.example"], 0, "", false),
            mail(
                "out",
                alice,
                &["carol@corp.example", "bob@partner.example"],
                0,
                "",
                true,
            ),
        ],
    );
    assert_eq!(
        fired,
        [("encrypted_attachment".to_owned(), "out".to_owned())]
    );
    assert!(
        derived
            .tags
            .contains(&("out".into(), "alert:enc-out".into()))
    );
}

/// Review finding 8: `reanalyse` (no rules) replaced the annotations whole
/// and erased the PPAP and alert tags and links; they are carried over,
/// nothing else is.
#[test]
fn a_new_analysis_keeps_the_alert_tags_and_links() {
    let link = Link {
        event_id: "partner".into(),
        reason: "ppap".into(),
    };
    let old = Annotations {
        event_id: "a".into(),
        version: 1,
        tags: vec![
            "ppap".into(),
            "alert:enc-out".into(),
            "archive-bounded".into(),
        ],
        links: vec![link.clone()],
        ..Default::default()
    };
    let mut new = Annotations {
        event_id: "a".into(),
        version: 2,
        tags: vec!["encrypted-attachment".into(), "alert:enc-out".into()],
        ..Default::default()
    };
    carry_over(&old, &mut new);
    assert_eq!(
        new.tags,
        ["encrypted-attachment", "alert:enc-out", "ppap"],
        "alert tags carried once, analysis tags of the old version not"
    );
    assert_eq!(new.links, [link]);
}

/// Review finding 4: a worker batch that fails after its alerts were
/// logged (index commit error) is retried, and the retry fires nothing
/// (the correlator remembers the mail): the alerts the first attempt
/// logged are held in the meta store and survive a restart until
/// dispatched.
#[test]
fn alerts_of_a_failed_batch_are_held_until_dispatched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = || {
        let meta = MetaStore::open(&dir.path().join("meta")).expect("meta");
        let set = RuleSet::parse(Path::new("rules.toml"), RULES, &InternalDomains::default())
            .expect("rules");
        Alerting::new(&meta, set, Vec::new(), 100).expect("engine")
    };
    let (e, ann) = mail(
        "enc",
        "taro@corp.example",
        &["x@other.example"],
        0,
        "",
        true,
    );
    {
        let a = open();
        let done = a.analysed(&e, &ann).expect("analysed");
        assert_eq!(done.alerts.len(), 1, "encrypted_attachment fires");
        a.hold(&done.alerts).expect("hold");
        // The batch fails here: no dispatch. The retry fires nothing.
        let again = a.analysed(&e, &ann).expect("analysed");
        assert!(again.alerts.is_empty());
    }
    // Restarted: the held alert is there to dispatch, once.
    let a = open();
    let held = a.take_held().expect("held");
    assert_eq!(
        held.iter()
            .map(|(_, x)| (x.kind.as_str(), x.event_id.as_str()))
            .collect::<Vec<_>>(),
        [("encrypted_attachment", "enc")]
    );
    let mut rx = a.subscribe();
    a.unhold(&held);
    a.dispatch(held);
    assert_eq!(
        rx.try_recv().map(|x| x.event_id).ok().as_deref(),
        Some("enc")
    );
    assert!(a.take_held().expect("held").is_empty());
}
