//! The relay's connection to the upstream MTA: connect (plain or implicit
//! TLS), EHLO with STARTTLS per policy, the agent's own smarthost login,
//! and commands with RFC 5321 section 4.5.3.2 timeouts. Commands go one
//! at a time, each waiting for its reply, except a client's pipelined
//! MAIL/RCPT/DATA group, which the session sends in one write with
//! [`Upstream::send_lines`] only to an upstream that offered PIPELINING.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

pub mod error;

pub use error::{ErrorKind, Step, UpstreamError};

use super::auth;
use super::tls::{self, Conn, Io, UpstreamTls};
use super::wire::{self, Reply};
use crate::config::UpstreamTls as Policy;

/// RFC 5321 4.5.3.2 client timeouts.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
pub const GREETING_TIMEOUT: Duration = Duration::from_secs(300);
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
pub const DATA_INIT_TIMEOUT: Duration = Duration::from_secs(120);
pub const DATA_BLOCK_TIMEOUT: Duration = Duration::from_secs(180);
pub const DATA_END_TIMEOUT: Duration = Duration::from_secs(600);
const TLS_TIMEOUT: Duration = Duration::from_secs(60);

/// How to reach and secure the upstream; built at start and again by each
/// configuration reload (sessions keep the one they started with).
#[derive(Clone)]
pub struct Settings {
    pub addr: String,
    pub policy: Policy,
    pub tls: UpstreamTls,
    /// Agent-held smarthost credentials (user, password).
    pub credentials: Option<(String, String)>,
    /// How long the greeting may take (`smtp.upstream_greeting_timeout_secs`,
    /// [`GREETING_TIMEOUT`] by default).
    pub greeting_timeout: Duration,
}

/// The extensions in an EHLO reply.
#[derive(Debug, Clone, Default)]
pub struct Caps {
    /// Text of the first line (the server's name and greeting).
    pub greeting: String,
    /// Each extension line without the code, e.g. "SIZE 1000".
    pub lines: Vec<String>,
}

impl Caps {
    pub fn parse(reply: &Reply) -> Caps {
        let mut it = reply
            .lines
            .iter()
            .map(|l| l.get(4..).unwrap_or("").to_owned());
        Caps {
            greeting: it.next().unwrap_or_default(),
            lines: it.collect(),
        }
    }

    /// The arguments of extension `kw`, if offered.
    pub fn get(&self, kw: &str) -> Option<&str> {
        self.lines.iter().find_map(|l| {
            let mut p = l.splitn(2, ' ');
            let k = p.next()?;
            k.eq_ignore_ascii_case(kw)
                .then(|| p.next().unwrap_or("").trim())
        })
    }

    pub fn has(&self, kw: &str) -> bool {
        self.get(kw).is_some()
    }

    pub fn auth_mechanisms(&self) -> Vec<String> {
        self.get("AUTH")
            .map(|m| m.split_whitespace().map(str::to_ascii_uppercase).collect())
            .unwrap_or_default()
    }
}

pub struct Upstream {
    pub addr: String,
    conn: Conn,
    /// Description of the TLS session, empty while plain.
    pub tls: String,
    pub caps: Caps,
    /// The agent logged in with its own credentials.
    pub agent_auth: Option<String>,
    /// How long opening this connection took, for the record of the first
    /// transaction that uses it (taken once: later ones did not wait).
    pub setup: Option<Setup>,
    /// The name in its greeting ([`greeting_name`]).
    pub name: String,
}

/// Time spent opening an upstream connection (issue 20, `PhaseTimings`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Setup {
    /// TCP connect (and the implicit-TLS handshake, when that is the policy).
    pub connect: Duration,
    /// Until the greeting was read.
    pub greeting: Duration,
    /// EHLO, STARTTLS and its handshake, EHLO again, the agent's login.
    pub hello: Duration,
}

/// The name the upstream gave in its greeting, its first word
/// ("220 mx1.example.org ESMTP Postfix" -> "mx1.example.org"); empty for a
/// refusal or an empty greeting. Only a plausible host name is kept (it
/// goes into every mail record).
pub fn greeting_name(greeting: &Reply) -> String {
    if greeting.code != 220 {
        return String::new();
    }
    let word = greeting
        .lines
        .first()
        .and_then(|l| l.get(4..))
        .and_then(|t| t.split_whitespace().next())
        .unwrap_or_default();
    let plausible = word.len() <= 255
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._:[]".contains(c));
    if plausible {
        word.to_owned()
    } else {
        String::new()
    }
}

impl Upstream {
    /// Connects and reads the greeting.
    pub async fn connect(s: &Settings) -> Result<(Upstream, Reply), UpstreamError> {
        let err = |phase, kind| UpstreamError::new(&s.addr, phase, kind);
        let started = Instant::now();
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&s.addr))
            .await
            .map_err(|_| err(Step::Connect, ErrorKind::TimedOut(CONNECT_TIMEOUT)))?
            .map_err(|e| err(Step::Connect, ErrorKind::Unreachable(e.to_string())))?;
        let _ = stream.set_nodelay(true);
        let mut io: Box<dyn Io> = Box::new(stream);
        let mut tls_desc = String::new();
        if s.policy == Policy::Implicit {
            let (t, d) = tokio::time::timeout(TLS_TIMEOUT, s.tls.handshake(io, true))
                .await
                .map_err(|_| err(Step::StartTls, ErrorKind::TimedOut(TLS_TIMEOUT)))?
                .map_err(|e| {
                    err(
                        Step::StartTls,
                        ErrorKind::Tls {
                            error: e.to_string(),
                            verify: true,
                        },
                    )
                })?;
            io = t;
            tls_desc = d;
        }
        let mut up = Upstream {
            addr: s.addr.clone(),
            conn: tls::conn(io),
            tls: tls_desc,
            caps: Caps::default(),
            agent_auth: None,
            setup: None,
            name: String::new(),
        };
        let connected = started.elapsed();
        let greeting = up.reply_in(Step::Greeting, s.greeting_timeout).await?;
        up.setup = Some(Setup {
            connect: connected,
            greeting: started.elapsed().saturating_sub(connected),
            hello: Duration::ZERO,
        });
        up.name = greeting_name(&greeting);
        Ok((up, greeting))
    }

    fn error(&self, phase: Step, kind: ErrorKind) -> UpstreamError {
        UpstreamError::new(&self.addr, phase, kind)
    }

    /// Reads a reply to a command.
    pub async fn reply(&mut self, limit: Duration) -> Result<Reply, UpstreamError> {
        self.reply_in(Step::Command, limit).await
    }

    /// Reads a reply in `phase` (which the error names).
    pub async fn reply_in(&mut self, phase: Step, limit: Duration) -> Result<Reply, UpstreamError> {
        match tokio::time::timeout(limit, wire::read_reply(&mut self.conn)).await {
            Err(_) => Err(self.error(phase, ErrorKind::TimedOut(limit))),
            Ok(Err(e)) => Err(self.error(phase, ErrorKind::Io(e.to_string()))),
            Ok(Ok(r)) => Ok(r),
        }
    }

    /// Sends one line (CRLF added) without waiting for a reply.
    pub async fn send_line(&mut self, line: &[u8]) -> Result<(), UpstreamError> {
        self.send_lines(&[line]).await
    }

    /// Sends lines (each CRLF-terminated here) in one write without
    /// waiting for replies: one line, or a pipelined group (RFC 2920) for
    /// an upstream that offered PIPELINING.
    pub async fn send_lines(&mut self, lines: &[&[u8]]) -> Result<(), UpstreamError> {
        let mut out = Vec::with_capacity(lines.iter().map(|l| l.len() + 2).sum());
        for line in lines {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
        let w = async {
            self.conn.write_all(&out).await?;
            self.conn.flush().await
        };
        let r = tokio::time::timeout(DATA_BLOCK_TIMEOUT, w).await;
        r.map_err(|_| self.error(Step::Command, ErrorKind::TimedOut(DATA_BLOCK_TIMEOUT)))?
            .map_err(|e| self.error(Step::Command, ErrorKind::Io(e.to_string())))
    }

    pub async fn command(&mut self, line: &[u8], limit: Duration) -> Result<Reply, UpstreamError> {
        self.send_line(line).await?;
        self.reply(limit).await
    }

    /// EHLO (falling back to HELO when refused), then STARTTLS and EHLO
    /// again per policy, then the agent's own login. Returns the last
    /// EHLO/HELO reply; a refusal from the upstream is returned as `Ok` for
    /// the client to see, a policy or connection failure as `Err`.
    pub async fn hello(
        &mut self,
        name: &str,
        s: &Settings,
    ) -> Result<(Reply, bool), UpstreamError> {
        let started = Instant::now();
        let r = self.hello_steps(name, s).await;
        if let Some(setup) = self.setup.as_mut() {
            setup.hello += started.elapsed();
        }
        r
    }

    async fn hello_steps(
        &mut self,
        name: &str,
        s: &Settings,
    ) -> Result<(Reply, bool), UpstreamError> {
        let ehlo = format!("EHLO {name}");
        let mut r = self.ehlo_command(ehlo.as_bytes()).await?;
        if !r.is_positive() {
            if s.policy == Policy::Required {
                return Err(self.error(
                    Step::Ehlo,
                    ErrorKind::StartTlsUnavailable(format!("refused EHLO ({})", r.text())),
                ));
            }
            let helo = self.ehlo_command(format!("HELO {name}").as_bytes()).await?;
            self.caps = Caps::default();
            return Ok((helo, false));
        }
        self.caps = Caps::parse(&r);
        if self.tls.is_empty() && s.policy != Policy::Off {
            if self.caps.has("STARTTLS") {
                let st = self.ehlo_command(b"STARTTLS").await?;
                if st.code == 220 {
                    self.start_tls(s).await?;
                    r = self.ehlo_command(ehlo.as_bytes()).await?;
                    if !r.is_positive() {
                        return Ok((r, true));
                    }
                    self.caps = Caps::parse(&r);
                } else if s.policy == Policy::Required {
                    return Err(self.error(
                        Step::StartTls,
                        ErrorKind::StartTlsUnavailable(format!("refused STARTTLS ({})", st.text())),
                    ));
                } else {
                    tracing::warn!(upstream = %self.addr, reply = %st.text(), "upstream offered STARTTLS but refused it; going on in plain text");
                }
            } else if s.policy == Policy::Required {
                return Err(self.error(
                    Step::Ehlo,
                    ErrorKind::StartTlsUnavailable("does not offer STARTTLS".into()),
                ));
            }
        }
        if let Some((user, password)) = &s.credentials
            && self.agent_auth.is_none()
        {
            self.login(user, password).await?;
        }
        Ok((r, true))
    }

    /// One command of the EHLO/STARTTLS exchange (errors name that phase).
    async fn ehlo_command(&mut self, line: &[u8]) -> Result<Reply, UpstreamError> {
        self.send_line(line).await.map_err(|e| UpstreamError {
            phase: Step::Ehlo,
            ..e
        })?;
        self.reply_in(Step::Ehlo, COMMAND_TIMEOUT).await
    }

    async fn start_tls(&mut self, s: &Settings) -> Result<(), UpstreamError> {
        if !self.conn.buffer().is_empty() {
            return Err(self.error(Step::StartTls, ErrorKind::DataBeforeTls));
        }
        let verify = s.policy != Policy::Opportunistic;
        let io = std::mem::replace(&mut self.conn, tls::placeholder());
        let (io, desc) =
            tokio::time::timeout(TLS_TIMEOUT, s.tls.handshake(io.into_inner(), verify))
                .await
                .map_err(|_| self.error(Step::StartTls, ErrorKind::TimedOut(TLS_TIMEOUT)))?
                .map_err(|e| {
                    self.error(
                        Step::StartTls,
                        ErrorKind::Tls {
                            error: e.to_string(),
                            verify,
                        },
                    )
                })?;
        self.conn = tls::conn(io);
        self.tls = desc;
        // What the server offered in plain text is forgotten (RFC 3207
        // 4.2): until the EHLO over TLS answers, nothing (PIPELINING
        // included) counts as offered.
        self.caps = Caps::default();
        Ok(())
    }

    /// Logs in with the agent's own credentials (PLAIN, else LOGIN).
    async fn login(&mut self, user: &str, password: &str) -> Result<(), UpstreamError> {
        let mechs = self.caps.auth_mechanisms();
        let r = if mechs.iter().any(|m| m == "PLAIN") {
            let line = format!("AUTH PLAIN {}", auth::plain_response(user, password));
            self.command(line.as_bytes(), COMMAND_TIMEOUT).await?
        } else if mechs.iter().any(|m| m == "LOGIN") {
            let mut r = self.command(b"AUTH LOGIN", COMMAND_TIMEOUT).await?;
            for secret in [user, password] {
                if r.code != 334 {
                    break;
                }
                r = self
                    .command(auth::b64(secret).as_bytes(), COMMAND_TIMEOUT)
                    .await?;
            }
            r
        } else {
            return Err(self.error(
                Step::AgentAuth,
                ErrorKind::AgentAuth(format!(
                    "offers no AUTH PLAIN or LOGIN (offers: {}) for smtp.upstream_auth{}",
                    if mechs.is_empty() {
                        "none".into()
                    } else {
                        mechs.join(" ")
                    },
                    if self.tls.is_empty() {
                        "; many servers offer AUTH only after STARTTLS"
                    } else {
                        ""
                    }
                )),
            ));
        };
        if r.code != 235 {
            return Err(self.error(
                Step::AgentAuth,
                ErrorKind::AgentAuth(format!(
                    "refused the agent's credentials for {user:?}: {} (check smtp.upstream_auth)",
                    r.text()
                )),
            ));
        }
        self.agent_auth = Some(user.to_owned());
        Ok(())
    }

    /// Sends one chunk of message content, dot-stuffed.
    pub async fn data_chunk(
        &mut self,
        stuffer: &mut wire::Stuffer,
        chunk: &[u8],
    ) -> Result<(), UpstreamError> {
        let r =
            tokio::time::timeout(DATA_BLOCK_TIMEOUT, stuffer.write(&mut self.conn, chunk)).await;
        r.map_err(|_| self.error(Step::Data, ErrorKind::TimedOut(DATA_BLOCK_TIMEOUT)))?
            .map_err(|e| self.error(Step::Data, ErrorKind::Io(e.to_string())))
    }

    /// Sends the end-of-data `.`; returns the upstream's verdict.
    pub async fn data_end(&mut self, stuffer: &mut wire::Stuffer) -> Result<Reply, UpstreamError> {
        let r = tokio::time::timeout(DATA_BLOCK_TIMEOUT, stuffer.finish(&mut self.conn)).await;
        r.map_err(|_| self.error(Step::Data, ErrorKind::TimedOut(DATA_BLOCK_TIMEOUT)))?
            .map_err(|e| self.error(Step::Data, ErrorKind::Io(e.to_string())))?;
        self.reply_in(Step::EndOfData, DATA_END_TIMEOUT).await
    }
}

/// The upstream's queue id in an end-of-data reply, when it gives one:
/// Postfix "queued as 4Xyz", Exim "id=1abc-...", OpenSMTPD and sendmail
/// "2.0.0 <id> Message accepted for delivery".
pub fn queue_id(reply: &Reply) -> String {
    let text = reply
        .lines
        .iter()
        .map(|l| l.get(4..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join(" ");
    let clean = |s: &str| -> String {
        s.trim_matches(|c: char| !c.is_ascii_alphanumeric())
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
            .collect()
    };
    let lower = text.to_ascii_lowercase();
    if let Some(i) = lower.find("queued as ") {
        return clean(&text[i + 10..]);
    }
    if let Some(i) = lower.find("id=") {
        return clean(&text[i + 3..]);
    }
    if let Some(i) = lower.find("message accepted") {
        // The word just before, unless it is the enhanced status code.
        // (An id may be all digits, as OpenSMTPD's hex ids sometimes are;
        // an enhanced status code is class.subject.detail.)
        let before: Vec<&str> = text[..i].split_whitespace().collect();
        if let Some(w) = before.last()
            && !is_enhanced_status(w)
        {
            return clean(w);
        }
    }
    String::new()
}

/// `2.0.0`-style enhanced status code (RFC 3463): three dot-separated
/// numbers.
fn is_enhanced_status(w: &str) -> bool {
    let parts: Vec<&str> = w.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Reply {
        Reply {
            code: 250,
            lines: s.lines().map(str::to_owned).collect(),
        }
    }

    #[test]
    fn names_from_greetings() {
        let multi = Reply::multi(220, &["mx2.example.org ESMTP".into(), "welcome".into()]);
        for (greeting, want) in [
            (
                Reply::new(220, "mx1.example.org ESMTP Postfix"),
                "mx1.example.org",
            ),
            (multi, "mx2.example.org"),
            (Reply::new(220, "[192.0.2.1] ready"), "[192.0.2.1]"),
            (Reply::new(554, "mx1.example.org no service"), ""),
            (Reply::new(220, ""), ""),
            (Reply::new(220, "<script>x ESMTP"), ""),
        ] {
            assert_eq!(greeting_name(&greeting), want, "{greeting:?}");
        }
    }

    #[test]
    fn queue_ids() {
        assert_eq!(
            queue_id(&r("250 2.0.0 Ok: queued as 4TxYz1Abc")),
            "4TxYz1Abc"
        );
        assert_eq!(
            queue_id(&r("250 OK id=1rABCd-000123-4x")),
            "1rABCd-000123-4x"
        );
        assert_eq!(
            queue_id(&r("250 2.0.0 5e8f9c1a Message accepted for delivery")),
            "5e8f9c1a"
        );
        assert_eq!(queue_id(&r("250 Message accepted for delivery")), "");
        // OpenSMTPD's hex id that happens to be all digits.
        assert_eq!(
            queue_id(&r("250 2.0.0 49429899 Message accepted for delivery")),
            "49429899"
        );
        assert_eq!(queue_id(&r("250 2.0.0 Ok")), "");
    }

    #[test]
    fn caps() {
        let c = Caps::parse(&r(
            "250-mx.example Hi\n250-SIZE 1000\n250-AUTH PLAIN login\n250 STARTTLS",
        ));
        assert_eq!(c.greeting, "mx.example Hi");
        assert_eq!(c.get("size"), Some("1000"));
        assert!(c.has("STARTTLS"));
        assert!(!c.has("PIPELINING"));
        assert_eq!(c.auth_mechanisms(), vec!["PLAIN", "LOGIN"]);
    }
}
