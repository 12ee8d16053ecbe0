//! What a session records: the envelope, the event of a transaction
//! ended without content, the event built from a spooled message.

use kiroku_common::mail::user_source;
use kiroku_proto::{EmailEvent, Event, Outcome, event::Kind};

use super::wire::Reply;
use super::{Session, Txn};
use crate::buffer::{BufferError, Spooled};
use crate::capture::smtp::{peer, record};
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
                Some(u) => (u.clone(), kiroku_common::mail::AGENT_CREDENTIALS.into()),
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
        // What the content showed (repairs, conflicting file names) is
        // searchable as tags, as the line-ending normalisation is.
        let tags = record::tags(&email);
        let mut ev = self.event(email);
        ev.tags.extend(tags.into_iter().map(str::to_owned));
        ev
    }

    /// The event of a transaction, attributed to a user (see [`attribute`]),
    /// with its timings so far.
    pub(super) fn event(&self, mut email: EmailEvent) -> Event {
        email.timings = Some(self.phases.record());
        email.upstream_name = self.phases.upstream_name.clone();
        let local = self.cap.cfg.is_local_client(self.peer.ip());
        match attribute(local, self.local_peer.as_ref(), &email) {
            Attribution::Local(p) => {
                email.application = p.application.clone();
                email.user_source = user_source::LOCAL_SOCKET.into();
                self.cap.ctx.event(p.user.clone(), Kind::Email(email))
            }
            // A local client whose socket owner was not found: the
            // agent's account, as for any record without a better one.
            Attribution::LocalUnknown => self.cap.ctx.event(String::new(), Kind::Email(email)),
            Attribution::Remote { user, source } => {
                email.user_source = source.into();
                self.cap.ctx.event_as(user, Kind::Email(email))
            }
        }
    }
}

/// Who a transaction is attributed to.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Attribution<'a> {
    /// A client on this host: the owner of its socket.
    Local(&'a peer::LocalPeer),
    /// A client on this host whose socket owner was not found.
    LocalUnknown,
    /// A client on another machine: its SMTP AUTH login, or nobody.
    Remote { user: String, source: &'static str },
}

/// The user of a transaction: for a client on this host
/// (`smtp.local_clients`) the owner of its socket; for a client on another
/// machine its own SMTP AUTH login, else nobody — never the agent's
/// account, which would count all mail from a network under the service
/// the agent runs as, and never the agent's own smarthost login.
pub(super) fn attribute<'a>(
    local: bool,
    peer: Option<&'a peer::LocalPeer>,
    email: &EmailEvent,
) -> Attribution<'a> {
    match (local, peer) {
        (true, Some(p)) => Attribution::Local(p),
        (true, None) => Attribution::LocalUnknown,
        (false, _)
            if !email.auth_user.is_empty()
                && email.auth_mechanism != kiroku_common::mail::AGENT_CREDENTIALS =>
        {
            Attribution::Remote {
                user: email.auth_user.clone(),
                source: user_source::SMTP_AUTH,
            }
        }
        (false, _) => Attribution::Remote {
            user: String::new(),
            source: user_source::REMOTE_UNKNOWN,
        },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_a_transaction_is_attributed_to() {
        let p = peer::LocalPeer {
            uid: Some(1000),
            user: "alice".into(),
            ..Default::default()
        };
        let mail = |user: &str, mech: &str| EmailEvent {
            auth_user: user.into(),
            auth_mechanism: mech.into(),
            ..Default::default()
        };
        let remote = |user: &str, source| Attribution::Remote {
            user: user.into(),
            source,
        };
        for (local, peer, email, want) in [
            (true, Some(&p), mail("", ""), Attribution::Local(&p)),
            (true, Some(&p), mail("bob", "PLAIN"), Attribution::Local(&p)),
            (true, None, mail("", ""), Attribution::LocalUnknown),
            (
                false,
                None,
                mail("bob", "PLAIN"),
                remote("bob", user_source::SMTP_AUTH),
            ),
            (
                false,
                None,
                mail("", ""),
                remote("", user_source::REMOTE_UNKNOWN),
            ),
            (
                false,
                None,
                mail("relay", kiroku_common::mail::AGENT_CREDENTIALS),
                remote("", user_source::REMOTE_UNKNOWN),
            ),
        ] {
            assert_eq!(attribute(local, peer, &email), want, "{email:?}");
        }
    }
}
