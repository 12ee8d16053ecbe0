//! Attachment text for search: the words of an attachment, extracted on
//! the collector (never on the agent), for the index field
//! `attachment_text` (`--attachment-text`, and `--text`).
//!
//! What is read: plain text in any charset (the declared one, a byte-order
//! mark, UTF-8, else the charset chardetng detects — Shift_JIS, EUC-JP and
//! ISO-2022-JP included), HTML (its text, without markup, scripts and
//! styles), PDF, DOCX, PPTX, XLSX and the legacy XLS. The format is taken
//! from the bytes first (`%PDF-`, a ZIP holding an Office document's main
//! part, an OLE compound file that its type or name calls a workbook);
//! names and types otherwise only decide between plain text, HTML and
//! nothing, which have no signature.
//!
//! Bounds, per attachment ([`TextLimits`]): an attachment over
//! `max_input_bytes` is not read (plain text: only its beginning); the text
//! kept is cut at `max_text_bytes`; documents (PDF, Office) are read in a
//! subprocess (`kiroku-collector extract-text`, [`runner`]) with an
//! address-space and a CPU limit, killed after `timeout` — CPU-bound
//! parsing of a hostile file can loop or grow without end, and a thread
//! cannot be stopped, a process can. Plain text and HTML are read in the
//! calling process: their decoding is one linear pass over a bounded
//! input.
//!
//! Invariant: `extract` never fails and never panics the caller. What it
//! could not read is said in [`Extracted::status`]:
//! - `extracted` — the text is all there (it may be empty: a scanned PDF);
//! - `none` — this type has no text (an image, an archive);
//! - `unreadable: <why>` — a damaged, encrypted or unsupported document;
//! - `cut at <n> bytes` — the text kept is its first `n` bytes;
//! - `timed out after <n> s` — the reader was stopped; no text is kept.
//!
//! A document that cannot be read is recorded as such, never an error for
//! the mail.

mod html;
mod ooxml;
mod pdf;
mod plain;
mod runner;
mod sheet;
mod sink;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use runner::{SUBCOMMAND, child_main};

/// What extraction may spend on one attachment: `[analysis.text]` in the
/// collector config (every key optional).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TextLimits {
    /// A document larger than this is not read (plain text and HTML: only
    /// the beginning that can fill `max_text_bytes` is read anyway).
    pub max_input_bytes: usize,
    /// Text kept per attachment, in bytes of UTF-8; the rest is cut.
    pub max_text_bytes: usize,
    /// Wall-clock seconds a document's reader may take before it is
    /// killed.
    pub timeout_secs: u64,
    /// Address space of the reader's subprocess: a document that makes it
    /// allocate more is recorded as unreadable.
    pub max_memory_bytes: u64,
    /// The program run as the reader (`<program> extract-text …`); None:
    /// the running executable, which is `kiroku-collector`. Tests set it.
    #[serde(skip)]
    pub program: Option<PathBuf>,
}

impl Default for TextLimits {
    fn default() -> TextLimits {
        TextLimits {
            max_input_bytes: 64 << 20,
            max_text_bytes: 1 << 20,
            timeout_secs: 10,
            max_memory_bytes: 1 << 30,
            program: None,
        }
    }
}

/// The text of one attachment and how far it could be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extracted {
    pub text: String,
    /// `extracted`, `none`, `unreadable: <why>`, `cut at <n> bytes` or
    /// `timed out after <n> s` (see the module documentation).
    pub status: String,
}

/// Status of an attachment whose text is all there.
pub const EXTRACTED: &str = "extracted";
/// Status of an attachment of a type without text.
pub const NONE: &str = "none";

impl Extracted {
    fn status(status: impl Into<String>) -> Extracted {
        Extracted {
            text: String::new(),
            status: status.into(),
        }
    }

    fn unreadable(why: impl std::fmt::Display) -> Extracted {
        Extracted::status(format!("unreadable: {why}"))
    }
}

/// The kinds of content a reader exists for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Plain,
    Html,
    Pdf,
    /// A ZIP said to be an Office document: DOCX, PPTX or XLSX by the
    /// parts it holds, else no text.
    Ooxml,
    /// An OLE compound file that claims to be an Excel 97–2003 workbook.
    Xls,
    /// A password-protected Office document (OOXML inside an OLE file's
    /// `EncryptedPackage`): no text without the password.
    Encrypted,
}

impl Format {
    /// The word the reader subprocess is told the format by.
    pub fn word(self) -> &'static str {
        match self {
            Format::Plain => "plain",
            Format::Html => "html",
            Format::Pdf => "pdf",
            Format::Ooxml => "ooxml",
            Format::Xls => "xls",
            Format::Encrypted => "encrypted",
        }
    }

    fn from_word(w: &str) -> Option<Format> {
        [
            Format::Plain,
            Format::Html,
            Format::Pdf,
            Format::Ooxml,
            Format::Xls,
            Format::Encrypted,
        ]
        .into_iter()
        .find(|f| f.word() == w)
    }

    /// The format of an attachment, None when it has no text to read. The
    /// bytes decide where they have a signature; `name`, `declared_type`
    /// and `detected_type` (what the analysis read from the bytes) only
    /// tell text, HTML and binary apart.
    pub fn of(data: &[u8], name: &str, declared_type: &str, detected_type: &str) -> Option<Format> {
        const OLE: &[u8] = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1";
        let head = &data[..data.len().min(1024)];
        if memchr::memmem::find(head, b"%PDF-").is_some() {
            return Some(Format::Pdf);
        }
        let ext = name
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .unwrap_or_default();
        let types = [mime_essence(declared_type), mime_essence(detected_type)];
        let is_type = |t: &str| types.iter().any(|x| x == t);
        if data.starts_with(b"PK\x03\x04") {
            // A ZIP is read when it holds the main part of an Office
            // document: part names are stored uncompressed, so a scan of
            // the bytes finds them without opening the ZIP here (nor
            // trusting the name, or `infer`, which looks at the first
            // entries only and calls many real DOCX files a ZIP). A plain
            // archive (listed by analysis/archive.rs) costs no reader.
            let office = [
                "word/document.xml",
                "xl/workbook.xml",
                "ppt/presentation.xml",
            ]
            .iter()
            .any(|part| memchr::memmem::find(data, part.as_bytes()).is_some());
            return office.then_some(Format::Ooxml);
        }
        // The stream name `EncryptedPackage` (UTF-16LE in the OLE
        // directory) is what Office writes for a document with a password
        // to open.
        const ENCRYPTED: &[u8] = b"E\0n\0c\0r\0y\0p\0t\0e\0d\0P\0a\0c\0k\0a\0g\0e\0";
        if data.starts_with(OLE) && memchr::memmem::find(data, ENCRYPTED).is_some() {
            return Some(Format::Encrypted);
        }
        if data.starts_with(OLE) {
            // Word 97 documents, Outlook items and PowerPoint decks are OLE
            // files too; only a workbook is read (the detected type names
            // one: analysis/types.rs reads the OLE directory).
            let excel = matches!(ext.as_str(), "xls" | "xlt" | "xla")
                || types.iter().any(|t| t.contains("ms-excel"));
            return excel.then_some(Format::Xls);
        }
        if plain::is_binary(head) {
            return None;
        }
        let html_start = {
            let start = String::from_utf8_lossy(&head[..head.len().min(256)]).to_ascii_lowercase();
            let start = start.trim_start_matches('\u{feff}').trim_start();
            start.starts_with("<!doctype html") || start.starts_with("<html")
        };
        if is_type("text/html")
            || is_type("application/xhtml+xml")
            || matches!(ext.as_str(), "htm" | "html" | "xhtml")
            || html_start
        {
            return Some(Format::Html);
        }
        // Declared or detected as another type with content of its own
        // (an image, audio), an attached mail (its files are analysed one
        // by one; its raw text would index base64 and headers) or PGP and
        // S/MIME armour: not text, whatever the bytes look like.
        let other = types.iter().any(|t| {
            [
                "image/",
                "audio/",
                "video/",
                "font/",
                "model/",
                "message/",
                "application/pgp",
                "application/pkcs7",
                "application/x-pkcs7",
            ]
            .iter()
            .any(|p| t.starts_with(p))
        });
        if other && !matches!(ext.as_str(), "txt" | "csv") {
            return None;
        }
        let texty = types.iter().any(|t| {
            t.starts_with("text/")
                || matches!(
                    t.as_str(),
                    "application/json" | "application/xml" | "application/csv"
                )
        }) || matches!(
            ext.as_str(),
            "txt" | "csv" | "tsv" | "log" | "md" | "json" | "xml" | "ini" | "conf" | "yaml" | "yml"
        );
        (texty || plain::looks_like_text(head)).then_some(Format::Plain)
    }
}

/// A MIME type without its parameters, lower case.
fn mime_essence(t: &str) -> String {
    t.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The `charset` parameter of a declared type, if any.
pub fn charset_param(t: &str) -> Option<&str> {
    t.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| v.trim().trim_matches('"'))
    })
}

/// The text of one attachment (see the module documentation): bounded in
/// input, output, memory and time; never an error.
pub fn extract(
    data: &[u8],
    name: &str,
    declared_type: &str,
    detected_type: &str,
    limits: &TextLimits,
) -> Extracted {
    let format = Format::of(data, name, declared_type, detected_type);
    extract_as(format, data, declared_type, limits)
}

/// [`extract`] with the format already chosen by [`Format::of`] (the
/// dispatcher keys the text it keeps by the format and charset).
pub fn extract_as(
    format: Option<Format>,
    data: &[u8],
    declared_type: &str,
    limits: &TextLimits,
) -> Extracted {
    let Some(format) = format else {
        return Extracted::status(NONE);
    };
    match format {
        Format::Plain | Format::Html => {
            let data = &data[..data.len().min(limits.max_input_bytes)];
            read(
                format,
                data,
                charset_param(declared_type),
                limits.max_text_bytes,
            )
        }
        Format::Encrypted => Extracted::unreadable("a password-protected Office document"),
        _ if data.len() > limits.max_input_bytes => Extracted::unreadable(format!(
            "{} bytes, over the limit of {} bytes for documents",
            data.len(),
            limits.max_input_bytes
        )),
        _ => runner::run(format, data, limits),
    }
}

/// Reads `data` as `format` in this process, keeping at most `max_text`
/// bytes of text. The subprocess runs this; plain text and HTML run it
/// directly.
fn read(format: Format, data: &[u8], charset: Option<&str>, max_text: usize) -> Extracted {
    let mut out = sink::Sink::new(max_text);
    let result = match format {
        Format::Plain | Format::Html => {
            // Only the beginning that can fill the text kept is decoded: a
            // byte of text takes at most 4 bytes of plain text (UTF-16,
            // ISO-2022-JP's escapes) — HTML's markup is allowed 16 —, so a
            // large file costs no more than a small one.
            let ratio = if format == Format::Plain { 4 } else { 16 };
            let keep = max_text.saturating_mul(ratio).saturating_add(4);
            let cut = data.len() > keep;
            let data = &data[..data.len().min(keep)];
            let text = if format == Format::Plain {
                plain::decode(data, charset)
            } else {
                plain::decode_html(data, charset)
            };
            // A character cut at the end of the input decodes as U+FFFD.
            let text = if cut {
                text.trim_end_matches('\u{fffd}')
            } else {
                &text
            };
            if format == Format::Plain {
                out.push(text);
            } else {
                html::text(text, &mut out);
            }
            if cut {
                out.mark_cut();
            }
            Ok(())
        }
        Format::Pdf => pdf::text(data, &mut out),
        Format::Ooxml => ooxml::text(data, &mut out),
        Format::Xls => sheet::xls(data, &mut out),
        Format::Encrypted => Err(sink::unreadable("a password-protected Office document")),
    };
    out.finish(result)
}

#[cfg(test)]
mod tests;
