//! What the collector holds of an agent's network capture (issue 21), for
//! the short-connection test and the network benchmark: its `network`
//! records and `gap` records of source "network", read back through the
//! Query API and added up as connections seen ([`Tally`]).
//!
//! Reads every record of the agent (kind unfiltered) and keeps the network
//! ones itself, so it works whether or not the collector's index knows the
//! kind's own fields.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kiroku_proto::event::Kind;
use kiroku_proto::{GapEvent, NetworkEvent, SearchRequest};

use crate::Env;

/// An agent's network and network-gap records at the collector.
#[derive(Debug, Default, Clone)]
pub struct NetRecords {
    pub network: Vec<NetworkEvent>,
    pub gaps: Vec<GapEvent>,
}

impl NetRecords {
    /// Every record agent `agent_id` shipped since `from_ms` (agent clock).
    pub async fn read(env: &Env, agent_id: &str, from_ms: i64) -> anyhow::Result<NetRecords> {
        let events = env
            .search_all(SearchRequest {
                agent_id: agent_id.into(),
                from_ms,
                ascending: true,
                ..Default::default()
            })
            .await?;
        let mut out = NetRecords::default();
        for e in events {
            match e.kind {
                Some(Kind::Network(n)) => out.network.push(n),
                Some(Kind::Gap(g)) if g.source == "network" => out.gaps.push(g),
                _ => {}
            }
        }
        Ok(out)
    }

    /// Polls [`NetRecords::read`] until `enough` holds for the records, or
    /// they stop changing for `quiet`, or `within` passes; returns the last.
    pub async fn settle(
        env: &Env,
        agent_id: &str,
        from_ms: i64,
        enough: impl Fn(&NetRecords) -> bool,
        quiet: Duration,
        within: Duration,
    ) -> anyhow::Result<NetRecords> {
        let deadline = Instant::now() + within;
        let mut last = NetRecords::default();
        let mut changed = Instant::now();
        loop {
            let now = NetRecords::read(env, agent_id, from_ms).await?;
            if now.network.len() != last.network.len() || now.gaps.len() != last.gaps.len() {
                changed = Instant::now();
            }
            last = now;
            if enough(&last) || changed.elapsed() >= quiet || Instant::now() >= deadline {
                return Ok(last);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Waits until the agent's capture has shipped a first network record
    /// (its own listening SMTP socket's `listen_open` when loopback flows
    /// are recorded): the capture runs and the collector has its records.
    pub async fn wait_running(env: &Env, agent_id: &str, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if !NetRecords::read(env, agent_id, 0).await?.network.is_empty() {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "agent {agent_id} shipped no network record within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// The records of the flows `pick` selects, added up.
    pub fn tally(&self, pick: impl Fn(&NetworkEvent) -> bool) -> Tally {
        tally(self.network.iter().filter(|n| pick(n)))
    }

    /// Connections the agent said it could not record (gap `count` by
    /// reason: `notifications_lost`, `flow_table_full`, ...).
    pub fn gap_counts(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for g in &self.gaps {
            *m.entry(g.reason.clone()).or_default() += g.count;
        }
        m
    }

    pub fn gap_total(&self) -> u64 {
        self.gaps.iter().map(|g| g.count).sum()
    }
}

/// Flows added up over their records.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    pub records: u64,
    /// Distinct flows recorded one by one (their `flow_id`s; a flow has
    /// `open` / `update` / `close` records).
    pub flows: u64,
    /// Connections counted by `summary` records (their `connections`).
    pub summarized: u64,
    pub summaries: u64,
    /// Bytes: the records' deltas added up (a flow's deltas sum to its
    /// totals, summaries carry theirs).
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub by_phase: BTreeMap<String, u64>,
    /// Connections by how their process was found ("socket", "inferred",
    /// "uid", "").
    pub by_attribution: BTreeMap<String, u64>,
    /// Connections by the pid named (0: none).
    pub by_pid: BTreeMap<u32, u64>,
    /// Where the counters came from ("tcp_info", ...), by records.
    pub by_counters: BTreeMap<String, u64>,
}

impl Tally {
    /// Connections seen: flows recorded one by one plus those summaries
    /// count.
    pub fn connections(&self) -> u64 {
        self.flows + self.summarized
    }
}

pub fn tally<'a>(records: impl Iterator<Item = &'a NetworkEvent>) -> Tally {
    let mut t = Tally::default();
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for n in records {
        t.records += 1;
        *t.by_phase.entry(n.phase.clone()).or_default() += 1;
        *t.by_counters.entry(n.counters.clone()).or_default() += 1;
        t.bytes_out += n.bytes_out_delta;
        t.bytes_in += n.bytes_in_delta;
        let pid = n.process.as_ref().map_or(0, |p| p.pid);
        let connections = if n.phase == "summary" {
            t.summaries += 1;
            t.summarized += n.connections;
            n.connections
        } else if seen.insert(n.flow_id.as_str()) {
            t.flows += 1;
            1
        } else {
            0
        };
        if connections > 0 {
            *t.by_attribution.entry(n.attribution.clone()).or_default() += connections;
            *t.by_pid.entry(pid).or_default() += connections;
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(phase: &str, flow: &str, conns: u64, out: u64, attribution: &str) -> NetworkEvent {
        NetworkEvent {
            phase: phase.into(),
            flow_id: flow.into(),
            connections: conns,
            bytes_out_delta: out,
            attribution: attribution.into(),
            ..Default::default()
        }
    }

    #[test]
    fn flows_and_summaries_add_up() {
        let recs = [
            rec("open", "b/1", 1, 0, "socket"),
            rec("update", "b/1", 1, 100, "socket"),
            rec("close", "b/1", 1, 20, "socket"),
            rec("close", "b/2", 1, 16, "inferred"),
            rec("summary", "", 40, 640, "inferred"),
            rec("summary", "", 2, 32, "uid"),
        ];
        let t = tally(recs.iter());
        assert_eq!(t.records, 6);
        assert_eq!(t.flows, 2);
        assert_eq!(t.summarized, 42);
        assert_eq!(t.summaries, 2);
        assert_eq!(t.connections(), 44);
        assert_eq!(t.bytes_out, 808);
        assert_eq!(t.by_attribution.get("socket"), Some(&1));
        assert_eq!(t.by_attribution.get("inferred"), Some(&41));
        assert_eq!(t.by_attribution.get("uid"), Some(&2));
        assert_eq!(t.by_phase.get("summary"), Some(&2));
    }
}
