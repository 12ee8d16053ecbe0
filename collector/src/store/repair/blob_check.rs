//! The blob checks `repair` and `kiroku verify` share: every blob file
//! read back against the hash it is named after, manifests' attachment
//! blobs present, and every blob an event references present. Read only:
//! what to do about a finding (move a damaged blob aside, report it as an
//! alteration) is the caller's.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use kiroku_proto::{Event, event::Kind};
use sha2::{Digest, Sha256};

use crate::store::blobs::BlobStore;

fn blob_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let p = entry.path();
        if entry.file_type()?.is_dir() {
            blob_files(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "zst" || x == "krm") {
            out.push(p);
        }
    }
    Ok(())
}

/// Every blob file under `bdir` (`.zst` whole blobs first, then `.krm`
/// manifests, which name whole blobs).
pub fn files(bdir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    if bdir.is_dir() {
        blob_files(bdir, &mut files).with_context(|| format!("listing {}", bdir.display()))?;
    }
    files.sort_by_key(|p| p.extension().is_some_and(|x| x == "krm"));
    Ok(files)
}

/// Bytes of every blob file under `bdir` (for a progress bar).
pub fn total_bytes(bdir: &Path) -> anyhow::Result<u64> {
    Ok(files(bdir)?
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum())
}

/// A blob is sound when it decompresses to content of its hash; a manifest
/// (`.krm`) when it reads back, attachments and all, to its hash.
pub fn blob_sound(blobs: &BlobStore, path: &Path, sha: &str) -> bool {
    let mut dec: Box<dyn Read> = if path.extension().is_some_and(|x| x == "krm") {
        match blobs.reader(sha) {
            Ok(r) => r,
            Err(_) => return false,
        }
    } else {
        let Ok(f) = std::fs::File::open(path) else {
            return false;
        };
        match zstd::stream::read::Decoder::new(f) {
            Ok(d) => Box::new(d),
            Err(_) => return false,
        }
    };
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match dec.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(_) => return false,
        }
    }
    hex::encode(h.finalize()) == sha
}

/// What [`scan`] found.
#[derive(Debug, Default)]
pub struct BlobScan {
    /// Blob files read.
    pub files: u64,
    /// Their bytes on disk.
    pub bytes: u64,
    /// Blobs that do not read back to their hash: (file, hash).
    pub damaged: Vec<(PathBuf, String)>,
    /// Manifests whose attachment blobs are missing: manifest → parts.
    pub missing_parts: HashMap<String, Vec<String>>,
}

/// Reads every blob under `bdir` back against its name; `progress` gets
/// the bytes of each file as it is done.
pub fn scan(
    bdir: &Path,
    blobs: &BlobStore,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<BlobScan> {
    let mut out = BlobScan::default();
    for p in files(bdir)? {
        let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        progress(len);
        out.files += 1;
        out.bytes += len;
        let sha = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".zst").or_else(|| n.strip_suffix(".krm")))
            .unwrap_or_default()
            .to_owned();
        // A manifest whose attachment blob is missing is not damaged
        // itself: it stays, and the events it serves are named by the
        // reference check.
        let missing: Vec<String> = match blobs.manifest_parts(&sha) {
            Ok(parts) => parts
                .into_iter()
                .filter(|(_, present)| !present)
                .map(|(p, _)| p)
                .collect(),
            Err(_) => Vec::new(),
        };
        if !missing.is_empty() {
            out.missing_parts.insert(sha, missing);
        } else if !blob_sound(blobs, &p, &sha) {
            out.damaged.push((p, sha));
        }
    }
    Ok(out)
}

/// The blobs an event needs the collector to hold: its raw message.
/// (Attachments live inside the raw message's blob, or in blobs its
/// manifest names, which [`scan`] follows.)
pub fn referenced_blobs(e: &Event) -> Option<String> {
    match &e.kind {
        // An event that says its raw message could not be kept (lost on
        // the agent) names a hash the store never had: not a missing blob.
        Some(Kind::Email(m)) if !m.raw_sha256.is_empty() && m.raw_not_kept.is_empty() => {
            Some(m.raw_sha256.to_lowercase())
        }
        _ => None,
    }
}

/// Where a whole blob lives, relative to the data directory.
pub fn blob_path(sha: &str) -> PathBuf {
    Path::new("blobs")
        .join(sha.get(..2).unwrap_or_default())
        .join(sha.get(2..4).unwrap_or_default())
        .join(format!("{sha}.zst"))
}

const NAMED_EVENTS: usize = 20;

/// Event ids as a message names them: the first few, sorted, and a count.
pub fn describe_ids(ids: &[String]) -> String {
    let mut s = ids
        .iter()
        .take(NAMED_EVENTS)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if ids.len() > NAMED_EVENTS {
        s.push_str(&format!(" and {} more", ids.len() - NAMED_EVENTS));
    }
    s
}

/// The reference check, fed one event at a time.
pub struct References<'a> {
    damaged: &'a HashSet<String>,
    missing_parts: &'a HashMap<String, Vec<String>>,
    missing: HashMap<String, HashSet<String>>,
    partless: HashMap<String, HashSet<String>>,
    present: HashSet<String>,
    refs: u64,
}

/// What [`References`] found, sorted by hash.
#[derive(Debug, Default)]
pub struct Unavailable {
    /// Blobs referenced and absent: hash → the events naming them.
    pub missing: BTreeMap<String, Vec<String>>,
    /// Manifests with missing attachment blobs: (manifest, parts, events).
    pub partless: Vec<(String, Vec<String>, Vec<String>)>,
    /// References checked.
    pub refs: u64,
}

impl<'a> References<'a> {
    /// `damaged` blobs are reported by the caller already; manifests in
    /// `missing_parts` are reported with the events naming them.
    pub fn new(
        damaged: &'a HashSet<String>,
        missing_parts: &'a HashMap<String, Vec<String>>,
    ) -> References<'a> {
        References {
            damaged,
            missing_parts,
            missing: HashMap::new(),
            partless: HashMap::new(),
            present: HashSet::new(),
            refs: 0,
        }
    }

    pub fn note(&mut self, blobs: &BlobStore, e: &Event) {
        let Some(sha) = referenced_blobs(e) else {
            return;
        };
        self.refs += 1;
        if self.missing_parts.contains_key(&sha) {
            self.partless
                .entry(sha)
                .or_default()
                .insert(e.event_id.clone());
        } else if self.damaged.contains(&sha) || self.present.contains(&sha) {
            // Reported with the blob check, or known present.
        } else if let Some(a) = self.missing.get_mut(&sha) {
            a.insert(e.event_id.clone());
        } else if blobs.has(&sha) {
            // Remember a bounded number; past it the check is a stat each.
            if self.present.len() < 100_000 {
                self.present.insert(sha);
            }
        } else {
            self.missing
                .entry(sha)
                .or_default()
                .insert(e.event_id.clone());
        }
    }

    pub fn finish(self) -> Unavailable {
        let sorted = |ids: HashSet<String>| {
            let mut v: Vec<String> = ids.into_iter().collect();
            v.sort();
            v
        };
        let mut partless: Vec<_> = self
            .missing_parts
            .iter()
            .map(|(m, parts)| {
                let ids = self.partless.get(m).cloned().unwrap_or_default();
                (m.clone(), parts.clone(), sorted(ids))
            })
            .collect();
        partless.sort();
        Unavailable {
            missing: self
                .missing
                .into_iter()
                .map(|(sha, ids)| (sha, sorted(ids)))
                .collect(),
            partless,
            refs: self.refs,
        }
    }
}
