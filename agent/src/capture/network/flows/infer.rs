//! Who owned a socket that closed before any dump saw it. Linux destroy
//! notifications carry no inode and no uid for such a socket (sock_diag
//! fills neither; the platform contract: `inode == 0` means "never
//! dumped, uid unknown"), so its process is inferred from what the dumps
//! saw recently:
//! - inbound (its local port is a listening port): the listener's owner
//!   (an accepted socket belongs to the process that listens, unless it
//!   hands it on);
//! - outbound: the one process seen with the same remote ip:port within
//!   the last summary interval (several different processes: not
//!   inferred); else the one process seen with the same remote ip (any
//!   port, either direction: a BitTorrent peer that also connected to the
//!   client's listener, a server on several ports);
//!
//! Only processes still running at the last dump are candidates (the
//! socket opened after a process that had exited by then): a P2P client
//! restarted talks to the same peers as the one that just exited.
//!
//! else nothing is known but, when the socket was dumped once, its uid.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use kiroku_proto::ProcessRef;

/// Processes kept per remote (more are "several" anyway).
const PER_REMOTE: usize = 4;

#[derive(Debug, Default)]
pub struct Recent {
    peers: HashMap<SocketAddr, Vec<(ProcessRef, i64)>>,
    /// The same by remote ip only.
    hosts: HashMap<IpAddr, Vec<(ProcessRef, i64)>>,
    listeners: HashMap<u16, ProcessRef>,
    /// Processes (pid, start) still running at the last dump.
    live: HashSet<(u32, i64)>,
}

fn same(a: &ProcessRef, b: &ProcessRef) -> bool {
    a.pid == b.pid && a.started_ms == b.started_ms
}

impl Recent {
    /// `p` was seen talking to `remote` (canonical) at `now_ms`.
    pub fn saw(&mut self, remote: SocketAddr, p: &ProcessRef, now_ms: i64) {
        note(self.peers.entry(remote).or_default(), p, now_ms);
        note(self.hosts.entry(remote.ip()).or_default(), p, now_ms);
    }

    /// Forgets what was seen before `before_ms`.
    pub fn prune(&mut self, before_ms: i64) {
        let keep = |list: &mut Vec<(ProcessRef, i64)>| {
            list.retain(|(_, at)| *at >= before_ms);
            !list.is_empty()
        };
        self.peers.retain(|_, list| keep(list));
        self.hosts.retain(|_, list| keep(list));
    }

    /// The processes still running now.
    pub fn set_live(&mut self, live: HashSet<(u32, i64)>) {
        self.live = live;
    }

    /// Every process the inference may name (to ask which still run).
    pub fn processes(&self) -> HashSet<(u32, i64)> {
        self.peers
            .values()
            .chain(self.hosts.values())
            .flatten()
            .map(|(p, _)| (p.pid, p.started_ms))
            .chain(self.listeners.values().map(|p| (p.pid, p.started_ms)))
            .collect()
    }

    /// The one process of a list still running.
    fn one(&self, list: Option<&Vec<(ProcessRef, i64)>>) -> Option<ProcessRef> {
        let mut it = list?
            .iter()
            .filter(|(p, _)| self.live.contains(&(p.pid, p.started_ms)));
        match (it.next(), it.next()) {
            (Some((p, _)), None) => Some(p.clone()),
            _ => None,
        }
    }

    /// The owners of the listening ports now.
    pub fn set_listeners(&mut self, listeners: HashMap<u16, ProcessRef>) {
        self.listeners = listeners;
    }

    /// The inferred owner of a socket never dumped. `uid`: its uid when
    /// known (an inferred process of another uid is refused).
    pub fn infer(
        &self,
        local_port: u16,
        remote: Option<SocketAddr>,
        inbound: bool,
        uid: Option<u32>,
    ) -> Option<ProcessRef> {
        let p = if inbound {
            self.listeners
                .get(&local_port)
                .filter(|p| self.live.contains(&(p.pid, p.started_ms)))
                .cloned()
        } else {
            let remote = remote?;
            let (port, host) = (self.peers.get(&remote), self.hosts.get(&remote.ip()));
            self.one(port).or_else(|| self.one(host))
        }?;
        match uid {
            Some(u) if u != p.uid => None,
            _ => Some(p),
        }
    }
}

/// Notes `p` in a remote's list (bounded: the most recent are kept).
fn note(list: &mut Vec<(ProcessRef, i64)>, p: &ProcessRef, now_ms: i64) {
    match list.iter_mut().find(|(q, _)| same(q, p)) {
        Some(e) => e.1 = now_ms,
        None => {
            if list.len() >= PER_REMOTE {
                list.sort_by_key(|(_, at)| std::cmp::Reverse(*at));
                list.truncate(PER_REMOTE - 1);
            }
            list.push((p.clone(), now_ms));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: u32, uid: u32) -> ProcessRef {
        ProcessRef {
            pid,
            uid,
            name: format!("p{pid}"),
            ..Default::default()
        }
    }

    #[test]
    fn inference_table() {
        let a: SocketAddr = "192.0.2.1:443".parse().expect("test value");
        let b: SocketAddr = "192.0.2.2:443".parse().expect("test value");
        let mut r = Recent::default();
        r.saw(a, &p(1, 1000), 1_000);
        r.saw(b, &p(1, 1000), 1_000);
        r.saw(b, &p(2, 0), 2_000);
        r.set_listeners(HashMap::from([(8080, p(3, 33))]));
        r.set_live(r.processes());
        let name = |x: Option<ProcessRef>| x.map(|p| p.name);
        assert_eq!(
            name(r.infer(40000, Some(a), false, None)),
            Some("p1".into())
        );
        assert_eq!(
            name(r.infer(40000, Some(a), false, Some(1000))),
            Some("p1".into())
        );
        assert_eq!(name(r.infer(40000, Some(a), false, Some(0))), None);
        // Two processes talked to b: not inferred, until one is stale.
        assert_eq!(name(r.infer(40000, Some(b), false, None)), None);
        r.prune(1_500);
        assert_eq!(
            name(r.infer(40000, Some(b), false, None)),
            Some("p2".into())
        );
        assert_eq!(name(r.infer(8080, Some(a), true, None)), Some("p3".into()));
        assert_eq!(name(r.infer(8081, None, true, None)), None);
        // Another port of a host only p2 was seen with (b's ip, after the
        // prune): p2; of a host two processes talk to: nobody.
        let b2: SocketAddr = "192.0.2.2:6881".parse().expect("test address");
        assert_eq!(
            name(r.infer(40000, Some(b2), false, None)),
            Some("p2".into())
        );
        r.saw(b2, &p(1, 1000), 3_000);
        r.set_live(r.processes());
        let b3: SocketAddr = "192.0.2.2:6882".parse().expect("test address");
        assert_eq!(name(r.infer(40000, Some(b3), false, None)), None);
        let c: SocketAddr = "192.0.2.3:443".parse().expect("test address");
        assert_eq!(name(r.infer(40000, Some(c), false, None)), None);
        // Of two, the one still running (p1 exited).
        r.set_live(HashSet::from([(2, 0)]));
        assert_eq!(
            name(r.infer(40000, Some(b3), false, None)),
            Some("p2".into())
        );
        // A restarted client: the old one (gone) alone at the ip:port,
        // the new one (live) seen with the host: the new one.
        let d: SocketAddr = "192.0.2.4:6881".parse().expect("test address");
        r.saw(d, &p(1, 1000), 4_000);
        r.saw(
            "192.0.2.4:51000".parse().expect("test address"),
            &p(2, 0),
            4_000,
        );
        assert_eq!(
            name(r.infer(40000, Some(d), false, None)),
            Some("p2".into())
        );
        // Nobody running was seen with it: not inferred.
        r.set_live(HashSet::from([(3, 0)]));
        assert_eq!(name(r.infer(40000, Some(d), false, None)), None);
        r.prune(10_000);
        assert_eq!(name(r.infer(40000, Some(a), false, None)), None);
    }
}
