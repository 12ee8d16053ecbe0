//! The report's aggregation: records are added one at a time as the scan
//! reads them (in any order) and nothing but the tables below is kept, so
//! memory is bounded by [`Bounds`], not by the number of records:
//!
//! - per process (name, executable, user): connections, distinct peers
//!   (remote ip:port), bytes out/in, first/last seen, pids — at most
//!   `processes` rows; records of further processes count in the totals
//!   and the timeline only;
//! - per remote address: the same, with its ports and the processes that
//!   talked to it — at most `peers` rows;
//! - the distinct (process, peer) pairs behind the peer counts: at most
//!   `pairs` (8-byte hashes);
//! - the flows that began before the range (see below): at most
//!   `early_flows` ids;
//! - one merged record per P2P episode, at most `episodes`; the network
//!   gaps, at most `gaps`.
//!
//! A bound reached is said in the report's `notes` (its figures are then
//! lower bounds), never silently.
//!
//! Bytes are the records' deltas (a flow's deltas add up to its totals, a
//! summary's are its flows' bytes), so a sum over any range is right and
//! a flow is never counted twice. A connection is counted once: at its
//! `open` record, as the `connections` of a `summary`, or — for a flow
//! opened before the range — at its first record in the range (by
//! `flow_id`). The timeline puts a record's deltas in the bucket of the
//! record's time: the traffic of the interval the record closes (at most
//! the agent's `update_secs` for a long flow).
//!
//! Times are the collector-corrected times of the records (the agent's
//! clock minus its measured offset), as the scan orders them.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};

use kiroku_common::mail::corrected_ms;
use kiroku_proto::{
    Event, NetworkEvent, NetworkReport, P2pEvent, PeerTraffic, ProcessRef, ProcessTraffic,
    event::Kind,
};

use super::timeline::Timeline;

/// The gap source of the network capture (`GapEvent.source`).
pub const GAP_SOURCE: &str = "network";
/// Most pids listed per process row, ports and process names per peer.
const MAX_PIDS: usize = 64;
const MAX_PORTS: usize = 32;
const MAX_PEER_PROCESSES: usize = 16;
/// Most info_hashes, trackers and sample peers kept per P2P episode.
const MAX_EPISODE_LIST: usize = 100;
const MAX_SAMPLE_PEERS: usize = 50;

/// What the aggregation keeps at most (see the module documentation).
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    pub processes: usize,
    pub peers: usize,
    pub pairs: usize,
    pub early_flows: usize,
    pub episodes: usize,
    pub gaps: usize,
}

impl Default for Bounds {
    /// About 100 MB at worst, all tables full.
    fn default() -> Bounds {
        Bounds {
            processes: 10_000,
            peers: 100_000,
            pairs: 1_000_000,
            early_flows: 100_000,
            episodes: 1000,
            gaps: 1000,
        }
    }
}

/// A process row's identity: name, executable, user.
type ProcKey = (String, String, String);

fn proc_key(p: Option<&ProcessRef>) -> ProcKey {
    match p {
        None => Default::default(),
        Some(p) => {
            let user = if p.user.is_empty() {
                format!("uid {}", p.uid)
            } else {
                p.user.clone()
            };
            (p.name.clone(), p.exe.clone(), user)
        }
    }
}

fn pair_hash(ip: &str, port: u32) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (ip, port).hash(&mut h);
    h.finish()
}

#[derive(Default)]
struct ProcAcc {
    pids: BTreeSet<u32>,
    peers: HashSet<u64>,
    connections: u64,
    bytes_out: u64,
    bytes_in: u64,
    first_ms: i64,
    last_ms: i64,
}

#[derive(Default)]
struct PeerAcc {
    name: String,
    ports: BTreeSet<u32>,
    processes: BTreeSet<String>,
    connections: u64,
    bytes_out: u64,
    bytes_in: u64,
    first_ms: i64,
    last_ms: i64,
}

/// Widens [first, last] to hold [first_ms, last_ms] (0: not yet set).
fn widen(first: &mut i64, last: &mut i64, first_ms: i64, last_ms: i64) {
    if *first == 0 || first_ms < *first {
        *first = first_ms;
    }
    *last = (*last).max(last_ms);
}

/// Records that could not be counted in full (bounds reached).
#[derive(Default)]
struct LeftOut {
    process_records: u64,
    peer_records: u64,
    pairs: u64,
    early_flows: u64,
    episodes: u64,
    gaps: u64,
}

/// One figure of one record, as the tables add it up.
struct Traffic<'a> {
    n: &'a NetworkEvent,
    connections: u64,
    first_ms: i64,
    last_ms: i64,
}

pub struct Aggregator {
    from_ms: i64,
    bounds: Bounds,
    timeline: Timeline,
    processes: HashMap<ProcKey, ProcAcc>,
    peers: HashMap<String, PeerAcc>,
    pairs: usize,
    early: HashSet<String>,
    episodes: HashMap<String, Event>,
    p2p_processes: HashSet<ProcKey>,
    /// (name, pid) of the processes P2P records named: a flow row whose
    /// executable or user was told differently is still flagged.
    p2p_pids: HashSet<(String, u32)>,
    gaps: Vec<Event>,
    records: u64,
    connections: u64,
    bytes_out: u64,
    bytes_in: u64,
    left_out: LeftOut,
}

impl Aggregator {
    pub fn new(from_ms: i64, timeline: Timeline, bounds: Bounds) -> Aggregator {
        Aggregator {
            from_ms,
            bounds,
            timeline,
            processes: HashMap::new(),
            peers: HashMap::new(),
            pairs: 0,
            early: HashSet::new(),
            episodes: HashMap::new(),
            p2p_processes: HashSet::new(),
            p2p_pids: HashSet::new(),
            gaps: Vec::new(),
            records: 0,
            connections: 0,
            bytes_out: 0,
            bytes_in: 0,
            left_out: LeftOut::default(),
        }
    }

    /// Adds one record: network and p2p records and network gaps; any
    /// other record is ignored.
    pub fn add(&mut self, e: Event) {
        match &e.kind {
            Some(Kind::Network(n)) => self.network(&e, n),
            Some(Kind::P2p(p)) => {
                if self.p2p_processes.len() < self.bounds.episodes {
                    self.p2p_processes.insert(proc_key(p.process.as_ref()));
                    if let Some(r) = &p.process {
                        self.p2p_pids.insert((r.name.clone(), r.pid));
                    }
                }
                self.p2p(e);
            }
            Some(Kind::Gap(g)) if g.source == GAP_SOURCE => {
                if self.gaps.len() < self.bounds.gaps {
                    self.gaps.push(e);
                } else {
                    self.left_out.gaps += 1;
                }
            }
            _ => {}
        }
    }

    fn network(&mut self, e: &Event, n: &NetworkEvent) {
        let at = corrected_ms(e);
        // The record's own times on the collector's clock.
        let offset = if e.clock_offset_known {
            e.clock_offset_ms
        } else {
            0
        };
        let corrected = |ms: i64| (ms != 0).then(|| ms.saturating_sub(offset));
        let start = corrected(n.start_ms);
        let t = Traffic {
            n,
            connections: self.connections_of(n, start),
            first_ms: start.unwrap_or(at),
            last_ms: corrected(n.end_ms).unwrap_or(at).max(at),
        };
        self.records += 1;
        self.connections += t.connections;
        self.bytes_out = self.bytes_out.saturating_add(n.bytes_out_delta);
        self.bytes_in = self.bytes_in.saturating_add(n.bytes_in_delta);
        if let Some(b) = self.timeline.bucket(at) {
            b.bytes_out = b.bytes_out.saturating_add(n.bytes_out_delta);
            b.bytes_in = b.bytes_in.saturating_add(n.bytes_in_delta);
            b.connections += t.connections;
        }
        self.add_to_process(&t);
        if !n.remote_ip.is_empty() {
            self.add_to_peer(&t);
        }
    }

    /// The connections a record counts for (see the module documentation).
    fn connections_of(&mut self, n: &NetworkEvent, start: Option<i64>) -> u64 {
        match n.phase.as_str() {
            "open" => n.connections.max(1),
            "summary" => n.connections,
            // The only record of a flow that closed before it was
            // recorded (agents from issue 21 on mark it `first`).
            "close" if n.first => n.connections.max(1),
            "update" | "close" => {
                let before = start.is_some_and(|s| s < self.from_ms);
                if !before || n.flow_id.is_empty() || self.early.contains(&n.flow_id) {
                    0
                } else if self.early.len() < self.bounds.early_flows {
                    self.early.insert(n.flow_id.clone());
                    n.connections.max(1)
                } else {
                    self.left_out.early_flows += 1;
                    0
                }
            }
            _ => 0,
        }
    }

    fn add_to_process(&mut self, t: &Traffic) {
        let n = t.n;
        let key = proc_key(n.process.as_ref());
        if !self.processes.contains_key(&key) && self.processes.len() >= self.bounds.processes {
            self.left_out.process_records += 1;
            return;
        }
        let acc = self.processes.entry(key).or_default();
        if let Some(p) = &n.process
            && p.pid != 0
            && acc.pids.len() < MAX_PIDS
        {
            acc.pids.insert(p.pid);
        }
        acc.connections += t.connections;
        acc.bytes_out = acc.bytes_out.saturating_add(n.bytes_out_delta);
        acc.bytes_in = acc.bytes_in.saturating_add(n.bytes_in_delta);
        widen(&mut acc.first_ms, &mut acc.last_ms, t.first_ms, t.last_ms);
        if !n.remote_ip.is_empty() {
            let h = pair_hash(&n.remote_ip, n.remote_port);
            let new = !acc.peers.contains(&h);
            if new && self.pairs < self.bounds.pairs {
                acc.peers.insert(h);
                self.pairs += 1;
            } else if new {
                self.left_out.pairs += 1;
            }
        }
    }

    fn add_to_peer(&mut self, t: &Traffic) {
        let n = t.n;
        if !self.peers.contains_key(&n.remote_ip) && self.peers.len() >= self.bounds.peers {
            self.left_out.peer_records += 1;
            return;
        }
        let acc = self.peers.entry(n.remote_ip.clone()).or_default();
        if !n.remote_name.is_empty() {
            acc.name.clone_from(&n.remote_name);
        }
        if n.remote_port != 0 && acc.ports.len() < MAX_PORTS {
            acc.ports.insert(n.remote_port);
        }
        if let Some(p) = &n.process
            && !p.name.is_empty()
            && acc.processes.len() < MAX_PEER_PROCESSES
        {
            acc.processes.insert(p.name.clone());
        }
        acc.connections += t.connections;
        acc.bytes_out = acc.bytes_out.saturating_add(n.bytes_out_delta);
        acc.bytes_in = acc.bytes_in.saturating_add(n.bytes_in_delta);
        widen(&mut acc.first_ms, &mut acc.last_ms, t.first_ms, t.last_ms);
    }

    /// Keeps one record per episode: the latest, with what every record of
    /// the episode named (reasons, info_hashes, trackers, sample peers)
    /// and its widest span and largest figures.
    fn p2p(&mut self, e: Event) {
        let Some(Kind::P2p(p)) = &e.kind else { return };
        let key = if p.episode_id.is_empty() {
            e.event_id.clone()
        } else {
            p.episode_id.clone()
        };
        match self.episodes.remove(&key) {
            Some(old) => {
                let merged = merge_episode(old, e);
                self.episodes.insert(key, merged);
            }
            None if self.episodes.len() < self.bounds.episodes => {
                self.episodes.insert(key, e);
            }
            None => self.left_out.episodes += 1,
        }
    }

    /// The report: rows sorted by bytes (out + in), then connections, then
    /// name; `top` rows of each table.
    pub fn finish(self, top: usize) -> NetworkReport {
        let notes = self.notes();
        let (p2p, p2p_pids) = (self.p2p_processes, self.p2p_pids);
        let mut processes: Vec<ProcessTraffic> = self
            .processes
            .into_iter()
            .map(|(key, a)| {
                let flag = p2p.contains(&key)
                    || a.pids
                        .iter()
                        .any(|pid| p2p_pids.contains(&(key.0.clone(), *pid)));
                let (process, exe, user) = key;
                ProcessTraffic {
                    process,
                    exe,
                    user,
                    pids: a.pids.into_iter().collect(),
                    connections: a.connections,
                    peers: a.peers.len() as u64,
                    bytes_out: a.bytes_out,
                    bytes_in: a.bytes_in,
                    first_ms: a.first_ms,
                    last_ms: a.last_ms,
                    p2p: flag,
                }
            })
            .collect();
        processes.sort_by(|a, b| {
            let (va, vb) = (
                a.bytes_out.saturating_add(a.bytes_in),
                b.bytes_out.saturating_add(b.bytes_in),
            );
            (vb, b.connections)
                .cmp(&(va, a.connections))
                .then_with(|| (&a.process, &a.exe, &a.user).cmp(&(&b.process, &b.exe, &b.user)))
        });
        let mut peers: Vec<PeerTraffic> = self
            .peers
            .into_iter()
            .map(|(ip, a)| PeerTraffic {
                remote_ip: ip,
                remote_name: a.name,
                ports: a.ports.into_iter().collect(),
                processes: a.processes.into_iter().collect(),
                connections: a.connections,
                bytes_out: a.bytes_out,
                bytes_in: a.bytes_in,
                first_ms: a.first_ms,
                last_ms: a.last_ms,
            })
            .collect();
        peers.sort_by(|a, b| {
            let (va, vb) = (
                a.bytes_out.saturating_add(a.bytes_in),
                b.bytes_out.saturating_add(b.bytes_in),
            );
            (vb, b.connections).cmp(&(va, a.connections)).then_with(|| {
                let ip = |p: &PeerTraffic| p.remote_ip.parse::<std::net::IpAddr>().ok();
                (ip(a), &a.remote_ip).cmp(&(ip(b), &b.remote_ip))
            })
        });
        let other_processes = processes.len().saturating_sub(top) as u64;
        let other_peers = peers.len().saturating_sub(top) as u64;
        processes.truncate(top);
        peers.truncate(top);
        let mut episodes: Vec<Event> = self.episodes.into_values().collect();
        episodes.sort_by_key(|e| (episode(e).map_or(0, |p| p.first_ms), e.event_id.clone()));
        let mut gaps = self.gaps;
        gaps.sort_by_key(|e| (corrected_ms(e), e.event_id.clone()));
        NetworkReport {
            processes,
            peers,
            bucket_ms: self.timeline.step(),
            timeline: self.timeline.into_buckets(),
            p2p: episodes,
            records: self.records,
            connections: self.connections,
            bytes_out: self.bytes_out,
            bytes_in: self.bytes_in,
            other_processes,
            other_peers,
            gaps,
            notes,
            ..Default::default()
        }
    }

    fn notes(&self) -> Vec<String> {
        let b = &self.bounds;
        let l = &self.left_out;
        let mut notes = Vec::new();
        let mut say = |n: u64, what: String| {
            if n > 0 {
                notes.push(what);
            }
        };
        say(
            l.process_records,
            format!(
                "{} records of processes beyond the first {} are counted in the totals and the timeline only",
                l.process_records, b.processes
            ),
        );
        say(
            l.peer_records,
            format!(
                "{} records of remote addresses beyond the first {} are counted in the totals and the timeline only",
                l.peer_records, b.peers
            ),
        );
        say(
            l.pairs,
            format!(
                "the processes' peer counts are lower bounds: {} distinct process-peer pairs are held at most",
                b.pairs
            ),
        );
        say(
            l.early_flows,
            format!(
                "connections are a lower bound: {} records of flows opened before the range were not counted as connections ({} such flows are held at most)",
                l.early_flows, b.early_flows
            ),
        );
        say(
            l.episodes,
            format!(
                "{} records of P2P episodes beyond the first {} are not listed: narrow the range",
                l.episodes, b.episodes
            ),
        );
        say(
            l.gaps,
            format!(
                "{} network gap records beyond the first {} are not listed: narrow the range or search --kind gap",
                l.gaps, b.gaps
            ),
        );
        notes
    }
}

fn episode(e: &Event) -> Option<&P2pEvent> {
    match &e.kind {
        Some(Kind::P2p(p)) => Some(p),
        _ => None,
    }
}

/// Adds the values of `more` not in `into`, keeping at most `max`.
fn union(into: &mut Vec<String>, more: &[String], max: usize) {
    for v in more {
        if into.len() >= max {
            break;
        }
        if !into.contains(v) {
            into.push(v.clone());
        }
    }
}

/// Two records of one episode as one: the later record (its phase,
/// process, event id) with everything both named.
fn merge_episode(a: Event, b: Event) -> Event {
    let (mut later, earlier) = if (corrected_ms(&b), &b.event_id) >= (corrected_ms(&a), &a.event_id)
    {
        (b, a)
    } else {
        (a, b)
    };
    let (Some(Kind::P2p(p)), Some(Kind::P2p(old))) = (&mut later.kind, &earlier.kind) else {
        return later;
    };
    for r in &old.reasons {
        if !p.reasons.iter().any(|x| x.code == r.code) {
            p.reasons.push(r.clone());
        }
    }
    union(&mut p.info_hashes, &old.info_hashes, MAX_EPISODE_LIST);
    union(&mut p.trackers, &old.trackers, MAX_EPISODE_LIST);
    union(&mut p.sample_peers, &old.sample_peers, MAX_SAMPLE_PEERS);
    if old.first_ms != 0 && (p.first_ms == 0 || old.first_ms < p.first_ms) {
        p.first_ms = old.first_ms;
    }
    p.last_ms = p.last_ms.max(old.last_ms);
    p.peers = p.peers.max(old.peers);
    p.bytes_out = p.bytes_out.max(old.bytes_out);
    p.bytes_in = p.bytes_in.max(old.bytes_in);
    p.connections = p.connections.max(old.connections);
    later
}
