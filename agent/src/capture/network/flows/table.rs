//! The flow table: every socket the capture follows, keyed by the kernel's
//! socket cookie, turned into `NetworkEvent` records.
//!
//! - A socket first seen in a dump: `open` (or `listen_open`), with the
//!   counters it already had as its first delta; unless it is excluded,
//!   coalesced (`coalesce.rs`) or the table is full (`max_flows`: counted,
//!   a `flow_table_full` gap record).
//! - Seen again: its counters are kept; every `update_secs` an `update`
//!   with the deltas since its previous record.
//! - Destroy-notified: `close` with the notification's final counters
//!   (`counters = "tcp_info"`). Missing from two dumps in a row (no
//!   notification: no CAP_NET_ADMIN, or the notification was lost), or
//!   seen in TIME_WAIT: `close` with the last dump's counters
//!   (`counters = "last_dump"`) and `end_ms` the last time it was seen.
//! - Destroy-notified but never seen in a dump (opened and closed between
//!   two dumps): one `close` record with its totals; its process is
//!   `inferred` (the process of the same uid seen with the same remote
//!   ip:port in the last summary interval) or only its `uid` is known;
//!   `start_ms` is the dump before (it opened after it).
//! - A flow an earlier run of the agent recorded (its `flow_id` is in the
//!   saved state, `persist.rs`): no second `open`, an `update` with
//!   `continued = true` and the deltas since what was recorded; a saved
//!   flow not found in the first dump ended while the agent was stopped:
//!   a `close` with the last recorded totals (`counters = "last_record"`).
//!
//! Pure logic (no I/O but the `ProcessTable` it is given): the runner
//! writes what it returns. `table/ends.rs`: a flow's end (its close, or
//! one that ended while the agent was stopped); `table/unseen.rs`: sockets
//! closed before any dump saw them; `table/periodic.rs`: what is written on the table's own
//! schedule (summaries and gap records due, the final updates of a clean
//! stop).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use kiroku_proto::{GapEvent, NetworkEvent, ProcessRef};

use super::super::config::NetworkConfig;
use super::super::platform::{Counters, Owner, Packet, ProcessTable, Protocol, Socket};
use super::coalesce::{Admit, Coalescer, Key, key_of};
use super::exclude::{Excluder, canonical};
use super::infer::Recent;
use super::persist::{Saved, StateOp};
pub use super::record::process_ref;
use super::record::{canonical_addr, delta, event, template, transient, uid_ref};

mod ends;
mod periodic;
mod unseen;

/// One record the table asks to write.
#[derive(Debug, Clone, PartialEq)]
// Mostly `Net`; each is built once and moved into the batch: boxing would
// only add an allocation per record.
#[allow(clippy::large_enum_variant)]
pub enum Rec {
    /// A flow record, and the keyed-state change that must be durable
    /// with it.
    Net(NetworkEvent, Option<StateOp>),
    Gap(GapEvent),
    /// A keyed-state change without a record of its own (a coalesced
    /// flow's totals), durable with the records written with it.
    State(StateOp),
}

/// DNS names kept for the flows that follow the answer (bounded).
const MAX_NAMES: usize = 10_000;
/// How long a cookie closed by the table is remembered, so a late destroy
/// notification for it is not taken for a new flow.
const REMEMBER_CLOSED_MS: i64 = 30_000;
/// Adds `f`'s traffic since its last record (and, `started`, the flow
/// itself) to `key`'s summary; the caller brings `f.recorded` up to date
/// when the flow lives on.
pub(super) fn summarise(coalesce: &mut Coalescer, key: &Key, f: &Flow, started: bool, now_ms: i64) {
    let d = delta(f.counters, f.recorded);
    coalesce.add(
        key,
        &template(f),
        started,
        d.bytes_out,
        d.bytes_in,
        d.packets_out,
        d.packets_in,
        now_ms,
    );
}

/// The local port of an inbound flow (its coalescing key's).
pub(super) fn inbound_port(f: &Flow) -> Option<u16> {
    (f.direction == "inbound").then_some(f.local.port())
}

/// How long a new flow's first record waits for its owner to be found.
const OWNER_WAIT_MS: i64 = 2_500;
/// Closed sockets waiting for the next dump to infer their owner (more
/// are recorded at once, without waiting).
const MAX_DEFERRED: usize = 10_000;

#[derive(Debug, Clone)]
pub(super) struct Flow {
    pub(super) protocol: Protocol,
    pub(super) local: SocketAddr,
    pub(super) remote: Option<SocketAddr>,
    pub(super) state: &'static str,
    pub(super) uid: u32,
    pub(super) flow_id: String,
    pub(super) process: Option<ProcessRef>,
    pub(super) attribution: &'static str,
    pub(super) direction: &'static str,
    pub(super) start_ms: i64,
    pub(super) last_seen_ms: i64,
    /// Latest totals known.
    pub(super) counters: Counters,
    /// "tcp_info", "packets", "none".
    pub(super) source: &'static str,
    /// Totals as of the last record (or as added to a summary).
    pub(super) recorded: Counters,
    pub(super) last_record_ms: i64,
    /// Some: counted in this key's summaries, no records of its own.
    pub(super) coalesced: Option<Key>,
    /// A coalesced flow's totals in the keyed state (what the summaries
    /// written so far counted, `persist.rs`); None: not saved.
    pub(super) persisted: Option<Counters>,
    pub(super) listening: bool,
    /// Its next record is the first of this run of a flow an earlier run
    /// recorded.
    pub(super) continued: bool,
    pub(super) info_hashes: Vec<String>,
    pub(super) remote_name: String,
    /// The dump generation it was last seen in.
    pub(super) seen: u64,
    /// Missing from one dump already.
    pub(super) missing: bool,
    pub(super) inode: u64,
    /// Its owner was not found yet (the process table rescans /proc at
    /// most once a second): nothing is recorded for it until the owner is
    /// found or this time passes (then only its uid is told).
    pub(super) pending_until: Option<i64>,
}

/// Counted for a gap record.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct GapCount {
    pub(super) count: u64,
    pub(super) first_ms: i64,
    pub(super) last_ms: i64,
}

impl GapCount {
    fn add(&mut self, n: u64, now_ms: i64) {
        if n == 0 {
            return;
        }
        if self.count == 0 {
            self.first_ms = now_ms;
        }
        self.count += n;
        self.last_ms = now_ms;
    }
}

/// Counts since the table started (for the log and tests).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub opened: u64,
    pub closed: u64,
    pub closed_unseen: u64,
    pub coalesced: u64,
    pub excluded: u64,
    pub table_full: u64,
    pub notifications_lost: u64,
    /// Inspected packets the kernel dropped (`network.inspect`).
    pub packets_lost: u64,
}

pub struct FlowTable {
    update_ms: i64,
    summary_ms: i64,
    max_flows: usize,
    boot_id: String,
    exclude: Excluder,
    coalesce: Coalescer,
    flows: HashMap<u64, Flow>,
    /// Canonical (protocol, local, remote) → cookie, for packets.
    by_ends: HashMap<(Protocol, SocketAddr, Option<SocketAddr>), u64>,
    /// Cookies seen and excluded (not asked about again).
    excluded: HashSet<u64>,
    /// Cookies not tracked because the table was full.
    untracked: HashSet<u64>,
    /// Cookies closed recently (late notifications are dropped).
    closed_recently: HashMap<u64, i64>,
    /// Listening (canonical ip or None for a wildcard, port), TCP.
    listening: HashSet<(Option<IpAddr>, u16)>,
    /// What the dumps saw recently, for sockets never dumped.
    recent: Recent,
    names: HashMap<IpAddr, String>,
    users: HashMap<u32, String>,
    /// The previous run's flows not found yet (cleared after the first
    /// dump).
    saved: HashMap<String, Saved>,
    generation: u64,
    last_dump_ms: i64,
    /// Sockets closed before any dump saw them whose owner could not be
    /// inferred yet, with when they closed and the dump before: tried
    /// again after the next dump (its listeners and peers may tell).
    deferred: Vec<(Socket, i64, i64)>,
    full: GapCount,
    lost: GapCount,
    packets_lost: GapCount,
    next_gap_ms: i64,
    pub stats: Stats,
}

impl FlowTable {
    pub fn new(
        cfg: &NetworkConfig,
        exclude: Excluder,
        boot_id: String,
        saved: HashMap<String, Saved>,
        now_ms: i64,
    ) -> FlowTable {
        let summary_ms = (cfg.summary_secs.max(1) * 1000) as i64;
        FlowTable {
            update_ms: (cfg.update_secs.max(1) * 1000) as i64,
            summary_ms,
            max_flows: cfg.max_flows.max(1),
            boot_id,
            exclude,
            coalesce: Coalescer::new(
                cfg.summary_secs,
                cfg.coalesce_after,
                cfg.max_records_per_sec,
                now_ms,
            ),
            flows: HashMap::new(),
            by_ends: HashMap::new(),
            excluded: HashSet::new(),
            untracked: HashSet::new(),
            closed_recently: HashMap::new(),
            listening: HashSet::new(),
            recent: Recent::default(),
            names: HashMap::new(),
            users: HashMap::new(),
            saved,
            generation: 0,
            last_dump_ms: now_ms,
            deferred: Vec::new(),
            full: GapCount::default(),
            lost: GapCount::default(),
            packets_lost: GapCount::default(),
            next_gap_ms: now_ms + summary_ms,
            stats: Stats::default(),
        }
    }

    /// Flows tracked now.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    fn flow_id(&self, cookie: u64) -> String {
        format!("{}-{cookie:016x}", self.boot_id)
    }

    fn user(&mut self, procs: &mut dyn ProcessTable, uid: u32) -> String {
        self.users
            .entry(uid)
            .or_insert_with(|| procs.user_name(uid))
            .clone()
    }

    fn direction(&self, s: &Socket) -> &'static str {
        if s.state == "listen" {
            return "listening";
        }
        if s.remote.is_none() {
            return "unknown";
        }
        let ip = canonical(s.local.ip());
        let port = s.local.port();
        if s.protocol == Protocol::Tcp
            && (self.listening.contains(&(Some(ip), port))
                || self.listening.contains(&(None, port)))
        {
            "inbound"
        } else {
            "outbound"
        }
    }

    /// A full dump of the sockets now.
    pub fn dump(
        &mut self,
        sockets: Vec<Socket>,
        procs: &mut dyn ProcessTable,
        now_ms: i64,
        out: &mut Vec<Rec>,
    ) {
        self.generation += 1;
        let generation = self.generation;
        self.listening = sockets
            .iter()
            .filter(|s| s.protocol == Protocol::Tcp && s.state == "listen")
            .map(|s| {
                let ip = canonical(s.local.ip());
                ((!ip.is_unspecified()).then_some(ip), s.local.port())
            })
            .collect();
        // Owners of the sockets not known yet, in one look.
        let new_inodes: Vec<u64> = sockets
            .iter()
            .filter(|s| {
                !self.flows.contains_key(&s.cookie)
                    && !self.excluded.contains(&s.cookie)
                    && !self.untracked.contains(&s.cookie)
                    && s.inode != 0
                    && !transient(s.state)
            })
            .map(|s| s.inode)
            .chain(
                // Flows waiting for their owner, by the socket's inode now
                // (an accepted connection still in the listener's queue
                // had none at its first dump).
                sockets
                    .iter()
                    .filter(|s| {
                        s.inode != 0
                            && self
                                .flows
                                .get(&s.cookie)
                                .is_some_and(|f| f.pending_until.is_some())
                    })
                    .map(|s| s.inode),
            )
            .collect();
        let owners = if new_inodes.is_empty() {
            HashMap::new()
        } else {
            procs.owners(&new_inodes)
        };
        let mut present = HashSet::with_capacity(sockets.len());
        for s in sockets {
            present.insert(s.cookie);
            if self.flows.contains_key(&s.cookie) {
                self.seen_again(s, &owners, now_ms, out);
            } else if !self.excluded.contains(&s.cookie)
                && !self.untracked.contains(&s.cookie)
                && !transient(s.state)
            {
                let owner = owners.get(&s.inode);
                self.first_seen(s, owner, procs, now_ms, out);
            }
        }
        // Gone from the dump: remembered as closed for a while, so a late
        // destroy notification is not recorded as a flow never dumped
        // (where a process exclusion could no longer match).
        let closed_recently = &mut self.closed_recently;
        for set in [&mut self.excluded, &mut self.untracked] {
            set.retain(|c| {
                let here = present.contains(c);
                if !here {
                    closed_recently.insert(*c, now_ms);
                }
                here
            });
        }
        // Gone without a notification: closed at the second dump missing.
        let gone: Vec<u64> = self
            .flows
            .iter_mut()
            .filter(|(_, f)| f.seen != generation)
            .filter_map(|(c, f)| {
                if f.missing {
                    Some(*c)
                } else {
                    f.missing = true;
                    None
                }
            })
            .collect();
        for cookie in gone {
            if let Some(f) = self.remove(cookie, now_ms) {
                let end = f.last_seen_ms;
                self.close(f, None, "last_dump", end, now_ms, out);
            }
        }
        // The previous run's flows not here any more ended meanwhile.
        for (flow_id, s) in std::mem::take(&mut self.saved) {
            self.ended_while_stopped(flow_id, s, now_ms, out);
        }
        let recent = now_ms - self.summary_ms;
        self.recent.prune(recent);
        let listeners = self
            .flows
            .values()
            .filter(|f| f.listening && f.attribution == "socket")
            .filter_map(|f| Some((f.local.port(), f.process.clone()?)))
            .collect();
        self.recent.set_listeners(listeners);
        let live = self
            .recent
            .processes()
            .into_iter()
            .filter(|(pid, _)| procs.alive(*pid))
            .collect();
        self.recent.set_live(live);
        self.closed_recently
            .retain(|_, at| *at >= now_ms - REMEMBER_CLOSED_MS);
        // Closed sockets not inferred at their close: now that this dump
        // told the listeners and peers, a last try (then uid, or nothing).
        for (s, closed_ms, start_ms) in std::mem::take(&mut self.deferred) {
            self.closed_unseen(s, procs, closed_ms, start_ms, false, out);
        }
        self.last_dump_ms = now_ms;
    }

    fn seen_again(
        &mut self,
        s: Socket,
        owners: &HashMap<u64, Owner>,
        now_ms: i64,
        out: &mut Vec<Rec>,
    ) {
        let generation = self.generation;
        let update_ms = self.update_ms;
        let Some(f) = self.flows.get_mut(&s.cookie) else {
            return;
        };
        if f.inode == 0 {
            f.inode = s.inode;
        }
        if let Some(until) = f.pending_until {
            if let Some(o) = owners.get(&f.inode) {
                f.process = Some(process_ref(o));
                f.attribution = "socket";
                f.counters = s.counters.unwrap_or(f.counters);
                f.seen = generation;
                f.missing = false;
                f.last_seen_ms = now_ms;
                f.state = s.state;
                if self
                    .exclude
                    .excluded(&s, Some((o.name.as_str(), o.exe.as_str())))
                {
                    // Through `remove`: its ends' index entry goes too.
                    self.remove(s.cookie, now_ms);
                    self.excluded.insert(s.cookie);
                    self.stats.excluded += 1;
                    return;
                }
                self.announce(s.cookie, now_ms, out);
                return;
            }
            if now_ms >= until {
                self.owner_not_found(s.cookie);
                self.announce(s.cookie, now_ms, out);
            }
        }
        let Some(f) = self.flows.get_mut(&s.cookie) else {
            return;
        };
        f.seen = generation;
        f.missing = false;
        f.last_seen_ms = now_ms;
        f.state = s.state;
        if let Some(c) = s.counters {
            f.counters = c;
        }
        if let (Some(p), Some(r)) = (&f.process, f.remote)
            && f.attribution == "socket"
        {
            self.recent.saw(canonical_addr(r), p, now_ms);
        }
        if s.state == "time_wait" {
            if let Some(f) = self.remove(s.cookie, now_ms) {
                self.close(f, None, "last_dump", now_ms, now_ms, out);
            }
            return;
        }
        let f = match self.flows.get_mut(&s.cookie) {
            Some(f) => f,
            None => return,
        };
        if let Some(key) = f.coalesced.clone() {
            if delta(f.counters, f.recorded) != Counters::default() {
                summarise(&mut self.coalesce, &key, f, false, now_ms);
                f.recorded = f.counters;
            }
            return;
        }
        if f.pending_until.is_none() && !f.listening && now_ms - f.last_record_ms >= update_ms {
            let rec = self.record(s.cookie, "update", now_ms);
            out.extend(rec);
        }
    }

    fn first_seen(
        &mut self,
        s: Socket,
        owner: Option<&Owner>,
        procs: &mut dyn ProcessTable,
        now_ms: i64,
        out: &mut Vec<Rec>,
    ) {
        if self
            .exclude
            .excluded(&s, owner.map(|o| (o.name.as_str(), o.exe.as_str())))
        {
            self.excluded.insert(s.cookie);
            self.stats.excluded += 1;
            return;
        }
        if self.flows.len() >= self.max_flows {
            self.untracked.insert(s.cookie);
            self.full.add(1, now_ms);
            self.stats.table_full += 1;
            return;
        }
        let (process, attribution) = match owner {
            Some(o) => (Some(process_ref(o)), "socket"),
            None => {
                let user = self.user(procs, s.uid);
                (Some(uid_ref(s.uid, user)), "uid")
            }
        };
        let flow_id = self.flow_id(s.cookie);
        let saved = self.saved.remove(&flow_id);
        let listening = s.state == "listen";
        let direction = self.direction(&s);
        // A UDP flow the kernel does not count continues from the totals
        // its packets had reached (else its deltas would stay 0 until the
        // new count passed the old total, and that traffic be lost).
        let counters = s.counters.or(saved.map(|v| v.totals)).unwrap_or_default();
        let remote_name = s
            .remote
            .and_then(|r| self.names.get(&canonical(r.ip())).cloned())
            .unwrap_or_default();
        let f = Flow {
            protocol: s.protocol,
            local: s.local,
            remote: s.remote,
            state: s.state,
            uid: s.uid,
            flow_id,
            process,
            attribution,
            direction,
            start_ms: saved.map(|v| v.start_ms).unwrap_or(now_ms),
            last_seen_ms: now_ms,
            counters,
            source: match (s.counters, saved) {
                (Some(_), _) => "tcp_info",
                (None, Some(v)) if v.totals != Counters::default() => "packets",
                _ => "none",
            },
            recorded: saved.map(|v| v.totals).unwrap_or_default(),
            last_record_ms: now_ms,
            coalesced: None,
            persisted: saved.filter(|v| v.coalesced).map(|v| v.totals),
            listening,
            continued: saved.is_some(),
            info_hashes: Vec::new(),
            remote_name,
            seen: self.generation,
            missing: false,
            inode: s.inode,
            // No owner yet: wait for it (inode 0: an accepted connection
            // not yet taken from its listener's queue, found at a later
            // dump), then infer it.
            // TCP with inode 0 and outbound: an orphan (its process closed
            // it, the kernel finishes it), inferred after the wait too.
            pending_until: (owner.is_none()
                && (s.inode != 0 || s.protocol == Protocol::Tcp && !listening))
                .then_some(now_ms + OWNER_WAIT_MS),
        };
        if let (Some(p), Some(r)) = (&f.process, f.remote)
            && attribution == "socket"
        {
            self.recent.saw(canonical_addr(r), p, now_ms);
        }
        let cookie = s.cookie;
        let pending = f.pending_until.is_some();
        self.insert(cookie, f);
        if !pending {
            self.announce(cookie, now_ms, out);
        }
    }

    /// A flow's first record: `open` / `listen_open` (`update` with
    /// `continued` for a flow an earlier run recorded), or it joins its
    /// key's summary.
    fn announce(&mut self, cookie: u64, now_ms: i64, out: &mut Vec<Rec>) {
        let Some(f) = self.flows.get_mut(&cookie) else {
            return;
        };
        f.pending_until = None;
        let (continued, listening) = (f.continued, f.listening);
        // Counted in summaries by an earlier run: it goes on there, with
        // what came after the summaries that run wrote.
        let rejoins = continued && f.persisted.is_some();
        if (!continued || rejoins) && !listening {
            let key = key_of(
                f.process.as_ref(),
                f.uid,
                f.remote,
                f.protocol,
                inbound_port(f),
            );
            if rejoins || self.coalesce.admit(&key, now_ms) == Admit::Coalesced {
                if !rejoins || f.counters != f.recorded {
                    summarise(&mut self.coalesce, &key, f, !rejoins, now_ms);
                }
                f.recorded = f.counters;
                f.coalesced = Some(key.clone());
                f.continued = false;
                self.stats.coalesced += u64::from(!rejoins);
                return;
            }
        }
        let phase = match (continued, listening) {
            // A listening socket recorded by the previous run: nothing new.
            (true, true) => return,
            (true, false) => "update",
            (false, true) => "listen_open",
            (false, false) => "open",
        };
        self.stats.opened += u64::from(phase == "open");
        let rec = self.record(cookie, phase, now_ms);
        out.extend(rec);
    }

    fn insert(&mut self, cookie: u64, f: Flow) {
        self.by_ends.insert(
            (
                f.protocol,
                canonical_addr(f.local),
                f.remote.map(canonical_addr),
            ),
            cookie,
        );
        self.flows.insert(cookie, f);
    }

    fn remove(&mut self, cookie: u64, now_ms: i64) -> Option<Flow> {
        let f = self.flows.remove(&cookie)?;
        let k = (
            f.protocol,
            canonical_addr(f.local),
            f.remote.map(canonical_addr),
        );
        if self.by_ends.get(&k) == Some(&cookie) {
            self.by_ends.remove(&k);
        }
        self.closed_recently.insert(cookie, now_ms);
        Some(f)
    }

    /// An individual flow's record with its deltas (and the state change
    /// that goes with it); the flow's recorded totals advance.
    fn record(&mut self, cookie: u64, phase: &str, now_ms: i64) -> Option<Rec> {
        self.coalesce.spend(now_ms);
        let f = self.flows.get_mut(&cookie)?;
        let mut ev = event(f, phase, now_ms);
        f.recorded = f.counters;
        f.last_record_ms = now_ms;
        f.continued = false;
        f.info_hashes.clear();
        let saved = Saved {
            totals: f.counters,
            start_ms: f.start_ms,
            listening: f.listening,
            coalesced: false,
        };
        ev.flow_id = f.flow_id.clone();
        Some(Rec::Net(
            ev,
            Some(StateOp {
                flow_id: f.flow_id.clone(),
                value: Some(saved.encode()),
            }),
        ))
    }

    /// An inspected packet: `inspect` gets its flow's process (when the
    /// table knows the flow) and tells what the packet said; an info_hash
    /// goes on the flow's next record, DNS answers name later flows, and a
    /// UDP flow counts the packet (`counters = "packets"`).
    pub fn packet(
        &mut self,
        p: &Packet,
        inspect: impl FnOnce(Option<&ProcessRef>) -> super::super::p2p::PacketFacts,
    ) {
        let (local, remote) = if p.outgoing {
            (p.at.src, p.at.dst)
        } else {
            (p.at.dst, p.at.src)
        };
        let (local, remote) = (canonical_addr(local), canonical_addr(remote));
        let wildcard = |a: SocketAddr| -> SocketAddr {
            let any: IpAddr = if a.is_ipv4() {
                std::net::Ipv4Addr::UNSPECIFIED.into()
            } else {
                std::net::Ipv6Addr::UNSPECIFIED.into()
            };
            SocketAddr::new(any, a.port())
        };
        let cookie = [
            (local, Some(remote)),
            (local, None),
            (wildcard(local), None),
        ]
        .iter()
        .find_map(|(l, r)| self.by_ends.get(&(p.at.protocol, *l, *r)).copied());
        let flow = cookie.and_then(|c| self.flows.get_mut(&c));
        let facts = inspect(flow.as_ref().and_then(|f| f.process.as_ref()));
        if let Some(f) = flow {
            if let Some(h) = facts.info_hash.clone()
                && !f.info_hashes.contains(&h)
            {
                f.info_hashes.push(h);
            }
            if f.protocol == Protocol::Udp && f.source != "tcp_info" {
                f.source = "packets";
                let c = &mut f.counters;
                if p.outgoing {
                    c.bytes_out += u64::from(p.wire_len);
                    c.packets_out += 1;
                } else {
                    c.bytes_in += u64::from(p.wire_len);
                    c.packets_in += 1;
                }
            }
        }
        for (ip, name) in facts.dns {
            if self.names.len() >= MAX_NAMES {
                self.names.clear();
            }
            self.names.insert(canonical(ip), name);
        }
    }
}
