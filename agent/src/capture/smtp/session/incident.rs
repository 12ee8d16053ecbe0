//! The session's side of relay incidents: each failure that is one is
//! reported to the capture's tracker (`super::incidents`) with who was
//! affected; the tracker coalesces. Upstream failures are reported where
//! they are caught; client-side ones when the session ends.

use kiroku_proto::PhaseTimings;

use super::upstream::UpstreamError;
use super::wire::{Reply, WireError};
use super::{End, MAX_ERRORS, Session};
use crate::capture::smtp::incidents::{IncidentKind, Occurrence};

impl Session<'_> {
    /// An upstream failure (an incident unless it only echoes an earlier
    /// one).
    pub(super) fn upstream_failed(&self, e: &UpstreamError) {
        if let Some(occ) = Occurrence::upstream(e, self.peer) {
            self.report(occ);
        }
    }

    /// The upstream greeted with something other than 220.
    pub(super) fn upstream_refused(&self, greeting: &Reply) {
        let occ = Occurrence {
            kind: IncidentKind::UpstreamRefused,
            upstream: self.upstream_addr().to_owned(),
            step: "greeting".into(),
            error: format!(
                "upstream {} refused the connection at its greeting: {}",
                self.upstream_addr(),
                greeting.text()
            ),
            reply: Some((greeting.code, greeting.text())),
            client: self.peer,
            pid: None,
            process: String::new(),
            timings: None,
        };
        self.report(occ);
    }

    /// The upstream answered a greeting and EHLO: its incidents are over.
    pub(super) fn upstream_works(&self) {
        self.cap.incidents.upstream_ok(self.upstream_addr());
    }

    /// The session is over: a client-side failure is an incident.
    pub(super) fn session_ended(&self, end: &Result<(), End>) {
        let kind = match end {
            Err(End::Timeout) => IncidentKind::ClientTimeout,
            Err(End::ClientTls(_)) => IncidentKind::ClientTls,
            Err(End::TooManyErrors) => IncidentKind::ClientTooManyErrors,
            Err(End::Client(WireError::Closed | WireError::Io(_)) | End::Io(_))
                if !self.mail_seen && self.said_anything =>
            {
                IncidentKind::ClientGoneBeforeMail
            }
            _ => return,
        };
        let error = match end {
            Err(e) => e.to_string(),
            Ok(()) => String::new(),
        };
        self.report(Occurrence {
            kind,
            upstream: self.upstream_addr().to_owned(),
            step: String::new(),
            error: format!("client {}: {error}", self.peer),
            reply: None,
            client: self.peer,
            pid: None,
            process: String::new(),
            timings: None,
        });
    }

    /// Answers a bad command and counts it; past [`MAX_ERRORS`] the client
    /// is told to go.
    pub(super) async fn bad_command(&mut self, reply: Reply) -> Result<(), End> {
        self.send(&reply).await?;
        self.count_error().await
    }

    /// Counts a bad command already answered.
    pub(super) async fn count_error(&mut self) -> Result<(), End> {
        self.errors += 1;
        if self.errors < MAX_ERRORS {
            return Ok(());
        }
        self.send(&Reply::new(421, "4.7.0 Too many errors, closing"))
            .await?;
        Err(End::TooManyErrors)
    }

    fn upstream_addr(&self) -> &str {
        self.cap.upstream.as_ref().map_or("", |s| s.addr.as_str())
    }

    /// Adds who was affected and how long the session had run, and hands
    /// the occurrence to the tracker.
    fn report(&self, mut occ: Occurrence) {
        if let Some(p) = &self.local_peer {
            occ.pid = p.pid;
            occ.process = p.application.clone();
        }
        occ.timings = Some(PhaseTimings {
            total_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            ..Default::default()
        });
        self.cap.incidents.occurred(occ);
    }
}
