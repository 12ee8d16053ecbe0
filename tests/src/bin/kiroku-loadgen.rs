//! Load generator for benchmarks: sends mail through an agent's SMTP
//! listener over plain SMTP (its own minimal client, one connection per
//! worker, one transaction after another) and, for capture-only agents,
//! measures capture-to-searchable latency: the time from the 250 reply to
//! the moment the event is returned by the collector's `GetEvent`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser;
use kiroku_proto::GetEventRequest;
use kiroku_proto::query_client::QueryClient;
use kiroku_tests::load::{message, reply};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

#[derive(Parser)]
struct Args {
    /// Agent SMTP address.
    #[arg(long, default_value = "127.0.0.1:2525")]
    smtp: String,
    #[arg(long, default_value_t = 1000)]
    mails: usize,
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Approximate message size in bytes.
    #[arg(long, default_value_t = 10_240)]
    size: usize,
    /// Agent id (for event ids) — enables latency measurement with the
    /// collector options below.
    #[arg(long)]
    agent: Option<String>,
    #[arg(long)]
    collector: Option<String>,
    #[arg(long)]
    ca: Option<String>,
    #[arg(long)]
    cert: Option<String>,
    #[arg(long)]
    key: Option<String>,
}

async fn query(a: &Args) -> anyhow::Result<Option<QueryClient<Channel>>> {
    let (Some(ep), Some(ca), Some(cert), Some(key)) = (&a.collector, &a.ca, &a.cert, &a.key) else {
        return Ok(None);
    };
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca)?))
        .identity(Identity::from_pem(
            std::fs::read(cert)?,
            std::fs::read(key)?,
        ))
        .domain_name("localhost");
    let ch = Endpoint::from_shared(ep.clone())?
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(Some(QueryClient::new(ch)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let q = query(&a).await?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..a.concurrency {
        let (next, smtp, total, size) = (next.clone(), a.smtp.clone(), a.mails, a.size);
        let (agent, mut q) = (a.agent.clone(), q.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let s = TcpStream::connect(&smtp).await?;
            s.set_nodelay(true)?;
            let (r, mut w) = s.into_split();
            let mut r = BufReader::new(r);
            reply(&mut r).await?;
            w.write_all(b"EHLO loadgen\r\n").await?;
            reply(&mut r).await?;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                w.write_all(b"MAIL FROM:<load@example.com>\r\n").await?;
                reply(&mut r).await?;
                w.write_all(b"RCPT TO:<sink@example.org>\r\n").await?;
                reply(&mut r).await?;
                w.write_all(b"DATA\r\n").await?;
                reply(&mut r).await?;
                let mut m = message(n, size);
                m.extend_from_slice(b".\r\n");
                w.write_all(&m).await?;
                let (code, text) = reply(&mut r).await?;
                if code != 250 {
                    bail!("mail {n}: {text}");
                }
                let t250 = Instant::now();
                if let (Some(agent), Some(q)) = (&agent, q.as_mut()) {
                    // "250 2.0.0 Ok: captured as <stream>/<seq>"
                    let id = text.trim().rsplit(' ').next().unwrap_or_default();
                    let event_id = format!("{agent}/{id}");
                    loop {
                        if q.get_event(GetEventRequest {
                            event_id: event_id.clone(),
                        })
                        .await
                        .is_ok()
                        {
                            break;
                        }
                        if t250.elapsed() > Duration::from_secs(30) {
                            bail!("{event_id} not searchable after 30 s");
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    lat.push(t250.elapsed());
                }
            }
            w.write_all(b"QUIT\r\n").await?;
            anyhow::Ok(lat)
        }));
    }
    let mut lat = Vec::new();
    for w in workers {
        lat.extend(w.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "mails={} concurrency={} size={} seconds={secs:.2} mails_per_s={:.0} MB_per_s={:.1}",
        a.mails,
        a.concurrency,
        a.size,
        a.mails as f64 / secs,
        (a.mails * a.size) as f64 / secs / 1e6
    );
    if !lat.is_empty() {
        lat.sort();
        let p = |q: f64| {
            lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)].as_secs_f64() * 1000.0
        };
        println!(
            "capture_to_searchable_ms p50={:.1} p99={:.1} max={:.1} samples={}",
            p(0.5),
            p(0.99),
            p(1.0),
            lat.len()
        );
    }
    Ok(())
}
