//! Before the switch: events the old index answers that the journal
//! replay did not bring into the new one, copied over from the old
//! index's stored events.

use super::{IndexError, Shared, TantivyIndex, other};

/// Events the old index answers that the journal replay did not bring
/// into the new one (a record the journal lost to damage, an event of a
/// data directory older than the journal): copied from the old index's
/// stored events before the switch, so the switch never loses what
/// queries found before it. Their event ids are read from the old index's
/// term dictionary and looked up in the new one; only missing ones are
/// decoded. Returns how many were copied (logged: `repair` writes them to
/// the journal).
pub(super) fn carry_over(shared: &Shared, building: &TantivyIndex) -> Result<u64, IndexError> {
    let old = shared
        .indexes
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .serving
        .clone();
    let terr = |e: tantivy::TantivyError| other(&old.path, e.to_string());
    let io = |e: std::io::Error| other(&old.path, format!("reading event ids: {e}"));
    building.commit()?;
    let fresh = building.reader.searcher();
    let searcher = old.reader.searcher();
    let (mut batch, mut copied) = (Vec::new(), 0u64);
    let derive = shared.derived();
    for seg in searcher.segment_readers() {
        let ids = seg.inverted_index(old.f.event_id).map_err(terr)?;
        let mut terms = ids.terms().stream().map_err(io)?;
        while terms.advance() {
            let Ok(id) = std::str::from_utf8(terms.key()) else {
                continue;
            };
            let t = tantivy::Term::from_field_text(building.f.event_id, id);
            if fresh.doc_freq(&t).map_err(terr)? > 0 {
                continue;
            }
            if let Some(e) = old.get(id)? {
                batch.push(e);
            }
            if batch.len() >= 10_000 {
                building.add(&batch, derive.as_ref(), None)?;
                copied += batch.len() as u64;
                batch.clear();
            }
        }
    }
    if !batch.is_empty() {
        building.add(&batch, derive.as_ref(), None)?;
        copied += batch.len() as u64;
    }
    if copied > 0 {
        building.commit()?;
        tracing::warn!(
            index = %shared.path.display(), events = copied,
            "events the old index held but the journal did not were copied into the rebuilt index; run `kiroku-collector repair` to write them to the journal"
        );
    }
    Ok(copied)
}
