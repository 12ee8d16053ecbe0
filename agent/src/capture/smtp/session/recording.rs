//! What a session records: the envelope, the event of a transaction
//! ended without content, the event built from a spooled message.

use kiroku_proto::{EmailEvent, Event, Outcome, event::Kind};

use super::wire::Reply;
use super::{Session, Txn};
use crate::buffer::{BufferError, Spooled};
use crate::capture::smtp::record;
use crate::gaps::{Missed, Source};

impl Session<'_> {
    /// A record could not be written: logged, and counted as a gap when
    /// the buffer is full and mail goes on unrecorded.
    pub(super) async fn not_recorded(&self, env: &record::Envelope, e: &BufferError, what: &str) {
        if matches!(e, BufferError::Full { .. }) && self.may_relay_unrecorded() {
            let missed = Missed {
                sender: Some(&env.mail_from),
                recipients: &[],
                path: None,
            };
            if self.cap.gaps.missed(Source::Smtp, missed).await.is_ok() {
                return;
            }
        }
        tracing::error!(peer = %self.peer, error = %e, "could not record {what}");
    }

    pub(super) fn envelope(&self, txn: Txn) -> record::Envelope {
        let (auth_user, auth_mechanism) = match (&self.auth, self.upstream.as_ref()) {
            (Some((u, m)), _) => (u.clone(), m.clone()),
            (None, Some(up)) => match &up.agent_auth {
                Some(u) => (u.clone(), "agent-credentials".into()),
                None => Default::default(),
            },
            _ => Default::default(),
        };
        record::Envelope {
            helo: self.helo.clone().unwrap_or_default(),
            esmtp: self.esmtp,
            mail_from: txn.mail_from,
            mail_params: txn.mail_params,
            rcpt: txn.rcpt,
            client_ip: self.peer.ip().to_string(),
            client_port: u32::from(self.peer.port()),
            client_host: self.client_host.clone(),
            client_tls: self.client_tls.clone(),
            upstream: self.cap.cfg.upstream.clone().unwrap_or_default(),
            upstream_tls: self
                .upstream
                .as_ref()
                .map(|u| u.tls.clone())
                .unwrap_or_default(),
            auth_user,
            auth_mechanism,
        }
    }

    /// Records the open transaction, if any, as ended without content:
    /// refused by the upstream (`reply`) or abandoned by the client.
    pub(super) async fn end_txn(&mut self, outcome: Outcome, reply: Option<&Reply>, stage: &str) {
        let Some(txn) = self.txn.take() else { return };
        let env = self.envelope(txn);
        let mut email = record::envelope_only(&env);
        email.outcome = outcome as i32;
        email.ended_at = stage.into();
        if let Some(r) = reply {
            email.reply_code = u32::from(r.code);
            email.upstream_reply = r.text();
        }
        let ev = self.event(email);
        tracing::info!(peer = %self.peer, stage, outcome = ?outcome, "transaction ended without a message; recorded");
        if let Err(e) = self.cap.buffer.append(&ev, None).await {
            self.not_recorded(&env, &e, "an unfinished transaction")
                .await;
        }
    }

    /// The record of a transaction whose content is in `spooled` (parsed
    /// off the async threads).
    pub(super) async fn build_event(
        &self,
        env: &record::Envelope,
        spooled: Option<&Spooled>,
    ) -> Event {
        let env2 = env.clone();
        let content = spooled.map(|s| match s.bytes() {
            Some(b) => Err(b.clone()),
            None => Ok((s.path().to_owned(), s.size, s.sha256.clone())),
        });
        let email = tokio::task::spawn_blocking(move || match content {
            Some(Ok((path, size, sha))) => record::build_from_file(&env2, &path, size, &sha),
            Some(Err(bytes)) => record::build(&env2, &bytes),
            None => record::build(&env2, b""),
        })
        .await
        .unwrap_or_else(|_| EmailEvent {
            parse_warnings: vec!["record builder failed".into()],
            ..record::envelope_only(env)
        });
        self.event(email)
    }

    pub(super) fn event(&self, mut email: EmailEvent) -> Event {
        let user = match &self.local_peer {
            Some(p) => {
                email.application = p.application.clone();
                p.user.clone()
            }
            None => String::new(),
        };
        self.cap.ctx.event(user, Kind::Email(email))
    }
}

/// Tag of a record whose raw message is not the client's bytes: bare CR /
/// bare LF were converted to CRLF (`smtp.bare_line_endings = "normalise"`).
pub const NORMALISED_TAG: &str = kiroku_common::vocabulary::NORMALISED_LINE_ENDINGS;

/// Marks a record whose content was normalised (`what` names what was
/// converted; empty: nothing was), in the email record and as a tag.
pub(super) fn mark_normalised(ev: &mut Event, what: &str) {
    if what.is_empty() {
        return;
    }
    if let Some(Kind::Email(m)) = &mut ev.kind {
        m.line_endings_normalised = what.to_owned();
    }
    ev.tags.push(NORMALISED_TAG.to_owned());
}
