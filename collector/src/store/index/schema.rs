//! The index schema: its fields, and an event as a document of them.

use kiroku_proto::{Event, event::Kind};
use prost::Message;
use tantivy::TantivyDocument;
use tantivy::schema::{
    BytesOptions, DateOptions, FAST, FacetOptions, Field, FieldEntry, INDEXED, IndexRecordOption,
    IpAddrOptions, JsonObjectOptions, NumericOptions, STORED, STRING, Schema, SchemaBuilder,
    TextFieldIndexing, TextOptions,
};

/// The version of the index schema: its fields, their options and the
/// analyzers of its text fields. Bump it with every change to any of them
/// (in [`schema`] or the tokenizers): an index written under another
/// version is rebuilt from the journal in the background at the next start
/// (`index/rebuild.rs`) while it keeps serving queries.
///
/// History: 1 — bdddeb9 and before (those indexes carry no version file);
/// 2 — issue 16 (2026-12-05): the version file, the CJK analyzer on every
/// full-text field, the mail-flow fields (domains, client IP, Message-ID,
/// queue id, reply codes, SMTP login, replies) and the `by_*` grouping
/// columns; 3 — issue 17 (2026-12-05): `attachment_text` (the text of
/// the attachments, from the annotation store) and the fields derived by
/// analysis; 4 — issue 18 (2026-12-06): `recorded_sha256`, `journal_leaf`
/// and `recorded_reencoded` (where the event is in the journal chain) and
/// the `integrity` kind; 5 — issue 20 (2026-12-06): relay incidents
/// (`incident`, `incident_count`), AUTH records' fields (`index/relay.rs`),
/// `upstream`, the mails' `total_ms` and `delivery` (a mail's downstream
/// fate from the MTA's log); 6 — issue 21 (2026-12-06): the `network`
/// and `p2p` kinds and their fields (`index/network.rs`), the `by_process`,
/// `by_remote_ip` and `by_port` grouping columns, and a network record's
/// delta bytes in `size`.
pub const SCHEMA_VERSION: u32 = 6;

use super::{Derived, TantivyIndex, analyzer, exfil, incidents, mailflow, network, relay, stats};

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
    pub(super) attachment_text: Field,
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
    // Mail flow (`index/mailflow.rs`).
    pub(super) sender_domain: Field,
    pub(super) recipient_domain: Field,
    pub(super) sender_rdomain: Field,
    pub(super) recipient_rdomain: Field,
    pub(super) envelope_sender_rdomain: Field,
    pub(super) accepted_rdomain: Field,
    pub(super) accepted_count: Field,
    pub(super) client_ip: Field,
    pub(super) message_id: Field,
    pub(super) queue_id: Field,
    pub(super) reply_code: Field,
    pub(super) auth_user: Field,
    pub(super) replies: Field,
    // Where the event is in the journal (`index/provenance.rs`).
    pub(super) recorded_sha256: Field,
    pub(super) journal_leaf: Field,
    pub(super) recorded_reencoded: Field,
    // Relay incidents (`index/incidents.rs`, issue 20).
    pub(super) incident: Field,
    pub(super) incident_count: Field,
    // Issue 20, relay (`index/relay.rs`).
    pub(super) upstream: Field,
    pub(super) total_ms: Field,
    // Counts and charts (`index/stats.rs`): fast-only grouping columns.
    pub(super) stats: stats::StatsFields,
    // Issue 20 (delivery): a mail's downstream fate.
    pub(super) delivery: Field,
    // Issue 21: network and P2P records (`index/network.rs`).
    pub(super) net: network::NetworkFields,
}

pub use kiroku_common::mail::{corrected_ms, outcome_name};

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

/// Options of a full-text field: the CJK-aware analyzer
/// ([`analyzer::NAME`]) with positions, for phrases. Every field searched
/// by words uses it, so one query syntax and one normalisation hold for all.
pub(super) fn full_text() -> TextOptions {
    TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(analyzer::NAME)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    )
}

/// The current schema and its fields.
pub(super) fn schema() -> (Schema, Fields) {
    let (schema, f, _) = schema_fields(None);
    (schema, f)
}

/// The fields of the current schema found by name in `old`, the schema
/// of an index written under an older version, and the names of those it
/// lacks (or has with another type); their handles must not be used.
pub(super) fn fields_in(old: &Schema) -> (Fields, Vec<String>) {
    let (_, f, missing) = schema_fields(Some(old));
    (f, missing)
}

fn schema_fields(old: Option<&Schema>) -> (Schema, Fields, Vec<String>) {
    let mut b = FieldSource::new(old);
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
        subject: b.add_text_field("subject", full_text()),
        body: b.add_text_field("body", full_text()),
        has_attachment: b.add_bool_field("has_attachment", INDEXED),
        attachment_name: b.add_text_field("attachment_name", full_text()),
        // The text extracted from the attachments (analysis/text.rs), kept
        // by the annotation store and added whenever the event is indexed
        // after its analysis; not stored (the store has it).
        attachment_text: b.add_text_field("attachment_text", full_text()),
        // Content hashes as the first 16 bytes of the SHA-256 (see
        // [`sha_key`]): a third of the index bytes of a file event was the
        // 64-character hex term, and building its dictionary the largest
        // CPU cost of ingest (BENCHMARKS.md, "Profile of small-event
        // ingest").
        sha256: b.add_bytes_field("sha256", INDEXED),
        tag: b.add_text_field("tag", STRING),
        outcome: b.add_text_field("outcome", STRING),
        event: b.add_bytes_field("event", STORED),
        path: b.add_text_field("path", full_text()),
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
        // Mail flow (`index/mailflow.rs`): each sender's and recipient's
        // domain exact (and a column, to count by), and with its labels
        // reversed (`com.example.mx.`) so that a domain and its
        // subdomains are one range of terms; the envelope sender's and the
        // accepted recipients' reversed domains, which internal/external
        // and direction compare with the collector's internal domains at
        // query time; the client address (IPv4 as IPv4-mapped IPv6), the
        // Message-ID, the upstream's queue id, every reply code (final
        // and per recipient), the client's SMTP login, and the words of
        // the upstream's replies.
        sender_domain: b.add_text_field("sender_domain", STRING | FAST),
        recipient_domain: b.add_text_field("recipient_domain", STRING | FAST),
        sender_rdomain: b.add_text_field("sender_rdomain", STRING),
        recipient_rdomain: b.add_text_field("recipient_rdomain", STRING),
        envelope_sender_rdomain: b.add_text_field("envelope_sender_rdomain", STRING),
        accepted_rdomain: b.add_text_field("accepted_rdomain", STRING),
        accepted_count: b.add_u64_field("accepted_count", INDEXED),
        client_ip: b.add_ip_addr_field("client_ip", INDEXED | FAST),
        message_id: b.add_text_field("message_id", STRING),
        queue_id: b.add_text_field("queue_id", STRING),
        reply_code: b.add_u64_field("reply_code", INDEXED | FAST),
        auth_user: b.add_text_field("auth_user", STRING),
        replies: b.add_text_field("replies", full_text()),
        // Where the event is in the journal (`index/provenance.rs`): the
        // SHA-256 of the bytes its agent recorded, its leaf in the journal
        // chain (none for an event journalled before issue 18) and whether
        // the collector re-encoded it; stored only, read by event id.
        recorded_sha256: b.add_bytes_field("recorded_sha256", STORED),
        journal_leaf: b.add_u64_field("journal_leaf", STORED),
        recorded_reencoded: b.add_bool_field("recorded_reencoded", STORED),
        // Relay incidents (`index/incidents.rs`): the incident kind and
        // the occurrences counted.
        incident: b.add_text_field("incident", STRING),
        incident_count: b.add_u64_field("incident_count", FAST),
        // Issue 20 (`index/relay.rs`): the upstream host:port of mail,
        // AUTH records and incidents (exact, lower case), and a mail's
        // whole transaction time in milliseconds, a column for the delay
        // ranges.
        upstream: b.add_text_field("upstream", STRING),
        total_ms: b.add_u64_field("total_ms", INDEXED | FAST),
        // Counts and charts (`index/stats.rs`): fast-only grouping columns.
        stats: stats::schema_fields(&mut b),
        // Issue 20: a mail's delivery status joined from the MTA's log
        // (`delivery/`), "unknown" until a line is joined; from the
        // derived fields, so a change re-indexes the mail.
        delivery: b.add_text_field("delivery", STRING),
        // Issue 21 (`index/network.rs`): process, remote address, ports,
        // bytes and duration (columns), the deltas (columns, for sums),
        // protocol, direction, phase, P2P reasons, info_hashes, the
        // remote's name.
        net: network::schema_fields(&mut b),
    };
    let (schema, missing) = b.finish();
    (schema, f, missing)
}

/// Builds the current schema or, given an older index's schema, finds each
/// field in it by name; with the same `add_*_field` calls as tantivy's
/// `SchemaBuilder`, so the list of fields is written once.
pub(super) struct FieldSource<'a> {
    builder: SchemaBuilder,
    old: Option<&'a Schema>,
    missing: Vec<String>,
}

impl<'a> FieldSource<'a> {
    fn new(old: Option<&'a Schema>) -> FieldSource<'a> {
        FieldSource {
            builder: Schema::builder(),
            old,
            missing: Vec::new(),
        }
    }

    fn add(&mut self, entry: FieldEntry) -> Field {
        let name = entry.name().to_owned();
        let ty = entry.field_type().value_type();
        let built = self.builder.add_field(entry);
        let Some(old) = self.old else {
            return built;
        };
        match old.get_field(&name) {
            Ok(f) if old.get_field_entry(f).field_type().value_type() == ty => f,
            _ => {
                self.missing.push(name);
                // Never used: queries that need a missing field are
                // refused before they are built (`index/legacy.rs`).
                Field::from_field_id(u32::MAX - self.missing.len() as u32)
            }
        }
    }

    fn finish(self) -> (Schema, Vec<String>) {
        (self.builder.build(), self.missing)
    }

    pub(super) fn add_text_field<T: Into<TextOptions>>(&mut self, name: &str, o: T) -> Field {
        self.add(FieldEntry::new_text(name.into(), o.into()))
    }
    pub(super) fn add_u64_field<T: Into<NumericOptions>>(&mut self, name: &str, o: T) -> Field {
        self.add(FieldEntry::new_u64(name.into(), o.into()))
    }
    fn add_i64_field<T: Into<NumericOptions>>(&mut self, name: &str, o: T) -> Field {
        self.add(FieldEntry::new_i64(name.into(), o.into()))
    }
    #[allow(dead_code)]
    fn add_f64_field<T: Into<NumericOptions>>(&mut self, name: &str, o: T) -> Field {
        self.add(FieldEntry::new_f64(name.into(), o.into()))
    }
    fn add_bool_field<T: Into<NumericOptions>>(&mut self, name: &str, o: T) -> Field {
        self.add(FieldEntry::new_bool(name.into(), o.into()))
    }
    #[allow(dead_code)]
    fn add_date_field<T: Into<DateOptions>>(&mut self, name: &str, o: T) -> Field {
        self.add(FieldEntry::new_date(name.into(), o.into()))
    }
    pub(super) fn add_ip_addr_field<T: Into<IpAddrOptions>>(&mut self, name: &str, o: T) -> Field {
        self.add(FieldEntry::new_ip_addr(name.into(), o.into()))
    }
    fn add_bytes_field<T: Into<BytesOptions>>(&mut self, name: &str, o: T) -> Field {
        self.add(FieldEntry::new_bytes(name.into(), o.into()))
    }
    #[allow(dead_code)]
    fn add_json_field<T: Into<JsonObjectOptions>>(&mut self, name: &str, o: T) -> Field {
        self.add(FieldEntry::new_json(name.into(), o.into()))
    }
    #[allow(dead_code)]
    fn add_facet_field(&mut self, name: &str, o: impl Into<FacetOptions>) -> Field {
        self.add(FieldEntry::new_facet(name.into(), o.into()))
    }
}

impl TantivyIndex {
    pub(super) fn document(&self, e: &Event, derived: Option<&Derived>) -> TantivyDocument {
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
            // finds mail by the desktop account or the client's SMTP login
            // (never the agent's own smarthost login).
            if let Some(login) = kiroku_common::mail::client_login(m) {
                d.add_text(f.user, login.to_lowercase());
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
                // Every other name the part was given (a decoy, or the
                // real name behind one) finds the mail too.
                for n in a.name_candidates.iter().filter(|n| **n != a.filename) {
                    d.add_text(f.attachment_name, n);
                }
                d.add_bytes(f.sha256, &sha_key(&a.sha256));
            }
            if !m.raw_sha256.is_empty() {
                d.add_bytes(f.sha256, &sha_key(&m.raw_sha256));
            }
            mailflow::add_email(f, &mut d, m);
            relay::add_email(f, &mut d, m);
            let delivery = derived
                .map(|x| x.delivery.as_str())
                .filter(|s| !s.is_empty())
                .unwrap_or(crate::delivery::UNKNOWN);
            d.add_text(f.delivery, delivery);
            // A mail the MTA gave up on (its queue lifetime ran out) was
            // returned to its sender: a bounce as the sender sees it, so
            // `--delivery bounced` finds it too (`expired` only these).
            if delivery == "expired" {
                d.add_text(f.delivery, "bounced");
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
            // Issue 20: the kind only, until their fields are indexed.
            Some(Kind::Incident(i)) => incidents::add_incident(f, &mut d, i),
            Some(Kind::Auth(a)) => {
                d.add_text(f.kind, "auth");
                relay::add_auth(f, &mut d, a);
            }
            Some(Kind::MtaLog(m)) => super::mtalog::add_fields(f, &mut d, m),
            // Issue 21.
            Some(Kind::Network(n)) => network::add_network(f, &mut d, e.observed_at_ms, n),
            Some(Kind::P2p(p)) => network::add_p2p(f, &mut d, p),
            Some(Kind::Integrity(i)) => {
                // A break in a chain of custody: found by what broke and
                // by the words of its description, which names the stream
                // and the sequence numbers.
                d.add_text(f.kind, "integrity");
                d.add_text(f.operation, &i.what);
                d.add_text(f.body, &i.detail);
                d.add_text(f.path, &i.stream_id);
            }
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
                mailflow::add_domains(f, &mut d, &g.senders, &g.recipients);
                for p in g.paths.iter().filter(|p| !p.is_empty()) {
                    d.add_text(f.path, p);
                }
                d.add_text(f.body, &g.detail);
            }
            _ => {}
        }
        if let Some(x) = derived {
            add_derived(f, &mut d, x);
        }
        exfil::add_fields(f, &mut d, &crate::investigate::exfil_files(e));
        stats::add_fields(&f.stats, &mut d, e);
        d.add_bytes(f.event, &e.encode_to_vec());
        d
    }
}

/// The derived fields of an event (its annotations): files found inside
/// its attachments searchable by hash and name like attachments, the
/// collector's derived tags like tags.
fn add_derived(f: &Fields, d: &mut TantivyDocument, x: &Derived) {
    for t in &x.texts {
        d.add_text(f.attachment_text, t);
    }
    for t in &x.annotations.tags {
        d.add_text(f.tag, t);
    }
    for a in &x.annotations.attachments {
        if !a.path.is_empty() {
            d.add_text(f.attachment_name, &a.name);
            if !a.sha256.is_empty() {
                d.add_bytes(f.sha256, &sha_key(&a.sha256));
            }
        }
        for m in &a.members {
            d.add_text(f.attachment_name, &m.path);
            if !m.sha256.is_empty() {
                d.add_bytes(f.sha256, &sha_key(&m.sha256));
            }
        }
    }
}
