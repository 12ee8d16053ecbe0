//! Every event of a search, oldest first, in pages: the report's bounded
//! read. The index's own search (kind, host, agent, corrected time) is
//! asked for [`PAGE`] events at a time; the next page starts at the last
//! page's last time (inclusive), the events already seen at exactly that
//! millisecond skipped by id. So at most one page and the ids of one
//! millisecond are in memory, and no page is read at a deep offset (whose
//! cost grows with the offset). A millisecond holding a whole page of
//! events (a burst of one host's records stamped alike) is read on its own
//! by offset, then the scan goes on after it.

use std::collections::HashSet;

use kiroku_common::mail::corrected_ms;
use kiroku_proto::{Event, SearchRequest};

use crate::store::index::{EventIndex, IndexError};

/// Events per page read from the index.
pub const PAGE: usize = 1000;

/// Calls `each` with every event `base` matches (its `from_ms` .. `to_ms`
/// on corrected time, which the scan sets), oldest first, until it
/// returns false. Returns how many events `each` was given.
pub fn each_event(
    index: &EventIndex,
    base: &SearchRequest,
    mut each: impl FnMut(Event) -> bool,
) -> Result<u64, IndexError> {
    let mut r = SearchRequest {
        corrected_time: true,
        ascending: true,
        page_token: String::new(),
        ..base.clone()
    };
    let to_ms = r.to_ms;
    let mut seen_at: HashSet<String> = HashSet::new();
    let mut given = 0u64;
    loop {
        let (page, _, _) = index.search(&r, 0, PAGE)?;
        let full = page.len() == PAGE;
        let (Some(first), Some(last)) = (page.first(), page.last()) else {
            return Ok(given);
        };
        let last_ms = corrected_ms(last);
        if full && corrected_ms(first) == last_ms {
            // One millisecond fills the page: read it all by offset.
            let one = SearchRequest {
                from_ms: last_ms,
                to_ms: last_ms.saturating_add(1),
                ..r.clone()
            };
            let mut offset = 0;
            loop {
                let (page, _, next) = index.search(&one, offset, PAGE)?;
                for e in page {
                    if !seen_at.contains(&e.event_id) {
                        given += 1;
                        if !each(e) {
                            return Ok(given);
                        }
                    }
                }
                match next {
                    Some(n) => offset = n,
                    None => break,
                }
            }
            seen_at.clear();
            match last_ms.checked_add(1) {
                Some(next) if next < to_ms => r.from_ms = next,
                _ => return Ok(given),
            }
            continue;
        }
        let mut at_last = HashSet::new();
        for e in page {
            let at = corrected_ms(&e);
            if seen_at.contains(&e.event_id) {
                continue;
            }
            if at == last_ms {
                at_last.insert(e.event_id.clone());
            }
            given += 1;
            if !each(e) {
                return Ok(given);
            }
        }
        if !full {
            return Ok(given);
        }
        // The next page starts at the last millisecond again: events of
        // it beyond this page are read then, those of this page skipped.
        // (last_ms is after from_ms here: a full page of one millisecond
        // took the branch above.)
        seen_at = at_last;
        r.from_ms = last_ms;
    }
}
