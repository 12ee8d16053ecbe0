//! SMTP load for benchmarks: N workers, each one connection sending
//! transactions back to back with a minimal client of its own (so the
//! client is never the bottleneck), timing each transaction from MAIL to
//! the final reply. The envelope goes either one command per round trip
//! or pipelined (RFC 2920: MAIL, RCPT, DATA in one write, as Postfix's own
//! SMTP client sends it to a server that offers PIPELINING).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Reads one SMTP reply: (code, text).
pub async fn reply(r: &mut BufReader<OwnedReadHalf>) -> anyhow::Result<(u16, String)> {
    let mut text = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            bail!("connection closed");
        }
        text.push_str(&line);
        if line.as_bytes().get(3) != Some(&b'-') {
            let code = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .context("bad reply")?;
            return Ok((code, text));
        }
    }
}

/// A test message of about `size` bytes (CRLF lines, no leading dots).
pub fn message(n: usize, size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: load@example.com\r\nTo: sink@example.test\r\nSubject: load test {n}\r\nMessage-ID: <load-{n}-{}@example.com>\r\n\r\n",
        kiroku_common::now_ms()
    )
    .into_bytes();
    let line = b"The quick brown fox jumps over the lazy dog 0123456789 abcdefghij\r\n";
    while m.len() < size {
        m.extend_from_slice(line);
    }
    m
}

/// How the load sends a transaction's envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Submit {
    /// MAIL, RCPT, DATA each waits for its reply.
    LockStep,
    /// MAIL, RCPT, DATA in one write, then their three replies.
    Pipelined,
}

#[derive(Debug, Clone)]
pub struct Stats {
    pub mails: usize,
    pub seconds: f64,
    /// Per transaction, MAIL sent → end-of-data reply.
    pub latencies: Vec<Duration>,
}

impl Stats {
    pub fn per_second(&self) -> f64 {
        self.mails as f64 / self.seconds
    }

    /// Latency quantile in milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        let mut l = self.latencies.clone();
        l.sort();
        if l.is_empty() {
            return 0.0;
        }
        l[((l.len() as f64 * q) as usize).min(l.len() - 1)].as_secs_f64() * 1000.0
    }
}

/// One SMTP connection after EHLO: (reader, writer).
type Conn = (BufReader<OwnedReadHalf>, OwnedWriteHalf);

async fn connect(addr: &str) -> anyhow::Result<Conn> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    reply(&mut r).await?;
    w.write_all(b"EHLO loadgen.example.com\r\n").await?;
    reply(&mut r).await?;
    Ok((r, w))
}

/// One transaction (MAIL, RCPT, DATA, message `n` of `size` bytes); its
/// time from MAIL to the end-of-data reply.
async fn transaction(
    r: &mut BufReader<OwnedReadHalf>,
    w: &mut OwnedWriteHalf,
    n: usize,
    size: usize,
    submit: Submit,
) -> anyhow::Result<Duration> {
    let mut m = message(n, size);
    m.extend_from_slice(b".\r\n");
    let envelope = [
        (&b"MAIL FROM:<load@example.com>\r\n"[..], 250),
        (b"RCPT TO:<sink@example.test>\r\n", 250),
        (b"DATA\r\n", 354),
    ];
    let t0 = Instant::now();
    if submit == Submit::Pipelined {
        w.write_all(&envelope.map(|(cmd, _)| cmd).concat()).await?;
    }
    for (cmd, want) in envelope {
        if submit == Submit::LockStep {
            w.write_all(cmd).await?;
        }
        let (code, text) = reply(r).await?;
        if code != want {
            bail!("mail {n}: {text}");
        }
    }
    w.write_all(&m).await?;
    let (code, text) = reply(r).await?;
    if code != 250 {
        bail!("mail {n}: {text}");
    }
    Ok(t0.elapsed())
}

/// Sends `mails` messages of `size` bytes over one connection at `rate`
/// per second (each transaction starts at its due time, or at once when
/// the previous one ran late).
pub async fn paced(addr: &str, mails: usize, size: usize, rate: f64) -> anyhow::Result<Stats> {
    let (mut r, mut w) = connect(addr).await?;
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(mails);
    for n in 0..mails {
        tokio::time::sleep_until((started + Duration::from_secs_f64(n as f64 / rate)).into()).await;
        latencies.push(transaction(&mut r, &mut w, n, size, Submit::LockStep).await?);
    }
    w.write_all(b"QUIT\r\n").await?;
    Ok(Stats {
        mails,
        seconds: started.elapsed().as_secs_f64(),
        latencies,
    })
}

/// Sends `mails` messages of `size` bytes to `addr` over `concurrency`
/// connections. Fails on any reply other than the expected ones.
pub async fn run(
    addr: &str,
    mails: usize,
    concurrency: usize,
    size: usize,
    submit: Submit,
) -> anyhow::Result<Stats> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (next, addr) = (next.clone(), addr.to_owned());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let (mut r, mut w) = connect(&addr).await?;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= mails {
                    break;
                }
                lat.push(transaction(&mut r, &mut w, n, size, submit).await?);
            }
            w.write_all(b"QUIT\r\n").await?;
            anyhow::Ok(lat)
        }));
    }
    let mut latencies = Vec::new();
    for w in workers {
        latencies.extend(w.await??);
    }
    Ok(Stats {
        mails,
        seconds: started.elapsed().as_secs_f64(),
        latencies,
    })
}
