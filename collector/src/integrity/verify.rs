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

mod chain;
mod checkpoints;
mod purged;
mod streams;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::path::Path;
use std::time::Instant;

use kiroku_proto::journal_entry::Entry;
use kiroku_proto::{
    Event, VerifyFinding, VerifyProgress, VerifyRequest, VerifyResponse, VerifySummary,
    verify_response,
};
use prost::Message;

use crate::store::Store;
use crate::store::journal::{self, Position};
use crate::store::repair::blob_check;

pub use chain::{Break, ChainCheck, Damage, Link};

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

/// The findings of a run, and the leaves they concern.
#[derive(Default)]
pub struct Findings {
    pub list: Vec<VerifyFinding>,
    /// Leaves already found altered, removed, inserted or reordered.
    pub flagged: BTreeSet<u64>,
    /// The event ids those entries hold (the index check does not report
    /// them again).
    pub flagged_ids: HashSet<String>,
}

impl Findings {
    pub fn add(
        &mut self,
        what: &str,
        where_: String,
        event_id: &str,
        detail: String,
        alteration: bool,
    ) {
        self.list.push(VerifyFinding {
            what: what.to_owned(),
            r#where: where_,
            event_id: event_id.to_owned(),
            detail,
            alteration,
        });
    }

    /// True when a leaf in `first..=last` was already found altered.
    pub fn any_flagged(&self, first: u64, last: u64) -> bool {
        first <= last && self.flagged.range(first..=last).next().is_some()
    }

    fn chain_break(&mut self, b: Break) {
        self.flagged.extend(b.leaves());
        match &b {
            Break::Altered { link, .. } | Break::Inserted { link } | Break::Unlinked { link } => {
                self.flagged_ids.insert(link.name.clone());
            }
            Break::Reordered { links } => {
                self.flagged_ids
                    .extend(links.iter().map(|l| l.name.clone()));
            }
            Break::Damaged { damage, .. } => {
                self.flagged_ids
                    .extend(damage.holds.as_ref().map(|h| h.1.clone()));
            }
            Break::Missing { .. } => {}
        }
        match b {
            Break::Altered { link, successor } => {
                let why = if link.inconsistent {
                    "its recorded bytes no longer hash to the hash stored beside them: the entry was edited"
                } else {
                    "the entry was edited (or the link in its successor)"
                };
                self.add(
                    "altered",
                    where_at(link.at),
                    &link.name,
                    format!(
                        "leaf {} ({}) does not hash to what leaf {successor} names as its predecessor: {why}",
                        link.leaf, link.name
                    ),
                    true,
                );
            }
            Break::Missing { first, last, after } => {
                let leaves = if first == last {
                    format!("leaf {first} is")
                } else {
                    format!("leaves {first}–{last} are")
                };
                self.add(
                    "missing",
                    after.map_or_else(|| "journal start".to_owned(), where_at),
                    "",
                    format!("{leaves} not in the journal: removed (the entry after names a predecessor that is not there)"),
                    true,
                );
            }
            Break::Inserted { link } => self.add(
                "inserted",
                where_at(link.at),
                &link.name,
                format!(
                    "an entry claiming leaf {} ({}) that no entry after it names: it was inserted",
                    link.leaf, link.name
                ),
                true,
            ),
            Break::Reordered { links } => {
                let leaves: Vec<String> = links.iter().map(|l| l.leaf.to_string()).collect();
                let names: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
                self.add(
                    "reordered",
                    where_at(links.iter().map(|l| l.at).min().unwrap_or_default()),
                    links.first().map_or("", |l| l.name.as_str()),
                    format!(
                        "leaves {} ({}) are all present and linked but out of order in the file: they were moved",
                        leaves.join(", "),
                        names.join(", ")
                    ),
                    true,
                );
            }
            Break::Damaged { damage, leaves } => {
                let held = match (&damage.holds, leaves.as_slice()) {
                    (Some((leaf, name)), _) => format!("; they held leaf {leaf} ({name})"),
                    (None, []) => String::new(),
                    (None, l) => format!(
                        "; leaves {} are lost with them",
                        l.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
                    ),
                };
                self.add(
                    "altered",
                    where_at(damage.at),
                    damage.holds.as_ref().map_or("", |h| h.1.as_str()),
                    format!(
                        "{} bytes fail their checksum or are no journal record (changed without recomputing the CRC, or disk damage){held}",
                        damage.len
                    ),
                    true,
                );
            }
            Break::Unlinked { link } => self.add(
                "altered",
                where_at(link.at),
                &link.name,
                format!(
                    "leaf {} ({}) names a predecessor that is not the entry before it",
                    link.leaf, link.name
                ),
                true,
            ),
        }
    }
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

/// Notes one event (merged view) for the blob and index checks.
#[allow(clippy::too_many_arguments)]
fn note_event(
    e: &Event,
    opts: &Options,
    keys: &Keys,
    pass: &mut JournalPass,
    refs: &mut blob_check::References<'_>,
    store: &Store,
    damaged_users: &mut HashMap<String, Vec<String>>,
    damaged: &HashSet<String>,
) {
    pass.event_count += 1;
    if !opts.wants(e) {
        return;
    }
    if !opts.skip_blobs {
        refs.note(&store.blobs, e);
        if let Some(sha) = blob_check::referenced_blobs(e)
            && damaged.contains(&sha)
        {
            damaged_users
                .entry(sha)
                .or_default()
                .push(e.event_id.clone());
        }
    }
    if !opts.skip_index {
        let id = keys.key(e.event_id.as_bytes());
        pass.ordinal += 1;
        pass.events.insert(id, (content_key(keys, e), pass.ordinal));
        pass.names.entry(id).or_insert_with(|| e.event_id.clone());
    }
}

fn segment_of(path: &Path) -> u64 {
    path.file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Journal bytes up to `end`.
fn journal_bytes(dir: &Path, end: Position) -> u64 {
    journal::segments(dir)
        .unwrap_or_default()
        .iter()
        .filter(|n| **n <= end.segment)
        .map(|n| {
            if *n == end.segment {
                end.offset
            } else {
                std::fs::metadata(dir.join(format!("{n:020}.log"))).map_or(0, |m| m.len())
            }
        })
        .sum()
}

/// Damaged bytes at `at`, and the entry they seem to hold when read
/// ignoring the checksum (to name what was changed).
fn damage_at(dir: &Path, at: Position, len: u64) -> Damage {
    let holds = (|| {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(dir.join(format!("{:020}.log", at.segment))).ok()?;
        f.seek(SeekFrom::Start(at.offset)).ok()?;
        let mut buf = Vec::new();
        f.take(len.min(64 << 20)).read_to_end(&mut buf).ok()?;
        if buf.get(..4)? != b"KRJ2" {
            return None;
        }
        let n = u32::from_le_bytes(buf.get(4..8)?.try_into().ok()?) as usize;
        let entry = kiroku_proto::JournalEntry::decode(buf.get(12..12 + n)?).ok()?;
        let name = match &entry.entry {
            Some(Entry::Event(s)) => s
                .additions
                .as_ref()
                .map(|a| a.event_id.clone())
                .unwrap_or_default(),
            Some(Entry::Checkpoint(m)) => format!("checkpoint mark {}", m.number),
            _ => format!("leaf {}", entry.leaf),
        };
        Some((entry.leaf, name))
    })();
    Damage { at, len, holds }
}

/// Every journalled event (in range) must be in the index with the same
/// content, and the index must hold nothing else. Events after the last
/// one indexed are not indexed yet (a crash between the journal and the
/// index commit; the agent's resend indexes them): explained, not altered.
fn check_index(
    store: &Store,
    opts: &Options,
    keys: &Keys,
    pass: &mut JournalPass,
    f: &mut Findings,
    out: &mut dyn FnMut(VerifyResponse),
) -> anyhow::Result<()> {
    if let Some(s) = store.index.rebuild_status()
        && s.state != crate::store::index::RebuildState::Done
    {
        f.add(
            "index_skipped",
            "index".into(),
            "",
            format!(
                "the index is being rebuilt ({}): it is checked once the rebuild is done",
                s.describe()
            ),
            false,
        );
        return Ok(());
    }
    let mut p = Progress {
        out,
        last: Instant::now(),
    };
    let total = store.index.count();
    let mut done = 0u64;
    let mut seen: HashSet<u128> = HashSet::new();
    let mut only_index: Vec<String> = Vec::new();
    let mut max_indexed = 0u64;
    store.index.for_each_stored(|e| {
        done += 1;
        p.say("index", done, total, 0, false);
        if !opts.wants(&e) {
            return Ok(());
        }
        let id = keys.key(e.event_id.as_bytes());
        if f.flagged_ids.contains(&e.event_id) {
            seen.insert(id);
            return Ok(());
        }
        match pass.events.get(&id) {
            None => only_index.push(e.event_id),
            Some((content, ordinal)) => {
                seen.insert(id);
                max_indexed = max_indexed.max(*ordinal);
                if *content != content_key(keys, &e) {
                    f.add(
                        "index_mismatch",
                        "index".into(),
                        &e.event_id,
                        "the index serves this event with content other than the journal holds (the index was altered, or rebuilt from an altered journal)".into(),
                        true,
                    );
                }
            }
        }
        Ok(())
    })?;
    p.say("index", done, total, 0, true);
    let mut not_yet = 0u64;
    for (id, (_, ordinal)) in &pass.events {
        if seen.contains(id) {
            continue;
        }
        if *ordinal > max_indexed {
            not_yet += 1;
            continue;
        }
        let name = pass.names.get(id).cloned().unwrap_or_default();
        f.add(
            "index_mismatch",
            "index".into(),
            &name,
            "a journalled event is missing from the index (removed from it: searches do not find it)".into(),
            true,
        );
    }
    if not_yet > 0 {
        f.add(
            "not_indexed_yet",
            "index".into(),
            "",
            format!("the last {not_yet} journalled events are not in the index yet (stored just before a crash; the agents' resend indexes them)"),
            false,
        );
    }
    // Ingest goes on while this runs: events journalled after the head
    // this run read may be indexed already. They are in the journal past
    // that head.
    if !only_index.is_empty() {
        let mut later: HashSet<String> = only_index.iter().cloned().collect();
        let (mut at, end) = (pass.head_end, store.journal.head().end);
        while at < end && !later.is_empty() {
            let (reads, next) = journal::read_entries(store.journal.dir(), at, end, 10_000)?;
            for r in &reads {
                if let Some(Ok((e, _))) = journal::event_of(r) {
                    later.remove(&e.event_id);
                }
            }
            if next == at {
                break;
            }
            at = next;
        }
        only_index.retain(|id| later.contains(id));
    }
    only_index.sort();
    // Removed journal entries leave their events in the index: those
    // explain each other (the removal is the finding).
    let removed: u64 = f
        .list
        .iter()
        .filter(|x| x.what == "missing" && x.alteration)
        .count() as u64;
    if removed > 0 && !only_index.is_empty() {
        if let Some(m) = f.list.iter_mut().find(|x| x.what == "missing") {
            m.detail.push_str(&format!(
                "; the index still holds {}, which the journal no longer has",
                blob_check::describe_ids(&only_index)
            ));
            if m.event_id.is_empty() {
                m.event_id = only_index[0].clone();
            }
        }
        return Ok(());
    }
    for id in only_index {
        f.add(
            "index_mismatch",
            "index".into(),
            &id,
            "the index holds an event the journal does not (inserted into the index)".into(),
            true,
        );
    }
    Ok(())
}

/// The audit log's chain, and the head the newest checkpoint names.
fn check_audit(
    store: &Store,
    ckps: &checkpoints::Checkpoints,
    f: &mut Findings,
) -> anyhow::Result<()> {
    let (_, v) = store
        .audit
        .read(0, 1, "", || store.meta.audit_head().ok().flatten())?;
    let mut by_line: Vec<(u64, Vec<String>)> = Vec::new();
    for p in v.problems.iter().filter(|p| !p.recorded) {
        match by_line.last_mut() {
            Some((line, whats)) if *line == p.line => whats.push(p.what.clone()),
            _ => by_line.push((p.line, vec![p.what.clone()])),
        }
    }
    for (line, whats) in by_line {
        f.add(
            "audit_altered",
            format!("audit.log line {line}"),
            "",
            whats.join("; "),
            true,
        );
    }
    if let Some((seq, head, n)) = ckps.newest_audit_head()
        && seq > 0
    {
        match store.audit.hash_at(seq)? {
            Some(h) if h == head => {}
            found => f.add(
                "audit_altered",
                format!("audit seq {seq}"),
                "",
                format!(
                    "checkpoint {n} names audit entry {seq} with hash {}…, the log has {}",
                    head.get(..16).unwrap_or(&head),
                    found.map_or("no such entry".to_owned(), |h| format!(
                        "hash {}…",
                        h.get(..16).unwrap_or(&h)
                    ))
                ),
                true,
            ),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
