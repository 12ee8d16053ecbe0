//! The earlier rule kinds on hand-made events, the sensitive rules on what
//! analysis found inside attachments, and the bounded replay log (the
//! issue-20 kinds are in `tests20.rs`).

use super::*;
use kiroku_proto::{Attachment, EmailEvent, FileEvent, Recipient};

fn engine(rules: &str) -> (tempfile::TempDir, Alerting) {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = MetaStore::open(&dir.path().join("meta")).expect("meta");
    let set =
        RuleSet::parse(Path::new("rules.toml"), rules, &InternalDomains::default()).expect("rules");
    let a = Alerting::new(&meta, set, Vec::new(), 100).expect("engine");
    (dir, a)
}

fn mail(id: &str, at: i64, to: &str, att_sha: Option<&str>) -> Event {
    Event {
        event_id: id.into(),
        observed_at_ms: at,
        received_at_ms: at,
        user: "alice".into(),
        kind: Some(Kind::Email(EmailEvent {
            rcpt_to: vec![Recipient {
                address: to.into(),
                reply_code: 250,
                ..Default::default()
            }],
            attachments: att_sha
                .map(|s| Attachment {
                    filename: "a.pdf".into(),
                    sha256: s.into(),
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn file(id: &str, op: &str, path: &str, sha: &str) -> Event {
    Event {
        event_id: id.into(),
        kind: Some(Kind::File(FileEvent {
            operation: op.into(),
            path: path.into(),
            sha256: sha.into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn fired(a: &Alerting, events: &mut [Event]) -> Vec<(String, String)> {
    a.evaluate(events)
        .expect("evaluate")
        .into_iter()
        .map(|(_, a)| (a.rule, a.event_id))
        .collect()
}

#[test]
fn each_kind_fires_on_what_it_should() {
    let s = "ab".repeat(32);
    let (_d, a) = engine(&format!(
        r#"
[[rule]]
name = "ext"
kind = "external_attachment"
internal_domains = ["corp.example"]
[[rule]]
name = "hash"
kind = "sensitive_hash"
sha256 = ["{s}"]
[[rule]]
name = "dir"
kind = "sensitive_dir"
paths = ["/srv/hr/**"]
[[rule]]
name = "usb"
kind = "removable_copy"
[[rule]]
name = "rate"
kind = "mail_rate"
internal_domains = ["corp.example"]
max_per_hour = 2
"#
    ));
    let d = "cd".repeat(32);
    let cases: Vec<(Event, Vec<&str>)> = vec![
        (
            mail("m1", 1_000, "bob@corp.example", Some(&s)),
            vec!["hash"],
        ),
        (mail("m2", 2_000, "eve@other.org", None), vec![]),
        (file("f1", "create", "/srv/hr/pay.xlsx", &d), vec![]),
        (file("f2", "modify", "/srv/hr/pay.xlsx", &d), vec![]),
        (file("f3", "rename", "/tmp/pay.xlsx", &d), vec!["dir"]),
        (
            mail("m3", 3_000, "eve@other.org", Some(&d)),
            vec!["ext", "dir"],
        ),
        (
            file("f4", "copy_to_removable", "/media/usb/x", &d),
            vec!["dir", "usb"],
        ),
        (mail("m4", 4_000, "eve@other.org", None), vec!["rate"]),
        (mail("m5", 5_000, "eve@other.org", None), vec![]),
        (
            mail("m6", 5_000 + WINDOW_MS * 2, "eve@other.org", None),
            vec![],
        ),
    ];
    for (mut e, want) in cases {
        let id = e.event_id.clone();
        let got = fired(&a, std::slice::from_mut(&mut e));
        let rules: Vec<&str> = got.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(rules, want, "{id}");
        for r in want {
            assert!(e.tags.contains(&format!("alert:{r}")), "{id} tagged {r}");
        }
    }
    // The same event evaluated twice (a failed group resent) does not
    // count twice towards a rate.
    let (_d, a) = engine(
        "[[rule]]\nname = \"rate\"\nkind = \"mail_rate\"\ninternal_domains = [\"c.x\"]\nmax_per_hour = 1\n",
    );
    let mut m = [mail("r1", 1, "x@y.z", None)];
    assert!(fired(&a, &mut m).is_empty());
    assert!(fired(&a, &mut m).is_empty());
    let mut m = [mail("r2", 2, "x@y.z", None)];
    assert_eq!(fired(&a, &mut m).len(), 1);
}

#[test]
fn sensitive_rules_look_inside_attachments_once_analysed() {
    use kiroku_proto::{Annotations, ArchiveMember, AttachmentAnalysis};
    let (secret, hr_doc, own) = ("ab".repeat(32), "cd".repeat(32), "ef".repeat(32));
    let (_d, a) = engine(&format!(
        "[[rule]]\nname = \"hash\"\nkind = \"sensitive_hash\"\nsha256 = [\"{secret}\", \"{own}\"]\n[[rule]]\nname = \"dir\"\nkind = \"sensitive_dir\"\npaths = [\"/srv/hr/**\"]\n"
    ));
    // Content first seen under /srv/hr is remembered by the dir rule.
    let mut f = [file("f1", "create", "/srv/hr/pay.xlsx", &hr_doc)];
    assert!(fired(&a, &mut f).is_empty());
    let member = |path: &str, sha: &str| ArchiveMember {
        path: path.into(),
        sha256: sha.into(),
        ..Default::default()
    };
    let ann = |files: Vec<AttachmentAnalysis>| Annotations {
        event_id: "m1".into(),
        attachments: files,
        ..Default::default()
    };
    let zip = |members: Vec<ArchiveMember>| AttachmentAnalysis {
        name: "plan.zip".into(),
        container: "zip".into(),
        members,
        ..Default::default()
    };
    let nested = |path: &str, name: &str, sha: &str| AttachmentAnalysis {
        path: path.into(),
        name: name.into(),
        sha256: sha.into(),
        ..Default::default()
    };
    let e = mail("m1", 1_000, "eve@other.org", Some(&own));
    let cases: Vec<(&str, Annotations, Vec<&str>, &str)> = vec![
        (
            "a sensitive file inside a forwarded mail",
            ann(vec![nested("fwd.eml", "contract.pdf", &secret)]),
            vec!["hash"],
            "inside fwd.eml/contract.pdf",
        ),
        (
            "content first seen under /srv/hr, zipped",
            ann(vec![zip(vec![member("pay.xlsx", &hr_doc)])]),
            vec!["dir"],
            "inside plan.zip/pay.xlsx",
        ),
        (
            "a member stored under srv/hr/ in the archive",
            ann(vec![zip(vec![member(
                "srv/hr/other.xlsx",
                &"11".repeat(32),
            )])]),
            vec!["dir"],
            "plan.zip/srv/hr/other.xlsx",
        ),
        (
            "the mail's own attachment was checked at ingest",
            ann(vec![nested("fwd.eml", "copy.pdf", &own)]),
            vec![],
            "",
        ),
        ("nothing inside", ann(vec![]), vec![], ""),
    ];
    for (what, mut an, want, summary) in cases {
        let got = a.evaluate_derived(&e, &mut an).expect("evaluate");
        let rules: Vec<&str> = got.iter().map(|(_, x)| x.rule.as_str()).collect();
        assert_eq!(rules, want, "{what}");
        for (_, x) in &got {
            assert!(x.summary.contains(summary), "{what}: {}", x.summary);
            assert!(an.tags.contains(&format!("alert:{}", x.rule)), "{what}");
        }
    }
}

#[test]
fn replay_log_is_bounded_and_discard_forgets() {
    let (_d, a) = engine("[[rule]]\nname = \"usb\"\nkind = \"removable_copy\"\n");
    for i in 0..150 {
        let mut e = [file(&format!("f{i}"), "copy_to_removable", "/m/x", "")];
        let out = a.evaluate(&mut e).expect("evaluate");
        if i == 149 {
            a.discard(&out);
        } else {
            a.dispatch(out);
        }
    }
    let all = a.replay(0).expect("replay");
    assert_eq!(all.len(), 100);
    assert_eq!(all.last().map(|x| x.event_id.as_str()), Some("f148"));
}
