//! The live connections of the listener, each with the certificate chain
//! its peer presented, so that a connection whose certificate the current
//! configuration no longer accepts (revoked by a new CRL, a new CA, or
//! simply expired) can be cut while it is open, and every connection can
//! be cut at the end of a graceful shutdown.
//!
//! Cutting works through the connection's byte stream: the next read (the
//! HTTP/2 layer always has one pending) fails, which ends the connection
//! and every call on it, and the peer has to handshake again, which the
//! new configuration refuses.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Context;

use futures::task::AtomicWaker;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;

/// Every live connection, by a number of its own.
#[derive(Default)]
pub struct LiveConns {
    next: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<Live>>>,
}

/// One live connection: who is on it, and whether it was cut.
pub struct Live {
    peer: SocketAddr,
    /// The identity in the peer's certificate, for the logs.
    identity: String,
    /// The chain the peer presented, end-entity first.
    certs: Vec<CertificateDer<'static>>,
    cut: Mutex<Option<String>>,
    waker: AtomicWaker,
}

/// A connection's place in [`LiveConns`]; leaving it (drop) removes it.
pub struct Registration {
    id: u64,
    live: Arc<Live>,
    conns: Arc<LiveConns>,
}

impl LiveConns {
    /// Adds a connection that has just completed its handshake.
    pub fn register(
        self: &Arc<Self>,
        peer: SocketAddr,
        certs: Vec<CertificateDer<'static>>,
    ) -> Registration {
        let identity = certs
            .first()
            .and_then(|c| kiroku_common::pki::identity_from_der(c.as_ref()).ok())
            .map_or_else(|| "unknown".to_owned(), |id| id.to_string());
        let live = Arc::new(Live {
            peer,
            identity,
            certs,
            cut: Mutex::new(None),
            waker: AtomicWaker::new(),
        });
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, live.clone());
        Registration {
            id,
            live,
            conns: self.clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Live>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn all(&self) -> Vec<Arc<Live>> {
        self.lock().values().cloned().collect()
    }

    /// How many connections are open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks every live connection's certificate with `verifier` (the
    /// configuration now in force) and cuts those it refuses, each logged
    /// with peer, identity and reason. Returns how many were cut.
    pub fn recheck(&self, verifier: &dyn ClientCertVerifier) -> usize {
        let now = UnixTime::now();
        let mut cut = 0;
        for live in self.all() {
            let refused = match live.certs.split_first() {
                None => Some("no client certificate".to_owned()),
                Some((leaf, chain)) => verifier
                    .verify_client_cert(leaf, chain, now)
                    .err()
                    .map(|e| e.to_string()),
            };
            if let Some(reason) = refused {
                tracing::warn!(
                    peer = %live.peer, identity = %live.identity, reason = %reason,
                    "connection cut: its certificate is no longer accepted (revoked, expired or not issued by the current CA)"
                );
                live.cut(reason);
                cut += 1;
            }
        }
        cut
    }

    /// Cuts every live connection (the end of a graceful shutdown).
    pub fn cut_all(&self, reason: &str) -> usize {
        let all = self.all();
        for live in &all {
            tracing::info!(peer = %live.peer, identity = %live.identity, "{reason}: connection closed");
            live.cut(reason.to_owned());
        }
        all.len()
    }
}

impl Live {
    fn cut(&self, reason: String) {
        let mut c = self.cut.lock().unwrap_or_else(|p| p.into_inner());
        if c.is_none() {
            *c = Some(reason);
        }
        drop(c);
        self.waker.wake();
    }
}

impl Registration {
    /// Why the connection was cut, if it was; otherwise the task in `cx`
    /// is woken when it is.
    pub fn poll_cut(&self, cx: &Context<'_>) -> Option<String> {
        self.live.waker.register(cx.waker());
        self.live
            .cut
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The identity in the peer's certificate.
    pub fn identity(&self) -> &str {
        &self.live.identity
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.conns.lock().remove(&self.id);
    }
}
