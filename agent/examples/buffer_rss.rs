//! Memory of the agent buffer alone: appends N mails (event + raw blob of
//! SIZE bytes), acknowledges them in batches as the shipper would, and
//! prints the process RSS. `cargo run --release -p kiroku-agent --example
//! buffer_rss -- N SIZE ACK_EVERY`
use kiroku_proto::{EmailEvent, Event, event::Kind};

fn rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("VmRSS") || l.starts_with("RssAnon"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (n, size) = (
        args.first().copied().unwrap_or(5000),
        args.get(1).copied().unwrap_or(10240),
    );
    // Acknowledge every this many events (0: never, as when the collector is down).
    let ack_every = args.get(2).copied().unwrap_or(100) as u64;
    let dir = tempfile::tempdir()?;
    let b = kiroku_agent::buffer::Buffer::open(dir.path(), u64::MAX, 16 << 20)?;
    println!("start: {}", rss());
    for i in 0..n {
        let raw: Vec<u8> = format!("Subject: {i}\r\n\r\n")
            .bytes()
            .chain(std::iter::repeat_n(b'x', size))
            .collect();
        let ev = Event {
            kind: Some(Kind::Email(EmailEvent {
                raw_sha256: kiroku_common::sha256_hex(&raw),
                body_text: "x".repeat(size),
                ..Default::default()
            })),
            ..Default::default()
        };
        let seq = b
            .append(
                &ev,
                if std::env::var_os("NO_BLOB").is_some() {
                    None
                } else {
                    Some(raw.into())
                },
            )
            .await?;
        if ack_every > 0 && seq % ack_every == 0 {
            b.ack(seq).await?;
        }
    }
    println!("after {n} x {size}: {}", rss());
    Ok(())
}
