//! Network load for the network capture's test and benchmark (issue 21):
//! short TCP connections at a paced rate to a local echo listener, and a
//! paced bulk transfer to a local sink. Plain blocking sockets on loopback;
//! what the generator saw (connections made, their lifetimes, bytes) is
//! returned so a caller can set it against what the agent recorded and
//! what the kernel counted ([`TcpCounters`]).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;

/// A listener on 127.0.0.1 that answers each connection: reads `payload`
/// bytes, writes them back and closes first (so the TIME_WAIT state is on
/// this side and the client's ephemeral ports are free again at once).
pub struct EchoServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    pub fn start(payload: usize) -> anyhow::Result<EchoServer> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the echo listener")?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let (s, a) = (stop.clone(), accepted.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut c, _)) => {
                        a.fetch_add(1, Ordering::Relaxed);
                        // A thread each: a long-held connection (the short
                        // test's anchor) does not hold up the others.
                        std::thread::spawn(move || {
                            let mut buf = vec![0u8; payload];
                            let _ = c.set_nonblocking(false);
                            let _ = c.set_read_timeout(Some(Duration::from_secs(120)));
                            if c.read_exact(&mut buf).is_ok() {
                                let _ = c.write_all(&buf);
                            }
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        Ok(EchoServer {
            addr,
            stop,
            accepted,
            thread: Some(thread),
        })
    }

    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What [`short_connections`] did.
#[derive(Debug, Default, Clone)]
pub struct ConnStats {
    /// Connections that completed the exchange.
    pub made: u64,
    pub failed: u64,
    /// Each completed connection's lifetime, connect() to close(), in
    /// microseconds.
    pub lifetimes_us: Vec<u64>,
    /// The client end's local (ephemeral) port of each completed one: the
    /// server end's remote port.
    pub ports: Vec<u16>,
    pub wall: Duration,
}

impl ConnStats {
    /// The `p` quantile (0..=1) of the lifetimes, milliseconds.
    pub fn lifetime_ms(&self, p: f64) -> f64 {
        let mut v = self.lifetimes_us.clone();
        v.sort_unstable();
        match v.len() {
            0 => f64::NAN,
            n => v[((n - 1) as f64 * p).round() as usize] as f64 / 1e3,
        }
    }

    /// Connections that lasted less than `ms` milliseconds.
    pub fn under_ms(&self, ms: u64) -> usize {
        self.lifetimes_us.iter().filter(|&&u| u < ms * 1000).count()
    }

    pub fn rate(&self) -> f64 {
        self.made as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

/// `count` connections to `to`, one after the other, started at `rate` per
/// second (0: as fast as they go; behind schedule it catches up without
/// sleeping). Each writes `payload` bytes, reads them back and closes.
pub fn short_connections(to: SocketAddr, count: u64, rate: f64, payload: usize) -> ConnStats {
    let mut st = ConnStats::default();
    let data = vec![b'k'; payload];
    let mut back = vec![0u8; payload];
    let t0 = Instant::now();
    for i in 0..count {
        if rate > 0.0 {
            let due = t0 + Duration::from_secs_f64(i as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let c0 = Instant::now();
        let ok = (|| -> std::io::Result<u16> {
            let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
            let port = c.local_addr()?.port();
            c.set_read_timeout(Some(Duration::from_secs(2)))?;
            c.write_all(&data)?;
            c.read_exact(&mut back)?;
            // The server closes first; wait for its FIN so the lifetime is
            // the whole connection's.
            let mut rest = [0u8; 1];
            let _ = c.read(&mut rest);
            Ok(port)
        })();
        match ok {
            Ok(port) => {
                st.made += 1;
                st.ports.push(port);
                st.lifetimes_us.push(c0.elapsed().as_micros() as u64);
            }
            Err(_) => st.failed += 1,
        }
    }
    st.wall = t0.elapsed();
    st
}

/// What [`paced_transfer`] did.
#[derive(Debug, Default, Clone)]
pub struct StreamStats {
    pub sent: u64,
    pub received: u64,
    pub wall: Duration,
    /// The sender's local port (identifies the flow in the records).
    pub local_port: u16,
    pub remote_port: u16,
}

impl StreamStats {
    pub fn gbit_per_s(&self) -> f64 {
        self.sent as f64 * 8.0 / self.wall.as_secs_f64().max(1e-9) / 1e9
    }
}

/// One TCP connection on loopback carrying `bits_per_sec` for `secs`
/// seconds (written in 64 KiB pieces on a schedule; a sink thread in this
/// process reads and drops them).
pub fn paced_transfer(bits_per_sec: f64, secs: f64) -> anyhow::Result<StreamStats> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding the sink")?;
    let addr = listener.local_addr()?;
    let sink = std::thread::spawn(move || -> u64 {
        let Ok((mut c, _)) = listener.accept() else {
            return 0;
        };
        let mut buf = vec![0u8; 256 * 1024];
        let mut n = 0u64;
        loop {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => return n,
                Ok(k) => n += k as u64,
            }
        }
    });
    let mut c = TcpStream::connect(addr).context("connecting to the sink")?;
    let local_port = c.local_addr()?.port();
    let chunk = vec![0x5au8; 64 * 1024];
    let bytes_per_sec = bits_per_sec / 8.0;
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(secs);
    let mut sent = 0u64;
    while Instant::now() < end {
        c.write_all(&chunk)?;
        sent += chunk.len() as u64;
        let due = t0 + Duration::from_secs_f64(sent as f64 / bytes_per_sec);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let wall = t0.elapsed();
    c.shutdown(Shutdown::Write)?;
    drop(c);
    let received = sink.join().unwrap_or(0);
    Ok(StreamStats {
        sent,
        received,
        wall,
        local_port,
        remote_port: addr.port(),
    })
}

/// The kernel's TCP counters of this network namespace
/// (`/proc/net/snmp`, the `Tcp:` lines; what `nstat` reads).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TcpCounters {
    /// Connections this host started (SYN sent) and accepted.
    pub active_opens: u64,
    pub passive_opens: u64,
    pub attempt_fails: u64,
    pub estab_resets: u64,
}

impl TcpCounters {
    pub fn read() -> anyhow::Result<TcpCounters> {
        let text = std::fs::read_to_string("/proc/net/snmp").context("reading /proc/net/snmp")?;
        Self::parse(&text).context("/proc/net/snmp has no Tcp: lines with ActiveOpens")
    }

    /// From the text of `/proc/net/snmp`: a `Tcp:` header line of names,
    /// then a `Tcp:` line of values.
    pub fn parse(text: &str) -> Option<TcpCounters> {
        let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
        let names: Vec<&str> = tcp.next()?.split_whitespace().collect();
        let values: Vec<&str> = tcp.next()?.split_whitespace().collect();
        let get = |name: &str| -> Option<u64> {
            let i = names.iter().position(|n| *n == name)?;
            values.get(i)?.parse().ok()
        };
        Some(TcpCounters {
            active_opens: get("ActiveOpens")?,
            passive_opens: get("PassiveOpens")?,
            attempt_fails: get("AttemptFails").unwrap_or(0),
            estab_resets: get("EstabResets").unwrap_or(0),
        })
    }

    /// `self - earlier`, counter by counter.
    pub fn since(&self, earlier: &TcpCounters) -> TcpCounters {
        TcpCounters {
            active_opens: self.active_opens.saturating_sub(earlier.active_opens),
            passive_opens: self.passive_opens.saturating_sub(earlier.passive_opens),
            attempt_fails: self.attempt_fails.saturating_sub(earlier.attempt_fails),
            estab_resets: self.estab_resets.saturating_sub(earlier.estab_resets),
        }
    }
}

/// utime + stime of a process in seconds (`/proc/<pid>/stat`; 0 when it
/// cannot be read).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of stat(5), counted from the state (field 3).
    (ticks(11) + ticks(12)) / 100.0
}

/// VmRSS and VmHWM (peak) of a process in bytes (0 when unknown).
pub fn rss_bytes(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (kb("VmRSS:"), kb("VmHWM:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snmp_tcp_lines() {
        let text = "Ip: Forwarding DefaultTTL\nIp: 1 64\nTcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab\nTcp: 1 200 120000 -1 1234 567 8 9 3\nUdp: InDatagrams\nUdp: 5\n";
        let c = TcpCounters::parse(text).expect("parsed");
        assert_eq!(
            c,
            TcpCounters {
                active_opens: 1234,
                passive_opens: 567,
                attempt_fails: 8,
                estab_resets: 9
            }
        );
        let later = TcpCounters {
            active_opens: 1300,
            ..c
        };
        assert_eq!(later.since(&c).active_opens, 66);
        assert!(TcpCounters::parse("Ip: a\nIp: 1\n").is_none());
    }

    #[test]
    fn connections_are_counted_by_the_kernel() {
        let server = EchoServer::start(16).expect("echo server");
        let before = TcpCounters::read().expect("snmp");
        let st = short_connections(server.addr, 20, 0.0, 16);
        let after = TcpCounters::read().expect("snmp");
        assert_eq!(st.made, 20, "{st:?}");
        assert_eq!(st.lifetimes_us.len(), 20);
        // Other processes may connect too: at least ours.
        let d = after.since(&before);
        assert!(d.active_opens >= 20 && d.passive_opens >= 20, "{d:?}");
        assert_eq!(server.accepted(), 20);
    }
}
