//! Latency of the buffer's durable path as the relay uses it, one mail at a
//! time: spool SIZE bytes, `begin` (durable before end-of-data), `finish`
//! (durable before the reply). Prints p50/p90/p99 per step for raw
//! messages stored inline and as files, side by side.
//! `cargo run --release -p kiroku-agent --example buffer_latency -- N SIZE`
use std::time::Instant;

use kiroku_agent::buffer::{Blob, Buffer};
use kiroku_proto::{EmailEvent, Event, event::Kind};

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p) as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (n, size) = (
        args.first().copied().unwrap_or(2000),
        args.get(1).copied().unwrap_or(10240),
    );
    println!("{n} mails of {size} bytes, one at a time");
    for (label, inline) in [
        ("inline", usize::MAX),
        ("file", 0),
        ("inline", usize::MAX),
        ("file", 0),
    ] {
        let dir = tempfile::tempdir_in(".")?;
        let b = Buffer::open(dir.path(), u64::MAX, 16 << 20)?;
        b.set_inline_max(inline);
        let (mut begin, mut finish, mut total) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..n {
            let raw = format!("{i:08}").repeat(size / 8 + 1).into_bytes();
            let t0 = Instant::now();
            let mut sp = b.spool().await?;
            for c in raw[..size].chunks(16 * 1024) {
                sp.write(c).await?;
            }
            let sp = sp.finish().await?;
            let ev = Event {
                kind: Some(Kind::Email(EmailEvent {
                    raw_sha256: sp.sha256.clone(),
                    // As the relay records it: the text part of the body.
                    body_text: String::from_utf8_lossy(&raw[..size]).into_owned(),
                    ..Default::default()
                })),
                ..Default::default()
            };
            let t1 = Instant::now();
            let id = b.begin(&ev, Some(Blob::Spooled(sp))).await?;
            let t2 = Instant::now();
            b.finish(id, |_| {}).await?;
            let t3 = Instant::now();
            begin.push((t2 - t1).as_secs_f64() * 1e3);
            finish.push((t3 - t2).as_secs_f64() * 1e3);
            total.push((t3 - t0).as_secs_f64() * 1e3);
        }
        println!(
            "{label:>6}: total p50 {:.3} p90 {:.3} p99 {:.3} ms | begin p50 {:.3} | finish p50 {:.3}",
            pct(&mut total, 0.5),
            pct(&mut total, 0.9),
            pct(&mut total, 0.99),
            pct(&mut begin, 0.5),
            pct(&mut finish, 0.5),
        );
    }
    Ok(())
}
