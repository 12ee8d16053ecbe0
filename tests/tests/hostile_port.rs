//! Hostile bytes on the collector's gRPC port: random garbage, a plain
//! HTTP/1.1 request, an HTTP/2 preface without TLS, a TLS ClientHello
//! followed by garbage, a connection that says nothing (cut after the
//! handshake timeout), and — after a valid mTLS handshake — HTTP/1.1
//! instead of HTTP/2 and garbage HTTP/2 frames. Each is closed, never
//! answered in plain text, and logged with the peer address; the collector
//! stays up, 200 more such connections leak no file descriptors, and a
//! real query answers afterwards.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiroku_proto::SearchRequest;
use kiroku_tests::{Env, Proc};
use rand::Rng;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The collector's handshake timeout (`listener.rs`) and a margin.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const CLOSE_WITHIN: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Probe {
    Garbage,
    Http1Plain,
    H2PrefaceWithoutTls,
    ClientHelloThenGarbage,
    Http1AfterMtls,
    GarbageH2FramesAfterMtls,
}

const PROBES: [Probe; 6] = [
    Probe::Garbage,
    Probe::Http1Plain,
    Probe::H2PrefaceWithoutTls,
    Probe::ClientHelloThenGarbage,
    Probe::Http1AfterMtls,
    Probe::GarbageH2FramesAfterMtls,
];

const HTTP1: &[u8] = b"GET /kiroku.v1.Query/Search HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n";
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame.
const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

fn garbage(n: usize) -> Vec<u8> {
    let mut rng = rand::rng();
    (0..n).map(|_| rng.random()).collect()
}

/// What the client saw: bytes the server sent, and whether (and when) it
/// closed the connection.
#[derive(Debug)]
struct Seen {
    local: SocketAddr,
    bytes: Vec<u8>,
    closed_after: Option<Duration>,
}

/// Reads until the server closes (EOF or reset) or `within` passes.
async fn until_closed<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    within: Duration,
) -> (Vec<u8>, Option<Duration>) {
    let t0 = Instant::now();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = within.saturating_sub(t0.elapsed());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (bytes, Some(t0.elapsed())),
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
            Err(_) => return (bytes, None),
        }
    }
}

fn tls_client(env: &Env, identity: Option<&str>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let pki = env.pki();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(pki.join("ca.pem"))? {
        roots.add(c?)?;
    }
    let b = rustls::ClientConfig::builder_with_provider(
        rustls::crypto::ring::default_provider().into(),
    )
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots);
    let cfg = match identity {
        Some(name) => b.with_client_auth_cert(
            CertificateDer::pem_file_iter(pki.join(format!("agent-{name}.pem")))?
                .collect::<Result<_, _>>()?,
            PrivateKeyDer::from_pem_file(pki.join(format!("agent-{name}.key")))?,
        )?,
        None => b.with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}

/// A TLS ClientHello as a real client would send it first.
fn client_hello(cfg: Arc<rustls::ClientConfig>) -> anyhow::Result<Vec<u8>> {
    let mut c = rustls::ClientConnection::new(cfg, ServerName::try_from("localhost")?.to_owned())?;
    let mut out = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut out)?;
    }
    Ok(out)
}

/// Runs one probe against 127.0.0.1:`port`; `tls` is the client used for
/// the ClientHello and for the mTLS probes.
async fn probe(port: u16, p: Probe, tls: Arc<rustls::ClientConfig>) -> anyhow::Result<Seen> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let local = tcp.local_addr()?;
    // A write may fail once the server has cut the connection: what
    // counts is what the client sees afterwards.
    let (bytes, closed_after) = match p {
        Probe::Garbage => {
            let _ = tcp.write_all(&garbage(4096)).await;
            until_closed(&mut tcp, CLOSE_WITHIN).await
        }
        Probe::Http1Plain => {
            let _ = tcp.write_all(HTTP1).await;
            until_closed(&mut tcp, CLOSE_WITHIN).await
        }
        Probe::H2PrefaceWithoutTls => {
            let _ = tcp.write_all(&[PREFACE, SETTINGS].concat()).await;
            until_closed(&mut tcp, CLOSE_WITHIN).await
        }
        Probe::ClientHelloThenGarbage => {
            let hello = client_hello(tls)?;
            let _ = tcp.write_all(&[hello, garbage(2048)].concat()).await;
            until_closed(&mut tcp, CLOSE_WITHIN).await
        }
        Probe::Http1AfterMtls | Probe::GarbageH2FramesAfterMtls => {
            let mut tls = tokio_rustls::TlsConnector::from(tls)
                .connect(ServerName::try_from("localhost")?.to_owned(), tcp)
                .await?;
            let payload = if p == Probe::Http1AfterMtls {
                HTTP1.to_vec()
            } else {
                // A valid start, then frames of random bytes.
                [PREFACE, SETTINGS, &garbage(4096)].concat()
            };
            let _ = tls.write_all(&payload).await;
            let _ = tls.flush().await;
            until_closed(&mut tls, CLOSE_WITHIN).await
        }
    };
    Ok(Seen {
        local,
        bytes,
        closed_after,
    })
}

fn open_fds(p: &Proc) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", p.pid()))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn threads(p: &Proc) -> usize {
    std::fs::read_dir(format!("/proc/{}/task", p.pid()))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The log names the refusal of the connection from `local`.
async fn logged(collector: &Proc, local: SocketAddr) -> bool {
    let needle = format!("peer={local}");
    for _ in 0..50 {
        if collector
            .log_text()
            .lines()
            .any(|l| l.contains(&needle) && (l.contains("refused") || l.contains("closing")))
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn query_works(env: &Env) -> anyhow::Result<()> {
    env.investigator()
        .await?
        .search(SearchRequest::default())
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_bytes_on_the_grpc_port_are_refused_logged_and_leak_nothing() -> anyhow::Result<()>
{
    let env = Env::new()?;
    env.issue("agent", "hostile", &[])?;
    let mut collector = env.start_collector()?;
    let agent_tls = {
        let mut c = (*tls_client(&env, Some("hostile"))?).clone();
        c.alpn_protocols = vec![b"h2".to_vec()];
        Arc::new(c)
    };
    let plain_tls = tls_client(&env, Some("hostile"))?; // no ALPN, as an HTTP/1.1 client
    query_works(&env).await?;

    // The silent one runs alongside the others: it must be cut after the
    // handshake timeout, not before and not much later.
    let silent = {
        let port = env.grpc;
        tokio::spawn(async move {
            let mut tcp = TcpStream::connect(("127.0.0.1", port)).await?;
            let local = tcp.local_addr()?;
            let (bytes, closed) = until_closed(&mut tcp, HANDSHAKE_TIMEOUT * 2).await;
            anyhow::Ok(Seen {
                local,
                bytes,
                closed_after: closed,
            })
        })
    };

    let client_for = |p: Probe| match p {
        Probe::Http1AfterMtls => plain_tls.clone(),
        _ => agent_tls.clone(),
    };
    for p in PROBES {
        let seen = probe(env.grpc, p, client_for(p)).await?;
        eprintln!(
            "{p:?}: server sent {} bytes {:02x?}, closed after {:?}",
            seen.bytes.len(),
            &seen.bytes[..seen.bytes.len().min(16)],
            seen.closed_after
        );
        let closed = seen
            .closed_after
            .unwrap_or_else(|| panic!("{p:?}: the connection was not closed: {seen:?}"));
        assert!(closed < CLOSE_WITHIN, "{p:?} took {closed:?} to close");
        // Never an answer in plain text: no HTTP/1.1 response, no HTTP/2
        // frames outside TLS (a TLS alert record, 0x15, is fine).
        assert!(
            !seen.bytes.starts_with(b"HTTP/"),
            "{p:?}: answered in plain HTTP: {:?}",
            String::from_utf8_lossy(&seen.bytes)
        );
        if matches!(
            p,
            Probe::Garbage | Probe::Http1Plain | Probe::H2PrefaceWithoutTls
        ) {
            assert!(
                seen.bytes.is_empty() || seen.bytes[0] == 0x15,
                "{p:?}: something other than a TLS alert came back: {:02x?}",
                seen.bytes
            );
        }
        assert!(
            logged(&collector, seen.local).await,
            "{p:?}: no refusal logged for peer {}:\n{}",
            seen.local,
            collector.log_text()
        );
        assert!(collector.is_running(), "collector died after {p:?}");
    }
    let log = collector.log_text();
    assert!(
        log.contains("not HTTP/2 after the TLS handshake"),
        "HTTP/1.1 inside TLS is named as such:\n{log}"
    );
    assert!(
        log.contains("HTTP/2 protocol error"),
        "garbage frames are named as such:\n{log}"
    );

    let silent = silent.await??;
    let cut = silent
        .closed_after
        .unwrap_or_else(|| panic!("a silent connection was never cut: {silent:?}"));
    assert!(
        cut >= HANDSHAKE_TIMEOUT - Duration::from_secs(1) && cut < HANDSHAKE_TIMEOUT * 2,
        "silent connection cut after {cut:?}"
    );
    assert!(
        logged(&collector, silent.local).await,
        "the silent peer {} is not in the log",
        silent.local
    );
    query_works(&env).await?;

    // 200 more, 20 at a time: nothing stays open, nothing grows.
    let (fds_before, threads_before) = (open_fds(&collector), threads(&collector));
    let started = Instant::now();
    for round in 0..10 {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..20 {
            let p = PROBES[(round * 20 + i) % PROBES.len()];
            let (port, tls) = (env.grpc, client_for(p));
            set.spawn(async move { (p, probe(port, p, tls).await) });
        }
        while let Some(r) = set.join_next().await {
            let (p, seen) = r?;
            let seen = seen?;
            assert!(seen.closed_after.is_some(), "{p:?} not closed: {seen:?}");
        }
    }
    let took = started.elapsed();
    query_works(&env).await?;
    // The server side of a closed connection goes away a moment later.
    let mut fds_after = open_fds(&collector);
    for _ in 0..50 {
        if fds_after <= fds_before + 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        fds_after = open_fds(&collector);
    }
    let threads_after = threads(&collector);
    eprintln!(
        "200 hostile connections in {took:?}; collector fds {fds_before} → {fds_after}, threads {threads_before} → {threads_after}"
    );
    assert!(
        fds_after <= fds_before + 5,
        "file descriptors leak: {fds_before} → {fds_after}"
    );
    assert!(collector.is_running());
    let log = collector.log_text();
    assert!(!log.contains("panicked"), "{log}");
    Ok(())
}
