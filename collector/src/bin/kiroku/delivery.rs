//! A mail's downstream fate (issue 20), as `kiroku show` prints it below
//! the event: the status and summary, the MTA host and queue id the join
//! used, and every attempt the MTA logged. Every line passes through
//! `terminal`: relays and reply texts come from the MTA's log.

use kiroku_common::quote::terminal;
use kiroku_proto::Delivery;

use crate::zone::{self, Zone};

/// The delivery as detail lines; "unknown" (nothing joined) says so in
/// one line.
pub fn detail(d: &Delivery, zone: &Zone) -> String {
    let mut out = String::from("\ndelivery (from the MTA's log):\n");
    let mut line = |k: &str, v: &str| {
        if !v.is_empty() {
            out.push_str(&format!("{:>16}: {}\n", terminal(k), terminal(v)));
        }
    };
    if d.attempts.is_empty() && d.queue_id.is_empty() {
        line("status", "unknown (no MTA log line joined yet)");
        return out;
    }
    line("status", &d.status);
    line("summary", &d.summary);
    line(
        "mta",
        &format!(
            "{} (agent {}), queue id {}",
            d.mta_host, d.mta_agent_id, d.queue_id
        ),
    );
    line("joined by", &d.joined_by);
    for a in &d.attempts {
        let mut what = format!("{} {}", a.status, a.recipient);
        for (k, v) in [("relay", &a.relay), ("dsn", &a.dsn)] {
            if !v.is_empty() {
                what.push_str(&format!(" {k}={v}"));
            }
        }
        if a.delay_ms > 0 {
            what.push_str(&format!(" delay={:.1}s", a.delay_ms as f64 / 1000.0));
        }
        if !a.text.is_empty() {
            what.push_str(&format!(" ({})", a.text));
        }
        line(&zone::format(a.at_ms, zone), what.trim());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiroku_proto::DeliveryAttempt;

    #[test]
    fn a_delivery_prints_its_summary_and_attempts_safely() {
        let d = Delivery {
            event_id: "a/s/1".into(),
            status: "bounced".into(),
            mta_agent_id: "mx".into(),
            mta_host: "mx.example.org".into(),
            queue_id: "4F1A".into(),
            summary: "deferred once, bounced after 5 days (5.1.1)".into(),
            joined_by: "queue id + host + time".into(),
            attempts: vec![DeliveryAttempt {
                recipient: "bob@example.net".into(),
                status: "bounced".into(),
                relay: "mail.example.net[198.51.100.7]:25".into(),
                dsn: "5.1.1".into(),
                text: "host said: 550 no such user\x1b[2J".into(),
                at_ms: 1_000,
                delay_ms: 2_500,
                log_event_id: "mx/s/9".into(),
            }],
            ..Default::default()
        };
        let out = detail(&d, &Zone::utc());
        assert!(out.contains("          status: bounced\n"), "{out}");
        assert!(out.contains("deferred once, bounced after 5 days (5.1.1)"));
        assert!(out.contains("mx.example.org (agent mx), queue id 4F1A"));
        assert!(out.contains(
            "bounced bob@example.net relay=mail.example.net[198.51.100.7]:25 dsn=5.1.1 delay=2.5s (host said: 550 no such user\\u{1b}[2J)"
        ), "{out}");
        assert!(!out.contains('\x1b'));
        let none = detail(&Delivery::default(), &Zone::utc());
        assert!(none.contains("unknown (no MTA log line joined yet)"));
    }
}
