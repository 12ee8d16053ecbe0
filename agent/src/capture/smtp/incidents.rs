//! Relay incidents: failures that are not one mail's fate — the upstream
//! unreachable, refusing at its greeting, failing TLS, not offering the
//! STARTTLS the config requires, timing out or dropping the connection; a
//! client timing out, failing TLS, making too many errors or going away
//! before MAIL — recorded as `IncidentEvent`s.
//!
//! Repeats are coalesced (an hour's outage with clients retrying must not
//! write a million records, and records are immutable, so an incident
//! cannot be one record updated): an incident is keyed by (kind, upstream)
//! for upstream failures and (kind, client IP) for client-side ones. The
//! first occurrence writes an `open` record; repeats are only counted; a
//! `still_open` record with the count so far is written every
//! `smtp.incident_still_open_secs` while it lasts; a `closed` record
//! (count, first and last time, last error, distinct clients) when it
//! ends — the upstream answers a greeting and EHLO again (upstream kinds),
//! or `smtp.incident_quiet_secs` pass without a repeat. Every record of one
//! incident carries the same `incident_id`.
//!
//! Invariants:
//! - The coalescing state lives in memory only: it survives nothing. An
//!   agent that crashes leaves its open incidents with their `open` record
//!   (durable) and no `closed` one; a clean stop closes each with what it
//!   knows (state `closed`, detail "agent stopped").
//! - Records go through the buffer like any other, in the order the
//!   tracker made them (one channel, one writer). While the buffer is full
//!   they are counted as a gap (source `incidents`), as mail is.
//! - Memory is bounded: at most [`tracker::MAX_OPEN`] incidents open, a
//!   bounded list and count of distinct clients each.
//!
//! `tracker.rs` is the pure coalescing logic (clock passed in, table
//! tested); this file classifies failures and writes the records.

#[cfg(test)]
mod tests;
mod tracker;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiroku_proto::event::Kind;
use kiroku_proto::{IncidentEvent, PhaseTimings};
use tokio::sync::mpsc;

use super::config::SmtpConfig;
use super::upstream::{ErrorKind, Step, UpstreamError};
use crate::buffer::{Buffer, BufferError};
use crate::capture::context::CaptureContext;
use crate::gaps::{Gaps, Missed, Source};
pub use tracker::{Timing, Tracker};

/// How often time-driven records (closing quiet incidents, `still_open`)
/// are checked.
const TICK: Duration = Duration::from_secs(1);
/// Floors of the two settings (a smaller value would mean one incident per
/// occurrence, or a record per second).
pub const MIN_QUIET_SECS: u64 = 1;
pub const MIN_STILL_OPEN_SECS: u64 = 10;

/// What kind of failure an incident is (`IncidentEvent.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IncidentKind {
    UpstreamUnreachable,
    UpstreamRefused,
    UpstreamTls,
    UpstreamStartTlsAbsent,
    UpstreamTimeout,
    UpstreamLost,
    ClientTimeout,
    ClientGoneBeforeMail,
    ClientTooManyErrors,
    ClientTls,
}

impl IncidentKind {
    pub const ALL: [IncidentKind; 10] = [
        IncidentKind::UpstreamUnreachable,
        IncidentKind::UpstreamRefused,
        IncidentKind::UpstreamTls,
        IncidentKind::UpstreamStartTlsAbsent,
        IncidentKind::UpstreamTimeout,
        IncidentKind::UpstreamLost,
        IncidentKind::ClientTimeout,
        IncidentKind::ClientGoneBeforeMail,
        IncidentKind::ClientTooManyErrors,
        IncidentKind::ClientTls,
    ];

    /// The stable name in records and filters.
    pub fn name(self) -> &'static str {
        match self {
            IncidentKind::UpstreamUnreachable => "upstream_unreachable",
            IncidentKind::UpstreamRefused => "upstream_refused",
            IncidentKind::UpstreamTls => "upstream_tls",
            IncidentKind::UpstreamStartTlsAbsent => "upstream_starttls_absent",
            IncidentKind::UpstreamTimeout => "upstream_timeout",
            IncidentKind::UpstreamLost => "upstream_lost",
            IncidentKind::ClientTimeout => "client_timeout",
            IncidentKind::ClientGoneBeforeMail => "client_gone_before_mail",
            IncidentKind::ClientTooManyErrors => "client_too_many_errors",
            IncidentKind::ClientTls => "client_tls",
        }
    }

    /// Keyed by the upstream (else by the client's address).
    pub fn upstream_side(self) -> bool {
        matches!(
            self,
            IncidentKind::UpstreamUnreachable
                | IncidentKind::UpstreamRefused
                | IncidentKind::UpstreamTls
                | IncidentKind::UpstreamStartTlsAbsent
                | IncidentKind::UpstreamTimeout
                | IncidentKind::UpstreamLost
        )
    }

    /// What it means for mail and what to do: the start of the detail.
    pub fn meaning(self) -> &'static str {
        match self {
            IncidentKind::UpstreamUnreachable => {
                "the upstream mail server cannot be reached: clients get 421 and retry; mail waits in their queues (check that the MTA runs and smtp.upstream)"
            }
            IncidentKind::UpstreamRefused => {
                "the upstream refuses connections at its greeting (or the agent's own login): clients get its reply; check the MTA's limits and logs"
            }
            IncidentKind::UpstreamTls => {
                "TLS with the upstream fails (handshake or certificate): nothing is relayed; check smtp.upstream_ca, smtp.upstream_tls_name and the MTA's certificate"
            }
            IncidentKind::UpstreamStartTlsAbsent => {
                "the upstream does not offer STARTTLS and smtp.upstream_tls = \"required\": nothing is relayed; enable TLS on the MTA"
            }
            IncidentKind::UpstreamTimeout => {
                "the upstream does not answer in time: clients get 4xx and retry; the MTA is overloaded or stuck"
            }
            IncidentKind::UpstreamLost => {
                "the upstream drops connections mid-conversation: clients get 4xx and retry"
            }
            IncidentKind::ClientTimeout => {
                "a client stops talking mid-session and is disconnected (421 timeout)"
            }
            IncidentKind::ClientGoneBeforeMail => {
                "a client connects and leaves before MAIL FROM (a probe, a scanner or a failing sender)"
            }
            IncidentKind::ClientTooManyErrors => {
                "a client sends too many bad commands and is disconnected (421)"
            }
            IncidentKind::ClientTls => "a client's TLS handshake with the relay fails",
        }
    }

    /// The incident an upstream failure is, if any. `NotConnected` is the
    /// echo of an earlier failure (already counted), not a new one.
    pub fn of_upstream(e: &UpstreamError) -> Option<IncidentKind> {
        Some(match &e.kind {
            ErrorKind::Unreachable(_) => IncidentKind::UpstreamUnreachable,
            ErrorKind::TimedOut(_) if e.phase == Step::Connect => IncidentKind::UpstreamUnreachable,
            ErrorKind::TimedOut(_) => IncidentKind::UpstreamTimeout,
            ErrorKind::Io(_) => IncidentKind::UpstreamLost,
            ErrorKind::Tls { .. } | ErrorKind::DataBeforeTls => IncidentKind::UpstreamTls,
            ErrorKind::StartTlsUnavailable(_) => IncidentKind::UpstreamStartTlsAbsent,
            ErrorKind::AgentAuth(_) => IncidentKind::UpstreamRefused,
            ErrorKind::NotConnected => return None,
        })
    }
}

/// One failure, with who was affected.
#[derive(Debug, Clone)]
pub struct Occurrence {
    pub kind: IncidentKind,
    /// The upstream's `host:port` (relay mode), also for client kinds.
    pub upstream: String,
    /// The upstream step that failed, or empty.
    pub step: String,
    /// The error, verbatim.
    pub error: String,
    /// The upstream's reply, when it gave one.
    pub reply: Option<(u16, String)>,
    pub client: SocketAddr,
    /// The local client's process, when known.
    pub pid: Option<u32>,
    pub process: String,
    pub timings: Option<PhaseTimings>,
}

impl Occurrence {
    /// An upstream failure seen by the session of `client`; `None` when it
    /// is not an incident of its own.
    pub fn upstream(e: &UpstreamError, client: SocketAddr) -> Option<Occurrence> {
        Some(Occurrence {
            kind: IncidentKind::of_upstream(e)?,
            upstream: e.addr.clone(),
            step: e.phase.name().into(),
            error: e.to_string(),
            reply: None,
            client,
            pid: None,
            process: String::new(),
            timings: None,
        })
    }

    /// The incident's scope within its kind.
    fn scope(&self) -> String {
        if self.kind.upstream_side() {
            self.upstream.clone()
        } else {
            self.client.ip().to_canonical().to_string()
        }
    }
}

/// The incident tracker of one SMTP capture and the writer of its records.
pub struct Incidents {
    tracker: Mutex<Tracker>,
    /// Records in the order the tracker made them, to the writer.
    tx: mpsc::UnboundedSender<IncidentEvent>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<IncidentEvent>>>,
    buffer: Arc<Buffer>,
    ctx: Arc<CaptureContext>,
    gaps: Arc<Gaps>,
}

impl Incidents {
    pub fn new(
        cfg: &SmtpConfig,
        buffer: Arc<Buffer>,
        ctx: Arc<CaptureContext>,
        gaps: Arc<Gaps>,
    ) -> Incidents {
        let ms = |secs: u64, floor: u64| i64::try_from(secs.max(floor) * 1000).unwrap_or(i64::MAX);
        let timing = Timing {
            quiet_ms: ms(cfg.incident_quiet_secs, MIN_QUIET_SECS),
            still_open_ms: ms(cfg.incident_still_open_secs, MIN_STILL_OPEN_SECS),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        Incidents {
            tracker: Mutex::new(Tracker::new(timing)),
            tx,
            rx: Mutex::new(Some(rx)),
            buffer,
            ctx,
            gaps,
        }
    }

    fn with_tracker<T>(
        &self,
        f: impl FnOnce(&mut Tracker, &mpsc::UnboundedSender<IncidentEvent>) -> T,
    ) -> T {
        let mut t = self.tracker.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut t, &self.tx)
    }

    /// Counts one occurrence (opening an incident if it is the first).
    pub fn occurred(&self, occ: Occurrence) {
        let now = self.ctx.clock.now_ms();
        self.with_tracker(|t, tx| {
            if let Some(rec) = t.occurred(occ, now) {
                tracing::warn!(kind = %rec.kind, upstream = %rec.upstream, client = %rec.client_ip, error = %rec.last_error, "relay incident opened (repeats are counted, not logged; kiroku search --kind incident)");
                let _ = tx.send(rec);
            }
        });
    }

    /// The upstream at `addr` answered a greeting and EHLO.
    pub fn upstream_ok(&self, addr: &str) {
        self.with_tracker(|t, tx| {
            for rec in t.upstream_ok(addr) {
                log_closed(&rec);
                let _ = tx.send(rec);
            }
        });
    }

    /// Writes the records until `stop` resolves, then closes every open
    /// incident ("agent stopped") and writes what is left. Runs once.
    pub async fn run(&self, stop: impl std::future::Future<Output = ()>) {
        let rx = self.rx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(mut rx) = rx else {
            return;
        };
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                Some(rec) = rx.recv() => self.write(rec).await,
                _ = tick.tick() => {
                    let now = self.ctx.clock.now_ms();
                    self.with_tracker(|t, tx| {
                        for rec in t.tick(now) {
                            if rec.state == "closed" {
                                log_closed(&rec);
                            }
                            let _ = tx.send(rec);
                        }
                    });
                }
                () = &mut stop => break,
            }
        }
        self.with_tracker(|t, tx| {
            for rec in t.close_all() {
                let _ = tx.send(rec);
            }
        });
        while let Ok(rec) = rx.try_recv() {
            self.write(rec).await;
        }
    }

    async fn write(&self, rec: IncidentEvent) {
        let what = format!("{} {} ({})", rec.kind, scope_of(&rec), rec.state);
        let ev = self.ctx.event_as(String::new(), Kind::Incident(rec));
        match self.buffer.append(&ev, None).await {
            Ok(_) => {}
            Err(e) if matches!(e, BufferError::Full { .. }) || e.unwritable() => {
                let missed = Missed {
                    path: Some(&what),
                    ..Missed::default()
                };
                if let Err(e2) = self.gaps.missed(Source::Incidents, missed).await {
                    tracing::error!(incident = %what, error = %e, count_error = %e2, "relay incident record lost: the buffer is full and the gap could not be counted");
                }
            }
            Err(e) => {
                tracing::error!(incident = %what, error = %e, "could not record a relay incident");
            }
        }
    }
}

fn scope_of(rec: &IncidentEvent) -> &str {
    if rec.kind.starts_with("upstream") {
        &rec.upstream
    } else {
        &rec.client_ip
    }
}

fn log_closed(rec: &IncidentEvent) {
    tracing::info!(kind = %rec.kind, scope = %scope_of(rec), count = rec.count, duration_ms = rec.last_ms - rec.first_ms, "relay incident closed");
}
