//! Plain text in any charset: which charset, and the bytes as UTF-8.
//!
//! The charset is, in order: a byte-order mark; UTF-8 when the bytes are
//! valid UTF-8 beyond ASCII (mail clients mislabel, most often UTF-8 as
//! ISO-8859-1 or US-ASCII); the declared one, unless the bytes are not
//! valid in it; UTF-8 for ASCII; else
//! what chardetng detects (the detector Firefox uses: Shift_JIS, EUC-JP and
//! ISO-2022-JP among the legacy encodings it tells apart).

use chardetng::{EncodingDetector, Iso2022JpDetection, Utf8Detection};
use encoding_rs::{Encoding, UTF_8};

/// How much of the content the detector reads: enough to tell the
/// Japanese encodings apart, and it keeps detection linear in a bounded
/// input.
const DETECT_BYTES: usize = 64 << 10;

/// The text of `data` in its charset (see the module documentation).
pub(super) fn decode(data: &[u8], declared: Option<&str>) -> String {
    encoding(data, declared)
        .decode_with_bom_removal(data)
        .0
        .into_owned()
}

/// An HTML document's text with markup, in its charset: as [`decode`],
/// with a `<meta charset>` (or `http-equiv` content type) in its head
/// counted as declared when the mail declared none.
pub(super) fn decode_html(data: &[u8], declared: Option<&str>) -> String {
    let meta = if declared.is_none() {
        meta_charset(&data[..data.len().min(4096)])
    } else {
        None
    };
    decode(data, declared.or(meta.as_deref()))
}

fn encoding(data: &[u8], declared: Option<&str>) -> &'static Encoding {
    if let Some((bom, _)) = Encoding::for_bom(data) {
        return bom;
    }
    // Valid UTF-8 with non-ASCII characters is UTF-8 whatever the label
    // says: no legacy text passes as UTF-8 by chance, and "us-ascii" or
    // "iso-8859-1" on UTF-8 is the commonest mislabelling.
    let utf8 = std::str::from_utf8(data).is_ok();
    if utf8 && !data.is_ascii() {
        return UTF_8;
    }
    if let Some(e) = declared.and_then(|l| Encoding::for_label(l.trim().as_bytes()))
        && e.decode_without_bom_handling_and_without_replacement(data)
            .is_some()
    {
        return e;
    }
    // ISO-2022-JP is 7-bit, so ASCII too: ASCII with its escape sequences
    // goes to the detector.
    if utf8 && memchr::memmem::find(data, b"\x1b$").is_none() {
        return UTF_8;
    }
    let mut detector = EncodingDetector::new(Iso2022JpDetection::Allow);
    let sample = &data[..data.len().min(DETECT_BYTES)];
    detector.feed(sample, sample.len() == data.len());
    detector.guess(None, Utf8Detection::Allow)
}

/// The charset an HTML head names: `<meta charset="…">` or
/// `<meta http-equiv="Content-Type" content="text/html; charset=…">`.
fn meta_charset(head: &[u8]) -> Option<String> {
    let lower = head.to_ascii_lowercase();
    let at = memchr::memmem::find(&lower, b"charset=")? + b"charset=".len();
    let label: String = lower[at..]
        .iter()
        .skip_while(|&&b| b == b'"' || b == b'\'' || b == b' ')
        .take_while(|&&b| b.is_ascii_alphanumeric() || b"-_:.".contains(&b))
        .map(|&b| b as char)
        .collect();
    (!label.is_empty()).then_some(label)
}

/// Whether the start of some content is binary: a NUL byte, unless a
/// UTF-16 byte-order mark says the NULs are half of its characters.
pub(super) fn is_binary(head: &[u8]) -> bool {
    let utf16 = matches!(
        Encoding::for_bom(head),
        Some((e, _)) if e != UTF_8
    );
    !utf16 && head.contains(&0)
}

/// Whether content nothing declares as text still reads as text: hardly
/// any control characters other than tab, line ends, form feed and the
/// escape of ISO-2022-JP.
pub(super) fn looks_like_text(head: &[u8]) -> bool {
    if head.is_empty() {
        return false;
    }
    let controls = head
        .iter()
        .filter(|&&b| (b < 0x20 && !b"\t\n\r\x0c\x1b".contains(&b)) || b == 0x7f)
        .count();
    controls * 50 <= head.len()
}
