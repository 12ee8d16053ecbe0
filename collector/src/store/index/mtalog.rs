//! Issue 20: the fields of an MTA log line (`MtaLogEvent`), in the fields
//! mail already uses so the same filters find them:
//! `--queue-id` (the MTA's queue id), `--message-id`, `--client-ip`,
//! `--auth-user` (the SASL login the line names), `--sender`/`--recipient`/
//! `--address` and their domains (from=, to=, orig_to=), `--outcome` (the
//! delivery status: sent, deferred, bounced, expired) and `--text` (the
//! line's words).

use std::net::IpAddr;

use kiroku_common::search::as_v6;
use kiroku_proto::MtaLogEvent;
use tantivy::TantivyDocument;

use super::mailflow::{add_domains, message_id_key};
use super::schema::Fields;

pub(super) fn add_fields(f: &Fields, d: &mut TantivyDocument, m: &MtaLogEvent) {
    d.add_text(f.kind, "mta_log");
    if !m.queue_id.is_empty() {
        d.add_text(f.queue_id, m.queue_id.trim().to_lowercase());
    }
    if !m.message_id.trim().is_empty() {
        d.add_text(f.message_id, message_id_key(&m.message_id));
    }
    if let Ok(ip) = m.client_ip.trim().parse::<IpAddr>() {
        d.add_ip_addr(f.client_ip, as_v6(ip));
    }
    if !m.sasl_username.is_empty() {
        d.add_text(f.auth_user, m.sasl_username.to_lowercase());
    }
    if !m.status.is_empty() {
        d.add_text(f.outcome, m.status.to_lowercase());
    }
    let senders: Vec<&str> = std::iter::once(m.from.as_str())
        .filter(|a| !a.is_empty())
        .collect();
    let recipients: Vec<&str> =
        m.to.iter()
            .map(String::as_str)
            .chain(std::iter::once(m.orig_to.as_str()))
            .filter(|a| !a.is_empty())
            .collect();
    for a in &senders {
        d.add_text(f.sender, a.to_lowercase());
        d.add_text(f.address, a.to_lowercase());
    }
    for a in &recipients {
        d.add_text(f.recipient, a.to_lowercase());
        d.add_text(f.address, a.to_lowercase());
    }
    add_domains(f, d, &senders, &recipients);
    d.add_text(f.body, &m.line);
}
