//! A file's real type from its bytes, and whether it disagrees with the
//! name's extension or the declared Content-Type (a `.pdf` that is a ZIP,
//! a `.txt` that is an executable: the `type-mismatch` tag).
//!
//! Magic numbers come from the `infer` crate (maintained, no unsafe code,
//! reads OLE compound files through `cfb`); it tells OOXML and ODF
//! documents from plain ZIP archives by their members, so a `.docx` is a
//! document, not an archive. Added here what it does not know: TNEF
//! (`winmail.dat`), an attached mail (`message/rfc822`), PGP armour, and
//! the fallback between text and unknown binary.

/// What nothing more specific matched and is not text.
pub const UNKNOWN: &str = "application/octet-stream";
pub const TEXT: &str = "text/plain";
pub const TNEF: &str = "application/ms-tnef";
pub const MESSAGE: &str = "message/rfc822";
pub const ZIP: &str = "application/zip";

/// Bytes looked at for text, mail headers and PGP armour.
const SNIFF: usize = 8192;

/// The MIME type of `data` from its bytes.
pub fn detect(data: &[u8]) -> &'static str {
    if data.starts_with(&crate::analysis::tnef::SIGNATURE) {
        return TNEF;
    }
    if let Some(t) = infer::get(data) {
        return t.mime_type();
    }
    let head = &data[..data.len().min(SNIFF)];
    if head.starts_with(b"-----BEGIN PGP MESSAGE-----") {
        return "application/pgp-encrypted";
    }
    if head.starts_with(b"-----BEGIN PGP SIGNATURE-----") {
        return "application/pgp-signature";
    }
    if looks_like_mail(head) {
        return MESSAGE;
    }
    if looks_like_text(head) {
        return TEXT;
    }
    UNKNOWN
}

/// Text: no NUL, valid UTF-8 (a character cut at the end of the sample
/// allowed) or, in another charset, few control characters.
fn looks_like_text(head: &[u8]) -> bool {
    if head.is_empty() || head.contains(&0) {
        return false;
    }
    match std::str::from_utf8(head) {
        Ok(_) => true,
        Err(e) if e.error_len().is_none() => true,
        Err(_) => {
            // Shift_JIS, ISO-2022-JP, Latin-1...: bytes ≥ 0x80 are fine,
            // C0 controls other than tab/CR/LF/ESC/FF are not text.
            let controls = head
                .iter()
                .filter(|&&b| b < 0x20 && !matches!(b, b'\t' | b'\r' | b'\n' | 0x1b | 0x0c))
                .count();
            controls * 100 < head.len()
        }
    }
}

/// A mail: header lines from the first byte, among them one that every
/// mail has (From, Date, Received, Message-ID, MIME-Version, Subject).
fn looks_like_mail(head: &[u8]) -> bool {
    const KNOWN: [&str; 7] = [
        "from",
        "date",
        "received",
        "message-id",
        "mime-version",
        "subject",
        "return-path",
    ];
    let mut known = false;
    for (i, line) in head.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return known && i > 0;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if i == 0 {
                return false;
            }
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return false;
        };
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| b.is_ascii_graphic()) {
            return false;
        }
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        known |= KNOWN.contains(&name.as_str());
    }
    known
}

/// The lower-case extension of a file name ("" without one).
pub fn extension(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    match base.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() && !ext.is_empty() && ext.len() <= 10 => {
            ext.to_ascii_lowercase()
        }
        _ => String::new(),
    }
}

const OLE: &[&str] = &[
    "application/x-ole-storage",
    "application/msword",
    "application/vnd.ms-excel",
    "application/vnd.ms-powerpoint",
];
const DOCX: &str = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";
const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";
const PPTX: &str = "application/vnd.openxmlformats-officedocument.presentationml.presentation";
const TEXTUAL: &[&str] = &[TEXT, "text/html", "text/xml", "text/x-shellscript", MESSAGE];

/// The detected types a file with extension `ext` may have; None for an
/// extension not checked (unknown, or of a format without a signature we
/// detect).
fn types_of_extension(ext: &str) -> Option<&'static [&'static str]> {
    Some(match ext {
        "pdf" => &["application/pdf"],
        "zip" => &[ZIP],
        "7z" => &["application/x-7z-compressed"],
        "gz" | "tgz" => &["application/gzip"],
        "rar" => &["application/vnd.rar"],
        "tar" => &["application/x-tar"],
        // An OOXML file that `infer` does not recognise by its members
        // still is a ZIP.
        "docx" | "docm" => &[DOCX, ZIP],
        "xlsx" | "xlsm" => &[XLSX, ZIP],
        "pptx" | "pptm" => &[PPTX, ZIP],
        "odt" => &["application/vnd.oasis.opendocument.text", ZIP],
        "ods" => &["application/vnd.oasis.opendocument.spreadsheet", ZIP],
        "odp" => &["application/vnd.oasis.opendocument.presentation", ZIP],
        "doc" | "xls" | "ppt" | "msg" => OLE,
        "png" => &["image/png"],
        "jpg" | "jpeg" => &["image/jpeg"],
        "gif" => &["image/gif"],
        "exe" | "dll" | "scr" => &["application/vnd.microsoft.portable-executable"],
        "txt" | "csv" | "log" | "md" | "tsv" => TEXTUAL,
        "htm" | "html" => TEXTUAL,
        "eml" => &[MESSAGE, TEXT],
        "dat" => return None,
        _ => return None,
    })
}

/// The extension a declared Content-Type stands for, when it is specific
/// enough to check ("application/octet-stream" is not).
fn extension_of_declared(declared: &str) -> Option<&'static str> {
    let t = declared
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    Some(match t.as_str() {
        "application/pdf" => "pdf",
        "application/zip" | "application/x-zip-compressed" | "application/x-zip" => "zip",
        "application/x-7z-compressed" => "7z",
        "image/png" => "png",
        "image/jpeg" | "image/jpg" | "image/pjpeg" => "jpg",
        "image/gif" => "gif",
        "text/plain" | "text/csv" => "txt",
        DOCX => "docx",
        XLSX => "xlsx",
        PPTX => "pptx",
        "application/msword" => "doc",
        "application/vnd.ms-excel" => "xls",
        "application/vnd.ms-powerpoint" => "ppt",
        _ => return None,
    })
}

/// Why the file's bytes disagree with its name or declared type ("name
/// .pdf, content application/zip"); None when they agree or nothing can
/// be said (content of unknown type, extension not checked).
pub fn mismatch(name: &str, declared: &str, detected: &str) -> Option<String> {
    if detected == UNKNOWN {
        return None;
    }
    let ext = extension(name);
    if let Some(ok) = types_of_extension(&ext)
        && !ok.contains(&detected)
    {
        return Some(format!("name .{ext}, content {detected}"));
    }
    if let Some(dext) = extension_of_declared(declared)
        && let Some(ok) = types_of_extension(dext)
        && !ok.contains(&detected)
    {
        return Some(format!(
            "declared {}, content {detected}",
            declared.split(';').next().unwrap_or("").trim()
        ));
    }
    None
}

/// Containers the dispatcher opens itself (not archives): attached mail
/// and TNEF.
pub fn is_message(name: &str, declared: &str, detected: &str) -> bool {
    detected == MESSAGE
        || declared.trim().to_ascii_lowercase().starts_with(MESSAGE)
        || (extension(name) == "eml" && detected == TEXT)
}

/// TNEF by its signature; declared as TNEF without one, it is opened all
/// the same so that its analysis says it is not TNEF.
pub fn is_tnef(declared: &str, detected: &str) -> bool {
    detected == TNEF || declared.to_ascii_lowercase().contains("ms-tnef")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ZIP holding one stored member `name` with `body`, built by hand
    /// (local header, central directory, end record).
    fn zip_with(name: &str, body: &[u8]) -> Vec<u8> {
        let crc = crc32fast::hash(body);
        let mut local = Vec::new();
        local.extend_from_slice(b"PK\x03\x04\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00");
        local.extend_from_slice(&crc.to_le_bytes());
        local.extend_from_slice(&(body.len() as u32).to_le_bytes());
        local.extend_from_slice(&(body.len() as u32).to_le_bytes());
        local.extend_from_slice(&(name.len() as u16).to_le_bytes());
        local.extend_from_slice(&0u16.to_le_bytes());
        local.extend_from_slice(name.as_bytes());
        local.extend_from_slice(body);
        let cd_at = local.len() as u32;
        let mut cd = Vec::new();
        cd.extend_from_slice(b"PK\x01\x02\x14\x00\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00");
        cd.extend_from_slice(&crc.to_le_bytes());
        cd.extend_from_slice(&(body.len() as u32).to_le_bytes());
        cd.extend_from_slice(&(body.len() as u32).to_le_bytes());
        cd.extend_from_slice(&(name.len() as u16).to_le_bytes());
        cd.extend_from_slice(&[0u8; 12]);
        cd.extend_from_slice(&0u32.to_le_bytes());
        cd.extend_from_slice(name.as_bytes());
        let mut out = local;
        let cd_len = cd.len() as u32;
        out.extend_from_slice(&cd);
        out.extend_from_slice(b"PK\x05\x06\x00\x00\x00\x00\x01\x00\x01\x00");
        out.extend_from_slice(&cd_len.to_le_bytes());
        out.extend_from_slice(&cd_at.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out
    }

    #[test]
    fn detects_from_bytes() {
        let pe = {
            let mut v = b"MZ".to_vec();
            v.resize(0x40, 0);
            v[0x3c] = 0x40;
            v.extend_from_slice(b"PE\0\0");
            v.resize(512, 0);
            v
        };
        let docx = zip_with("word/document.xml", b"<w:document/>");
        let cases: &[(&str, &[u8], &str)] = &[
            (
                "pdf",
                b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj",
                "application/pdf",
            ),
            ("zip", &zip_with("a.txt", b"hello"), ZIP),
            ("docx is a document", &docx, DOCX),
            ("png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "image/png"),
            ("exe", &pe, "application/vnd.microsoft.portable-executable"),
            ("tnef", b"\x78\x9f\x3e\x22\x01\x00\x01\x06\x90", TNEF),
            ("utf-8 text", "社外秘 confidential\n".as_bytes(), TEXT),
            (
                "shift_jis text",
                b"\x8e\xd0\x8a\x4f\x94\xe9 secret\r\n",
                TEXT,
            ),
            (
                "mail",
                b"From: a@b.example\r\nSubject: hi\r\n\r\nbody\r\n",
                MESSAGE,
            ),
            ("binary", b"\x00\x01\x02\x03\xff\xfe", UNKNOWN),
            ("empty", b"", UNKNOWN),
        ];
        for (what, data, want) in cases {
            assert_eq!(detect(data), *want, "{what}");
        }
    }

    #[test]
    fn mismatches() {
        let cases: &[(&str, &str, &str, Option<&str>)] = &[
            ("report.pdf", "application/pdf", "application/pdf", None),
            (
                "report.pdf",
                "application/pdf",
                ZIP,
                Some("name .pdf, content application/zip"),
            ),
            (
                "notes.txt",
                "text/plain",
                "application/vnd.microsoft.portable-executable",
                Some("name .txt, content application/vnd.microsoft.portable-executable"),
            ),
            ("plan.docx", "application/octet-stream", DOCX, None),
            ("plan.docx", "", ZIP, None),
            (
                "plan.xlsx",
                "",
                DOCX,
                Some(&*format!("name .xlsx, content {DOCX}")),
            ),
            (
                "data",
                "application/pdf",
                ZIP,
                Some("declared application/pdf, content application/zip"),
            ),
            ("blob.bin", "application/octet-stream", ZIP, None),
            ("report.pdf", "application/pdf", UNKNOWN, None),
            ("REPORT.PDF", "", "application/pdf", None),
            ("winmail.dat", TNEF, TNEF, None),
        ];
        for (name, declared, detected, want) in cases {
            assert_eq!(
                mismatch(name, declared, detected).as_deref(),
                *want,
                "{name} / {declared} / {detected}"
            );
        }
    }
}
