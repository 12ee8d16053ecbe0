//! Header blocks, read leniently: a line that is not a header field does
//! not end the block when header fields follow it before the blank line
//! (it is skipped and noted), so one bad line cannot hide a part's
//! Content-Disposition, nor fail the whole message as it does in
//! mailparse. Only when nothing but non-header lines follow does the block
//! end there, as in Python's `email` (the rest is the body).

use super::words::{best_decoding, decode_words_lenient};

/// One header field as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The field name as written (compare with `eq_ignore_ascii_case`).
    pub name: String,
    /// The value after the colon, folding line breaks included.
    pub raw: Vec<u8>,
}

impl Header {
    /// The value unfolded (CR and LF removed), leading white space trimmed.
    pub fn unfolded(&self) -> Vec<u8> {
        let v: Vec<u8> = self
            .raw
            .iter()
            .copied()
            .filter(|&b| b != b'\r' && b != b'\n')
            .collect();
        let start = v
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(v.len());
        let end = v
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(start, |e| e + 1);
        v[start..end.max(start)].to_vec()
    }

    /// The value as text, RFC 2047 encoded words decoded: mailparse's
    /// reading, unless the lenient one decodes more (words in charsets it
    /// does not know, characters cut between words, raw 8-bit octets in a
    /// word, which mailparse reads as Latin-1 and so loses).
    pub fn text(&self) -> String {
        let unfolded = self.unfolded();
        if !unfolded.is_ascii() {
            return decode_words_lenient(&unfolded);
        }
        let mut line = Vec::with_capacity(self.name.len() + 2 + self.raw.len());
        line.extend_from_slice(self.name.as_bytes());
        line.extend_from_slice(b": ");
        line.extend_from_slice(&unfolded);
        match mailparse::parse_header(&line) {
            Ok((h, _)) => best_decoding(h.get_value(), &unfolded),
            Err(_) => decode_words_lenient(&unfolded),
        }
    }
}

/// The first field named `name`.
pub fn first<'a>(headers: &'a [Header], name: &str) -> Option<&'a Header> {
    headers.iter().find(|h| h.name.eq_ignore_ascii_case(name))
}

/// Every field named `name`, in order.
pub fn all<'a>(headers: &'a [Header], name: &str) -> impl Iterator<Item = &'a Header> {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
}

/// A header block split into fields.
#[derive(Debug, Default)]
pub struct Block {
    pub fields: Vec<Header>,
    /// How many of the given lines belong to the body (from the end).
    pub body_lines: usize,
    /// What was skipped or cut, for `decode_warnings`.
    pub notes: Vec<String>,
}

/// The name of a header field line (`Name:` with printable ASCII, white
/// space before the colon tolerated as RFC 5322's obsolete syntax allows).
fn field_name(line: &[u8]) -> Option<(&str, usize, bool)> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = &line[..colon];
    let trimmed_len = name
        .iter()
        .rposition(|b| *b != b' ' && *b != b'\t')
        .map_or(0, |e| e + 1);
    let spaced = trimmed_len < name.len();
    let name = &name[..trimmed_len];
    if name.is_empty() || !name.iter().all(|&b| (33..=126).contains(&b)) {
        return None;
    }
    Some((std::str::from_utf8(name).ok()?, colon + 1, spaced))
}

/// Parses the lines of a header block (each with its line break; the
/// blank line that ends it not included). `ended_by_blank`: the block
/// ended at a blank line (not at a boundary, the end of input or the size
/// limit). `top`: the message's own block, where a leading mbox `From `
/// line is skipped.
pub fn parse_block(lines: &[Vec<u8>], ended_by_blank: bool, top: bool) -> Block {
    let mut block = Block::default();
    let mut dropped = 0usize;
    let kinds: Vec<Option<(String, usize, bool)>> = lines
        .iter()
        .map(|l| field_name(l).map(|(n, at, spaced)| (n.to_owned(), at, spaced)))
        .collect();
    let is_cont = |l: &Vec<u8>| l.first().is_some_and(|&b| b == b' ' || b == b'\t');
    // Whether a field follows line i is "i is before the last field": one
    // pass, so a block of half a million junk lines and one field costs
    // linear time (scanning the rest of the block for each junk line was
    // quadratic: minutes for one such part).
    let last_field = kinds.iter().rposition(Option::is_some);
    for (i, line) in lines.iter().enumerate() {
        if let Some((name, at, spaced)) = &kinds[i] {
            if *spaced {
                // Python's `email` ends the header block here; clients
                // and RFC 5322's obsolete syntax accept it.
                note(&mut block.notes, &mut dropped, || {
                    format!("header field {name}: white space before the colon")
                });
            }
            block.fields.push(Header {
                name: name.clone(),
                raw: line[*at..].to_vec(),
            });
            continue;
        }
        if is_cont(line) {
            match block.fields.last_mut() {
                Some(h) => h.raw.extend_from_slice(line),
                None => note(&mut block.notes, &mut dropped, || {
                    format!(
                        "continuation line before any header field skipped: {}",
                        excerpt(line)
                    )
                }),
            }
            continue;
        }
        if i == 0 && top && line.starts_with(b"From ") {
            // The mbox separator line some tools leave in.
            continue;
        }
        // A line that is not a field. Skip it when fields follow it before
        // the blank line; else the header block ends here.
        let fields_follow = ended_by_blank && last_field.is_some_and(|l| l > i);
        if fields_follow {
            note(&mut block.notes, &mut dropped, || {
                format!(
                    "header line {} is not a `Name: value` field; skipped: {}",
                    i + 1,
                    excerpt(line)
                )
            });
            continue;
        }
        // A part whose body starts right after its boundary line (no
        // headers, no blank line) is common and not worth a note.
        if !(block.fields.is_empty() && i == 0 && !top) || ended_by_blank {
            note(&mut block.notes, &mut dropped, || {
                format!(
                    "header block ends at line {}, which is not a header field: {}",
                    i + 1,
                    excerpt(line)
                )
            });
        }
        block.body_lines = lines.len() - i;
        break;
    }
    if dropped > 0 {
        block.notes.push(format!("… and {dropped} more"));
    }
    block
}

/// Notes kept per header block: enough to show what was wrong, while a
/// block of junk lines cannot fill the record with one note per line.
pub const MAX_BLOCK_NOTES: usize = 20;

/// Adds a note while the block has fewer than [`MAX_BLOCK_NOTES`]; counts
/// it otherwise (the note is not even formatted).
fn note(notes: &mut Vec<String>, dropped: &mut usize, make: impl FnOnce() -> String) {
    if notes.len() < MAX_BLOCK_NOTES {
        notes.push(make());
    } else {
        *dropped += 1;
    }
}

/// Keeps the first `max` notes and replaces the rest by one that says how
/// many were left out ("… and 499980 more").
pub fn cap_notes(notes: &mut Vec<String>, max: usize) {
    if notes.len() > max {
        let more = notes.len() - max;
        notes.truncate(max);
        notes.push(format!("… and {more} more"));
    }
}

/// The start of a line, for a note.
fn excerpt(line: &[u8]) -> String {
    let s = String::from_utf8_lossy(&line[..line.len().min(60)]);
    format!("{:?}", s.trim_end())
}
