//! A file that is no message or TNEF: its archive listing, kept by
//! SHA-256, and its text, kept by SHA-256, format and charset; both
//! reused from the per-file store, both within the mail's budget.

use kiroku_proto::AttachmentAnalysis;

use super::store::AnnotationError;
use super::{
    EVENT_BUDGET, Run, TAG_ARCHIVE_BOUNDED, TAG_ENCRYPTED_ATTACHMENT, TAG_EVENT_BUDGET,
    TAG_TEXT_UNREADABLE, VERSION, archive, text, transient,
};

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

impl Run<'_> {
    /// Archive listing and text of a file that is no message or TNEF. The
    /// listing depends on the bytes only and is reused from the per-file
    /// store when this version did it before; the text also depends on
    /// the format chosen (name, declared type) and charset, and is kept
    /// under that key ([`text_key`]). Results that something outside the
    /// file cut short ([`transient`]) are not kept: the next analysis
    /// tries again.
    pub(super) fn leaf(&mut self, index: usize, data: &[u8]) -> Result<(), AnnotationError> {
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
}
