//! Attachment text extraction (owned by the text work of issue 17):
//! bounded, CPU-bound work in a subprocess, for search.
//!
//! The dispatcher (`analysis.rs`) calls [`extract`] per attachment; the
//! annotation store keeps the text by the attachment's SHA-256 and the
//! index gets it (`store::index::Derived::texts`). This file holds the
//! agreed signature; its body extracts nothing until the extraction lands.

/// Bounds of one extraction.
#[derive(Debug, Clone)]
pub struct TextLimits {
    /// Larger inputs are not read ("unreadable: too large").
    pub max_input_bytes: u64,
    /// Text kept per attachment.
    pub max_text_bytes: usize,
    /// Longest time one extraction may take.
    pub max_time: std::time::Duration,
}

impl Default for TextLimits {
    fn default() -> Self {
        TextLimits {
            max_input_bytes: 64 << 20,
            max_text_bytes: 4 << 20,
            max_time: std::time::Duration::from_secs(30),
        }
    }
}

/// The text of one file and how it went: "extracted", "none" (no text in
/// this type), "unreadable: <why>", "cut at <n> bytes", "timed out after
/// <n> s".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extracted {
    pub text: String,
    pub status: String,
}

/// The text of `data` (named `name`, declared and detected as the given
/// MIME types), bounded by `limits`. Never an error: a file that cannot be
/// read says so in `status`.
pub fn extract(
    data: &[u8],
    name: &str,
    declared_type: &str,
    detected_type: &str,
    limits: &TextLimits,
) -> Extracted {
    let _ = (data, name, declared_type, detected_type, limits);
    Extracted {
        text: String::new(),
        status: "none".into(),
    }
}
