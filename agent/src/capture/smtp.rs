//! SMTP capture: a listener that either relays every command to an upstream
//! MTA (returning the upstream's replies) or, in capture-only mode, answers
//! itself and delivers nothing. Every transaction — delivered, refused by
//! the upstream at any stage, or abandoned by the client — becomes an
//! `EmailEvent` in the buffer.
//!
//! The promise, in relay mode: the message is durable in the buffer before
//! the end-of-data goes to the upstream, and the upstream's outcome is
//! committed before its reply goes back to the client and durable before
//! anything further is said to that client (its flush overlaps the reply;
//! a crash in that window leaves outcome `unknown`, as a crash while the
//! upstream decides does). Recipients come from RCPT TO only.
//!
//! - `session.rs` — one client connection: the command state machine
//!   (`session/` holds one file per verb).
//! - `slots.rs` — connection slots, and which idle or stalled connection
//!   makes room when they run out.
//! - `upstream.rs` — the connection to the upstream MTA (TLS, EHLO, login).
//! - `tls.rs` — plain/TLS streams and rustls configurations.
//! - `auth.rs` — AUTH pass-through helpers (who authenticated).
//! - `incidents.rs` — relay incidents (upstream down, TLS failing, clients
//!   gone before MAIL...) coalesced into open / still_open / closed records.
//! - `config.rs` — the `[smtp]` configuration.
//! - `wire.rs` — strict framing; `record.rs` — MIME → record; `peer.rs` —
//!   the process behind a loopback client.

pub mod auth;
pub mod config;
pub mod incidents;
mod peer;
pub mod record;
mod session;
mod slots;
mod tls;
pub mod upstream;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::buffer::Buffer;
use crate::capture::context::CaptureContext;
use crate::config::{SmtpConfig, SmtpMode, UpstreamTls, WhenFull};
use crate::gaps::Gaps;

/// What a session needs: the `[smtp]` settings and what is derived from
/// them (upstream TLS and credentials, the STARTTLS acceptor), and the
/// shared buffer, gap ledger and capture context. A configuration reload
/// builds a new one ([`SmtpCapture::reconfigured`]) and puts it in the
/// [`Live`] handle: each session keeps the one it started with.
#[derive(Clone)]
pub struct SmtpCapture {
    cfg: SmtpConfig,
    buffer: Arc<Buffer>,
    /// What a full buffer does to new mail (`buffer.when_full`).
    when_full: WhenFull,
    /// Where mail relayed unrecorded is counted.
    gaps: Arc<Gaps>,
    ctx: Arc<CaptureContext>,
    hostname: String,
    /// Relay mode only.
    upstream: Option<upstream::Settings>,
    /// STARTTLS towards clients, when a certificate is configured.
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    /// Relay incidents, coalesced; their writer runs with
    /// [`SmtpCapture::serve`]. Shared by every configuration a reload
    /// makes, so an incident open before a reload closes after it.
    incidents: Arc<incidents::Incidents>,
}

/// Floor of `smtp.upstream_greeting_timeout_secs`.
const MIN_GREETING_TIMEOUT_SECS: u64 = 2;

/// The settings new sessions start with; replaced by a configuration
/// reload (`crate::reload`), read once per session at its start.
pub struct Live(std::sync::RwLock<Arc<SmtpCapture>>);

impl Live {
    pub fn new(cap: Arc<SmtpCapture>) -> Arc<Live> {
        Arc::new(Live(std::sync::RwLock::new(cap)))
    }

    /// The settings a session starting now uses.
    pub fn current(&self) -> Arc<SmtpCapture> {
        match self.0.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// New sessions use `cap` from now on; sessions in progress finish
    /// with the settings they started with.
    pub fn replace(&self, cap: SmtpCapture) {
        let cap = Arc::new(cap);
        match self.0.write() {
            Ok(mut c) => *c = cap,
            Err(poisoned) => *poisoned.into_inner() = cap,
        }
    }
}

/// What the `[smtp]` settings name outside the config file, read: the
/// greeting name, the upstream (TLS roots, the agent's credentials), the
/// STARTTLS certificate.
struct Derived {
    hostname: String,
    upstream: Option<upstream::Settings>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
}

impl Derived {
    /// Errors name the field and file at fault.
    fn read(cfg: &SmtpConfig, ctx: &CaptureContext) -> anyhow::Result<Derived> {
        let hostname = cfg
            .hostname
            .clone()
            .unwrap_or_else(|| ctx.host().fqdn.clone());
        let upstream = match (&cfg.mode, &cfg.upstream) {
            (SmtpMode::Relay, Some(addr)) => {
                let name = cfg
                    .upstream_tls_name
                    .clone()
                    .unwrap_or_else(|| kiroku_common::endpoint_host(addr));
                let credentials = match &cfg.upstream_auth {
                    None => None,
                    Some(a) => {
                        let pw = std::fs::read_to_string(&a.password_file).map_err(|e| {
                            anyhow::anyhow!(
                                "cannot read smtp.upstream_auth.password_file {}: {e}",
                                a.password_file.display()
                            )
                        })?;
                        Some((
                            a.username.clone(),
                            pw.trim_end_matches(['\r', '\n']).to_owned(),
                        ))
                    }
                };
                if credentials.is_some() && cfg.upstream_tls == UpstreamTls::Off {
                    tracing::warn!(
                        "smtp.upstream_auth is set with smtp.upstream_tls = \"off\": the agent's password crosses the network in clear"
                    );
                }
                Some(upstream::Settings {
                    addr: addr.clone(),
                    policy: cfg.upstream_tls,
                    tls: tls::UpstreamTls::new(cfg.upstream_ca.as_deref(), &name)?,
                    credentials,
                    greeting_timeout: Duration::from_secs(
                        cfg.upstream_greeting_timeout_secs
                            .max(MIN_GREETING_TIMEOUT_SECS),
                    ),
                })
            }
            _ => None,
        };
        let acceptor = match (&cfg.tls_cert, &cfg.tls_key) {
            (Some(c), Some(k)) => Some(tls::acceptor(c, k)?),
            _ => None,
        };
        Ok(Derived {
            hostname,
            upstream,
            acceptor,
        })
    }
}

impl SmtpCapture {
    /// Reads the TLS material and credentials the config names; errors
    /// name the field and file at fault.
    pub fn new(
        cfg: SmtpConfig,
        buffer: Arc<Buffer>,
        when_full: WhenFull,
        gaps: Arc<Gaps>,
        ctx: Arc<CaptureContext>,
    ) -> anyhow::Result<Arc<SmtpCapture>> {
        let Derived {
            hostname,
            upstream,
            acceptor,
        } = Derived::read(&cfg, &ctx)?;
        let incidents = Arc::new(incidents::Incidents::new(
            &cfg,
            buffer.clone(),
            ctx.clone(),
            gaps.clone(),
        ));
        Ok(Arc::new(SmtpCapture {
            incidents,
            cfg,
            buffer,
            when_full,
            gaps,
            ctx,
            hostname,
            upstream,
            acceptor,
        }))
    }

    /// The same capture with the settings of `cfg` (a configuration
    /// reload): the upstream, its TLS and credentials, the STARTTLS
    /// certificate and every per-session setting are read again; the
    /// buffer, gap ledger and context stay. Listen addresses and
    /// `max_connections` are the listener's and keep their start values.
    /// Errors (an unreadable CA, key or password file) name the field and
    /// file; nothing changes then.
    pub fn reconfigured(&self, cfg: SmtpConfig) -> anyhow::Result<SmtpCapture> {
        let Derived {
            hostname,
            upstream,
            acceptor,
        } = Derived::read(&cfg, &self.ctx)?;
        Ok(SmtpCapture {
            cfg,
            hostname,
            upstream,
            acceptor,
            ..self.clone()
        })
    }

    /// The `[smtp]` settings this capture was built from.
    pub fn config(&self) -> &SmtpConfig {
        &self.cfg
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
    /// Sessions take their settings from `live` when they start (a reload
    /// replaces them there); the slots keep this capture's
    /// `max_connections` and `data_min_rate_bytes_per_sec`.
    pub async fn serve(
        self: Arc<Self>,
        live: Arc<Live>,
        listeners: Vec<TcpListener>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let slots = slots::Slots::new(
            self.cfg.max_connections,
            self.cfg.data_min_rate_bytes_per_sec,
        );
        let mut pressure = slots::PressureLog::default();
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
        let (stop_incidents, incidents_stopped) = tokio::sync::oneshot::channel::<()>();
        let incident_writer = {
            let this = self.clone();
            tokio::spawn(async move {
                this.incidents
                    .run(async {
                        let _ = incidents_stopped.await;
                    })
                    .await;
            })
        };
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(res) = sessions.join_next(), if !sessions.is_empty() => {
                    if let Err(e) = res { tracing::error!(error = %e, "SMTP session task failed"); }
                }
                conn = rx.recv() => {
                    let Some((stream, peer, local)) = conn else { break };
                    let this = live.current();
                    let admission = slots.admit();
                    if let Some((evicted, refused)) = pressure.note(&admission) {
                        tracing::warn!(
                            evicted,
                            refused,
                            max = self.cfg.max_connections,
                            "SMTP connections all in use: idle or stalled ones closed to make room (evicted), new clients refused because every connection was working (refused), since the last report; a flood of idle connections, or raise smtp.max_connections if this is normal load"
                        );
                    }
                    let slot = match admission {
                        slots::Admission::Free(slot) | slots::Admission::Evicted(slot) => slot,
                        slots::Admission::Full => {
                            let mut s = stream;
                            let _ = s.write_all(b"421 4.7.0 Too many connections, try again later\r\n").await;
                            continue;
                        }
                    };
                    sessions.spawn(async move {
                        this.session(stream, peer, local, slot).await;
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
            // Cut off now, before the incidents close: an occurrence a
            // session reported after that would have no writer.
            sessions.shutdown().await;
        }
        // Open incidents are closed ("agent stopped") and written.
        let _ = stop_incidents.send(());
        let _ = incident_writer.await;
    }

    async fn session(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        local: SocketAddr,
        slot: slots::Slot,
    ) {
        let _ = stream.set_nodelay(true);
        session::run(self, stream, peer, local, slot).await;
    }
}
