//! Issue 21: network and P2P records in the index, and the search filters
//! 50–59 over them.
//!
//! A `NetworkEvent` (one flow's open / update / close, a listening
//! socket's open / close, or a summary of coalesced short flows) and a
//! `P2pEvent` (a P2P episode's detected / update / ended) are found by:
//!
//! - `--process`: the owning process's name (comm), its executable path,
//!   the executable's file name, or its pid — all one exact field, lower
//!   case;
//! - `--remote-ip` (address or CIDR, like `--client-ip`): the flow's peer;
//!   for an episode every sampled peer;
//! - `--port`: the local or the remote port (an episode: its sampled
//!   peers' ports);
//! - `--min-bytes`: bytes in + out, the record's totals (an episode: its
//!   volume so far), a column;
//! - `--min-duration`: how long the flow lasted as of the record (end, or
//!   for an open flow the record's time, minus start; an episode: last
//!   minus first), a column;
//! - `--protocol`, `--net-direction`, `--net-phase`, `--p2p-reason`,
//!   `--info-hash`: exact words (the vocabulary is
//!   `kiroku_common::vocabulary::network`, which checks them);
//! - `--user`: the process's user as well as the record's;
//! - `--text`: the command line, the remote's name, the reasons' details
//!   and the trackers.
//!
//! Two more columns, the deltas out and in since the flow's previous
//! record, are what sums over a time range add up (a flow's records'
//! deltas sum to its totals); `kiroku stats` reads their sum as the
//! grouping's bytes (`index/stats.rs`, the `size` column).

use std::net::{IpAddr, SocketAddr};
use std::ops::Bound;

use kiroku_common::search::{as_v6, ip_range};
use kiroku_common::vocabulary::network as vocab;
use kiroku_proto::{NetworkEvent, P2pEvent, ProcessRef, SearchRequest};
use tantivy::query::{Query, RangeQuery, TermQuery};
use tantivy::schema::{FAST, Field, INDEXED, IndexRecordOption, STRING};
use tantivy::{TantivyDocument, Term};

use super::IndexError;
use super::schema::{FieldSource, Fields};

/// The fields of network and P2P records.
#[derive(Clone, Copy)]
pub(super) struct NetworkFields {
    process: Field,
    remote_ip: Field,
    port: Field,
    bytes: Field,
    duration_ms: Field,
    bytes_out_delta: Field,
    bytes_in_delta: Field,
    protocol: Field,
    direction: Field,
    phase: Field,
    p2p_reason: Field,
    info_hash: Field,
    remote_name: Field,
}

/// Adds the fields to the schema.
pub(super) fn schema_fields(b: &mut FieldSource<'_>) -> NetworkFields {
    NetworkFields {
        process: b.add_text_field("net_process", STRING),
        remote_ip: b.add_ip_addr_field("net_remote_ip", INDEXED),
        port: b.add_u64_field("net_port", INDEXED),
        bytes: b.add_u64_field("net_bytes", INDEXED | FAST),
        duration_ms: b.add_u64_field("net_duration_ms", INDEXED | FAST),
        bytes_out_delta: b.add_u64_field("net_bytes_out_delta", FAST),
        bytes_in_delta: b.add_u64_field("net_bytes_in_delta", FAST),
        protocol: b.add_text_field("net_protocol", STRING),
        direction: b.add_text_field("net_direction", STRING),
        phase: b.add_text_field("net_phase", STRING),
        p2p_reason: b.add_text_field("p2p_reason", STRING),
        info_hash: b.add_text_field("info_hash", STRING),
        remote_name: b.add_text_field("net_remote_name", STRING),
    }
}

fn text(d: &mut TantivyDocument, field: Field, v: &str) {
    let v = v.trim();
    if !v.is_empty() {
        d.add_text(field, v.to_lowercase());
    }
}

/// The process's values in `net_process` (name, exe, the exe's file
/// name, pid) and its user in `user`; its command line in the words.
fn add_process(f: &Fields, d: &mut TantivyDocument, p: &ProcessRef) {
    let n = &f.net;
    text(d, n.process, &p.name);
    text(d, n.process, &p.exe);
    if let Some(file) = p.exe.rsplit('/').next().filter(|s| *s != p.exe) {
        text(d, n.process, file);
    }
    if p.pid != 0 {
        d.add_text(n.process, p.pid.to_string());
    }
    text(d, f.user, &p.user);
    if !p.cmdline.trim().is_empty() {
        d.add_text(f.body, &p.cmdline);
    }
}

/// How long a network record's flow lasted as of the record, in ms: its
/// end (or, while it is open, the record's own time) minus its start;
/// none when the start is not known.
pub fn flow_duration_ms(n: &NetworkEvent, observed_at_ms: i64) -> Option<u64> {
    if n.start_ms <= 0 {
        return None;
    }
    let end = if n.end_ms > 0 {
        n.end_ms
    } else {
        observed_at_ms
    };
    u64::try_from(end.saturating_sub(n.start_ms)).ok()
}

/// The bytes a network record adds to a sum over time: its deltas in and
/// out (saturating: they come from agents).
pub fn delta_bytes(n: &NetworkEvent) -> u64 {
    n.bytes_out_delta.saturating_add(n.bytes_in_delta)
}

/// The port a flow is grouped by (`kiroku stats --by port`): the service
/// side's — the remote port of an outbound flow, the local port of an
/// inbound flow or a listening socket; otherwise the remote port when
/// there is one, else the local port.
pub fn service_port(n: &NetworkEvent) -> u32 {
    match n.direction.as_str() {
        "inbound" | "listening" => n.local_port,
        _ if n.remote_port != 0 => n.remote_port,
        _ => n.local_port,
    }
}

/// The fields of a network record.
pub(super) fn add_network(
    f: &Fields,
    d: &mut TantivyDocument,
    observed_at_ms: i64,
    n: &NetworkEvent,
) {
    let x = &f.net;
    d.add_text(f.kind, "network");
    if let Some(p) = &n.process {
        add_process(f, d, p);
    }
    if let Ok(ip) = n.remote_ip.trim().parse::<IpAddr>() {
        d.add_ip_addr(x.remote_ip, as_v6(ip));
    }
    let mut ports = vec![n.local_port, n.remote_port];
    ports.sort_unstable();
    ports.dedup();
    for p in ports.into_iter().filter(|p| *p != 0) {
        d.add_u64(x.port, u64::from(p));
    }
    d.add_u64(x.bytes, n.bytes_out.saturating_add(n.bytes_in));
    if let Some(ms) = flow_duration_ms(n, observed_at_ms) {
        d.add_u64(x.duration_ms, ms);
    }
    d.add_u64(x.bytes_out_delta, n.bytes_out_delta);
    d.add_u64(x.bytes_in_delta, n.bytes_in_delta);
    text(d, x.protocol, &n.protocol);
    text(d, x.direction, &n.direction);
    text(d, x.phase, &n.phase);
    for h in &n.info_hashes {
        text(d, x.info_hash, h);
    }
    text(d, x.remote_name, &n.remote_name);
    if !n.remote_name.trim().is_empty() {
        d.add_text(f.body, &n.remote_name);
    }
}

/// The fields of a P2P episode record.
pub(super) fn add_p2p(f: &Fields, d: &mut TantivyDocument, p: &P2pEvent) {
    let x = &f.net;
    d.add_text(f.kind, "p2p");
    if let Some(proc) = &p.process {
        add_process(f, d, proc);
    }
    let mut ips = Vec::new();
    let mut ports = Vec::new();
    for s in &p.sample_peers {
        if let Ok(a) = s.trim().parse::<SocketAddr>() {
            ips.push(as_v6(a.ip()));
            ports.push(a.port());
        } else if let Ok(ip) = s.trim().parse::<IpAddr>() {
            ips.push(as_v6(ip));
        }
    }
    ips.sort_unstable();
    ips.dedup();
    ports.sort_unstable();
    ports.dedup();
    for ip in ips {
        d.add_ip_addr(x.remote_ip, ip);
    }
    for port in ports.into_iter().filter(|p| *p != 0) {
        d.add_u64(x.port, u64::from(port));
    }
    d.add_u64(x.bytes, p.bytes_out.saturating_add(p.bytes_in));
    if p.first_ms > 0 && p.last_ms >= p.first_ms {
        d.add_u64(x.duration_ms, (p.last_ms - p.first_ms) as u64);
    }
    text(d, x.phase, &p.phase);
    let mut reasons: Vec<String> = p
        .reasons
        .iter()
        .map(|r| r.code.trim().to_lowercase())
        .collect();
    reasons.sort_unstable();
    reasons.dedup();
    for r in reasons.iter().filter(|r| !r.is_empty()) {
        d.add_text(x.p2p_reason, r);
    }
    for r in &p.reasons {
        if !r.detail.trim().is_empty() {
            d.add_text(f.body, &r.detail);
        }
    }
    for h in &p.info_hashes {
        text(d, x.info_hash, h);
    }
    for t in &p.trackers {
        d.add_text(f.body, t);
    }
}

fn bad(field: &'static str, message: String) -> IndexError {
    IndexError::BadQuery { field, message }
}

/// The conditions of `r` on these fields (filters 50–59), each a query
/// that must match; a value that cannot be right is refused naming its
/// field and what to write.
pub(super) fn queries(f: &Fields, r: &SearchRequest) -> Result<Vec<Box<dyn Query>>, IndexError> {
    let x = &f.net;
    let mut must: Vec<Box<dyn Query>> = Vec::new();
    let term = |field: Field, v: &str| -> Box<dyn Query> {
        Box::new(TermQuery::new(
            Term::from_field_text(field, v),
            IndexRecordOption::Basic,
        ))
    };
    if !r.process.trim().is_empty() {
        must.push(term(x.process, &r.process.trim().to_lowercase()));
    }
    if !r.remote_ip.trim().is_empty() {
        let (lo, hi) = ip_range(&r.remote_ip).map_err(|m| bad("remote_ip", m))?;
        must.push(Box::new(RangeQuery::new(
            Bound::Included(Term::from_field_ip_addr(x.remote_ip, lo)),
            Bound::Included(Term::from_field_ip_addr(x.remote_ip, hi)),
        )));
    }
    if r.port != 0 {
        if r.port > u32::from(u16::MAX) {
            return Err(bad(
                "port",
                format!("{} is not a port: use 1 to 65535", r.port),
            ));
        }
        must.push(Box::new(TermQuery::new(
            Term::from_field_u64(x.port, u64::from(r.port)),
            IndexRecordOption::Basic,
        )));
    }
    for (field, min) in [(x.bytes, r.min_bytes), (x.duration_ms, r.min_duration_ms)] {
        if min != 0 {
            must.push(Box::new(RangeQuery::new(
                Bound::Included(Term::from_field_u64(field, min)),
                Bound::Unbounded,
            )));
        }
    }
    type Check = fn(&str) -> Result<String, String>;
    let words: [(&'static str, &String, Field, Check); 5] = [
        ("protocol", &r.protocol, x.protocol, vocab::protocol),
        ("p2p_reason", &r.p2p_reason, x.p2p_reason, vocab::p2p_reason),
        ("info_hash", &r.info_hash, x.info_hash, vocab::info_hash),
        (
            "net_direction",
            &r.net_direction,
            x.direction,
            vocab::direction,
        ),
        ("net_phase", &r.net_phase, x.phase, vocab::phase),
    ];
    for (name, v, field, check) in words {
        if !v.trim().is_empty() {
            let v = check(v).map_err(|m| bad(name, m))?;
            must.push(term(field, &v));
        }
    }
    Ok(must)
}

#[cfg(test)]
mod tests;
