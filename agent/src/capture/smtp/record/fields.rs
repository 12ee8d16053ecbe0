//! The message's own header fields in the record: addresses, subject,
//! date, Message-ID.

use kiroku_common::mime::{Header, address, headers};

use super::visit::Parsed;

pub(super) fn header_fields(h: &[Header], p: &mut Parsed) {
    if h.is_empty() {
        p.warnings
            .push("message has no headers (does not start with a `Name: value` line)".into());
    }
    p.from = addresses(h, "From", p);
    p.to = addresses(h, "To", p);
    p.cc = addresses(h, "Cc", p);
    p.reply_to = addresses(h, "Reply-To", p);
    p.subject = headers::first(h, "Subject")
        .map(Header::text)
        .unwrap_or_default();
    p.message_id = headers::first(h, "Message-ID")
        .map(|m| m.text().trim().to_owned())
        .unwrap_or_default();
    if let Some(date) = headers::first(h, "Date").map(Header::text) {
        match mailparse::dateparse(&date) {
            Ok(secs) => p.sent_at_ms = secs.saturating_mul(1000),
            Err(e) => p.warnings.push(format!("Date header {date:?}: {e}")),
        }
        p.date = date;
    }
}

/// Every address of every `name` field. mailparse refuses a whole field for
/// one bad entry (a bare local part such as `root`, common in local mail):
/// that is noted in `parse_warnings` and every address that is there is
/// kept; empty elements (`To: , carol@example.com`) are skipped and noted
/// in `decode_warnings`.
fn addresses(h: &[Header], name: &str, p: &mut Parsed) -> Vec<String> {
    let mut out = Vec::new();
    for field in headers::all(h, name) {
        let (mut notes, mut errors) = (Vec::new(), Vec::new());
        out.extend(address::parse(&field.unfolded(), &mut notes, &mut errors));
        p.warnings
            .extend(errors.into_iter().map(|e| format!("{name} header: {e}")));
        p.decode_warnings
            .extend(notes.into_iter().map(|n| format!("{name} header: {n}")));
    }
    out
}
