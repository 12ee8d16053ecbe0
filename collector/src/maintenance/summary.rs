//! The summary of a window's part of a run: its severity (`ok` "no
//! problems", `fixed` "problems fixed", `action` "needs action"), the
//! text for people, and the alert that carries it through the configured
//! notifiers (mail subject "Kiroku maintenance: …", webhook JSON) with the
//! alert severity `info`, `warning` or `critical`. Silent agents are
//! listed; they do not change the severity (retiring one is a decision,
//! `kiroku agents retire`).

use kiroku_proto::{Alert, HostInfo, MaintenanceReport};

pub const SUBJECT_PREFIX: &str = "Kiroku maintenance";

/// `ok`, `fixed` or `action` for a finished part.
pub fn severity(r: &MaintenanceReport) -> &'static str {
    if !r.problems.is_empty() {
        "action"
    } else if r.repaired > 0 || !r.repairs.is_empty() {
        "fixed"
    } else {
        "ok"
    }
}

/// The words of a severity, for the subject.
pub fn words(severity: &str) -> &'static str {
    match severity {
        "action" => "needs action",
        "fixed" => "problems fixed",
        _ => "no problems",
    }
}

/// The alert severity of a summary severity.
pub fn alert_severity(severity: &str) -> &'static str {
    match severity {
        "action" => "critical",
        "fixed" => "warning",
        _ => "info",
    }
}

/// The summary for people (`kiroku maintenance report`, the mail body).
pub fn text(r: &MaintenanceReport, show: &dyn Fn(i64) -> String) -> String {
    let mut s = format!(
        "{SUBJECT_PREFIX}: {}\n\nrun {} ({}), window {} of the run, {} to {}\n",
        words(&r.severity),
        r.run_id,
        r.trigger,
        r.windows,
        show(r.started_ms),
        if r.ended_ms > 0 {
            show(r.ended_ms)
        } else {
            "(running)".into()
        },
    );
    s.push_str(&format!(
        "journal leaves {} to {}: {}\n",
        r.from_leaf,
        r.to_leaf,
        if r.complete {
            "the run reached the end of the store (the next run starts from the beginning)"
                .to_string()
        } else {
            format!(
                "{}; the next window resumes at leaf {}",
                r.stopped_because, r.to_leaf
            )
        }
    ));
    if r.protect {
        s.push_str(&format!(
            "PROTECT MODE: verified and repaired, purged and marked nothing ({} expired events left unmarked), because {}\n",
            r.would_mark, r.protect_reason
        ));
    }
    s.push_str(&format!(
        "verified {}, repaired {}, marked {}, purged {}, held back by holds {}, bytes freed {}\n",
        r.verified, r.repaired, r.marked, r.purged, r.held_back, r.bytes_freed
    ));
    if r.deferred > 0 {
        s.push_str(&format!(
            "{} due events were not purged now (see the collector log); a later run takes them\n",
            r.deferred
        ));
    }
    for (title, list) in [
        ("Problems (what to do)", &r.problems),
        ("Repairs", &r.repairs),
        (
            "Agents not seen for a while (`kiroku agents retire NAME` when gone for good)",
            &r.stale_agents,
        ),
    ] {
        if !list.is_empty() {
            s.push_str(&format!("\n{title}:\n"));
            for l in list {
                s.push_str(&format!("- {l}\n"));
            }
        }
    }
    s
}

/// The alert carrying a finished part's summary.
pub fn alert(r: &MaintenanceReport, body: String) -> Alert {
    Alert {
        rule: "maintenance".into(),
        kind: "maintenance".into(),
        event_id: r.run_id.clone(),
        fired_at_ms: r.ended_ms,
        summary: format!("{SUBJECT_PREFIX}: {}", words(&r.severity)),
        event: None,
        severity: alert_severity(&r.severity).into(),
        body,
        route: Vec::new(),
    }
}

/// Hosts last seen before `now_ms - after_ms` (never-seen hosts too; not
/// retired ones), as
/// summary lines (fed by `agents::stale`).
pub fn stale_lines(
    hosts: &[HostInfo],
    now_ms: i64,
    after_ms: i64,
    show: &dyn Fn(i64) -> String,
) -> Vec<String> {
    hosts
        .iter()
        .filter(|h| h.retired_at_ms == 0 && h.last_seen_ms < now_ms.saturating_sub(after_ms))
        .map(|h| {
            format!(
                "{} last seen {}",
                h.agent_id,
                if h.last_seen_ms > 0 {
                    show(h.last_seen_ms)
                } else {
                    "never".into()
                }
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_table() {
        let cases = [
            (vec![], 0, "ok", "no problems", "info"),
            (vec![], 2, "fixed", "problems fixed", "warning"),
            (
                vec!["x".to_string()],
                0,
                "action",
                "needs action",
                "critical",
            ),
            (
                vec!["x".to_string()],
                3,
                "action",
                "needs action",
                "critical",
            ),
        ];
        for (problems, repaired, sev, w, a) in cases {
            let r = MaintenanceReport {
                problems,
                repaired,
                ..Default::default()
            };
            assert_eq!(severity(&r), sev);
            assert_eq!(words(sev), w);
            assert_eq!(alert_severity(sev), a);
        }
    }

    #[test]
    fn text_says_protect_and_resume_point() {
        let r = MaintenanceReport {
            run_id: "m-1".into(),
            severity: "ok".into(),
            protect: true,
            protect_reason: "the collector was down 25 h".into(),
            stopped_because: "window end".into(),
            to_leaf: 42,
            ..Default::default()
        };
        let t = text(&r, &|ms| ms.to_string());
        assert!(t.contains("PROTECT MODE"), "{t}");
        assert!(t.contains("down 25 h"), "{t}");
        assert!(t.contains("resumes at leaf 42"), "{t}");
        let a = alert(&r, t);
        assert_eq!(a.summary, "Kiroku maintenance: no problems");
        assert_eq!(a.severity, "info");
    }

    #[test]
    fn stale_hosts() {
        let h = |id: &str, seen| HostInfo {
            agent_id: id.into(),
            last_seen_ms: seen,
            ..Default::default()
        };
        let hosts = [h("a", 100), h("b", 1000), h("c", 0)];
        let s = stale_lines(&hosts, 1100, 500, &|ms| ms.to_string());
        assert_eq!(s, vec!["a last seen 100", "c last seen never"]);
    }
}
