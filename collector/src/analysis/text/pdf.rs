//! The text of a PDF, page by page, through `lopdf`.
//!
//! Why lopdf and not pdf-extract (compared on the committed fixtures,
//! reportlab's and LibreOffice's output with an embedded IPA Gothic
//! subset, 2026-12-05): both read the Japanese of both files right through
//! their ToUnicode maps. lopdf is maintained release by release, bounds
//! the decompressed size of every stream and page (a tiny PDF can inflate
//! to gigabytes), was 2–4 times faster, and answers a damaged file with an
//! error or no pages; pdf-extract builds on an older lopdf and still has
//! `todo!()` panics for unusual font encodings. What pdf-extract does
//! better is spacing (it places glyphs, so `第 3 四半期` stays one line
//! where lopdf gives one line per text run): the analyzer cuts words at
//! line ends anyway, so search finds the same words.

use lopdf::{Document, LoadOptions};

use super::sink::{ReadResult, Sink, unreadable};

/// Decompressed bytes of one stream, or of one page's content: a bound on
/// the memory a small hostile PDF can make the reader spend.
const MAX_DECOMPRESSED: usize = 64 << 20;

pub(super) fn text(data: &[u8], out: &mut Sink) -> ReadResult {
    let doc = Document::load_mem_with_options(
        data,
        LoadOptions::with_max_decompressed_size(MAX_DECOMPRESSED),
    )
    .map_err(|e| match e {
        lopdf::Error::Decryption(_) => unreadable("the PDF is encrypted"),
        e => unreadable(format!("not a readable PDF ({e})")),
    })?;
    let pages = doc.get_pages();
    if pages.is_empty() {
        return Err(unreadable("the PDF has no readable pages"));
    }
    let mut first_error = None;
    let mut read = 0;
    for &page in pages.keys() {
        for chunk in doc.extract_text_chunks_with_limit(&[page], MAX_DECOMPRESSED) {
            match chunk {
                Ok(t) => {
                    read += 1;
                    if !out.push(&t) {
                        return Ok(());
                    }
                }
                Err(e) => {
                    first_error.get_or_insert_with(|| format!("page {page}: {e}"));
                }
            }
        }
        out.line_break();
    }
    match first_error {
        // Some pages read: what they hold is searchable; the others are
        // lost to search only.
        Some(e) if read == 0 => Err(unreadable(format!("no page could be read ({e})"))),
        _ => Ok(()),
    }
}
