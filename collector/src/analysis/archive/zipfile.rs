//! ZIP: members from the central directory (names and encryption are
//! there even when the content is encrypted), content through the `zip`
//! crate's decoders.
//!
//! Every ZIP's members are listed, documents (OOXML, ODF) included: being
//! a document is only a label ("document" as the container), because one
//! extra `[Content_Types].xml` or `mimetype` entry must not hide an
//! encrypted archive's members, and a document's embedded files
//! (`word/embeddings/*`, `xl/embeddings/*`) are files that were mailed. A
//! ZIP with any encrypted entry is never labelled a document.

use std::borrow::Cow;
use std::io::Cursor;

use zip::ZipArchive;

use super::{Opened, Walk, at};

/// Lists a ZIP's members into `walk`. `by_tail`: the ZIP was recognised
/// only by its end-of-central-directory record (data before it: a
/// self-extractor, a polyglot); when the `zip` crate cannot open it, it is
/// taken for no archive at all rather than a damaged one.
pub(super) fn list(
    walk: &mut Walk,
    data: &[u8],
    prefix: &str,
    depth: u32,
    by_tail: bool,
) -> Opened {
    let mut archive = match ZipArchive::new(Cursor::new(data)) {
        Ok(a) => a,
        Err(_) if by_tail => return Opened::NotArchive,
        Err(e) => {
            walk.note(format!("damaged: {}zip: {e}", at(prefix)));
            return Opened::Listed("zip");
        }
    };
    let document = is_document(&mut archive);
    // The encryption flags come from the central directory, read in full
    // by `ZipArchive::new`: all are looked at, even when a bound stops the
    // listing below before the encrypted entry.
    let mut any_encrypted = false;
    for i in 0..archive.len() {
        if archive.by_index_raw(i).is_ok_and(|f| f.encrypted()) {
            any_encrypted = true;
            walk.encryption.insert(encryption_of(&mut archive, i));
        }
    }
    for i in 0..archive.len() {
        if !walk.may_list() {
            break;
        }
        let (path, size, encrypted, is_dir) = match archive.by_index_raw(i) {
            Ok(f) => (
                format!("{prefix}{}", member_name(f.name_raw(), f.name().ok())),
                f.size(),
                f.encrypted(),
                f.is_dir(),
            ),
            Err(e) => {
                walk.note(format!("damaged: {}zip member {i}: {e}", at(prefix)));
                continue;
            }
        };
        if is_dir {
            continue;
        }
        if encrypted {
            walk.unread(path, size, depth, true, "encrypted");
            continue;
        }
        match archive.by_index(i) {
            Ok(mut f) => walk.member(path, size, depth, &mut f, true),
            Err(e) => walk.unread(path, size, depth, false, &format!("unreadable: {e}")),
        }
    }
    if document && !any_encrypted {
        Opened::Listed("document")
    } else {
        Opened::Listed("zip")
    }
}

/// "zipcrypto" or "aes-<bits>": how entry `i` is encrypted.
fn encryption_of(archive: &mut ZipArchive<Cursor<&[u8]>>, i: usize) -> String {
    match archive.get_aes_verification_key_and_salt(i) {
        Ok(Some(aes)) => format!("aes-{}", aes_bits(aes.aes_mode)),
        _ => "zipcrypto".to_owned(),
    }
}

/// An OOXML (docx, xlsx, pptx) or ODF (odt, ods, odp) document: a ZIP by
/// format, a document by meaning.
fn is_document(archive: &mut ZipArchive<Cursor<&[u8]>>) -> bool {
    if archive.index_for_name("[Content_Types].xml").is_some() {
        return true;
    }
    // ODF: an uncompressed first member `mimetype` naming an ODF type.
    let Ok(mut first) = archive.by_index(0) else {
        return false;
    };
    if first.name_raw() != b"mimetype" || first.size() > 200 {
        return false;
    }
    let mut mime = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(&mut first, 200), &mut mime).is_ok()
        && mime.starts_with(b"application/vnd.oasis.opendocument.")
}

/// A member's name as its sender saw it. ZIP names without the UTF-8 flag
/// are in the sending system's code page: ZIP tools on Japanese Windows
/// write Shift_JIS, which the `zip` crate reads as CP437 (mojibake), so a
/// name that is not UTF-8 and decodes cleanly as Shift_JIS is taken so.
fn member_name(raw: &[u8], crate_name: Option<Cow<'_, str>>) -> String {
    if let Ok(s) = std::str::from_utf8(raw) {
        return s.to_owned();
    }
    let (sjis, _, bad) = encoding_rs::SHIFT_JIS.decode(raw);
    if !bad {
        return sjis.into_owned();
    }
    crate_name
        .map(Cow::into_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(raw).into_owned())
}

fn aes_bits(mode: zip::AesMode) -> u32 {
    match mode {
        zip::AesMode::Aes128 => 128,
        zip::AesMode::Aes192 => 192,
        zip::AesMode::Aes256 => 256,
    }
}
