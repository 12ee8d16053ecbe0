//! A TCP fault proxy for tests: sits between an agent and the collector on
//! loopback and, on command, delays traffic, blackholes it (connections
//! stay open but nothing moves and nothing is answered, as behind a
//! dropping firewall), resets every connection, or cuts each connection
//! after a number of bytes (a stream broken mid-batch).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does to traffic now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward as is.
    Pass,
    /// Hold every chunk this long before forwarding it.
    Delay(Duration),
    /// Forward nothing, answer nothing, close nothing (no RST, no FIN).
    Blackhole,
    /// Reset every open connection (SO_LINGER 0) and every new one.
    Reset,
    /// Let each connection carry this many bytes (both directions
    /// together), then reset it.
    CutAfter(u64),
    /// Strand the connections accepted before the `n`-th (counting from
    /// 0, as [`FaultProxy::accepted`] does): they forward nothing and close
    /// nothing from now on, even after the fault changes, as when a NAT or
    /// firewall silently forgets a flow. Later connections pass.
    Strand(u64),
}

/// Handle of a running proxy; dropping it stops the proxy and closes its
/// connections.
pub struct FaultProxy {
    pub port: u16,
    fault: watch::Sender<Fault>,
    task: tokio::task::JoinHandle<()>,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicU64>,
    log: Arc<Mutex<Vec<String>>>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to 127.0.0.1:`target`.
    pub async fn start(target: u16) -> anyhow::Result<FaultProxy> {
        let listener = {
            let l = crate::bind_local()?;
            l.set_nonblocking(true)?;
            TcpListener::from_std(l)?
        };
        let port = listener.local_addr()?.port();
        let (fault, rx) = watch::channel(Fault::Pass);
        let accepted = Arc::new(AtomicU64::new(0));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (acc, lg) = (accepted.clone(), log.clone());
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let id = acc.fetch_add(1, Ordering::Relaxed);
                let rx = rx.clone();
                let lg = lg.clone();
                conns.spawn(async move {
                    if let Err(e) = connection(client, id, target, rx).await
                        && let Ok(mut l) = lg.lock()
                    {
                        l.push(e.to_string());
                    }
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Ok(FaultProxy {
            port,
            fault,
            task,
            accepted,
            log,
        })
    }

    pub fn set(&self, f: Fault) {
        self.fault.send_replace(f);
    }

    /// What ended connections, for diagnostics.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn reset(s: &TcpStream) {
    // Linger 0: close sends RST instead of FIN.
    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
}

async fn connection(
    client: TcpStream,
    id: u64,
    target: u16,
    mut fault: watch::Receiver<Fault>,
) -> anyhow::Result<()> {
    if matches!(*fault.borrow(), Fault::Reset) {
        reset(&client);
        return Ok(());
    }
    let upstream = TcpStream::connect(("127.0.0.1", target)).await?;
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (ur, uw) = upstream.into_split();
    let moved = Arc::new(AtomicU64::new(0));
    let stranded = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let up = pump(cr, uw, fault.clone(), moved.clone(), id, stranded.clone());
    let down = pump(ur, cw, fault.clone(), moved, id, stranded);
    let resets = async {
        loop {
            if fault.changed().await.is_err() {
                return std::future::pending::<()>().await;
            }
            if matches!(*fault.borrow(), Fault::Reset) {
                return;
            }
        }
    };
    tokio::select! {
        r = up => r,
        r = down => r,
        _ = resets => Ok(()),
    }
    // Dropping the halves here closes both sockets; with a reset or a cut
    // the pumps set linger 0 first, so the peers see RST.
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    fault: watch::Receiver<Fault>,
    moved: Arc<AtomicU64>,
    id: u64,
    stranded: Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if stranded.load(Ordering::Relaxed) {
            // Whatever arrives now is swallowed; nothing is closed.
            if n == 0 {
                return std::future::pending().await;
            }
            continue;
        }
        if n == 0 {
            to.shutdown().await?;
            return Ok(());
        }
        let chunk = &buf[..n];
        loop {
            let f = *fault.borrow();
            match f {
                Fault::Strand(before) if id < before => {
                    stranded.store(true, Ordering::Relaxed);
                    break;
                }
                Fault::Strand(_) => break,
                Fault::Pass => break,
                Fault::Delay(d) => {
                    tokio::time::sleep(d).await;
                    break;
                }
                Fault::Blackhole => {
                    // Hold the bytes until the fault changes.
                    let mut w = fault.clone();
                    let _ = w.changed().await;
                }
                Fault::Reset => {
                    reset(to.as_ref());
                    anyhow::bail!("reset by fault");
                }
                Fault::CutAfter(limit) => {
                    let before = moved.load(Ordering::Relaxed);
                    if before + chunk.len() as u64 > limit {
                        let keep = limit.saturating_sub(before) as usize;
                        to.write_all(&chunk[..keep]).await?;
                        reset(to.as_ref());
                        anyhow::bail!("cut after {limit} bytes");
                    }
                    break;
                }
            }
        }
        if stranded.load(Ordering::Relaxed) {
            continue;
        }
        moved.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        to.write_all(chunk).await?;
    }
}
