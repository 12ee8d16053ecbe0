//! The record of one AUTH attempt (`AuthEvent`, issue 20): mechanism, the
//! user the client claimed, how it ended, who the client is and over what.
//!
//! Invariant: nothing of the SASL exchange but the claimed user name is
//! kept. The user comes from the client's first SASL message only (for
//! LOGIN that is the user-name line; the password line that follows is
//! never decoded), through `smtp::auth::claimed_user`, which returns no
//! name that could carry anything else (control characters refused).

use std::time::Instant;

use kiroku_proto::{AuthEvent, event::Kind};

use super::super::Session;
use crate::buffer::BufferError;
use crate::capture::smtp::auth;
use crate::gaps::{Missed, Source};

/// An AUTH attempt in progress.
pub(in crate::capture::smtp::session) struct Attempt {
    mechanism: String,
    /// Empty until read (and when it cannot be read).
    claimed_user: String,
    started: Instant,
}

impl Attempt {
    /// `mechanism` as the client named it; a word that is no SASL
    /// mechanism name (RFC 4422 3.1: up to 20 of A-Z, 0-9, `-`, `_`) is
    /// recorded as "(invalid)", so no client text of any length or shape
    /// (a credential sent in the wrong place) reaches the record.
    pub fn new(mechanism: &str, started: Instant) -> Attempt {
        let valid = (1..=20).contains(&mechanism.len())
            && mechanism
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        Attempt {
            mechanism: if valid || mechanism.is_empty() {
                mechanism.to_owned()
            } else {
                "(invalid)".to_owned()
            },
            claimed_user: String::new(),
            started,
        }
    }

    /// Takes the claimed user from the client's first SASL message, once.
    pub fn user_from(&mut self, first: Option<&[u8]>) {
        if self.claimed_user.is_empty()
            && let Some(u) = first.and_then(|f| auth::claimed_user(&self.mechanism, f))
        {
            self.claimed_user = u;
        }
    }

    /// The claimed user, "unknown" when it could not be read (as the mail
    /// records say).
    pub fn user_or_unknown(&self) -> String {
        if self.claimed_user.is_empty() {
            "unknown".into()
        } else {
            self.claimed_user.clone()
        }
    }
}

impl Session<'_> {
    /// Records the attempt as it ended: `code` is the reply the client got
    /// (the upstream's, or ours when we refused it; 0 when the exchange
    /// broke off), `reply` its text or what went wrong.
    pub(in crate::capture::smtp::session) async fn record_auth(
        &self,
        attempt: &Attempt,
        code: u16,
        reply: &str,
    ) {
        let local = self.local_peer.as_ref();
        let success = code == 235;
        let event = AuthEvent {
            mechanism: attempt.mechanism.clone(),
            claimed_user: attempt.claimed_user.clone(),
            success,
            reply_code: u32::from(code),
            reply: reply.to_owned(),
            client_ip: self.peer.ip().to_string(),
            client_port: u32::from(self.peer.port()),
            pid: local.and_then(|p| p.pid).unwrap_or(0),
            process: local.map(|p| p.application.clone()).unwrap_or_default(),
            upstream: self.cap.cfg.upstream.clone().unwrap_or_default(),
            client_tls: self.client_tls.clone(),
            upstream_tls: self
                .upstream
                .as_ref()
                .map(|u| u.tls.clone())
                .unwrap_or_default(),
            duration_ms: u64::try_from(attempt.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        // Who the record is by: a local client's socket owner (as for its
        // mail); a remote client only by a login the upstream accepted — a
        // refused claim is not an identity (it stays in `claimed_user`).
        let is_local = self.cap.cfg.is_local_client(self.peer.ip());
        let ev = match local {
            Some(p) if is_local => self.cap.ctx.event(p.user.clone(), Kind::Auth(event)),
            _ if is_local => self.cap.ctx.event(String::new(), Kind::Auth(event)),
            _ => {
                let user = if success {
                    attempt.claimed_user.clone()
                } else {
                    String::new()
                };
                self.cap.ctx.event_as(user, Kind::Auth(event))
            }
        };
        match self.cap.buffer.append(&ev, None).await {
            Ok(_) => {}
            // Counted as a gap (source `auth`) so a count of failed logins
            // says it is incomplete.
            Err(e) if matches!(e, BufferError::Full { .. }) || e.unwritable() => {
                let what = format!(
                    "{} {} {} ({})",
                    self.peer.ip(),
                    attempt.mechanism,
                    attempt.claimed_user,
                    if success { "succeeded" } else { "failed" }
                );
                let missed = Missed {
                    path: Some(&what),
                    ..Missed::default()
                };
                if let Err(e2) = self.cap.gaps.missed(Source::Auth, missed).await {
                    tracing::error!(peer = %self.peer, error = %e, count_error = %e2, "AUTH attempt record lost: the buffer refused it and the gap could not be counted");
                }
            }
            Err(e) => {
                tracing::error!(peer = %self.peer, mechanism = %attempt.mechanism, error = %e, "could not record an AUTH attempt");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::smtp::auth::b64;

    #[test]
    fn claimed_user_never_the_secret() {
        // (mechanism, first SASL message, claimed user kept)
        let cases = [
            ("PLAIN", b64("\0alice\0s3cret-pw"), "alice"),
            ("PLAIN", b64("boss\0alice\0s3cret-pw"), "alice (as boss)"),
            ("LOGIN", b64("bob"), "bob"),
            // Not base64 / not a PLAIN triple: nothing is kept.
            ("PLAIN", "s3cret-pw".to_owned(), ""),
            ("PLAIN", b64("alice-only"), ""),
            ("LOGIN", b64("bad\nname"), ""),
            ("CRAM-MD5", b64("alice 0123abcd"), ""),
        ];
        for (mech, first, want) in cases {
            let mut a = Attempt::new(mech, Instant::now());
            a.user_from(Some(first.as_bytes()));
            assert_eq!(a.claimed_user, want, "{mech} {first}");
            assert!(!a.claimed_user.contains("s3cret"), "{mech}");
        }
        // The first message wins: a LOGIN password line offered later is
        // never decoded into the user.
        let mut a = Attempt::new("LOGIN", Instant::now());
        a.user_from(Some(b64("carol").as_bytes()));
        a.user_from(Some(b64("s3cret-pw").as_bytes()));
        assert_eq!(a.claimed_user, "carol");
        let mut none = Attempt::new("LOGIN", Instant::now());
        none.user_from(None);
        assert_eq!(none.user_or_unknown(), "unknown");
    }

    #[test]
    fn mechanism_names_only() {
        for (given, kept) in [
            ("PLAIN", "PLAIN"),
            ("SCRAM-SHA-256", "SCRAM-SHA-256"),
            ("", ""),
            // The session upper-cases what the client sent; anything that
            // is no mechanism name is not kept.
            ("AGFSAWNLAHMZY3JLDA==", "(invalid)"),
            ("A-VERY-LONG-MECHANISM-NAME", "(invalid)"),
            ("PL\u{1b}[2J", "(invalid)"),
        ] {
            assert_eq!(
                Attempt::new(given, Instant::now()).mechanism,
                kept,
                "{given:?}"
            );
        }
    }
}
