//! The collector's side of an export: the selected events' evidence read
//! from the store and sent as bundle files, then the audit entries, the
//! signer's certificate, the README, the manifest, `SHA256SUMS` and their
//! signatures. Runs on a blocking thread; memory holds a small record and the
//! journal entry (recorded bytes + additions) of each exported event and
//! the file list, never a raw message.

use std::collections::{BTreeSet, HashMap};

use kiroku_proto::event::Kind;
use kiroku_proto::journal_entry::Entry;
use kiroku_proto::{AuditEntry, Event, InclusionProof, SearchRequest, SignedCheckpoint};
use prost::Message;

use super::audit_select::Concern;
use super::layout::{self, EventFile, event_path};
use super::manifest::{self, Manifest, ManifestEvent};
use super::sink::{ChunkOut, Sink};
use super::{ExportError, evidence};
use crate::integrity::signing::Signer;
use crate::store::Store;
use crate::store::journal::{self, EntryRead};

/// Most events one bundle holds; a larger case is exported in parts (by
/// time range).
pub const MAX_EVENTS: usize = 100_000;

/// What the exporter asked for.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub reason: String,
    pub filter: SearchRequest,
}

/// Who exports, and with which key the collector signs.
pub struct Exporter<'a> {
    pub identity: String,
    /// The collector's signing key (its certificate names the collector);
    /// None: the collector has none, and the bundle says why.
    pub signer: Option<&'a Signer>,
    pub unsigned_reason: String,
}

/// What was exported.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub events: usize,
    pub files: usize,
    pub bytes: u64,
}

/// What the export keeps of each selected event while it works (the
/// content is read again from the journal, one event at a time, so a case
/// of large mails does not sit in memory).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selected {
    pub event_id: String,
    pub kind: &'static str,
    /// The agent's clock and the corrected time.
    pub times: [i64; 2],
    /// SHA-256s of its content: raw message, attachments, file.
    pub hashes: Vec<String>,
}

impl Selected {
    pub fn of(e: &Event) -> Selected {
        let mut hashes = Vec::new();
        match &e.kind {
            Some(Kind::Email(m)) => {
                hashes.push(m.raw_sha256.to_lowercase());
                hashes.extend(m.attachments.iter().map(|a| a.sha256.to_lowercase()));
            }
            Some(Kind::File(f)) => hashes.push(f.sha256.to_lowercase()),
            _ => {}
        }
        hashes.retain(|h| !h.is_empty());
        Selected {
            event_id: e.event_id.clone(),
            kind: kind_name(e),
            times: [e.observed_at_ms, kiroku_common::mail::corrected_ms(e)],
            hashes,
        }
    }
}

/// The events `filter` selects, oldest first, at most [`MAX_EVENTS`].
pub fn select(store: &Store, filter: &SearchRequest) -> Result<Vec<Selected>, ExportError> {
    let mut r = filter.clone();
    r.ascending = true;
    r.page_token.clear();
    let page = crate::store::index::MAX_PAGE as usize;
    let mut out = Vec::new();
    let mut offset = Some(0);
    while let Some(at) = offset {
        let (events, total, next) = store.index.search(&r, at, page)?;
        if total > MAX_EVENTS as u64 {
            return Err(ExportError::TooMany(total));
        }
        out.extend(events.iter().map(Selected::of));
        offset = next;
    }
    Ok(out)
}

/// Sends the bundle of `events` to `out`. `own` is the export's audit
/// entry, already written.
pub fn build(
    store: &Store,
    case: &Case,
    who: &Exporter<'_>,
    events: &[Selected],
    own: &AuditEntry,
    out: impl ChunkOut,
) -> Result<Summary, ExportError> {
    let mut sink = Sink::new(out);
    // Journal positions (the head, the checkpoints' ranges) are kept
    // across the pass: a purge's rewrite waits for it.
    let layout = store.layout_read();
    let end = store.journal.head().end;
    let (ledger, records) = evidence::checkpoints(store)?;
    let wanted: HashMap<String, usize> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (e.event_id.clone(), i))
        .collect();
    let total_leaves = store.journal.head().next_leaf;
    let found = evidence::find(store, &wanted, &records, end, |n| {
        sink.progress("journal", n, total_leaves)
    })?;
    drop(layout);
    let mut listed = Vec::with_capacity(events.len());
    let mut used = BTreeSet::new();
    for (i, (e, f)) in events.iter().zip(&found).enumerate() {
        if i % 100 == 0 {
            sink.progress("events", i as u64, events.len() as u64)?;
        }
        let m = event_files(store, e, f.as_ref(), &mut sink)?;
        used.extend(m.checkpoint);
        listed.push(m);
    }
    sink.progress("events", events.len() as u64, events.len() as u64)?;
    for &n in &used {
        let signed = ledger.read(n).map_err(|e| ExportError::Read {
            what: format!("checkpoint {n}"),
            error: e.to_string(),
        })?;
        checkpoint_files(n, &signed, &mut sink)?;
    }
    audit_lines(store, case, events, own, &mut sink)?;
    if let Some(signer) = who.signer {
        sink.file(layout::SIGNER_PEM, signer.cert_pem().as_bytes())?;
    }
    sink.file(layout::README, include_bytes!("README.txt"))?;
    let mut files = sink.files().to_vec();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let m = Manifest {
        format: manifest::FORMAT.into(),
        case: case.name.clone(),
        reason: case.reason.clone(),
        filter: serde_json::to_value(&case.filter).unwrap_or_default(),
        exporter: who.identity.clone(),
        collector: who
            .signer
            .map(|s| s.identity().name.clone())
            .unwrap_or_default(),
        exported_at: kiroku_common::rfc3339_ms(own.at_ms),
        exported_at_ms: own.at_ms,
        audit_seq: own.seq,
        audit_hash: own.hash.clone(),
        unsigned: if who.signer.is_some() {
            String::new()
        } else {
            who.unsigned_reason.clone()
        },
        events: listed,
        checkpoints: used.into_iter().collect(),
        files,
    };
    let manifest_bytes = manifest::to_bytes(&m);
    let sums = manifest::sums(&manifest::sums_files(&m, &manifest_bytes));
    sink.file(layout::MANIFEST, &manifest_bytes)?;
    sink.file(layout::SUMS, sums.as_bytes())?;
    if let Some(signer) = who.signer {
        let sign = |b: &[u8]| signer.sign(b).map_err(|e| ExportError::Sign(e.to_string()));
        sink.file(layout::MANIFEST_SIG, &sign(&manifest_bytes)?)?;
        sink.file(layout::SUMS_SIG, &sign(sums.as_bytes())?)?;
    }
    Ok(Summary {
        events: events.len(),
        files: sink.files().len(),
        bytes: sink.bytes,
    })
}

/// One event's files; its manifest entry. The JSON is the merged view of
/// the journal entry (what the proof covers); an event the journal scan
/// did not find is exported as the index holds it, with a note.
fn event_files<S: ChunkOut>(
    store: &Store,
    e: &Selected,
    found: Option<&evidence::Found>,
    sink: &mut Sink<S>,
) -> Result<ManifestEvent, ExportError> {
    let id = &e.event_id;
    let mut m = ManifestEvent {
        event_id: id.clone(),
        kind: e.kind.into(),
        event: event_path(id, EventFile::Json),
        recorded: String::new(),
        additions: String::new(),
        proof: String::new(),
        mail: String::new(),
        leaf: None,
        checkpoint: None,
        notes: Vec::new(),
    };
    let view = match found {
        None => {
            m.notes.push("not found in the event journal (damaged? `kiroku verify` tells); exported as the index holds it".into());
            store
                .index
                .get(id)?
                .ok_or_else(|| ExportError::Internal(format!("event {id} left the index")))?
        }
        Some(f) => stored_files(id, &f.read, f, &mut m, sink)?,
    };
    let json =
        serde_json::to_vec_pretty(&view).map_err(|x| ExportError::Internal(x.to_string()))?;
    sink.file(&m.event, &json)?;
    if let Some(Kind::Email(mail)) = &view.kind {
        if !mail.raw_sha256.is_empty() && store.blobs.has(&mail.raw_sha256) {
            let reader = store
                .blobs
                .reader(&mail.raw_sha256)
                .map_err(|x| ExportError::Read {
                    what: format!("raw message {} of {id}", mail.raw_sha256),
                    error: x.to_string(),
                })?;
            m.mail = event_path(id, EventFile::Mail);
            sink.stream(&m.mail, reader)?;
        } else {
            m.notes.push(if mail.raw_not_kept.is_empty() {
                "no raw message is held for this event".into()
            } else {
                format!("no raw message: {}", mail.raw_not_kept)
            });
        }
    }
    Ok(m)
}

/// The recorded bytes, additions and proof of a journalled event; its
/// merged view.
fn stored_files<S: ChunkOut>(
    id: &str,
    read: &EntryRead,
    f: &evidence::Found,
    m: &mut ManifestEvent,
    sink: &mut Sink<S>,
) -> Result<Event, ExportError> {
    let bad = |why: String| ExportError::Read {
        what: format!("the journal entry of {id}"),
        error: why,
    };
    let Some(entry) = &read.entry else {
        m.notes.push(
            "stored before the journal was hash-chained (KRJ1): no recorded bytes, no proof".into(),
        );
        return Event::decode(read.bytes.as_slice()).map_err(|e| bad(e.to_string()));
    };
    let Some(Entry::Event(stored)) = &entry.entry else {
        return Err(bad("not an event entry".into()));
    };
    let view = journal::merged(stored).map_err(|e| bad(e.to_string()))?;
    m.leaf = f.leaf;
    m.recorded = event_path(id, EventFile::Recorded);
    sink.file(&m.recorded, &stored.recorded)?;
    m.additions = event_path(id, EventFile::Additions);
    let additions = stored.additions.clone().unwrap_or_default();
    sink.file(&m.additions, &additions.encode_to_vec())?;
    let (checkpoint, path) = match &f.proof {
        Some((n, path)) => (*n, path.iter().map(|h| h.to_vec()).collect()),
        None => {
            m.notes.push("not yet covered by a checkpoint when exported: the manifest signature covers it, no Merkle proof".into());
            (0, Vec::new())
        }
    };
    m.checkpoint = f.proof.as_ref().map(|(n, _)| *n);
    let proof = InclusionProof {
        event_id: id.to_owned(),
        checkpoint,
        leaf: f.leaf.unwrap_or_default(),
        entry: read.bytes.clone(),
        path,
    };
    m.proof = event_path(id, EventFile::Proof);
    sink.file(&m.proof, &proof.encode_to_vec())?;
    Ok(view)
}

/// A checkpoint as stored, and its parts for `openssl`.
fn checkpoint_files<S: ChunkOut>(
    n: u64,
    signed: &SignedCheckpoint,
    sink: &mut Sink<S>,
) -> Result<(), ExportError> {
    sink.file(&layout::checkpoint_path(n, "ckp"), &signed.encode_to_vec())?;
    sink.file(&layout::checkpoint_path(n, "bin"), &signed.checkpoint)?;
    for (ext, part) in [
        ("sig", &signed.signature),
        ("der", &signed.signer_cert_der),
        ("tsr", &signed.timestamp_token),
    ] {
        if !part.is_empty() {
            sink.file(&layout::checkpoint_path(n, ext), part)?;
        }
    }
    Ok(())
}

/// `audit/entries.jsonl`: the lines of the audit log up to the export's
/// own entry that concern the events (see `audit_select.rs`), verbatim.
fn audit_lines<S: ChunkOut>(
    store: &Store,
    case: &Case,
    events: &[Selected],
    own: &AuditEntry,
    sink: &mut Sink<S>,
) -> Result<(), ExportError> {
    let concern = Concern::new(&case.filter, events);
    let mut out = Vec::new();
    store
        .audit
        .each_line_until(own.seq, |line, e| {
            if e.seq == own.seq || concern.reason(e).is_some() {
                out.extend_from_slice(line);
                out.push(b'\n');
            }
        })
        .map_err(|x| ExportError::Read {
            what: "the audit log".into(),
            error: x.to_string(),
        })?;
    sink.file(layout::AUDIT, &out)
}

fn kind_name(e: &Event) -> &'static str {
    match crate::retention::policy::kind_name(e) {
        "" => "none",
        k => k,
    }
}
