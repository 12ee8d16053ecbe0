//! The network capture's thread: dumps the sockets every
//! `network.dump_interval_ms`, takes destroy notifications (and inspected
//! packets, with `network.inspect`) in between, feeds the flow table and
//! the P2P detector, and appends their records to the buffer in batches
//! together with the flows' keyed state (`flows/persist.rs`), so a kill -9
//! neither repeats an `open` nor loses a delta.
//!
//! A batch the buffer refuses (full, or its disk not writable) is counted
//! in the buffer-full gap ledger (`gaps::Source::Network`), record by
//! record: the kernel does not wait, so those records are not retried.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kiroku_proto::event::Kind;
use kiroku_proto::{Event, NetworkEvent};

use super::config::NetworkConfig;
use super::flows::{self, Excluder, FlowTable, Rec, StateOp};
use super::names::Names;
use super::p2p::Detector;
use super::platform::{PacketInspector, ProcessTable, SocketTable};
use crate::buffer::{Buffer, KeyedState};
use crate::capture::context::CaptureContext;
use crate::gaps::{Gaps, Missed, Source};

/// Longest wait for destroy notifications in one call (packets are
/// looked at between two calls).
const NOTIFY_WAIT: Duration = Duration::from_millis(100);
/// Records in one buffer transaction.
const BATCH: usize = 512;
/// How often the counts are logged.
const REPORT_EVERY: Duration = Duration::from_secs(600);

/// The OS sources the runner reads.
pub struct Sources {
    pub sockets: Box<dyn SocketTable>,
    pub procs: Box<dyn ProcessTable>,
    pub inspector: Option<Box<dyn PacketInspector>>,
}

/// The process table when the real one cannot be opened: no owners, no
/// user names (flows keep their uid).
pub struct NoProcesses;

impl ProcessTable for NoProcesses {
    fn owners(
        &mut self,
        _inodes: &[u64],
    ) -> std::collections::HashMap<u64, super::platform::Owner> {
        std::collections::HashMap::new()
    }
    fn user_name(&mut self, _uid: u32) -> String {
        String::new()
    }
}

pub struct Runner {
    pub cfg: NetworkConfig,
    /// `collector.endpoint`, for `network.exclude_collector`.
    pub collector: String,
    pub sources: Sources,
    pub buffer: Arc<Buffer>,
    pub ctx: Arc<CaptureContext>,
    pub gaps: Arc<Gaps>,
    pub stop: Arc<AtomicBool>,
    pub rt: tokio::runtime::Handle,
}

/// The kernel's boot id (flow ids are unique per boot with the socket
/// cookie).
pub fn boot_id() -> String {
    match std::fs::read_to_string("/proc/sys/kernel/random/boot_id") {
        Ok(s) if !s.trim().is_empty() => s.trim().to_owned(),
        other => {
            tracing::warn!(
                error = ?other.err(),
                "cannot read /proc/sys/kernel/random/boot_id: flow ids use \"unknown-boot\", so a flow recorded before a reboot can share an id with one after it"
            );
            "unknown-boot".into()
        }
    }
}

impl Runner {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Runs until `stop` is set.
    pub fn run(mut self) {
        while !self.buffer.is_open() {
            if self.stopped() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let state = self.buffer.keyed_state(flows::STATE);
        let saved = flows::persist::load(&state);
        if !saved.is_empty() {
            tracing::info!(
                flows = saved.len(),
                "network capture: continuing the flows recorded by the previous run"
            );
        }
        let mut unwritten = UnwrittenMark::open(&state);
        let mut out = Vec::new();
        if let Some(lost) = unwritten.left_by_previous_run() {
            out.push(Rec::Gap(lost.gap()));
        }
        let exclude = Excluder::new(&self.cfg, &self.collector);
        let now = self.ctx.clock.now_ms();
        let mut table = FlowTable::new(&self.cfg, exclude, boot_id(), saved, now);
        let mut detector = Detector::new(&self.cfg.p2p, &self.ctx.agent_id);
        // Reverse names (network.reverse_dns): looked up on a worker thread,
        // never waited for; a flow's later records carry the name.
        let mut names = match Names::new(self.cfg.reverse_dns, self.cfg.reverse_dns_per_sec) {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(error = %e, "network capture: reverse DNS lookups cannot start; records carry only names seen in DNS answers");
                None
            }
        };
        detector.set_dump_interval_ms(self.cfg.dump_interval_ms);
        let interval = Duration::from_millis(self.cfg.dump_interval_ms.max(1));
        let mut next_dump = Instant::now();
        let mut next_report = Instant::now() + REPORT_EVERY;
        let mut dump_failing = false;
        let mut notify_failing = false;
        let mut closed = Vec::new();
        let mut packets = Vec::new();
        while !self.stopped() {
            let now_ms = self.ctx.clock.now_ms();
            if Instant::now() >= next_dump {
                match self.sources.sockets.dump() {
                    Ok(sockets) => {
                        if dump_failing {
                            tracing::info!("network capture: socket dumps work again");
                        }
                        dump_failing = false;
                        table.dump(sockets, self.sources.procs.as_mut(), now_ms, &mut out);
                    }
                    Err(e) => {
                        if !dump_failing {
                            tracing::error!(error = %e, "network capture: the socket dump failed; retrying every interval (flows are not updated meanwhile)");
                        }
                        dump_failing = true;
                    }
                }
                next_dump += interval;
                if next_dump < Instant::now() {
                    next_dump = Instant::now() + interval;
                }
            }
            let wait = next_dump
                .saturating_duration_since(Instant::now())
                .min(NOTIFY_WAIT);
            closed.clear();
            match self.sources.sockets.closed(wait, &mut closed) {
                Ok(lost) => {
                    notify_failing = false;
                    table.lost(lost.overflows, now_ms);
                    if !closed.is_empty() {
                        let now_ms = self.ctx.clock.now_ms();
                        let c = std::mem::take(&mut closed);
                        table.closed(c, self.sources.procs.as_mut(), now_ms, &mut out);
                    }
                }
                Err(e) => {
                    if !notify_failing {
                        tracing::warn!(error = %e, "network capture: reading socket-close notifications failed; short connections may be missed until it works again");
                    }
                    notify_failing = true;
                    std::thread::sleep(wait);
                }
            }
            if let Some(inspector) = self.sources.inspector.as_mut() {
                packets.clear();
                match inspector.packets(Duration::ZERO, &mut packets) {
                    Ok(lost) => table.packets_lost(lost.overflows, now_ms),
                    Err(e) => {
                        tracing::warn!(error = %e, "network inspection failed; it is turned off until the capture restarts");
                        self.sources.inspector = None;
                    }
                }
                let now_ms = self.ctx.clock.now_ms();
                for p in &packets {
                    table.packet(p, |owner| detector.packet(p, owner, now_ms));
                }
            }
            let now_ms = self.ctx.clock.now_ms();
            table.tick(now_ms, false, &mut out);
            let mark = unwritten.change(table.unwritten_summaries(), now_ms);
            let written = self.write(&mut out, &mut detector, &mut names, &state, mark, now_ms);
            unwritten.done(written);
            if Instant::now() >= next_report {
                next_report = Instant::now() + REPORT_EVERY;
                log_stats(&table);
            }
        }
        // A last dump, so the flows' final updates carry their bytes up
        // to the stop.
        let now_ms = self.ctx.clock.now_ms();
        match self.sources.sockets.dump() {
            Ok(sockets) => table.dump(sockets, self.sources.procs.as_mut(), now_ms, &mut out),
            Err(e) => {
                tracing::warn!(error = %e, "network capture: no last socket dump at the stop; the flows' final updates carry the totals of the previous dump")
            }
        }
        table.finish(self.sources.procs.as_mut(), &mut out);
        table.at_stop(now_ms, &mut out);
        table.tick(now_ms, true, &mut out);
        let mark = unwritten.change(table.unwritten_summaries(), now_ms);
        let written = self.write(&mut out, &mut detector, &mut names, &state, mark, now_ms);
        unwritten.done(written);
        log_stats(&table);
    }

    /// Appends `out` (and the P2P records due) to the buffer, with `mark`
    /// (the change to the unwritten-summaries mark) and the state changes
    /// without records of their own in the same transaction as the last
    /// of them; returns `mark` when it was applied.
    fn write(
        &self,
        out: &mut Vec<Rec>,
        detector: &mut Detector,
        names: &mut Option<Names>,
        state: &KeyedState,
        mark: Option<StateOp>,
        now_ms: i64,
    ) -> Option<StateOp> {
        let mut batch: Vec<(Event, Option<StateOp>)> = Vec::with_capacity(out.len());
        // State changes without records of their own (coalesced flows'
        // totals): with the last chunk, after the summaries they count.
        let mut loose: Vec<StateOp> = Vec::new();
        for rec in out.drain(..) {
            match rec {
                Rec::Net(mut ev, op) => {
                    if let Some(names) = names.as_mut() {
                        name_remote(&mut ev, names, now_ms);
                    }
                    detector.record(&ev, now_ms);
                    let user = ev
                        .process
                        .as_ref()
                        .map(|p| p.user.clone())
                        .unwrap_or_default();
                    batch.push((self.ctx.event_as(user, Kind::Network(ev)), op));
                }
                Rec::Gap(g) => {
                    tracing::warn!(reason = %g.reason, count = g.count, "network capture: {}", g.detail);
                    batch.push((self.ctx.event(String::new(), Kind::Gap(g)), None));
                }
                Rec::State(op) => loose.push(op),
            }
        }
        for p in detector.tick(now_ms) {
            let user = p
                .process
                .as_ref()
                .map(|p| p.user.clone())
                .unwrap_or_default();
            batch.push((self.ctx.event_as(user, Kind::P2p(p)), None));
        }
        if batch.is_empty() {
            // No record to go with: the changes alone.
            let apply = |op: &StateOp| match &op.value {
                Some(v) => state.insert(op.flow_id.as_bytes(), v.clone()).map(|_| ()),
                None => state.remove(op.flow_id.as_bytes()).map(|_| ()),
            };
            for op in &loose {
                if let Err(e) = apply(op) {
                    tracing::warn!(error = %e, "network capture: cannot save a coalesced flow's totals in the buffer (after a restart its summaries may count some bytes again)");
                }
            }
            let op = mark?;
            return match apply(&op) {
                Ok(()) => Some(op),
                Err(e) => {
                    tracing::warn!(error = %e, "network capture: cannot note the summaries not yet written in the buffer (a crash now would lose them without a gap record)");
                    None
                }
            };
        }
        let mut last_extra = loose;
        last_extra.extend(mark.clone());
        let mut applied = None;
        while !batch.is_empty() {
            let rest = batch.split_off(batch.len().min(BATCH));
            let chunk = std::mem::replace(&mut batch, rest);
            let last = batch.is_empty();
            let extra = if last {
                std::mem::take(&mut last_extra)
            } else {
                Vec::new()
            };
            if self.append(chunk, state, extra) && last {
                applied = mark.clone();
            }
        }
        applied
    }

    /// Appends one chunk with its state changes (and `extra`) in one
    /// transaction; whether it was written.
    fn append(
        &self,
        chunk: Vec<(Event, Option<StateOp>)>,
        state: &KeyedState,
        extra: Vec<StateOp>,
    ) -> bool {
        let (events, ops): (Vec<Event>, Vec<Option<StateOp>>) = chunk.into_iter().unzip();
        let ops: Vec<StateOp> = ops.into_iter().flatten().chain(extra).collect();
        let described: Vec<String> = events.iter().map(describe).collect();
        let r = self
            .rt
            .block_on(self.buffer.append_batch_with(events, state, move |tx| {
                for op in &ops {
                    match &op.value {
                        Some(v) => tx.insert(op.flow_id.as_bytes(), v)?,
                        None => tx.remove(op.flow_id.as_bytes())?,
                    };
                }
                Ok(())
            }));
        let Err(e) = r else {
            return true;
        };
        tracing::debug!(error = %e, records = described.len(), "network records refused by the buffer; counted as a gap");
        for d in &described {
            let m = Missed {
                path: Some(d),
                ..Default::default()
            };
            if let Err(e) = self.rt.block_on(self.gaps.missed(Source::Network, m)) {
                tracing::error!(error = %e, "network capture: a record neither written nor counted");
            }
        }
        false
    }
}

/// The buffer's trace of summaries not yet written
/// ([`flows::persist::Unwritten`], a reserved key of the flows' keyed
/// state): set while there are any, refreshed at most once a second, and
/// removed in the same transaction as the records that write them (or as
/// the gap record that tells of the previous run's), so a crash can
/// neither lose them silently nor have the next run call written flows
/// lost.
struct UnwrittenMark {
    /// What the buffer holds now (None: nothing).
    held: Option<flows::persist::Unwritten>,
    /// The change handed to the last write.
    pending: Option<(StateOp, Option<flows::persist::Unwritten>)>,
    next_ms: i64,
}

impl UnwrittenMark {
    fn open(state: &KeyedState) -> UnwrittenMark {
        let held = match state.get(flows::persist::UNWRITTEN_KEY) {
            Ok(v) => v.and_then(|v| flows::persist::Unwritten::decode(&v)),
            Err(e) => {
                tracing::warn!(error = %e, "network capture: cannot read whether the previous run left summaries unwritten");
                None
            }
        };
        UnwrittenMark {
            held,
            pending: None,
            next_ms: i64::MIN,
        }
    }

    /// The summaries the previous run did not write, if it left any.
    fn left_by_previous_run(&self) -> Option<flows::persist::Unwritten> {
        self.held
    }

    /// The change that brings the mark in line with the table's summaries
    /// in progress (`now`: their earliest start and flow count) once this
    /// round's records are written; None when there is nothing to change.
    fn change(&mut self, now: Option<(i64, u64)>, now_ms: i64) -> Option<StateOp> {
        let key = String::from_utf8_lossy(flows::persist::UNWRITTEN_KEY).into_owned();
        let (op, to) = match now {
            None if self.held.is_some() => (
                StateOp {
                    flow_id: key,
                    value: None,
                },
                None,
            ),
            None => return None,
            Some((first_ms, flows)) => {
                if now_ms < self.next_ms {
                    return None;
                }
                self.next_ms = now_ms + 1000;
                let u = flows::persist::Unwritten {
                    first_ms,
                    last_ms: now_ms,
                    flows,
                };
                (
                    StateOp {
                        flow_id: key,
                        value: Some(u.encode()),
                    },
                    Some(u),
                )
            }
        };
        self.pending = Some((op.clone(), to));
        Some(op)
    }

    /// The write returned `applied` (the change, when it was written).
    fn done(&mut self, applied: Option<StateOp>) {
        if let Some((op, to)) = self.pending.take()
            && applied.as_ref() == Some(&op)
        {
            self.held = to;
        }
    }
}

/// "process → ip:port" for the gap ledger.
fn describe(e: &Event) -> String {
    match &e.kind {
        Some(Kind::Network(n)) => describe_net(n),
        Some(Kind::P2p(p)) => format!(
            "p2p {} {}",
            p.phase,
            p.process.as_ref().map(|p| p.name.as_str()).unwrap_or("")
        ),
        Some(Kind::Gap(g)) => format!("gap {}", g.reason),
        _ => String::new(),
    }
}

fn describe_net(n: &NetworkEvent) -> String {
    let who = n
        .process
        .as_ref()
        .map(|p| {
            if p.name.is_empty() {
                format!("uid {}", p.uid)
            } else {
                p.name.clone()
            }
        })
        .unwrap_or_default();
    if n.remote_ip.is_empty() {
        format!("{who} {} :{}", n.protocol, n.local_port)
    } else {
        format!("{who} {} {}:{}", n.protocol, n.remote_ip, n.remote_port)
    }
}

fn log_stats(t: &FlowTable) {
    let s = t.stats;
    tracing::info!(
        tracked = t.len(),
        opened = s.opened,
        closed = s.closed,
        closed_unseen = s.closed_unseen,
        coalesced = s.coalesced,
        excluded = s.excluded,
        table_full = s.table_full,
        notifications_lost = s.notifications_lost,
        packets_lost = s.packets_lost,
        "network capture counts"
    );
}

/// A reverse name for a record's remote when none came from a DNS answer.
fn name_remote(ev: &mut NetworkEvent, names: &mut Names, now_ms: i64) {
    if !ev.remote_name.is_empty() || ev.remote_ip.is_empty() {
        return;
    }
    let Ok(ip) = ev.remote_ip.parse::<std::net::IpAddr>() else {
        return;
    };
    if let Some((name, source)) = names.name(ip, now_ms) {
        ev.remote_name = name;
        ev.name_source = source.into();
    }
}
