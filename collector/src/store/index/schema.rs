//! The index schema: its fields, and an event as a document of them.

use kiroku_proto::{Event, event::Kind};
use prost::Message;
use tantivy::TantivyDocument;
use tantivy::schema::{FAST, Field, INDEXED, STORED, STRING, Schema, TEXT};

use super::{EventIndex, exfil, stats};

#[derive(Clone, Copy)]
pub(super) struct Fields {
    pub(super) event_id: Field,
    pub(super) agent_id: Field,
    pub(super) kind: Field,
    pub(super) observed_at: Field,
    pub(super) corrected_at: Field,
    pub(super) host: Field,
    pub(super) user: Field,
    pub(super) sender: Field,
    pub(super) recipient: Field,
    pub(super) address: Field,
    pub(super) subject: Field,
    pub(super) body: Field,
    pub(super) has_attachment: Field,
    pub(super) attachment_name: Field,
    pub(super) sha256: Field,
    pub(super) tag: Field,
    pub(super) outcome: Field,
    pub(super) event: Field,
    pub(super) path: Field,
    pub(super) operation: Field,
    pub(super) removable: Field,
    // Investigations (trace, exfil report).
    pub(super) source_path: Field,
    pub(super) exfil: Field,
    pub(super) exfil_user: Field,
    pub(super) exfil_at: Field,
    pub(super) exfil_files: Field,
    pub(super) exfil_bytes: Field,
    pub(super) exfil_rows: Field,
    // Counts and charts (`index/stats.rs`): fast-only grouping columns.
    pub(super) stats: stats::StatsFields,
}

/// The event's time on the collector's clock: observed_at corrected by the
/// agent's measured offset (agent − collector), or observed_at when the
/// offset was not measured.
pub fn corrected_ms(e: &Event) -> i64 {
    // Both come from the agent: saturate rather than overflow (a panic in
    // a debug build, a time wrapped to the other end of the range in a
    // release build; found by fuzz/grpc_query).
    if e.clock_offset_known {
        e.observed_at_ms.saturating_sub(e.clock_offset_ms)
    } else {
        e.observed_at_ms
    }
}

/// Bytes of the SHA-256 `hex` (lower case, as agents record it and
/// queries normalise it) indexed and looked up: the first 16 bytes (128
/// bits: a collision needs about 2^64 hashes, and every caller that shows
/// a match shows the event's full hash). Anything else is indexed as its
/// own bytes, so it still finds itself.
pub fn sha_key(hex: &str) -> Vec<u8> {
    let mut key = vec![0u8; 16];
    if kiroku_common::is_sha256_hex(hex) && hex::decode_to_slice(&hex[..32], &mut key).is_ok() {
        return key;
    }
    hex.as_bytes().to_vec()
}

pub(super) fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let f = Fields {
        event_id: b.add_text_field("event_id", STRING | STORED),
        agent_id: b.add_text_field("agent_id", STRING),
        kind: b.add_text_field("kind", STRING),
        observed_at: b.add_i64_field("observed_at", INDEXED | FAST),
        // observed_at - clock_offset_ms: the collector's timeline.
        corrected_at: b.add_i64_field("corrected_at", INDEXED | FAST),
        host: b.add_text_field("host", STRING),
        user: b.add_text_field("user", STRING),
        sender: b.add_text_field("sender", STRING),
        recipient: b.add_text_field("recipient", STRING),
        address: b.add_text_field("address", STRING),
        subject: b.add_text_field("subject", TEXT),
        body: b.add_text_field("body", TEXT),
        has_attachment: b.add_bool_field("has_attachment", INDEXED),
        attachment_name: b.add_text_field("attachment_name", TEXT),
        // Content hashes as the first 16 bytes of the SHA-256 (see
        // [`sha_key`]): a third of the index bytes of a file event was the
        // 64-character hex term, and building its dictionary the largest
        // CPU cost of ingest (BENCHMARKS.md, "Profile of small-event
        // ingest").
        sha256: b.add_bytes_field("sha256", INDEXED),
        tag: b.add_text_field("tag", STRING),
        outcome: b.add_text_field("outcome", STRING),
        event: b.add_bytes_field("event", STORED),
        path: b.add_text_field("path", TEXT),
        operation: b.add_text_field("operation", STRING),
        removable: b.add_bool_field("removable", INDEXED),
        // Investigations: a file event's `source_path` (exact).
        source_path: b.add_text_field("source_path", STRING),
        // The exfiltration report (`index/exfil.rs`), only on events that
        // sent files out: the channel ("mail", "removable"), who, when
        // (the rows' corrected time), how many files and bytes — the
        // totals per day and per user are column reads — and the rows
        // themselves, read only for the files a report lists or streams.
        exfil: b.add_text_field("exfil", FAST),
        exfil_user: b.add_text_field("exfil_user", FAST),
        exfil_at: b.add_i64_field("exfil_at", FAST),
        exfil_files: b.add_u64_field("exfil_files", FAST),
        exfil_bytes: b.add_u64_field("exfil_bytes", FAST),
        exfil_rows: b.add_bytes_field("exfil_rows", FAST),
        stats: stats::schema_fields(&mut b),
    };
    (b.build(), f)
}

/// Lower-cased outcome name as used in filters and the CLI.
pub fn outcome_name(v: i32) -> &'static str {
    match kiroku_proto::Outcome::try_from(v) {
        Ok(kiroku_proto::Outcome::Delivered) => "delivered",
        Ok(kiroku_proto::Outcome::Rejected) => "rejected",
        Ok(kiroku_proto::Outcome::Aborted) => "aborted",
        Ok(kiroku_proto::Outcome::Captured) => "captured",
        _ => "unknown",
    }
}

impl EventIndex {
    pub(super) fn document(&self, e: &Event) -> TantivyDocument {
        let f = &self.f;
        let mut d = TantivyDocument::default();
        d.add_text(f.event_id, &e.event_id);
        d.add_text(f.agent_id, &e.agent_id);
        d.add_i64(f.observed_at, e.observed_at_ms);
        d.add_i64(f.corrected_at, corrected_ms(e));
        if let Some(h) = &e.host {
            for name in [&h.hostname, &h.fqdn] {
                if !name.is_empty() {
                    d.add_text(f.host, name.to_lowercase());
                }
            }
        }
        if !e.user.is_empty() {
            d.add_text(f.user, e.user.to_lowercase());
        }
        for t in &e.tags {
            d.add_text(f.tag, t);
        }
        if let Some(Kind::Email(m)) = &e.kind {
            d.add_text(f.kind, "email");
            d.add_text(f.outcome, outcome_name(m.outcome));
            // Who logged in to the mail server is a user too: `--user`
            // finds mail by the desktop account or the SMTP login.
            if !m.auth_user.is_empty() {
                d.add_text(f.user, m.auth_user.to_lowercase());
            }
            let senders = std::iter::once(&m.mail_from).chain(&m.from);
            let recipients = m
                .rcpt_to
                .iter()
                .map(|r| &r.address)
                .chain(&m.to)
                .chain(&m.cc)
                .chain(&m.bcc);
            for a in senders.filter(|a| !a.is_empty()) {
                d.add_text(f.sender, a.to_lowercase());
                d.add_text(f.address, a.to_lowercase());
            }
            for a in recipients.filter(|a| !a.is_empty()) {
                d.add_text(f.recipient, a.to_lowercase());
                d.add_text(f.address, a.to_lowercase());
            }
            d.add_text(f.subject, &m.subject);
            d.add_text(f.body, &m.body_text);
            d.add_bool(f.has_attachment, m.attachment_count > 0);
            for a in &m.attachments {
                d.add_text(f.attachment_name, &a.filename);
                d.add_bytes(f.sha256, &sha_key(&a.sha256));
            }
            if !m.raw_sha256.is_empty() {
                d.add_bytes(f.sha256, &sha_key(&m.raw_sha256));
            }
        }
        match &e.kind {
            Some(Kind::File(file)) => {
                d.add_text(f.kind, "file");
                d.add_text(f.operation, &file.operation);
                for p in [&file.path, &file.old_path] {
                    if !p.is_empty() {
                        d.add_text(f.path, p);
                    }
                }
                d.add_bool(f.removable, file.removable);
                // The same field as attachment hashes: `--sha256` finds a
                // file wherever it went, by mail or on disk.
                if !file.sha256.is_empty() {
                    d.add_bytes(f.sha256, &sha_key(&file.sha256));
                }
                // Investigations (trace).
                if !file.source_path.is_empty() {
                    d.add_text(f.source_path, &file.source_path);
                }
            }
            Some(Kind::HostChange(_)) => d.add_text(f.kind, "host_change"),
            Some(Kind::Gap(g)) => {
                // What the agent could not record: found by the addresses
                // and paths it names, as the records it stands for would be.
                d.add_text(f.kind, "gap");
                d.add_text(f.operation, &g.reason);
                for a in g.senders.iter().filter(|a| !a.is_empty()) {
                    d.add_text(f.sender, a.to_lowercase());
                    d.add_text(f.address, a.to_lowercase());
                }
                for a in g.recipients.iter().filter(|a| !a.is_empty()) {
                    d.add_text(f.recipient, a.to_lowercase());
                    d.add_text(f.address, a.to_lowercase());
                }
                for p in g.paths.iter().filter(|p| !p.is_empty()) {
                    d.add_text(f.path, p);
                }
                d.add_text(f.body, &g.detail);
            }
            _ => {}
        }
        exfil::add_fields(f, &mut d, &crate::investigate::exfil_files(e));
        stats::add_fields(&f.stats, &mut d, e);
        d.add_bytes(f.event, &e.encode_to_vec());
        d
    }
}
