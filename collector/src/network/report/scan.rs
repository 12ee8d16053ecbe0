//! Every event of a search, oldest first, in pages: the report's bounded
//! read. The index's own search (kind, host, agent, corrected time) is
//! asked for [`PAGE`] events at a time within a time window:
//!
//! - a page that does not fill up ends its window: the next window starts
//!   where it ended, twice as long (sparse records are read in few calls);
//! - a full page ends at its last event's time: the next page starts there
//!   (inclusive; the events of that millisecond already given are skipped
//!   by id), with a window half as long;
//! - a millisecond holding a whole page (a burst stamped alike) is read on
//!   its own by offset, and the scan goes on after it.
//!
//! So at most one page and the ids of one millisecond are in memory, no
//! page is read at a deep offset, and a query only collects the events of
//! its window (the index matches every event of the query's range before
//! it keeps the oldest page: without the window the cost of a scan would
//! grow with the square of the records).

use std::collections::HashSet;

use kiroku_common::mail::corrected_ms;
use kiroku_proto::{Event, SearchRequest};

use crate::store::index::{EventIndex, IndexError};

/// Events per page read from the index.
pub const PAGE: usize = 1000;
/// The first window: this share of the range.
const FIRST_WINDOW_SHARE: i64 = 64;

/// Calls `each` with every event `base` matches in [base.from_ms,
/// base.to_ms) of corrected time (both set), oldest first, until it
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
    let (mut from, to) = (base.from_ms, base.to_ms);
    let mut window = (to.saturating_sub(from) / FIRST_WINDOW_SHARE).max(1);
    let mut seen_at: HashSet<String> = HashSet::new();
    let given = std::cell::Cell::new(0u64);
    let mut give = |e: Event, seen_at: &HashSet<String>| -> bool {
        if seen_at.contains(&e.event_id) {
            return true;
        }
        given.set(given.get() + 1);
        each(e)
    };
    while from < to {
        let end = from.saturating_add(window).min(to);
        r.from_ms = from;
        r.to_ms = end;
        let (page, _, _) = index.search(&r, 0, PAGE)?;
        let last_ms = page.last().map(corrected_ms);
        let crowded = page.first().map(corrected_ms) == last_ms;
        match last_ms {
            Some(last) if page.len() == PAGE && crowded => {
                // One millisecond fills the page: read it all by offset.
                let one = SearchRequest {
                    from_ms: last,
                    to_ms: last.saturating_add(1),
                    ..r.clone()
                };
                let mut offset = 0;
                loop {
                    let (page, _, next) = index.search(&one, offset, PAGE)?;
                    for e in page {
                        if !give(e, &seen_at) {
                            return Ok(given.get());
                        }
                    }
                    match next {
                        Some(n) => offset = n,
                        None => break,
                    }
                }
                seen_at.clear();
                from = last.saturating_add(1);
            }
            Some(last) if page.len() == PAGE => {
                let mut at_last = HashSet::new();
                for e in page {
                    if corrected_ms(&e) == last && !seen_at.contains(&e.event_id) {
                        at_last.insert(e.event_id.clone());
                    }
                    if !give(e, &seen_at) {
                        return Ok(given.get());
                    }
                }
                // The events of `last` beyond this page come next; those
                // given (now or on an earlier page of it) are skipped.
                // `last` is after `from` here (a whole page of `from`
                // alone took the branch above).
                seen_at = at_last;
                from = last;
                window = (window / 2).max(1);
            }
            _ => {
                for e in page {
                    if !give(e, &seen_at) {
                        return Ok(given.get());
                    }
                }
                seen_at.clear();
                from = end;
                window = window.saturating_mul(2);
            }
        }
    }
    Ok(given.get())
}
