//! Charsets and encoded words: body text in its declared charset, the
//! charset names mail really carries (Japanese and Microsoft aliases,
//! Python's codec names), RFC 2047 encoded words decoded leniently when
//! mailparse leaves them raw (raw 8-bit bytes inside a word are kept as the
//! octets they are, as Python's `email` package does). RFC 2231
//! parameters are read in `params`.

/// Text of a decoded body in its declared charset, as mailparse does it
/// (US-ASCII when the charset is unknown), with [`charset_for`]'s names.
pub fn decode_text(bytes: &[u8], charset: &str) -> String {
    match charset_for(charset) {
        Some(cs) => cs.decode(bytes).0.into_owned(),
        None => charset::decode_ascii(bytes).into_owned(),
    }
}

/// The encoding a charset label names: the WHATWG labels mailparse knows,
/// and the names Japanese and Microsoft software also write for the same
/// encodings (`CP932` for Windows Shift_JIS, `ISO-2022-JP-MS`, `eucJP-win`),
/// which Python's codecs know too. Python's `email` package writes its own
/// codec name as the label when a program names the charset that way
/// (`iso2022_jp`, `shift_jis_2004`, `euc_jisx0213`), so `_` is read as
/// `-`. The JIS X 0213 variants (`*-2004`, `*x0213`, `iso-2022-jp-3`) and
/// ISO-2022-JP-1/2 are decoded as their JIS X 0208 base, which holds
/// nearly every character written in them: the rest become U+FFFD rather
/// than the whole text being read as US-ASCII. An RFC 2231 language
/// (`*ja`) is ignored.
pub fn charset_for(label: &str) -> Option<charset::Charset> {
    let label = label.split('*').next().unwrap_or_default().trim();
    charset::Charset::for_label(label.as_bytes()).or_else(|| {
        let same = match label.to_ascii_lowercase().replace('_', "-").as_str() {
            "cp932" | "windows-932" | "x-ms-cp932" | "sjis-win" | "sjis-open" | "mskanji"
            | "shift-jis-2004" | "shift-jisx0213" | "sjis-2004" => "shift_jis",
            "iso2022-jp" | "iso-2022-jp-1" | "iso2022-jp-1" | "iso-2022-jp-2" | "iso2022-jp-2"
            | "iso-2022-jp-3" | "iso2022-jp-3" | "iso-2022-jp-2004" | "iso2022-jp-2004"
            | "iso-2022-jp-ext" | "iso2022-jp-ext" | "iso-2022-jp-ms" | "csiso2022jp2"
            | "cp50220" | "cp50221" | "cp50222" => "iso-2022-jp",
            "eucjp" | "euc-jp" | "eucjp-win" | "eucjp-ms" | "eucjp-open" | "cp51932" | "ujis"
            | "euc-jis-2004" | "euc-jisx0213" => "euc-jp",
            _ => return None,
        };
        charset::Charset::for_label(same.as_bytes())
    })
}

/// What a decoded header value still shows of failed decoding: undecoded
/// encoded-words and replacement characters.
pub fn flaws(s: &str) -> usize {
    s.matches('\u{fffd}').count() + s.matches("=?").count()
}

/// `strict` (mailparse's decoding of a header value or parameter) unless
/// [`decode_words_lenient`] of `raw` leaves fewer [`flaws`].
pub fn best_decoding(strict: String, raw: &[u8]) -> String {
    if flaws(&strict) == 0 {
        return strict;
    }
    let lenient = decode_words_lenient(raw);
    if flaws(&lenient) < flaws(&strict) {
        lenient
    } else {
        strict
    }
}

/// RFC 2047 decoding that forgives what real mailers write: adjacent
/// encoded-words in one charset are decoded together (a character cut
/// between two, which RFC 2047 5 forbids), a word need not stand apart
/// from the text around it, and charset names go through [`charset_for`].
/// Unfolds; words it cannot decode stay as written.
pub fn decode_words_lenient(raw: &[u8]) -> String {
    // Work on octets, not characters: a raw 8-bit byte inside an encoded
    // word is an octet of that word's charset (mailers that skip the
    // encoding of one character write it so), not a Latin-1 character.
    let value: Vec<u8> = raw
        .iter()
        .copied()
        .filter(|&b| b != b'\r' && b != b'\n')
        .collect();
    let mut out = String::with_capacity(value.len());
    // The run of adjacent words being collected: charset, octets, and the
    // white space seen after the last word (dropped if another follows).
    let mut run: Option<(String, Vec<u8>)> = None;
    let mut gap = String::new();
    let mut text: Vec<u8> = Vec::new();
    let flush = |run: &mut Option<(String, Vec<u8>)>, out: &mut String| {
        if let Some((cs, bytes)) = run.take()
            && let Some(c) = charset_for(&cs)
        {
            out.push_str(&c.decode_without_bom_handling(&bytes).0);
        }
    };
    let mut rest = value.as_slice();
    while !rest.is_empty() {
        if rest.starts_with(b"=?")
            && let Some((cs, bytes, len)) = encoded_word_bytes(rest)
        {
            push_text(&mut out, &mut text);
            match &mut run {
                Some((run_cs, run_bytes)) if run_cs.eq_ignore_ascii_case(&cs) => {
                    run_bytes.extend_from_slice(&bytes);
                }
                _ => {
                    flush(&mut run, &mut out);
                    run = Some((cs, bytes));
                }
            }
            gap.clear();
            rest = &rest[len..];
            continue;
        }
        let c = rest[0];
        if run.is_some() && (c == b' ' || c == b'\t') {
            gap.push(char::from(c));
        } else {
            flush(&mut run, &mut out);
            out.push_str(&gap);
            gap.clear();
            text.push(c);
        }
        rest = &rest[1..];
    }
    push_text(&mut out, &mut text);
    flush(&mut run, &mut out);
    out.push_str(&gap);
    out
}

/// Appends text outside encoded words: UTF-8 when it is, else Latin-1 (as
/// mailparse reads raw header bytes).
fn push_text(out: &mut String, text: &mut Vec<u8>) {
    if text.is_empty() {
        return;
    }
    match std::str::from_utf8(text) {
        Ok(s) => out.push_str(s),
        Err(_) => out.extend(text.iter().map(|&b| char::from(b))),
    }
    text.clear();
}

/// The encoded-word `s` starts with, in a charset [`charset_for`] knows:
/// (charset, decoded octets, length in `s`).
pub fn encoded_word(s: &str) -> Option<(String, Vec<u8>, usize)> {
    encoded_word_bytes(s.as_bytes())
}

/// [`encoded_word`] on octets: the encoded text may hold raw 8-bit bytes,
/// which are kept as octets of the word's charset.
pub fn encoded_word_bytes(s: &[u8]) -> Option<(String, Vec<u8>, usize)> {
    let body = s.strip_prefix(b"=?")?;
    let q1 = body.iter().position(|&b| b == b'?')?;
    let charset = std::str::from_utf8(&body[..q1]).ok()?;
    let after = &body[q1 + 1..];
    let coding = after.get(..2)?;
    let text = after.get(2..)?;
    let end = text.windows(2).position(|w| w == b"?=")?;
    let data = &text[..end];
    if charset.is_empty()
        || charset.contains(char::is_whitespace)
        || data.iter().any(|b| b.is_ascii_whitespace())
        || charset_for(charset).is_none()
    {
        return None;
    }
    let bytes = match coding {
        b"B?" | b"b?" => data_encoding::BASE64_MIME_PERMISSIVE.decode(data).ok()?,
        b"Q?" | b"q?" => q_decode(data),
        _ => return None,
    };
    Some((charset.to_owned(), bytes, 2 + q1 + 1 + 2 + end + 2))
}

/// RFC 2047 4.2 "Q" decoding; a bad escape stays as written.
pub fn q_decode(data: &[u8]) -> Vec<u8> {
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        match data[i] {
            b'_' => out.push(b' '),
            b'=' => match (
                data.get(i + 1).and_then(|&b| hex(b)),
                data.get(i + 2).and_then(|&b| hex(b)),
            ) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'='),
            },
            b => out.push(b),
        }
        i += 1;
    }
    out
}
