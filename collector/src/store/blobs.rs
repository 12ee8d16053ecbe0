//! Content-addressed blob store: `blobs/<aa>/<bb>/<sha256>.zst`, zstd
//! compressed, each content stored once however many events reference it.
//! A blob is written to a temporary file, fsynced, and renamed into place,
//! so a crash never leaves a partial blob under its final name.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob store {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "blob content does not match its name: announced sha256 {announced}, received {actual}"
    )]
    HashMismatch { announced: String, actual: String },
    #[error("not a sha256: {0:?}")]
    BadHash(String),
}

pub struct BlobStore {
    dir: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BlobError + '_ {
    move |source| BlobError::Io {
        path: path.to_owned(),
        source,
    }
}

impl BlobStore {
    pub fn open(dir: &Path) -> Result<BlobStore, BlobError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        Ok(BlobStore {
            dir: dir.to_owned(),
        })
    }

    fn path(&self, sha: &str) -> Result<PathBuf, BlobError> {
        if !kiroku_common::is_sha256_hex(sha) {
            return Err(BlobError::BadHash(sha.to_owned()));
        }
        Ok(self
            .dir
            .join(&sha[..2])
            .join(&sha[2..4])
            .join(format!("{sha}.zst")))
    }

    pub fn has(&self, sha: &str) -> bool {
        self.path(sha).is_ok_and(|p| p.exists())
    }

    /// Stores `data` under `sha` after checking the hash. Returns false when
    /// it was already stored. Durable on return.
    pub fn put(&self, sha: &str, data: &[u8]) -> Result<bool, BlobError> {
        let actual = kiroku_common::sha256_hex(data);
        if actual != sha {
            return Err(BlobError::HashMismatch {
                announced: sha.to_owned(),
                actual,
            });
        }
        let path = self.path(sha)?;
        if path.exists() {
            return Ok(false);
        }
        let parent = path.parent().unwrap_or(&self.dir).to_owned();
        std::fs::create_dir_all(&parent).map_err(io(&parent))?;
        let tmp = parent.join(format!(".{sha}.{}.tmp", rand_suffix()));
        let write = || -> std::io::Result<()> {
            let f = std::fs::File::create(&tmp)?;
            let mut enc = zstd::Encoder::new(f, 3)?;
            enc.write_all(data)?;
            let f = enc.finish()?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&parent)?.sync_all()
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            BlobError::Io {
                path: path.clone(),
                source: e,
            }
        })?;
        Ok(true)
    }

    /// A streaming reader of the decompressed blob.
    pub fn reader(&self, sha: &str) -> Result<impl Read + use<>, BlobError> {
        let path = self.path(sha)?;
        let f = std::fs::File::open(&path).map_err(io(&path))?;
        zstd::Decoder::new(f).map_err(io(&path))
    }

    /// Bytes on disk (compressed) of one blob.
    pub fn stored_size(&self, sha: &str) -> Option<u64> {
        self.path(sha).ok()?.metadata().ok().map(|m| m.len())
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_dedup_and_verify() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = BlobStore::open(dir.path()).expect("open");
        let data = b"hello blob".repeat(1000);
        let sha = kiroku_common::sha256_hex(&data);
        assert!(!s.has(&sha));
        assert!(s.put(&sha, &data).expect("put"));
        assert!(!s.put(&sha, &data).expect("again"), "stored once");
        let mut back = Vec::new();
        s.reader(&sha)
            .expect("reader")
            .read_to_end(&mut back)
            .expect("read");
        assert_eq!(back, data);
        assert!(s.stored_size(&sha).expect("size") < data.len() as u64);
        assert!(matches!(
            s.put(&kiroku_common::sha256_hex(b"other"), &data),
            Err(BlobError::HashMismatch { .. })
        ));
        assert!(matches!(
            s.put("../../etc", b""),
            Err(BlobError::HashMismatch { .. }) | Err(BlobError::BadHash(_))
        ));
    }
}
