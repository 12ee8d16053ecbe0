//! Talking to the upstream for the session: (re)connecting, relaying one
//! command, and the replies capture-only mode gives itself.

use super::upstream::{self, ErrorKind, Step, Upstream, UpstreamError};
use super::wire::Reply;
use super::{Session, temp_failure};

impl Session<'_> {
    pub(super) async fn connect_upstream(&mut self) -> Result<Reply, UpstreamError> {
        let Some(settings) = self.cap.upstream.as_ref() else {
            return Err(self.no_upstream(Step::Connect));
        };
        let (up, greeting) = Upstream::connect(settings).await?;
        self.upstream = Some(up);
        Ok(greeting)
    }

    /// Re-establishes a dropped upstream connection, replaying EHLO (with
    /// STARTTLS and the agent's login). A client's own AUTH cannot be
    /// replayed (we never keep secrets): such a client is told to reconnect.
    pub(super) async fn ensure_upstream(&mut self) -> Result<(), Reply> {
        if self.upstream.is_some() {
            return Ok(());
        }
        if self.auth.is_some() {
            return Err(Reply::new(
                421,
                "4.4.1 Upstream connection lost; reconnect and authenticate again",
            ));
        }
        let greeting = self.connect_upstream().await.map_err(|e| {
            self.upstream_failed(&e);
            temp_failure(e)
        })?;
        if greeting.code != 220 {
            self.upstream = None;
            self.upstream_refused(&greeting);
            return Err(temp_failure(format!(
                "upstream greeting: {}",
                greeting.text()
            )));
        }
        if let (Some(helo), Some(settings), Some(up)) = (
            self.helo.clone(),
            self.cap.upstream.as_ref(),
            self.upstream.as_mut(),
        ) {
            match up.hello(&helo, settings).await {
                Ok((r, _)) if r.is_positive() => self.upstream_works(),
                Ok((r, _)) => {
                    self.upstream = None;
                    return Err(temp_failure(format!("upstream EHLO: {}", r.text())));
                }
                Err(e) => {
                    self.upstream = None;
                    self.upstream_failed(&e);
                    return Err(temp_failure(e));
                }
            }
        }
        Ok(())
    }

    /// Sends `line` to the upstream, or answers it locally in capture-only
    /// mode. Upstream failures become a 4xx for the client.
    pub(super) async fn exchange(&mut self, line: &[u8], verb: &str) -> Reply {
        if !self.relay() {
            return self.local_reply(verb);
        }
        if let Err(r) = self.ensure_upstream().await {
            return r;
        }
        let limit = match verb {
            "DATA" => upstream::DATA_INIT_TIMEOUT,
            _ => upstream::COMMAND_TIMEOUT,
        };
        let Some(up) = self.upstream.as_mut() else {
            return temp_failure(self.no_upstream(Step::Command));
        };
        match up.command(line, limit).await {
            Ok(r) => {
                if r.code == 421 {
                    self.upstream = None;
                }
                r
            }
            Err(e) => {
                self.upstream = None;
                self.upstream_failed(&e);
                temp_failure(e)
            }
        }
    }

    /// The error for "there is no upstream connection to use".
    pub(super) fn no_upstream(&self, step: Step) -> UpstreamError {
        let addr = self.cap.upstream.as_ref().map_or("", |s| s.addr.as_str());
        UpstreamError::new(addr, step, ErrorKind::NotConnected)
    }

    pub(super) fn local_reply(&self, verb: &str) -> Reply {
        let host = &self.cap.hostname;
        match verb {
            "HELO" => Reply::new(250, host),
            "MAIL" => Reply::new(250, "2.1.0 Ok"),
            "RCPT" => Reply::new(250, "2.1.5 Ok"),
            "DATA" => Reply::new(354, "End data with <CR><LF>.<CR><LF>"),
            "RSET" | "NOOP" => Reply::new(250, "2.0.0 Ok"),
            "QUIT" => Reply::new(221, "2.0.0 Bye"),
            "VRFY" => Reply::new(252, "2.5.0 Cannot VRFY user, but will accept message"),
            "HELP" => Reply::new(
                214,
                "2.0.0 Kiroku capture-only: HELO EHLO STARTTLS MAIL RCPT DATA RSET NOOP QUIT",
            ),
            _ => Reply::new(502, "5.5.1 Command not implemented"),
        }
    }
}
