//! The text of Office Open XML documents: DOCX and PPTX read here (the
//! `zip` crate and quick-xml), XLSX through calamine (`sheet.rs`). Which
//! one a ZIP is comes from the parts it holds, never from its name.
//!
//! DOCX: the body, then headers, footers, footnotes, endnotes and
//! comments. PPTX: the slides in their order, then the speaker notes. In
//! both, text is the content of `<w:t>` / `<a:t>` runs; a paragraph ends a
//! line, a tab or break is a space or line.

use std::io::{BufReader, Cursor, Read};

use quick_xml::Reader;
use quick_xml::events::Event;
use zip::ZipArchive;

use super::sink::{ReadResult, Sink, Stop, unreadable};

/// Decompressed XML read from one document, all parts together: a ZIP
/// bomb disguised as a document stops here (the text is cut, not lost).
const MAX_XML_BYTES: u64 = 256 << 20;

type Zip<'a> = ZipArchive<Cursor<&'a [u8]>>;

pub(super) fn text(data: &[u8], out: &mut Sink) -> ReadResult {
    let zip = ZipArchive::new(Cursor::new(data))
        .map_err(|e| unreadable(format!("a damaged ZIP container ({e})")))?;
    let has = |name: &str| zip.index_for_name(name).is_some();
    if has("xl/workbook.xml") {
        return super::sheet::xlsx(data, out);
    }
    let parts = if has("word/document.xml") {
        docx_parts(&zip)
    } else if has("ppt/presentation.xml") {
        pptx_parts(&zip)
    } else {
        // An archive, or an OpenDocument file: no text read from it here
        // (archives are listed by analysis/archive.rs).
        return Err(Stop::NoText);
    };
    read_parts(zip, &parts, out)
}

/// The parts of a DOCX with text, body first.
fn docx_parts(zip: &Zip) -> Vec<String> {
    let mut parts = vec!["word/document.xml".to_owned()];
    let mut extra: Vec<String> = zip
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .filter(|n| {
            let Some(rest) = n.strip_prefix("word/") else {
                return false;
            };
            ["header", "footer", "footnotes", "endnotes", "comments"]
                .iter()
                .any(|p| rest.starts_with(p))
                && rest.ends_with(".xml")
                && !rest.contains('/')
        })
        .collect();
    extra.sort_by_key(|n| numbered(n));
    parts.extend(extra);
    parts
}

/// The slides of a PPTX in their order (`slide2` before `slide10`), then
/// the notes.
fn pptx_parts(zip: &Zip) -> Vec<String> {
    let pick = |dir: &str, stem: &str| {
        let mut v: Vec<String> = zip
            .file_names()
            .filter_map(|n| n.ok().map(|n| n.into_owned()))
            .filter(|n| {
                n.strip_prefix(dir)
                    .and_then(|r| r.strip_prefix(stem))
                    .and_then(|r| r.strip_suffix(".xml"))
                    .is_some_and(|num| num.bytes().all(|b| b.is_ascii_digit()))
            })
            .collect();
        v.sort_by_key(|n| numbered(n));
        v
    };
    let mut parts = pick("ppt/slides/", "slide");
    parts.extend(pick("ppt/notesSlides/", "notesSlide"));
    parts
}

/// A part name as (stem, number): `slide10.xml` sorts after `slide9.xml`.
fn numbered(name: &str) -> (String, u64) {
    let stem = name.trim_end_matches(".xml");
    let digits = stem.len() - stem.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (s, n) = stem.split_at(stem.len() - digits);
    (s.to_owned(), n.parse().unwrap_or(0))
}

fn read_parts(mut zip: Zip, parts: &[String], out: &mut Sink) -> ReadResult {
    let mut budget = MAX_XML_BYTES;
    for name in parts {
        let entry = match zip.by_name(name) {
            Ok(e) => e,
            Err(e) if name == &parts[0] => {
                return Err(unreadable(format!("{name} cannot be read ({e})")));
            }
            // A damaged secondary part costs its own text only.
            Err(_) => continue,
        };
        let mut limited = entry.take(budget);
        let read = xml_text(&mut limited, out);
        budget = limited.limit();
        match read {
            Err(e) if name == &parts[0] && out.is_empty() => {
                return Err(unreadable(format!("{name}: {e}")));
            }
            _ => {}
        }
        out.line_break();
        if out.full() || budget == 0 {
            break;
        }
    }
    Ok(())
}

/// The text runs of one WordprocessingML or DrawingML part. Stops at the
/// first XML error, keeping what came before it.
fn xml_text(xml: &mut impl Read, out: &mut Sink) -> Result<(), quick_xml::Error> {
    let mut reader = Reader::from_reader(BufReader::new(xml));
    let mut buf = Vec::new();
    // Inside a `<…:t>` run: its text and entities are the document's text.
    let mut in_text = false;
    loop {
        buf.clear();
        match reader.read_event_into(&mut buf)? {
            Event::Start(e) => in_text = e.local_name().as_ref() == "t",
            Event::Empty(e) => match e.local_name().as_ref() {
                "tab" => {
                    out.push(" ");
                }
                "br" | "cr" => {
                    out.line_break();
                }
                _ => {}
            },
            Event::End(e) => {
                in_text = false;
                if e.local_name().as_ref() == "p" {
                    out.line_break();
                }
            }
            Event::Text(t) if in_text => {
                out.push(&t.xml10_content());
            }
            Event::GeneralRef(r) if in_text => {
                let name = r.xml10_content();
                let c = match r.resolve_char_ref() {
                    Ok(Some(c)) => Some(c),
                    _ => quick_xml::escape::resolve_predefined_entity(&name)
                        .and_then(|s| s.chars().next()),
                };
                if let Some(c) = c {
                    out.push_char(c);
                }
            }
            Event::CData(t) if in_text => {
                out.push(&t);
            }
            Event::Eof => return Ok(()),
            _ => {}
        }
        if out.full() {
            return Ok(());
        }
    }
}
