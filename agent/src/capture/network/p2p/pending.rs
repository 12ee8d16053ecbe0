//! Signs from packets whose socket had no known owner yet. The first
//! packets of a flow — the ones the inspection filter passes, a handshake,
//! an announce — usually arrive before the next socket dump has told the
//! flow table whose socket it is. They wait here (at most `KEEP_MS`, at
//! most `MAX` of them) and are credited to the process of the first
//! records whose socket matches the packet's endpoints, once per process
//! (on loopback both ends are local processes and both are credited).
//!
//! A record claims only what can be its socket's:
//! - not a sign seen before the socket existed (its `start_ms`, less one
//!   dump interval: a socket opens at most one dump before the dump that
//!   first sees it) — the previous client on the same port, or another
//!   connection with the same ends earlier, keep theirs;
//! - not through a TCP listener's record (no remote): the connections it
//!   accepted are sockets of their own with records of their own, which
//!   claim their packets by both ends. A listener on 0.0.0.0:6881 would
//!   otherwise take every sign with port 6881 for `KEEP_MS`, other
//!   processes' included. (An unconnected UDP socket has no remote either
//!   and does claim: its datagrams are its own.)
//!
//! Packets between other hosts (bridged or routed through this one) do not
//! reach the detector: the inspector drops them (`linux/inspect.rs`).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use kiroku_proto::NetworkEvent;

use super::super::platform::{Endpoints, Protocol};
use super::Sign;
use super::process::ProcKey;

const KEEP_MS: i64 = 30_000;
const MAX: usize = 1024;
/// How long before the dump that first saw it a socket may have opened,
/// unless told (`Pending::set_slack_ms`: the dump interval).
const DEFAULT_SLACK_MS: i64 = 1_000;
/// Margin over the dump interval: packets are stamped when the runner
/// reads them, a little after they arrived.
const MARGIN_MS: i64 = 500;

struct Waiting {
    at: Endpoints,
    sign: Sign,
    ms: i64,
    credited: Vec<ProcKey>,
}

pub(super) struct Pending {
    waiting: VecDeque<Waiting>,
    /// Signs dropped because the queue was full (for status / tests).
    pub dropped: u64,
    slack_ms: i64,
}

impl Default for Pending {
    fn default() -> Pending {
        Pending {
            waiting: VecDeque::new(),
            dropped: 0,
            slack_ms: DEFAULT_SLACK_MS + MARGIN_MS,
        }
    }
}

impl Pending {
    /// The socket dump interval: how long before its first record's
    /// `start_ms` a socket may have opened.
    pub(super) fn set_slack_ms(&mut self, dump_interval_ms: u64) {
        self.slack_ms = i64::try_from(dump_interval_ms)
            .unwrap_or(i64::MAX / 2)
            .saturating_add(MARGIN_MS);
    }

    pub(super) fn add(&mut self, at: Endpoints, sign: Sign, now_ms: i64) {
        if self.waiting.len() >= MAX {
            self.waiting.pop_front();
            self.dropped += 1;
        }
        self.waiting.push_back(Waiting {
            at,
            sign,
            ms: now_ms,
            credited: Vec::new(),
        });
    }

    pub(super) fn expire(&mut self, now_ms: i64) {
        while self
            .waiting
            .front()
            .is_some_and(|w| w.ms + KEEP_MS < now_ms)
        {
            self.waiting.pop_front();
        }
    }

    /// The waiting signs of `ev`'s socket not yet credited to `key`.
    pub(super) fn claim(&mut self, ev: &NetworkEvent, key: &ProcKey) -> Vec<(Sign, SocketAddr)> {
        if self.waiting.is_empty() {
            return Vec::new();
        }
        let Some(local) = local(ev) else {
            return Vec::new();
        };
        let remote = super::process::remote(ev);
        let proto = match ev.protocol.as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            _ => return Vec::new(),
        };
        if proto == Protocol::Tcp && remote.is_none() {
            // A listener: its accepted connections claim their own signs.
            return Vec::new();
        }
        let since = ev.start_ms.saturating_sub(self.slack_ms);
        let mut out = Vec::new();
        for w in self
            .waiting
            .iter_mut()
            .filter(|w| w.at.protocol == proto && w.ms >= since)
        {
            let Some(peer) = matches(&w.at, local, remote) else {
                continue;
            };
            if !w.credited.contains(key) {
                w.credited.push(key.clone());
                out.push((w.sign.clone(), peer));
            }
        }
        out
    }
}

fn local(ev: &NetworkEvent) -> Option<SocketAddr> {
    let ip: IpAddr = ev.local_ip.parse().ok()?;
    Some(SocketAddr::new(ip, u16::try_from(ev.local_port).ok()?))
}

/// Whether a packet with endpoints `at` belongs to the socket (`local`,
/// `remote`); returns the packet's other endpoint (the peer).
fn matches(at: &Endpoints, local: SocketAddr, remote: Option<SocketAddr>) -> Option<SocketAddr> {
    let same = |e: &SocketAddr| {
        e.port() == local.port() && (local.ip().is_unspecified() || e.ip() == local.ip())
    };
    [(at.src, at.dst), (at.dst, at.src)]
        .into_iter()
        .find(|(mine, other)| same(mine) && remote.is_none_or(|r| r == *other))
        .map(|(_, other)| other)
}
