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

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kiroku_proto::{EmailEvent, Event, Outcome, Recipient, event::Kind};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::upstream::{self, Caps, Upstream};
use super::wire::{self, Reply, WireError};
use super::{SmtpCapture, auth, peer, record, tls};
use crate::buffer::{Blob, BufferError, Spooled};
use crate::config::{BareLineEndings, SmtpMode, UpstreamTls, WhenFull};
use crate::gaps::{self, Missed, Source};

/// Whole DATA phase from a client (generous; a stuck client is cut off).
/// The waits for a command and for each block of data come from the config
/// (`smtp.command_timeout_secs`, `smtp.data_block_timeout_secs`).
const DATA_TIMEOUT: Duration = Duration::from_secs(1800);
const TLS_TIMEOUT: Duration = Duration::from_secs(60);
/// No connection lives longer than this, however busy: a client cannot pin
/// a session slot forever.
const MAX_SESSION: Duration = Duration::from_secs(3600);
/// SASL lines (XOAUTH2 tokens are long).
const MAX_AUTH_LINE: usize = 16 * 1024;
const REVERSE_DNS_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves one client connection to its end. An unfinished transaction is
/// recorded as aborted.
pub async fn run(cap: &SmtpCapture, stream: TcpStream, peer: SocketAddr, local: SocketAddr) {
    let (local_peer, client_host) = identify(peer, local).await;
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
    };
    let end = s.serve().await;
    let stage = match &end {
        Err(End::Timeout) => "TIMEOUT",
        _ => "DISCONNECT",
    };
    s.end_txn(Outcome::Aborted, None, stage).await;
    s.outcome_durable().await;
    if let Err(e) = end {
        tracing::debug!(peer = %peer, error = %e, "SMTP session ended");
    }
}

/// The process and user behind a loopback client, or the reverse DNS name
/// of a remote one.
async fn identify(peer: SocketAddr, local: SocketAddr) -> (Option<peer::LocalPeer>, String) {
    if peer.ip().is_loopback() {
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

/// Where a relayed transaction's time went, logged at debug level under
/// the target `relay_timing` when it ends with a message (see
/// BENCHMARKS.md, "Relay overhead"). Taking the times costs a few
/// `Instant::now()` calls per transaction.
#[derive(Debug, Default, Clone, Copy)]
struct Phases {
    /// MAIL relayed to the upstream and its reply read (with the RCPTs and
    /// DATA of a pipelined group).
    mail: Duration,
    /// Every RCPT relayed (sum).
    rcpt: Duration,
    /// DATA relayed, 354 read.
    data_cmd: Duration,
    /// From our 354 to the client's end-of-data, body streamed upstream.
    body: Duration,
    /// Spool completed (and fsynced, for a spool file).
    spool: Duration,
    /// MIME → record.
    parse: Duration,
    /// `buffer.begin`: the record made durable.
    begin: Duration,
    /// End-of-data sent upstream, its reply read.
    eod: Duration,
    /// The outcome committed (its flush runs while the reply goes out).
    finish: Duration,
    /// The reply written to the client.
    reply: Duration,
}

impl Phases {
    fn log(&self) {
        let us = |d: Duration| d.as_micros() as u64;
        tracing::debug!(
            target: "relay_timing",
            mail_us = us(self.mail),
            rcpt_us = us(self.rcpt),
            data_cmd_us = us(self.data_cmd),
            body_us = us(self.body),
            spool_us = us(self.spool),
            parse_us = us(self.parse),
            begin_us = us(self.begin),
            eod_us = us(self.eod),
            finish_us = us(self.finish),
            reply_us = us(self.reply),
            "relay transaction phases"
        );
    }
}

/// A command pipelined behind MAIL that joins its group (see
/// `Session::pipelined_after_mail`).
enum Piped {
    /// The line as read (without CRLF) and its parsed path.
    Rcpt {
        line: Vec<u8>,
        addr: String,
        params: String,
    },
    /// DATA, always the last of a group.
    Data,
}

/// The next command waiting complete in `buf`, if it may join a pipelined
/// group: a CRLF-terminated line with no other CR, no NUL, within the
/// length limit, that is a well-formed RCPT or exactly DATA. Anything
/// else (including a line still arriving) ends the group.
fn peek_piped(buf: &[u8]) -> Option<Piped> {
    let nl = memchr::memchr(b'\n', buf)?;
    let line = buf[..nl].strip_suffix(b"\r")?;
    if line.len() > wire::MAX_COMMAND_LINE || line.iter().any(|&b| b == b'\r' || b == 0) {
        return None;
    }
    if line.eq_ignore_ascii_case(b"DATA") {
        return Some(Piped::Data);
    }
    let (addr, params) = parse_path(line, "RCPT TO:")?;
    Some(Piped::Rcpt {
        line: Vec::new(),
        addr,
        params,
    })
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
    #[error("closed: {0}")]
    Closed(String),
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

    async fn read_client_line(&mut self, max: usize) -> Result<Vec<u8>, End> {
        let limit = Duration::from_secs(self.cap.cfg.command_timeout_secs);
        match tokio::time::timeout(limit, wire::read_line(&mut self.client, max)).await {
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
            Ok(Err(e)) => Err(End::Client(e)),
            Ok(Ok(l)) => Ok(l),
        }
    }

    async fn serve(&mut self) -> Result<(), End> {
        let greeting = if self.relay() {
            match self.connect_upstream().await {
                Ok(g) => g,
                Err(e) => {
                    tracing::warn!(peer = %self.peer, error = %e, "upstream unavailable; client told to retry later");
                    let r = Reply::new(
                        421,
                        &format!(
                            "4.4.1 {} upstream mail server unavailable, try again later",
                            self.cap.hostname
                        ),
                    );
                    self.send(&r).await?;
                    return Err(End::Closed(e));
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
            return Err(End::Closed("upstream refused the connection".into()));
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
                    self.send(&Reply::new(
                        500,
                        &format!("5.5.2 Line longer than {n} bytes"),
                    ))
                    .await?;
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

    async fn connect_upstream(&mut self) -> Result<Reply, String> {
        let Some(settings) = self.cap.upstream.as_ref() else {
            return Err("no upstream configured".into());
        };
        let (up, greeting) = Upstream::connect(settings).await?;
        self.upstream = Some(up);
        Ok(greeting)
    }

    /// Re-establishes a dropped upstream connection, replaying EHLO (with
    /// STARTTLS and the agent's login). A client's own AUTH cannot be
    /// replayed (we never keep secrets): such a client is told to reconnect.
    async fn ensure_upstream(&mut self) -> Result<(), Reply> {
        if self.upstream.is_some() {
            return Ok(());
        }
        if self.auth.is_some() {
            return Err(Reply::new(
                421,
                "4.4.1 Upstream connection lost; reconnect and authenticate again",
            ));
        }
        let greeting = self
            .connect_upstream()
            .await
            .map_err(|e| temp_failure(&e))?;
        if greeting.code != 220 {
            self.upstream = None;
            return Err(temp_failure(&format!(
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
                Ok((r, _)) if r.is_positive() => {}
                Ok((r, _)) => {
                    self.upstream = None;
                    return Err(temp_failure(&format!("upstream EHLO: {}", r.text())));
                }
                Err(e) => {
                    self.upstream = None;
                    return Err(temp_failure(&e));
                }
            }
        }
        Ok(())
    }

    /// Sends `line` to the upstream, or answers it locally in capture-only
    /// mode. Upstream failures become a 4xx for the client.
    async fn exchange(&mut self, line: &[u8], verb: &str) -> Reply {
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
            return temp_failure("no upstream connection");
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
                temp_failure(&e)
            }
        }
    }

    fn local_reply(&self, verb: &str) -> Reply {
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

    /// Handles one command line. Returns false when the session is over.
    async fn command(&mut self, line: Vec<u8>) -> Result<bool, End> {
        let verb = line
            .split(|&b| b == b' ')
            .next()
            .map(|v| String::from_utf8_lossy(v).to_ascii_uppercase())
            .unwrap_or_default();
        match verb.as_str() {
            "EHLO" | "HELO" => self.hello(&line, &verb).await?,
            "STARTTLS" => return self.starttls(&line).await,
            "AUTH" => self.auth(&line).await?,
            "MAIL" => self.mail(&line).await?,
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
            "EXPN" | "ETRN" | "TURN" | "ATRN" => {
                self.send(&Reply::new(502, "5.5.1 Command not implemented"))
                    .await?;
            }
            _ => {
                self.send(&Reply::new(500, "5.5.2 Command unrecognized"))
                    .await?;
            }
        }
        Ok(true)
    }

    async fn hello(&mut self, line: &[u8], verb: &str) -> Result<(), End> {
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
    fn client_ehlo(&self, caps: &Caps) -> Reply {
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
    fn auth_offer(&self, caps: &Caps) -> Vec<String> {
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

    async fn starttls(&mut self, line: &[u8]) -> Result<bool, End> {
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
        match tokio::time::timeout(TLS_TIMEOUT, tls::accept(&acceptor, io)).await {
            Ok(Ok((io, desc))) => {
                self.client = tls::conn(io);
                tracing::debug!(peer = %self.peer, tls = %desc, "client started TLS");
                self.client_tls = desc;
            }
            Ok(Err(e)) => return Err(End::Closed(format!("client TLS handshake failed: {e}"))),
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

    /// AUTH relayed to the upstream as opaque lines: initial response or
    /// continuations, `*` cancel, XOAUTH2's error continuation. Only the
    /// claimed user name is kept; nothing else of the exchange is stored
    /// or logged.
    async fn auth(&mut self, line: &[u8]) -> Result<(), End> {
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
                return self.send(&temp_failure(&e)).await;
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
                    return self.send(&temp_failure(&e)).await;
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

    async fn mail(&mut self, line: &[u8]) -> Result<(), End> {
        let Some((addr, params)) = parse_path(line, "MAIL FROM:") else {
            return self
                .send(&Reply::new(501, "5.5.4 Syntax: MAIL FROM:<address>"))
                .await;
        };
        if !self.relay() {
            if self.helo.is_none() {
                return self
                    .send(&Reply::new(503, "5.5.1 Send HELO/EHLO first"))
                    .await;
            }
            if self.txn.is_some() {
                return self
                    .send(&Reply::new(503, "5.5.1 Nested MAIL command"))
                    .await;
            }
        }
        let group = self.pipelined_after_mail().await?;
        if !group.is_empty() {
            return self.relay_group(line, addr, params, group).await;
        }
        let t = Instant::now();
        let reply = self.exchange(line, "MAIL").await;
        self.phases = Phases {
            mail: t.elapsed(),
            ..Phases::default()
        };
        self.mail_replied(addr, params, &reply).await;
        self.send(&reply).await
    }

    /// Opens the transaction of a MAIL the upstream answered with `reply`
    /// (and records it at once if refused).
    async fn mail_replied(&mut self, addr: String, params: String, reply: &Reply) {
        if self.txn.is_some() {
            return;
        }
        self.txn = Some(Txn {
            mail_from: addr,
            mail_params: params,
            rcpt: Vec::new(),
        });
        if !reply.is_positive() {
            let outcome = if reply.code >= 400 {
                Outcome::Rejected
            } else {
                Outcome::Aborted
            };
            self.end_txn(outcome, Some(reply), "MAIL").await;
        }
    }

    async fn rcpt(&mut self, line: &[u8]) -> Result<(), End> {
        let Some((addr, params)) = parse_path(line, "RCPT TO:") else {
            return self
                .send(&Reply::new(501, "5.5.4 Syntax: RCPT TO:<address>"))
                .await;
        };
        if !self.relay() && self.txn.is_none() {
            return self
                .send(&Reply::new(503, "5.5.1 Need MAIL before RCPT"))
                .await;
        }
        let t = Instant::now();
        let reply = self.exchange(line, "RCPT").await;
        self.phases.rcpt += t.elapsed();
        self.rcpt_replied(addr, params, &reply);
        self.send(&reply).await
    }

    /// Keeps a recipient with the upstream's reply to it.
    fn rcpt_replied(&mut self, addr: String, params: String, reply: &Reply) {
        if let Some(txn) = self.txn.as_mut() {
            txn.rcpt.push(Recipient {
                address: addr,
                params,
                reply_code: u32::from(reply.code),
                reply: reply.text(),
            });
        }
    }

    async fn data_command(&mut self, line: &[u8]) -> Result<(), End> {
        let accepted = self
            .txn
            .as_ref()
            .is_some_and(|t| t.rcpt.iter().any(|r| (200..300).contains(&r.reply_code)));
        if !self.relay() && !accepted {
            return self
                .send(&Reply::new(503, "5.5.1 Need RCPT before DATA"))
                .await;
        }
        let t = Instant::now();
        let reply = self.exchange(line, "DATA").await;
        self.phases.data_cmd = t.elapsed();
        self.data_replied(reply, Vec::new()).await
    }

    /// Goes on after the upstream's reply to DATA: the message on 354, else
    /// the refused transaction recorded. `earlier` are the replies to the
    /// rest of a pipelined group, sent in the same write.
    async fn data_replied(&mut self, reply: Reply, mut earlier: Vec<Reply>) -> Result<(), End> {
        if reply.code == 354 {
            earlier.push(reply);
            self.send_all(&earlier).await?;
            return self.data().await;
        }
        // Refused before any content: the transaction is over for the record.
        let outcome = if reply.code >= 400 {
            Outcome::Rejected
        } else {
            Outcome::Aborted
        };
        self.end_txn(outcome, Some(&reply), "DATA").await;
        earlier.push(reply);
        self.send_all(&earlier).await
    }

    /// The RCPT and DATA commands a client pipelined (RFC 2920) behind a
    /// MAIL, when they can go to the upstream in one write: relay mode,
    /// an ESMTP client (it saw our PIPELINING) and an upstream that offered
    /// PIPELINING. Only complete, clean lines already received are taken
    /// (never waiting for more), up to and including a DATA, which ends a
    /// group; anything else stays for the lock-step path.
    async fn pipelined_after_mail(&mut self) -> Result<Vec<Piped>, End> {
        let upstream_pipelines = self
            .upstream
            .as_ref()
            .is_some_and(|u| u.caps.has("PIPELINING"));
        let mut group = Vec::new();
        if !self.relay() || !self.esmtp || !upstream_pipelines {
            return Ok(group);
        }
        while let Some(next) = peek_piped(self.client.buffer()) {
            // The line is complete and clean in the buffer: reading it
            // cannot wait nor fail.
            let line = self.read_client_line(wire::MAX_COMMAND_LINE).await?;
            let data = matches!(next, Piped::Data);
            group.push(match next {
                Piped::Rcpt { addr, params, .. } => Piped::Rcpt { line, addr, params },
                Piped::Data => Piped::Data,
            });
            if data {
                break;
            }
        }
        Ok(group)
    }

    /// Relays MAIL and the commands pipelined behind it in one write and
    /// reads the upstream's replies one by one, in order; each is handled
    /// as in lock-step (recipients recorded with their own reply) and the
    /// client gets them all in order, in one write. If the upstream fails
    /// part-way, the commands left unanswered get a temporary failure.
    async fn relay_group(
        &mut self,
        mail: &[u8],
        addr: String,
        params: String,
        group: Vec<Piped>,
    ) -> Result<(), End> {
        let t = Instant::now();
        let mut lines: Vec<&[u8]> = vec![mail];
        for p in &group {
            lines.push(match p {
                Piped::Rcpt { line, .. } => line.as_slice(),
                Piped::Data => b"DATA".as_slice(),
            });
        }
        let mut replies = Vec::with_capacity(lines.len());
        let sent = match self.upstream.as_mut() {
            Some(up) => up.send_lines(&lines).await,
            None => Err("no upstream connection".into()),
        };
        match sent {
            Err(e) => {
                self.upstream = None;
                replies.resize(lines.len(), temp_failure(&e));
            }
            Ok(()) => {
                for p in std::iter::once(None).chain(group.iter().map(Some)) {
                    let limit = match p {
                        Some(Piped::Data) => upstream::DATA_INIT_TIMEOUT,
                        _ => upstream::COMMAND_TIMEOUT,
                    };
                    let Some(up) = self.upstream.as_mut() else {
                        replies.push(temp_failure("upstream connection lost mid-group"));
                        continue;
                    };
                    match up.reply(limit).await {
                        Ok(r) => {
                            if r.code == 421 {
                                self.upstream = None;
                            }
                            replies.push(r);
                        }
                        Err(e) => {
                            self.upstream = None;
                            replies.push(temp_failure(&e));
                        }
                    }
                }
            }
        }
        // The envelope's round trip is shared; it is counted as MAIL's.
        self.phases = Phases {
            mail: t.elapsed(),
            ..Phases::default()
        };
        let mut replies = replies.into_iter();
        let mut out = Vec::with_capacity(lines.len());
        let mail_reply = replies.next().unwrap_or_else(|| temp_failure("no reply"));
        self.mail_replied(addr, params, &mail_reply).await;
        out.push(mail_reply);
        for p in group {
            let reply = replies.next().unwrap_or_else(|| temp_failure("no reply"));
            match p {
                Piped::Rcpt { addr, params, .. } => {
                    self.rcpt_replied(addr, params, &reply);
                    out.push(reply);
                }
                Piped::Data => return self.data_replied(reply, out).await,
            }
        }
        self.send_all(&out).await
    }

    /// Reads the message after 354 in chunks: each goes to the buffer's
    /// spool file and, relaying, straight on to the upstream (dot-stuffed
    /// again), so memory stays bounded whatever the size. At the client's
    /// end-of-data: the message is made durable and recorded, and only then
    /// does the upstream get its end-of-data; its outcome is committed
    /// before the client gets the reply and flushed while the reply goes
    /// out (any later reply waits for that flush). Data that is refused
    /// (NUL; bare CR/LF unless `smtp.bare_line_endings` normalises them)
    /// or over the size limit never gets an end-of-data upstream (the
    /// connection is dropped, so nothing is delivered).
    async fn data(&mut self) -> Result<(), End> {
        let limit = self.cap.cfg.max_message_bytes;
        let mut reader = wire::DataReader::new(limit, self.cap.cfg.bare_line_endings);
        // Without a spool (buffer full, disk error) the data is still read
        // to its end, then refused with a temporary error — unless the
        // buffer is full and the policy is to relay unrecorded: then the
        // data goes on to the upstream and the mail is counted as a gap.
        let (mut spool, mut spool_err) = match self.cap.buffer.spool().await {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(e)),
        };
        let unrecorded = spool.is_none()
            && matches!(spool_err, Some(BufferError::Full { .. }))
            && self.may_relay_unrecorded();
        let mut stuffer = wire::Stuffer::default();
        // Why forwarding stopped early, if it did.
        let mut forward_err: Option<String> = if self.relay() && self.upstream.is_none() {
            Some("no upstream connection".into())
        } else {
            None
        };
        let body_started = Instant::now();
        let deadline = tokio::time::Instant::now() + DATA_TIMEOUT;
        let block_timeout = Duration::from_secs(self.cap.cfg.data_block_timeout_secs);
        loop {
            let next = tokio::time::timeout_at(
                deadline.min(tokio::time::Instant::now() + block_timeout),
                reader.next(&mut self.client),
            )
            .await;
            let chunk = match next {
                Err(_) => {
                    self.upstream = None;
                    self.send(&Reply::new(
                        421,
                        "4.4.2 Timeout reading message data, closing",
                    ))
                    .await?;
                    return Err(End::Timeout);
                }
                Ok(Err(e)) => {
                    // The client went away mid-message: the upstream gets no
                    // end-of-data, so nothing is delivered.
                    self.upstream = None;
                    return Err(End::Client(e));
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(c))) => c,
            };
            if chunk.is_empty() || reader.too_big() {
                continue;
            }
            if let Some(sp) = spool.as_mut()
                && let Err(e) = sp.write(&chunk).await
            {
                spool_err = Some(e);
                spool = None;
            }
            if self.relay()
                && forward_err.is_none()
                && !reader.refused()
                && (spool.is_some() || unrecorded)
                && let Some(up) = self.upstream.as_mut()
                && let Err(e) = up.data_chunk(&mut stuffer, &chunk).await
            {
                forward_err = Some(e);
                self.upstream = None;
            }
        }
        let txn = self.txn.take().unwrap_or(Txn {
            mail_from: String::new(),
            mail_params: String::new(),
            rcpt: Vec::new(),
        });
        let env = self.envelope(txn);
        let normalised = reader.normalised();

        if reader.too_big() || reader.refused() {
            // Refused by us: the upstream never sees an end-of-data, so we
            // drop its connection (it discards the partial message).
            self.upstream = None;
            let reply = if reader.too_big() {
                Reply::new(
                    552,
                    &format!("5.3.4 Message size exceeds fixed limit of {limit} bytes"),
                )
            } else if self.cap.cfg.bare_line_endings == BareLineEndings::Normalise {
                Reply::new(554, "5.6.0 Message contains NUL; refused")
            } else {
                Reply::new(
                    554,
                    "5.6.0 Message contains bare CR, bare LF or NUL (RFC 5321 section 2.3.8); refused",
                )
            };
            let kept = match spool.take() {
                Some(sp) if !reader.too_big() => sp.finish().await.ok(),
                _ => None,
            };
            let mut ev = self.build_event(&env, kept.as_ref()).await;
            mark_normalised(&mut ev, &normalised);
            if let Some(Kind::Email(m)) = &mut ev.kind {
                m.outcome = Outcome::Aborted as i32;
                m.reply_code = u32::from(reply.code);
                m.upstream_reply = reply.text();
                m.ended_at = "END-OF-DATA".into();
                if kept.is_none() {
                    m.raw_sha256.clear();
                    m.message_size = reader.size();
                    m.parse_warnings
                        .push("message over the size limit; content not kept".into());
                }
            }
            if let Err(e) = self.cap.buffer.append(&ev, kept.map(Blob::Spooled)).await {
                self.not_recorded(&env, &e, "a refused message").await;
            }
            tracing::warn!(peer = %self.peer, reply = %reply.text(), "message refused");
            return self.send(&reply).await;
        }

        // The content is complete: make it durable.
        self.phases.body = body_started.elapsed();
        let t = Instant::now();
        let spooled = match spool.take() {
            Some(sp) => sp.finish().await,
            None => Err(spool_err.unwrap_or(BufferError::Task {
                path: Default::default(),
                message: "no spool".into(),
            })),
        };
        let spooled = match spooled {
            Ok(s) => s,
            Err(_) if unrecorded => {
                return self.relay_unrecorded(env, &mut stuffer, forward_err).await;
            }
            Err(e) => {
                self.upstream = None;
                return self.send(&buffer_failure(&e)).await;
            }
        };
        self.phases.spool = t.elapsed();
        let t = Instant::now();
        let mut ev = self.build_event(&env, Some(&spooled)).await;
        mark_normalised(&mut ev, &normalised);
        self.phases.parse = t.elapsed();
        if let Some(Kind::Email(m)) = &mut ev.kind {
            m.ended_at = "END-OF-DATA".into();
            for w in &m.parse_warnings {
                tracing::info!(peer = %self.peer, warning = %w, "message recorded with parse warning");
            }
        }

        if !self.relay() {
            if let Some(Kind::Email(m)) = &mut ev.kind {
                m.outcome = Outcome::Captured as i32;
                m.reply_code = 250;
            }
            let reply = match self
                .cap
                .buffer
                .append(&ev, Some(Blob::Spooled(spooled)))
                .await
            {
                Ok(seq) => Reply::new(
                    250,
                    &format!(
                        "2.0.0 Ok: captured as {}/{seq}",
                        self.cap.buffer.stream_id()
                    ),
                ),
                Err(e) => buffer_failure(&e),
            };
            return self.send(&reply).await;
        }

        // Relay: durable first, then end-of-data to the upstream.
        let t = Instant::now();
        let id = match self
            .cap
            .buffer
            .begin(&ev, Some(Blob::Spooled(spooled)))
            .await
        {
            Ok(id) => id,
            Err(BufferError::Full { .. }) if self.may_relay_unrecorded() => {
                return self.relay_unrecorded(env, &mut stuffer, forward_err).await;
            }
            Err(e) => {
                self.upstream = None;
                return self.send(&buffer_failure(&e)).await;
            }
        };
        self.phases.begin = t.elapsed();
        // Failing before our end-of-data means the upstream discarded the
        // message: not delivered. Failing after it: we cannot know.
        let t = Instant::now();
        let outcome = match (forward_err, self.upstream.as_mut()) {
            (Some(e), _) => Err((false, e)),
            (None, Some(up)) => up.data_end(&mut stuffer).await.map_err(|e| (true, e)),
            (None, None) => Err((false, "no upstream connection".to_owned())),
        };
        self.phases.eod = t.elapsed();
        if outcome.is_err() {
            self.upstream = None;
        }
        let (code, text, result, queue_id, stage) = match &outcome {
            Ok(r) if (200..300).contains(&r.code) => (
                r.code,
                r.text(),
                Outcome::Delivered,
                upstream::queue_id(r),
                "END-OF-DATA",
            ),
            Ok(r) => (
                r.code,
                r.text(),
                Outcome::Rejected,
                String::new(),
                "END-OF-DATA",
            ),
            Err((true, e)) => (0, e.clone(), Outcome::Unknown, String::new(), "UPSTREAM"),
            Err((false, e)) => (451, e.clone(), Outcome::Aborted, String::new(), "UPSTREAM"),
        };
        // The outcome is committed now and flushed while the reply goes
        // out (the next reply to this client waits for that flush). A
        // crash in between leaves the in-flight record, recovered with
        // outcome unknown, as a crash while the upstream decides does.
        let t = Instant::now();
        let settled = self.cap.buffer.settle(id, |ev| {
            if let Some(Kind::Email(m)) = &mut ev.kind {
                m.outcome = result as i32;
                m.reply_code = u32::from(code);
                m.upstream_reply = text.clone();
                m.upstream_queue_id = queue_id.clone();
                m.ended_at = stage.into();
            }
        });
        match settled {
            Ok(settled) => {
                let (buffer, peer) = (self.cap.buffer.clone(), self.peer);
                self.outcome_flush = Some(tokio::spawn(async move {
                    if let Err(e) = buffer.make_durable(settled).await {
                        // The record exists (in flight, durable) and is
                        // recovered with outcome unknown at the next start.
                        tracing::error!(peer = %peer, error = %e, "could not record the upstream's outcome");
                    }
                }));
            }
            Err(e) => {
                tracing::error!(peer = %self.peer, error = %e, "could not record the upstream's outcome");
            }
        }
        self.phases.finish = t.elapsed();
        let reply = self.final_reply(outcome);
        let t = Instant::now();
        let sent = self.send_now(&reply).await;
        self.phases.reply = t.elapsed();
        self.phases.log();
        sent
    }

    /// The client's reply for the upstream's answer to end-of-data (or
    /// the failure that kept it from answering).
    fn final_reply(&self, outcome: Result<Reply, (bool, String)>) -> Reply {
        match outcome {
            Ok(r) => r,
            Err((after_end, e)) => {
                tracing::warn!(peer = %self.peer, error = %e, "upstream failed during delivery");
                if after_end {
                    Reply::new(
                        451,
                        "4.4.2 Upstream connection lost during delivery; outcome unknown, try again later",
                    )
                } else {
                    Reply::new(
                        451,
                        "4.4.1 Upstream connection lost before the end of the message; not delivered, try again later",
                    )
                }
            }
        }
    }

    /// Whether mail goes on unrecorded while the buffer is full
    /// (`buffer.when_full = "relay_unrecorded"`, relay mode only).
    fn may_relay_unrecorded(&self) -> bool {
        self.relay() && self.cap.when_full == WhenFull::RelayUnrecorded
    }

    /// The buffer is full and the policy is to relay anyway: the mail is
    /// counted as a gap (durably, before the upstream gets end-of-data, as
    /// a recorded mail is stored before it), then completed at the
    /// upstream, whose answer the client gets verbatim.
    async fn relay_unrecorded(
        &mut self,
        env: record::Envelope,
        stuffer: &mut wire::Stuffer,
        forward_err: Option<String>,
    ) -> Result<(), End> {
        let accepted: Vec<String> = env
            .rcpt
            .iter()
            .filter(|r| (200..300).contains(&r.reply_code))
            .map(|r| r.address.clone())
            .collect();
        let missed = Missed {
            sender: Some(&env.mail_from),
            recipients: &accepted,
            path: None,
        };
        if let Err(e) = self.cap.gaps.missed(Source::Smtp, missed).await {
            // Not even countable: refuse, as the refuse policy would.
            self.upstream = None;
            return self.send(&buffer_failure(&e)).await;
        }
        let outcome = match (forward_err, self.upstream.as_mut()) {
            (Some(e), _) => Err((false, e)),
            (None, Some(up)) => up.data_end(stuffer).await.map_err(|e| (true, e)),
            (None, None) => Err((false, "no upstream connection".to_owned())),
        };
        match &outcome {
            Ok(r) if (200..300).contains(&r.code) => {
                self.cap
                    .gaps
                    .upstream_answered(gaps::Upstream::Delivered)
                    .await;
            }
            Ok(_) => {
                self.cap
                    .gaps
                    .upstream_answered(gaps::Upstream::Rejected)
                    .await
            }
            Err(_) => self.upstream = None,
        }
        tracing::warn!(
            peer = %self.peer,
            mail_from = %env.mail_from,
            recipients = accepted.len(),
            reply = outcome.as_ref().map(|r| r.code).unwrap_or(0),
            "mail relayed UNRECORDED: the agent buffer is full and buffer.when_full = \"relay_unrecorded\"; it is counted in a gap record sent to the collector once the buffer has room (raise buffer.max_bytes or fix the collector connection)"
        );
        let reply = self.final_reply(outcome);
        self.send(&reply).await
    }

    /// A record could not be written: logged, and counted as a gap when
    /// the buffer is full and mail goes on unrecorded.
    async fn not_recorded(&self, env: &record::Envelope, e: &BufferError, what: &str) {
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

    fn envelope(&self, txn: Txn) -> record::Envelope {
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
    async fn end_txn(&mut self, outcome: Outcome, reply: Option<&Reply>, stage: &str) {
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
    async fn build_event(&self, env: &record::Envelope, spooled: Option<&Spooled>) -> Event {
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

    fn event(&self, mut email: EmailEvent) -> Event {
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
fn mark_normalised(ev: &mut Event, what: &str) {
    if what.is_empty() {
        return;
    }
    if let Some(Kind::Email(m)) = &mut ev.kind {
        m.line_endings_normalised = what.to_owned();
    }
    ev.tags.push(NORMALISED_TAG.to_owned());
}

fn temp_failure(err: &str) -> Reply {
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
        _ => Reply::new(
            451,
            "4.3.0 Local error recording the message, try again later",
        ),
    }
}

/// Parses `MAIL FROM:<addr> params` / `RCPT TO:<addr> params`.
fn parse_path(line: &[u8], prefix: &str) -> Option<(String, String)> {
    let s = String::from_utf8_lossy(line);
    if s.len() < prefix.len() || !s.is_char_boundary(prefix.len()) {
        return None;
    }
    if !s[..prefix.len()].eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = s[prefix.len()..].trim_start();
    if let Some(inner) = rest.strip_prefix('<') {
        let end = inner.find('>')?;
        Some((inner[..end].to_owned(), inner[end + 1..].trim().to_owned()))
    } else {
        let mut parts = rest.splitn(2, ' ');
        let addr = parts.next()?.to_owned();
        if addr.is_empty() {
            return None;
        }
        Some((addr, parts.next().unwrap_or("").trim().to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_may_join_a_pipelined_group() {
        // (buffered input, joins as: None, Some("RCPT <addr>") or Some("DATA"))
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"RCPT TO:<b@x>\r\nDATA\r\n", Some("RCPT b@x")),
            (b"rcpt to:<b@x> NOTIFY=NEVER\r\n", Some("RCPT b@x")),
            (b"DATA\r\nSubject: early\r\n", Some("DATA")),
            (b"data\r\n", Some("DATA")),
            // Incomplete, bare LF, stray CR, NUL: left to the lock-step path.
            (b"RCPT TO:<b@x>", None),
            (b"RCPT TO:<b@x>\n", None),
            (b"RCPT TO:<b@x>\rX\r\n", None),
            (b"RCPT TO:<b\0@x>\r\n", None),
            // Malformed RCPT, other commands, DATA with an argument.
            (b"RCPT TO:\r\n", None),
            (b"RSET\r\n", None),
            (b"AUTH PLAIN AGFAYg==\r\n", None),
            (b"STARTTLS\r\n", None),
            (b"DATA x\r\n", None),
            (b"BDAT 10 LAST\r\n", None),
            (b"", None),
        ];
        for (buf, want) in cases {
            let got = peek_piped(buf).map(|p| match p {
                Piped::Rcpt { addr, .. } => format!("RCPT {addr}"),
                Piped::Data => "DATA".into(),
            });
            assert_eq!(got.as_deref(), *want, "{}", String::from_utf8_lossy(buf));
        }
        let long = [b"RCPT TO:<".as_slice(), &[b'a'; 5000], b">\r\n"].concat();
        assert!(peek_piped(&long).is_none(), "over the line limit");
    }

    #[test]
    fn paths() {
        type Case<'a> = (&'a [u8], &'a str, Option<(&'a str, &'a str)>);
        let cases: &[Case] = &[
            (
                b"MAIL FROM:<a@b.c> SIZE=10",
                "MAIL FROM:",
                Some(("a@b.c", "SIZE=10")),
            ),
            (b"mail from: <>", "MAIL FROM:", Some(("", ""))),
            (
                b"RCPT TO:<x@y> NOTIFY=NEVER",
                "RCPT TO:",
                Some(("x@y", "NOTIFY=NEVER")),
            ),
            (b"RCPT TO:x@y", "RCPT TO:", Some(("x@y", ""))),
            (b"RCPT TO:", "RCPT TO:", None),
            (b"RCPT", "RCPT TO:", None),
            ("RCPT T\u{e9}:<x>".as_bytes(), "RCPT TO:", None),
            (
                "MAIL FROM:<j\u{f6}rg@b\u{fc}cher.example> SMTPUTF8".as_bytes(),
                "MAIL FROM:",
                Some(("j\u{f6}rg@b\u{fc}cher.example", "SMTPUTF8")),
            ),
        ];
        for (line, prefix, want) in cases {
            let got = parse_path(line, prefix);
            assert_eq!(
                got,
                want.map(|(a, p)| (a.to_owned(), p.to_owned())),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }
}
