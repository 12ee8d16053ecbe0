//! P2P detection (issue 21): from the flow records of each process and
//! from inspected packets, episodes of P2P activity with the reasons that
//! fired (`P2pEvent`).
//!
//! Interface used by the runner (`network.rs`):
//! - [`Detector::record`]: every `NetworkEvent` the flow table writes;
//! - [`Detector::packet`]: every inspected packet, with the owner of its
//!   socket when the flow table knows it; returns what the packet told
//!   about its flow (an info_hash, DNS answers);
//! - [`Detector::tick`]: the `detected` / `update` / `ended` records due.

use kiroku_proto::{NetworkEvent, P2pEvent, ProcessRef};

use super::config::P2pConfig;
use super::platform::Packet;

/// What one inspected packet told about its flow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PacketFacts {
    /// BitTorrent info_hash (hex, lower case) from a handshake or an
    /// announce.
    pub info_hash: Option<String>,
    /// DNS answers: (address, the name looked up).
    pub dns: Vec<(std::net::IpAddr, String)>,
}

pub struct Detector {
    cfg: P2pConfig,
    agent_id: String,
}

impl Detector {
    pub fn new(cfg: &P2pConfig, agent_id: &str) -> Detector {
        Detector {
            cfg: cfg.clone(),
            agent_id: agent_id.to_owned(),
        }
    }

    /// A network record about to be written.
    pub fn record(&mut self, _ev: &NetworkEvent, _now_ms: i64) {
        let _ = (&self.cfg, &self.agent_id);
    }

    /// One inspected packet; `owner` is its socket's process when known.
    pub fn packet(
        &mut self,
        _p: &Packet,
        _owner: Option<&ProcessRef>,
        _now_ms: i64,
    ) -> PacketFacts {
        PacketFacts::default()
    }

    /// The P2P records due at `now_ms`.
    pub fn tick(&mut self, _now_ms: i64) -> Vec<P2pEvent> {
        Vec::new()
    }
}
