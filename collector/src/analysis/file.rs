//! One file of a mail analysed: typed, its type checked against its
//! name and declared type, checked against the mail's budget, then opened
//! as attached mail or TNEF or read as a leaf; and the names given to
//! attached mail that has none.

use kiroku_proto::AttachmentAnalysis;

use super::read::{self, Content};
use super::store::AnnotationError;
use super::{EVENT_BUDGET, Run, TAG_EVENT_BUDGET, TAG_TYPE_MISMATCH, types};

/// The name of an unnamed attached mail: after its subject (else
/// "message.eml"); None for anything else.
pub(super) fn default_name(declared: &str, content: Option<&Content>) -> Option<String> {
    let head = content.map(Content::head).unwrap_or_default();
    (declared.to_ascii_lowercase().starts_with(types::MESSAGE)
        || types::detect(head) == types::MESSAGE)
        .then(|| message_name(&read::subject(head)))
}

/// A name for an attached message from its subject.
pub(super) fn message_name(subject: &str) -> String {
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
    /// Analyses one file (`path` is where it sits: "" for an attachment of
    /// the mail, else its container's path) and records it; files inside
    /// attached messages and TNEF follow it, each analysed the same way.
    pub(super) fn file(
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
}
