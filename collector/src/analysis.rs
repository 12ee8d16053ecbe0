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

pub mod archive;
pub mod crypto;
pub mod ppap;
pub mod read;
pub mod reanalyse;
pub mod store;
pub mod text;
pub mod tnef;
pub mod types;
pub mod worker;

use std::collections::BTreeSet;

use kiroku_proto::{Annotations, ArchiveMember, AttachmentAnalysis, Event, event::Kind};
use serde::{Deserialize, Serialize};

use crate::store::blobs::BlobStore;
use read::{Content, Walked};
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

/// `[analysis]` in the collector config.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalysisConfig {
    /// Worker threads analysing stored mail (0: one per two cores, at
    /// least one, at most four). Each holds at most `max_file_bytes` of a
    /// file in memory (plus what archive listing and text extraction
    /// expand, bounded by their own limits).
    pub workers: usize,
    /// Files larger than this are typed from their first 64 KiB only and
    /// not opened (their analysis says so).
    pub max_file_bytes: u64,
    /// `[analysis.archives]`: the bounds of one attachment's archive
    /// listing (zip bombs), see [`archive::ArchiveLimits`].
    pub archives: archive::ArchiveLimits,
    /// `[analysis.text]`: the bounds of one attachment's text extraction
    /// (size, text kept, time, memory), see [`text::TextLimits`].
    pub text: text::TextLimits,
    /// Wall time one mail's analysis may take, all its attachments
    /// together (milliseconds); the files not reached are recorded as
    /// "not analysed: event budget" and retried by `reanalyse`.
    pub max_event_millis: u64,
    /// Bytes of files and archive members one mail's analysis may go
    /// through, all its attachments together.
    pub max_event_expanded_bytes: u64,
    /// Attachment text indexed for one mail, all its attachments together
    /// (bytes of UTF-8): the index document of a mail with 500 documents
    /// stays bounded.
    pub max_event_text_bytes: u64,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        AnalysisConfig {
            workers: 0,
            max_file_bytes: 64 << 20,
            archives: archive::ArchiveLimits::default(),
            text: text::TextLimits::default(),
            max_event_millis: 120_000,
            max_event_expanded_bytes: 4 << 30,
            max_event_text_bytes: 8 << 20,
        }
    }
}

impl AnalysisConfig {
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            return self.workers;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores / 2).clamp(1, 4)
    }
}

/// Bounds of one event's analysis.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest file read into memory ([`read`]).
    pub max_file_bytes: u64,
    /// Deepest nesting of attached messages and TNEF opened.
    pub max_depth: u32,
    /// Most files found inside one mail's attachments (attached messages,
    /// TNEF) that are analysed.
    pub max_nested_files: usize,
    pub archive: archive::ArchiveLimits,
    pub text: text::TextLimits,
    /// The event's budget: wall time, bytes gone through, text indexed
    /// (see [`AnalysisConfig`]).
    pub max_event_millis: u64,
    pub max_event_expanded_bytes: u64,
    pub max_event_text_bytes: u64,
    /// Ignore the per-file cache and analyse again mail analysed by this
    /// version (`reanalyse --force`): every file is opened and read again.
    pub fresh: bool,
    /// Analyse again mail whose annotations are marked for it
    /// (`Annotations.retry`: `reanalyse`).
    pub redo_retry: bool,
}

impl Default for Limits {
    fn default() -> Self {
        let c = AnalysisConfig::default();
        Limits {
            max_file_bytes: c.max_file_bytes,
            max_depth: 4,
            max_nested_files: 500,
            archive: c.archives,
            text: c.text,
            max_event_millis: c.max_event_millis,
            max_event_expanded_bytes: c.max_event_expanded_bytes,
            max_event_text_bytes: c.max_event_text_bytes,
            fresh: false,
            redo_retry: false,
        }
    }
}

impl Limits {
    pub fn from_config(c: &AnalysisConfig) -> Limits {
        Limits {
            max_file_bytes: c.max_file_bytes,
            archive: c.archives.clone(),
            text: c.text.clone(),
            max_event_millis: c.max_event_millis,
            max_event_expanded_bytes: c.max_event_expanded_bytes,
            max_event_text_bytes: c.max_event_text_bytes,
            ..Limits::default()
        }
    }
}

impl Limits {
    /// Whether a mail with these annotations is analysed again.
    pub fn redo(&self, a: &Annotations) -> bool {
        a.version != VERSION || self.fresh || (self.redo_retry && a.retry)
    }
}

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

/// The key the text of `sha256` read as `format` is kept under: what
/// decides the text is the bytes, the format chosen (from the bytes, but
/// also from the name and declared type) and, for plain text and HTML,
/// the charset declared.
fn text_key(sha256: &str, format: text::Format, declared: &str) -> String {
    let charset = match format {
        text::Format::Plain | text::Format::Html => text::charset_param(declared)
            .unwrap_or("")
            .to_ascii_lowercase(),
        _ => String::new(),
    };
    format!("{sha256}:{}:{charset}", format.word())
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

/// The name of an unnamed attached mail: after its subject (else
/// "message.eml"); None for anything else.
fn default_name(declared: &str, content: Option<&Content>) -> Option<String> {
    let head = content.map(Content::head).unwrap_or_default();
    (declared.to_ascii_lowercase().starts_with(types::MESSAGE)
        || types::detect(head) == types::MESSAGE)
        .then(|| message_name(&read::subject(head)))
}

/// A name for an attached message from its subject.
fn message_name(subject: &str) -> String {
    let clean: String = subject
        .chars()
        .map(|c| {
            if "/\\\0".contains(c) || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .take(80)
        .collect();
    let clean = clean.trim();
    if clean.is_empty() {
        "message.eml".into()
    } else {
        format!("{clean}.eml")
    }
}

impl Run<'_> {
    /// The raw message walked, streamed: the attachments that are not
    /// blobs of their own, attached mail and S/MIME/PGP parts kept (each
    /// up to the file limit); empty when it cannot be read (each
    /// attachment's status then says so).
    fn walk_raw(&mut self, m: &kiroku_proto::EmailEvent) -> Walked {
        let needed: BTreeSet<&str> = m
            .attachments
            .iter()
            .map(|a| a.sha256.as_str())
            .filter(|s| !self.blobs.has(s))
            .collect();
        let walked = self
            .blobs
            .reader(&m.raw_sha256)
            .map_err(std::io::Error::other)
            .and_then(|r| {
                read::walk(
                    std::io::BufReader::with_capacity(256 * 1024, r),
                    self.limits.max_file_bytes,
                    // Every attachment its own blob: none is decoded here.
                    !needed.is_empty(),
                    |sha| needed.contains(sha),
                )
            });
        walked.unwrap_or_else(|e| {
            self.out.retry = true;
            tracing::warn!(event_id = %self.out.event_id, raw_sha256 = %m.raw_sha256, error = %e, "the raw message cannot be read for analysis; its attachments are recorded as unreadable");
            Walked::default()
        })
    }

    /// An attachment's bytes: its own blob, else the walked leaf with its
    /// hash. Of a blob the record already says is over the limit only the
    /// head is read (decompressing it whole just to count it is waste).
    fn content_of(&mut self, sha256: &str, size: u64, walked: &Walked) -> Option<Content> {
        let max = self.limits.max_file_bytes;
        if size > max && self.blobs.has(sha256) {
            let head = self
                .blobs
                .reader(sha256)
                .map_err(std::io::Error::other)
                .and_then(|r| {
                    let mut head = Vec::new();
                    std::io::Read::read_to_end(
                        &mut std::io::Read::take(r, read::HEAD as u64),
                        &mut head,
                    )
                    .map(|_| head)
                });
            match head {
                Ok(head) => return Some(Content::TooLarge { size, head }),
                Err(e) => {
                    self.out.retry = true;
                    tracing::warn!(event_id = %self.out.event_id, sha256, error = %e, "attachment blob not readable for analysis")
                }
            }
        }
        if let Some(r) = read::from_blob(self.blobs, sha256, max) {
            match r {
                Ok(c) => return Some(c),
                Err(e) => {
                    self.out.retry = true;
                    tracing::warn!(event_id = %self.out.event_id, sha256, error = %e, "attachment blob not readable for analysis")
                }
            }
        }
        walked
            .leaves
            .iter()
            .find(|l| l.sha256 == sha256)
            .map(|l| l.content.clone())
    }

    /// Analyses one file (`path` is where it sits: "" for an attachment of
    /// the mail, else its container's path) and records it; files inside
    /// attached messages and TNEF follow it, each analysed the same way.
    fn file(
        &mut self,
        name: &str,
        declared: &str,
        sha256: &str,
        content: Option<Content>,
        path: &str,
        depth: u32,
    ) -> Result<(), AnnotationError> {
        let mut a = AttachmentAnalysis {
            sha256: sha256.to_owned(),
            path: path.to_owned(),
            name: name.to_owned(),
            declared_type: declared.to_owned(),
            ..Default::default()
        };
        let Some(content) = content else {
            a.text_status = "unreadable: content not found in the stored message".into();
            a.members_status = a.text_status.clone();
            self.out.attachments.push(a);
            return Ok(());
        };
        a.size = content.size();
        let detected = types::detect(content.head());
        a.detected_type = detected.to_owned();
        if let Some(why) = types::mismatch(name, declared, detected) {
            a.type_mismatch = why;
            self.tags.insert(TAG_TYPE_MISMATCH.into());
        }
        crate::test_hooks::analysis_panic(name);
        // Typing a file costs only its head; opening and reading it is
        // what the event's budget bounds.
        if let Some(why) = self.over_budget() {
            a.text_status = format!("{EVENT_BUDGET}: {why}");
            a.members_status = a.text_status.clone();
            self.tags.insert(TAG_EVENT_BUDGET.into());
            self.out.attachments.push(a);
            return Ok(());
        }
        self.expanded = self.expanded.saturating_add(a.size);
        let inner_path = if path.is_empty() {
            name.to_owned()
        } else {
            format!("{path}/{name}")
        };
        let index = self.out.attachments.len();
        self.out.attachments.push(a);
        let data = match &content {
            Content::Whole(d) => d.as_slice(),
            Content::TooLarge { size, .. } => {
                let why = format!(
                    "not opened: {size} bytes, over analysis.max_file_bytes ({})",
                    self.limits.max_file_bytes
                );
                let a = &mut self.out.attachments[index];
                a.text_status = format!("unreadable: {why}");
                a.members_status = why;
                return Ok(());
            }
        };
        if types::is_message(name, declared, detected) {
            return self.open_message(index, data, &inner_path, depth);
        }
        if types::is_tnef(declared, detected) {
            return self.open_tnef(index, data, &inner_path, depth);
        }
        self.leaf(index, data)
    }

    /// Why the event's budget allows no more work, if it does not (a time
    /// bound marks the annotations for `reanalyse`).
    fn over_budget(&mut self) -> Option<String> {
        let l = self.limits;
        if self.started.elapsed().as_millis() >= u128::from(l.max_event_millis) {
            self.out.retry = true;
            return Some(format!(
                "time: {} ms spent on this mail (analysis.max_event_millis)",
                l.max_event_millis
            ));
        }
        if self.expanded >= l.max_event_expanded_bytes {
            return Some(format!(
                "{} bytes of files and archive members gone through in this mail (analysis.max_event_expanded_bytes)",
                l.max_event_expanded_bytes
            ));
        }
        None
    }

    /// Milliseconds left of the event's time budget.
    fn millis_left(&self) -> u64 {
        let spent = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.limits.max_event_millis.saturating_sub(spent)
    }

    /// The archive limits for the next listing: the configured ones,
    /// lowered to what is left of the event's budget (time, bytes); true
    /// when lowered.
    fn archive_limits(&self) -> (archive::ArchiveLimits, bool) {
        let mut l = self.limits.archive.clone();
        let bytes_left = self
            .limits
            .max_event_expanded_bytes
            .saturating_sub(self.expanded);
        let millis_left = self.millis_left().max(1);
        let capped = bytes_left < l.max_expanded_bytes || millis_left < l.max_millis;
        l.max_expanded_bytes = l.max_expanded_bytes.min(bytes_left);
        l.max_millis = l.max_millis.min(millis_left);
        (l, capped)
    }

    /// Archive listing and text of a file that is no message or TNEF. The
    /// listing depends on the bytes only and is reused from the per-file
    /// store when this version did it before; the text also depends on
    /// the format chosen (name, declared type) and charset, and is kept
    /// under that key ([`text_key`]). Results that something outside the
    /// file cut short ([`transient`]) are not kept: the next analysis
    /// tries again.
    fn leaf(&mut self, index: usize, data: &[u8]) -> Result<(), AnnotationError> {
        let a = self.out.attachments[index].clone();
        let known = match self.limits.fresh {
            true => None,
            false => self.store.file(&a.sha256, VERSION)?,
        };
        let listing = match known {
            Some(k) => k,
            None => {
                let mut k = AttachmentAnalysis {
                    sha256: a.sha256.clone(),
                    size: a.size,
                    detected_type: a.detected_type.clone(),
                    ..Default::default()
                };
                // What is left of the event's budget caps this listing too
                // (a single zip bomb cannot take the mail past it); a
                // listing cut by the event's budget rather than the
                // archive's own bounds is this mail's, not the file's, and
                // is not kept for the file.
                let (limits, capped) = self.archive_limits();
                if let Some(l) = archive::list(data, &a.name, &limits) {
                    k.container = l.container;
                    k.encrypted = l.encrypted;
                    k.encryption = l.encryption;
                    k.members = l.members;
                    k.members_status = l.status;
                }
                let by_budget = capped && archive::is_bounded(&k.members_status);
                if by_budget {
                    k.members_status = format!(
                        "{}; {EVENT_BUDGET}: what is left of this mail's budget bounded the listing",
                        k.members_status
                    );
                }
                if by_budget || transient(&k.members_status) {
                    self.out.retry = true;
                } else {
                    self.store.put_file(&k, VERSION)?;
                }
                k
            }
        };
        let members_size: u64 = listing.members.iter().map(|m| m.size).sum();
        self.expanded = self.expanded.saturating_add(members_size);
        let (text_key, text_status, text_bytes) = self.text(&a, data)?;
        let a = &mut self.out.attachments[index];
        a.container = listing.container;
        a.encrypted = listing.encrypted;
        a.encryption = listing.encryption;
        a.members = listing.members;
        a.members_status = listing.members_status;
        a.text_key = text_key;
        a.text_status = text_status;
        a.text_bytes = text_bytes;
        if a.encrypted || a.members.iter().any(|m| m.encrypted) {
            self.tags.insert(TAG_ENCRYPTED_ATTACHMENT.into());
        }
        if archive::is_bounded(&a.members_status) {
            self.tags.insert(TAG_ARCHIVE_BOUNDED.into());
        }
        if a.text_status.starts_with("unreadable") {
            self.tags.insert(TAG_TEXT_UNREADABLE.into());
        }
        if a.text_status.contains(EVENT_BUDGET) || a.members_status.contains(EVENT_BUDGET) {
            self.tags.insert(TAG_EVENT_BUDGET.into());
        }
        Ok(())
    }

    /// The text of the file `a` (its bytes `data`): (text key, status,
    /// bytes this event indexes), within the event's text budget.
    fn text(
        &mut self,
        a: &AttachmentAnalysis,
        data: &[u8],
    ) -> Result<(String, String, u64), AnnotationError> {
        let Some(format) = text::Format::of(data, &a.name, &a.declared_type, &a.detected_type)
        else {
            return Ok((String::new(), text::NONE.into(), 0));
        };
        let max = self.limits.max_event_text_bytes;
        let left = max.saturating_sub(self.text_indexed);
        if left == 0 {
            let why = format!(
                "{EVENT_BUDGET}: {max} bytes of attachment text indexed in this mail (analysis.max_event_text_bytes)"
            );
            return Ok((String::new(), why, 0));
        }
        let key = text_key(&a.sha256, format, &a.declared_type);
        let known = match self.limits.fresh {
            true => None,
            false => self.store.file(&key, VERSION)?,
        };
        let (status, bytes) = match known {
            Some(k) => (k.text_status, k.text_bytes),
            None => {
                // A reader's timeout is capped by what is left of the
                // event's time (a timeout is not kept: retried later).
                let mut limits = self.limits.text.clone();
                let left_ms = self.millis_left();
                limits.timeout_secs = limits.timeout_secs.min(left_ms.div_ceil(1000).max(1));
                let t = text::extract_as(Some(format), data, &a.declared_type, &limits);
                let bytes = if t.text.is_empty() {
                    0
                } else {
                    self.store.put_text(&key, &t.text)? as u64
                };
                let k = AttachmentAnalysis {
                    sha256: key.clone(),
                    text_status: t.status.clone(),
                    text_bytes: bytes,
                    ..Default::default()
                };
                if transient(&t.status) {
                    self.out.retry = true;
                } else {
                    self.store.put_file(&k, VERSION)?;
                }
                (t.status, bytes)
            }
        };
        if bytes > left {
            self.text_indexed = max;
            let why = format!(
                "{status}; cut at {left} bytes: {EVENT_BUDGET} ({max} bytes of attachment text per mail, analysis.max_event_text_bytes)"
            );
            return Ok((key, why, left));
        }
        self.text_indexed += bytes;
        Ok((key, status, bytes))
    }

    /// Whether another nested file may be opened; records why not.
    fn room(&mut self, index: usize, depth: u32) -> bool {
        let why = if depth >= self.limits.max_depth {
            format!("cut at depth {}", self.limits.max_depth)
        } else if self.nested >= self.limits.max_nested_files {
            format!(
                "bounded: {} files inside this mail's attachments analysed",
                self.limits.max_nested_files
            )
        } else {
            return true;
        };
        let a = &mut self.out.attachments[index];
        if a.members_status.is_empty() {
            a.members_status = why;
        }
        self.tags.insert(TAG_ARCHIVE_BOUNDED.into());
        false
    }

    /// An attached mail: its files, each recorded and analysed as if
    /// attached directly, under `path`.
    fn open_message(
        &mut self,
        index: usize,
        data: &[u8],
        path: &str,
        depth: u32,
    ) -> Result<(), AnnotationError> {
        self.out.attachments[index].container = "message".into();
        if !self.room(index, depth) {
            return Ok(());
        }
        let walked = read::walk_all(data, self.limits.max_file_bytes);
        let files: Vec<_> = walked
            .leaves
            .into_iter()
            .filter(|l| l.attachment || l.content_type == types::MESSAGE)
            .collect();
        let mut members = Vec::new();
        for (n, leaf) in files.into_iter().enumerate() {
            if !self.room(index, depth) {
                break;
            }
            self.nested += 1;
            let name = if !leaf.name.is_empty() {
                leaf.name.clone()
            } else if leaf.content_type == types::MESSAGE {
                message_name(&read::subject(leaf.content.head()))
            } else {
                format!("part-{}", n + 1)
            };
            members.push(ArchiveMember {
                path: name.clone(),
                size: leaf.content.size(),
                sha256: leaf.sha256.clone(),
                detected_type: types::detect(leaf.content.head()).into(),
                depth: 1,
                ..Default::default()
            });
            self.file(
                &name,
                &leaf.content_type,
                &leaf.sha256,
                Some(leaf.content),
                path,
                depth + 1,
            )?;
        }
        self.out.attachments[index].members = members;
        Ok(())
    }

    /// TNEF: its attachments, each recorded and analysed as if attached
    /// directly, under `path`.
    fn open_tnef(
        &mut self,
        index: usize,
        data: &[u8],
        path: &str,
        depth: u32,
    ) -> Result<(), AnnotationError> {
        self.out.attachments[index].container = "tnef".into();
        let Some(unpacked) = tnef::unpack(data) else {
            self.out.attachments[index].members_status = "not a TNEF stream (no signature)".into();
            return Ok(());
        };
        self.out.attachments[index].members_status = unpacked.status.clone();
        if !self.room(index, depth) {
            return Ok(());
        }
        let mut members = Vec::new();
        for f in unpacked.files {
            if !self.room(index, depth) {
                break;
            }
            self.nested += 1;
            let sha = kiroku_common::sha256_hex(&f.data);
            members.push(ArchiveMember {
                path: f.name.clone(),
                size: f.data.len() as u64,
                sha256: sha.clone(),
                detected_type: types::detect(&f.data).into(),
                depth: 1,
                ..Default::default()
            });
            let content = Content::of(f.data, self.limits.max_file_bytes);
            self.file(&f.name, &f.mime_type, &sha, Some(content), path, depth + 1)?;
        }
        self.out.attachments[index].members = members;
        Ok(())
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
