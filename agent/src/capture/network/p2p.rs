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
//!
//! Reasons (`P2pReason.code`), per process:
//! - `known_client`: its name or executable file name is in
//!   `network.p2p.clients`;
//! - `many_peers`: within `window_secs`, at least `min_peers` distinct
//!   remote ip:port with both ports >= `high_port`, of which at least a
//!   third the process contacted itself (outbound TCP, UDP). That second
//!   condition keeps a server out — a web application on 8080, a proxy, the
//!   collector — whose many clients connect to it from ephemeral ports;
//! - `dht`: a DHT KRPC message on one of its UDP sockets;
//! - `utp`: uTP-looking packets with at least max(3, min_peers / 2)
//!   distinct peers (a uTP header is too short to trust on one packet);
//! - `tracker_announce`: an HTTP announce / scrape with an info_hash, or a
//!   UDP tracker connect;
//! - `bt_handshake`: a BitTorrent handshake.
//!
//! The packet reasons need `network.inspect`; with encryption (MSE) only
//! the behaviour reasons (`known_client`, `many_peers`, plain-HTTP
//! announces) remain.
//!
//! Episodes are per process — pid and start time, not the executable: a
//! client restarted is a new process and a new episode, so the collector's
//! `p2p` alert (once per `episode_id`) fires again for it, as it should
//! for a new run. `detected` at the first tick after a reason fires,
//! `update` every `update_secs`, `ended` `quiet_secs` after the last sign
//! (a record of a known client, a record or datagram while `many_peers`
//! holds, a recognised packet). The detector keeps no state across agent
//! restarts: an episode in progress when the agent restarts is detected
//! again with a new `episode_id` (and alerts again).
//!
//! Invariant: ordinary traffic does not fire — a browser or `curl` to one
//! HTTPS server, apt-like bursts (many connections to a few servers on 80
//! and 443), an SMTP relay, the agent's own gRPC stream: their remote ports
//! are below `high_port` or their peers are few (tests below).

mod episode;
mod pending;
mod process;
pub mod wire;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;

use kiroku_proto::{NetworkEvent, P2pEvent, ProcessRef};

use self::episode::Episode;
use self::pending::Pending;
use self::process::{Contact, Proc, ProcKey, Traffic};
use self::wire::{InfoHash, Wire};
use super::config::P2pConfig;
use super::platform::{Packet, Protocol};

/// What one inspected packet told about its flow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PacketFacts {
    /// BitTorrent info_hash (hex, lower case) from a handshake or an
    /// announce.
    pub info_hash: Option<String>,
    /// DNS answers: (address, the name looked up).
    pub dns: Vec<(std::net::IpAddr, String)>,
}

/// A P2P sign recognised in a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Sign {
    Handshake(InfoHash),
    Announce {
        info_hash: InfoHash,
        tracker: String,
    },
    UdpTrackerConnect {
        tracker: SocketAddr,
    },
    Krpc {
        method: String,
        info_hash: Option<InfoHash>,
    },
    Utp,
}

/// Info-hashes kept per process (a client seeding thousands of torrents
/// is reported with the first ones).
const MAX_INFO_HASHES: usize = 1000;
const MAX_TRACKERS: usize = 100;
const MAX_METHODS: usize = 16;

pub struct Detector {
    cfg: P2pConfig,
    agent_id: String,
    procs: HashMap<ProcKey, Proc>,
    pending: Pending,
}

impl Detector {
    pub fn new(cfg: &P2pConfig, agent_id: &str) -> Detector {
        Detector {
            cfg: cfg.clone(),
            agent_id: agent_id.to_owned(),
            procs: HashMap::new(),
            pending: Pending::default(),
        }
    }

    /// The socket dump interval (`network.dump_interval_ms`): a packet
    /// seen more than that before a socket's first record is not its.
    pub fn set_dump_interval_ms(&mut self, ms: u64) {
        self.pending.set_slack_ms(ms);
    }

    /// A network record about to be written.
    pub fn record(&mut self, ev: &NetworkEvent, now_ms: i64) {
        // A record naming no process (pid 0) feeds no episode
        // (`process.rs`).
        let Some((process, key)) = ev.process.as_ref().and_then(|p| Some((p, ProcKey::of(p)?)))
        else {
            return;
        };
        let claimed = self.pending.claim(ev, &key);
        let cfg = &self.cfg;
        let proc = self
            .procs
            .entry(key)
            .or_insert_with(|| Proc::new(process, cfg, now_ms));
        if proc.process.name.is_empty() && !process.name.is_empty() {
            proc.process = process.clone();
            proc.known_client = process::known_client(process, &cfg.clients);
        }
        let t = Traffic::of(ev);
        let high = t.peer.is_some()
            && ev.local_port >= u32::from(cfg.high_port)
            && ev.remote_port >= u32::from(cfg.high_port);
        let outbound =
            ev.direction == "outbound" || (ev.protocol == "udp" && ev.direction != "inbound");
        proc.note(&t, high, Contact::Flow { outbound }, cfg, now_ms);
        if let Some(ep) = proc.episode.as_mut() {
            ep.add(&t);
            ep.last_ms = now_ms;
        }
        for h in &ev.info_hashes {
            if proc.signs.info_hashes.len() < MAX_INFO_HASHES {
                proc.signs.info_hashes.insert(h.to_ascii_lowercase());
            }
        }
        let sign = proc.known_client.is_some() || (high && proc.many_peers(cfg));
        if sign {
            mark_sign(proc, now_ms);
        }
        for (s, peer) in claimed {
            apply(proc, s, peer, cfg, now_ms);
        }
    }

    /// One inspected packet; `owner` is its socket's process when known.
    pub fn packet(&mut self, p: &Packet, owner: Option<&ProcessRef>, now_ms: i64) -> PacketFacts {
        let wire = wire::recognise(p);
        let mut facts = PacketFacts::default();
        let sign = match wire {
            None => None,
            Some(Wire::Dns(answers)) => {
                facts.dns = answers;
                None
            }
            Some(Wire::Handshake { info_hash }) => Some(Sign::Handshake(info_hash)),
            Some(Wire::Announce {
                info_hash, tracker, ..
            }) => Some(Sign::Announce { info_hash, tracker }),
            Some(Wire::UdpTrackerConnect) => Some(Sign::UdpTrackerConnect { tracker: p.at.dst }),
            Some(Wire::Krpc { method, info_hash }) => Some(Sign::Krpc { method, info_hash }),
            Some(Wire::Utp { .. }) => Some(Sign::Utp),
        };
        if let Some(
            Sign::Handshake(h)
            | Sign::Announce { info_hash: h, .. }
            | Sign::Krpc {
                info_hash: Some(h), ..
            },
        ) = &sign
        {
            facts.info_hash = Some(wire::hex(h));
        }
        let peer = if p.outgoing { p.at.dst } else { p.at.src };
        // An owner without a pid (only its uid is known) is no process:
        // the sign waits for a record that names one.
        match owner.and_then(|o| Some((o, ProcKey::of(o)?))) {
            Some((owner, key)) => {
                let cfg = &self.cfg;
                let proc = self
                    .procs
                    .entry(key)
                    .or_insert_with(|| Proc::new(owner, cfg, now_ms));
                if p.at.protocol == Protocol::Udp && !group(p) {
                    // UDP peers come from packets: an unconnected socket's
                    // records have no remote.
                    let high = p.at.src.port() >= cfg.high_port && p.at.dst.port() >= cfg.high_port;
                    let t = Traffic {
                        peer: Some(peer),
                        ..Traffic::default()
                    };
                    let contact = Contact::Datagram {
                        outgoing: p.outgoing,
                    };
                    proc.note(&t, high, contact, cfg, now_ms);
                    if let Some(ep) = proc.episode.as_mut() {
                        ep.add_peer(peer);
                        ep.last_ms = now_ms;
                    }
                    if high && proc.many_peers(cfg) {
                        mark_sign(proc, now_ms);
                    }
                }
                if let Some(s) = sign {
                    apply(proc, s, peer, cfg, now_ms);
                }
            }
            None => {
                if let Some(s) = sign {
                    self.pending.add(p.at, s, now_ms);
                }
            }
        }
        facts
    }

    /// The P2P records due at `now_ms`.
    pub fn tick(&mut self, now_ms: i64) -> Vec<P2pEvent> {
        self.pending.expire(now_ms);
        let mut out = Vec::new();
        let cfg = &self.cfg;
        let window = process::window_ms(cfg);
        for (key, proc) in self.procs.iter_mut() {
            proc.prune(cfg, now_ms);
            let reasons = reasons(proc, cfg);
            match proc.episode.as_mut() {
                None if !reasons.is_empty() && proc.last_sign_ms > 0 => {
                    let first = proc.earliest_ms(now_ms);
                    let id = format!("{}/{}/{first}", self.agent_id, key.id_part());
                    let mut ep = Episode::new(id, first, now_ms);
                    let (out_b, in_b, extra) = proc.window_traffic();
                    ep.add_window(out_b, in_b, extra);
                    proc.window_flows().for_each(|f| ep.add_flow(f));
                    proc.window_peer_addrs().for_each(|p| ep.add_peer(p));
                    ep.last_ms = proc.last_seen_ms;
                    ep.last_sign_ms = proc.last_sign_ms;
                    ep.reasons.extend(reasons);
                    out.push(ep.event("detected", &proc.process, &proc.signs));
                    proc.episode = Some(ep);
                }
                None => {}
                Some(ep) => {
                    ep.reasons.extend(reasons);
                    ep.last_sign_ms = ep.last_sign_ms.max(proc.last_sign_ms);
                    let quiet = secs_ms(cfg.quiet_secs);
                    if now_ms - ep.last_sign_ms >= quiet {
                        out.push(ep.event("ended", &proc.process, &proc.signs));
                        proc.episode = None;
                        proc.last_sign_ms = 0;
                        proc.reset();
                    } else if now_ms - ep.last_emit_ms >= secs_ms(cfg.update_secs) {
                        ep.last_emit_ms = now_ms;
                        out.push(ep.event("update", &proc.process, &proc.signs));
                    }
                }
            }
        }
        self.procs
            .retain(|_, p| p.episode.is_some() || p.last_seen_ms + window >= now_ms);
        out
    }
}

/// A datagram to or from a group (multicast, broadcast): its senders
/// talk to the group, not to the process (mDNS, SSDP, DHCP).
fn group(p: &Packet) -> bool {
    let g = |ip: std::net::IpAddr| {
        ip.is_multicast() || ip == std::net::IpAddr::V4(std::net::Ipv4Addr::BROADCAST)
    };
    g(p.at.src.ip()) || g(p.at.dst.ip())
}

fn secs_ms(s: u64) -> i64 {
    i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)
}

fn mark_sign(proc: &mut Proc, now_ms: i64) {
    proc.last_sign_ms = now_ms;
    proc.signs.seen(now_ms);
}

/// Credits a packet's sign to a process.
fn apply(proc: &mut Proc, sign: Sign, peer: SocketAddr, cfg: &P2pConfig, now_ms: i64) {
    let s = &mut proc.signs;
    let mut hash = None;
    match sign {
        Sign::Handshake(h) => {
            s.handshakes += 1;
            hash = Some(h);
        }
        Sign::Announce { info_hash, tracker } => {
            s.announces += 1;
            if s.trackers.len() < MAX_TRACKERS {
                s.trackers.insert(tracker);
            }
            hash = Some(info_hash);
        }
        Sign::UdpTrackerConnect { tracker } => {
            s.udp_tracker_connects += 1;
            if s.trackers.len() < MAX_TRACKERS {
                s.trackers.insert(format!("udp://{tracker}"));
            }
        }
        Sign::Krpc { method, info_hash } => {
            s.krpc += 1;
            if s.krpc_methods.len() < MAX_METHODS {
                s.krpc_methods.insert(method);
            }
            if s.krpc_peers.len() < process::MAX_SET {
                s.krpc_peers.insert(peer);
            }
            hash = info_hash;
        }
        Sign::Utp => {
            s.utp += 1;
            if s.utp_peers.len() < process::MAX_SET {
                s.utp_peers.insert(peer);
            }
            if s.utp_peers.len() < utp_min_peers(cfg) {
                // Not a sign yet: a uTP header alone proves little.
                return;
            }
        }
    }
    if let Some(h) = hash
        && s.info_hashes.len() < MAX_INFO_HASHES
    {
        s.info_hashes.insert(wire::hex(&h));
    }
    mark_sign(proc, now_ms);
}

fn utp_min_peers(cfg: &P2pConfig) -> usize {
    (cfg.min_peers as usize / 2).max(3)
}

/// The reasons that hold for a process now, with their details.
fn reasons(proc: &Proc, cfg: &P2pConfig) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let s = &proc.signs;
    if let Some(client) = &proc.known_client {
        let p = &proc.process;
        out.push((
            "known_client",
            format!(
                "process {:?} (executable {:?}) matches {client:?} in network.p2p.clients",
                p.name, p.exe
            ),
        ));
    }
    if s.handshakes > 0 {
        out.push((
            "bt_handshake",
            format!("{} BitTorrent handshake(s) seen", s.handshakes),
        ));
    }
    if s.announces + s.udp_tracker_connects > 0 {
        let trackers: Vec<&str> = s.trackers.iter().map(String::as_str).take(5).collect();
        out.push((
            "tracker_announce",
            format!(
                "{} tracker request(s) to {}",
                s.announces + s.udp_tracker_connects,
                trackers.join(", ")
            ),
        ));
    }
    if s.krpc > 0 {
        let methods: Vec<&str> = s.krpc_methods.iter().map(String::as_str).collect();
        out.push((
            "dht",
            format!(
                "{} DHT KRPC message(s) ({}) with {} peer(s)",
                s.krpc,
                methods.join(", "),
                s.krpc_peers.len()
            ),
        ));
    }
    if s.utp_peers.len() >= utp_min_peers(cfg) {
        out.push((
            "utp",
            format!("{} uTP packet(s) with {} peers", s.utp, s.utp_peers.len()),
        ));
    }
    if proc.many_peers(cfg) {
        let (all, contacted) = proc.window_peers();
        out.push((
            "many_peers",
            format!(
                "{all} distinct peers with both ports >= {} within {} s, {contacted} of them contacted by the process (threshold {})",
                cfg.high_port, cfg.window_secs, cfg.min_peers
            ),
        ));
    }
    out
}
