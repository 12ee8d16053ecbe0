//! Network load as its own process, for the network capture's tests
//! (issue 21): `kiroku-netgen short` makes `--count` short TCP connections
//! to an echo listener of its own on 127.0.0.1 (connect, write
//! `--payload` bytes, read them back, close), optionally with one long
//! connection to the same listener held around them (`--anchor-ms`: a
//! socket of this process the agent's dumps see, with the same peer as
//! the short ones). Prints one JSON line: what it did, its pid and ports.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use clap::Parser;
use kiroku_tests::netgen::{EchoServer, short_connections};

#[derive(Parser)]
enum Cmd {
    /// Short connections to a local echo listener.
    Short {
        #[arg(long, default_value_t = 1000)]
        count: u64,
        /// Connections started per second (0: one after the other, as fast
        /// as they go).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        #[arg(long, default_value_t = 32)]
        payload: usize,
        /// Hold one connection to the listener open this long before the
        /// short ones start and as long again after they end (0: none).
        #[arg(long, default_value_t = 0)]
        anchor_ms: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let Cmd::Short {
        count,
        rate,
        payload,
        anchor_ms,
    } = Cmd::parse();
    let server = EchoServer::start(payload)?;
    let anchor = if anchor_ms > 0 {
        let c = TcpStream::connect(server.addr)?;
        std::thread::sleep(Duration::from_millis(anchor_ms));
        Some(c)
    } else {
        None
    };
    let anchor_port = match &anchor {
        Some(c) => c.local_addr()?.port(),
        None => 0,
    };
    let st = short_connections(server.addr, count, rate, payload);
    if let Some(mut c) = anchor {
        std::thread::sleep(Duration::from_millis(anchor_ms));
        let data = vec![b'a'; payload];
        c.write_all(&data)?;
        let mut back = vec![0u8; payload];
        c.read_exact(&mut back)?;
    }
    // Until the listener's threads are done with the last connections.
    std::thread::sleep(Duration::from_millis(200));
    println!(
        "{}",
        serde_json::json!({
            "pid": std::process::id(),
            "port": server.addr.port(),
            "anchor_port": anchor_port,
            "made": st.made,
            "failed": st.failed,
            "accepted": server.accepted(),
            "wall_ms": st.wall.as_millis() as u64,
            "lifetime_p50_ms": st.lifetime_ms(0.5),
            "lifetime_p99_ms": st.lifetime_ms(0.99),
            "lifetime_max_ms": st.lifetime_ms(1.0),
            "under_10ms": st.under_ms(10),
            "client_ports": st.ports,
        })
    );
    Ok(())
}
