//! Replacing purged entries by stubs (issue 19, ARCHITECTURE.md
//! "Tombstones"): a closed segment is written again into
//! `<segment>.log.purge` with each chosen record replaced by a `KRJS` stub
//! (every other byte, damage included, copied as it was), then renamed over
//! the segment (file and directory fsynced). Records keep their order and
//! leaves; only the offsets after a stub move, so whoever keeps positions
//! in the segment re-finds them by leaf ([`Rewrite::boundary_leaf`],
//! [`leaf_ends`]).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use kiroku_proto::JournalEntry;
use prost::Message;

use super::record::{MAGIC_STUB, MAGIC_V2, encode_record, record_at, stub_payload};
use super::{JournalError, jerr, segment_path, sync_dir};

/// The scratch file a rewrite writes before renaming it over the segment.
pub fn scratch_path(dir: &Path, segment: u64) -> PathBuf {
    segment_path(dir, segment).with_extension("log.purge")
}

/// A segment written again with stubs, not yet renamed over the old one.
#[derive(Debug)]
pub struct Rewrite {
    pub segment: u64,
    pub scratch: PathBuf,
    /// Leaves replaced by stubs now.
    pub stubbed: Vec<u64>,
    /// Leaves asked for that were stubs already (an earlier purge).
    pub already: Vec<u64>,
    /// Leaves asked for whose entry's SHA-256 differs from the one given,
    /// or that the segment does not hold: left as they are.
    pub refused: Vec<u64>,
    pub old_len: u64,
    pub new_len: u64,
    /// Old record ends (offsets) and the leaf of the record ending there.
    ends: Vec<(u64, Option<u64>)>,
}

impl Rewrite {
    /// The leaf of the record that ends at `offset` in the old segment
    /// (`Some(None)`: a record without a leaf, `None`: no record ends
    /// there).
    pub fn boundary_leaf(&self, offset: u64) -> Option<Option<u64>> {
        self.ends
            .binary_search_by_key(&offset, |(o, _)| *o)
            .ok()
            .map(|i| self.ends[i].1)
    }

    /// Bytes the segment shrinks by.
    pub fn freed(&self) -> u64 {
        self.old_len.saturating_sub(self.new_len)
    }

    /// Renames the scratch file over the segment, durable (file and
    /// directory fsynced).
    pub fn commit(&self, dir: &Path) -> Result<(), JournalError> {
        let path = segment_path(dir, self.segment);
        std::fs::rename(&self.scratch, &path).map_err(|e| jerr(&path, e))?;
        sync_dir(dir)
    }

    /// Removes the scratch file (a rewrite given up).
    pub fn abandon(&self) {
        let _ = std::fs::remove_file(&self.scratch);
    }
}

/// Writes segment `segment` again into its scratch file with the records
/// of the leaves in `stubs` (leaf → SHA-256 of the entry's payload, which
/// must match) replaced by stubs, synced; `None` when nothing changes (no
/// scratch file is left). The segment must be closed (not the one being
/// appended to).
pub fn prepare(
    dir: &Path,
    segment: u64,
    stubs: &HashMap<u64, [u8; 32]>,
) -> Result<Option<Rewrite>, JournalError> {
    let path = segment_path(dir, segment);
    let buf = std::fs::read(&path).map_err(|e| jerr(&path, e))?;
    let mut out = Vec::with_capacity(buf.len());
    let mut rw = Rewrite {
        segment,
        scratch: scratch_path(dir, segment),
        stubbed: Vec::new(),
        already: Vec::new(),
        refused: Vec::new(),
        old_len: buf.len() as u64,
        new_len: 0,
        ends: Vec::new(),
    };
    let mut seen = std::collections::HashSet::new();
    let mut at = 0;
    while at < buf.len() {
        let Some((magic, payload, next)) = record_at(&buf, at) else {
            // Not a record: copied as it is, up to the next one.
            let cand = super::record::resync_at(&buf, at).unwrap_or(buf.len());
            out.extend_from_slice(&buf[at..cand]);
            at = cand;
            continue;
        };
        let p = &buf[payload];
        let mut leaf = None;
        let mut replaced = false;
        if magic == MAGIC_V2
            && let Ok(e) = JournalEntry::decode(p)
        {
            leaf = Some(e.leaf);
            if let Some(want) = stubs.get(&e.leaf) {
                seen.insert(e.leaf);
                if super::entry::sha256(p) == *want {
                    let prev = <[u8; 32]>::try_from(e.prev.as_slice()).unwrap_or([0; 32]);
                    encode_record(&mut out, MAGIC_STUB, &stub_payload(e.leaf, &prev, p));
                    rw.stubbed.push(e.leaf);
                    replaced = true;
                } else {
                    rw.refused.push(e.leaf);
                }
            }
        } else if magic == MAGIC_STUB && p.len() >= 8 {
            let l = u64::from_le_bytes(p[..8].try_into().unwrap_or_default());
            leaf = Some(l);
            if stubs.contains_key(&l) {
                seen.insert(l);
                rw.already.push(l);
            }
        }
        if !replaced {
            out.extend_from_slice(&buf[at..next]);
        }
        rw.ends.push((next as u64, leaf));
        at = next;
    }
    rw.refused
        .extend(stubs.keys().filter(|l| !seen.contains(l)).copied());
    rw.refused.sort_unstable();
    if rw.stubbed.is_empty() {
        return Ok(None);
    }
    rw.new_len = out.len() as u64;
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&rw.scratch)
        .map_err(|e| jerr(&rw.scratch, e))?;
    if let Err(e) = f.write_all(&out).and_then(|()| f.sync_all()) {
        rw.abandon();
        return Err(jerr(&rw.scratch, e));
    }
    Ok(Some(rw))
}

/// Where each leaf's record ends in segment `segment` as it is now.
pub fn leaf_ends(dir: &Path, segment: u64) -> Result<HashMap<u64, u64>, JournalError> {
    let path = segment_path(dir, segment);
    let buf = std::fs::read(&path).map_err(|e| jerr(&path, e))?;
    let mut out = HashMap::new();
    let mut report = super::ScanReport::default();
    super::record::scan_buf(&buf, segment, &path, &mut report, &mut |r| {
        if let Some(l) = r.leaf {
            out.insert(l, r.at.offset + r.len);
        }
        Ok(())
    })?;
    Ok(out)
}

/// The first leaf segment `segment` holds, if any.
pub fn first_leaf(dir: &Path, segment: u64) -> Result<Option<u64>, JournalError> {
    let path = segment_path(dir, segment);
    let mut f = File::open(&path).map_err(|e| jerr(&path, e))?;
    let _ = &mut f;
    let end = super::Position {
        segment,
        offset: std::fs::metadata(&path).map_err(|e| jerr(&path, e))?.len(),
    };
    let mut at = super::Position { segment, offset: 0 };
    while at < end {
        let (reads, next) = super::read_entries(dir, at, end, 64)?;
        if let Some(l) = reads.iter().find_map(|r| r.leaf) {
            return Ok(Some(l));
        }
        if reads.is_empty() || next <= at {
            break;
        }
        at = next;
    }
    Ok(None)
}
