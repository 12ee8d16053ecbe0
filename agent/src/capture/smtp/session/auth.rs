//! AUTH passed through to the upstream.

use super::upstream;
use super::wire::Reply;
use super::{End, MAX_AUTH_LINE, Session, temp_failure};
use crate::capture::smtp::auth;

impl Session<'_> {
    /// AUTH relayed to the upstream as opaque lines: initial response or
    /// continuations, `*` cancel, XOAUTH2's error continuation. Only the
    /// claimed user name is kept; nothing else of the exchange is stored
    /// or logged.
    pub(super) async fn auth(&mut self, line: &[u8]) -> Result<(), End> {
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
        if let Some(r) = refusal {
            return self.send(&r).await;
        }
        let Some(up) = self.upstream.as_mut() else {
            return self.send(&temp_failure("no upstream connection")).await;
        };
        let mut first = initial.filter(|i| i.as_slice() != b"=");
        let mut reply = match up.command(line, upstream::COMMAND_TIMEOUT).await {
            Ok(r) => r,
            Err(e) => {
                self.upstream = None;
                return self.send(&temp_failure(e)).await;
            }
        };
        while reply.code == 334 {
            self.send(&reply).await?;
            let answer = self.read_client_line(MAX_AUTH_LINE).await?;
            if first.is_none() && answer.as_slice() != b"*" {
                first = Some(answer.clone());
            }
            let Some(up) = self.upstream.as_mut() else {
                return self.send(&temp_failure("no upstream connection")).await;
            };
            let next = match up.send_line(&answer).await {
                Ok(()) => up.reply(upstream::COMMAND_TIMEOUT).await,
                Err(e) => Err(e),
            };
            reply = match next {
                Ok(r) => r,
                Err(e) => {
                    self.upstream = None;
                    return self.send(&temp_failure(e)).await;
                }
            };
        }
        if reply.code == 235 {
            let user = first
                .and_then(|f| auth::claimed_user(&mech, &f))
                .unwrap_or_else(|| "unknown".into());
            tracing::info!(peer = %self.peer, user = %user, mechanism = %mech, "client authenticated to the upstream through the relay");
            self.auth = Some((user, mech));
        } else {
            tracing::info!(peer = %self.peer, mechanism = %mech, code = reply.code, "upstream refused the client's authentication");
        }
        self.send(&reply).await
    }
}
