//! The blob check (shared with `repair`: `store/repair/blob_check.rs`):
//! every blob read back to its hash before the journal pass, then the
//! findings: damaged blobs named with the events using them, blobs an
//! event names missing (purged events aside).

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use kiroku_proto::{VerifyResponse, VerifySummary};

use super::{Findings, Options, Progress};
use crate::store::Store;
use crate::store::repair::blob_check::{self, BlobScan, References};

/// Reads every blob back against its hash, with progress ("blobs"); its
/// files and bytes are counted in the summary.
pub(super) fn scan(
    store: &Store,
    summary: &mut VerifySummary,
    out: &mut dyn FnMut(VerifyResponse),
) -> anyhow::Result<BlobScan> {
    let bdir = store.dir.join("blobs");
    let total = blob_check::total_bytes(&bdir)?;
    let mut p = Progress {
        out,
        last: Instant::now(),
    };
    let mut done = 0;
    let scan = blob_check::scan(&bdir, &store.blobs, |n| {
        done += n;
        p.say("blobs", done, total, done, false);
    })?;
    p.say("blobs", done, total, done, true);
    summary.blobs = scan.files;
    summary.bytes += scan.bytes;
    Ok(scan)
}

/// Blobs: damaged (named with their events, `damaged_users`) and missing
/// (what `refs` noted in the journal pass, tombstoned events aside).
pub(super) fn report(
    store: &Store,
    opts: &Options,
    blob_scan: Option<&BlobScan>,
    mut damaged_users: HashMap<String, Vec<String>>,
    refs: References<'_>,
    tombstoned: &HashSet<String>,
    f: &mut Findings,
) {
    if let Some(scan) = blob_scan {
        for (path, sha) in &scan.damaged {
            let path = path.strip_prefix(&store.dir).unwrap_or(path);
            let ids = damaged_users.remove(sha).unwrap_or_default();
            f.add(
                "blob_altered",
                format!("blob {sha}"),
                ids.first().map_or("", String::as_str),
                format!(
                    "{} does not read back to the SHA-256 it is named after (replaced or damaged); events naming it: {}",
                    path.display(),
                    if ids.is_empty() { "none".to_owned() } else { blob_check::describe_ids(&ids) }
                ),
                true,
            );
        }
    }
    let mut unavailable = refs.finish();
    unavailable.missing.retain(|_, ids| {
        ids.retain(|id| !tombstoned.contains(id));
        !ids.is_empty()
    });
    if !opts.skip_blobs {
        for (sha, ids) in &unavailable.missing {
            f.add(
                "blob_missing",
                format!("blob {sha}"),
                ids.first().map_or("", String::as_str),
                format!(
                    "{} is missing: the raw message of event(s) {}",
                    blob_check::blob_path(sha).display(),
                    blob_check::describe_ids(ids)
                ),
                true,
            );
        }
        for (m, parts, ids) in &unavailable.partless {
            f.add(
                "blob_missing",
                format!("blob {m}"),
                ids.first().map_or("", String::as_str),
                format!(
                    "the raw message names attachment blob(s) {} that are missing; event(s): {}",
                    parts.join(", "),
                    blob_check::describe_ids(ids)
                ),
                true,
            );
        }
    }
}
