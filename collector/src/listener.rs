//! The collector's mTLS listener: TCP accept, then the TLS handshake in its
//! own task (a slow or silent client never holds up the others), with a
//! rustls configuration that is rebuilt when the CA, certificate, key or
//! revocation list files change (checked every two seconds, and on
//! SIGHUP). A bad new file is refused with a log line naming it and the
//! previous configuration stays in force. Handshakes that fail (no client
//! certificate, another CA, a revoked or expired certificate, plain text,
//! TLS below 1.2) are logged with the peer address and the reason.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use kiroku_common::tls::TlsFiles;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Longest a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const RELOAD_CHECK: Duration = Duration::from_secs(2);

/// The current TLS configuration and what it was built from.
pub struct TlsSource {
    files: TlsFiles,
    crl: Option<PathBuf>,
    current: RwLock<Arc<rustls::ServerConfig>>,
    stamp: RwLock<Vec<Option<SystemTime>>>,
}

impl TlsSource {
    /// Builds the first configuration; an error here stops the collector.
    pub fn new(files: TlsFiles, crl: Option<PathBuf>) -> anyhow::Result<Arc<TlsSource>> {
        let cfg = files.server_rustls(crl.as_deref())?;
        let src = TlsSource {
            stamp: RwLock::new(Vec::new()),
            current: RwLock::new(Arc::new(cfg)),
            files,
            crl,
        };
        let stamp = src.stamps();
        if let Ok(mut s) = src.stamp.write() {
            *s = stamp;
        }
        Ok(Arc::new(src))
    }

    fn stamps(&self) -> Vec<Option<SystemTime>> {
        let mut paths = vec![&self.files.ca, &self.files.cert, &self.files.key];
        if let Some(c) = &self.crl {
            paths.push(c);
        }
        paths
            .into_iter()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }

    fn acceptor(&self) -> TlsAcceptor {
        let cfg = match self.current.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        };
        TlsAcceptor::from(cfg)
    }

    /// Rebuilds the configuration if a file changed (or `force`).
    pub fn reload(&self, force: bool) {
        let now = self.stamps();
        let changed = self.stamp.read().map(|s| *s != now).unwrap_or(true);
        if !changed && !force {
            return;
        }
        if let Ok(mut s) = self.stamp.write() {
            *s = now;
        }
        match self.files.server_rustls(self.crl.as_deref()) {
            Ok(cfg) => {
                if let Ok(mut c) = self.current.write() {
                    *c = Arc::new(cfg);
                }
                tracing::info!(
                    crl = ?self.crl, ca = %self.files.ca.display(),
                    "TLS configuration reloaded (certificates / revocation list)"
                );
            }
            Err(e) => tracing::error!(
                error = %e,
                "new TLS files refused; the previous configuration stays in force (fix the file and it is picked up again)"
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
                let _ = tokio::task::spawn_blocking(move || t.reload(forced)).await;
            }
        });
    }
}

/// Accepted, handshaken connections, for `serve_with_incoming`.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<TlsSource>,
) -> tokio_stream::wrappers::ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait, go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            if tx.is_closed() {
                return;
            }
            let acceptor = tls.acceptor();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(peer = %peer, error = %e, "refused at TLS handshake")
                    }
                    Err(_) => tracing::warn!(
                        peer = %peer,
                        "refused: no TLS handshake within {}s",
                        HANDSHAKE_TIMEOUT.as_secs()
                    ),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
