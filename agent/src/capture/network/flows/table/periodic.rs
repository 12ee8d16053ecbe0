//! What the flow table writes on its own schedule rather than for a
//! socket it was told about: the summaries and gap records due each
//! round (`tick`, with the totals they counted of the coalesced flows
//! still open), the losses they count (`lost`, `packets_lost`), and a
//! clean stop's final updates (`at_stop`).

use super::super::persist::{Saved, StateOp};
use super::super::record::take_gap;
use super::{FlowTable, Rec};

impl FlowTable {
    /// The summaries not yet written: the earliest one's start and the
    /// flows they count ([`super::persist::Unwritten`]).
    pub fn unwritten_summaries(&self) -> Option<(i64, u64)> {
        self.coalesce.unwritten()
    }

    /// Destroy notifications the kernel dropped.
    pub fn lost(&mut self, overflows: u64, now_ms: i64) {
        self.lost.add(overflows, now_ms);
        self.stats.notifications_lost += overflows;
    }

    /// Inspected packets the kernel dropped (the inspection socket's
    /// queue overflowed): a `packets_lost` gap record.
    pub fn packets_lost(&mut self, dropped: u64, now_ms: i64) {
        self.packets_lost.add(dropped, now_ms);
        self.stats.packets_lost += dropped;
    }

    /// At a clean stop, after a last dump: an `update` for each flow with
    /// traffic since its last record (and its totals in the keyed state),
    /// so a flow that ends while the agent is stopped loses only what it
    /// sent after the stop, not up to `update_secs` before it. Coalesced
    /// flows add their last deltas to their summaries, written by the
    /// forced [`FlowTable::tick`] that follows.
    pub fn at_stop(&mut self, now_ms: i64, out: &mut Vec<Rec>) {
        let cookies: Vec<u64> = self
            .flows
            .iter()
            .filter(|(_, f)| !f.listening && f.pending_until.is_none() && f.counters != f.recorded)
            .map(|(c, _)| *c)
            .collect();
        for cookie in cookies {
            let Some(f) = self.flows.get_mut(&cookie) else {
                continue;
            };
            if let Some(key) = f.coalesced.clone() {
                super::summarise(&mut self.coalesce, &key, f, false, now_ms);
                f.recorded = f.counters;
            } else {
                out.extend(self.record(cookie, "update", now_ms));
            }
        }
    }

    /// With the summaries just written: the totals they counted of each
    /// coalesced flow still open, into the keyed state (only those that
    /// changed), so a restart continues from there.
    fn save_coalesced(&mut self, out: &mut Vec<Rec>) {
        for f in self.flows.values_mut() {
            if f.coalesced.is_none() || f.persisted == Some(f.recorded) {
                continue;
            }
            f.persisted = Some(f.recorded);
            let saved = Saved {
                totals: f.recorded,
                start_ms: f.start_ms,
                listening: false,
                coalesced: true,
            };
            out.push(Rec::State(StateOp {
                flow_id: f.flow_id.clone(),
                value: Some(saved.encode()),
            }));
        }
    }

    /// Summaries and gap records due (every loop; `force` at stop).
    pub fn tick(&mut self, now_ms: i64, force: bool, out: &mut Vec<Rec>) {
        self.exclude.refresh();
        let due = self.coalesce.due(now_ms, force);
        if !due.is_empty() {
            out.extend(due.into_iter().map(|ev| Rec::Net(ev, None)));
            self.save_coalesced(out);
        }
        if !force && now_ms < self.next_gap_ms {
            return;
        }
        self.next_gap_ms = now_ms + self.summary_ms;
        let full = format!(
            "were not recorded: the agent's flow table was full (network.max_flows = {}). Raise network.max_flows, or exclude busy traffic with [[network.exclude]].",
            self.max_flows
        );
        let gaps = [
            take_gap(
                &mut self.full,
                "flow_table_full",
                "new network flows",
                &full,
            ),
            take_gap(
                &mut self.lost,
                "notifications_lost",
                "socket-close notifications",
                "were dropped by the kernel (its receive queue overflowed): connections that opened and closed between two socket dumps in that time are not recorded; those seen at a dump are closed with the counters of their last dump (counters = \"last_dump\").",
            ),
            take_gap(
                &mut self.packets_lost,
                "packets_lost",
                "inspected packets",
                "were dropped by the kernel (the inspection socket's receive queue overflowed): BitTorrent handshakes, tracker announces, DHT messages and DNS answers in them were not seen, so P2P reasons from packets and info_hashes may be missing for that time; the flows themselves are recorded.",
            ),
        ];
        out.extend(gaps.into_iter().flatten().map(Rec::Gap));
    }
}
