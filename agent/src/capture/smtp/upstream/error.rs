//! What can go wrong with the upstream, typed: the session turns each into
//! a reply for its client, and (issue 20) into a relay incident of the
//! matching kind, so nothing downstream has to parse an error string.

use std::fmt;
use std::time::Duration;

/// The phase of the upstream conversation a failure happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Connect,
    Greeting,
    Ehlo,
    StartTls,
    /// The agent's own smarthost login (`smtp.upstream_auth`).
    AgentAuth,
    Command,
    Data,
    EndOfData,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::Connect => "connect",
            Step::Greeting => "greeting",
            Step::Ehlo => "ehlo",
            Step::StartTls => "starttls",
            Step::AgentAuth => "agent_auth",
            Step::Command => "command",
            Step::Data => "data",
            Step::EndOfData => "end_of_data",
        }
    }
}

/// One failure talking to the upstream at `addr`.
#[derive(Debug, Clone)]
pub struct UpstreamError {
    /// The upstream's `host:port` as configured.
    pub addr: String,
    pub phase: Step,
    pub kind: ErrorKind,
}

#[derive(Debug, Clone)]
pub enum ErrorKind {
    /// No TCP connection (refused, unreachable, name not resolved).
    Unreachable(String),
    /// No answer within the RFC 5321 limit for the phase.
    TimedOut(Duration),
    /// The connection broke (reset, closed, unreadable reply).
    Io(String),
    /// The TLS handshake failed; `verify` says whether the certificate
    /// was being checked (a verification failure is then likely).
    Tls { error: String, verify: bool },
    /// `smtp.upstream_tls = "required"` and the upstream does not offer
    /// STARTTLS, refused it, or refused EHLO.
    StartTlsUnavailable(String),
    /// The upstream sent bytes before the TLS handshake (STARTTLS
    /// injection).
    DataBeforeTls,
    /// The agent's own smarthost login was refused or impossible.
    AgentAuth(String),
    /// There was no upstream connection to use (it was dropped after an
    /// earlier failure, or a pipelined group lost it).
    NotConnected,
}

impl UpstreamError {
    pub fn new(addr: &str, phase: Step, kind: ErrorKind) -> UpstreamError {
        UpstreamError {
            addr: addr.to_owned(),
            phase,
            kind,
        }
    }

    /// A short, stable name for the failure ("unreachable", "timeout",
    /// "tls", "starttls_unavailable", ...), for records and counting.
    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            ErrorKind::Unreachable(_) => "unreachable",
            ErrorKind::TimedOut(_) => "timeout",
            ErrorKind::Io(_) => "connection_lost",
            ErrorKind::Tls { .. } => "tls",
            ErrorKind::StartTlsUnavailable(_) => "starttls_unavailable",
            ErrorKind::DataBeforeTls => "data_before_tls",
            ErrorKind::AgentAuth(_) => "agent_auth",
            ErrorKind::NotConnected => "not_connected",
        }
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addr = &self.addr;
        match &self.kind {
            ErrorKind::Unreachable(e) => write!(f, "cannot connect to upstream {addr}: {e}"),
            ErrorKind::TimedOut(limit) => match self.phase {
                Step::Connect => write!(f, "connecting to upstream {addr} timed out"),
                Step::StartTls => write!(f, "TLS handshake with upstream {addr} timed out"),
                Step::Data => write!(f, "upstream {addr} stopped reading message data"),
                _ => write!(
                    f,
                    "upstream {addr} did not answer in {}s ({})",
                    limit.as_secs(),
                    self.phase.name()
                ),
            },
            ErrorKind::Io(e) => write!(f, "upstream {addr}: {e}"),
            ErrorKind::Tls { error, verify } => {
                let hint = if *verify {
                    " (check smtp.upstream_ca and smtp.upstream_tls_name)"
                } else {
                    ""
                };
                write!(f, "TLS with upstream {addr} failed: {error}{hint}")
            }
            ErrorKind::StartTlsUnavailable(why) => write!(
                f,
                "upstream {addr} {why} and smtp.upstream_tls = \"required\""
            ),
            ErrorKind::DataBeforeTls => write!(
                f,
                "upstream {addr} sent data before the TLS handshake (possible STARTTLS injection); giving up"
            ),
            ErrorKind::AgentAuth(why) => write!(f, "upstream {addr} {why}"),
            ErrorKind::NotConnected => write!(f, "no connection to upstream {addr}"),
        }
    }
}

impl std::error::Error for UpstreamError {}
