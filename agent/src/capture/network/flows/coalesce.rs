//! Bounding what is written: beyond `network.coalesce_after` flows of one
//! process to one remote ip:port (and protocol; for inbound flows, from one
//! client IP to one local port) within a
//! `network.summary_secs` interval, the further flows of that interval get
//! no records of their own: they are counted in one `summary` record per
//! key and interval (`connections` = flows of the key that started in the
//! interval, bytes = their deltas in it). Over `network.max_records_per_sec`
//! (a token bucket), new flows are coalesced the same way whatever their
//! count.

use std::collections::HashMap;
use std::net::SocketAddr;

use kiroku_proto::{NetworkEvent, ProcessRef};

use super::super::platform::Protocol;

/// What flows are coalesced by: the process (pid and start, or only the
/// uid when no process is known), the remote and the protocol. An inbound
/// flow is keyed by the client's address without its port (each client
/// connection comes from another ephemeral port) and the local port it
/// reached: a client hammering a service is one key, not one per
/// connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub pid: u32,
    pub started_ms: i64,
    pub uid: u32,
    pub remote: Option<SocketAddr>,
    pub protocol: Protocol,
    /// The local port of an inbound flow; 0 for the others.
    pub inbound_port: u16,
}

/// One summary being accumulated.
#[derive(Debug, Clone)]
struct Bucket {
    ev: NetworkEvent,
}

/// Records per second, with a burst of one second's worth.
#[derive(Debug)]
struct Rate {
    per_sec: f64,
    tokens: f64,
    at_ms: i64,
}

impl Rate {
    fn refill(&mut self, now_ms: i64) {
        let dt = (now_ms - self.at_ms).max(0) as f64 / 1000.0;
        self.tokens = (self.tokens + dt * self.per_sec).min(self.per_sec);
        self.at_ms = now_ms;
    }
}

pub struct Coalescer {
    summary_ms: i64,
    after: u32,
    /// Start of the current interval.
    interval: i64,
    /// Flows started per key in the current interval.
    started: HashMap<Key, u32>,
    buckets: HashMap<Key, Bucket>,
    rate: Rate,
    /// Flows coalesced because of the rate limit (for the log).
    pub rate_limited: u64,
}

/// What a new flow becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Records of its own.
    Individual,
    /// Counted in its key's summary.
    Coalesced,
}

impl Coalescer {
    pub fn new(summary_secs: u64, after: u32, max_records_per_sec: u32, now_ms: i64) -> Coalescer {
        let summary_ms = (summary_secs.max(1) * 1000) as i64;
        let per_sec = f64::from(max_records_per_sec.max(1));
        Coalescer {
            summary_ms,
            after,
            interval: now_ms - now_ms.rem_euclid(summary_ms),
            started: HashMap::new(),
            buckets: HashMap::new(),
            rate: Rate {
                per_sec,
                tokens: per_sec,
                at_ms: now_ms,
            },
            rate_limited: 0,
        }
    }

    /// Decides for a flow starting now. `individual_records` is how many
    /// records an individual flow costs right away (1: its open or close).
    pub fn admit(&mut self, key: &Key, now_ms: i64) -> Admit {
        let n = self.started.entry(key.clone()).or_insert(0);
        *n += 1;
        if *n > self.after {
            return Admit::Coalesced;
        }
        self.rate.refill(now_ms);
        if self.rate.tokens < 1.0 {
            self.rate_limited += 1;
            return Admit::Coalesced;
        }
        Admit::Individual
    }

    /// A record written outside a summary (open, update, close, listen):
    /// takes a token (may go below zero: records of flows already open are
    /// never refused, new flows are coalesced until it refills).
    pub fn spend(&mut self, now_ms: i64) {
        self.rate.refill(now_ms);
        self.rate.tokens -= 1.0;
    }

    /// Adds a coalesced flow's traffic (and, `started`, the flow itself) to
    /// its key's summary of the current interval. `template` describes the
    /// flow (process, remote, protocol, direction, counters source).
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        key: &Key,
        template: &NetworkEvent,
        started: bool,
        bytes_out: u64,
        bytes_in: u64,
        packets_out: u64,
        packets_in: u64,
        now_ms: i64,
    ) {
        let b = self.buckets.entry(key.clone()).or_insert_with(|| Bucket {
            ev: NetworkEvent {
                phase: "summary".into(),
                protocol: template.protocol.clone(),
                direction: template.direction.clone(),
                remote_ip: template.remote_ip.clone(),
                remote_port: template.remote_port,
                // The service an inbound summary's connections reached
                // (an outbound one's local ports are many: none).
                local_port: u32::from(key.inbound_port),
                remote_name: template.remote_name.clone(),
                name_source: template.name_source.clone(),
                process: template.process.clone(),
                attribution: template.attribution.clone(),
                start_ms: now_ms,
                end_ms: now_ms,
                counters: template.counters.clone(),
                ..Default::default()
            },
        });
        let ev = &mut b.ev;
        if started {
            ev.connections += 1;
        }
        ev.bytes_out += bytes_out;
        ev.bytes_in += bytes_in;
        ev.packets_out += packets_out;
        ev.packets_in += packets_in;
        ev.bytes_out_delta += bytes_out;
        ev.bytes_in_delta += bytes_in;
        ev.end_ms = ev.end_ms.max(now_ms);
        if ev.counters != template.counters && !template.counters.is_empty() {
            // Mixed sources in one summary: say the weakest.
            if ev.counters.is_empty() || template.counters == "none" {
                ev.counters = template.counters.clone();
            }
        }
        for h in &template.info_hashes {
            if !ev.info_hashes.contains(h) {
                ev.info_hashes.push(h.clone());
            }
        }
    }

    /// At an interval's end (or `force`: the capture stops), the summaries
    /// of the interval; a new interval starts.
    pub fn due(&mut self, now_ms: i64, force: bool) -> Vec<NetworkEvent> {
        if !force && now_ms < self.interval + self.summary_ms {
            return Vec::new();
        }
        self.interval = now_ms - now_ms.rem_euclid(self.summary_ms);
        self.started.clear();
        let mut out: Vec<NetworkEvent> = self
            .buckets
            .drain()
            .map(|(_, b)| b.ev)
            .filter(|e| e.connections > 0 || e.bytes_out > 0 || e.bytes_in > 0)
            .collect();
        out.sort_by_key(|e| e.start_ms);
        out
    }

    /// Keys with a summary in progress.
    pub fn pending(&self) -> usize {
        self.buckets.len()
    }

    /// The summaries in progress: the earliest one's start and the flows
    /// they count; None when there are none.
    pub fn unwritten(&self) -> Option<(i64, u64)> {
        let first = self.buckets.values().map(|b| b.ev.start_ms).min()?;
        let flows = self.buckets.values().map(|b| b.ev.connections).sum();
        Some((first, flows))
    }
}

/// The coalescing key of a flow; `inbound_port`: the local port of an
/// inbound flow.
pub fn key_of(
    process: Option<&ProcessRef>,
    uid: u32,
    remote: Option<SocketAddr>,
    protocol: Protocol,
    inbound_port: Option<u16>,
) -> Key {
    Key {
        pid: process.map(|p| p.pid).unwrap_or(0),
        started_ms: process.map(|p| p.started_ms).unwrap_or(0),
        uid: process.map(|p| p.uid).unwrap_or(uid),
        remote: match inbound_port {
            Some(_) => remote.map(|r| SocketAddr::new(r.ip(), 0)),
            None => remote,
        },
        protocol,
        inbound_port: inbound_port.unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16) -> Key {
        key_of(
            None,
            1000,
            Some(SocketAddr::from(([192, 0, 2, 1], port))),
            Protocol::Tcp,
            None,
        )
    }

    #[test]
    fn beyond_coalesce_after_flows_are_summarised_per_interval() {
        let mut c = Coalescer::new(60, 2, 1000, 60_000);
        let k = key(443);
        let admitted: Vec<Admit> = (0..5).map(|_| c.admit(&k, 60_100)).collect();
        assert_eq!(
            admitted,
            [
                Admit::Individual,
                Admit::Individual,
                Admit::Coalesced,
                Admit::Coalesced,
                Admit::Coalesced
            ]
        );
        // Another key has its own count.
        assert_eq!(c.admit(&key(80), 60_100), Admit::Individual);
        let t = NetworkEvent {
            protocol: "tcp".into(),
            counters: "tcp_info".into(),
            ..Default::default()
        };
        for _ in 0..3 {
            c.add(&k, &t, true, 100, 10, 1, 1, 60_200);
        }
        // A later delta of one of them, no new flow.
        c.add(&k, &t, false, 5, 0, 1, 0, 70_000);
        assert!(c.due(119_999, false).is_empty());
        let s = c.due(120_000, false);
        assert_eq!(s.len(), 1);
        assert_eq!(
            (s[0].connections, s[0].bytes_out, s[0].bytes_in),
            (3, 305, 30)
        );
        assert_eq!(
            (s[0].bytes_out_delta, s[0].start_ms, s[0].end_ms),
            (305, 60_200, 70_000)
        );
        assert_eq!(s[0].phase, "summary");
        // The next interval counts again from zero.
        assert_eq!(c.admit(&k, 120_100), Admit::Individual);
    }

    #[test]
    fn over_the_rate_new_flows_are_coalesced() {
        let mut c = Coalescer::new(60, 1000, 10, 0);
        let mut individual = 0;
        for i in 0..100u16 {
            if c.admit(&key(i), 500) == Admit::Individual {
                individual += 1;
                c.spend(500);
            }
        }
        assert_eq!(individual, 10);
        assert_eq!(c.rate_limited, 90);
        // A second later the bucket has refilled.
        assert_eq!(c.admit(&key(9999), 1_500), Admit::Individual);
    }
}
