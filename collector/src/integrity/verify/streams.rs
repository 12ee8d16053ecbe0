//! The agents' stream chains as the journal holds them: each event's
//! `prev_hash` must be the SHA-256 of its predecessor's recorded bytes.
//! Ingest checks every chain as events arrive and journals an integrity
//! event for each break it finds; `verify` reports those as ingest
//! recorded them (an agent-reported loss as explained, not as an
//! alteration) and finds the breaks no integrity event accounts for —
//! which can only come from the journal being rewritten after the fact.

use std::collections::HashMap;

use kiroku_proto::{Event, IntegrityEvent, event::Kind};

use super::{Findings, Options, hex8, where_at};
use crate::store::journal::Position;

/// A break the journal shows in a stream's chain.
struct StreamBreak {
    agent: String,
    stream: String,
    seq: u64,
    /// The last seq seen before it.
    after: u64,
    leaf: u64,
    after_leaf: u64,
    at: Position,
    event_id: String,
    expected: [u8; 32],
    got: Vec<u8>,
}

/// A stream's last event: seq, recorded hash (none when re-encoded), leaf.
type Last = (u64, Option<[u8; 32]>, u64);

#[derive(Default)]
pub struct Streams {
    /// (agent, stream) → (last seq, its recorded hash, its leaf); no hash
    /// for an event the collector re-encoded (an older agent's): its
    /// successor cannot link to those bytes, and ingest does not check it.
    last: HashMap<(String, String), Last>,
    breaks: Vec<StreamBreak>,
    /// Integrity events ingest journaled: (agent, event, leaf, at, id).
    recorded: Vec<(String, IntegrityEvent, Position, String)>,
}

impl Streams {
    pub fn count(&self) -> u64 {
        self.last.len() as u64
    }

    /// One event (merged view) whose recorded bytes hash to `sha`.
    pub fn note(
        &mut self,
        e: &Event,
        sha: [u8; 32],
        reencoded: bool,
        leaf: u64,
        at: Position,
        opts: &Options,
    ) {
        if let Some(Kind::Integrity(ie)) = &e.kind {
            self.recorded
                .push((e.agent_id.clone(), ie.clone(), at, e.event_id.clone()));
            return;
        }
        if !opts.wants(e) {
            return;
        }
        let key = (e.agent_id.clone(), e.stream_id.clone());
        let prev = self.last.get(&key).copied();
        match prev {
            // A resend of an event already stored (at-least-once): the
            // journal may hold it twice.
            Some((last, _, _)) if e.seq <= last => return,
            Some((last, Some(hash), last_leaf)) => {
                // Only a chained event right after its predecessor can be
                // checked; a gap (skipped seq) is ingest's to record.
                let chained = !e.prev_hash.is_empty() && e.chain_restart.is_empty();
                if chained && e.seq == last + 1 && e.prev_hash.as_slice() != hash {
                    self.breaks.push(StreamBreak {
                        agent: e.agent_id.clone(),
                        stream: e.stream_id.clone(),
                        seq: e.seq,
                        after: last,
                        leaf,
                        after_leaf: last_leaf,
                        at,
                        event_id: e.event_id.clone(),
                        expected: hash,
                        got: e.prev_hash.clone(),
                    });
                }
            }
            Some((_, None, _)) | None => {}
        }
        self.last
            .insert(key, (e.seq, (!reencoded).then_some(sha), leaf));
    }

    /// Compares each stream's newest journalled event with what ingest
    /// noted for it in the metadata (its seq and recorded hash): the
    /// newest events are those no successor and perhaps no checkpoint
    /// covers yet. Only equal sequence numbers are compared: the metadata
    /// is written after the journal, so it may trail it (a crash) or be
    /// ahead of the head this run read (ingest goes on).
    pub fn check_meta(&self, meta: &crate::store::meta::MetaStore, f: &mut Findings) {
        for ((agent, stream), (seq, hash, leaf)) in &self.last {
            let Some(hash) = hash else {
                continue;
            };
            let Ok(state) = meta.chain(agent, stream) else {
                continue;
            };
            if state.seq != *seq || f.flagged.contains(leaf) {
                continue;
            }
            if let Some(noted) = state.hash
                && noted != *hash
            {
                f.add(
                    "altered",
                    format!("stream {agent}/{stream} seq {seq}"),
                    "",
                    format!(
                        "the stream's newest event (leaf {leaf}) hashes to {}…, ingest noted {}… when it stored it: it was changed after ingest",
                        hex8(hash),
                        hex8(&noted)
                    ),
                    true,
                );
            }
        }
    }

    /// Reports what ingest recorded, and the breaks nothing accounts for
    /// (unless they concern entries the journal check already named).
    pub fn finish(&mut self, f: &mut Findings) {
        for (agent, ie, at, id) in &self.recorded {
            let what = if ie.what.is_empty() {
                "altered"
            } else {
                ie.what.as_str()
            };
            f.add(
                what,
                format!(
                    "stream {agent}/{} seq {}–{}",
                    ie.stream_id, ie.first_seq, ie.last_seq
                ),
                id,
                format!("recorded at ingest ({}): {}", where_at(*at), ie.detail),
                ie.tampering,
            );
        }
        for b in std::mem::take(&mut self.breaks) {
            let known = self.recorded.iter().any(|(agent, ie, _, _)| {
                *agent == b.agent
                    && ie.stream_id == b.stream
                    && ie.first_seq <= b.seq
                    && b.after <= ie.last_seq.max(ie.first_seq)
            });
            if known || f.any_flagged(b.after_leaf.min(b.leaf), b.after_leaf.max(b.leaf)) {
                continue;
            }
            f.add(
                "altered",
                format!("stream {}/{} seq {}", b.agent, b.stream, b.seq),
                &b.event_id,
                format!(
                    "{}: event seq {} names {}… as its predecessor, but seq {} as journalled hashes to {}…: an event of this stream was changed after ingest, with the journal chain recomputed",
                    where_at(b.at),
                    b.seq,
                    hex8(&b.got),
                    b.after,
                    hex8(&b.expected)
                ),
                true,
            );
        }
    }
}
