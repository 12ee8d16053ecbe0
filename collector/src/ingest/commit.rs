//! The committer: one thread takes every batch waiting, checks the
//! streams' hash chains (`ingest/chain.rs`), indexes the new events with
//! their journal leaves, journals them (agent bytes + additions) and
//! makes it all durable with a single index commit and metadata flush
//! (group commit), so many agents share the cost of one fsync. The order
//! of durability is that of the store's invariant (`store.rs`): journal,
//! index, high-water marks; a crash in between at worst journals an event
//! twice, and its resend is then an identical one.

use std::collections::HashMap;

use kiroku_proto::event::Kind;
use kiroku_proto::{Ack, Event, IntegrityEvent, StoredEvent};
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use super::INTEGRITY_STREAM;
use super::chain::{self, ChainState, Finding};
use crate::alerts::Alerting;
use crate::store::Store;
use crate::store::journal::{Provenance, entry};

/// One event on its way to the store: the merged view (decoded, admitted:
/// what the index, search and alerts see) and the bytes to journal.
pub(super) struct Incoming {
    pub(super) event: Event,
    /// The agent's encoded event, byte for byte (or the collector's
    /// encoding of an older agent's decoded event: `reencoded`).
    pub(super) recorded: Vec<u8>,
    /// The shipper's note that the raw message is gone (`Batch.recorded`).
    pub(super) raw_not_kept: String,
    pub(super) reencoded: bool,
}

enum Work {
    Batch(Vec<Incoming>),
    /// A chain head from the agent's status.
    Head {
        seq: u64,
        hash: [u8; 32],
    },
}

/// One batch (or head) on its way to the committer.
struct Job {
    agent_id: String,
    stream_id: String,
    work: Work,
    reply: oneshot::Sender<Result<Ack, Status>>,
}

/// Handle to the committer thread.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<Job>,
}

impl Committer {
    /// Starts the committer thread; it ends when every handle is dropped.
    pub fn start(
        store: std::sync::Arc<Store>,
        alerting: std::sync::Arc<Alerting>,
    ) -> std::io::Result<(Committer, std::thread::JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel(256);
        let handle = std::thread::Builder::new()
            .name("kiroku-committer".into())
            .spawn(move || committer_loop(&store, &alerting, rx))?;
        Ok((Committer { tx }, handle))
    }

    async fn send(&self, agent_id: &str, stream_id: &str, work: Work) -> Result<Ack, Status> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                agent_id: agent_id.to_owned(),
                stream_id: stream_id.to_owned(),
                work,
                reply,
            })
            .await
            .map_err(|_| Status::unavailable("collector is shutting down"))?;
        rx.await
            .map_err(|_| Status::internal("committer stopped"))?
    }

    pub(super) async fn store(
        &self,
        agent_id: &str,
        stream_id: &str,
        events: Vec<Incoming>,
    ) -> Result<Ack, Status> {
        self.send(agent_id, stream_id, Work::Batch(events)).await
    }

    /// Checks (or keeps, until its event arrives) the stream's chain head
    /// an agent reported.
    pub(super) async fn head(
        &self,
        agent_id: &str,
        stream_id: &str,
        seq: u64,
        hash: [u8; 32],
    ) -> Result<(), Status> {
        self.send(agent_id, stream_id, Work::Head { seq, hash })
            .await
            .map(drop)
    }
}

fn committer_loop(store: &Store, alerting: &Alerting, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.blocking_recv() {
        let mut jobs = vec![first];
        while jobs.len() < 256 {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        commit_jobs(store, alerting, jobs);
    }
}

type Key = (String, String);

/// What a group has done so far, not yet durable.
struct Group<'a> {
    store: &'a Store,
    alerting: &'a Alerting,
    /// High-water marks as they will be after this group, per stream.
    hw: HashMap<Key, u64>,
    /// Chain states as they will be after this group.
    chains: HashMap<Key, ChainState>,
    /// Hashes of the events stored as recorded in this group (the index
    /// does not show them before its commit).
    hashes: HashMap<(String, String, u64), [u8; 32]>,
    per_agent: HashMap<String, u64>,
    /// Alerts of this group: dispatched only once it is durable.
    alerts: Vec<(Vec<u8>, kiroku_proto::Alert)>,
    /// Every newly stored event of the group, for the journal, and their
    /// merged views.
    journal: Vec<StoredEvent>,
    events: Vec<Event>,
    /// The leaf of the group's first journal entry.
    first_leaf: u64,
    /// Issue 20: the group's mails with an upstream queue id (their place
    /// in `events` and provenance), which a later batch's MTA log line may
    /// re-index before the group is committed.
    mails: HashMap<String, (usize, Provenance)>,
    /// Mails re-indexed for their delivery status in this group (cleared
    /// from the delivery store's stale list once the group commits), and
    /// whether the left-overs of a failed group were taken up yet.
    delivery_reindexed: Vec<String>,
    stale_taken: bool,
}

impl Group<'_> {
    fn stored_seq(&mut self, key: &Key) -> Result<u64, String> {
        if let Some(v) = self.hw.get(key) {
            return Ok(*v);
        }
        let v = self
            .store
            .meta
            .stored_seq(&key.0, &key.1)
            .map_err(|e| e.to_string())?;
        self.hw.insert(key.clone(), v);
        Ok(v)
    }

    fn chain(&mut self, key: &Key) -> Result<ChainState, String> {
        if let Some(c) = self.chains.get(key) {
            return Ok(*c);
        }
        let mut c = self
            .store
            .meta
            .chain(&key.0, &key.1)
            .map_err(|e| e.to_string())?;
        // A stream stored before its chain was kept, or whose high-water
        // mark `repair` raised from the journal: the newest stored event's
        // hash is not known, so the next event's link is not checked.
        let hw = self.stored_seq(key)?;
        if hw > c.seq {
            c.seq = hw;
            c.hash = None;
        }
        Ok(c)
    }

    /// The hash of stored event `seq` of the stream, if it was stored as
    /// recorded.
    fn stored_hash(&self, key: &Key, seq: u64) -> Result<Option<[u8; 32]>, String> {
        if let Some(h) = self.hashes.get(&(key.0.clone(), key.1.clone(), seq)) {
            return Ok(Some(*h));
        }
        let id = format!("{}/{}/{seq}", key.0, key.1);
        Ok(self
            .store
            .index
            .provenance(&id)
            .map_err(|e| e.to_string())?
            .filter(|p| !p.reencoded)
            .map(|p| p.recorded_sha256))
    }

    /// Indexes `events` (merged views) with their journal leaves and
    /// queues them for the journal; `sources[i]`: the recorded bytes, the
    /// raw-not-kept note and whether re-encoded, of `events[i]`.
    fn add(
        &mut self,
        mut events: Vec<Event>,
        sources: Vec<(Vec<u8>, String, bool)>,
    ) -> Result<(), String> {
        // The rules see only newly stored events; their tags are indexed
        // and journalled with them.
        self.alerts.extend(self.alerting.evaluate(&mut events)?);
        // Issue 20: MTA log lines joined to relayed mails before the
        // events are indexed, so their documents carry the join's result.
        let mut changed = self
            .store
            .delivery
            .ingest(&events, kiroku_common::now_ms())
            .map_err(|e| e.to_string())?;
        // Mails whose re-index a failed group rolled back.
        if !self.stale_taken {
            self.stale_taken = true;
            let left = self
                .store
                .delivery
                .stale(crate::delivery::store::STALE_BATCH)
                .map_err(|e| e.to_string())?;
            for id in left {
                if !changed.contains(&id) {
                    changed.push(id);
                }
            }
        }
        self.delivery_reindexed.extend(changed.iter().cloned());
        let mut provenance = Vec::with_capacity(events.len());
        for (e, (recorded, raw_not_kept, reencoded)) in events.iter().zip(sources) {
            let sha = entry::sha256(&recorded);
            provenance.push(Provenance {
                recorded_sha256: sha,
                leaf: Some(self.first_leaf + self.journal.len() as u64),
                reencoded,
            });
            self.journal.push(StoredEvent {
                recorded,
                additions: Some(entry::additions_of(e, &raw_not_kept, sha, reencoded)),
            });
        }
        self.store
            .index
            .add_recorded(&events, &provenance)
            .map_err(|e| e.to_string())?;
        for (i, (e, p)) in events.iter().zip(&provenance).enumerate() {
            if crate::delivery::store::mail_of(e).is_some() {
                self.mails
                    .insert(e.event_id.clone(), (self.events.len() + i, *p));
            }
        }
        let fresh: std::collections::HashSet<&str> =
            events.iter().map(|e| e.event_id.as_str()).collect();
        let stale: Vec<String> = changed
            .into_iter()
            .filter(|id| !fresh.contains(id.as_str()))
            .collect();
        self.events.extend(events);
        self.reindex_deliveries(stale)
    }

    /// Re-indexes mails stored before this batch whose delivery status a
    /// line of it changed: from this group (not committed yet) with the
    /// provenance it was given, else as the index holds it.
    fn reindex_deliveries(&mut self, ids: Vec<String>) -> Result<(), String> {
        for id in ids {
            if let Some((at, prov)) = self.mails.get(&id) {
                let e = std::slice::from_ref(&self.events[*at]);
                self.store
                    .index
                    .add_recorded(e, std::slice::from_ref(prov))
                    .map_err(|e| e.to_string())?;
            } else if let Some(e) = self.store.index.get(&id).map_err(|e| e.to_string())? {
                self.store.index.add(&[e]).map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    fn batch(&mut self, key: &Key, incoming: Vec<Incoming>) -> Result<Ack, String> {
        let stored = self.stored_seq(key)?;
        let mut chain = self.chain(key)?;
        let mut top = stored;
        let mut findings = Vec::new();
        let mut conflicts: Vec<Finding> = Vec::new();
        let (mut fresh, mut sources) = (Vec::new(), Vec::new());
        let total = incoming.len();
        for i in incoming {
            let recorded = !i.reencoded;
            let sha = entry::sha256(&i.recorded);
            let seq = i.event.seq;
            if seq <= top {
                // A resend: normal unless its bytes differ.
                if recorded {
                    let was = self.stored_hash(key, seq)?;
                    conflicts.extend(chain::check_resend(&key.1, seq, sha, was));
                }
                continue;
            }
            top = seq;
            findings.extend(chain::check_fresh(
                &mut chain,
                &key.1,
                seq,
                &i.event.prev_hash,
                &i.event.chain_restart,
                sha,
                recorded,
            ));
            if recorded {
                self.hashes.insert((key.0.clone(), key.1.clone(), seq), sha);
            }
            fresh.push(i.event);
            sources.push((i.recorded, i.raw_not_kept, i.reencoded));
        }
        if let Some(first) = fresh.first()
            && first.seq != stored + 1
            && findings.is_empty()
        {
            tracing::warn!(
                agent_id = %key.0, stream_id = %key.1, expected = stored + 1, got = first.seq,
                "gap in sequence numbers: events were lost on the agent before shipping"
            );
        }
        findings.splice(0..0, chain::merge_conflicts(&key.1, conflicts));
        let n = fresh.len();
        self.add(fresh, sources)?;
        *self.per_agent.entry(key.0.clone()).or_default() += n as u64;
        self.hw.insert(key.clone(), top);
        self.chains.insert(key.clone(), chain);
        self.integrity(key, findings)?;
        Ok(Ack {
            stored_seq: top,
            stored: n as u32,
            duplicates: (total - n) as u32,
            missing_blobs: Vec::new(),
            checkpoint: Vec::new(),
        })
    }

    fn head(&mut self, key: &Key, seq: u64, hash: [u8; 32]) -> Result<(), String> {
        let mut chain = self.chain(key)?;
        let mut lookup_err = None;
        let found = chain::check_head(&mut chain, &key.1, seq, hash, |n| {
            self.stored_hash(key, n)
                .map_err(|e| lookup_err = Some(e))
                .ok()
                .flatten()
        });
        if let Some(e) = lookup_err {
            return Err(e);
        }
        self.chains.insert(key.clone(), chain);
        self.integrity(key, found.into_iter().collect())
    }

    /// Stores what was found in stream `stream` as integrity records of
    /// its agent.
    fn integrity(&mut self, stream: &Key, findings: Vec<Finding>) -> Result<(), String> {
        if findings.is_empty() {
            return Ok(());
        }
        let agent = stream.0.as_str();
        let key = (agent.to_owned(), INTEGRITY_STREAM.to_owned());
        let mut seq = self.stored_seq(&key)?;
        let now = kiroku_common::now_ms();
        let (mut events, mut sources) = (Vec::new(), Vec::new());
        for f in findings {
            seq += 1;
            if f.tampering {
                tracing::error!(agent_id = %agent, what = f.what, first_seq = f.first_seq, last_seq = f.last_seq, "{}", f.detail);
            } else {
                tracing::warn!(agent_id = %agent, what = f.what, first_seq = f.first_seq, last_seq = f.last_seq, "{}", f.detail);
            }
            let e = integrity_event(agent, &stream.1, seq, now, f);
            sources.push((e.encode_to_vec(), String::new(), true));
            events.push(e);
        }
        self.hw.insert(key, seq);
        self.add(events, sources)
    }
}

/// The integrity record `seq` of agent `agent` for finding `f`.
fn integrity_event(agent: &str, stream: &str, seq: u64, now: i64, f: Finding) -> Event {
    Event {
        event_id: format!("{agent}/{INTEGRITY_STREAM}/{seq}"),
        agent_id: agent.to_owned(),
        stream_id: INTEGRITY_STREAM.to_owned(),
        seq,
        observed_at_ms: now,
        received_at_ms: now,
        kind: Some(Kind::Integrity(IntegrityEvent {
            what: f.what.to_owned(),
            stream_id: stream.to_owned(),
            first_seq: f.first_seq,
            last_seq: f.last_seq,
            expected_sha256: f.expected.map(hex::encode).unwrap_or_default(),
            got_sha256: f.got.map(hex::encode).unwrap_or_default(),
            detail: f.detail,
            tampering: f.tampering,
        })),
        ..Default::default()
    }
}

fn commit_jobs(store: &Store, alerting: &Alerting, jobs: Vec<Job>) {
    // The analysis worker re-indexes between groups, never inside one.
    let _group = store.index.write_group();
    let started = std::time::Instant::now();
    let mut index_done = started;
    let mut acks = Vec::with_capacity(jobs.len());
    let mut g = Group {
        store,
        alerting,
        hw: HashMap::new(),
        chains: HashMap::new(),
        hashes: HashMap::new(),
        per_agent: HashMap::new(),
        alerts: Vec::new(),
        journal: Vec::new(),
        events: Vec::new(),
        first_leaf: 0,
        mails: HashMap::new(),
        delivery_reindexed: Vec::new(),
        stale_taken: false,
    };
    let (works, replies): (Vec<_>, Vec<_>) = jobs
        .into_iter()
        .map(|j| (((j.agent_id, j.stream_id), j.work), j.reply))
        .unzip();
    let batches = works.len();
    let result = (|| -> Result<(), String> {
        // A full disk pauses ingest before anything is written; agents
        // keep their batches and resend.
        store.disk.check(0)?;
        // The journal's end is held from here to the append: each event
        // is indexed with the leaf it gets.
        let mut writer = store.journal.writer();
        g.first_leaf = writer.next_leaf();
        for (key, work) in works {
            let ack = match work {
                Work::Batch(events) => g.batch(&key, events)?,
                Work::Head { seq, hash } => {
                    g.head(&key, seq, hash)?;
                    Ack::default()
                }
            };
            acks.push(ack);
        }
        writer
            .append_stored(std::mem::take(&mut g.journal))
            .map_err(|e| e.to_string())?;
        drop(writer);
        store.index.commit().map_err(|e| e.to_string())?;
        store
            .delivery
            .reindexed(&g.delivery_reindexed)
            .map_err(|e| e.to_string())?;
        index_done = std::time::Instant::now();
        // Queued in the meta store, so the flush below makes the pending
        // analysis durable together with the high-water marks: an
        // acknowledged mail is always analysed, even after a kill -9.
        store
            .analysis
            .enqueue(
                g.events
                    .iter()
                    .filter(|e| crate::analysis::wanted(e))
                    .map(|e| e.event_id.as_str()),
            )
            .map_err(|e| e.to_string())?;
        for ((agent, stream), seq) in &g.hw {
            store
                .meta
                .set_stored_seq(agent, stream, *seq)
                .map_err(|e| e.to_string())?;
        }
        for ((agent, stream), chain) in &g.chains {
            store
                .meta
                .set_chain(agent, stream, chain)
                .map_err(|e| e.to_string())?;
        }
        let now = kiroku_common::now_ms();
        for (agent, n) in &g.per_agent {
            let mut info = store
                .meta
                .host(agent)
                .map_err(|e| e.to_string())?
                .unwrap_or_default();
            info.agent_id = agent.clone();
            info.last_seen_ms = now;
            info.events_stored += n;
            store.meta.put_host(&info).map_err(|e| e.to_string())?;
        }
        store.meta.flush().map_err(|e| e.to_string())?;
        Ok(())
    })();
    match result {
        Ok(()) => {
            tracing::debug!(
                batches,
                events = g.events.len(),
                index_ms = (index_done - started).as_secs_f64() * 1e3,
                meta_ms = index_done.elapsed().as_secs_f64() * 1e3,
                "group committed"
            );
            for (reply, ack) in replies.into_iter().zip(acks) {
                let _ = reply.send(Ok(ack));
            }
            alerting.dispatch(g.alerts);
            store.analysis.notify();
        }
        Err(e) => {
            tracing::error!(error = %e, "storing a batch failed; agents will resend it");
            store.exit_if_meta_failed();
            let _ = store.index.rollback();
            alerting.discard(&g.alerts);
            for reply in replies {
                let _ = reply.send(Err(Status::unavailable(format!(
                    "collector could not store the batch: {e}"
                ))));
            }
        }
    }
}
