//! Where a transaction's time went: the fine-grained phases logged at
//! debug level (target `relay_timing`, see BENCHMARKS.md, "Relay
//! overhead") and the per-phase milliseconds every mail record carries
//! (`EmailEvent.timings`, issue 20), with the upstream's greeting name
//! (`EmailEvent.upstream_name`).
//!
//! The upstream connection's own phases (connect, greeting, hello) are
//! reported by the first transaction that uses the connection only: later
//! transactions on it did not wait for them. Taking the times costs a few
//! `Instant::now()` calls per transaction.

use std::time::{Duration, Instant};

use kiroku_proto::PhaseTimings;

use super::Session;
use super::upstream::Setup;

/// One transaction's phases, reset at each MAIL.
#[derive(Debug, Default, Clone)]
pub(super) struct Phases {
    /// When the client's MAIL arrived (None before the first MAIL).
    pub started: Option<Instant>,
    /// The upstream connection's opening, when this transaction is the
    /// first to use it.
    pub setup: Setup,
    /// The upstream's name from its greeting.
    pub upstream_name: String,
    /// From MAIL to the upstream's 354 for DATA (the whole envelope, the
    /// client's pauses between commands included).
    pub envelope: Duration,
    /// MAIL relayed to the upstream and its reply read (with the RCPTs and
    /// DATA of a pipelined group).
    pub mail: Duration,
    /// Every RCPT relayed (sum).
    pub rcpt: Duration,
    /// DATA relayed, 354 read.
    pub data_cmd: Duration,
    /// From our 354 to the client's end-of-data, body streamed upstream.
    pub body: Duration,
    /// Spool completed (and fsynced, for a spool file).
    pub spool: Duration,
    /// MIME → record.
    pub parse: Duration,
    /// `buffer.begin`: the record made durable.
    pub begin: Duration,
    /// End-of-data sent upstream, its reply read.
    pub eod: Duration,
    /// The outcome committed (its flush runs while the reply goes out).
    pub finish: Duration,
    /// The reply written to the client.
    pub reply: Duration,
}

impl Phases {
    pub fn log(&self) {
        let us = |d: Duration| d.as_micros() as u64;
        tracing::debug!(
            target: "relay_timing",
            mail_us = us(self.mail),
            rcpt_us = us(self.rcpt),
            data_cmd_us = us(self.data_cmd),
            body_us = us(self.body),
            spool_us = us(self.spool),
            parse_us = us(self.parse),
            begin_us = us(self.begin),
            eod_us = us(self.eod),
            finish_us = us(self.finish),
            reply_us = us(self.reply),
            "relay transaction phases"
        );
    }

    /// The envelope is complete: the upstream answered DATA with 354.
    pub fn envelope_done(&mut self) {
        if let Some(t) = self.started {
            self.envelope = t.elapsed();
        }
    }

    /// The record's timings, the total measured until now (the verdict).
    pub fn record(&self) -> PhaseTimings {
        let total = self.started.map(|t| t.elapsed()).unwrap_or_default();
        self.record_at(total)
    }

    fn record_at(&self, total: Duration) -> PhaseTimings {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        PhaseTimings {
            connect_ms: ms(self.setup.connect),
            greeting_ms: ms(self.setup.greeting),
            hello_ms: ms(self.setup.hello),
            envelope_ms: ms(self.envelope),
            data_ms: ms(self.body),
            end_of_data_ms: ms(self.eod),
            total_ms: ms(total),
        }
    }
}

impl Session<'_> {
    /// New phases for the transaction whose MAIL arrived at `started` and
    /// whose MAIL exchange took `mail`: the upstream connection's opening
    /// is taken (once) from the connection.
    pub(super) fn new_phases(&mut self, started: Instant, mail: Duration) -> Phases {
        let (setup, upstream_name) = match self.upstream.as_mut() {
            Some(up) => (up.setup.take().unwrap_or_default(), up.name.clone()),
            None => Default::default(),
        };
        Phases {
            started: Some(started),
            setup,
            upstream_name,
            mail,
            ..Phases::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{Harness, Script, scripted_upstream};
    use super::*;
    use kiroku_proto::event::Kind;

    #[test]
    fn record_in_milliseconds() {
        let p = Phases {
            setup: Setup {
                connect: Duration::from_micros(1_500),
                greeting: Duration::from_millis(20),
                hello: Duration::from_millis(7),
            },
            envelope: Duration::from_millis(12),
            body: Duration::from_millis(300),
            eod: Duration::from_secs(5),
            // Not in the record: only the logged breakdown.
            spool: Duration::from_secs(9),
            ..Phases::default()
        };
        let t = p.record_at(Duration::from_millis(5_400));
        assert_eq!(
            t,
            PhaseTimings {
                connect_ms: 1,
                greeting_ms: 20,
                hello_ms: 7,
                envelope_ms: 12,
                data_ms: 300,
                end_of_data_ms: 5_000,
                total_ms: 5_400,
            }
        );
        // Before any MAIL there is no total.
        assert_eq!(Phases::default().record().total_ms, 0);
    }

    #[tokio::test]
    async fn mail_records_carry_phase_timings_and_the_upstream_name() {
        let script = Script {
            greeting: "220 mx7.example.org ESMTP scripted".into(),
            greeting_delay: Duration::from_millis(150),
            ..Script::default()
        };
        let (up, _) = scripted_upstream(script).await;
        let h = Harness::start(Some(up)).await;
        for _ in 0..2 {
            let mut c = h.client().await;
            c.reply().await;
            c.cmd("EHLO client.test").await;
            for _ in 0..2 {
                c.cmd("MAIL FROM:<a@example.org>").await;
                c.cmd("RCPT TO:<b@example.org>").await;
                c.cmd("DATA").await;
                assert_eq!(c.cmd("Subject: t\r\n\r\nbody\r\n.").await.0, 250);
            }
            c.cmd("QUIT").await;
        }
        let recs = h.records(4).await;
        assert_eq!(recs.len(), 4);
        for (i, r) in recs.iter().enumerate() {
            let Some(Kind::Email(m)) = &r.kind else {
                panic!("not mail: {r:?}")
            };
            assert_eq!(m.upstream_name, "mx7.example.org");
            let t = m.timings.expect("timings");
            // The connection's greeting wait is the first transaction's only.
            if i % 2 == 0 {
                assert!(t.greeting_ms >= 150, "{t:?}");
            } else {
                assert_eq!(
                    (t.connect_ms, t.greeting_ms, t.hello_ms),
                    (0, 0, 0),
                    "{t:?}"
                );
            }
            assert!(t.total_ms >= t.envelope_ms + t.data_ms, "{t:?}");
            assert!(t.total_ms < 10_000, "{t:?}");
        }
    }
}
