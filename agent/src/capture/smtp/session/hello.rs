//! HELO/EHLO (what the client is offered) and STARTTLS.

use kiroku_proto::Outcome;

use super::upstream::Caps;
use super::wire::Reply;
use super::{End, Phase, Session, TLS_TIMEOUT, temp_failure};
use crate::capture::smtp::{auth, tls};
use crate::config::UpstreamTls;

impl Session<'_> {
    pub(super) async fn hello(&mut self, line: &[u8], verb: &str) -> Result<(), End> {
        let arg = String::from_utf8_lossy(line.get(4..).unwrap_or_default())
            .trim()
            .to_owned();
        if arg.is_empty() || arg.contains(char::is_control) {
            return self
                .send(&Reply::new(501, &format!("5.5.4 Syntax: {verb} hostname")))
                .await;
        }
        // A new EHLO resets any transaction in progress.
        self.end_txn(Outcome::Aborted, None, "EHLO").await;
        let (reply, caps) = if self.relay() {
            if self.upstream.is_none()
                && let Err(r) = self.ensure_upstream().await
            {
                return self.send(&r).await;
            }
            let (Some(up), Some(settings)) = (self.upstream.as_mut(), self.cap.upstream.as_ref())
            else {
                return self.send(&temp_failure("no upstream connection")).await;
            };
            match up.hello(&arg, settings).await {
                Err(e) => {
                    self.upstream = None;
                    self.upstream_failed(&e);
                    tracing::warn!(peer = %self.peer, error = %e, "upstream unusable; client told to retry later");
                    return self
                        .send(&Reply::new(
                            421,
                            &format!(
                                "4.4.1 {} upstream mail server unavailable, try again later",
                                self.cap.hostname
                            ),
                        ))
                        .await;
                }
                Ok((r, _)) if !r.is_positive() => return self.send(&r).await,
                Ok((r, _)) => {
                    let caps = up.caps.clone();
                    self.upstream_works();
                    (r, caps)
                }
            }
        } else {
            let caps = Caps {
                greeting: format!("{} Kiroku capture-only", self.cap.hostname),
                lines: ["8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"]
                    .map(String::from)
                    .to_vec(),
            };
            (Reply::new(250, &caps.greeting), caps)
        };
        self.helo = Some(arg);
        self.esmtp = verb == "EHLO";
        let out = if verb == "EHLO" {
            self.client_ehlo(&caps)
        } else {
            let greeting = reply
                .lines
                .first()
                .and_then(|l| l.get(4..))
                .unwrap_or_default()
                .to_owned();
            Reply::new(250, &greeting)
        };
        self.send(&out).await
    }

    /// The EHLO reply for the client: the upstream's greeting line and only
    /// what both the upstream and the relay support.
    pub(super) fn client_ehlo(&self, caps: &Caps) -> Reply {
        let ours = self.cap.cfg.max_message_bytes;
        let theirs: u64 = caps.get("SIZE").and_then(|v| v.parse().ok()).unwrap_or(0);
        let size = if theirs == 0 { ours } else { theirs.min(ours) };
        let mut lines = vec![caps.greeting.clone(), format!("SIZE {size}")];
        for kw in ["8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "DSN"] {
            if let Some(args) = caps.get(kw) {
                lines.push(if args.is_empty() {
                    kw.to_owned()
                } else {
                    format!("{kw} {args}")
                });
            }
        }
        lines.push("PIPELINING".into());
        if self.cap.acceptor.is_some() && self.client_tls.is_empty() {
            lines.push("STARTTLS".into());
        }
        let mechs = self.auth_offer(caps);
        if !mechs.is_empty() {
            lines.push(format!("AUTH {}", mechs.join(" ")));
        }
        Reply::multi(250, &lines)
    }

    /// AUTH mechanisms passed through to the client: those the upstream
    /// offers and we can relay, unless the agent logs in itself, the client
    /// already authenticated, or the password would cross the network in
    /// clear.
    pub(super) fn auth_offer(&self, caps: &Caps) -> Vec<String> {
        let safe = !self.client_tls.is_empty()
            || self.peer.ip().is_loopback()
            || self.cap.cfg.allow_plaintext_auth;
        let relayed = self
            .cap
            .upstream
            .as_ref()
            .is_some_and(|s| s.credentials.is_none());
        // The client's password goes on to the upstream: only over TLS we
        // verified, or in plain text where the operator chose that
        // (`upstream_tls = "off"`). Opportunistic TLS that ended up plain
        // or unverified would hand it to anyone in the middle.
        let upstream_ok = self.cap.cfg.upstream_tls == UpstreamTls::Off
            || self
                .upstream
                .as_ref()
                .is_some_and(|u| !u.tls.is_empty() && !u.tls.ends_with("unverified"));
        if !relayed || !safe || !upstream_ok || self.auth.is_some() {
            return Vec::new();
        }
        caps.auth_mechanisms()
            .into_iter()
            .filter(|m| auth::RELAYED_MECHANISMS.contains(&m.as_str()))
            .collect()
    }

    pub(super) async fn starttls(&mut self, line: &[u8]) -> Result<bool, End> {
        if line.len() > "STARTTLS".len() {
            self.send(&Reply::new(501, "5.5.4 Syntax: STARTTLS"))
                .await?;
            return Ok(true);
        }
        let Some(acceptor) = self.cap.acceptor.clone() else {
            self.send(&Reply::new(
                502,
                "5.5.1 STARTTLS not offered (no certificate configured)",
            ))
            .await?;
            return Ok(true);
        };
        if !self.client_tls.is_empty() {
            self.send(&Reply::new(503, "5.5.1 TLS already active"))
                .await?;
            return Ok(true);
        }
        self.end_txn(Outcome::Aborted, None, "STARTTLS").await;
        self.send(&Reply::new(220, "2.0.0 Ready to start TLS"))
            .await?;
        // RFC 3207: anything the client sent after STARTTLS in plain text
        // would be taken as coming through TLS (CVE-2011-0411). Refuse.
        if !self.client.buffer().is_empty() {
            tracing::warn!(peer = %self.peer, "client pipelined plain text after STARTTLS (command injection); closing");
            return Ok(false);
        }
        let io = std::mem::replace(&mut self.client, tls::placeholder()).into_inner();
        // The handshake waits on the client: it counts as idle, so a client
        // that starts TLS and stalls can be made to give its slot up.
        self.slot.set(Phase::Idle);
        let accepted = tokio::select! {
            r = tokio::time::timeout(TLS_TIMEOUT, tls::accept(&acceptor, io)) => r,
            () = self.slot.evicted() => return Err(End::Evicted),
        };
        self.slot.set(Phase::Busy);
        match accepted {
            Ok(Ok((io, desc))) => {
                self.client = tls::conn(io);
                tracing::debug!(peer = %self.peer, tls = %desc, "client started TLS");
                self.client_tls = desc;
            }
            Ok(Err(e)) => return Err(End::ClientTls(e.to_string())),
            Err(_) => return Err(End::Timeout),
        }
        // Everything learnt before TLS is forgotten (RFC 3207 4.2); the
        // client must EHLO again. An upstream session that carried the
        // client's login is dropped with it.
        self.helo = None;
        self.esmtp = false;
        if self.auth.take().is_some() {
            self.upstream = None;
        }
        Ok(true)
    }
}
