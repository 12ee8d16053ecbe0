//! The collector's mTLS listener: TCP accept, then the TLS handshake in its
//! own task (a slow or silent client never holds up the others), with a
//! rustls configuration that is rebuilt when the CA, certificate, key or
//! revocation list files change (checked every two seconds, and on
//! SIGHUP). A bad new file is refused with a log line naming it and the
//! previous configuration stays in force. Handshakes that fail (no client
//! certificate, another CA, a revoked or expired certificate, plain text,
//! TLS below 1.2) are logged with the peer address and the reason.
//!
//! A handshake is not a licence for the life of the connection: every
//! connection is kept with its peer's certificate chain ([`LiveConns`]),
//! and when the configuration is rebuilt (a new CRL or CA) — and every
//! minute, for certificates that expire — each chain is verified again;
//! a connection whose certificate is now refused is cut at once and
//! logged with peer, identity and reason. A graceful shutdown ends by
//! cutting whatever is still open.
//!
//! After the handshake a [`Checked`] connection watches the bytes: a peer
//! that does not open with the HTTP/2 preface (an HTTP/1.1 client, garbage
//! inside TLS) is cut at once, one that sends no preface within the
//! handshake timeout is cut then, and a connection the HTTP/2 layer closes
//! for a protocol error (garbage frames) is logged with the peer address
//! too; tonic itself would only say so at debug level, without the peer.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use kiroku_common::tls::{AgentsCaFiles, TlsFiles};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use budget::{HandshakeRefusals, REFUSALS_WINDOW};

pub mod budget;
mod live;

pub use live::LiveConns;

/// Longest a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const RELOAD_CHECK: Duration = Duration::from_secs(2);
/// How often live connections are checked again without a file change
/// (a certificate that expires while its connection is open).
const RECHECK_EVERY: Duration = Duration::from_secs(60);
/// How often an expired revocation list is warned about again.
const CRL_WARN_EVERY: Duration = Duration::from_secs(3600);

type Verifier = Arc<dyn rustls::server::danger::ClientCertVerifier>;

/// The current TLS configuration, what it was built from, and the live
/// connections it must keep accepting.
pub struct TlsSource {
    files: TlsFiles,
    crl: Option<PathBuf>,
    /// The agents' issuing CA and its revocation list, when configured.
    agents: Option<AgentsCaFiles>,
    current: RwLock<(Arc<rustls::ServerConfig>, Verifier)>,
    stamp: RwLock<Vec<Option<SystemTime>>>,
    /// The revocation list's `nextUpdate` (ms), and when an expired list
    /// was last warned about.
    crl_expiry: Mutex<(Option<i64>, Option<Instant>)>,
    /// Every connection past its handshake, with its peer's certificates.
    pub live: Arc<LiveConns>,
    /// Records a reload in the audit log: (admin call, detail). Set by the
    /// server once the store is open ([`TlsSource::audit_reloads_with`]).
    audit: std::sync::OnceLock<AuditHook>,
    /// What the files held at the last load, as the audit log names them
    /// (`store::audit::file_digest`): CA, certificate, key, CRL.
    digests: Mutex<Vec<String>>,
    /// [`TlsSource::server_only`]'s configuration and the one it was made
    /// from.
    server_only: Mutex<Option<(Arc<rustls::ServerConfig>, Arc<rustls::ServerConfig>)>>,
}

/// Records an admin action: (call, detail).
pub type AuditHook = Box<dyn Fn(&str, &str) + Send + Sync>;

impl TlsSource {
    /// Builds the first configuration; an error here stops the collector.
    pub fn new(files: TlsFiles, crl: Option<PathBuf>) -> anyhow::Result<Arc<TlsSource>> {
        Self::with_agents(files, crl, None)
    }

    /// [`TlsSource::new`] with the agents' issuing CA and its revocation
    /// list (`[agents_ca]`), watched like the other files.
    pub fn with_agents(
        files: TlsFiles,
        crl: Option<PathBuf>,
        agents: Option<AgentsCaFiles>,
    ) -> anyhow::Result<Arc<TlsSource>> {
        let verifier = files.client_verifier_with(crl.as_deref(), agents.as_ref())?;
        let cfg = files.server_rustls(verifier.clone())?;
        let src = TlsSource {
            stamp: RwLock::new(Vec::new()),
            current: RwLock::new((Arc::new(cfg), verifier)),
            crl_expiry: Mutex::new((None, None)),
            live: Arc::default(),
            audit: std::sync::OnceLock::new(),
            digests: Mutex::new(Vec::new()),
            server_only: Mutex::new(None),
            files,
            crl,
            agents,
        };
        if let Ok(mut d) = src.digests.lock() {
            *d = src.digests();
        }
        let stamp = src.stamps();
        if let Ok(mut s) = src.stamp.write() {
            *s = stamp;
        }
        src.crl_loaded();
        Ok(Arc::new(src))
    }

    /// The files the configuration is built from, each with what it is:
    /// `ca`, `cert`, `key`, then `crl` and `agents_ca`, `agents_crl` when
    /// configured.
    fn paths(&self) -> Vec<(&'static str, &std::path::Path)> {
        let mut paths = vec![
            ("ca", self.files.ca.as_path()),
            ("cert", self.files.cert.as_path()),
            ("key", self.files.key.as_path()),
        ];
        if let Some(c) = &self.crl {
            paths.push(("crl", c));
        }
        if let Some(a) = &self.agents {
            paths.push(("agents_ca", &a.cert));
            paths.push(("agents_crl", &a.crl));
        }
        paths
    }

    fn stamps(&self) -> Vec<Option<SystemTime>> {
        self.paths()
            .into_iter()
            .map(|(_, p)| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }

    /// The files' paths and hashes, in the order of [`TlsSource::paths`].
    fn digests(&self) -> Vec<String> {
        self.paths()
            .into_iter()
            .map(|(_, p)| crate::store::audit::file_digest(p))
            .collect()
    }

    /// Has every reload recorded through `hook` (once; later calls are
    /// ignored).
    pub fn audit_reloads_with(&self, hook: AuditHook) {
        let _ = self.audit.set(hook);
    }

    /// Records a reload: a changed revocation list as a CRL change, any
    /// other file (or none, on SIGHUP) as a TLS reload, each with the
    /// files' hashes.
    fn audit_reload(&self, outcome: &str, forced: bool) {
        let Some(hook) = self.audit.get() else {
            return;
        };
        let now = self.digests();
        let before = self
            .digests
            .lock()
            .map(|mut d| std::mem::replace(&mut *d, now.clone()))
            .unwrap_or_default();
        let why = if forced { "SIGHUP" } else { "files changed" };
        let changed: Vec<&String> = now
            .iter()
            .enumerate()
            .filter(|(i, d)| before.get(*i) != Some(*d))
            .map(|(_, d)| d)
            .collect();
        let kinds: Vec<&str> = self.paths().into_iter().map(|(k, _)| k).collect();
        let is_list = |i: usize| matches!(kinds.get(i), Some(&"crl" | &"agents_crl"));
        let lists: Vec<usize> = (0..now.len())
            .filter(|&i| is_list(i) && before.get(i) != now.get(i))
            .collect();
        let crl_changed = !lists.is_empty();
        let tls_changed = changed.len() > lists.len();
        for i in lists {
            let which = if kinds[i] == "agents_crl" {
                "agents' revocation list"
            } else {
                "revocation list"
            };
            hook(
                crate::store::audit::admin_call::CRL_RELOAD,
                &format!("{which} {}: {outcome} ({why})", now[i]),
            );
        }
        if tls_changed || !crl_changed {
            let files = if changed.is_empty() {
                format!("files unchanged: {}", now.join(", "))
            } else {
                changed
                    .iter()
                    .map(|d| d.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            hook(
                crate::store::audit::admin_call::TLS_RELOAD,
                &format!("TLS {outcome} ({why}): {files}"),
            );
        }
    }

    fn current(&self) -> (Arc<rustls::ServerConfig>, Verifier) {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current().0)
    }

    /// The configuration of a listener that authenticates only itself
    /// (the enrollment listener: its clients have no certificate yet): the
    /// collector's certificate as currently loaded — a renewed certificate
    /// reaches it with the same reload — and no client certificate; ALPN
    /// h2.
    pub fn server_only(&self) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
        let main = self.current().0;
        let mut cached = self.server_only.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((from, made)) = cached.as_ref()
            && Arc::ptr_eq(from, &main)
        {
            return Ok(made.clone());
        }
        let mut cfg = rustls::ServerConfig::builder_with_provider(
            rustls::crypto::ring::default_provider().into(),
        )
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(main.cert_resolver.clone());
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        let made = Arc::new(cfg);
        *cached = Some((main, made.clone()));
        Ok(made)
    }

    /// Rebuilds the configuration if a file changed (or `force`), then
    /// cuts every live connection whose certificate the new configuration
    /// refuses.
    pub fn reload(&self, force: bool) {
        let now = self.stamps();
        let changed = self.stamp.read().map(|s| *s != now).unwrap_or(true);
        if !changed && !force {
            return;
        }
        if let Ok(mut s) = self.stamp.write() {
            *s = now;
        }
        let built = self
            .files
            .client_verifier_with(self.crl.as_deref(), self.agents.as_ref())
            .and_then(|v| Ok((Arc::new(self.files.server_rustls(v.clone())?), v)));
        match built {
            Ok(new) => {
                let verifier = new.1.clone();
                if let Ok(mut c) = self.current.write() {
                    *c = new;
                }
                tracing::info!(
                    crl = ?self.crl, ca = %self.files.ca.display(),
                    "TLS configuration reloaded (certificates / revocation list)"
                );
                self.crl_loaded();
                let cut = self.live.recheck(&*verifier);
                if cut > 0 {
                    tracing::warn!(
                        connections = cut,
                        "live connections cut after the TLS reload"
                    );
                }
                self.audit_reload(&format!("reloaded, {cut} live connections cut"), force);
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    "new TLS files refused; the previous configuration stays in force (fix the file and it is picked up again)"
                );
                self.audit_reload(
                    &format!("refused, the previous configuration stays in force: {e}"),
                    force,
                );
            }
        }
    }

    /// Checks every live connection against the configuration in force
    /// (certificates expire while connected too).
    fn recheck(&self) {
        self.live.recheck(&*self.current().1);
    }

    /// Notes the loaded revocation list's expiry and warns at once if it
    /// has passed.
    fn crl_loaded(&self) {
        let next = self
            .crl
            .as_deref()
            .and_then(kiroku_common::tls::crl_next_update_ms);
        if let Ok(mut e) = self.crl_expiry.lock() {
            *e = (next, None);
        }
        self.warn_if_crl_expired();
    }

    /// An expired revocation list is still enforced (what it revokes stays
    /// refused), but it is a sign that revocations are not being
    /// published: said at load and every [`CRL_WARN_EVERY`] after.
    fn warn_if_crl_expired(&self) {
        let Ok(mut e) = self.crl_expiry.lock() else {
            return;
        };
        let (Some(next), Some(path)) = (e.0, &self.crl) else {
            return;
        };
        if next > kiroku_common::now_ms() || e.1.is_some_and(|t| t.elapsed() < CRL_WARN_EVERY) {
            return;
        }
        e.1 = Some(Instant::now());
        tracing::warn!(
            crl = %path.display(), next_update_ms = next,
            "the revocation list has expired (its nextUpdate has passed); it is still enforced. Renew it with `kiroku certs revoke --dir <pki>` and copy crl.pem here"
        );
    }

    /// The revocation list in force and when it expires, for status output
    /// (`kiroku hosts`), and whether it has expired; empty without one.
    pub fn crl_status(&self) -> (String, bool) {
        let Some(path) = &self.crl else {
            return (String::new(), false);
        };
        let next = self.crl_expiry.lock().map(|e| e.0).unwrap_or(None);
        match next {
            None => (
                format!("revocation list {}: no expiry date", path.display()),
                false,
            ),
            Some(ms) if ms <= kiroku_common::now_ms() => (
                format!(
                    "revocation list {} EXPIRED at {} (still enforced; renew it with `kiroku certs revoke --dir <pki>` and copy crl.pem)",
                    path.display(),
                    kiroku_common::rfc3339_ms(ms)
                ),
                true,
            ),
            Some(ms) => (
                format!(
                    "revocation list {} valid until {}",
                    path.display(),
                    kiroku_common::rfc3339_ms(ms)
                ),
                false,
            ),
        }
    }

    /// Watches the files (and SIGHUP) until the process ends.
    pub fn spawn_reloader(self: &Arc<Self>) {
        let this = self.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut last_recheck = Instant::now();
            loop {
                #[cfg(unix)]
                let forced = match hup.as_mut() {
                    Some(h) => tokio::select! {
                        _ = h.recv() => true,
                        _ = tokio::time::sleep(RELOAD_CHECK) => false,
                    },
                    None => {
                        tokio::time::sleep(RELOAD_CHECK).await;
                        false
                    }
                };
                #[cfg(not(unix))]
                let forced = {
                    tokio::time::sleep(RELOAD_CHECK).await;
                    false
                };
                let t = this.clone();
                let recheck = last_recheck.elapsed() >= RECHECK_EVERY;
                if recheck {
                    last_recheck = Instant::now();
                }
                let _ = tokio::task::spawn_blocking(move || {
                    t.reload(forced);
                    if recheck {
                        t.recheck();
                        t.warn_if_crl_expired();
                    }
                })
                .await;
            }
        });
    }
}

/// Accepted, handshaken connections, for `serve_with_incoming`.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<TlsSource>,
) -> tokio_stream::wrappers::ReceiverStream<Result<Checked, std::io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let refusals = Arc::new(HandshakeRefusals::new("mTLS listener"));
    tokio::spawn(async move {
        let mut summaries = tokio::time::interval(REFUSALS_WINDOW);
        loop {
            // The server drops the receiving end when it shuts down: then
            // the listening socket closes at once, so a reconnecting agent
            // is refused rather than left hanging on a server that no
            // longer serves.
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = tx.closed() => return,
                _ = summaries.tick() => {
                    refusals.log_overdue();
                    continue;
                }
            };
            let (tcp, peer) = match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait, go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = tls.acceptor();
            let tx = tx.clone();
            let tls = tls.clone();
            let refusals = refusals.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let certs = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .map(<[_]>::to_vec)
                            .unwrap_or_default();
                        let live = tls.live.register(peer, certs);
                        let _ = tx.send(Ok(Checked::new(stream, peer, live))).await;
                    }
                    Ok(Err(e)) => refusals.refused(&peer.to_string(), &e),
                    Err(_) => refusals.refused(
                        &peer.to_string(),
                        &format_args!("no TLS handshake within {}s", HANDSHAKE_TIMEOUT.as_secs()),
                    ),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// What every HTTP/2 client sends first (RFC 9113, 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// HTTP/2 frame type GOAWAY.
const H2_GOAWAY: u8 = 7;

/// A handshaken connection handed to the gRPC server, checked on the way:
/// the client's first 24 bytes must be the HTTP/2 preface (otherwise the
/// read fails, which ends the connection, and the refusal is logged with
/// the peer address), and a GOAWAY the server sends with an error code
/// (the HTTP/2 layer refusing garbage frames, a flood of resets, ...) is
/// logged with the peer address.
pub struct Checked {
    inner: TlsStream<TcpStream>,
    peer: SocketAddr,
    /// Preface bytes seen so far (24: checked).
    preface: usize,
    /// When a peer that has not sent the whole preface is cut.
    preface_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Where the server's outgoing frames are.
    out: FrameScan,
    /// Its place among the live connections (cut on revocation, shutdown).
    live: live::Registration,
}

impl Checked {
    fn new(inner: TlsStream<TcpStream>, peer: SocketAddr, live: live::Registration) -> Checked {
        Checked {
            inner,
            peer,
            live,
            preface: 0,
            preface_deadline: Some(Box::pin(tokio::time::sleep(HANDSHAKE_TIMEOUT))),
            out: FrameScan::default(),
        }
    }
}

impl tonic::transport::server::Connected for Checked {
    type ConnectInfo = <TlsStream<TcpStream> as tonic::transport::server::Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for Checked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Some(reason) = this.live.poll_cut(cx) {
            return Poll::Ready(Err(cut_error(this.peer, this.live.identity(), &reason)));
        }
        if let Some(deadline) = &mut this.preface_deadline
            && deadline.as_mut().poll(cx).is_ready()
        {
            tracing::warn!(
                peer = %this.peer,
                "refused: no HTTP/2 preface within {}s after the TLS handshake",
                HANDSHAKE_TIMEOUT.as_secs()
            );
            this.preface_deadline = None;
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("{}: no HTTP/2 preface in time", this.peer),
            )));
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.preface < H2_PREFACE.len()
            && let Poll::Ready(Ok(())) = &res
        {
            let new = &buf.filled()[before..];
            let n = new.len().min(H2_PREFACE.len() - this.preface);
            if new[..n] != H2_PREFACE[this.preface..this.preface + n] {
                tracing::warn!(
                    peer = %this.peer,
                    first_bytes = %String::from_utf8_lossy(&new[..n.min(16)]).escape_debug(),
                    "refused: not HTTP/2 after the TLS handshake (gRPC needs HTTP/2; an HTTP/1.1 client or garbage?)"
                );
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: no HTTP/2 preface", this.peer),
                )));
            }
            this.preface += n;
            if this.preface == H2_PREFACE.len() {
                this.preface_deadline = None;
            }
        }
        res
    }
}

impl AsyncWrite for Checked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if let Some(reason) = this.live.poll_cut(cx) {
            return Poll::Ready(Err(cut_error(this.peer, this.live.identity(), &reason)));
        }
        let res = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &res
            && let Some(code) = this.out.feed(&buf[..*n])
            && code != 0
        {
            tracing::warn!(
                peer = %this.peer,
                h2_error = code,
                "closing the connection: HTTP/2 protocol error by the peer (GOAWAY sent)"
            );
        }
        res
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The I/O error that ends a connection cut by the collector.
fn cut_error(peer: SocketAddr, identity: &str, reason: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        format!("{peer} ({identity}): connection cut: {reason}"),
    )
}

/// Follows the frame boundaries of an HTTP/2 byte stream written in
/// arbitrary pieces, to find GOAWAY frames and their error code.
#[derive(Default)]
struct FrameScan {
    /// The current frame header (9 bytes) as far as seen.
    header: [u8; 9],
    header_len: usize,
    /// Payload bytes of the current frame still to come.
    payload_left: usize,
    /// The first 8 payload bytes of a GOAWAY (last stream id, error code).
    goaway: Option<Vec<u8>>,
}

impl FrameScan {
    /// Feeds written bytes; returns the error code of a GOAWAY completed
    /// in them.
    fn feed(&mut self, mut bytes: &[u8]) -> Option<u32> {
        let mut found = None;
        while !bytes.is_empty() {
            if self.header_len < 9 {
                let n = bytes.len().min(9 - self.header_len);
                self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
                self.header_len += n;
                bytes = &bytes[n..];
                if self.header_len == 9 {
                    let h = self.header;
                    self.payload_left =
                        (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
                    self.goaway = (h[3] == H2_GOAWAY).then(Vec::new);
                }
            } else {
                let n = bytes.len().min(self.payload_left);
                if let Some(g) = &mut self.goaway
                    && g.len() < 8
                {
                    let take = n.min(8 - g.len());
                    g.extend_from_slice(&bytes[..take]);
                    if g.len() == 8 {
                        found = Some(u32::from_be_bytes([g[4], g[5], g[6], g[7]]));
                    }
                }
                self.payload_left -= n;
                bytes = &bytes[n..];
            }
            if self.header_len == 9 && self.payload_left == 0 {
                self.header_len = 0;
                self.goaway = None;
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            0,
            0,
            0,
            0,
            0,
        ];
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn goaway_error_codes_are_found_however_the_writes_are_cut() {
        let mut stream = frame(4, &[0, 3, 0, 0, 0, 100]); // SETTINGS
        stream.extend(frame(0, &[7; 40])); // DATA
        stream.extend(frame(4, &[])); // empty SETTINGS ack
        stream.extend(frame(H2_GOAWAY, &[0, 0, 0, 1, 0, 0, 0, 1, b'x'])); // PROTOCOL_ERROR
        for piece in [1, 2, 5, 9, 10, 1000] {
            let mut scan = FrameScan::default();
            let found: Vec<u32> = stream.chunks(piece).filter_map(|c| scan.feed(c)).collect();
            assert_eq!(found, vec![1], "pieces of {piece}");
        }
        let mut scan = FrameScan::default();
        assert_eq!(
            scan.feed(&frame(H2_GOAWAY, &[0, 0, 0, 0, 0, 0, 0, 0])),
            Some(0)
        );
    }
}
