//! Network activity as a capture source (issue 21): every TCP connection
//! and UDP flow of the host with its process, counters and peer
//! (`NetworkEvent`), and P2P detections made from them (`P2pEvent`).
//!
//! Layers, top down:
//! - this module: the runner (one thread) that dumps sockets every
//!   `network.dump_interval_ms`, takes destroy notifications in between,
//!   feeds the flow table and the P2P detector and appends their records
//!   to the buffer;
//! - `flows`: the flow table (open / update / close / listen records,
//!   deltas, coalescing into summaries, rate limits, exclusions, the state
//!   that lets a restarted agent continue a flow instead of opening it
//!   again);
//! - `p2p`: the P2P detector (reasons, episodes) and the wire recognisers
//!   it uses on inspected packets;
//! - `platform`: the OS interfaces (`SocketTable`, `ProcessTable`,
//!   `PacketInspector`), implemented for Linux in `linux/`.

pub mod config;
pub mod flows;
#[cfg(target_os = "linux")]
pub mod linux;
pub mod p2p;
pub mod platform;

pub use config::NetworkConfig;
