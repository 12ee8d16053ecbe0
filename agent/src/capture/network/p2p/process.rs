//! What the detector knows about one process: its recent peers (the
//! `many_peers` window), its traffic in that window (folded into an
//! episode when one starts), the wire signs seen on its flows, and which
//! reasons they make fire.
//!
//! A process is keyed by pid and start time ([`ProcKey`]): a P2P client
//! restarted is a new process and a new episode (the `p2p` alert is once
//! per process and episode). Records that name no process (pid 0:
//! attribution "uid", or none) start and feed no episode: a uid groups
//! every process of a user (all of root's daemons), and the uid of a
//! socket the kernel reported only at its destruction is 0 for "unknown",
//! so an episode keyed on it would be a phantom mixing unrelated
//! traffic — and fire an alert of its own. Such records stay in the
//! network records, where the investigator sees them.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;

use kiroku_proto::{NetworkEvent, ProcessRef};

use super::super::config::P2pConfig;

/// Bounds on what one process may hold (a process with millions of peers
/// is counted, not remembered).
const MAX_WINDOW_PEERS: usize = 20_000;
const MAX_WINDOW_FLOWS: usize = 20_000;
pub(super) const MAX_SET: usize = 200_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct ProcKey {
    pid: u32,
    started_ms: i64,
}

impl ProcKey {
    /// The key of a known process; None when the record names none (pid
    /// 0: only a uid, or nothing, is known).
    pub(super) fn of(p: &ProcessRef) -> Option<ProcKey> {
        (p.pid != 0).then_some(ProcKey {
            pid: p.pid,
            started_ms: p.started_ms,
        })
    }

    /// The part of an episode id naming the process.
    pub(super) fn id_part(&self) -> String {
        format!("{}-{}", self.pid, self.started_ms)
    }
}

/// How a record or packet tells whether the process contacted a peer.
#[derive(Debug, Clone, Copy)]
pub(super) enum Contact {
    /// A flow record: its direction says who opened it.
    Flow { outbound: bool },
    /// A datagram: the first one exchanged with a peer decides (a UDP
    /// server answers its many clients but contacted none of them; a DHT
    /// node or uTP client writes first to the peers it finds).
    Datagram { outgoing: bool },
}

/// A remote peer of the window.
#[derive(Debug, Clone, Copy)]
struct Peer {
    first_ms: i64,
    last_ms: i64,
    /// Both ports >= `high_port`: counts for `many_peers`.
    high: bool,
    /// The process contacted it (outbound TCP, or UDP): a server that only
    /// accepts connections does not count as talking to many peers.
    contacted: bool,
}

/// Traffic of the last `window_secs` in ten buckets: what an episode
/// starts with when it is detected.
#[derive(Debug, Default)]
struct Recent {
    buckets: VecDeque<Bucket>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Bucket {
    start_ms: i64,
    bytes_out: u64,
    bytes_in: u64,
    extra_connections: u64,
}

/// What one record or packet contributes to a process's totals.
#[derive(Debug, Default, Clone)]
pub(super) struct Traffic {
    pub bytes_out: u64,
    pub bytes_in: u64,
    /// Connections counted by a summary record (its flows have no id).
    pub extra_connections: u64,
    pub flow: Option<u64>,
    pub peer: Option<SocketAddr>,
}

impl Traffic {
    pub(super) fn of(ev: &NetworkEvent) -> Traffic {
        let summary = ev.phase == "summary";
        Traffic {
            bytes_out: ev.bytes_out_delta,
            bytes_in: ev.bytes_in_delta,
            extra_connections: if summary { ev.connections } else { 0 },
            flow: (!summary && !ev.flow_id.is_empty()).then(|| flow_hash(&ev.flow_id)),
            peer: remote(ev),
        }
    }
}

pub(super) fn flow_hash(id: &str) -> u64 {
    // SipHash with fixed keys: the same flow id always hashes the same.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

pub(super) fn remote(ev: &NetworkEvent) -> Option<SocketAddr> {
    let ip = ev.remote_ip.parse().ok()?;
    let port = u16::try_from(ev.remote_port).ok()?;
    Some(SocketAddr::new(ip, port))
}

/// Wire signs seen on a process's flows (since its episode started, or in
/// the window before one).
#[derive(Debug, Default)]
pub(super) struct Signs {
    pub krpc: u64,
    pub krpc_methods: BTreeSet<String>,
    pub krpc_peers: HashSet<SocketAddr>,
    pub utp: u64,
    pub utp_peers: HashSet<SocketAddr>,
    pub handshakes: u64,
    pub announces: u64,
    pub udp_tracker_connects: u64,
    pub trackers: BTreeSet<String>,
    pub info_hashes: BTreeSet<String>,
    pub first_ms: Option<i64>,
}

impl Signs {
    pub(super) fn seen(&mut self, now_ms: i64) {
        self.first_ms.get_or_insert(now_ms);
    }
}

pub(super) struct Proc {
    pub process: ProcessRef,
    pub episode: Option<super::episode::Episode>,
    /// The last P2P sign (a record of a known client, a record while
    /// `many_peers` holds, a recognised packet); 0: none since the last
    /// episode ended.
    pub last_sign_ms: i64,
    /// The configured client name it matched, once known.
    pub known_client: Option<String>,
    pub last_seen_ms: i64,
    peers: HashMap<SocketAddr, Peer>,
    /// Peers of the window with both ports high, and of those the ones
    /// the process contacted (kept as peers come and go: `many_peers` is
    /// asked at every record).
    high: usize,
    high_contacted: usize,
    flows: HashMap<u64, i64>,
    recent: Recent,
    pub signs: Signs,
}

impl Proc {
    pub(super) fn new(process: &ProcessRef, cfg: &P2pConfig, now_ms: i64) -> Proc {
        Proc {
            known_client: known_client(process, &cfg.clients),
            process: process.clone(),
            episode: None,
            last_sign_ms: 0,
            last_seen_ms: now_ms,
            peers: HashMap::new(),
            high: 0,
            high_contacted: 0,
            flows: HashMap::new(),
            recent: Recent::default(),
            signs: Signs::default(),
        }
    }

    /// Notes a record's peer and traffic in the window. `contacted`: the
    /// process reached out to the peer.
    pub(super) fn note(
        &mut self,
        t: &Traffic,
        high_peer: bool,
        contact: Contact,
        cfg: &P2pConfig,
        now_ms: i64,
    ) {
        self.last_seen_ms = now_ms;
        if let Some(addr) = t.peer {
            let (contacted, definitive) = match contact {
                Contact::Flow { outbound } => (outbound, true),
                Contact::Datagram { outgoing } => (outgoing, false),
            };
            if let Some(p) = self.peers.get_mut(&addr) {
                let before = (p.high, p.high && p.contacted);
                p.last_ms = now_ms;
                p.high |= high_peer;
                if definitive {
                    p.contacted |= contacted;
                }
                let after = (p.high, p.high && p.contacted);
                self.high += usize::from(after.0 && !before.0);
                self.high_contacted += usize::from(after.1 && !before.1);
            } else if self.peers.len() < MAX_WINDOW_PEERS {
                self.peers.insert(
                    addr,
                    Peer {
                        first_ms: now_ms,
                        last_ms: now_ms,
                        high: high_peer,
                        contacted,
                    },
                );
                self.high += usize::from(high_peer);
                self.high_contacted += usize::from(high_peer && contacted);
            }
        }
        if let Some(f) = t.flow
            && (self.flows.len() < MAX_WINDOW_FLOWS || self.flows.contains_key(&f))
        {
            self.flows.insert(f, now_ms);
        }
        let width = bucket_ms(cfg);
        let start = now_ms - now_ms.rem_euclid(width);
        if self.recent.buckets.back().map(|b| b.start_ms) != Some(start) {
            self.recent.buckets.push_back(Bucket {
                start_ms: start,
                ..Bucket::default()
            });
        }
        if let Some(b) = self.recent.buckets.back_mut() {
            b.bytes_out = b.bytes_out.saturating_add(t.bytes_out);
            b.bytes_in = b.bytes_in.saturating_add(t.bytes_in);
            b.extra_connections = b.extra_connections.saturating_add(t.extra_connections);
        }
    }

    /// Forgets what is older than the window.
    pub(super) fn prune(&mut self, cfg: &P2pConfig, now_ms: i64) {
        let oldest = now_ms - window_ms(cfg);
        let (mut high, mut high_contacted) = (self.high, self.high_contacted);
        self.peers.retain(|_, p| {
            let keep = p.last_ms >= oldest;
            if !keep {
                high -= usize::from(p.high);
                high_contacted -= usize::from(p.high && p.contacted);
            }
            keep
        });
        (self.high, self.high_contacted) = (high, high_contacted);
        self.flows.retain(|_, &mut t| t >= oldest);
        while self
            .recent
            .buckets
            .front()
            .is_some_and(|b| b.start_ms + bucket_ms(cfg) < oldest)
        {
            self.recent.buckets.pop_front();
        }
    }

    /// Distinct high-port peers in the window, and how many of them the
    /// process contacted.
    pub(super) fn window_peers(&self) -> (usize, usize) {
        (self.high, self.high_contacted)
    }

    /// Whether `many_peers` holds now.
    pub(super) fn many_peers(&self, cfg: &P2pConfig) -> bool {
        let (all, contacted) = self.window_peers();
        let min = cfg.min_peers.max(1) as usize;
        all >= min && contacted >= min.div_ceil(3)
    }

    /// The earliest sign in the window: where an episode detected now
    /// starts.
    pub(super) fn earliest_ms(&self, now_ms: i64) -> i64 {
        let peers = self
            .peers
            .values()
            .filter(|p| p.high)
            .map(|p| p.first_ms)
            .min();
        [peers, self.signs.first_ms, Some(now_ms)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now_ms)
    }

    /// The window's traffic: bytes out, bytes in, connections counted by
    /// summaries.
    pub(super) fn window_traffic(&self) -> (u64, u64, u64) {
        let b = &self.recent.buckets;
        (
            b.iter().map(|b| b.bytes_out).sum(),
            b.iter().map(|b| b.bytes_in).sum(),
            b.iter().map(|b| b.extra_connections).sum(),
        )
    }

    pub(super) fn window_flows(&self) -> impl Iterator<Item = u64> + '_ {
        self.flows.keys().copied()
    }

    pub(super) fn window_peer_addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.peers.keys().copied()
    }

    /// Starts afresh after an episode ended.
    pub(super) fn reset(&mut self) {
        self.peers.clear();
        (self.high, self.high_contacted) = (0, 0);
        self.flows.clear();
        self.recent = Recent::default();
        self.signs = Signs::default();
    }
}

pub(super) fn window_ms(cfg: &P2pConfig) -> i64 {
    i64::try_from(cfg.window_secs.saturating_mul(1000))
        .unwrap_or(i64::MAX)
        .max(1000)
}

fn bucket_ms(cfg: &P2pConfig) -> i64 {
    (window_ms(cfg) / 10).max(100)
}

/// The configured client a process matches: its name (comm, cut by the
/// kernel at 15 bytes, so a 15-byte name matches a longer client name it
/// starts) or its executable's file name, case-insensitively.
pub(super) fn known_client(p: &ProcessRef, clients: &[String]) -> Option<String> {
    let name = p.name.to_lowercase();
    let exe = p
        .exe
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or("")
        .to_lowercase();
    let exe = exe.strip_suffix(".exe").unwrap_or(&exe).to_owned();
    clients.iter().find_map(|c| {
        let c_low = c.to_lowercase();
        let by_name =
            !name.is_empty() && (name == c_low || (name.len() == 15 && c_low.starts_with(&name)));
        let by_exe = !exe.is_empty() && exe == c_low;
        (by_name || by_exe).then(|| c.clone())
    })
}
