//! Analysis: what the collector derives from stored mail content, off the
//! ingest path — files inside attached messages and TNEF, archive members
//! (`archive`), real types and mismatches (`types`), S/MIME and PGP
//! (`crypto`), attachment text (`text`) — kept as annotations beside the
//! event (`store`), never as edits of the event the agent recorded.
//!
//! Flow: the committer queues every stored mail whose raw message the
//! collector holds, in the same durable step as the event
//! (`store::AnnotationStore::enqueue`); the worker pool (`worker`) takes
//! queued events, runs [`analyse`], stores the annotations, evaluates the
//! sensitive-content alert rules on what was found inside, re-indexes the
//! event with the derived fields (member and nested file hashes with the
//! attachment hashes, their names with the attachment names, the derived
//! tags; see `store::index::Derived`), and only then removes the queue
//! entry. A crash at any point redoes the entry; analysing again is
//! idempotent (an event whose annotations are of the current
//! [`VERSION`] is only re-indexed).
//!
//! What a file holds depends only on its bytes, so the content part of an
//! analysis is kept by SHA-256 (`AnnotationStore::file`) and reused by
//! every other mail with the same file, by re-indexing and by a rebuild.
//!
//! Architecture invariant: analysis never fails a mail. A file that cannot
//! be read, opened or typed is recorded with a status saying why; only the
//! annotation store itself failing keeps an entry queued (retried).
//!
//! One event's analysis is a `Run` (here, with [`analyse`]), its work one
//! `impl Run` per concept: finding each attachment's bytes (`content.rs`),
//! one file typed and sent on (`file.rs`), the per-mail budget
//! (`budget.rs`), a file's archive listing and text (`leaf.rs`), files
//! inside attached mail and TNEF (`nested.rs`). `config.rs` holds
//! `[analysis]` and the `Limits` of a run.

pub mod archive;
mod budget;
mod config;
mod content;
pub mod crypto;
mod file;
mod leaf;
mod nested;
pub mod ppap;
pub mod read;
pub mod reanalyse;
pub mod store;
pub mod text;
pub mod tnef;
pub mod types;
pub mod worker;

use std::collections::BTreeSet;

use kiroku_proto::{Annotations, AttachmentAnalysis, Event, event::Kind};

use crate::store::blobs::BlobStore;
pub use config::{AnalysisConfig, Limits};
use file::{default_name, message_name};
use store::{AnnotationError, AnnotationStore};

/// The analysis version: bump it when what [`analyse`] derives changes, so
/// `kiroku-collector reanalyse` and the per-file cache know that older
/// annotations are stale. 2: text kept by format and charset
/// (`text_key`), results the environment caused no longer cached, the
/// per-mail budget (version 1's per-file cache may hold a text decision
/// a sender forced, or a timeout, for good).
pub const VERSION: u32 = 2;

pub const TAG_TYPE_MISMATCH: &str = "type-mismatch";
pub const TAG_ENCRYPTED_ATTACHMENT: &str = "encrypted-attachment";
pub const TAG_ARCHIVE_BOUNDED: &str = "archive-bounded";
pub const TAG_TEXT_UNREADABLE: &str = "attachment-text-unreadable";
/// Part of the mail was not analysed: the event's budget ran out.
pub const TAG_EVENT_BUDGET: &str = "analysis-budget";
/// The analysis of the mail failed (a panic, see worker.rs).
pub const TAG_ANALYSIS_FAILED: &str = "analysis-failed";

/// How the status of a file that the event's budget left out begins.
pub const EVENT_BUDGET: &str = "not analysed: event budget";

/// Whether a status says that something outside the file stopped the
/// work (a reader that timed out or could not start, a time bound): such
/// a result is not kept in the per-file cache and marks the event's
/// annotations for `reanalyse` (`Annotations.retry`).
pub fn transient(status: &str) -> bool {
    status.split("; ").any(|s| {
        s.starts_with("timed out after")
            || (s.starts_with("unreadable: the reader") && s.contains("cannot start"))
            || (s.starts_with("bounded: ") && s.contains(" ms spent"))
            || s.starts_with(&format!("{EVENT_BUDGET}: time"))
    })
}

/// Whether the committer queues `e` for analysis: mail whose raw message
/// the collector holds.
pub fn wanted(e: &Event) -> bool {
    matches!(&e.kind, Some(Kind::Email(m)) if !m.raw_sha256.is_empty() && m.raw_not_kept.is_empty())
}

/// One event's analysis in progress.
struct Run<'a> {
    blobs: &'a BlobStore,
    store: &'a AnnotationStore,
    limits: &'a Limits,
    out: Annotations,
    tags: BTreeSet<String>,
    nested: usize,
    /// The event's budget spent so far.
    started: std::time::Instant,
    expanded: u64,
    text_indexed: u64,
}

/// Analyses one event: every attachment (and every file inside attached
/// messages and TNEF, recursively), S/MIME and PGP. Stores the per-file
/// analyses and texts; returns the event's annotations (not stored: the
/// worker adds the alert tags first). Errors only when the annotation
/// store fails.
pub fn analyse(
    event: &Event,
    blobs: &BlobStore,
    store: &AnnotationStore,
    limits: &Limits,
) -> Result<Annotations, AnnotationError> {
    let mut run = Run {
        blobs,
        store,
        limits,
        out: Annotations {
            event_id: event.event_id.clone(),
            version: VERSION,
            analysed_at_ms: kiroku_common::now_ms(),
            ..Default::default()
        },
        tags: BTreeSet::new(),
        nested: 0,
        started: std::time::Instant::now(),
        expanded: 0,
        text_indexed: 0,
    };
    let Some(Kind::Email(m)) = &event.kind else {
        return Ok(run.out);
    };
    let walked = run.walk_raw(m);
    let crypto = crypto::classify(&walked, &m.body_text);
    run.tags.extend(crypto.tags.iter().map(|t| (*t).to_owned()));
    run.out.signer = crypto.signer;
    for att in &m.attachments {
        let content = run.content_of(&att.sha256, att.size, &walked);
        // A file the sender gave no name has an empty filename (events
        // recorded before the agent named such files) or one the agent
        // made up, `part-1.2.eml`, with no name candidates: an attached
        // mail is then named after its subject.
        let unnamed = att.name_candidates.is_empty()
            && (att.filename.is_empty() || att.filename.starts_with("part-"));
        let name = match default_name(&att.content_type, content.as_ref()) {
            Some(n) if unnamed => n,
            _ if att.filename.is_empty() => "attachment".into(),
            _ => att.filename.clone(),
        };
        run.file(&name, &att.content_type, &att.sha256, content, "", 0)?;
    }
    // An attached mail the record does not list (a message/rfc822 part
    // without a disposition or name) is opened all the same: what it
    // carries must not escape the record by how it is attached.
    let listed: BTreeSet<&str> = m.attachments.iter().map(|a| a.sha256.as_str()).collect();
    for leaf in &walked.leaves {
        if leaf.content_type == types::MESSAGE && !listed.contains(leaf.sha256.as_str()) {
            let name = message_name(&read::subject(leaf.content.head()));
            let content = Some(leaf.content.clone());
            run.file(&name, types::MESSAGE, &leaf.sha256, content, "", 0)?;
        }
    }
    let mut out = run.out;
    out.tags = run.tags.into_iter().collect();
    Ok(out)
}

/// The annotations of a mail whose analysis panicked: each attachment
/// says so, with the panic's message, and the mail is tagged
/// `analysis-failed` (and marked for `reanalyse`, which a fixed build
/// runs).
pub fn failed(event: &Event, why: &str) -> Annotations {
    let status = format!("not analysed: analysis failed: panic: {why}");
    let attachments = match &event.kind {
        Some(Kind::Email(m)) => m
            .attachments
            .iter()
            .map(|att| AttachmentAnalysis {
                sha256: att.sha256.clone(),
                name: att.filename.clone(),
                size: att.size,
                declared_type: att.content_type.clone(),
                text_status: status.clone(),
                members_status: status.clone(),
                ..Default::default()
            })
            .collect(),
        _ => Vec::new(),
    };
    Annotations {
        event_id: event.event_id.clone(),
        version: VERSION,
        analysed_at_ms: kiroku_common::now_ms(),
        attachments,
        tags: vec![TAG_ANALYSIS_FAILED.into()],
        retry: true,
        ..Default::default()
    }
}

/// The message of a caught panic.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".into()
    }
}

/// Every content hash analysis found inside an event's attachments (files
/// in attached messages and TNEF, archive members), with where each is:
/// what the index adds to the attachment hashes and the sensitive-content
/// rules check.
pub fn derived_files(a: &Annotations) -> Vec<(String, &str)> {
    let mut out = Vec::new();
    for f in &a.attachments {
        let base = if f.path.is_empty() {
            f.name.clone()
        } else {
            format!("{}/{}", f.path, f.name)
        };
        if !f.path.is_empty() && !f.sha256.is_empty() {
            out.push((base.clone(), f.sha256.as_str()));
        }
        if f.container == "message" || f.container == "tnef" {
            // Their files are entries of their own (above).
            continue;
        }
        for m in &f.members {
            if !m.sha256.is_empty() {
                out.push((format!("{base}/{}", m.path), m.sha256.as_str()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
