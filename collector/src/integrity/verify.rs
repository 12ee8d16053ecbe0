//! `kiroku verify`: checks a collector's store online, without stopping
//! ingest, up to the journal head taken when it starts.
//!
//! - **journal chain** (`verify/chain.rs`): leaf numbers and `prev` links;
//!   bytes failing their checksum (named by segment and offset); entries
//!   altered, removed, inserted or reordered, each named once. `KRJ1`
//!   records are outside the chain: before its first entry they are an
//!   older collector's, after it they were inserted.
//! - **entries**: a stored event's recorded bytes must hash to the
//!   `recorded_sha256` its additions carry.
//! - **agent stream chains** (`verify/streams.rs`): each event's
//!   `prev_hash` names its predecessor's recorded bytes; breaks that
//!   ingest already recorded (integrity events in the journal) are
//!   reported as it recorded them, agent-reported losses as explained.
//! - **checkpoints** (`verify/checkpoints.rs`): signature and signer
//!   against the CA, numbering and `prev_sha256` links, the Merkle root and
//!   journal head recomputed from the journal, each checkpoint's mark in
//!   the journal, the stream heads it names, the audit head it names.
//! - **blobs** (shared with `repair`: `store/repair/blob_check.rs`): every
//!   blob reads back to its hash, every blob an event names is present.
//! - **index**: every journalled event is in the index with the same
//!   content, and the index holds nothing the journal does not.
//! - **audit log**: its hash chain and the head kept in the metadata.
//!
//! Findings are what is not intact; an alteration makes the exit status
//! non-zero, an explained gap (agent-reported loss, purge) does not. A
//! consequence of one alteration (a checkpoint root or an index entry over
//! an entry already found altered) is not reported again.
//!
//! The range options (`from_ms`, `to_ms`, `agent_id`, `stream_id`) narrow
//! the per-event checks (blobs, index, streams); the journal chain and the
//! checkpoints are always checked whole, as a break anywhere matters.
//!
//! `verify.rs` holds the options, the keys, progress and `run`; the
//! findings and how a chain break is reported are in `verify/findings.rs`,
//! the journal pass's helpers in `verify/pass.rs`, the index check in
//! `verify/index.rs` and the audit log's in `verify/audit.rs`.

mod audit;
mod blobs;
mod chain;
mod checkpoints;
mod findings;
mod index;
mod pass;
mod purged;
mod streams;

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::time::Instant;

use kiroku_proto::{
    Event, VerifyProgress, VerifyRequest, VerifyResponse, VerifySummary, verify_response,
};
use prost::Message;

use crate::store::Store;
use crate::store::journal::Position;
use crate::store::repair::blob_check;

pub use chain::{Break, ChainCheck, Damage, Link};
pub use findings::Findings;

use audit::check_audit;
use index::check_index;
use pass::Pass;

/// What to check.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub from_ms: i64,
    pub to_ms: i64,
    pub agent_id: String,
    pub stream_id: String,
    pub skip_blobs: bool,
    pub skip_index: bool,
}

impl From<&VerifyRequest> for Options {
    fn from(r: &VerifyRequest) -> Options {
        Options {
            from_ms: r.from_ms,
            to_ms: r.to_ms,
            agent_id: r.agent_id.clone(),
            stream_id: r.stream_id.clone(),
            skip_blobs: r.skip_blobs,
            skip_index: r.skip_index,
        }
    }
}

impl Options {
    fn wants(&self, e: &Event) -> bool {
        (self.from_ms == 0 || e.received_at_ms >= self.from_ms)
            && (self.to_ms == 0 || e.received_at_ms < self.to_ms)
            && (self.agent_id.is_empty() || e.agent_id == self.agent_id)
            && (self.stream_id.is_empty() || e.stream_id == self.stream_id)
    }
}

/// Where a journal position is, as findings name it.
pub fn where_at(at: Position) -> String {
    format!("journal {:020}.log @ {}", at.segment, at.offset)
}

fn hex8(h: &[u8]) -> String {
    hex::encode(h.get(..8).unwrap_or(h))
}

/// A 128-bit key of a string (two independent hashes), to remember many
/// event ids and contents without keeping them.
#[derive(Clone)]
struct Keys(std::hash::RandomState, std::hash::RandomState);

impl Keys {
    fn new() -> Keys {
        Keys(Default::default(), Default::default())
    }

    fn key(&self, bytes: &[u8]) -> u128 {
        let mut a = self.0.build_hasher();
        a.write(bytes);
        let mut b = self.1.build_hasher();
        b.write(bytes);
        ((a.finish() as u128) << 64) | b.finish() as u128
    }
}

/// An event as the index check compares it: everything but the tags (the
/// collector adds alert tags after the fact; they are no evidence).
fn content_key(keys: &Keys, e: &Event) -> u128 {
    let mut e = e.clone();
    e.tags.clear();
    keys.key(&e.encode_to_vec())
}

/// Sends progress at most every 200 ms.
struct Progress<'a> {
    out: &'a mut dyn FnMut(VerifyResponse),
    last: Instant,
}

impl Progress<'_> {
    fn say(&mut self, phase: &str, done: u64, total: u64, bytes: u64, force: bool) {
        if !force && self.last.elapsed().as_millis() < 200 {
            return;
        }
        self.last = Instant::now();
        (self.out)(VerifyResponse {
            msg: Some(verify_response::Msg::Progress(VerifyProgress {
                phase: phase.to_owned(),
                done,
                total,
                bytes,
            })),
        });
    }
}

/// What the journal pass keeps for the later checks.
struct JournalPass {
    /// Event id key → (content key, ordinal in journal order, name).
    events: HashMap<u128, (u128, u64)>,
    names: HashMap<u128, String>,
    ordinal: u64,
    entries: u64,
    event_count: u64,
    bytes: u64,
    /// The journal head this run reads up to.
    head_end: Position,
}

/// Runs every check; `out` receives progress as it goes, then each
/// finding; returns the summary (also sent last).
pub fn run(
    store: &Store,
    ca_pem: Option<&[u8]>,
    tsa_ca: Option<&[u8]>,
    opts: &Options,
    out: &mut dyn FnMut(VerifyResponse),
) -> anyhow::Result<VerifySummary> {
    let started = Instant::now();
    // One pass that keeps journal positions (the head, checkpoint ranges):
    // a purge's segment rewrite waits for it.
    let _layout = store.layout_read();
    let head = store.journal.head();
    let mut f = Findings::default();
    let keys = Keys::new();
    let mut summary = VerifySummary::default();

    // Blobs first: the journal pass names the events of damaged ones.
    let blob_scan = if opts.skip_blobs {
        None
    } else {
        Some(blobs::scan(store, &mut summary, &mut *out)?)
    };
    let damaged_blobs: HashSet<String> = blob_scan
        .as_ref()
        .map(|s| s.damaged.iter().map(|(_, sha)| sha.clone()).collect())
        .unwrap_or_default();
    let no_parts = HashMap::new();
    let mut journal_pass = Pass {
        store,
        opts,
        keys: &keys,
        damaged_blobs: &damaged_blobs,
        refs: blob_check::References::new(
            &damaged_blobs,
            blob_scan.as_ref().map_or(&no_parts, |s| &s.missing_parts),
        ),
        damaged_users: HashMap::new(),
        ckps: checkpoints::load(&store.dir.join("checkpoints"), ca_pem, tsa_ca)?,
        streams: streams::Streams::default(),
        chain: ChainCheck::default(),
        purged: purged::Purged::default(),
        kept: JournalPass {
            events: HashMap::new(),
            names: HashMap::new(),
            ordinal: 0,
            entries: 0,
            event_count: 0,
            bytes: 0,
            head_end: head.end,
        },
        next_at: None,
        chain_started: false,
    };
    journal_pass.read(&mut f, out)?;
    let Pass {
        refs,
        damaged_users,
        mut ckps,
        mut streams,
        mut chain,
        purged,
        kept: mut pass,
        ..
    } = journal_pass;
    chain.finish();
    for b in std::mem::take(&mut chain.breaks) {
        f.chain_break(b);
    }
    // A purged event is explained wherever it is still found or missing
    // (index, blobs); its stub and tombstone are checked by `purged`.
    let tombstoned: HashSet<String> = purged.tombstoned_ids().map(str::to_owned).collect();
    for id in &tombstoned {
        pass.events.remove(&keys.key(id.as_bytes()));
        f.flagged_ids.insert(id.clone());
    }
    purged.finish(store, &mut f)?;
    // Entries whose recorded bytes do not match their stored hash, where
    // the chain itself holds (the chain and the hash were both rewritten).
    summary.entries = pass.entries;
    summary.events = pass.event_count;
    summary.bytes += pass.bytes;

    streams.check_meta(&store.meta, &mut f);
    streams.finish(&mut f);
    summary.streams = streams.count();
    summary.checkpoints = ckps.finish(store, &mut f)?;

    blobs::report(
        store,
        opts,
        blob_scan.as_ref(),
        damaged_users,
        refs,
        &tombstoned,
        &mut f,
    );

    if !opts.skip_index {
        check_index(store, opts, &keys, &mut pass, &mut f, out)?;
    }
    check_audit(store, &ckps, &mut f)?;

    conclude(&mut summary, &f, started);
    for finding in f.list {
        out(VerifyResponse {
            msg: Some(verify_response::Msg::Finding(finding)),
        });
    }
    out(VerifyResponse {
        msg: Some(verify_response::Msg::Summary(summary.clone())),
    });
    Ok(summary)
}

/// The summary's counts of findings, the time the run took and its
/// one-line message.
fn conclude(summary: &mut VerifySummary, f: &Findings, started: Instant) {
    summary.alterations = f.list.iter().filter(|x| x.alteration).count() as u64;
    summary.explained = f.list.len() as u64 - summary.alterations;
    summary.seconds = started.elapsed().as_secs_f64();
    summary.message = if summary.alterations == 0 {
        format!(
            "intact: {} journal entries ({} events), {} streams, {} checkpoints, {} blobs checked in {:.1} s{}",
            summary.entries,
            summary.events,
            summary.streams,
            summary.checkpoints,
            summary.blobs,
            summary.seconds,
            if summary.explained > 0 {
                format!("; {} explained findings", summary.explained)
            } else {
                String::new()
            }
        )
    } else {
        format!(
            "ALTERED: {} alterations found in {} journal entries ({} events), {} checkpoints, {} blobs ({:.1} s)",
            summary.alterations,
            summary.entries,
            summary.events,
            summary.checkpoints,
            summary.blobs,
            summary.seconds
        )
    };
}

#[cfg(test)]
mod tests;
