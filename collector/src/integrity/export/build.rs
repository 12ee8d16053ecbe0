//! The collector's side of an export: the selected events' evidence read
//! from the store and sent as bundle files, then the audit entries, the
//! signer's certificate, the README, the manifest, `SHA256SUMS` and their
//! signatures. Runs on a blocking thread; memory holds the events' merged
//! views and the file list, never a whole raw message.

use std::collections::BTreeSet;

use kiroku_proto::event::Kind;
use kiroku_proto::{AuditEntry, Event, SearchRequest};

use super::ExportError;
use super::audit_select::Concern;
use super::layout::{self, EventFile, event_path};
use super::manifest::{self, Manifest, ManifestEvent};
use super::sink::{ChunkOut, Sink};
use crate::store::Store;

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
    /// The collector's name.
    pub collector: String,
    /// The signing certificate (PEM) and a function signing with its key;
    /// None: the collector has no signing key (the bundle says so).
    pub signer: Option<(
        String,
        &'a (dyn Fn(&[u8]) -> Result<Vec<u8>, String> + Sync),
    )>,
    /// Why there is no signer.
    pub unsigned_reason: String,
}

/// What was exported.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub events: usize,
    pub files: usize,
    pub bytes: u64,
}

/// The events `filter` selects, oldest first (merged views from the
/// index), at most [`MAX_EVENTS`].
pub fn select(store: &Store, filter: &SearchRequest) -> Result<Vec<Event>, ExportError> {
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
        out.extend(events);
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
    events: &[Event],
    own: &AuditEntry,
    out: impl ChunkOut,
) -> Result<Summary, ExportError> {
    let mut sink = Sink::new(out);
    let mut listed = Vec::with_capacity(events.len());
    let checkpoints = BTreeSet::new();
    for (i, e) in events.iter().enumerate() {
        if i % 100 == 0 {
            sink.progress("events", i as u64, events.len() as u64)?;
        }
        listed.push(event_files(store, e, &mut sink)?);
    }
    sink.progress("events", events.len() as u64, events.len() as u64)?;
    audit_lines(store, case, events, own, &mut sink)?;
    if let Some((pem, _)) = &who.signer {
        sink.file(layout::SIGNER_PEM, pem.as_bytes())?;
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
        collector: who.collector.clone(),
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
        checkpoints: checkpoints.into_iter().collect(),
        files,
    };
    let manifest_bytes = manifest::to_bytes(&m);
    let sums = manifest::sums(&manifest::sums_files(&m, &manifest_bytes));
    sink.file(layout::MANIFEST, &manifest_bytes)?;
    sink.file(layout::SUMS, sums.as_bytes())?;
    if let Some((_, sign)) = &who.signer {
        let sig = sign(&manifest_bytes).map_err(ExportError::Sign)?;
        sink.file(layout::MANIFEST_SIG, &sig)?;
        let sig = sign(sums.as_bytes()).map_err(ExportError::Sign)?;
        sink.file(layout::SUMS_SIG, &sig)?;
    }
    Ok(Summary {
        events: events.len(),
        files: sink.files().len(),
        bytes: sink.bytes,
    })
}

/// One event's files; its manifest entry.
fn event_files<S: ChunkOut>(
    store: &Store,
    e: &Event,
    sink: &mut Sink<S>,
) -> Result<ManifestEvent, ExportError> {
    let mut m = ManifestEvent {
        event_id: e.event_id.clone(),
        kind: kind_name(e).into(),
        event: event_path(&e.event_id, EventFile::Json),
        recorded: String::new(),
        additions: String::new(),
        proof: String::new(),
        mail: String::new(),
        leaf: None,
        checkpoint: None,
        notes: Vec::new(),
    };
    let json = serde_json::to_vec_pretty(e).map_err(|x| ExportError::Internal(x.to_string()))?;
    sink.file(&m.event, &json)?;
    if let Some(Kind::Email(mail)) = &e.kind {
        if !mail.raw_sha256.is_empty() && store.blobs.has(&mail.raw_sha256) {
            let reader = store
                .blobs
                .reader(&mail.raw_sha256)
                .map_err(|x| ExportError::Read {
                    what: format!("raw message {} of {}", mail.raw_sha256, e.event_id),
                    error: x.to_string(),
                })?;
            m.mail = event_path(&e.event_id, EventFile::Mail);
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

/// `audit/entries.jsonl`: the lines of the audit log up to the export's
/// own entry that concern the events (see `audit_select.rs`), verbatim.
fn audit_lines<S: ChunkOut>(
    store: &Store,
    case: &Case,
    events: &[Event],
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
    match &e.kind {
        Some(Kind::Email(_)) => "email",
        Some(Kind::File(_)) => "file",
        Some(Kind::HostChange(_)) => "host_change",
        Some(Kind::Gap(_)) => "gap",
        Some(Kind::Integrity(_)) => "integrity",
        None => "none",
    }
}
