//! Bounds on the size of one mail's record. The shipper sends events in
//! batches of up to 8 MiB (one event alone when it is larger) and the
//! collector refuses a gRPC message over 16 MiB: an event it refuses is
//! sent again forever and stops the agent's shipping. So every field one
//! mail controls is cut to a size no investigation needs, with a note in
//! `parse_warnings` (the raw message, stored whole, has everything), and a
//! last guard keeps the whole record under [`MAX_RECORD`] bytes.

use kiroku_proto::EmailEvent;
use prost::Message;

/// Encoded size one email record may have (a quarter of the collector's
/// gRPC message limit, half a shipper batch).
pub const MAX_RECORD: usize = 4 * 1024 * 1024;
/// Longest subject kept (bytes).
const MAX_SUBJECT: usize = 16 * 1024;
/// Longest Date, Message-ID, address, warning, file name kept (bytes).
const MAX_SHORT: usize = 1024;
/// Longest content type and transfer encoding kept (bytes).
const MAX_TYPE: usize = 256;
/// Addresses kept per header field list (From, To, Cc, Reply-To, Bcc).
const MAX_ADDRESSES: usize = 1_000;
/// Warnings kept per list (parse_warnings, decode_warnings).
const MAX_WARNINGS: usize = 200;
/// Envelope recipients kept when the record is still too large.
const MAX_RCPT: usize = 10_000;
/// Name candidates kept per attachment.
const MAX_CANDIDATES: usize = 16;

/// Cuts `s` to at most `max` bytes at a character boundary; the original
/// length when it was cut.
fn cut(s: &mut String, max: usize) -> Option<usize> {
    if s.len() <= max {
        return None;
    }
    let len = s.len();
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    Some(len)
}

/// Cuts a list to `max` entries; how many there were when cut.
fn cap_list<T>(v: &mut Vec<T>, max: usize) -> Option<usize> {
    let len = v.len();
    (len > max).then(|| {
        v.truncate(max);
        len
    })
}

/// Applies every bound to `ev`; notes what was cut in `parse_warnings`.
pub(super) fn bound(ev: &mut EmailEvent) {
    let mut notes: Vec<String> = Vec::new();
    for (what, s, max) in [
        ("subject", &mut ev.subject, MAX_SUBJECT),
        ("Date", &mut ev.date, MAX_SHORT),
        ("Message-ID", &mut ev.message_id, MAX_SHORT),
    ] {
        if let Some(len) = cut(s, max) {
            notes.push(format!("{what} cut at {max} of {len} bytes"));
        }
    }
    for (what, list) in [
        ("From", &mut ev.from),
        ("To", &mut ev.to),
        ("Cc", &mut ev.cc),
        ("Reply-To", &mut ev.reply_to),
        ("Bcc", &mut ev.bcc),
    ] {
        if let Some(len) = cap_list(list, MAX_ADDRESSES) {
            notes.push(format!("{what}: {MAX_ADDRESSES} of {len} addresses kept"));
        }
        let long = list.iter_mut().filter_map(|a| cut(a, MAX_SHORT)).count();
        if long > 0 {
            notes.push(format!(
                "{what}: {long} address(es) longer than {MAX_SHORT} bytes cut"
            ));
        }
    }
    let mut long_names = 0;
    let mut many_names = 0;
    for a in &mut ev.attachments {
        long_names += usize::from(cut(&mut a.filename, MAX_SHORT).is_some());
        many_names += usize::from(cap_list(&mut a.name_candidates, MAX_CANDIDATES).is_some());
        for c in &mut a.name_candidates {
            long_names += usize::from(cut(c, MAX_SHORT).is_some());
        }
        cut(&mut a.content_type, MAX_TYPE);
        cut(&mut a.transfer_encoding, MAX_TYPE);
    }
    if long_names > 0 {
        notes.push(format!(
            "{long_names} attachment name(s) longer than {MAX_SHORT} bytes cut"
        ));
    }
    if many_names > 0 {
        notes.push(format!(
            "{many_names} attachment(s) with more than {MAX_CANDIDATES} names: the first {MAX_CANDIDATES} kept"
        ));
    }
    for list in [&mut ev.decode_warnings, &mut ev.parse_warnings] {
        cap_warnings(list);
    }
    shrink_attachments(ev, &mut notes);
    // The envelope's recipients are the record's core; only a transaction
    // of tens of thousands of RCPT commands reaches this bound (the
    // recipient count stays true).
    if ev.encoded_len() > MAX_RECORD
        && let Some(len) = cap_list(&mut ev.rcpt_to, MAX_RCPT)
    {
        notes.push(format!("{MAX_RCPT} of {len} envelope recipients kept"));
    }
    if !notes.is_empty() {
        ev.parse_warnings.push(format!(
            "record size bounded (the raw message has it all): {}",
            notes.join("; ")
        ));
    }
}

/// Keeps [`MAX_WARNINGS`] warnings of at most [`MAX_SHORT`] bytes each.
fn cap_warnings(list: &mut Vec<String>) {
    for w in list.iter_mut() {
        if cut(w, MAX_SHORT).is_some() {
            w.push('…');
        }
    }
    if let Some(len) = cap_list(list, MAX_WARNINGS) {
        list.push(format!("… and {} more", len - MAX_WARNINGS));
    }
}

/// The last guard: when the record is still over [`MAX_RECORD`] (thousands
/// of parts with long names), attachments keep at most two names (so a
/// mismatch still shows), then names of 128 bytes, then the list ends
/// where the budget does. `attachment_count` keeps the true count.
fn shrink_attachments(ev: &mut EmailEvent, notes: &mut Vec<String>) {
    if ev.encoded_len() <= MAX_RECORD {
        return;
    }
    for a in &mut ev.attachments {
        a.name_candidates.truncate(2);
    }
    notes.push("attachments keep at most 2 name candidates".into());
    if ev.encoded_len() <= MAX_RECORD {
        return;
    }
    for a in &mut ev.attachments {
        cut(&mut a.filename, 128);
        for c in &mut a.name_candidates {
            cut(c, 128);
        }
    }
    notes.push("attachment names cut at 128 bytes".into());
    let total = ev.encoded_len();
    if total <= MAX_RECORD {
        return;
    }
    // Drop from the end until the rest fits (one pass: each attachment's
    // share of the encoding is its own encoded length plus a few bytes).
    let mut over = total - MAX_RECORD;
    let len = ev.attachments.len();
    while over > 0 {
        let Some(a) = ev.attachments.pop() else { break };
        over = over.saturating_sub(a.encoded_len() + 8);
    }
    notes.push(format!(
        "{} of {len} attachments listed",
        ev.attachments.len()
    ));
}
