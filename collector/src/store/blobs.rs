//! Content-addressed blob store: `blobs/<aa>/<bb>/<sha256>.zst`, zstd
//! compressed, each content stored once however many events reference it.
//! A blob is written to a temporary file, fsynced, and renamed into place,
//! so a crash never leaves a partial blob under its final name.
//!
//! A raw message with large base64 attachments is stored as a manifest
//! (`<sha256>.krm`) plus one blob per attachment under the attachment's own
//! hash, so an attachment is stored once however many mails carry it
//! (`parts`). Readers see the original bytes either way.

mod parts;
mod remove;

use std::io::{Read, Write};

use sha2::{Digest, Sha256};
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
    /// Read-held by every store, write-held by a purge's removal, so a removal never
    /// takes an attachment blob that a message being stored reuses
    /// (`remove.rs`).
    gc: std::sync::RwLock<()>,
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
            gc: std::sync::RwLock::new(()),
        })
    }

    fn path(&self, sha: &str) -> Result<PathBuf, BlobError> {
        self.path_ext(sha, "zst")
    }

    fn manifest_path(&self, sha: &str) -> Result<PathBuf, BlobError> {
        self.path_ext(sha, "krm")
    }

    fn path_ext(&self, sha: &str, ext: &str) -> Result<PathBuf, BlobError> {
        if !kiroku_common::is_sha256_hex(sha) {
            return Err(BlobError::BadHash(sha.to_owned()));
        }
        Ok(self
            .dir
            .join(&sha[..2])
            .join(&sha[2..4])
            .join(format!("{sha}.{ext}")))
    }

    /// True when the content `sha` can be read back (stored whole or as a
    /// manifest).
    pub fn has(&self, sha: &str) -> bool {
        self.path(sha).is_ok_and(|p| p.exists())
            || self.manifest_path(sha).is_ok_and(|p| p.exists())
    }

    /// Stores `data` under `sha` after checking the hash. Returns false when
    /// it was already stored. Durable on return. Large base64 parts go to
    /// blobs of their own first, then the manifest naming them, after
    /// checking that the manifest gives back exactly `data`.
    pub fn put(&self, sha: &str, data: &[u8]) -> Result<bool, BlobError> {
        let actual = kiroku_common::sha256_hex(data);
        if actual != sha {
            return Err(BlobError::HashMismatch {
                announced: sha.to_owned(),
                actual,
            });
        }
        let _gc = self.gc.read().unwrap_or_else(|p| p.into_inner());
        if self.has(sha) {
            return Ok(false);
        }
        let segs = parts::split(data, parts::MIN_PART);
        if !segs.iter().any(|s| matches!(s, parts::Seg::Part { .. })) {
            return self.write_atomic(&self.path(sha)?, data);
        }
        let mut h = Sha256::new();
        let mut lines = Vec::new();
        for s in &segs {
            match s {
                parts::Seg::Literal { start, end } => h.update(&data[*start..*end]),
                parts::Seg::Part {
                    line_len, decoded, ..
                } => {
                    for chunk in decoded.chunks(line_len / 4 * 3 * 1024) {
                        lines.clear();
                        parts::encode_lines(chunk, *line_len, &mut lines);
                        h.update(&lines);
                    }
                }
            }
        }
        if hex::encode(h.finalize()) != sha {
            // Never store what would not read back: keep it whole.
            tracing::warn!(
                sha,
                "splitting attachments out of this message would not give it back byte for byte; stored whole"
            );
            return self.write_atomic(&self.path(sha)?, data);
        }
        let mut part_shas = Vec::new();
        for s in &segs {
            if let parts::Seg::Part { decoded, .. } = s {
                let part: [u8; 32] = Sha256::digest(decoded).into();
                // An attachment already stored (another mail) is kept as
                // is, its time of use renewed (a purge spares blobs used in
                // the last day: `remove.rs`).
                let ppath = self.path(&hex::encode(part))?;
                if !self.write_atomic(&ppath, decoded)? {
                    remove::touch(&ppath);
                }
                part_shas.push(part);
            }
        }
        let mut next = part_shas.into_iter();
        let manifest = parts::manifest(data, &segs, |_| next.next().unwrap_or([0; 32]));
        self.write_atomic(&self.manifest_path(sha)?, &manifest)
    }

    /// Writes `data` zstd-compressed to `path` through a fsynced temporary
    /// file and a rename. False when `path` already existed.
    fn write_atomic(&self, path: &Path, data: &[u8]) -> Result<bool, BlobError> {
        if path.exists() {
            return Ok(false);
        }
        let parent = path.parent().unwrap_or(&self.dir).to_owned();
        std::fs::create_dir_all(&parent).map_err(io(&parent))?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("blob");
        let tmp = parent.join(format!(".{name}.{}.tmp", rand_suffix()));
        let write = || -> std::io::Result<()> {
            let f = std::fs::File::create(&tmp)?;
            let mut enc = zstd::Encoder::new(f, 3)?;
            enc.write_all(data)?;
            let f = enc.finish()?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            std::fs::File::open(&parent)?.sync_all()
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            BlobError::Io {
                path: path.to_owned(),
                source: e,
            }
        })?;
        Ok(true)
    }

    /// A streaming reader of the original content: a whole blob
    /// decompressed, or a manifest with its parts encoded back in place.
    /// The content is checked against `sha` as it streams: the read that
    /// reaches the end fails (`InvalidData`, naming the blob file) when it
    /// does not match, so a damaged or forged blob is never read as if
    /// it were whole.
    pub fn reader(&self, sha: &str) -> Result<Box<dyn Read + Send>, BlobError> {
        let path = self.path(sha)?;
        if path.exists() {
            let f = std::fs::File::open(&path).map_err(io(&path))?;
            let dec = zstd::Decoder::new(f).map_err(io(&path))?;
            return Ok(Box::new(Verified::new(dec, sha, path)));
        }
        let mpath = self.manifest_path(sha)?;
        let f = std::fs::File::open(&mpath).map_err(|source| BlobError::Io {
            path: path.clone(),
            source,
        })?;
        let manifest = zstd::Decoder::new(f).map_err(io(&mpath))?;
        let dir = self.dir.clone();
        let open: parts::OpenPart = Box::new(move |part: &str| {
            let store = BlobStore {
                dir: dir.clone(),
                gc: std::sync::RwLock::new(()),
            };
            let p = store
                .path(part)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            let f = std::fs::File::open(&p).map_err(|e| {
                std::io::Error::new(e.kind(), format!("attachment blob {}: {e}", p.display()))
            })?;
            let dec = zstd::Decoder::new(f)?;
            Ok(Box::new(Verified::new(dec, part, p)) as Box<dyn Read + Send>)
        });
        let whole = parts::ManifestReader::new(manifest, open);
        Ok(Box::new(Verified::new(whole, sha, mpath)))
    }

    /// The attachment blobs a manifest names (empty for a whole blob), and
    /// whether each is present: what `repair` checks before reading one.
    pub fn manifest_parts(&self, sha: &str) -> Result<Vec<(String, bool)>, BlobError> {
        let mpath = self.manifest_path(sha)?;
        if !mpath.exists() {
            return Ok(Vec::new());
        }
        let f = std::fs::File::open(&mpath).map_err(io(&mpath))?;
        let shas =
            parts::part_shas(zstd::Decoder::new(f).map_err(io(&mpath))?).map_err(io(&mpath))?;
        Ok(shas
            .into_iter()
            .map(|p| {
                let present = self.path(&p).is_ok_and(|p| p.exists());
                (p, present)
            })
            .collect())
    }

    /// Bytes on disk (compressed) of one blob, or of its manifest (the
    /// attachments it names are shared and not counted).
    pub fn stored_size(&self, sha: &str) -> Option<u64> {
        [self.path(sha).ok()?, self.manifest_path(sha).ok()?]
            .iter()
            .find_map(|p| p.metadata().ok())
            .map(|m| m.len())
    }
}

/// A reader that hashes what passes through it and fails at the end when
/// the content is not what its name says.
struct Verified<R> {
    inner: R,
    hasher: Sha256,
    sha: String,
    path: PathBuf,
}

impl<R: Read> Verified<R> {
    fn new(inner: R, sha: &str, path: PathBuf) -> Self {
        Verified {
            inner,
            hasher: Sha256::new(),
            sha: sha.to_owned(),
            path,
        }
    }
}

impl<R: Read> Read for Verified<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf).map_err(|e| {
            std::io::Error::new(e.kind(), format!("blob {}: {e}", self.path.display()))
        })?;
        if n > 0 || buf.is_empty() {
            self.hasher.update(&buf[..n]);
            return Ok(n);
        }
        let actual = hex::encode(self.hasher.clone().finalize());
        if actual != self.sha {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "blob {} is damaged: its content hashes to {actual}, not to the {} it is stored under",
                    self.path.display(),
                    self.sha
                ),
            ));
        }
        Ok(0)
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

    fn forge(path: &Path, content: &[u8]) {
        let forged = zstd::encode_all(content, 3).expect("compress");
        std::fs::write(path, forged).expect("write");
    }

    fn read_all(s: &BlobStore, sha: &str) -> std::io::Result<Vec<u8>> {
        let mut back = Vec::new();
        s.reader(sha).expect("reader").read_to_end(&mut back)?;
        Ok(back)
    }

    #[test]
    fn a_forged_blob_or_attachment_fails_at_the_end_of_reading() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = BlobStore::open(dir.path()).expect("open");
        let data = b"Subject: pay invoice to account 1234\r\n\r\nbody\r\n".repeat(50);
        let sha = kiroku_common::sha256_hex(&data);
        s.put(&sha, &data).expect("put");
        let whole = files(dir.path(), "zst").remove(0);
        let altered = String::from_utf8_lossy(&data).replace("1234", "9999");
        forge(&whole, altered.as_bytes());
        let e = read_all(&s, &sha).expect_err("a forged blob");
        assert!(
            e.to_string().contains("damaged") && e.to_string().contains(&sha),
            "{e}"
        );

        // A manifest whose attachment blob was replaced.
        let att: Vec<u8> = (0..200_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 9) as u8)
            .collect();
        let mut m = b"Subject: a\r\n\r\n".to_vec();
        parts::encode_lines(&att, 76, &mut m);
        let msha = kiroku_common::sha256_hex(&m);
        s.put(&msha, &m).expect("put");
        assert_eq!(read_all(&s, &msha).expect("sound"), m);
        let part_sha = kiroku_common::sha256_hex(&att);
        let part = s.path(&part_sha).expect("path");
        let mut other = att.clone();
        other[1000] ^= 1;
        forge(&part, &other);
        let e = read_all(&s, &msha).expect_err("a forged attachment");
        assert!(e.to_string().contains(&part_sha), "{e}");
    }

    fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut todo = vec![dir.to_owned()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
                let p = e.path();
                if p.is_dir() {
                    todo.push(p);
                } else if p.extension().is_some_and(|x| x == ext) {
                    out.push(p);
                }
            }
        }
        out
    }

    #[test]
    fn an_attachment_in_many_mails_is_stored_once() {
        use base64::Engine;
        let dir = tempfile::tempdir().expect("tempdir");
        let s = BlobStore::open(dir.path()).expect("open");
        let att: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&att);
        let mut shas = Vec::new();
        for i in 0..5 {
            let mut m = format!(
                "Subject: mail {i}\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\ntext {i}\r\n--b\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            );
            for l in b64.as_bytes().chunks(76) {
                m.push_str(std::str::from_utf8(l).expect("ascii"));
                m.push_str("\r\n");
            }
            m.push_str("--b--\r\n");
            let sha = kiroku_common::sha256_hex(m.as_bytes());
            assert!(s.put(&sha, m.as_bytes()).expect("put"));
            assert!(!s.put(&sha, m.as_bytes()).expect("again"));
            assert!(s.has(&sha));
            let mut back = Vec::new();
            s.reader(&sha)
                .expect("reader")
                .read_to_end(&mut back)
                .expect("read");
            assert_eq!(back, m.as_bytes(), "mail {i} byte-identical");
            shas.push(sha);
        }
        assert_eq!(files(dir.path(), "krm").len(), 5, "one manifest per mail");
        let whole = files(dir.path(), "zst");
        assert_eq!(whole.len(), 1, "the attachment once: {whole:?}");
        assert!(
            s.has(&kiroku_common::sha256_hex(&att)),
            "under its own hash"
        );
        let total: u64 = files(dir.path(), "krm")
            .iter()
            .chain(&whole)
            .map(|p| p.metadata().expect("meta").len())
            .sum();
        assert!(total < att.len() as u64 * 2, "{total} bytes for 5 copies");
        // A lost attachment blob is an error when read, never wrong bytes.
        std::fs::remove_file(&whole[0]).expect("rm");
        assert!(
            s.reader(&shas[0])
                .expect("reader")
                .read_to_end(&mut Vec::new())
                .is_err()
        );
    }
}
