//! Content hashing of closed files (size-capped, rate-limited, on its own
//! thread — never on the async runtime) and the memory of which path had
//! which content, so a copy onto removable media names its source.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::buffer::{BufferError, KeyedState};

/// What hashing a file gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hashed {
    pub sha256: String,
    /// Why `sha256` is empty.
    pub skipped: String,
    pub size: u64,
    pub mtime_ms: i64,
    pub is_dir: bool,
}

pub(super) fn mtime_ms(m: &std::fs::Metadata) -> i64 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Reads files at most `bytes_per_sec` (0 = unlimited), up to `max_bytes`.
pub struct Hasher {
    max_bytes: u64,
    bytes_per_sec: u64,
    buf: Vec<u8>,
}

const CHUNK: usize = 256 * 1024;

impl Hasher {
    pub fn new(max_bytes: u64, mb_per_sec: u64) -> Hasher {
        Hasher {
            max_bytes,
            bytes_per_sec: mb_per_sec.saturating_mul(1024 * 1024),
            buf: vec![0; CHUNK],
        }
    }

    /// Size and time only (deletes, directories, renames of big files).
    pub fn stat(path: &Path) -> Hashed {
        match std::fs::symlink_metadata(path) {
            Ok(m) => Hashed {
                size: if m.is_dir() { 0 } else { m.len() },
                mtime_ms: mtime_ms(&m),
                is_dir: m.is_dir(),
                ..Default::default()
            },
            Err(e) => Hashed {
                skipped: gone_or(&e),
                ..Default::default()
            },
        }
    }

    pub fn hash(&mut self, path: &Path) -> Hashed {
        let mut out = Hasher::stat(path);
        if !out.skipped.is_empty() || out.is_dir {
            return out;
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) if !m.is_file() => {
                out.skipped = "not a regular file".into();
                return out;
            }
            _ => {}
        }
        if out.size > self.max_bytes {
            out.skipped = format!(
                "over size cap ({} bytes > files.hash_max_bytes = {})",
                out.size, self.max_bytes
            );
            return out;
        }
        let mut f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) => {
                out.skipped = gone_or(&e);
                return out;
            }
        };
        let mut h = Sha256::new();
        let start = Instant::now();
        let mut total = 0u64;
        loop {
            let n = match f.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    out.skipped = format!("unreadable: {e}");
                    return out;
                }
            };
            h.update(&self.buf[..n]);
            total += n as u64;
            if total > self.max_bytes {
                out.skipped = format!(
                    "over size cap (grew past files.hash_max_bytes = {} while hashing)",
                    self.max_bytes
                );
                return out;
            }
            if self.bytes_per_sec > 0 {
                // Sleep when ahead of the allowed rate.
                let due = Duration::from_secs_f64(total as f64 / self.bytes_per_sec as f64);
                let spent = start.elapsed();
                if due > spent {
                    std::thread::sleep(due - spent);
                }
            }
        }
        // A file written again while we read it has no single content.
        let after = Hasher::stat(path);
        if after.size != total || after.mtime_ms != out.mtime_ms {
            out.skipped = "changed while hashing (the next close records it)".into();
            out.size = after.size;
            return out;
        }
        out.size = total;
        out.sha256 = hex::encode(h.finalize());
        out
    }
}

fn gone_or(e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::NotFound {
        "deleted before hashing".into()
    } else {
        format!("unreadable: {e}")
    }
}

/// Bounded memory of content hash → last path seen with it, in two keyed
/// states of the agent's buffer: `file_hashes` (sha256 hex →
/// 8-byte age stamp + path) and `file_hash_age` (stamp → sha256), so the
/// oldest entries go first when `cap` is exceeded. Survives restarts.
pub struct HashMemory {
    by_hash: KeyedState,
    by_age: KeyedState,
    next: u64,
    len: u64,
    cap: u64,
}

impl HashMemory {
    pub fn new(
        by_hash: KeyedState,
        by_age: KeyedState,
        cap: u64,
    ) -> Result<HashMemory, BufferError> {
        let next = match by_age.last()? {
            Some((k, _)) => stamp(&k) + 1,
            None => 1,
        };
        let len = by_age.len() as u64;
        Ok(HashMemory {
            by_hash,
            by_age,
            next,
            len,
            cap: cap.max(1),
        })
    }

    /// The last path seen with this content.
    pub fn get(&self, sha256: &str) -> Result<Option<String>, BufferError> {
        Ok(self
            .by_hash
            .get(sha256.as_bytes())?
            .filter(|v| v.len() > 8)
            .map(|v| String::from_utf8_lossy(&v[8..]).into_owned()))
    }

    pub fn put(&mut self, sha256: &str, path: &str) -> Result<(), BufferError> {
        if let Some(old) = self.by_hash.get(sha256.as_bytes())? {
            if old.len() >= 8 && &old[8..] == path.as_bytes() {
                return Ok(());
            }
            if old.len() >= 8 {
                self.by_age.remove(&old[..8])?;
                self.len = self.len.saturating_sub(1);
            }
        }
        let key = self.next.to_be_bytes();
        self.next += 1;
        let mut v = key.to_vec();
        v.extend_from_slice(path.as_bytes());
        self.by_hash.insert(sha256.as_bytes(), v)?;
        self.by_age.insert(key, sha256.as_bytes())?;
        self.len += 1;
        while self.len > self.cap {
            let Some((k, sha)) = self.by_age.pop_min()? else {
                break;
            };
            self.len -= 1;
            // Only if that hash was not seen again since.
            if let Some(cur) = self.by_hash.get(&sha)?
                && cur.len() >= 8
                && cur[..8] == k[..]
            {
                self.by_hash.remove(&sha)?;
            }
        }
        Ok(())
    }
}

fn stamp(k: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = k.len().min(8);
    b[..n].copy_from_slice(&k[..n]);
    u64::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_caps_and_reasons() {
        let dir = tempfile::tempdir().expect("tempdir");
        let small = dir.path().join("small");
        std::fs::write(&small, b"abc").expect("write");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![0u8; 2000]).expect("write");
        let mut h = Hasher::new(1000, 0);
        let r = h.hash(&small);
        assert_eq!(
            r.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(r.size, 3);
        let r = h.hash(&big);
        assert!(
            r.sha256.is_empty() && r.skipped.contains("over size cap"),
            "{r:?}"
        );
        assert_eq!(r.size, 2000);
        let r = h.hash(&dir.path().join("gone"));
        assert_eq!(r.skipped, "deleted before hashing");
        assert!(h.hash(dir.path()).is_dir);
    }

    #[test]
    fn rate_limit_slows_reading() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("f");
        std::fs::write(&f, vec![1u8; 3 * 1024 * 1024]).expect("write");
        let mut h = Hasher::new(u64::MAX, 10); // 10 MiB/s: 3 MiB takes ≥ 0.3 s
        let t = Instant::now();
        assert!(!h.hash(&f).sha256.is_empty());
        assert!(
            t.elapsed() >= Duration::from_millis(280),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn hash_memory_is_bounded_and_persistent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let open = || {
            let db = crate::buffer::Buffer::open(dir.path(), u64::MAX, 1 << 20).expect("buffer");
            let m = HashMemory::new(
                db.keyed_state("file_hashes"),
                db.keyed_state("file_hash_age"),
                2,
            )
            .expect("memory");
            (db, m)
        };
        {
            let (db, mut m) = open();
            m.put("h1", "/a").expect("put");
            m.put("h2", "/b").expect("put");
            m.put("h1", "/a2").expect("put"); // h1 refreshed: now newest
            m.put("h3", "/c").expect("put"); // evicts h2, the oldest
            assert_eq!(m.get("h1").expect("get").as_deref(), Some("/a2"));
            assert_eq!(m.get("h2").expect("get"), None);
            assert_eq!(m.get("h3").expect("get").as_deref(), Some("/c"));
            drop(m);
            drop(db);
        }
        let (_db, m) = open();
        assert_eq!(
            m.get("h3").expect("get").as_deref(),
            Some("/c"),
            "survives reopening"
        );
        assert_eq!(m.len, 2);
    }
}
