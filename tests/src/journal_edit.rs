//! A test tool that edits a collector's event journal the way an attacker
//! with write access to the data directory would: records read and
//! written in their on-disk framing (`MAGIC | length | CRC-32 | payload`,
//! see `collector/src/store/journal.rs`), a record's payload changed with
//! or without its CRC recomputed, records removed, swapped or inserted.
//! The collector must be stopped while the file is edited.

use std::path::{Path, PathBuf};

/// One record as it lies in a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub offset: u64,
    pub magic: [u8; 4],
    pub crc: u32,
    pub payload: Vec<u8>,
}

impl Record {
    /// The record's bytes with its CRC as stored (`fix_crc`: recomputed).
    pub fn bytes(&self, fix_crc: bool) -> Vec<u8> {
        let crc = if fix_crc {
            crc32fast::hash(&self.payload)
        } else {
            self.crc
        };
        let mut out = self.magic.to_vec();
        out.extend_from_slice(&(self.payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&self.payload);
        out
    }
}

/// The journal's newest segment file in the data directory `data`.
pub fn newest_segment(data: &Path) -> anyhow::Result<PathBuf> {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(data.join("journal"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segs.sort();
    segs.pop()
        .ok_or_else(|| anyhow::anyhow!("no journal segment in {}", data.display()))
}

/// Every record of a well-formed segment, in order.
pub fn read(path: &Path) -> anyhow::Result<Vec<Record>> {
    let buf = std::fs::read(path)?;
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < buf.len() {
        let h = buf
            .get(at..at + 12)
            .ok_or_else(|| anyhow::anyhow!("{}: a cut header at {at}", path.display()))?;
        let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
        let payload = buf
            .get(at + 12..at + 12 + len)
            .ok_or_else(|| anyhow::anyhow!("{}: a cut record at {at}", path.display()))?;
        out.push(Record {
            offset: at as u64,
            magic: [h[0], h[1], h[2], h[3]],
            crc: u32::from_le_bytes([h[8], h[9], h[10], h[11]]),
            payload: payload.to_vec(),
        });
        at += 12 + len;
    }
    Ok(out)
}

/// Writes `records` as the segment `path` (each CRC as the record holds
/// it: call [`Record::bytes`] semantics with `fix_crc` per record).
pub fn write(path: &Path, records: &[(Record, bool)]) -> anyhow::Result<()> {
    let mut out = Vec::new();
    for (r, fix) in records {
        out.extend(r.bytes(*fix));
    }
    std::fs::write(path, out)?;
    Ok(())
}

/// Replaces the first occurrence of `from` by `to` (same length) in the
/// payload.
pub fn replace(payload: &mut [u8], from: &[u8], to: &[u8]) -> anyhow::Result<()> {
    anyhow::ensure!(from.len() == to.len(), "replacement of another length");
    let at = payload
        .windows(from.len())
        .position(|w| w == from)
        .ok_or_else(|| anyhow::anyhow!("{:?} not in the record", String::from_utf8_lossy(from)))?;
    payload[at..at + to.len()].copy_from_slice(to);
    Ok(())
}
