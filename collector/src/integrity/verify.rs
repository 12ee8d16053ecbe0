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

use kiroku_proto::journal_entry::Entry;
use kiroku_proto::{
    Event, VerifyProgress, VerifyRequest, VerifyResponse, VerifySummary, verify_response,
};
use prost::Message;

use crate::store::Store;
use crate::store::journal::{self, Position};
use crate::store::repair::blob_check;

pub use chain::{Break, ChainCheck, Damage, Link};
pub use findings::Findings;

use audit::check_audit;
use index::check_index;
use pass::{damage_at, journal_bytes, note_event, segment_of};

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
    let bdir = store.dir.join("blobs");
    let blob_scan = if opts.skip_blobs {
        None
    } else {
        let total = blob_check::total_bytes(&bdir)?;
        let mut p = Progress {
            out: &mut *out,
            last: Instant::now(),
        };
        let mut done = 0;
        let scan = blob_check::scan(&bdir, &store.blobs, |n| {
            done += n;
            p.say("blobs", done, total, done, false);
        })?;
        p.say("blobs", done, total, done, true);
        summary.blobs = scan.files;
        summary.bytes += scan.bytes;
        Some(scan)
    };
    let damaged_blobs: HashSet<String> = blob_scan
        .as_ref()
        .map(|s| s.damaged.iter().map(|(_, sha)| sha.clone()).collect())
        .unwrap_or_default();
    let no_parts = HashMap::new();
    let mut refs = blob_check::References::new(
        &damaged_blobs,
        blob_scan.as_ref().map_or(&no_parts, |s| &s.missing_parts),
    );
    let mut damaged_users: HashMap<String, Vec<String>> = HashMap::new();

    let mut ckps = checkpoints::load(&store.dir.join("checkpoints"), ca_pem, tsa_ca)?;
    let mut streams = streams::Streams::default();
    let mut chain = ChainCheck::default();
    let mut purged = purged::Purged::default();
    let mut pass = JournalPass {
        events: HashMap::new(),
        names: HashMap::new(),
        ordinal: 0,
        entries: 0,
        event_count: 0,
        bytes: 0,
        head_end: head.end,
    };
    let jdir = store.journal.dir().to_owned();
    let total = journal_bytes(&jdir, head.end);
    let mut next_at: Option<Position> = None;
    let mut chain_started = false;
    {
        let mut p = Progress {
            out: &mut *out,
            last: Instant::now(),
        };
        let report = journal::scan_entries(&jdir, |read| {
            if read.at >= head.end {
                return Ok(());
            }
            // Bytes skipped since the previous record: damage, inline.
            let expected = match next_at {
                Some(n) if n.segment == read.at.segment => n,
                _ => Position {
                    segment: read.at.segment,
                    offset: 0,
                },
            };
            if read.at.offset > expected.offset {
                chain.damage(damage_at(&jdir, expected, read.at.offset - expected.offset));
            }
            next_at = Some(Position {
                segment: read.at.segment,
                offset: read.at.offset + read.len,
            });
            pass.bytes += read.len;
            p.say("journal", pass.bytes, total, pass.bytes, false);
            let Some(entry) = &read.entry else {
                if chain_started {
                    let name = Event::decode(read.bytes.as_slice())
                        .map(|e| e.event_id)
                        .unwrap_or_default();
                    f.add(
                        "inserted",
                        where_at(read.at),
                        &name,
                        "a record of the old format (KRJ1, outside the chain) after the chain began: it was inserted".into(),
                        true,
                    );
                } else if let Ok(e) = Event::decode(read.bytes.as_slice()) {
                    note_event(
                        &e,
                        opts,
                        &keys,
                        &mut pass,
                        &mut refs,
                        store,
                        &mut damaged_users,
                        &damaged_blobs,
                    );
                }
                return Ok(());
            };
            chain_started = true;
            pass.entries += 1;
            let hash = read.entry_hash();
            let mut link = Link {
                leaf: entry.leaf,
                hash,
                prev: <[u8; 32]>::try_from(entry.prev.as_slice()).unwrap_or([0xff; 32]),
                at: read.at,
                name: String::new(),
                inconsistent: false,
            };
            ckps.leaf(entry.leaf, read.leaf_hash(), hash);
            match &entry.entry {
                Some(Entry::Event(s)) => {
                    let a = s.additions.clone().unwrap_or_default();
                    link.name = a.event_id.clone();
                    let recorded_sha = journal::entry::sha256(&s.recorded);
                    link.inconsistent = a.recorded_sha256.as_slice() != recorded_sha;
                    if let Ok(e) = journal::merged(s) {
                        streams.note(&e, recorded_sha, a.reencoded, entry.leaf, read.at, opts);
                        ckps.stream_event(&e, recorded_sha);
                        note_event(
                            &e,
                            opts,
                            &keys,
                            &mut pass,
                            &mut refs,
                            store,
                            &mut damaged_users,
                            &damaged_blobs,
                        );
                    }
                }
                Some(Entry::Checkpoint(m)) => {
                    link.name = format!("checkpoint mark {}", m.number);
                    ckps.mark(m, entry.leaf, read.at);
                }
                Some(Entry::Annotations(m)) => {
                    link.name = format!("annotations of {}", m.event_id);
                }
                Some(Entry::Tombstone(t)) => {
                    link.name = format!("tombstone of {}", t.event_id);
                    purged.tombstone(t, entry.leaf, read.at);
                    ckps.stream_purged(&t.recorded_sha256);
                }
                None if read.is_stub() => {
                    link.name = format!("purged leaf {}", entry.leaf);
                    purged.stub(entry.leaf, hash, read.at);
                }
                None => link.name = format!("leaf {}", entry.leaf),
            }
            chain.push(link);
            Ok(())
        })?;
        // Trailing bytes of a segment that are no record (a torn write at
        // the head is the collector's to cut; before the head it is damage).
        for (path, at, len) in &report.damaged {
            let seg = segment_of(path);
            let pos = Position {
                segment: seg,
                offset: *at,
            };
            let already = next_at.is_some_and(|n| n.segment == seg && *at < n.offset);
            if pos < head.end && !already {
                chain.damage(damage_at(&jdir, pos, *len));
            }
        }
        p.say("journal", pass.bytes, total, pass.bytes, true);
    }
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

    // Blobs: damaged (named with their events) and missing.
    if let Some(scan) = &blob_scan {
        for (path, sha) in &scan.damaged {
            let path = path.strip_prefix(&store.dir).unwrap_or(path);
            let ids = damaged_users.remove(sha).unwrap_or_default();
            f.add(
                "blob_altered",
                format!("blob {sha}"),
                ids.first().map_or("", String::as_str),
                format!(
                    "{} does not read back to the SHA-256 it is named after (replaced or damaged); events naming it: {}",
                    path.display(),
                    if ids.is_empty() { "none".to_owned() } else { blob_check::describe_ids(&ids) }
                ),
                true,
            );
        }
    }
    let mut unavailable = refs.finish();
    unavailable.missing.retain(|_, ids| {
        ids.retain(|id| !tombstoned.contains(id));
        !ids.is_empty()
    });
    if !opts.skip_blobs {
        for (sha, ids) in &unavailable.missing {
            f.add(
                "blob_missing",
                format!("blob {sha}"),
                ids.first().map_or("", String::as_str),
                format!(
                    "{} is missing: the raw message of event(s) {}",
                    blob_check::blob_path(sha).display(),
                    blob_check::describe_ids(ids)
                ),
                true,
            );
        }
        for (m, parts, ids) in &unavailable.partless {
            f.add(
                "blob_missing",
                format!("blob {m}"),
                ids.first().map_or("", String::as_str),
                format!(
                    "the raw message names attachment blob(s) {} that are missing; event(s): {}",
                    parts.join(", "),
                    blob_check::describe_ids(ids)
                ),
                true,
            );
        }
    }

    if !opts.skip_index {
        check_index(store, opts, &keys, &mut pass, &mut f, out)?;
    }
    check_audit(store, &ckps, &mut f)?;

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

#[cfg(test)]
mod tests;
