//! The flow table driven by scripted dumps and destroy notifications (the
//! real sock_diag source is tested against real sockets in `linux/`, and
//! the whole capture end to end in tests/tests/network_capture.rs).
//!
//! The shared scripted process table, sockets and record helpers are here;
//! the tests are in `tests/lifecycle.rs` (the life of a flow),
//! `tests/owners.rs` (whose a flow is) and `tests/summaries.rs` (summaries
//! and gap records).

use std::collections::HashMap;

use kiroku_proto::{GapEvent, NetworkEvent};

use super::super::config::NetworkConfig;
use super::super::platform::{Counters, Owner, ProcessTable, Protocol, Socket};
use super::{Excluder, FlowTable, Rec, Saved};

mod lifecycle;
mod owners;
mod summaries;

struct Procs(HashMap<u64, Owner>);

impl ProcessTable for Procs {
    fn owners(&mut self, inodes: &[u64]) -> HashMap<u64, Owner> {
        inodes
            .iter()
            .filter_map(|i| self.0.get(i).map(|o| (*i, o.clone())))
            .collect()
    }
    fn user_name(&mut self, uid: u32) -> String {
        match uid {
            0 => "root".into(),
            65534 => "nobody".into(),
            _ => String::new(),
        }
    }
}

fn owner(pid: u32, name: &str, uid: u32) -> Owner {
    Owner {
        pid,
        name: name.into(),
        exe: format!("/usr/bin/{name}"),
        cmdline: name.into(),
        uid,
        user: if uid == 0 {
            "root".into()
        } else {
            "nobody".into()
        },
        started_ms: 1000 + i64::from(pid),
    }
}

fn procs() -> Procs {
    Procs(HashMap::from([
        (11, owner(100, "curl", 0)),
        (12, owner(200, "nginx", 0)),
        (13, owner(300, "wget", 65534)),
    ]))
}

fn tcp(
    cookie: u64,
    inode: u64,
    local: &str,
    remote: Option<&str>,
    state: &'static str,
    out: u64,
    inn: u64,
) -> Socket {
    Socket {
        protocol: Protocol::Tcp,
        local: local.parse().expect("test value"),
        remote: remote.map(|r| r.parse().expect("test value")),
        state,
        uid: 0,
        inode,
        cookie,
        counters: (state != "listen").then_some(Counters {
            bytes_out: out,
            bytes_in: inn,
            packets_out: out / 100,
            packets_in: inn / 100,
        }),
    }
}

fn cfg() -> NetworkConfig {
    NetworkConfig {
        enabled: true,
        update_secs: 60,
        summary_secs: 60,
        coalesce_after: 1000,
        max_records_per_sec: 10_000,
        ..NetworkConfig::default()
    }
}

fn table(cfg: &NetworkConfig, saved: HashMap<String, Saved>) -> FlowTable {
    FlowTable::new(
        cfg,
        Excluder::with(true, vec![], vec![]),
        "boot".into(),
        saved,
        0,
    )
}

fn nets(out: &[Rec]) -> Vec<&NetworkEvent> {
    out.iter()
        .filter_map(|r| match r {
            Rec::Net(e, _) => Some(e),
            Rec::Gap(_) | Rec::State(_) => None,
        })
        .collect()
}

fn gaps(out: &[Rec]) -> Vec<&GapEvent> {
    out.iter()
        .filter_map(|r| match r {
            Rec::Gap(g) => Some(g),
            Rec::Net(..) | Rec::State(_) => None,
        })
        .collect()
}

/// Applies the records' state changes, as the buffer does.
fn apply_state(out: &[Rec], state: &mut HashMap<String, Saved>) {
    for r in out {
        if let Rec::Net(_, Some(op)) | Rec::State(op) = r {
            match &op.value {
                Some(v) => {
                    state.insert(op.flow_id.clone(), Saved::decode(v).expect("test value"));
                }
                None => {
                    state.remove(&op.flow_id);
                }
            }
        }
    }
}

const CLIENT: &str = "10.0.0.5:40000";
const SERVER: &str = "192.0.2.7:443";
