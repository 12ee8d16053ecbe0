//! The collector's side of a bundle's files: each file cut into
//! `ExportCaseChunk`s in order and handed to the stream, its SHA-256 and
//! size noted for the manifest as it goes. Nothing of a bundle is kept on
//! the collector's disk.

use std::collections::HashSet;
use std::io::Read;

use kiroku_proto::{ExportCaseChunk, VerifyProgress};
use sha2::{Digest, Sha256};

use super::ExportError;
use super::layout;
use super::manifest::FileEntry;

/// Bytes per chunk (the client's decoding limit is far above).
pub const CHUNK: usize = 256 * 1024;

/// Where the chunks go: `false` when the client has gone away.
pub trait ChunkOut {
    fn send(&mut self, chunk: ExportCaseChunk) -> bool;
}

impl<F: FnMut(ExportCaseChunk) -> bool> ChunkOut for F {
    fn send(&mut self, chunk: ExportCaseChunk) -> bool {
        self(chunk)
    }
}

pub struct Sink<S: ChunkOut> {
    out: S,
    files: Vec<FileEntry>,
    seen: HashSet<String>,
    /// Bytes of file content sent so far.
    pub bytes: u64,
}

impl<S: ChunkOut> Sink<S> {
    pub fn new(out: S) -> Self {
        Sink {
            out,
            files: Vec::new(),
            seen: HashSet::new(),
            bytes: 0,
        }
    }

    /// One whole file.
    pub fn file(&mut self, path: &str, data: &[u8]) -> Result<(), ExportError> {
        self.stream(path, data)
    }

    /// One file read from `r` to its end, in chunks.
    pub fn stream(&mut self, path: &str, mut r: impl Read) -> Result<(), ExportError> {
        self.start(path)?;
        let mut hash = Sha256::new();
        let mut size = 0u64;
        let mut pending: Option<Vec<u8>> = None;
        loop {
            let mut buf = vec![0u8; CHUNK];
            let n = read_full(&mut r, &mut buf).map_err(|e| ExportError::Read {
                what: path.to_owned(),
                error: e.to_string(),
            })?;
            // A chunk goes out once the next read succeeded, so the last
            // one (end_of_file) is the only one that says the file is
            // whole: a read that fails mid-file never looks complete.
            if let Some(data) = pending.take() {
                self.chunk(path, data, n == 0)?;
            } else if n == 0 {
                self.chunk(path, Vec::new(), true)?;
            }
            if n == 0 {
                break;
            }
            buf.truncate(n);
            hash.update(&buf);
            size += n as u64;
            pending = Some(buf);
        }
        self.bytes += size;
        self.files.push(FileEntry {
            path: path.to_owned(),
            sha256: hex::encode(hash.finalize()),
            bytes: size,
        });
        Ok(())
    }

    /// A progress report between files.
    pub fn progress(&mut self, phase: &str, done: u64, total: u64) -> Result<(), ExportError> {
        let chunk = ExportCaseChunk {
            progress: Some(VerifyProgress {
                phase: phase.into(),
                done,
                total,
                bytes: self.bytes,
            }),
            ..Default::default()
        };
        if self.out.send(chunk) {
            Ok(())
        } else {
            Err(ExportError::Gone)
        }
    }

    /// The files sent so far (for the manifest).
    pub fn files(&self) -> &[FileEntry] {
        &self.files
    }

    fn start(&mut self, path: &str) -> Result<(), ExportError> {
        layout::check_path(path).map_err(|e| ExportError::Internal(e.to_string()))?;
        if !self.seen.insert(path.to_owned()) {
            return Err(ExportError::Internal(format!(
                "bundle path {path} was produced twice"
            )));
        }
        Ok(())
    }

    fn chunk(&mut self, path: &str, data: Vec<u8>, end: bool) -> Result<(), ExportError> {
        let chunk = ExportCaseChunk {
            path: path.to_owned(),
            data,
            end_of_file: end,
            progress: None,
        };
        if self.out.send(chunk) {
            Ok(())
        } else {
            Err(ExportError::Gone)
        }
    }
}

/// Fills `buf` as far as the reader allows; 0 means end of data.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_chunked_in_order_and_hashed() {
        let mut got = Vec::new();
        let big = vec![7u8; CHUNK * 2 + 5];
        let files = {
            let mut sink = Sink::new(|c: ExportCaseChunk| {
                got.push((c.path, c.data.len(), c.end_of_file));
                true
            });
            sink.file("a/empty", b"").expect("empty");
            sink.file("b/big", &big).expect("big");
            assert!(sink.file("b/big", b"x").is_err(), "a path twice");
            assert!(sink.file("../x", b"x").is_err(), "a bad path");
            sink.files().to_vec()
        };
        assert_eq!(
            got,
            vec![
                ("a/empty".into(), 0, true),
                ("b/big".into(), CHUNK, false),
                ("b/big".into(), CHUNK, false),
                ("b/big".into(), 5, true),
            ]
        );
        assert_eq!(files[1].sha256, kiroku_common::sha256_hex(&big));
        assert_eq!(files[1].bytes, big.len() as u64);
    }

    #[test]
    fn a_failed_read_never_ends_the_file() {
        struct Fails(usize);
        impl Read for Fails {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0 == 0 {
                    return Err(std::io::Error::other("disk"));
                }
                let n = buf.len().min(self.0);
                self.0 -= n;
                Ok(n)
            }
        }
        let mut ends = 0;
        let mut sink = Sink::new(|c: ExportCaseChunk| {
            ends += usize::from(c.end_of_file);
            true
        });
        assert!(sink.stream("m.eml", Fails(CHUNK + 3)).is_err());
        drop(sink);
        assert_eq!(ends, 0);
    }
}
