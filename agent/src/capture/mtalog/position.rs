//! Where a follower is in its file, kept in the buffer's keyed state
//! (`mta_log_positions`, key: the configured path) and written in the same
//! transaction as the records of the lines before it.
//!
//! A file is known by device and inode, and by a SHA-256 of its first
//! bytes (up to [`HEAD_BYTES`]): an inode number reused by a new file, or a
//! file truncated and refilled while the agent was down, does not match.

use std::fs::File;

use sha2::{Digest, Sha256};

/// How many leading bytes identify a file's content.
pub const HEAD_BYTES: u64 = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    pub dev: u64,
    pub ino: u64,
    /// Bytes consumed: the start of the next line to read.
    pub offset: u64,
    /// How many leading bytes `head` covers (less than [`HEAD_BYTES`] only
    /// while the file is shorter).
    pub head_len: u64,
    pub head: [u8; 32],
}

const ENCODED: usize = 8 * 4 + 32;

impl Position {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(ENCODED);
        for n in [self.dev, self.ino, self.offset, self.head_len] {
            v.extend_from_slice(&n.to_be_bytes());
        }
        v.extend_from_slice(&self.head);
        v
    }

    /// None for a value this version did not write.
    pub fn decode(b: &[u8]) -> Option<Position> {
        if b.len() != ENCODED {
            return None;
        }
        let n = |i: usize| -> Option<u64> {
            Some(u64::from_be_bytes(b[i * 8..i * 8 + 8].try_into().ok()?))
        };
        Some(Position {
            dev: n(0)?,
            ino: n(1)?,
            offset: n(2)?,
            head_len: n(3)?,
            head: b[32..].try_into().ok()?,
        })
    }

    /// The start of `file`, identified.
    pub fn start_of(file: &File) -> std::io::Result<Position> {
        let id = crate::os::file_id(file)?;
        let mut p = Position {
            dev: id.dev,
            ino: id.ino,
            ..Default::default()
        };
        p.refresh_head(file)?;
        Ok(p)
    }

    /// Whether `file` is the file this position was taken in: same device
    /// and inode, at least `offset` long, same first bytes.
    pub fn matches(&self, file: &File) -> std::io::Result<bool> {
        let (m, id) = (file.metadata()?, crate::os::file_id(file)?);
        if id.dev != self.dev || id.ino != self.ino || m.len() < self.offset {
            return Ok(false);
        }
        let (len, hash) = head_of(file, self.head_len)?;
        Ok(len == self.head_len && hash == self.head)
    }

    /// Extends the head hash once the file has grown past it.
    pub fn refresh_head(&mut self, file: &File) -> std::io::Result<()> {
        if self.head_len < HEAD_BYTES {
            let (len, hash) = head_of(file, HEAD_BYTES)?;
            if len != self.head_len || self.head_len == 0 {
                self.head_len = len;
                self.head = hash;
            }
        }
        Ok(())
    }
}

/// SHA-256 of the first `max` bytes of `file` (fewer if it is shorter).
fn head_of(file: &File, max: u64) -> std::io::Result<(u64, [u8; 32])> {
    let mut buf = vec![0u8; max as usize];
    let mut got = 0;
    while got < buf.len() {
        match crate::os::read_at(file, &mut buf[got..], got as u64)? {
            0 => break,
            n => got += n,
        }
    }
    Ok((got as u64, Sha256::digest(&buf[..got]).into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn round_trip_and_identity() {
        let dir = tempfile::tempdir().expect("test");
        let path = dir.path().join("log");
        let mut f = File::create(&path).expect("test");
        f.write_all(b"line one\n").expect("test");
        let file = File::open(&path).expect("test");
        let mut p = Position::start_of(&file).expect("test");
        assert_eq!(p.head_len, 9);
        p.offset = 9;
        assert_eq!(Position::decode(&p.encode()), Some(p));
        assert_eq!(Position::decode(b"short"), None);
        assert!(p.matches(&file).expect("test"));
        // Growing keeps the identity; the head then covers more.
        f.write_all(b"line two\n").expect("test");
        assert!(p.matches(&file).expect("test"));
        p.refresh_head(&file).expect("test");
        assert_eq!(p.head_len, 18);
        assert!(p.matches(&file).expect("test"));
        // Truncated and rewritten with other content: not the same file.
        std::fs::write(&path, b"other stuff here and more\n").expect("test");
        assert!(!p.matches(&file).expect("test"));
    }
}
