//! How a flow ends in the records: its `close` (`listen_close`), or its
//! last delta into its summary; and a flow an earlier run recorded that
//! ended while the agent was stopped.

use kiroku_proto::NetworkEvent;

use super::super::super::platform::{Counters, Protocol};
use super::super::coalesce::{Admit, key_of};
use super::super::persist::{Saved, StateOp};
use super::super::record::{canonical_addr, event};
use super::{Flow, FlowTable, Rec, inbound_port, summarise};

impl FlowTable {
    /// Writes a removed flow's end: a close (listen_close), or its last
    /// delta into its summary.
    pub(super) fn close(
        &mut self,
        mut f: Flow,
        last: Option<Counters>,
        source: &'static str,
        end_ms: i64,
        now_ms: i64,
        out: &mut Vec<Rec>,
    ) {
        if let Some(c) = last {
            f.counters = c;
        }
        if f.source == "tcp_info" || f.source == "none" && f.protocol == Protocol::Tcp {
            f.source = source;
        }
        self.stats.closed += 1;
        // Closed before its owner was found: its only record, or part of
        // a summary.
        let was_pending = f.pending_until.take().is_some();
        // Closed before its owner was found, or recorded with its uid only
        // (the owner never showed in /proc: an orphaned or never-connected
        // socket): its close names the inferred owner when there is one.
        let unowned = f.attribution == "uid" && f.process.as_ref().is_none_or(|p| p.pid == 0);
        if (was_pending || unowned)
            && let Some(p) = self.recent.infer(
                f.local.port(),
                f.remote.map(canonical_addr),
                f.direction == "inbound",
                Some(f.uid),
            )
        {
            f.process = Some(p);
            f.attribution = "inferred";
        }
        if was_pending && !f.continued && !f.listening {
            let key = key_of(
                f.process.as_ref(),
                f.uid,
                f.remote,
                f.protocol,
                inbound_port(&f),
            );
            if self.coalesce.admit(&key, now_ms) == Admit::Coalesced {
                self.stats.coalesced += 1;
                summarise(&mut self.coalesce, &key, &f, true, end_ms);
                return;
            }
        }
        if was_pending && f.continued && f.persisted.is_some() {
            // Counted in summaries by an earlier run: it ends there.
            f.coalesced = Some(key_of(
                f.process.as_ref(),
                f.uid,
                f.remote,
                f.protocol,
                inbound_port(&f),
            ));
        }
        if let Some(key) = f.coalesced.clone() {
            summarise(&mut self.coalesce, &key, &f, false, end_ms);
            if f.persisted.is_some() {
                out.push(Rec::State(StateOp {
                    flow_id: f.flow_id,
                    value: None,
                }));
            }
            return;
        }
        self.coalesce.spend(now_ms);
        let phase = if f.listening { "listen_close" } else { "close" };
        let mut ev = event(&f, phase, end_ms);
        ev.end_ms = end_ms;
        ev.flow_id = f.flow_id.clone();
        // Closed before its owner was found: nothing was recorded for it.
        ev.first = was_pending && !f.continued;
        out.push(Rec::Net(
            ev,
            Some(StateOp {
                flow_id: f.flow_id,
                value: None,
            }),
        ));
    }

    pub(super) fn ended_while_stopped(
        &mut self,
        flow_id: String,
        s: Saved,
        now_ms: i64,
        out: &mut Vec<Rec>,
    ) {
        if s.coalesced {
            // Counted in summaries, which never had its close: what it sent
            // after the last summary written is lost with the stop (as an
            // individual flow's bytes after its last record are).
            out.push(Rec::State(StateOp {
                flow_id,
                value: None,
            }));
            return;
        }
        let ev = NetworkEvent {
            phase: if s.listening { "listen_close" } else { "close" }.into(),
            start_ms: s.start_ms,
            end_ms: now_ms,
            bytes_out: s.totals.bytes_out,
            bytes_in: s.totals.bytes_in,
            packets_out: s.totals.packets_out,
            packets_in: s.totals.packets_in,
            counters: "last_record".into(),
            connections: 1,
            flow_id: flow_id.clone(),
            continued: true,
            ..Default::default()
        };
        self.stats.closed += 1;
        out.push(Rec::Net(
            ev,
            Some(StateOp {
                flow_id,
                value: None,
            }),
        ));
    }
}
