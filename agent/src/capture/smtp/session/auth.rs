//! AUTH passed through to the upstream. Every attempt the session
//! answers is recorded as an `AuthEvent` (`auth/record.rs`).

mod record;

use std::time::Instant;

use record::Attempt;

use super::upstream;
use super::wire::Reply;
use super::{End, MAX_AUTH_LINE, Session, temp_failure};

impl Session<'_> {
    /// AUTH relayed to the upstream as opaque lines: initial response or
    /// continuations, `*` cancel, XOAUTH2's error continuation. Only the
    /// claimed user name is kept; nothing else of the exchange is stored
    /// or logged; each attempt is recorded with that user and how it
    /// ended.
    pub(super) async fn auth(&mut self, line: &[u8]) -> Result<(), End> {
        let started = Instant::now();
        let text = String::from_utf8_lossy(line).into_owned();
        let mut words = text.split_whitespace().skip(1);
        let mech = words.next().unwrap_or("").to_ascii_uppercase();
        let initial = words.next().map(|s| s.as_bytes().to_vec());
        let offered = match self.upstream.as_ref() {
            Some(up) if self.relay() && self.helo.is_some() => self.auth_offer(&up.caps),
            _ => Vec::new(),
        };
        let refusal = if self.helo.is_none() {
            Some(Reply::new(503, "5.5.1 Send EHLO first"))
        } else if self.auth.is_some() {
            Some(Reply::new(503, "5.5.1 Already authenticated"))
        } else if self.txn.is_some() {
            Some(Reply::new(
                503,
                "5.5.1 AUTH not permitted during a mail transaction",
            ))
        } else if mech.is_empty() {
            Some(Reply::new(
                501,
                "5.5.4 Syntax: AUTH mechanism [initial-response]",
            ))
        } else if offered.is_empty() {
            let plain_remote = self.client_tls.is_empty() && !self.peer.ip().is_loopback();
            Some(if plain_remote && self.cap.acceptor.is_some() {
                Reply::new(538, "5.7.11 Encryption required: STARTTLS first")
            } else {
                Reply::new(502, "5.5.1 AUTH not available")
            })
        } else if !offered.contains(&mech) {
            Some(Reply::new(
                504,
                &format!(
                    "5.5.4 Unrecognized authentication type; offered: {}",
                    offered.join(" ")
                ),
            ))
        } else {
            None
        };
        let mut first = initial.filter(|i| i.as_slice() != b"=");
        let mut attempt = Attempt::new(&mech, started);
        if let Some(r) = refusal {
            attempt.user_from(first.as_deref());
            self.record_auth(&attempt, r.code, &r.text()).await;
            return self.send(&r).await;
        }
        let mut reply = match self.auth_command(line).await {
            Ok(r) => r,
            Err(why) => return self.auth_failed(&mut attempt, first, why).await,
        };
        while reply.code == 334 {
            self.send(&reply).await?;
            let answer = match self.read_client_line(MAX_AUTH_LINE).await {
                Ok(a) => a,
                Err(e) => {
                    // The client went away (or timed out) mid-exchange:
                    // still an attempt, recorded before the session ends.
                    attempt.user_from(first.as_deref());
                    let why = format!("client ended the exchange: {e}");
                    self.record_auth(&attempt, 0, &why).await;
                    return Err(e);
                }
            };
            if first.is_none() && answer.as_slice() != b"*" {
                first = Some(answer.clone());
            }
            reply = match self.auth_command(&answer).await {
                Ok(r) => r,
                Err(why) => return self.auth_failed(&mut attempt, first, why).await,
            };
        }
        attempt.user_from(first.as_deref());
        let user = attempt.user_or_unknown();
        if reply.code == 235 {
            tracing::info!(peer = %self.peer, user = %user, mechanism = %mech, "client authenticated to the upstream through the relay");
            self.record_auth(&attempt, reply.code, &reply.text()).await;
            self.auth = Some((user, mech));
        } else {
            tracing::info!(peer = %self.peer, user = %user, mechanism = %mech, code = reply.code, "upstream refused the client's authentication");
            self.record_auth(&attempt, reply.code, &reply.text()).await;
        }
        self.send(&reply).await
    }

    /// One line of the SASL exchange to the upstream and its reply; on
    /// failure the connection is dropped and the error described.
    async fn auth_command(&mut self, line: &[u8]) -> Result<Reply, String> {
        let Some(up) = self.upstream.as_mut() else {
            return Err("no upstream connection".into());
        };
        let r = match up.send_line(line).await {
            Ok(()) => up.reply(upstream::COMMAND_TIMEOUT).await,
            Err(e) => Err(e),
        };
        r.map_err(|e| {
            self.upstream = None;
            e.to_string()
        })
    }

    /// The upstream failed mid-exchange: recorded, and the client told to
    /// retry.
    async fn auth_failed(
        &mut self,
        attempt: &mut Attempt,
        first: Option<Vec<u8>>,
        why: String,
    ) -> Result<(), End> {
        attempt.user_from(first.as_deref());
        self.record_auth(attempt, 0, &why).await;
        self.send(&temp_failure(why)).await
    }
}

#[cfg(test)]
mod tests;
