//! The enrollment listener's accept side: at most
//! [`super::EnrollConfig::max_connections`] connections at once, all
//! addresses together (unauthenticated clients: the cap bounds the
//! memory and file descriptors they can hold). At the cap the listener
//! stops accepting — new clients wait in the kernel's backlog — until a
//! connection closes. Each connection carries its permit
//! ([`Capped`]), its TLS handshake included. The handshake
//! ([`handshaken`]) runs in a task of its own with a 10 s timeout, with
//! the collector's certificate as the main listener has it loaded
//! (`listener::TlsSource::server_only`), so a renewed certificate is
//! served here too without a restart. HTTP/2 keepalive and the
//! connection's maximum age are set on the tonic server in `enroll.rs`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::server::TlsStream;
use tokio_stream::StreamExt;

use crate::listener::budget::{HandshakeRefusals, REFUSALS_WINDOW};

/// A TCP connection holding one of the listener's permits until it is
/// dropped.
pub struct Capped {
    inner: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl tonic::transport::server::Connected for Capped {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for Capped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Capped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Accepted connections, at most `max` open at once.
pub fn incoming(
    listener: TcpListener,
    max: usize,
) -> tokio_stream::wrappers::ReceiverStream<Result<Capped, std::io::Error>> {
    let (tx, rx) = mpsc::channel(16);
    let permits = Arc::new(Semaphore::new(max.max(1)));
    let mut warned = false;
    tokio::spawn(async move {
        loop {
            let permit = match permits.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    if !warned {
                        tracing::warn!(
                            max,
                            "enrollment listener: {max} connections open, new ones wait"
                        );
                        warned = true;
                    }
                    tokio::select! {
                        p = permits.clone().acquire_owned() => match p {
                            Ok(p) => p,
                            Err(_) => return,
                        },
                        _ = tx.closed() => return,
                    }
                }
            };
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = tx.closed() => return,
            };
            let (tcp, _) = match accepted {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "enrollment listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if permits.available_permits() > 0 {
                warned = false;
            }
            let _ = tcp.set_nodelay(true);
            let conn = Capped {
                inner: tcp,
                _permit: permit,
            };
            if tx.send(Ok(conn)).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Longest a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The connections of `incoming` once their TLS handshake is done (each in
/// its own task: a slow client holds up nobody). A failed handshake is
/// logged with the peer's address and its connection dropped.
pub fn handshaken(
    mut incoming: tokio_stream::wrappers::ReceiverStream<Result<Capped, std::io::Error>>,
    tls: Arc<crate::listener::TlsSource>,
) -> tokio_stream::wrappers::ReceiverStream<Result<TlsStream<Capped>, std::io::Error>> {
    let (tx, rx) = mpsc::channel(16);
    let refusals = Arc::new(HandshakeRefusals::new("enrollment listener"));
    tokio::spawn(async move {
        let mut summaries = tokio::time::interval(REFUSALS_WINDOW);
        loop {
            let conn = tokio::select! {
                c = incoming.next() => c,
                _ = tx.closed() => return,
                _ = summaries.tick() => {
                    refusals.log_overdue();
                    continue;
                }
            };
            let conn = match conn {
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "enrollment listener: accept failed");
                    continue;
                }
                None => return,
            };
            let cfg = match tls.server_only() {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "enrollment listener: no TLS configuration; connection dropped");
                    continue;
                }
            };
            let peer = conn
                .inner
                .peer_addr()
                .map_or_else(|_| "an unknown address".to_owned(), |a| a.to_string());
            let tx = tx.clone();
            let refusals = refusals.clone();
            tokio::spawn(async move {
                let accept = tokio_rustls::TlsAcceptor::from(cfg).accept(conn);
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => refusals.refused(&peer, &e),
                    Err(_) => refusals.refused(
                        &peer,
                        &format_args!("no TLS handshake within {}s", HANDSHAKE_TIMEOUT.as_secs()),
                    ),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_more_than_max_connections_are_accepted_until_one_closes() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let mut inc = incoming(l, 2);
        let _c1 = TcpStream::connect(addr).await.expect("c1");
        let _c2 = TcpStream::connect(addr).await.expect("c2");
        let _c3 = TcpStream::connect(addr).await.expect("c3 (in the backlog)");
        let a1 = inc.next().await.expect("a1").expect("ok");
        let _a2 = inc.next().await.expect("a2").expect("ok");
        assert!(
            tokio::time::timeout(Duration::from_millis(300), inc.next())
                .await
                .is_err(),
            "a third connection is not accepted while two are open"
        );
        drop(a1);
        let a3 = tokio::time::timeout(Duration::from_secs(5), inc.next()).await;
        assert!(matches!(a3, Ok(Some(Ok(_)))), "accepted once one closed");
    }
}
