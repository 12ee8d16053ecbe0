//! One episode of P2P activity of one process: from the first reason that
//! fired to `quiet_secs` without any P2P sign. Its totals are what the
//! detector saw of the process in that time (and in the window before the
//! detection, which is what made it fire): distinct peers, connections,
//! bytes. The id is fixed at detection: agent id, process (pid and start
//! time), first_ms — every record of the episode carries it, and the
//! collector's `p2p` alert fires once per id.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;

use kiroku_proto::{P2pEvent, P2pReason, ProcessRef};

use super::process::{MAX_SET, Signs, Traffic};

const SAMPLE_PEERS: usize = 50;

/// The reason codes, in the order records list them.
pub(super) const CODES: [&str; 6] = [
    "known_client",
    "bt_handshake",
    "tracker_announce",
    "dht",
    "utp",
    "many_peers",
];

pub(super) struct Episode {
    pub id: String,
    pub first_ms: i64,
    /// The last record or packet of the process.
    pub last_ms: i64,
    /// The last P2P sign: the episode ends `quiet_secs` after it.
    pub last_sign_ms: i64,
    pub last_emit_ms: i64,
    /// Reasons that fired (sticky for the episode), with their latest
    /// detail.
    pub reasons: BTreeMap<&'static str, String>,
    peers: HashSet<SocketAddr>,
    peers_beyond: u64,
    sample: Vec<String>,
    bytes_out: u64,
    bytes_in: u64,
    flows: HashSet<u64>,
    flows_beyond: u64,
    extra_connections: u64,
}

impl Episode {
    pub(super) fn new(id: String, first_ms: i64, now_ms: i64) -> Episode {
        Episode {
            id,
            first_ms,
            last_ms: now_ms,
            last_sign_ms: now_ms,
            last_emit_ms: now_ms,
            reasons: BTreeMap::new(),
            peers: HashSet::new(),
            peers_beyond: 0,
            sample: Vec::new(),
            bytes_out: 0,
            bytes_in: 0,
            flows: HashSet::new(),
            flows_beyond: 0,
            extra_connections: 0,
        }
    }

    pub(super) fn add(&mut self, t: &Traffic) {
        self.bytes_out = self.bytes_out.saturating_add(t.bytes_out);
        self.bytes_in = self.bytes_in.saturating_add(t.bytes_in);
        self.extra_connections = self.extra_connections.saturating_add(t.extra_connections);
        if let Some(f) = t.flow {
            self.add_flow(f);
        }
        if let Some(p) = t.peer {
            self.add_peer(p);
        }
    }

    pub(super) fn add_window(&mut self, bytes_out: u64, bytes_in: u64, extra: u64) {
        self.bytes_out = self.bytes_out.saturating_add(bytes_out);
        self.bytes_in = self.bytes_in.saturating_add(bytes_in);
        self.extra_connections = self.extra_connections.saturating_add(extra);
    }

    pub(super) fn add_flow(&mut self, f: u64) {
        if self.flows.len() < MAX_SET {
            self.flows.insert(f);
        } else if !self.flows.contains(&f) {
            // Beyond the bound every record counts: an overcount of the
            // records of flows already seen, said by the bound's comment.
            self.flows_beyond += 1;
        }
    }

    pub(super) fn add_peer(&mut self, p: SocketAddr) {
        if self.peers.contains(&p) {
            return;
        }
        if self.peers.len() >= MAX_SET {
            self.peers_beyond += 1;
            return;
        }
        self.peers.insert(p);
        if self.sample.len() < SAMPLE_PEERS {
            self.sample.push(p.to_string());
        }
    }

    pub(super) fn event(&self, phase: &str, process: &ProcessRef, signs: &Signs) -> P2pEvent {
        let reasons = CODES
            .iter()
            .filter_map(|c| {
                self.reasons.get(c).map(|d| P2pReason {
                    code: (*c).to_owned(),
                    detail: d.clone(),
                })
            })
            .collect();
        P2pEvent {
            phase: phase.to_owned(),
            process: Some(process.clone()),
            reasons,
            peers: self.peers.len() as u64 + self.peers_beyond,
            sample_peers: self.sample.clone(),
            bytes_out: self.bytes_out,
            bytes_in: self.bytes_in,
            connections: self.flows.len() as u64 + self.flows_beyond + self.extra_connections,
            first_ms: self.first_ms,
            last_ms: self.last_ms,
            info_hashes: signs.info_hashes.iter().cloned().collect(),
            trackers: signs.trackers.iter().cloned().collect(),
            episode_id: self.id.clone(),
        }
    }
}
