//! SMTP capture: a listener that either relays every command to an upstream
//! MTA (returning the upstream's replies) or, in capture-only mode, answers
//! itself and delivers nothing. Every transaction that reaches end-of-data
//! becomes an `EmailEvent` in the buffer.
//!
//! The promise, in relay mode: the message is durable in the buffer before
//! the end-of-data goes to the upstream, and the upstream's outcome is
//! durable before its reply goes back to the client. Recipients come from
//! RCPT TO only.

mod peer;
pub mod record;
pub mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kiroku_proto::{EmailEvent, Event, HostIdentity, Outcome, Recipient, event::Kind};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::buffer::{Buffer, BufferError};
use crate::config::{SmtpConfig, SmtpMode};
use wire::{Reply, WireError};

/// RFC 5321 section 4.5.3.2 server timeout while waiting for a command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// Whole DATA phase from a client (generous; a stuck client is cut off).
const DATA_TIMEOUT: Duration = Duration::from_secs(600);
/// Waiting for the upstream's greeting / replies (RFC 5321 4.5.3.2).
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const UPSTREAM_REPLY_TIMEOUT: Duration = Duration::from_secs(300);
const UPSTREAM_DATA_END_TIMEOUT: Duration = Duration::from_secs(600);

/// Extensions we pass on from the upstream's EHLO reply. Everything else
/// (STARTTLS, AUTH, PIPELINING, CHUNKING, ...) is not offered yet.
const RELAYED_EXTENSIONS: &[&str] = &["SIZE", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "DSN"];

/// Facts attached to every event this capture records.
pub struct RecordContext {
    pub agent_id: String,
    pub host: HostIdentity,
    pub agent_user: String,
    pub custom: BTreeMap<String, String>,
}

pub struct SmtpCapture {
    cfg: SmtpConfig,
    buffer: Arc<Buffer>,
    ctx: Arc<RecordContext>,
    hostname: String,
}

impl SmtpCapture {
    pub fn new(cfg: SmtpConfig, buffer: Arc<Buffer>, ctx: Arc<RecordContext>) -> Arc<SmtpCapture> {
        let hostname = cfg
            .hostname
            .clone()
            .unwrap_or_else(|| ctx.host.fqdn.clone());
        Arc::new(SmtpCapture {
            cfg,
            buffer,
            ctx,
            hostname,
        })
    }

    /// Binds every configured listen address.
    pub async fn bind(&self) -> anyhow::Result<Vec<TcpListener>> {
        let mut out = Vec::new();
        for addr in &self.cfg.listen {
            let l = TcpListener::bind(addr).await.map_err(|e| {
                anyhow::anyhow!("cannot listen for SMTP on {addr}: {e} (is another agent or MTA using it? change smtp.listen)")
            })?;
            tracing::info!(listen = %addr, mode = ?self.cfg.mode, upstream = ?self.cfg.upstream, "SMTP capture listening");
            out.push(l);
        }
        Ok(out)
    }

    /// Accepts connections until `shutdown` resolves, then waits (bounded)
    /// for sessions in progress.
    pub async fn serve(
        self: Arc<Self>,
        listeners: Vec<TcpListener>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let limit = Arc::new(Semaphore::new(self.cfg.max_connections));
        let mut sessions = JoinSet::new();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(TcpStream, SocketAddr, SocketAddr)>(64);
        let mut acceptors = JoinSet::new();
        for l in listeners {
            let tx = tx.clone();
            acceptors.spawn(async move {
                loop {
                    match l.accept().await {
                        Ok((s, peer)) => {
                            let local = s.local_addr().unwrap_or(peer);
                            if tx.send((s, peer, local)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "SMTP accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            });
        }
        drop(tx);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(res) = sessions.join_next(), if !sessions.is_empty() => {
                    if let Err(e) = res { tracing::error!(error = %e, "SMTP session task failed"); }
                }
                conn = rx.recv() => {
                    let Some((stream, peer, local)) = conn else { break };
                    let this = self.clone();
                    let Ok(permit) = limit.clone().try_acquire_owned() else {
                        let mut s = stream;
                        let _ = s.write_all(b"421 4.7.0 Too many connections, try again later\r\n").await;
                        continue;
                    };
                    sessions.spawn(async move {
                        let _permit = permit;
                        this.session(stream, peer, local).await;
                    });
                }
            }
        }
        acceptors.shutdown().await;
        let drain = async { while sessions.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(10), drain)
            .await
            .is_err()
        {
            tracing::warn!("SMTP sessions still open at shutdown were cut off");
        }
    }

    async fn session(&self, stream: TcpStream, peer: SocketAddr, local: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let local_peer = tokio::task::spawn_blocking(move || peer::lookup(peer, local))
            .await
            .ok()
            .flatten();
        let (r, w) = stream.into_split();
        let mut s = Session {
            cap: self,
            client_r: BufReader::new(r),
            client_w: w,
            peer,
            local_peer,
            upstream: None,
            helo_line: None,
            esmtp: false,
            txn: None,
        };
        if let Err(e) = s.run().await {
            tracing::debug!(peer = %peer, error = %e, "SMTP session ended");
        }
    }
}

struct Upstream {
    addr: String,
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

impl Upstream {
    async fn connect(addr: &str) -> Result<(Upstream, Reply), String> {
        let stream = tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connecting to {addr} timed out"))?
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (r, w) = stream.into_split();
        let mut up = Upstream {
            addr: addr.to_owned(),
            r: BufReader::new(r),
            w,
        };
        let greeting = up.reply(UPSTREAM_CONNECT_TIMEOUT).await?;
        Ok((up, greeting))
    }

    async fn reply(&mut self, limit: Duration) -> Result<Reply, String> {
        match tokio::time::timeout(limit, wire::read_reply(&mut self.r)).await {
            Err(_) => Err(format!(
                "upstream {} did not answer in {}s",
                self.addr,
                limit.as_secs()
            )),
            Ok(Err(e)) => Err(format!("upstream {}: {e}", self.addr)),
            Ok(Ok(r)) => Ok(r),
        }
    }

    async fn command(&mut self, line: &[u8]) -> Result<Reply, String> {
        let mut out = Vec::with_capacity(line.len() + 2);
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
        self.w
            .write_all(&out)
            .await
            .map_err(|e| format!("upstream {}: {e}", self.addr))?;
        self.reply(UPSTREAM_REPLY_TIMEOUT).await
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
    client_r: BufReader<OwnedReadHalf>,
    client_w: OwnedWriteHalf,
    peer: SocketAddr,
    local_peer: Option<peer::LocalPeer>,
    upstream: Option<Upstream>,
    /// The client's HELO/EHLO line, replayed if the upstream connection has
    /// to be re-established.
    helo_line: Option<Vec<u8>>,
    esmtp: bool,
    txn: Option<Txn>,
}

/// Why a session ends early.
#[derive(Debug, thiserror::Error)]
enum End {
    #[error("client: {0}")]
    Client(#[from] WireError),
    #[error("client write: {0}")]
    Io(#[from] std::io::Error),
    #[error("closed: {0}")]
    Closed(String),
}

impl Session<'_> {
    fn relay(&self) -> bool {
        self.cap.cfg.mode == SmtpMode::Relay
    }

    async fn send(&mut self, reply: &Reply) -> Result<(), End> {
        self.client_w.write_all(&reply.to_wire()).await?;
        Ok(())
    }

    async fn run(&mut self) -> Result<(), End> {
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
            let line = match tokio::time::timeout(
                COMMAND_TIMEOUT,
                wire::read_line(&mut self.client_r, wire::MAX_COMMAND_LINE),
            )
            .await
            {
                Err(_) => {
                    self.send(&Reply::new(
                        421,
                        "4.4.2 Timeout waiting for a command, closing",
                    ))
                    .await?;
                    return Err(End::Closed("command timeout".into()));
                }
                Ok(Err(WireError::TooLong(n))) => {
                    self.send(&Reply::new(
                        500,
                        &format!("5.5.2 Line longer than {n} bytes"),
                    ))
                    .await?;
                    continue;
                }
                Ok(Err(e @ (WireError::BareLf | WireError::Nul))) => {
                    self.send(&Reply::new(
                        421,
                        &format!("4.5.0 Protocol violation ({e}), closing"),
                    ))
                    .await?;
                    return Err(End::Client(e));
                }
                Ok(Err(e)) => return Err(End::Client(e)),
                Ok(Ok(l)) => l,
            };
            if !self.command(line).await? {
                return Ok(());
            }
        }
    }

    async fn connect_upstream(&mut self) -> Result<Reply, String> {
        let addr = self.cap.cfg.upstream.clone().unwrap_or_default();
        let (up, greeting) = Upstream::connect(&addr).await?;
        self.upstream = Some(up);
        Ok(greeting)
    }

    /// Sends `line` to the upstream (reconnecting and replaying HELO/EHLO if
    /// an earlier abort dropped the connection), or answers it locally in
    /// capture-only mode.
    async fn exchange(&mut self, line: &[u8], verb: &str) -> Reply {
        if !self.relay() {
            return self.local_reply(verb);
        }
        if self.upstream.is_none() {
            if let Err(e) = self.connect_upstream().await {
                return temp_failure(&e);
            }
            if let (Some(helo), false) = (self.helo_line.clone(), matches!(verb, "EHLO" | "HELO")) {
                match self.upstream_command(&helo).await {
                    Ok(r) if r.is_positive() => {}
                    Ok(r) => return r,
                    Err(e) => return temp_failure(&e),
                }
            }
        }
        match self.upstream_command(line).await {
            Ok(r) => r,
            Err(e) => temp_failure(&e),
        }
    }

    async fn upstream_command(&mut self, line: &[u8]) -> Result<Reply, String> {
        let Some(up) = self.upstream.as_mut() else {
            return Err("no upstream connection".into());
        };
        let res = up.command(line).await;
        if res.is_err() {
            self.upstream = None;
        }
        res
    }

    fn local_reply(&self, verb: &str) -> Reply {
        let host = &self.cap.hostname;
        match verb {
            "EHLO" => Reply {
                code: 250,
                lines: vec![
                    format!("250-{host} Kiroku capture-only"),
                    format!("250-SIZE {}", self.cap.cfg.max_message_bytes),
                    "250-8BITMIME".into(),
                    "250-SMTPUTF8".into(),
                    "250 ENHANCEDSTATUSCODES".into(),
                ],
            },
            "HELO" => Reply::new(250, host),
            "MAIL" => Reply::new(250, "2.1.0 Ok"),
            "RCPT" => Reply::new(250, "2.1.5 Ok"),
            "DATA" => Reply::new(354, "End data with <CR><LF>.<CR><LF>"),
            "RSET" | "NOOP" => Reply::new(250, "2.0.0 Ok"),
            "QUIT" => Reply::new(221, "2.0.0 Bye"),
            "VRFY" => Reply::new(252, "2.5.0 Cannot VRFY user, but will accept message"),
            "HELP" => Reply::new(
                214,
                "2.0.0 Kiroku capture-only: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT",
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
            "EHLO" | "HELO" => {
                let mut reply = self.exchange(&line, &verb).await;
                if reply.is_positive() {
                    self.helo_line = Some(line.clone());
                    self.esmtp = verb == "EHLO";
                    self.txn = None;
                    if verb == "EHLO" && self.relay() {
                        reply = filter_ehlo(&reply, self.cap.cfg.max_message_bytes);
                    }
                }
                self.send(&reply).await?;
            }
            "MAIL" => {
                let Some((addr, params)) = parse_path(&line, "MAIL FROM:") else {
                    self.send(&Reply::new(501, "5.5.4 Syntax: MAIL FROM:<address>"))
                        .await?;
                    return Ok(true);
                };
                if !self.relay() && (self.helo_line.is_none() || self.txn.is_some()) {
                    self.send(&Reply::new(503, "5.5.1 Bad sequence of commands"))
                        .await?;
                    return Ok(true);
                }
                let reply = self.exchange(&line, &verb).await;
                if reply.is_positive() {
                    self.txn = Some(Txn {
                        mail_from: addr,
                        mail_params: params,
                        rcpt: Vec::new(),
                    });
                }
                self.send(&reply).await?;
            }
            "RCPT" => {
                let Some((addr, params)) = parse_path(&line, "RCPT TO:") else {
                    self.send(&Reply::new(501, "5.5.4 Syntax: RCPT TO:<address>"))
                        .await?;
                    return Ok(true);
                };
                if !self.relay() && self.txn.is_none() {
                    self.send(&Reply::new(503, "5.5.1 Need MAIL before RCPT"))
                        .await?;
                    return Ok(true);
                }
                let reply = self.exchange(&line, &verb).await;
                if let Some(txn) = self.txn.as_mut() {
                    txn.rcpt.push(Recipient {
                        address: addr,
                        params,
                        reply_code: u32::from(reply.code),
                        reply: reply.text(),
                    });
                }
                self.send(&reply).await?;
            }
            "DATA" => {
                let accepted = self
                    .txn
                    .as_ref()
                    .is_some_and(|t| t.rcpt.iter().any(|r| (200..300).contains(&r.reply_code)));
                if !self.relay() && !accepted {
                    self.send(&Reply::new(503, "5.5.1 Need RCPT before DATA"))
                        .await?;
                    return Ok(true);
                }
                let reply = self.exchange(&line, &verb).await;
                let go = reply.code == 354;
                self.send(&reply).await?;
                if go {
                    self.data().await?;
                }
            }
            "RSET" => {
                let reply = self.exchange(&line, &verb).await;
                self.txn = None;
                self.send(&reply).await?;
            }
            "NOOP" | "HELP" | "VRFY" => {
                let reply = self.exchange(&line, &verb).await;
                self.send(&reply).await?;
            }
            "QUIT" => {
                let reply = self.exchange(&line, &verb).await;
                self.send(&reply).await?;
                return Ok(false);
            }
            "STARTTLS" | "AUTH" | "BDAT" | "EXPN" | "ETRN" | "TURN" => {
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

    /// Reads the message after 354, records it, forwards it, records the
    /// outcome, replies.
    async fn data(&mut self) -> Result<(), End> {
        let limit = self.cap.cfg.max_message_bytes;
        let data =
            match tokio::time::timeout(DATA_TIMEOUT, wire::read_data(&mut self.client_r, limit))
                .await
            {
                Err(_) => {
                    self.upstream = None;
                    self.send(&Reply::new(
                        421,
                        "4.4.2 Timeout reading message data, closing",
                    ))
                    .await?;
                    return Err(End::Closed("data timeout".into()));
                }
                Ok(Err(e)) => {
                    // The client went away mid-message: the upstream gets no
                    // end-of-data, so nothing is delivered.
                    self.upstream = None;
                    return Err(End::Client(e));
                }
                Ok(Ok(d)) => d,
            };
        let txn = self.txn.take().unwrap_or(Txn {
            mail_from: String::new(),
            mail_params: String::new(),
            rcpt: Vec::new(),
        });
        let env = record::Envelope {
            helo: self
                .helo_line
                .as_deref()
                .map(|l| {
                    String::from_utf8_lossy(l)
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or("")
                        .to_owned()
                })
                .unwrap_or_default(),
            esmtp: self.esmtp,
            mail_from: txn.mail_from,
            mail_params: txn.mail_params,
            rcpt: txn.rcpt,
            client_ip: self.peer.ip().to_string(),
            client_port: u32::from(self.peer.port()),
            upstream: self.cap.cfg.upstream.clone().unwrap_or_default(),
        };

        if data.too_big || data.flaws.any() {
            // Refused by us: the upstream never sees an end-of-data, so we
            // drop its connection (it discards the partial message).
            self.upstream = None;
            let reply = if data.too_big {
                Reply::new(
                    552,
                    &format!("5.3.4 Message size exceeds fixed limit of {limit} bytes"),
                )
            } else {
                Reply::new(
                    554,
                    "5.6.0 Message contains bare CR, bare LF or NUL (RFC 5321 section 2.3.8); refused",
                )
            };
            let raw: Option<Arc<[u8]>> = (!data.too_big).then(|| data.bytes.into());
            let mut ev = self
                .build_event(&env, raw.clone().unwrap_or_else(|| Arc::from(&b""[..])))
                .await;
            if let Some(Kind::Email(m)) = &mut ev.kind {
                m.outcome = Outcome::Aborted as i32;
                m.reply_code = u32::from(reply.code);
                m.upstream_reply = reply.text();
                if data.too_big {
                    m.raw_sha256.clear();
                    m.message_size = data.size;
                    m.parse_warnings
                        .push("message over the size limit; content not kept".into());
                }
            }
            if let Err(e) = self.cap.buffer.append(&ev, raw).await {
                tracing::error!(peer = %self.peer, error = %e, "could not record a refused message");
            }
            tracing::warn!(peer = %self.peer, reply = %reply.text(), "message refused");
            self.send(&reply).await?;
            return Ok(());
        }

        let raw: Arc<[u8]> = data.bytes.into();
        let ev = self.build_event(&env, raw.clone()).await;
        for w in email(&ev)
            .map(|m| m.parse_warnings.as_slice())
            .unwrap_or_default()
        {
            tracing::info!(peer = %self.peer, warning = %w, "message recorded with parse warning");
        }

        if !self.relay() {
            let mut ev = ev;
            if let Some(Kind::Email(m)) = &mut ev.kind {
                m.outcome = Outcome::Captured as i32;
                m.reply_code = 250;
            }
            let reply = match self.cap.buffer.append(&ev, Some(raw)).await {
                Ok(seq) => Reply::new(
                    250,
                    &format!(
                        "2.0.0 Ok: captured as {}/{seq}",
                        self.cap.buffer.stream_id()
                    ),
                ),
                Err(e) => buffer_failure(&e),
            };
            self.send(&reply).await?;
            return Ok(());
        }

        // Relay: durable first, then end-of-data to the upstream.
        let id = match self.cap.buffer.begin(&ev, Some(raw.clone())).await {
            Ok(id) => id,
            Err(e) => {
                self.upstream = None;
                let reply = buffer_failure(&e);
                self.send(&reply).await?;
                return Ok(());
            }
        };
        let outcome = self.forward_data(&raw).await;
        let (code, text, result) = match &outcome {
            Ok(r) if (200..300).contains(&r.code) => (r.code, r.text(), Outcome::Delivered),
            Ok(r) => (r.code, r.text(), Outcome::Rejected),
            Err(e) => (0, e.clone(), Outcome::Unknown),
        };
        if let Err(e) = self
            .cap
            .buffer
            .finish(id, |ev| {
                if let Some(Kind::Email(m)) = &mut ev.kind {
                    m.outcome = result as i32;
                    m.reply_code = u32::from(code);
                    m.upstream_reply = text.clone();
                }
            })
            .await
        {
            // The record exists (in flight) and is recovered with outcome
            // unknown at the next start.
            tracing::error!(peer = %self.peer, error = %e, "could not record the upstream's outcome");
        }
        let reply = match outcome {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(peer = %self.peer, error = %e, "upstream failed after end-of-data");
                Reply::new(
                    451,
                    "4.4.2 Upstream connection lost during delivery; outcome unknown, try again later",
                )
            }
        };
        self.send(&reply).await?;
        Ok(())
    }

    async fn forward_data(&mut self, raw: &[u8]) -> Result<Reply, String> {
        let Some(up) = self.upstream.as_mut() else {
            return Err("no upstream connection".into());
        };
        let res = match wire::write_data(&mut up.w, raw).await {
            Ok(()) => up.reply(UPSTREAM_DATA_END_TIMEOUT).await,
            Err(e) => Err(format!("upstream {}: {e}", up.addr)),
        };
        if res.is_err() {
            self.upstream = None;
        }
        res
    }

    async fn build_event(&self, env: &record::Envelope, raw: Arc<[u8]>) -> Event {
        let (env2, raw2) = (env.clone(), raw);
        let email = tokio::task::spawn_blocking(move || record::build(&env2, &raw2))
            .await
            .unwrap_or_else(|_| EmailEvent {
                parse_warnings: vec!["record builder failed".into()],
                ..Default::default()
            });
        let ctx = &self.cap.ctx;
        let mut email = email;
        let user = match &self.local_peer {
            Some(p) => {
                email.application = p.application.clone();
                p.user.clone()
            }
            None => ctx.agent_user.clone(),
        };
        Event {
            agent_id: ctx.agent_id.clone(),
            observed_at_ms: kiroku_common::now_ms(),
            host: Some(ctx.host.clone()),
            user,
            custom: ctx.custom.clone().into_iter().collect(),
            kind: Some(Kind::Email(email)),
            ..Default::default()
        }
    }
}

fn email(ev: &Event) -> Option<&EmailEvent> {
    match &ev.kind {
        Some(Kind::Email(m)) => Some(m),
        _ => None,
    }
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
    if s.len() < prefix.len() || !s[..prefix.len()].eq_ignore_ascii_case(prefix) {
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

/// Keeps the upstream's EHLO greeting line and only the extensions the
/// relay supports; SIZE becomes the smaller of the two limits.
fn filter_ehlo(reply: &Reply, our_max: u64) -> Reply {
    let mut kept: Vec<String> = Vec::new();
    for (i, line) in reply.lines.iter().enumerate() {
        let text = line.get(4..).unwrap_or("");
        if i == 0 {
            kept.push(text.to_owned());
            continue;
        }
        let kw = text
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        if !RELAYED_EXTENSIONS.contains(&kw.as_str()) {
            continue;
        }
        if kw == "SIZE" {
            let theirs: u64 = text
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let size = if theirs == 0 {
                our_max
            } else {
                theirs.min(our_max)
            };
            kept.push(format!("SIZE {size}"));
        } else {
            kept.push(text.to_owned());
        }
    }
    let n = kept.len();
    Reply {
        code: reply.code,
        lines: kept
            .into_iter()
            .enumerate()
            .map(|(i, t)| format!("{}{}{}", reply.code, if i + 1 == n { ' ' } else { '-' }, t))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn ehlo_filtering() {
        let up = Reply {
            code: 250,
            lines: vec![
                "250-mx.example Hello".into(),
                "250-PIPELINING".into(),
                "250-SIZE 10240000".into(),
                "250-STARTTLS".into(),
                "250-AUTH PLAIN LOGIN".into(),
                "250-8BITMIME".into(),
                "250 CHUNKING".into(),
            ],
        };
        let f = filter_ehlo(&up, 5_000_000);
        assert_eq!(
            f.lines,
            vec!["250-mx.example Hello", "250-SIZE 5000000", "250 8BITMIME"]
        );
    }
}
