//! Issue 21: network and P2P records for people — their rows in the
//! search table and their lines in `kiroku show`. Every value goes through
//! the caller's escaping (`output.rs`): these functions only choose what
//! is shown.

use kiroku_proto::{Event, NetworkEvent, P2pEvent, ProcessRef, event::Kind};

use super::{count, shorten};
use crate::investigate::human_bytes;
use crate::zone::{Zone, format as time};

pub(super) fn network(e: &Event) -> Option<&NetworkEvent> {
    match &e.kind {
        Some(Kind::Network(n)) => Some(n),
        _ => None,
    }
}

pub(super) fn p2p(e: &Event) -> Option<&P2pEvent> {
    match &e.kind {
        Some(Kind::P2p(p)) => Some(p),
        _ => None,
    }
}

/// "aria2c (pid 4242)", "pid 4242", "" when nothing is known.
fn process_short(p: Option<&ProcessRef>) -> String {
    let Some(p) = p else {
        return String::new();
    };
    let name = if p.name.is_empty() { &p.exe } else { &p.name };
    match (name.is_empty(), p.pid) {
        (true, 0) => String::new(),
        (true, pid) => format!("pid {pid}"),
        (false, 0) => name.clone(),
        (false, pid) => format!("{name} (pid {pid})"),
    }
}

/// "ip:port" with brackets around an IPv6 address.
fn endpoint(ip: &str, port: u32) -> String {
    match (ip.contains(':'), port) {
        (_, 0) => ip.to_owned(),
        (true, p) => format!("[{ip}]:{p}"),
        (false, p) => format!("{ip}:{p}"),
    }
}

/// The peer of a flow (with its name), or where a socket listens.
fn peer(n: &NetworkEvent) -> String {
    if n.remote_ip.is_empty() {
        return format!("on {}", endpoint(&n.local_ip, n.local_port));
    }
    let p = endpoint(&n.remote_ip, n.remote_port);
    if n.remote_name.is_empty() {
        p
    } else {
        format!("{p} ({})", n.remote_name)
    }
}

/// "1 min 5 s" from milliseconds.
fn span(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0 => format!("{} ms", ms.max(0)),
        1..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// The table row of a network record: from = the process, to = the peer,
/// subject = protocol, direction and bytes each way, size = bytes in +
/// out, outcome = the phase.
pub(super) fn network_row(e: &Event, n: &NetworkEvent, host: String, zone: &Zone) -> [String; 9] {
    let mut what = format!(
        "{} {}: {} out, {} in",
        n.protocol,
        n.direction,
        human_bytes(n.bytes_out),
        human_bytes(n.bytes_in)
    );
    if n.connections > 1 {
        what.push_str(&format!(", {}", count(n.connections, "flow", "flows")));
    }
    [
        time(e.observed_at_ms, zone),
        e.event_id.clone(),
        host,
        user(e, n.process.as_ref()),
        shorten(&process_short(n.process.as_ref()), 30),
        shorten(&peer(n), 40),
        shorten(&what, 40),
        human_bytes(n.bytes_out.saturating_add(n.bytes_in)),
        format!("network: {}", n.phase),
    ]
}

/// The table row of a P2P episode record: from = the process, to = the
/// peers, subject = the reasons, size = its volume, outcome = the phase.
pub(super) fn p2p_row(e: &Event, p: &P2pEvent, host: String, zone: &Zone) -> [String; 9] {
    let reasons: Vec<&str> = p.reasons.iter().map(|r| r.code.as_str()).collect();
    let peers = format!(
        "{}: {}",
        count(p.peers, "peer", "peers"),
        p.sample_peers.join(", ")
    );
    [
        time(e.observed_at_ms, zone),
        e.event_id.clone(),
        host,
        user(e, p.process.as_ref()),
        shorten(&process_short(p.process.as_ref()), 30),
        shorten(&peers, 40),
        shorten(&reasons.join(", "), 40),
        human_bytes(p.bytes_out.saturating_add(p.bytes_in)),
        format!("p2p: {}", p.phase),
    ]
}

/// The record's user, else the process's.
fn user(e: &Event, p: Option<&ProcessRef>) -> String {
    if !e.user.is_empty() {
        return e.user.clone();
    }
    p.map(|p| p.user.clone()).unwrap_or_default()
}

/// The process lines of both kinds.
fn process_lines(p: Option<&ProcessRef>, zone: &Zone) -> Vec<(&'static str, String)> {
    let Some(p) = p else {
        return vec![("process", "(not known)".into())];
    };
    let user = match (p.user.is_empty(), p.uid) {
        (true, uid) => format!("uid {uid}"),
        (false, uid) => format!("{} (uid {uid})", p.user),
    };
    vec![
        ("process", process_short(Some(p))),
        ("exe", p.exe.clone()),
        ("command", p.cmdline.clone()),
        ("process user", user),
        (
            "process start",
            if p.started_ms > 0 {
                time(p.started_ms, zone)
            } else {
                String::new()
            },
        ),
    ]
}

/// The detail lines of a network record (key, value; empty values are
/// skipped by the caller).
pub(super) fn network_lines(n: &NetworkEvent, zone: &Zone) -> Vec<(&'static str, String)> {
    let mut v = vec![
        (
            "network",
            format!("{} ({} {})", n.phase, n.protocol, n.direction),
        ),
        ("local", endpoint(&n.local_ip, n.local_port)),
        ("remote", endpoint(&n.remote_ip, n.remote_port)),
        (
            "remote name",
            match n.name_source.as_str() {
                "" => n.remote_name.clone(),
                s => format!("{} (from {})", n.remote_name, s.replace('_', " ")),
            },
        ),
    ];
    v.extend(process_lines(n.process.as_ref(), zone));
    v.push((
        "attribution",
        match n.attribution.as_str() {
            "socket" => "socket (its file descriptor seen)".into(),
            "inferred" => {
                "inferred (closed before a dump: the same uid's process seen with this peer)".into()
            }
            "uid" => "uid only".into(),
            other => other.to_owned(),
        },
    ));
    if n.start_ms > 0 {
        v.push(("started", time(n.start_ms, zone)));
    }
    if n.end_ms > 0 {
        v.push(("ended", time(n.end_ms, zone)));
        if n.start_ms > 0 {
            v.push(("lasted", span(n.end_ms - n.start_ms)));
        }
    }
    v.push((
        "bytes",
        format!(
            "{} out, {} in ({})",
            count(n.bytes_out, "byte", "bytes"),
            count(n.bytes_in, "byte", "bytes"),
            match n.counters.as_str() {
                "tcp_info" => "the kernel's counters",
                "packets" => "counted from packets",
                "none" | "" => "not known for this socket",
                other => other,
            }
        ),
    ));
    if n.packets_out > 0 || n.packets_in > 0 {
        v.push((
            "packets",
            format!("{} out, {} in", n.packets_out, n.packets_in),
        ));
    }
    v.push((
        "since previous",
        format!(
            "{} out, {} in",
            count(n.bytes_out_delta, "byte", "bytes"),
            count(n.bytes_in_delta, "byte", "bytes")
        ),
    ));
    if n.connections > 1 {
        v.push((
            "connections",
            format!("{} coalesced in this summary", n.connections),
        ));
    }
    v.push(("flow id", n.flow_id.clone()));
    v.push(("tcp state", n.tcp_state.clone()));
    if n.continued {
        v.push((
            "continued",
            "yes (recorded by an earlier run of the agent)".into(),
        ));
    }
    if n.netns != 0 {
        v.push(("netns", n.netns.to_string()));
    }
    v.push(("info_hash", n.info_hashes.join(", ")));
    v
}

/// The detail lines of a P2P episode record.
pub(super) fn p2p_lines(e: &Event, p: &P2pEvent, zone: &Zone) -> Vec<(&'static str, String)> {
    let mut v = vec![("p2p", p.phase.clone()), ("episode", p.episode_id.clone())];
    v.extend(process_lines(p.process.as_ref(), zone));
    for r in &p.reasons {
        v.push((
            "reason",
            if r.detail.is_empty() {
                r.code.clone()
            } else {
                format!("{}: {}", r.code, r.detail)
            },
        ));
    }
    v.push((
        "peers",
        format!(
            "{} distinct{}",
            p.peers,
            if p.sample_peers.is_empty() {
                String::new()
            } else {
                format!("; {}", p.sample_peers.join(", "))
            }
        ),
    ));
    v.push((
        "volume",
        format!(
            "{} out, {} in, {}",
            human_bytes(p.bytes_out),
            human_bytes(p.bytes_in),
            count(p.connections, "connection", "connections")
        ),
    ));
    if p.first_ms > 0 {
        v.push((
            "between",
            format!(
                "{} and {} ({})",
                time(p.first_ms, zone),
                time(p.last_ms, zone),
                span(p.last_ms - p.first_ms)
            ),
        ));
    }
    v.push(("info_hash", p.info_hashes.join(", ")));
    v.push(("trackers", p.trackers.join(", ")));
    if let Some(h) = e.host.as_ref().filter(|h| !h.hostname.is_empty()) {
        v.push((
            "see",
            format!(
                "kiroku report network --host {} --from {} --to {}",
                h.hostname,
                kiroku_common::rfc3339_ms(p.first_ms - 3_600_000),
                kiroku_common::rfc3339_ms(p.last_ms.max(p.first_ms) + 3_600_000),
            ),
        ));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiroku_proto::P2pReason;

    #[test]
    fn rows_and_lines_say_who_talked_to_whom_and_how_much() {
        let zone = Zone::utc();
        let proc_ = ProcessRef {
            pid: 4242,
            name: "aria2c".into(),
            exe: "/usr/bin/aria2c".into(),
            uid: 1000,
            user: "alice".into(),
            ..Default::default()
        };
        let n = NetworkEvent {
            phase: "close".into(),
            protocol: "tcp".into(),
            direction: "outbound".into(),
            local_ip: "10.0.0.17".into(),
            local_port: 40001,
            remote_ip: "2001:db8::7".into(),
            remote_port: 51413,
            process: Some(proc_.clone()),
            attribution: "socket".into(),
            start_ms: 1_000,
            end_ms: 301_000,
            bytes_out: 6_000_000,
            bytes_in: 30_000_000,
            bytes_out_delta: 1_000_000,
            counters: "tcp_info".into(),
            connections: 1,
            ..Default::default()
        };
        let e = Event {
            event_id: "vm17/s/3".into(),
            observed_at_ms: 301_000,
            ..Default::default()
        };
        let row = network_row(&e, &n, "vm-17".into(), &zone);
        assert_eq!(row[3], "alice");
        assert_eq!(row[4], "aria2c (pid 4242)");
        assert_eq!(row[5], "[2001:db8::7]:51413");
        assert_eq!(row[6], "tcp outbound: 6.0 MB out, 30.0 MB in");
        assert_eq!(row[7], "36.0 MB");
        assert_eq!(row[8], "network: close");
        let lines = network_lines(&n, &zone);
        let get = |k: &str| {
            lines
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        assert_eq!(get("lasted"), "5 min 0 s");
        assert_eq!(
            get("bytes"),
            "6000000 bytes out, 30000000 bytes in (the kernel's counters)"
        );
        assert_eq!(get("since previous"), "1000000 bytes out, 0 bytes in");
        let listen = NetworkEvent {
            phase: "listen_open".into(),
            local_ip: "0.0.0.0".into(),
            local_port: 22,
            ..Default::default()
        };
        assert_eq!(peer(&listen), "on 0.0.0.0:22");
        let p = P2pEvent {
            phase: "detected".into(),
            process: Some(proc_),
            reasons: vec![P2pReason {
                code: "bt_handshake".into(),
                detail: "handshake to 198.51.100.7:51413".into(),
            }],
            peers: 12,
            sample_peers: vec!["198.51.100.7:51413".into()],
            bytes_out: 1_000,
            bytes_in: 2_000,
            connections: 13,
            first_ms: 1_000,
            last_ms: 61_000,
            ..Default::default()
        };
        let row = p2p_row(&e, &p, "vm-17".into(), &zone);
        assert_eq!(row[5], "12 peers: 198.51.100.7:51413");
        assert_eq!(row[6], "bt_handshake");
        assert_eq!(row[8], "p2p: detected");
        let lines = p2p_lines(&e, &p, &zone);
        assert!(lines.contains(&(
            "reason",
            "bt_handshake: handshake to 198.51.100.7:51413".into()
        )));
        assert!(lines.contains(&("volume", "1.0 KB out, 2.0 KB in, 13 connections".into())));
    }
}
