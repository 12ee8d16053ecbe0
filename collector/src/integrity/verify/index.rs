//! The index check: every journalled event (in range) in the index with
//! the same content, nothing in the index the journal does not hold;
//! events not indexed yet and removals explained, not reported twice.

use std::collections::HashSet;
use std::time::Instant;

use kiroku_proto::VerifyResponse;

use super::{Findings, JournalPass, Keys, Options, Progress, content_key};
use crate::store::Store;
use crate::store::journal;
use crate::store::repair::blob_check;

/// Every journalled event (in range) must be in the index with the same
/// content, and the index must hold nothing else. Events after the last
/// one indexed are not indexed yet (a crash between the journal and the
/// index commit; the agent's resend indexes them): explained, not altered.
pub(super) fn check_index(
    store: &Store,
    opts: &Options,
    keys: &Keys,
    pass: &mut JournalPass,
    f: &mut Findings,
    out: &mut dyn FnMut(VerifyResponse),
) -> anyhow::Result<()> {
    if let Some(s) = store.index.rebuild_status()
        && s.state != crate::store::index::RebuildState::Done
    {
        f.add(
            "index_skipped",
            "index".into(),
            "",
            format!(
                "the index is being rebuilt ({}): it is checked once the rebuild is done",
                s.describe()
            ),
            false,
        );
        return Ok(());
    }
    let mut p = Progress {
        out,
        last: Instant::now(),
    };
    let total = store.index.count();
    let mut done = 0u64;
    let mut seen: HashSet<u128> = HashSet::new();
    let mut only_index: Vec<String> = Vec::new();
    let mut max_indexed = 0u64;
    store.index.for_each_stored(|e| {
        done += 1;
        p.say("index", done, total, 0, false);
        if !opts.wants(&e) {
            return Ok(());
        }
        let id = keys.key(e.event_id.as_bytes());
        if f.flagged_ids.contains(&e.event_id) {
            seen.insert(id);
            return Ok(());
        }
        match pass.events.get(&id) {
            None => only_index.push(e.event_id),
            Some((content, ordinal)) => {
                seen.insert(id);
                max_indexed = max_indexed.max(*ordinal);
                if *content != content_key(keys, &e) {
                    f.add(
                        "index_mismatch",
                        "index".into(),
                        &e.event_id,
                        "the index serves this event with content other than the journal holds (the index was altered, or rebuilt from an altered journal)".into(),
                        true,
                    );
                }
            }
        }
        Ok(())
    })?;
    p.say("index", done, total, 0, true);
    let mut not_yet = 0u64;
    for (id, (_, ordinal)) in &pass.events {
        if seen.contains(id) {
            continue;
        }
        if *ordinal > max_indexed {
            not_yet += 1;
            continue;
        }
        let name = pass.names.get(id).cloned().unwrap_or_default();
        f.add(
            "index_mismatch",
            "index".into(),
            &name,
            "a journalled event is missing from the index (removed from it: searches do not find it)".into(),
            true,
        );
    }
    if not_yet > 0 {
        f.add(
            "not_indexed_yet",
            "index".into(),
            "",
            format!("the last {not_yet} journalled events are not in the index yet (stored just before a crash; the agents' resend indexes them)"),
            false,
        );
    }
    // Ingest goes on while this runs: events journalled after the head
    // this run read may be indexed already. They are in the journal past
    // that head.
    if !only_index.is_empty() {
        let mut later: HashSet<String> = only_index.iter().cloned().collect();
        let (mut at, end) = (pass.head_end, store.journal.head().end);
        while at < end && !later.is_empty() {
            let (reads, next) = journal::read_entries(store.journal.dir(), at, end, 10_000)?;
            for r in &reads {
                if let Some(Ok((e, _))) = journal::event_of(r) {
                    later.remove(&e.event_id);
                }
            }
            if next == at {
                break;
            }
            at = next;
        }
        only_index.retain(|id| later.contains(id));
    }
    only_index.sort();
    // Removed journal entries leave their events in the index: those
    // explain each other (the removal is the finding).
    let removed: u64 = f
        .list
        .iter()
        .filter(|x| x.what == "missing" && x.alteration)
        .count() as u64;
    if removed > 0 && !only_index.is_empty() {
        if let Some(m) = f.list.iter_mut().find(|x| x.what == "missing") {
            m.detail.push_str(&format!(
                "; the index still holds {}, which the journal no longer has",
                blob_check::describe_ids(&only_index)
            ));
            if m.event_id.is_empty() {
                m.event_id = only_index[0].clone();
            }
        }
        return Ok(());
    }
    for id in only_index {
        f.add(
            "index_mismatch",
            "index".into(),
            &id,
            "the index holds an event the journal does not (inserted into the index)".into(),
            true,
        );
    }
    Ok(())
}
