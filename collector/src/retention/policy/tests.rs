use kiroku_proto::{EmailEvent, Event, FileEvent, GapEvent, HostEvent, Outcome, event::Kind};

use super::*;

const D: i64 = DAY_MS;
/// A fixed "now": 2026-12-06.
const NOW: i64 = 1_796_000_000_000;

fn mail(outcome: Outcome, group: &str, tags: &[&str]) -> Event {
    Event {
        event_id: "a/s/1".into(),
        agent_group: group.into(),
        tags: tags.iter().map(|t| (*t).to_string()).collect(),
        observed_at_ms: NOW,
        received_at_ms: NOW,
        kind: Some(Kind::Email(EmailEvent {
            outcome: outcome as i32,
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn of_kind(kind: Kind) -> Event {
    Event {
        observed_at_ms: NOW,
        received_at_ms: NOW,
        kind: Some(kind),
        ..Default::default()
    }
}

#[test]
fn periods_parse_and_print() {
    let cases: &[(&str, Result<Period, ()>, &str)] = &[
        ("forever", Ok(Period::Forever), "forever"),
        ("FOREVER", Ok(Period::Forever), "forever"),
        ("90d", Ok(Period::Ms(90 * D)), "90d"),
        ("5y", Ok(Period::Ms(5 * 366 * D)), "5y"),
        ("2w", Ok(Period::Ms(14 * D)), "2w"),
        ("12h", Ok(Period::Ms(12 * HOUR_MS)), "12h"),
        (" 7d ", Ok(Period::Ms(7 * D)), "1w"),
        ("0d", Ok(Period::Ms(0)), "0s"),
        ("5", Err(()), ""),
        ("d", Err(()), ""),
        ("5 years", Err(()), ""),
        ("5m", Err(()), ""),
        ("-5d", Err(()), ""),
        ("99999999999999y", Err(()), ""),
    ];
    for (text, want, shown) in cases {
        let got = Period::parse(text).map_err(|_| ());
        assert_eq!(&got, want, "{text:?}");
        if let Ok(p) = got {
            assert_eq!(p.to_string(), *shown, "{text:?}");
        }
    }
}

#[test]
fn every_kind_of_the_index_has_a_default() {
    for k in crate::store::index::KINDS {
        assert!(
            KIND_DEFAULTS.iter().any(|(name, _)| *name == k),
            "kind {k} has no default in KIND_DEFAULTS"
        );
    }
    // The defaults are conservative: seven years and more, except network
    // flow records (many, and their worth fades: a year, as firewall logs
    // are commonly kept; the P2P detections made from them keep 7 years).
    for (k, p) in KIND_DEFAULTS {
        let floor = if *k == "network" {
            YEAR_MS
        } else {
            7 * YEAR_MS
        };
        assert!(!p.shorter_than(Period::Ms(floor)), "{k} {p}");
    }
}

#[test]
fn glob() {
    let cases = [
        ("alert:*", "alert:usb", true),
        ("alert:*", "alert:", true),
        ("alert:*", "agent:alert:x", false),
        ("*usb*", "alert:usb-copy", true),
        ("a?c", "abc", true),
        ("a?c", "ac", false),
        ("clock-skew", "clock-skew", true),
        ("clock-skew", "clock-skew2", false),
        ("*", "", true),
        ("a*b*c", "axxbyyc", true),
        ("a*b*c", "axxbyy", false),
    ];
    for (p, t, want) in cases {
        assert_eq!(glob_match(p, t), want, "{p} vs {t}");
    }
}

const POLICY: &str = r#"
grace = "1d"
[kind]
email = "1y"
file = "90d"

[[override]]
group = "sales"
period = "3y"

[[override]]
tag = "alert:*"
period = "10y"

[[override]]
kind = "email"
outcome = "rejected"
period = "30d"

[[override]]
group = "legal"
period = "forever"
"#;

/// (what, event, expected period, expected rule prefix)
#[test]
fn which_rule_decides() {
    let r = Rules::parse(POLICY).expect("parses");
    let cases: Vec<(&str, Event, Period, &str)> = vec![
        (
            "kind default",
            mail(Outcome::Delivered, "", &[]),
            Period::Ms(YEAR_MS),
            "kind email 1y",
        ),
        (
            "file kind",
            of_kind(Kind::File(FileEvent::default())),
            Period::Ms(90 * D),
            "kind file 90d",
        ),
        (
            "host_change keeps its default",
            of_kind(Kind::HostChange(HostEvent::default())),
            Period::Ms(10 * YEAR_MS),
            "kind host_change 10y",
        ),
        (
            "gap keeps its default",
            of_kind(Kind::Gap(GapEvent::default())),
            Period::Ms(10 * YEAR_MS),
            "kind gap 10y",
        ),
        (
            "group over kind",
            mail(Outcome::Delivered, "sales", &[]),
            Period::Ms(3 * YEAR_MS),
            "group sales 3y",
        ),
        (
            "an unknown group is the kind's",
            mail(Outcome::Delivered, "marketing", &[]),
            Period::Ms(YEAR_MS),
            "kind email 1y",
        ),
        (
            "tag longer than group wins",
            mail(Outcome::Delivered, "sales", &["alert:usb"]),
            Period::Ms(10 * YEAR_MS),
            "tag alert:* 10y",
        ),
        (
            "outcome shorter than kind",
            mail(Outcome::Rejected, "", &[]),
            Period::Ms(30 * D),
            "outcome rejected, kind email 30d",
        ),
        (
            "group longer than outcome wins",
            mail(Outcome::Rejected, "sales", &[]),
            Period::Ms(3 * YEAR_MS),
            "group sales 3y",
        ),
        (
            "forever beats everything",
            mail(Outcome::Rejected, "legal", &["alert:x"]),
            Period::Forever,
            "group legal forever",
        ),
        (
            "a tag that does not match the glob",
            mail(Outcome::Delivered, "", &["agent:alert:x"]),
            Period::Ms(YEAR_MS),
            "kind email 1y",
        ),
        ("no kind", Event::default(), Period::Forever, "no kind"),
    ];
    for (what, e, period, rule) in cases {
        let (got_rule, got) = r.rule_for(&e);
        assert_eq!(got, period, "{what}: {got_rule}");
        assert!(got_rule.starts_with(rule), "{what}: {got_rule}");
    }
}

#[test]
fn expiry_is_from_the_later_time_and_never_before_receipt_plus_grace() {
    let r = Rules::parse("grace = \"1d\"\n[kind]\nemail = \"30d\"\n").expect("valid");
    let at = |observed: i64, offset: Option<i64>, received: i64| {
        let mut e = mail(Outcome::Delivered, "", &[]);
        e.observed_at_ms = observed;
        e.received_at_ms = received;
        if let Some(o) = offset {
            e.clock_offset_ms = o;
            e.clock_offset_known = true;
        }
        r.decide(&e).expires_at_ms.expect("valid")
    };
    // Corrected time later than receipt: from it.
    assert_eq!(at(NOW + 5 * D, None, NOW), NOW + 35 * D);
    // Receipt later (a backlog shipped after an outage): from receipt.
    assert_eq!(at(NOW - 10 * D, None, NOW), NOW + 30 * D);
    // The measured offset corrects the agent's clock: a host 3 d ahead.
    assert_eq!(at(NOW + 3 * D, Some(3 * D), NOW - D), NOW + 30 * D);
    // A host whose clock is years behind is not purged on arrival.
    let wrong = at(NOW - 5 * YEAR_MS, None, NOW);
    assert!(wrong >= NOW + D, "expires {wrong}, received {NOW}");
    // A zero period still waits for the grace after receipt.
    let r0 = Rules::parse("grace = \"1d\"\n[kind]\nemail = \"0d\"\n").expect("valid");
    let mut e = mail(Outcome::Delivered, "", &[]);
    e.observed_at_ms = NOW - 100 * D;
    assert_eq!(r0.decide(&e).expires_at_ms, Some(NOW + D));
    // Forever: no expiry.
    let rf = Rules::parse("[kind]\nemail = \"forever\"\n").expect("valid");
    assert_eq!(rf.decide(&e).expires_at_ms, None);
    assert!(!rf.decide(&e).expired(i64::MAX));
}

#[test]
fn bad_files_are_refused_with_the_key_at_fault() {
    let cases = [
        ("[kind]\nmail = \"1y\"\n", "[kind] mail: unknown kind"),
        ("[kind]\nemail = \"1 year\"\n", "[kind] email"),
        ("grace = \"forever\"\n", "`grace` cannot be `forever`"),
        ("grace = \"soon\"\n", "`grace`"),
        (
            "[[override]]\nperiod = \"1y\"\n",
            "number 1: name a `group`",
        ),
        ("[[override]]\ngroup = \"a\"\n", "period"),
        (
            "[[override]]\noutcome = \"lost\"\nperiod = \"1y\"\n",
            "unknown outcome",
        ),
        (
            "[[override]]\noutcome = \"rejected\"\nkind = \"file\"\nperiod = \"1y\"\n",
            "only mail has an outcome",
        ),
        (
            "[[override]]\ngroup = \"a\"\nperiod = \"1y\"\n[[override]]\ntag = \"\"\nperiod = \"1y\"\n",
            "number 2: `tag` is empty",
        ),
        ("keep = \"1y\"\n", "unknown field"),
    ];
    for (text, want) in cases {
        let err = Rules::parse(text).expect_err(text);
        assert!(err.contains(want), "{text:?}: {err}");
    }
    assert_eq!(Rules::parse("").expect("valid"), Rules::default());
}

#[test]
fn shortenings_are_found() {
    let base = Rules::parse(POLICY).expect("valid");
    let cases: &[(&str, &[&str])] = &[
        (POLICY, &[]),
        // Longer everywhere: nothing shortened.
        (
            "[kind]\nemail = \"2y\"\nfile = \"1y\"\n[[override]]\ngroup = \"sales\"\nperiod = \"5y\"\n[[override]]\ntag = \"alert:*\"\nperiod = \"forever\"\n[[override]]\nkind = \"email\"\noutcome = \"rejected\"\nperiod = \"30d\"\n[[override]]\ngroup = \"legal\"\nperiod = \"forever\"\n",
            &[],
        ),
        (
            "[kind]\nemail = \"6w\"\nfile = \"90d\"\n[[override]]\ngroup = \"sales\"\nperiod = \"3y\"\n[[override]]\ntag = \"alert:*\"\nperiod = \"10y\"\n[[override]]\nkind = \"email\"\noutcome = \"rejected\"\nperiod = \"30d\"\n[[override]]\ngroup = \"legal\"\nperiod = \"forever\"\n",
            &["kind email 1y → 6w"],
        ),
        (
            // The legal override removed, grace shortened.
            "grace = \"1h\"\n[kind]\nemail = \"1y\"\nfile = \"90d\"\n[[override]]\ngroup = \"sales\"\nperiod = \"3y\"\n[[override]]\ntag = \"alert:*\"\nperiod = \"10y\"\n[[override]]\nkind = \"email\"\noutcome = \"rejected\"\nperiod = \"30d\"\n",
            &["group legal forever removed", "grace 1d → 1h"],
        ),
    ];
    for (text, want) in cases {
        let next = Rules::parse(text).expect("valid");
        assert_eq!(base.shortened_by(&next), *want, "{text}");
    }
    // Adding an override shorter than the defaults is a shortening.
    let d = Rules::default();
    let added = Rules::parse("[[override]]\ngroup = \"temp\"\nperiod = \"90d\"\n").expect("valid");
    assert_eq!(
        d.shortened_by(&added).len(),
        1,
        "{:?}",
        d.shortened_by(&added)
    );
    // The defaults against a file lowering a kind.
    let lower = Rules::parse("[kind]\nemail = \"90d\"\n").expect("valid");
    assert_eq!(d.shortened_by(&lower), vec!["kind email 7y → 90d"]);
    assert!(lower.shortened_by(&d).is_empty());
}

#[test]
fn a_shortening_waits_for_its_delay() {
    let old = Rules::default();
    let new = Rules::parse("grace = \"2h\"\n[kind]\nemail = \"30d\"\n").expect("valid");
    let effective = NOW + 7 * D;
    let p = Policy::shortening(new.clone(), old.clone(), effective);
    let mut e = mail(Outcome::Delivered, "", &[]);
    e.observed_at_ms = NOW - 40 * D;
    e.received_at_ms = NOW - 40 * D;
    // Before the delay: the longer (old) rule decides, the longer grace.
    let before = p.decide_at(&e, NOW);
    assert_eq!(before.expires_at_ms, old.decide(&e).expires_at_ms);
    assert!(!before.expired(NOW));
    assert!(before.rule.contains("previous policy"), "{}", before.rule);
    assert_eq!(p.grace_at(NOW), D);
    // After: the new rule.
    let after = p.decide_at(&e, effective);
    assert_eq!(after.expires_at_ms, Some(NOW - 10 * D));
    assert!(after.expired(effective));
    assert_eq!(p.grace_at(effective), 2 * HOUR_MS);
    // A rule the new policy lengthens applies at once.
    let longer = Rules::parse("[kind]\nfile = \"20y\"\nemail = \"30d\"\n").expect("valid");
    let p = Policy::shortening(longer, old, effective);
    let f = of_kind(Kind::File(FileEvent::default()));
    assert_eq!(p.decide_at(&f, NOW).expires_at_ms, Some(NOW + 20 * YEAR_MS));
}

#[test]
fn the_packaged_example_parses_and_keeps_the_defaults() {
    let example = include_str!("../../../../packaging/retention.example.toml");
    let r = Rules::parse(example).expect("packaging/retention.example.toml");
    for (k, p) in KIND_DEFAULTS {
        assert_eq!(r.kinds.get(*k), Some(p), "{k}");
    }
    assert!(
        Rules::default().shortened_by(&r).len() == 1,
        "only rejected mail is shortened"
    );
}
