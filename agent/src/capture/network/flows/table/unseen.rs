//! Sockets that closed before any dump saw them (destroy notifications
//! for cookies the table does not know). Linux tells neither their inode
//! nor their uid, so their process can only be inferred from what the
//! dumps saw (`infer.rs`). A burst of short connections usually starts
//! before any dump has seen the process with that peer: such a close is
//! held (up to `OWNER_WAIT_MS`, at most `MAX_HELD` of them) and inferred
//! again after the next dumps, instead of being recorded with no process
//! at all. Held closes are released at stop (`tick(force)`).

use super::*;

/// Closes held at most (beyond: recorded at once with what is known).
const MAX_HELD: usize = 20_000;

/// A close waiting for its owner to become inferable.
#[derive(Debug)]
pub(super) struct Held {
    socket: Socket,
    start_ms: i64,
    until_ms: i64,
}

impl FlowTable {
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
            self.closed_unseen(s, procs, now_ms, out);
        }
    }

    /// A socket that opened and closed between two dumps: recorded now,
    /// or held while its owner cannot be inferred yet.
    fn closed_unseen(
        &mut self,
        s: Socket,
        procs: &mut dyn ProcessTable,
        now_ms: i64,
        out: &mut Vec<Rec>,
    ) {
        let start_ms = self.last_dump_ms;
        if self.exclude.excluded(&s, None) {
            self.stats.excluded += 1;
            return;
        }
        if s.inode == 0 && s.remote.is_some() && self.held.len() < MAX_HELD {
            let (direction, inferred) = self.infer_unseen(&s, None);
            if inferred.is_none() && direction != "listening" {
                self.closed_recently.insert(s.cookie, now_ms);
                self.held.push_back(Held {
                    socket: s,
                    start_ms,
                    until_ms: now_ms + OWNER_WAIT_MS,
                });
                return;
            }
        }
        self.record_unseen(s, Some(procs), start_ms, now_ms, out);
    }

    /// Held closes whose owner can be inferred now, or whose wait is over
    /// (all of them when `force`).
    pub(super) fn release_held(&mut self, now_ms: i64, force: bool, out: &mut Vec<Rec>) {
        let mut keep = std::collections::VecDeque::with_capacity(self.held.len());
        while let Some(h) = self.held.pop_front() {
            let ready =
                force || now_ms >= h.until_ms || self.infer_unseen(&h.socket, None).1.is_some();
            if ready {
                self.record_unseen(h.socket, None, h.start_ms, now_ms, out);
            } else {
                keep.push_back(h);
            }
        }
        self.held = keep;
    }

    /// Its direction and the owner inferred from what the dumps saw.
    fn infer_unseen(&self, s: &Socket, uid: Option<u32>) -> (&'static str, Option<ProcessRef>) {
        let direction = if s.protocol == Protocol::Tcp && s.remote.is_none() {
            "listening"
        } else {
            self.direction(s)
        };
        let inferred = self.recent.infer(
            s.local.port(),
            s.remote.map(canonical_addr),
            direction == "inbound",
            uid,
        );
        (direction, inferred)
    }

    /// The record of a socket never dumped (or its share of a summary).
    fn record_unseen(
        &mut self,
        s: Socket,
        procs: Option<&mut dyn ProcessTable>,
        start_ms: i64,
        now_ms: i64,
        out: &mut Vec<Rec>,
    ) {
        // Never dumped: Linux tells neither inode nor uid (inode 0).
        let uid = (s.inode != 0).then_some(s.uid);
        let (direction, inferred) = self.infer_unseen(&s, uid);
        if self.exclude.excluded(
            &s,
            inferred.as_ref().map(|p| (p.name.as_str(), p.exe.as_str())),
        ) {
            self.stats.excluded += 1;
            return;
        }
        let (process, attribution) = match (inferred, uid) {
            (Some(p), _) => (Some(p), "inferred"),
            (None, Some(uid)) => {
                let user = match procs {
                    Some(procs) => self.user(procs, uid),
                    None => String::new(),
                };
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
}
