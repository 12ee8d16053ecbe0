//! The flow table's sockets whose owner `/proc` did not tell: closed
//! before any dump saw them (destroy notifications), or not found before
//! their first record was due. Their owner is inferred (`infer.rs`), a
//! closed one waiting one dump for it when needed, else only their uid is
//! told, or nothing.

use super::super::super::platform::{Counters, ProcessTable, Protocol, Socket};
use super::super::coalesce::{Admit, key_of};
use super::super::record::{canonical_addr, event, template, transient, uid_ref};
use super::{Flow, FlowTable, MAX_DEFERRED, Rec, canonical};

impl FlowTable {
    /// A flow whose owner `/proc` did not tell in time: inferred (an
    /// inbound connection: its listener's owner; outbound: the one process
    /// seen with its peer), else it keeps its uid.
    pub(super) fn owner_not_found(&mut self, cookie: u64) {
        let Some(f) = self.flows.get_mut(&cookie) else {
            return;
        };
        if f.listening {
            return;
        }
        let uid = (f.inode != 0).then_some(f.uid);
        if let Some(p) = self.recent.infer(
            f.local.port(),
            f.remote.map(canonical_addr),
            f.direction == "inbound",
            uid,
        ) {
            f.process = Some(p);
            f.attribution = "inferred";
        }
    }

    /// Destroy notifications: the sockets' final counters.
    pub fn closed(
        &mut self,
        sockets: Vec<Socket>,
        procs: &mut dyn ProcessTable,
        now_ms: i64,
        out: &mut Vec<Rec>,
    ) {
        for s in sockets {
            if let Some(f) = self.remove(s.cookie, now_ms) {
                let source = if s.counters.is_some() {
                    "tcp_info"
                } else {
                    "last_dump"
                };
                self.close(f, s.counters, source, now_ms, now_ms, out);
                continue;
            }
            if self.excluded.remove(&s.cookie)
                || self.untracked.remove(&s.cookie)
                || self.closed_recently.contains_key(&s.cookie)
                || transient(s.state) && s.counters.is_none()
            {
                continue;
            }
            let start_ms = self.last_dump_ms;
            self.closed_unseen(s, procs, now_ms, start_ms, true, out);
        }
    }

    /// A socket that opened and closed between two dumps (after the dump
    /// at `start_ms`). `may_defer`: when its owner cannot be inferred now,
    /// it waits for the next dump (a listener, or the peer's process, seen
    /// only then) instead of being recorded without one.
    pub(super) fn closed_unseen(
        &mut self,
        s: Socket,
        procs: &mut dyn ProcessTable,
        now_ms: i64,
        start_ms: i64,
        may_defer: bool,
        out: &mut Vec<Rec>,
    ) {
        // Never dumped: Linux tells neither inode nor uid (inode 0).
        let uid = (s.inode != 0).then_some(s.uid);
        let direction = if s.protocol == Protocol::Tcp && s.remote.is_none() {
            "listening"
        } else {
            self.direction(&s)
        };
        let inferred = self.recent.infer(
            s.local.port(),
            s.remote.map(canonical_addr),
            matches!(direction, "inbound" | "listening"),
            uid,
        );
        if self.exclude.excluded(
            &s,
            inferred.as_ref().map(|p| (p.name.as_str(), p.exe.as_str())),
        ) {
            self.stats.excluded += 1;
            return;
        }
        if inferred.is_none() && may_defer && self.deferred.len() < MAX_DEFERRED {
            self.deferred.push((s, now_ms, start_ms));
            return;
        }
        let (process, attribution) = match (inferred, uid) {
            (Some(p), _) => (Some(p), "inferred"),
            (None, Some(uid)) => {
                let user = self.user(procs, uid);
                (Some(uid_ref(uid, user)), "uid")
            }
            (None, None) => (None, ""),
        };
        self.closed_recently.insert(s.cookie, now_ms);
        self.stats.closed_unseen += 1;
        let counters = s.counters.unwrap_or_default();
        let f = Flow {
            protocol: s.protocol,
            local: s.local,
            remote: s.remote,
            state: s.state,
            uid: s.uid,
            flow_id: self.flow_id(s.cookie),
            process,
            attribution,
            direction,
            start_ms,
            last_seen_ms: now_ms,
            counters,
            source: if s.counters.is_some() {
                "tcp_info"
            } else {
                "none"
            },
            recorded: Counters::default(),
            last_record_ms: now_ms,
            coalesced: None,
            persisted: None,
            // A TCP socket without a peer is a listener (or bound and never
            // used): closed before any dump saw it listen.
            listening: s.state == "listen" || s.protocol == Protocol::Tcp && s.remote.is_none(),
            continued: false,
            info_hashes: Vec::new(),
            remote_name: s
                .remote
                .and_then(|r| self.names.get(&canonical(r.ip())).cloned())
                .unwrap_or_default(),
            seen: 0,
            missing: false,
            inode: s.inode,
            pending_until: None,
        };
        let key = key_of(
            f.process.as_ref(),
            uid.unwrap_or(u32::MAX),
            f.remote,
            f.protocol,
            super::inbound_port(&f),
        );
        if !f.listening && self.coalesce.admit(&key, now_ms) == Admit::Coalesced {
            let t = template(&f);
            self.stats.coalesced += 1;
            self.coalesce.add(
                &key,
                &t,
                true,
                counters.bytes_out,
                counters.bytes_in,
                counters.packets_out,
                counters.packets_in,
                now_ms,
            );
            return;
        }
        self.coalesce.spend(now_ms);
        let mut ev = event(
            &f,
            if f.listening { "listen_close" } else { "close" },
            now_ms,
        );
        ev.flow_id = f.flow_id;
        ev.first = true;
        // Nothing to persist: the flow has no other record.
        out.push(Rec::Net(ev, None));
    }

    /// At stop: the closed sockets still waiting for a dump are recorded
    /// with what is known.
    pub fn finish(&mut self, procs: &mut dyn ProcessTable, out: &mut Vec<Rec>) {
        for (s, closed_ms, start_ms) in std::mem::take(&mut self.deferred) {
            self.closed_unseen(s, procs, closed_ms, start_ms, false, out);
        }
    }
}
