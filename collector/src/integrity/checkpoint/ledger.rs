//! Where each checkpoint is: its file `checkpoints/<20-digit n>.ckp` (an
//! encoded `SignedCheckpoint`, written once, never changed) and its record
//! in the metadata tree `checkpoints` (number → the leaves it covers and
//! the journal range they are in), so a proof reads only that range.
//!
//! A record is written last, after the file and the journal's
//! CheckpointMark: a checkpoint exists once its record does. A file
//! without a record (a crash in between) is found at start and either
//! completed, when its mark is in the journal, or moved aside as
//! `<n>.ckp.unfinished` and written again.

use std::path::{Path, PathBuf};

use kiroku_proto::SignedCheckpoint;
use prost::Message;

use crate::store::journal::Position;
use crate::store::meta::{MetaError, MetaStore};

/// The metadata tree of checkpoint records.
const TREE: &str = "checkpoints";
/// The directory of checkpoint files in the data directory.
pub const DIR: &str = "checkpoints";

/// One checkpoint's place in the journal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Record {
    pub number: u64,
    /// Leaves `[first_leaf, first_leaf + leaves)`.
    pub first_leaf: u64,
    pub leaves: u64,
    /// The journal range holding them: from `start` (the previous
    /// checkpoint's `end`) to `end` (exclusive).
    pub start: Position,
    pub end: Position,
    /// SHA-256 of the encoded `Checkpoint` (what its CheckpointMark names).
    pub sha256: [u8; 32],
    /// The leaf of its CheckpointMark in the journal.
    pub mark_leaf: u64,
}

impl Record {
    const LEN: usize = 8 * 7 + 32;

    /// The first leaf the next checkpoint covers.
    pub fn next_leaf(&self) -> u64 {
        self.first_leaf.saturating_add(self.leaves)
    }

    /// Whether `leaf` is one of this checkpoint's.
    pub fn covers(&self, leaf: u64) -> bool {
        leaf >= self.first_leaf && leaf < self.next_leaf()
    }

    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(Self::LEN);
        for n in [
            self.first_leaf,
            self.leaves,
            self.start.segment,
            self.start.offset,
            self.end.segment,
            self.end.offset,
            self.mark_leaf,
        ] {
            v.extend_from_slice(&n.to_be_bytes());
        }
        v.extend_from_slice(&self.sha256);
        v
    }

    fn decode(number: u64, v: &[u8]) -> Option<Record> {
        if v.len() != Self::LEN {
            return None;
        }
        let at = |i: usize| v[i * 8..i * 8 + 8].try_into().ok().map(u64::from_be_bytes);
        Some(Record {
            number,
            first_leaf: at(0)?,
            leaves: at(1)?,
            start: Position {
                segment: at(2)?,
                offset: at(3)?,
            },
            end: Position {
                segment: at(4)?,
                offset: at(5)?,
            },
            mark_leaf: at(6)?,
            sha256: v[56..88].try_into().ok()?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error(
        "checkpoint record {number} in the metadata does not decode; the metadata is damaged (run `kiroku-collector repair`)"
    )]
    BadRecord { number: u64 },
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> LedgerError {
    LedgerError::File {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// The checkpoints of one data directory.
#[derive(Clone)]
pub struct Ledger {
    dir: PathBuf,
    tree: sled::Tree,
}

impl Ledger {
    pub fn open(data_dir: &Path, meta: &MetaStore) -> Result<Ledger, LedgerError> {
        Ok(Ledger {
            dir: data_dir.join(DIR),
            tree: meta.tree(TREE)?,
        })
    }

    /// `checkpoints/<20-digit n>.ckp`.
    pub fn path(&self, number: u64) -> PathBuf {
        file_path(&self.dir, number)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn meta_err(&self, e: sled::Error) -> LedgerError {
        file_err(
            &self.dir,
            format!("checkpoint records in the metadata: {e}"),
        )
    }

    pub fn get(&self, number: u64) -> Result<Option<Record>, LedgerError> {
        let Some(v) = self
            .tree
            .get(number.to_be_bytes())
            .map_err(|e| self.meta_err(e))?
        else {
            return Ok(None);
        };
        Record::decode(number, &v)
            .map(Some)
            .ok_or(LedgerError::BadRecord { number })
    }

    /// The newest checkpoint's record.
    pub fn last(&self) -> Result<Option<Record>, LedgerError> {
        let Some((k, v)) = self.tree.last().map_err(|e| self.meta_err(e))? else {
            return Ok(None);
        };
        let number = <[u8; 8]>::try_from(k.as_ref())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        Record::decode(number, &v)
            .map(Some)
            .ok_or(LedgerError::BadRecord { number })
    }

    /// Every record, oldest first.
    pub fn all(&self) -> Result<Vec<Record>, LedgerError> {
        let mut out = Vec::new();
        for kv in self.tree.iter() {
            let (k, v) = kv.map_err(|e| self.meta_err(e))?;
            let number = <[u8; 8]>::try_from(k.as_ref())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            out.push(Record::decode(number, &v).ok_or(LedgerError::BadRecord { number })?);
        }
        Ok(out)
    }

    /// The checkpoint covering `leaf`: leaves grow with the number, so a
    /// binary search over numbers (a few metadata reads, not a scan).
    pub fn covering(&self, leaf: u64) -> Result<Option<Record>, LedgerError> {
        let Some(last) = self.last()? else {
            return Ok(None);
        };
        let (mut lo, mut hi) = (1u64, last.number);
        while lo <= hi {
            let mid = lo + (hi - lo) / 2;
            let Some(r) = self.get(mid)? else {
                // Numbers run without holes; a hole is damage: scan instead.
                return Ok(self.all()?.into_iter().find(|r| r.covers(leaf)));
            };
            if r.covers(leaf) {
                return Ok(Some(r));
            }
            if leaf < r.first_leaf {
                hi = mid - 1;
            } else {
                lo = mid + 1;
            }
        }
        Ok(None)
    }

    /// Records `r` (made durable by the caller's metadata flush).
    pub fn put(&self, r: &Record) -> Result<(), LedgerError> {
        self.tree
            .insert(r.number.to_be_bytes(), r.encode())
            .map_err(|e| self.meta_err(e))?;
        Ok(())
    }

    /// Reads checkpoint `number`'s file.
    pub fn read(&self, number: u64) -> Result<SignedCheckpoint, LedgerError> {
        read_file(&self.path(number))
    }

    /// Writes checkpoint `number`'s file durably (temporary file, fsync,
    /// rename, directory fsync); an existing file is never overwritten.
    pub fn write(&self, number: u64, signed: &SignedCheckpoint) -> Result<PathBuf, LedgerError> {
        use std::io::Write;
        std::fs::create_dir_all(&self.dir).map_err(|e| file_err(&self.dir, e))?;
        let path = self.path(number);
        if path.exists() {
            return Err(file_err(
                &path,
                "exists already; a checkpoint file is never overwritten",
            ));
        }
        let tmp = path.with_extension("ckp.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(|e| file_err(&tmp, e))?;
        f.write_all(&signed.encode_to_vec())
            .and_then(|()| f.sync_all())
            .map_err(|e| file_err(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| file_err(&path, e))?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| file_err(&self.dir, e))?;
        Ok(path)
    }

    /// Checkpoint files numbered above `after`, ascending.
    pub fn files_after(&self, after: u64) -> Result<Vec<u64>, LedgerError> {
        let mut v = Vec::new();
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(v),
            Err(e) => return Err(file_err(&self.dir, e)),
        };
        for entry in rd {
            let entry = entry.map_err(|e| file_err(&self.dir, e))?;
            let name = entry.file_name();
            let Some(n) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".ckp"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if n > after {
                v.push(n);
            }
        }
        v.sort_unstable();
        Ok(v)
    }

    /// Moves an unfinished checkpoint file aside (kept, never deleted).
    pub fn set_aside(&self, number: u64) -> Result<PathBuf, LedgerError> {
        let from = self.path(number);
        let to = from.with_extension(format!("ckp.unfinished-{}", kiroku_common::now_ms()));
        std::fs::rename(&from, &to).map_err(|e| file_err(&from, e))?;
        Ok(to)
    }
}

/// `<dir>/<20-digit n>.ckp`.
pub fn file_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:020}.ckp"))
}

/// Reads and decodes a checkpoint file.
pub fn read_file(path: &Path) -> Result<SignedCheckpoint, LedgerError> {
    let bytes = std::fs::read(path).map_err(|e| file_err(path, e))?;
    SignedCheckpoint::decode(bytes.as_slice())
        .map_err(|e| file_err(path, format!("not a checkpoint file: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(number: u64, first_leaf: u64, leaves: u64) -> Record {
        Record {
            number,
            first_leaf,
            leaves,
            start: Position {
                segment: 1,
                offset: first_leaf * 10,
            },
            end: Position {
                segment: 1,
                offset: (first_leaf + leaves) * 10,
            },
            sha256: [number as u8; 32],
            mark_leaf: first_leaf + leaves,
        }
    }

    #[test]
    fn records_round_trip_and_the_covering_one_is_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta = MetaStore::open(&dir.path().join("meta")).expect("meta");
        let ledger = Ledger::open(dir.path(), &meta).expect("ledger");
        assert_eq!(ledger.covering(0).expect("lookup"), None);
        // Checkpoint 3 starts after a gap (leaves 31..=39 are in none).
        let rs = [record(1, 0, 10), record(2, 11, 20), record(3, 40, 5)];
        for r in &rs {
            ledger.put(r).expect("put");
        }
        assert_eq!(ledger.get(2).expect("get"), Some(rs[1]));
        assert_eq!(ledger.last().expect("last"), Some(rs[2]));
        assert_eq!(ledger.all().expect("all"), rs.to_vec());
        let cases = [
            (0, Some(1)),
            (9, Some(1)),
            (10, None),
            (11, Some(2)),
            (30, Some(2)),
            (31, None),
            (40, Some(3)),
            (44, Some(3)),
            (45, None),
        ];
        for (leaf, want) in cases {
            let got = ledger.covering(leaf).expect("lookup").map(|r| r.number);
            assert_eq!(got, want, "leaf {leaf}");
        }
    }

    #[test]
    fn files_are_written_once_and_listed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta = MetaStore::open(&dir.path().join("meta")).expect("meta");
        let ledger = Ledger::open(dir.path(), &meta).expect("ledger");
        let s = SignedCheckpoint {
            checkpoint: vec![1, 2, 3],
            ..Default::default()
        };
        let p = ledger.write(7, &s).expect("write");
        assert!(p.ends_with("00000000000000000007.ckp"));
        assert!(ledger.write(7, &s).is_err());
        assert_eq!(ledger.read(7).expect("read"), s);
        ledger.write(9, &s).expect("write");
        assert_eq!(ledger.files_after(7).expect("list"), vec![9]);
        ledger.set_aside(9).expect("aside");
        assert_eq!(ledger.files_after(0).expect("list"), vec![7]);
    }
}
