//! The records of one flow as the table writes them: a flow's fields and
//! counters turned into a `NetworkEvent` (totals and deltas), gap records,
//! and the small helpers the table shares with them.

use kiroku_proto::{GapEvent, NetworkEvent, ProcessRef};
use std::net::SocketAddr;

use super::super::platform::{Counters, Owner, Protocol};
use super::exclude::canonical;
use super::table::{Flow, GapCount};

/// States of sockets that are not flows of their own: TIME_WAIT (the
/// closed connection's remains, same cookie) and SYN_RECV (a request not
/// accepted yet; the accepted socket is the flow).
pub(super) fn transient(state: &str) -> bool {
    matches!(state, "time_wait" | "syn_recv" | "new_syn_recv")
}

pub(super) fn canonical_addr(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical(a.ip()), a.port())
}

pub(super) fn delta(now: Counters, then: Counters) -> Counters {
    Counters {
        bytes_out: now.bytes_out.saturating_sub(then.bytes_out),
        bytes_in: now.bytes_in.saturating_sub(then.bytes_in),
        packets_out: now.packets_out.saturating_sub(then.packets_out),
        packets_in: now.packets_in.saturating_sub(then.packets_in),
    }
}

pub fn process_ref(o: &Owner) -> ProcessRef {
    ProcessRef {
        pid: o.pid,
        name: o.name.clone(),
        exe: o.exe.clone(),
        cmdline: o.cmdline.clone(),
        uid: o.uid,
        user: o.user.clone(),
        started_ms: o.started_ms,
    }
}

pub(super) fn uid_ref(uid: u32, user: String) -> ProcessRef {
    ProcessRef {
        uid,
        user,
        ..Default::default()
    }
}

/// What a flow's summary is made from.
pub(super) fn template(f: &Flow) -> NetworkEvent {
    let mut ev = event(f, "summary", f.last_seen_ms);
    ev.info_hashes = f.info_hashes.clone();
    // An inbound summary stands for one client's connections from many
    // ports: its remote port is none of them.
    if f.direction == "inbound" {
        ev.remote_port = 0;
    }
    ev
}

/// A record of `f` as of now: totals, and deltas since its last record.
pub(super) fn event(f: &Flow, phase: &str, now_ms: i64) -> NetworkEvent {
    let d = delta(f.counters, f.recorded);
    let ends = matches!(phase, "close" | "listen_close");
    NetworkEvent {
        phase: phase.into(),
        protocol: f.protocol.name().into(),
        direction: f.direction.into(),
        local_ip: canonical(f.local.ip()).to_string(),
        local_port: u32::from(f.local.port()),
        remote_ip: f
            .remote
            .map(|r| canonical(r.ip()).to_string())
            .unwrap_or_default(),
        remote_port: f.remote.map(|r| u32::from(r.port())).unwrap_or(0),
        name_source: if f.remote_name.is_empty() {
            String::new()
        } else {
            "dns_answer".into()
        },
        remote_name: f.remote_name.clone(),
        process: f.process.clone(),
        attribution: f.attribution.into(),
        start_ms: f.start_ms,
        end_ms: if ends { now_ms } else { 0 },
        bytes_out: f.counters.bytes_out,
        bytes_in: f.counters.bytes_in,
        packets_out: f.counters.packets_out,
        packets_in: f.counters.packets_in,
        bytes_out_delta: d.bytes_out,
        bytes_in_delta: d.bytes_in,
        counters: if f.listening {
            String::new()
        } else {
            f.source.into()
        },
        connections: u64::from(!f.listening),
        flow_id: f.flow_id.clone(),
        tcp_state: if f.protocol == Protocol::Tcp {
            f.state.into()
        } else {
            String::new()
        },
        continued: f.continued,
        netns: 0,
        info_hashes: f.info_hashes.clone(),
        first: matches!(phase, "open" | "listen_open") && !f.continued,
    }
}

/// The gap record of what `g` counted (and `g` reset), or None: its
/// detail reads "<count> <what> between <first> and <last> (agent clock)
/// <then>".
pub(super) fn take_gap(g: &mut GapCount, reason: &str, what: &str, then: &str) -> Option<GapEvent> {
    if g.count == 0 {
        return None;
    }
    let ev = GapEvent {
        source: "network".into(),
        reason: reason.into(),
        count: g.count,
        first_ms: g.first_ms,
        last_ms: g.last_ms,
        detail: format!(
            "{} {what} between {} and {} (agent clock) {then}",
            g.count,
            kiroku_common::rfc3339_ms(g.first_ms),
            kiroku_common::rfc3339_ms(g.last_ms)
        ),
        ..Default::default()
    };
    *g = GapCount::default();
    Some(ev)
}
