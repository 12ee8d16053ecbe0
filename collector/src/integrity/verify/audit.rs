//! The audit log's check: its hash chain, and the head the newest
//! checkpoint names.

use super::Findings;
use super::checkpoints;
use crate::store::Store;

/// The audit log's chain, and the head the newest checkpoint names.
pub(super) fn check_audit(
    store: &Store,
    ckps: &checkpoints::Checkpoints,
    f: &mut Findings,
) -> anyhow::Result<()> {
    let (_, v) = store
        .audit
        .read(0, 1, "", || store.meta.audit_head().ok().flatten())?;
    let mut by_line: Vec<(u64, Vec<String>)> = Vec::new();
    for p in v.problems.iter().filter(|p| !p.recorded) {
        match by_line.last_mut() {
            Some((line, whats)) if *line == p.line => whats.push(p.what.clone()),
            _ => by_line.push((p.line, vec![p.what.clone()])),
        }
    }
    for (line, whats) in by_line {
        f.add(
            "audit_altered",
            format!("audit.log line {line}"),
            "",
            whats.join("; "),
            true,
        );
    }
    if let Some((seq, head, n)) = ckps.newest_audit_head()
        && seq > 0
    {
        match store.audit.hash_at(seq)? {
            Some(h) if h == head => {}
            found => f.add(
                "audit_altered",
                format!("audit seq {seq}"),
                "",
                format!(
                    "checkpoint {n} names audit entry {seq} with hash {}…, the log has {}",
                    head.get(..16).unwrap_or(&head),
                    found.map_or("no such entry".to_owned(), |h| format!(
                        "hash {}…",
                        h.get(..16).unwrap_or(&h)
                    ))
                ),
                true,
            ),
        }
    }
    Ok(())
}
