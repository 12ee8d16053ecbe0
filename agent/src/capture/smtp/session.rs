//! One client connection: the SMTP command state machine of the relay (or
//! of capture-only mode). Commands are handled in the order the client
//! sent them, each relayed to the upstream and answered with the
//! upstream's reply before the next is read — except a group the client
//! pipelined (RFC 2920: MAIL, RCPTs, DATA last), which goes to an upstream
//! that offered PIPELINING in one write, its replies read one by one and
//! returned in order. The upstream never sees pipelining it did not offer,
//! and commands go to it as the lines we parsed, CRLF added by us.
//!
//! Every transaction is recorded: delivered or refused at end-of-data (with
//! the message), refused at MAIL, RCPT or DATA, or abandoned by the client
//! (RSET, QUIT, a new EHLO, disconnect, timeout) — the last ones with their
//! envelope only.
//!
//! This file holds the session, its replies and the command loop; each
//! verb has its own file (as Stalwart's `inbound/`): `hello.rs` (HELO,
//! EHLO, STARTTLS), `auth.rs` (AUTH passed through), `mail.rs` (MAIL,
//! RCPT), `pipeline.rs` (a group pipelined behind MAIL), `data.rs` (DATA
//! to the upstream's final answer); `relay.rs` talks to the upstream,
//! `recording.rs` builds what is recorded and `incident.rs` reports the
//! failures that are relay incidents (`super::incidents`).

mod auth;
mod data;
mod hello;
mod incident;
mod mail;
mod pipeline;
mod recording;
mod relay;
#[cfg(test)]
mod tests;
mod timing;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kiroku_proto::{Outcome, Recipient};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::slots::{Phase, Slot};
use super::upstream::{self, Upstream, UpstreamError};
use super::wire::{self, Reply, WireError};
use super::{SmtpCapture, peer, record, tls};
use crate::buffer::BufferError;
use crate::config::SmtpMode;
use timing::Phases;

/// The waits for a command, for each block of data, for the whole data
/// and its slowest rate come from the config (`smtp.command_timeout_secs`,
/// `smtp.data_block_timeout_secs`, `smtp.data_timeout_secs`,
/// `smtp.data_min_rate_bytes_per_sec`).
const TLS_TIMEOUT: Duration = Duration::from_secs(60);
/// No connection lives longer than this, however busy: a client cannot pin
/// a session slot forever.
const MAX_SESSION: Duration = Duration::from_secs(3600);
/// SASL lines (XOAUTH2 tokens are long).
const MAX_AUTH_LINE: usize = 16 * 1024;
const REVERSE_DNS_TIMEOUT: Duration = Duration::from_secs(5);
/// Bad commands a client may send before it is disconnected (Postfix's
/// `smtpd_hard_error_limit`).
const MAX_ERRORS: u32 = 20;

/// Serves one client connection to its end. An unfinished transaction is
/// recorded as aborted. `slot` is the connection slot it holds (and tells
/// what it is doing, so that an idle or stalled session can be told to make
/// room for a newcomer).
pub async fn run(
    cap: &SmtpCapture,
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    slot: Slot,
) {
    let (local_peer, client_host) = identify(cap.cfg.is_local_client(peer.ip()), peer, local).await;
    let mut s = Session {
        cap,
        client: tls::conn(stream),
        client_tls: String::new(),
        peer,
        local_peer,
        client_host,
        upstream: None,
        helo: None,
        esmtp: false,
        auth: None,
        txn: None,
        phases: Phases::default(),
        outcome_flush: None,
        closing: false,
        started: Instant::now(),
        slot,
        mail_seen: false,
        said_anything: false,
        errors: 0,
    };
    let end = s.serve().await;
    s.session_ended(&end);
    let stage = match &end {
        Err(End::Timeout | End::Evicted) => "TIMEOUT",
        _ => "DISCONNECT",
    };
    s.end_txn(Outcome::Aborted, None, stage).await;
    s.outcome_durable().await;
    if let Err(e) = end {
        tracing::debug!(peer = %peer, error = %e, "SMTP session ended");
    }
}

/// The process and user behind a client on this host (`smtp.local_clients`),
/// or the reverse DNS name of a remote one.
async fn identify(
    is_local: bool,
    peer: SocketAddr,
    local: SocketAddr,
) -> (Option<peer::LocalPeer>, String) {
    if is_local {
        let p = tokio::task::spawn_blocking(move || peer::lookup(peer, local))
            .await
            .ok()
            .flatten();
        return (p, String::new());
    }
    let ip = peer.ip();
    let name = tokio::time::timeout(
        REVERSE_DNS_TIMEOUT,
        tokio::task::spawn_blocking(move || dns_lookup::lookup_addr(&ip)),
    )
    .await;
    match name {
        Ok(Ok(Ok(n))) if n != ip.to_string() => (None, n),
        _ => (None, String::new()),
    }
}

/// The envelope of the transaction in progress.
struct Txn {
    mail_from: String,
    mail_params: String,
    rcpt: Vec<Recipient>,
}

struct Session<'a> {
    cap: &'a SmtpCapture,
    client: tls::Conn,
    /// Description of the client's TLS session, empty while plain.
    client_tls: String,
    peer: SocketAddr,
    local_peer: Option<peer::LocalPeer>,
    client_host: String,
    upstream: Option<Upstream>,
    /// The client's HELO/EHLO argument, replayed if the upstream connection
    /// has to be re-established.
    helo: Option<String>,
    esmtp: bool,
    /// (user, mechanism) the client authenticated as through the relay.
    auth: Option<(String, String)>,
    txn: Option<Txn>,
    phases: Phases,
    /// The flush that makes the last end-of-data outcome durable, running
    /// while its reply goes out; awaited before any further reply.
    outcome_flush: Option<tokio::task::JoinHandle<()>>,
    /// A 421 was sent: the session ends after the current command.
    closing: bool,
    started: Instant,
    slot: Slot,
    /// The client sent MAIL at least once (a client gone before is a
    /// relay incident).
    mail_seen: bool,
    /// The client sent at least one command line: a connection closed
    /// without one is a port probe (a health check, a scanner, a readiness
    /// check), not a client gone before MAIL.
    said_anything: bool,
    /// Bad commands so far (a client past [`MAX_ERRORS`] is disconnected).
    errors: u32,
}

/// Why a session ends early.
#[derive(Debug, thiserror::Error)]
enum End {
    #[error("client: {0}")]
    Client(#[from] WireError),
    #[error("client write: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error(
        "closed to make room for a new connection (idle or stalled while all slots were in use)"
    )]
    Evicted,
    #[error("client TLS handshake failed: {0}")]
    ClientTls(String),
    #[error("upstream refused the connection at its greeting: {0}")]
    UpstreamRefused(String),
    #[error("closed: {0}")]
    Upstream(#[from] UpstreamError),
    #[error("too many bad commands")]
    TooManyErrors,
}

impl Session<'_> {
    /// Waits for the flush of the last outcome, if one is running.
    async fn outcome_durable(&mut self) {
        if let Some(flush) = self.outcome_flush.take() {
            let _ = flush.await;
        }
    }

    fn relay(&self) -> bool {
        self.cap.cfg.mode == SmtpMode::Relay
    }

    /// Sends a reply once the previous transaction's outcome is durable.
    async fn send(&mut self, reply: &Reply) -> Result<(), End> {
        self.outcome_durable().await;
        self.send_now(reply).await
    }

    async fn send_now(&mut self, reply: &Reply) -> Result<(), End> {
        self.send_all_now(std::slice::from_ref(reply)).await
    }

    /// Sends replies in one write (a pipelined group's) once the previous
    /// transaction's outcome is durable.
    async fn send_all(&mut self, replies: &[Reply]) -> Result<(), End> {
        self.outcome_durable().await;
        self.send_all_now(replies).await
    }

    async fn send_all_now(&mut self, replies: &[Reply]) -> Result<(), End> {
        let out: Vec<u8> = replies.iter().flat_map(Reply::to_wire).collect();
        self.client.write_all(&out).await?;
        self.client.flush().await?;
        if replies.iter().any(|r| r.code == 421) {
            self.closing = true;
        }
        Ok(())
    }

    /// Reads the client's next line. While it waits, the session counts as
    /// idle (or as waiting inside a transaction) for the connection slots,
    /// and may be told to make room for a newcomer.
    async fn read_client_line(&mut self, max: usize) -> Result<Vec<u8>, End> {
        let limit = Duration::from_secs(self.cap.cfg.command_timeout_secs);
        self.slot.set(if self.txn.is_some() {
            Phase::InTransaction
        } else {
            Phase::Idle
        });
        let read = tokio::select! {
            r = tokio::time::timeout(limit, wire::read_line(&mut self.client, max)) => Some(r),
            () = self.slot.evicted() => None,
        };
        self.slot.set(Phase::Busy);
        let Some(read) = read else {
            return self.evict().await;
        };
        match read {
            Err(_) => {
                self.send(&Reply::new(
                    421,
                    "4.4.2 Timeout waiting for a command, closing",
                ))
                .await?;
                Err(End::Timeout)
            }
            Ok(Err(e @ (WireError::BareLf | WireError::Nul))) => {
                self.send(&Reply::new(
                    421,
                    &format!("4.5.0 Protocol violation ({e}), closing"),
                ))
                .await?;
                Err(End::Client(e))
            }
            Ok(Err(WireError::BareCr)) => {
                // The whole line up to its CRLF was read, so the framing
                // holds: the line is refused, never relayed, and the
                // session goes on.
                self.send(&Reply::new(
                    500,
                    "5.5.2 Bare CR in command line (RFC 5321 section 2.3.8); refused",
                ))
                .await?;
                Err(End::Client(WireError::BareCr))
            }
            Ok(Err(e)) => Err(End::Client(e)),
            Ok(Ok(l)) => Ok(l),
        }
    }

    /// Ends the connection after a final reply when the client may still
    /// be sending (the rest of an HTTP request): our side is shut first and
    /// what the client still sends is read and dropped for a moment, so the
    /// reply is not lost to the reset that closing over unread input
    /// causes.
    async fn close_gently(&mut self) {
        use tokio::io::AsyncBufReadExt;
        let _ = self.client.shutdown().await;
        let drain = async {
            let mut seen = 0usize;
            while seen < 64 * 1024 {
                let n = match self.client.fill_buf().await {
                    Ok(b) if !b.is_empty() => b.len(),
                    _ => break,
                };
                self.client.consume(n);
                seen += n;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    }

    /// This session was chosen to make room for a new connection: its
    /// transaction, if any, is recorded as abandoned with the reply, the
    /// client is told to go, and the upstream gets no more (its connection
    /// is dropped, so nothing half-sent is delivered).
    async fn evict<T>(&mut self) -> Result<T, End> {
        tracing::debug!(peer = %self.peer, in_transaction = self.txn.is_some(), "closing an idle or stalled SMTP connection to make room for a new one");
        self.upstream = None;
        let reply = Reply::new(
            421,
            "4.7.0 All connections in use and this one is idle; closing, reconnect later",
        );
        self.end_txn(Outcome::Aborted, Some(&reply), "TIMEOUT")
            .await;
        self.send(&reply).await?;
        Err(End::Evicted)
    }

    async fn serve(&mut self) -> Result<(), End> {
        let greeting = if self.relay() {
            match self.connect_upstream().await {
                Ok(g) => g,
                Err(e) => {
                    self.upstream_failed(&e);
                    tracing::warn!(peer = %self.peer, error = %e, "upstream unavailable; client told to retry later");
                    let r = Reply::new(
                        421,
                        &format!(
                            "4.4.1 {} upstream mail server unavailable, try again later",
                            self.cap.hostname
                        ),
                    );
                    self.send(&r).await?;
                    return Err(End::Upstream(e));
                }
            }
        } else {
            Reply::new(
                220,
                &format!("{} ESMTP Kiroku capture-only", self.cap.hostname),
            )
        };
        let refuse = greeting.code != 220;
        self.send(&greeting).await?;
        if refuse {
            self.upstream_refused(&greeting);
            return Err(End::UpstreamRefused(greeting.text()));
        }
        loop {
            if self.started.elapsed() > MAX_SESSION {
                self.send(&Reply::new(
                    421,
                    "4.4.2 Connection open too long, closing; reconnect to go on",
                ))
                .await?;
                return Err(End::Timeout);
            }
            let line = match self.read_client_line(wire::MAX_COMMAND_LINE).await {
                Err(End::Client(WireError::TooLong(n))) => {
                    self.bad_command(Reply::new(
                        500,
                        &format!("5.5.2 Line longer than {n} bytes"),
                    ))
                    .await?;
                    continue;
                }
                // Already answered; the next line is read as usual.
                Err(End::Client(WireError::BareCr)) => {
                    self.count_error().await?;
                    continue;
                }
                other => other?,
            };
            let go_on = self.command(line).await?;
            if !go_on || self.closing {
                return Ok(());
            }
        }
    }

    /// Handles one command line. Returns false when the session is over.
    async fn command(&mut self, line: Vec<u8>) -> Result<bool, End> {
        let verb = line
            .split(|&b| b == b' ')
            .next()
            .map(|v| String::from_utf8_lossy(v).to_ascii_uppercase())
            .unwrap_or_default();
        self.said_anything = true;
        match verb.as_str() {
            "EHLO" | "HELO" => self.hello(&line, &verb).await?,
            "STARTTLS" => return self.starttls(&line).await,
            "AUTH" => self.auth(&line).await?,
            "MAIL" => {
                self.mail_seen = true;
                self.mail(&line).await?
            }
            "RCPT" => self.rcpt(&line).await?,
            "DATA" => self.data_command(&line).await?,
            "RSET" => {
                let reply = self.exchange(&line, &verb).await;
                self.end_txn(Outcome::Aborted, None, "RSET").await;
                self.send(&reply).await?;
            }
            "NOOP" | "HELP" | "VRFY" => {
                let reply = self.exchange(&line, &verb).await;
                self.send(&reply).await?;
            }
            "QUIT" => {
                let reply = self.exchange(&line, &verb).await;
                self.end_txn(Outcome::Aborted, None, "QUIT").await;
                self.send(&reply).await?;
                return Ok(false);
            }
            "BDAT" => {
                self.send(&Reply::new(
                    502,
                    "5.5.1 BDAT not supported here (CHUNKING is not offered); use DATA",
                ))
                .await?;
            }
            // An HTTP request sent to the SMTP port (a browser, a proxy
            // probe, a cross-protocol attack): answered and closed, as
            // Postfix does, never relayed.
            "GET" | "POST" | "HEAD" | "PUT" | "DELETE" | "OPTIONS" | "PATCH" | "TRACE"
            | "CONNECT" | "PRI" | "HOST:" | "USER-AGENT:" => {
                tracing::info!(peer = %self.peer, verb = %verb, "HTTP request on the SMTP port; closing");
                self.send(&Reply::new(
                    500,
                    "5.5.1 This is an SMTP server, not HTTP; closing",
                ))
                .await?;
                self.close_gently().await;
                return Ok(false);
            }
            "EXPN" | "ETRN" | "TURN" | "ATRN" => {
                self.send(&Reply::new(502, "5.5.1 Command not implemented"))
                    .await?;
            }
            _ => {
                self.bad_command(Reply::new(500, "5.5.2 Command unrecognized"))
                    .await?;
            }
        }
        Ok(true)
    }
}

fn temp_failure(err: impl std::fmt::Display) -> Reply {
    tracing::warn!(error = %err, "upstream failure; client told to retry");
    Reply::new(
        451,
        "4.4.1 Upstream mail server unavailable, try again later",
    )
}

fn buffer_failure(e: &BufferError) -> Reply {
    tracing::error!(error = %e, "cannot record mail; refusing it temporarily");
    match e {
        BufferError::Full { .. } => Reply::new(
            452,
            "4.3.1 Insufficient system storage (recording buffer full), try again later",
        ),
        // The whole transaction is refused (451, not 452: no recipient
        // could be taken) until the agent's disk takes writes again.
        e if e.unwritable() => Reply::new(
            451,
            "4.3.1 Recording agent's disk is full or its buffer cannot be written; mail is refused until space is freed on the agent host, try again later",
        ),
        _ => Reply::new(
            451,
            "4.3.0 Local error recording the message, try again later",
        ),
    }
}
