//! `kiroku-collector repair`: checks every part of a stopped collector's
//! data directory and recovers what can be recovered.
//!
//! - **journal** (the copy of record): every record's checksum; damaged
//!   stretches are reported and skipped. Events the index still holds but
//!   the journal lost are written back to the journal.
//! - **index**: opens and every file matches its checksum, and it holds
//!   every journalled event; otherwise (or with `--rebuild-index`) it is
//!   rebuilt from the journal, the old one kept as `index.damaged-<time>`.
//! - **meta** (high-water marks, hosts): opens; otherwise it is moved aside
//!   and rebuilt from the journal. High-water marks are raised to what the
//!   journal holds, so resent batches are recognised as duplicates.
//! - **blobs**: every blob decompresses to the hash it is named after;
//!   damaged ones move to `blobs.damaged/` and the events whose raw
//!   message they held are named.
//! - **audit log**: the hash chain is checked (reported, never rewritten).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::path::Path;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use kiroku_proto::{Event, HostInfo, event::Kind};
use prost::Message;

use super::blobs::BlobStore;
use super::index::EventIndex;
use super::journal;
use super::meta::MetaStore;

pub mod blob_check;

#[derive(Debug, Default, Clone, Copy)]
pub struct RepairOptions {
    /// Rebuild the index from the journal even if it looks sound.
    pub rebuild_index: bool,
    /// Hide progress bars (tests, logs).
    pub quiet: bool,
}

/// What repair found and did; `problems` are what could not be recovered.
#[derive(Debug, Default)]
pub struct RepairReport {
    pub lines: Vec<String>,
    pub problems: Vec<String>,
}

impl RepairReport {
    fn say(&mut self, line: String) {
        self.lines.push(line);
    }
}

fn stamp() -> i64 {
    kiroku_common::now_ms() / 1000
}

/// 128-bit key of an event id (two independent hashes), to tell which
/// events the journal holds without keeping every id in memory.
#[derive(Clone)]
struct IdKeys(std::hash::RandomState, std::hash::RandomState);

impl IdKeys {
    fn key(&self, id: &str) -> u128 {
        let mut a = self.0.build_hasher();
        a.write(id.as_bytes());
        let mut b = self.1.build_hasher();
        b.write(id.as_bytes());
        ((a.finish() as u128) << 64) | b.finish() as u128
    }
}

fn bar(len: u64, what: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {bytes}/{total_bytes} ({eta})")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_owned());
    pb
}

fn journal_bytes(dir: &Path) -> u64 {
    journal::segments(dir)
        .unwrap_or_default()
        .iter()
        .filter_map(|n| std::fs::metadata(dir.join(format!("{n:020}.log"))).ok())
        .map(|m| m.len())
        .sum()
}

/// What the journal says about each stream and host.
#[derive(Default)]
struct JournalFacts {
    ids: HashSet<u128>,
    distinct: u64,
    top_seq: HashMap<(String, String), u64>,
    per_agent: HashMap<String, (u64, i64)>,
    identity: HashMap<String, (i64, kiroku_proto::HostIdentity)>,
}

impl JournalFacts {
    fn note(&mut self, keys: &IdKeys, e: &Event) {
        if !self.ids.insert(keys.key(&e.event_id)) {
            return;
        }
        self.distinct += 1;
        let top = self
            .top_seq
            .entry((e.agent_id.clone(), e.stream_id.clone()))
            .or_default();
        *top = (*top).max(e.seq);
        let a = self.per_agent.entry(e.agent_id.clone()).or_default();
        a.0 += 1;
        a.1 = a.1.max(e.received_at_ms);
        if let Some(Kind::HostChange(h)) = &e.kind
            && let Some(id) = &h.identity
        {
            let slot = self
                .identity
                .entry(e.agent_id.clone())
                .or_insert((i64::MIN, Default::default()));
            if e.received_at_ms >= slot.0 {
                *slot = (e.received_at_ms, id.clone());
            }
        }
    }
}

/// Checks and repairs the data directory `dir` of a stopped collector.
pub fn repair(dir: &Path, opts: RepairOptions) -> anyhow::Result<RepairReport> {
    let mut r = RepairReport::default();
    anyhow::ensure!(
        dir.is_dir(),
        "{} is not a collector data directory (it does not exist)",
        dir.display()
    );
    let jdir = dir.join("journal");
    let idir = dir.join("index");
    let keys = IdKeys(Default::default(), Default::default());

    // 1. The journal.
    let mut facts = JournalFacts::default();
    let pb = bar(journal_bytes(&jdir), "journal", opts.quiet);
    let report = journal::scan(&jdir, |e| {
        pb.inc(e.encoded_len() as u64 + 12);
        facts.note(&keys, &e);
    })?;
    pb.finish_and_clear();
    r.say(format!(
        "journal {}: {} records, {} distinct events",
        jdir.display(),
        report.records,
        facts.distinct
    ));
    if report.torn_tail > 0 {
        r.say(format!(
            "journal: a torn last record ({} bytes, a crash during an append; never acknowledged) will be cut at the next start",
            report.torn_tail
        ));
    }
    for (path, at, len) in &report.damaged {
        r.say(format!(
            "journal {}: {len} damaged bytes at offset {at} skipped",
            path.display()
        ));
    }

    // 2. The index: readable, checksums, complete?
    let index_state = check_index(&idir, &mut r);
    let mut rebuild = opts.rebuild_index || index_state.is_err();
    if let Ok(index) = &index_state {
        // Events the journal lost but the index still has go back into it.
        let mut missing = Vec::new();
        let mut indexed = 0u64;
        let walk = index.for_each_stored(|e| {
            indexed += 1;
            if !facts.ids.contains(&keys.key(&e.event_id)) {
                missing.push(e);
            }
            Ok(())
        });
        match walk {
            Err(e) => {
                r.say(format!(
                    "index: reading its stored events failed ({e:#}); rebuilding it"
                ));
                rebuild = true;
            }
            Ok(()) => {
                if !missing.is_empty() {
                    let j = journal::Journal::open(&jdir)?;
                    j.append(&missing)?;
                    for e in &missing {
                        facts.note(&keys, e);
                    }
                    r.say(format!(
                        "journal: {} events only the index still held were written back to it",
                        missing.len()
                    ));
                }
                if indexed < facts.distinct {
                    r.say(format!(
                        "index: holds {indexed} of the journal's {} events; rebuilding it",
                        facts.distinct
                    ));
                    rebuild = true;
                } else {
                    r.say(format!("index {}: sound, {indexed} events", idir.display()));
                }
            }
        }
    }
    if !report.damaged.is_empty() && !rebuild {
        // Damage the index did not cover is lost for good.
        let covered = index_state.is_ok();
        if !covered {
            r.problems
                .push("journal records were damaged and the index could not supply them".into());
        }
    }
    drop(index_state);
    // The damage is reported here (and what it covered is recovered from
    // the index or listed as lost below): a start no longer repeats it.
    journal::mark_reviewed(&jdir, &report.damaged)?;
    if rebuild {
        let n = rebuild_index(&idir, &jdir, opts.quiet)?;
        r.say(format!(
            "index {}: rebuilt from the journal, {n} events",
            idir.display()
        ));
        if !report.damaged.is_empty() {
            r.problems.push(format!(
                "{} damaged journal stretches: the events in them are lost (the index could not supply them)",
                report.damaged.len()
            ));
        }
    }

    // 3. Meta.
    repair_meta(&dir.join("meta"), &facts, &mut r)?;

    // 4. Blobs: those present, then those the events need.
    let checked = check_blobs(dir, &idir, opts.quiet, &mut r)?;
    check_references(dir, &jdir, &checked, &mut r)?;

    // 5. The audit log (read only: damage there is evidence).
    let head = MetaStore::open(&dir.join("meta"))
        .ok()
        .and_then(|m| m.audit_head().ok().flatten());
    match super::audit::verify_file(&dir.join("audit.log"), head) {
        Ok(v) if v.problem.is_empty() => {
            r.say(format!("audit log: chain intact, {} entries", v.entries))
        }
        Ok(v) => r.problems.push(format!(
            "audit log: {} (kept as it is: it is evidence; `kiroku audit` shows it)",
            v.problem
        )),
        Err(e) => r.problems.push(format!("audit log: {e}")),
    }
    if let Err(e) = audit_repair(dir, opts, &r) {
        r.problems.push(format!(
            "audit log: this repair could not be recorded: {e:#}"
        ));
    }
    Ok(r)
}

/// Records the repair in the audit log (an admin entry: who ran it, the
/// options, what it found), its head noted in the metadata like the
/// collector's own entries. Damage in the log is left for the collector's
/// next start to record (`AuditLog::open`'s findings are not acted on
/// here); a torn final write is cut as at a start.
fn audit_repair(dir: &Path, opts: RepairOptions, r: &RepairReport) -> anyhow::Result<()> {
    use super::audit::{AuditLog, admin_call, local_identity};
    let meta = MetaStore::open(&dir.join("meta"))?;
    let (log, _) = AuditLog::open(&dir.join("audit.log"), meta.audit_head()?)?;
    let keeper = meta.clone();
    log.keep_head_with(Box::new(move |seq, hash| {
        keeper
            .set_audit_head(seq, hash)
            .and_then(|()| keeper.flush())
            .map_err(|e| e.to_string())
    }));
    let outcome = if r.problems.is_empty() {
        "everything sound or recovered".to_owned()
    } else {
        format!("LOST: {}", r.problems.join("; "))
    };
    let detail = format!(
        "repair{}: {outcome}; {}",
        if opts.rebuild_index {
            " --rebuild-index"
        } else {
            ""
        },
        r.lines.join("; ")
    );
    log.append_admin(&local_identity(), admin_call::REPAIR, &detail)?;
    Ok(())
}

fn check_index(idir: &Path, r: &mut RepairReport) -> Result<EventIndex, ()> {
    if !idir.join("meta.json").exists() {
        r.say(format!("index {}: missing; rebuilding it", idir.display()));
        return Err(());
    }
    match EventIndex::damaged_files(idir) {
        Ok(bad) if bad.is_empty() => {}
        Ok(bad) => {
            let names: Vec<String> = bad.iter().map(|p| p.display().to_string()).collect();
            r.say(format!(
                "index: {} damaged files ({}); rebuilding it",
                bad.len(),
                names.join(", ")
            ));
            return Err(());
        }
        Err(e) => {
            r.say(format!("index does not open ({e}); rebuilding it"));
            return Err(());
        }
    }
    EventIndex::open(idir).map_err(|e| {
        r.say(format!("index does not open ({e}); rebuilding it"));
    })
}

/// Builds a new index from the journal beside the old one, then swaps them
/// (the old one is kept as `index.damaged-<time>`). Returns the events.
pub fn rebuild_index(idir: &Path, jdir: &Path, quiet: bool) -> anyhow::Result<u64> {
    let fresh_path = idir.with_extension("rebuilding");
    if fresh_path.exists() {
        std::fs::remove_dir_all(&fresh_path)
            .with_context(|| format!("removing {}", fresh_path.display()))?;
    }
    let fresh = EventIndex::create(&fresh_path)?;
    // The analysis' derived fields come from the annotations in the meta
    // store (closed again before the meta check runs); without it the
    // index is rebuilt without them, and `reanalyse` brings them back.
    let meta = idir
        .parent()
        .map(|d| d.join("meta"))
        .filter(|m| m.exists())
        .and_then(|m| super::meta::MetaStore::open(&m).ok());
    if let Some(a) = meta
        .as_ref()
        .and_then(|m| crate::analysis::store::AnnotationStore::open(m).ok())
    {
        let source = match meta
            .as_ref()
            .and_then(|m| crate::delivery::DeliveryStore::open(m).ok())
        {
            Some(d) => crate::delivery::derived_source(a.derived_source(), d),
            None => a.derived_source(),
        };
        fresh.set_derived(source);
    }
    // Events purged whose journal records are not stubs yet stay out.
    let purged = match &meta {
        Some(m) => crate::store::purge::pending_event_ids(m)?,
        None => Default::default(),
    };
    let pb = bar(journal_bytes(jdir), "index", quiet);
    let (mut batch, mut provenance) = (Vec::new(), Vec::new());
    let mut failed = None;
    // Each event is indexed with its place in the journal chain.
    journal::scan_events(jdir, |e, p| {
        if failed.is_some() {
            return;
        }
        pb.inc(e.encoded_len() as u64 + 12);
        if purged.contains(&e.event_id) {
            return;
        }
        batch.push(e);
        provenance.push(p);
        if batch.len() >= 50_000 {
            if let Err(e) = fresh
                .add_recorded(&batch, &provenance)
                .and_then(|_| fresh.commit())
            {
                failed = Some(e);
            }
            batch.clear();
            provenance.clear();
        }
    })?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    fresh.add_recorded(&batch, &provenance)?;
    fresh.commit()?;
    pb.finish_and_clear();
    drop(meta);
    let n = fresh.count();
    // Its merges finish before the directory moves.
    fresh.close_after_merges()?;
    if idir.exists() {
        let aside = idir.with_extension(format!("damaged-{}", stamp()));
        std::fs::rename(idir, &aside)
            .with_context(|| format!("moving {} to {}", idir.display(), aside.display()))?;
    }
    std::fs::rename(&fresh_path, idir).with_context(|| {
        format!(
            "moving the rebuilt index {} to {}",
            fresh_path.display(),
            idir.display()
        )
    })?;
    Ok(n)
}

fn repair_meta(mdir: &Path, facts: &JournalFacts, r: &mut RepairReport) -> anyhow::Result<()> {
    let meta = match MetaStore::open(mdir) {
        Ok(m) => m,
        Err(e) => {
            let aside = mdir.with_extension(format!("damaged-{}", stamp()));
            std::fs::rename(mdir, &aside)
                .with_context(|| format!("moving {} to {}", mdir.display(), aside.display()))?;
            r.say(format!(
                "meta does not open ({e}); moved to {} and rebuilt from the journal (alert history, audit head and the analysis' annotations start afresh: run `kiroku-collector reanalyse` to analyse stored mail again)",
                aside.display()
            ));
            MetaStore::open(mdir)?
        }
    };
    let mut raised = 0;
    for ((agent, stream), top) in &facts.top_seq {
        if meta.stored_seq(agent, stream)? < *top {
            meta.set_stored_seq(agent, stream, *top)?;
            raised += 1;
        }
    }
    let mut hosts = 0;
    for (agent, (events, last)) in &facts.per_agent {
        if meta.host(agent)?.is_none() {
            meta.put_host(&HostInfo {
                agent_id: agent.clone(),
                host: facts.identity.get(agent).map(|(_, id)| id.clone()),
                last_seen_ms: *last,
                events_stored: *events,
                ..Default::default()
            })?;
            hosts += 1;
        }
    }
    meta.flush()?;
    r.say(format!(
        "meta {}: {} streams, {raised} high-water marks raised to the journal's, {hosts} host records restored",
        mdir.display(),
        facts.top_seq.len()
    ));
    Ok(())
}

/// The blob check of `repair`: the shared scan (`repair/blob_check.rs`,
/// which `kiroku verify` runs too), then damaged blobs are moved aside and
/// the events whose raw content they held are named.
fn check_blobs(
    dir: &Path,
    idir: &Path,
    quiet: bool,
    r: &mut RepairReport,
) -> anyhow::Result<BlobCheck> {
    let bdir = dir.join("blobs");
    let blobs = BlobStore::open(&bdir)?;
    let total = blob_check::total_bytes(&bdir)?;
    let pb = bar(total, "blobs", quiet);
    let scan = blob_check::scan(&bdir, &blobs, |n| pb.inc(n))?;
    pb.finish_and_clear();
    let checked = BlobCheck {
        damaged: scan.damaged.iter().map(|(_, sha)| sha.clone()).collect(),
        missing_parts: scan.missing_parts.clone(),
    };
    let damaged = scan.damaged;
    if damaged.is_empty() {
        r.say(format!(
            "blobs {}: {} present and sound",
            bdir.display(),
            scan.files
        ));
        return Ok(checked);
    }
    let aside = dir.join("blobs.damaged");
    std::fs::create_dir_all(&aside).with_context(|| format!("creating {}", aside.display()))?;
    let index = EventIndex::open(idir).ok();
    for (p, sha) in &damaged {
        let to = aside.join(p.file_name().unwrap_or_default());
        std::fs::rename(p, &to)
            .with_context(|| format!("moving {} to {}", p.display(), to.display()))?;
        let events = index
            .as_ref()
            .and_then(|i| i.by_hash(sha, 20).ok())
            .map(|(v, _)| {
                v.iter()
                    .map(|e| e.event_id.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        r.problems.push(format!(
            "blob {sha} is damaged (moved to {}); the raw content is lost for events: {}",
            to.display(),
            if events.is_empty() {
                "none found"
            } else {
                &events
            }
        ));
    }
    r.say(format!(
        "blobs {}: {} present and sound, {} damaged",
        bdir.display(),
        scan.files - damaged.len() as u64,
        damaged.len()
    ));
    Ok(checked)
}

/// Every blob a journalled event references must be present (a damaged
/// one was reported by [`check_blobs`]); the events whose raw message is
/// missing, or whose manifest names a missing attachment blob, are named.
fn check_references(
    dir: &Path,
    jdir: &Path,
    checked: &BlobCheck,
    r: &mut RepairReport,
) -> anyhow::Result<()> {
    let blobs = BlobStore::open(&dir.join("blobs"))?;
    let mut refs = blob_check::References::new(&checked.damaged, &checked.missing_parts);
    journal::scan(jdir, |e| refs.note(&blobs, &e))?;
    let found = refs.finish();
    for (sha, ids) in &found.missing {
        r.problems.push(format!(
            "blob {sha} is missing: it is the raw message of event(s) {}, which cannot be served (restore {} from a backup if there is one)",
            blob_check::describe_ids(ids),
            blob_check::blob_path(sha).display()
        ));
    }
    for (m, parts, ids) in &found.partless {
        r.problems.push(format!(
            "raw message {m} names attachment blob(s) {} that are missing: event(s) {} cannot be served",
            parts.join(", "),
            if ids.is_empty() {
                "none found".to_owned()
            } else {
                blob_check::describe_ids(ids)
            }
        ));
    }
    if found.missing.is_empty() && found.partless.is_empty() {
        r.say(format!(
            "blobs: every one of {} references from stored events is present",
            found.refs
        ));
    }
    Ok(())
}

/// What the blob check found, for the reference check after it.
#[derive(Default)]
struct BlobCheck {
    /// Blobs found damaged (and moved aside, already reported).
    damaged: HashSet<String>,
    /// Manifests whose attachment blobs are missing: manifest → parts.
    missing_parts: HashMap<String, Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use sha2::{Digest, Sha256};

    fn mail(agent: &str, seq: u64) -> Event {
        Event {
            event_id: format!("{agent}/s/{seq}"),
            agent_id: agent.into(),
            stream_id: "s".into(),
            seq,
            received_at_ms: 1000 + seq as i64,
            kind: Some(Kind::Email(kiroku_proto::EmailEvent {
                subject: format!("subject {seq}"),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn store_events(dir: &Path, events: &[Event]) {
        let s = Store::open(dir).expect("open");
        s.journal.append(events).expect("journal");
        s.index.add(events).expect("add");
        s.index.commit().expect("commit");
        for e in events {
            s.meta
                .set_stored_seq(&e.agent_id, &e.stream_id, e.seq)
                .expect("hw");
        }
        s.meta.flush().expect("flush");
    }

    const QUIET: RepairOptions = RepairOptions {
        rebuild_index: false,
        quiet: true,
    };

    #[test]
    fn a_deleted_index_is_rebuilt_from_the_journal() {
        let d = tempfile::tempdir().expect("tempdir");
        let events: Vec<Event> = (1..=50).map(|i| mail("a", i)).collect();
        store_events(d.path(), &events);
        std::fs::remove_dir_all(d.path().join("index")).expect("rm");
        let r = repair(d.path(), QUIET).expect("repair");
        assert!(r.problems.is_empty(), "{r:?}");
        let s = Store::open(d.path()).expect("reopen");
        assert_eq!(s.index.count(), 50);
        assert!(s.index.get("a/s/17").expect("get").is_some());
    }

    #[test]
    fn a_corrupted_index_file_is_detected_and_rebuilt() {
        let d = tempfile::tempdir().expect("tempdir");
        let events: Vec<Event> = (1..=200).map(|i| mail("a", i)).collect();
        store_events(d.path(), &events);
        // Flip a byte in the middle of the biggest segment file.
        let mut files: Vec<_> = std::fs::read_dir(d.path().join("index"))
            .expect("ls")
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "store" || x == "idx"))
            .collect();
        files.sort_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0));
        let victim = files.pop().expect("a segment file");
        let mut b = std::fs::read(&victim).expect("read");
        let mid = b.len() / 2;
        b[mid] ^= 0xff;
        std::fs::write(&victim, &b).expect("write");
        let r = repair(d.path(), QUIET).expect("repair");
        assert!(r.lines.iter().any(|l| l.contains("damaged files")), "{r:?}");
        assert!(r.problems.is_empty(), "{r:?}");
        let s = Store::open(d.path()).expect("reopen");
        assert_eq!(s.index.count(), 200);
    }

    #[test]
    fn journal_damage_is_recovered_from_the_index_and_meta_rebuilt() {
        let d = tempfile::tempdir().expect("tempdir");
        let events: Vec<Event> = (1..=20).map(|i| mail("b", i)).collect();
        store_events(d.path(), &events);
        // Damage the journal in the middle and destroy meta.
        let seg = d.path().join("journal").join(format!("{:020}.log", 1));
        let mut b = std::fs::read(&seg).expect("read");
        let mid = b.len() / 2;
        b[mid] ^= 0xff;
        std::fs::write(&seg, &b).expect("write");
        std::fs::remove_dir_all(d.path().join("meta")).expect("rm meta");
        std::fs::write(d.path().join("meta"), b"not a directory").expect("junk");
        let r = repair(d.path(), QUIET).expect("repair");
        assert!(r.problems.is_empty(), "{r:?}");
        assert!(
            r.lines
                .iter()
                .any(|l| l.contains("only the index still held")),
            "{r:?}"
        );
        let mut n = HashSet::new();
        journal::scan(&d.path().join("journal"), |e| {
            n.insert(e.event_id);
        })
        .expect("scan");
        assert_eq!(n.len(), 20);
        let s = Store::open(d.path()).expect("reopen");
        assert_eq!(s.meta.stored_seq("b", "s").expect("hw"), 20);
        assert_eq!(
            s.meta.host("b").expect("host").map(|h| h.events_stored),
            Some(20)
        );
    }

    #[test]
    fn a_damaged_blob_is_moved_aside_and_named() {
        let d = tempfile::tempdir().expect("tempdir");
        let s = Store::open(d.path()).expect("open");
        let data = b"raw message bytes".repeat(100);
        let sha = hex::encode(Sha256::digest(&data));
        s.blobs.put(&sha, &data).expect("put");
        drop(s);
        let files = blob_check::files(&d.path().join("blobs")).expect("ls");
        let mut b = std::fs::read(&files[0]).expect("read");
        let n = b.len();
        b[n - 3] ^= 0xff;
        std::fs::write(&files[0], &b).expect("write");
        let r = repair(d.path(), QUIET).expect("repair");
        assert_eq!(r.problems.len(), 1, "{r:?}");
        assert!(r.problems[0].contains(&sha));
        assert!(!files[0].exists());
    }

    #[test]
    fn a_damaged_attachment_names_the_mails_that_shared_it() {
        use base64::Engine;
        let d = tempfile::tempdir().expect("tempdir");
        let s = Store::open(d.path()).expect("open");
        let att: Vec<u8> = (0..200_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
            .collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&att);
        let mut shas = Vec::new();
        for i in 0..2 {
            let mut m = format!("Subject: {i}\r\n\r\n");
            for l in b64.as_bytes().chunks(76) {
                m.push_str(std::str::from_utf8(l).expect("ascii"));
                m.push_str("\r\n");
            }
            let sha = hex::encode(Sha256::digest(m.as_bytes()));
            s.blobs.put(&sha, m.as_bytes()).expect("put");
            shas.push(sha);
        }
        drop(s);
        let r = repair(d.path(), QUIET).expect("repair");
        assert!(r.problems.is_empty(), "sound store: {r:?}");
        let files = blob_check::files(&d.path().join("blobs")).expect("ls");
        let part = files
            .iter()
            .find(|p| p.extension().is_some_and(|x| x == "zst"))
            .expect("attachment blob");
        let mut b = std::fs::read(part).expect("read");
        let n = b.len();
        b[n / 2] ^= 0xff;
        std::fs::write(part, &b).expect("write");
        let r = repair(d.path(), QUIET).expect("repair");
        assert_eq!(r.problems.len(), 3, "the attachment and both mails: {r:?}");
        for sha in &shas {
            assert!(
                r.problems.iter().any(|p| p.contains(sha.as_str())),
                "{sha}: {r:?}"
            );
        }
    }
}
