//! The reader, for the shipper: durable events in sequence order and the
//! raw content they reference.

use std::sync::atomic::Ordering;

use kiroku_proto::Event;

use super::blobs::BlobSource;
use super::{Buffer, BufferError, read_u64};

/// A queued event as the buffer holds it: the bytes its chain hashes (what
/// the shipper sends, untouched) and, for the shipper's own use (blobs to
/// upload, sequence numbers), their decoded copy.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub seq: u64,
    pub bytes: Vec<u8>,
    pub event: Event,
}

impl Buffer {
    /// Up to `max_events` queued events after `after_seq`, exactly as
    /// queued, stopping once `max_bytes` of them are collected (at least
    /// one is returned). Only durable events are returned.
    pub fn read_recorded(
        &self,
        after_seq: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Vec<Recorded>, BufferError> {
        let durable = self.ledger.durable_seq.load(Ordering::SeqCst);
        if after_seq >= durable {
            return Ok(Vec::new());
        }
        self.with_store(|s| {
            let mut out = Vec::new();
            let mut bytes = 0;
            for item in s
                .queue
                .range((after_seq + 1).to_be_bytes()..=durable.to_be_bytes())
            {
                let (k, v) = item.map_err(|e| self.sled_err(e))?;
                if !out.is_empty() && (out.len() >= max_events || bytes + v.len() > max_bytes) {
                    break;
                }
                bytes += v.len();
                let seq = read_u64(Some(&k));
                let event = self.decode(&v, &format!("queue/{seq}"))?;
                out.push(Recorded {
                    seq,
                    bytes: v.to_vec(),
                    event,
                });
            }
            Ok(out)
        })
    }

    /// [`Buffer::read_recorded`], decoded.
    pub fn read_batch(
        &self,
        after_seq: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Vec<Event>, BufferError> {
        Ok(self
            .read_recorded(after_seq, max_events, max_bytes)?
            .into_iter()
            .map(|r| r.event)
            .collect())
    }

    /// Resolves when an event was queued since the last call (or the
    /// buffer became writable again).
    pub async fn appended(&self) {
        self.appended.notified().await;
    }

    fn inline_blob(&self, sha256: &str) -> Result<Option<Vec<u8>>, BufferError> {
        self.with_store(|s| {
            Ok(s.smallblobs
                .get(sha256.as_bytes())
                .map_err(|e| self.sled_err(e))?
                .map(|v| v.to_vec()))
        })
    }

    /// A blob still referenced by a queued event: its bytes when stored
    /// inline, else its file, opened, with its size.
    pub async fn blob_file(&self, sha256: &str) -> Result<Option<BlobSource>, BufferError> {
        if !kiroku_common::is_sha256_hex(sha256) {
            return Ok(None);
        }
        if let Some(v) = self.inline_blob(sha256)? {
            return Ok(Some(BlobSource::Bytes(v)));
        }
        let path = self.blob_path(sha256);
        let io = |source| BufferError::Io {
            path: path.clone(),
            source,
        };
        match tokio::fs::File::open(&path).await {
            Ok(f) => {
                let size = f.metadata().await.map_err(io)?.len();
                Ok(Some(BlobSource::File(f, size)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    /// The raw bytes of a blob still referenced by a queued event.
    pub fn blob(&self, sha256: &str) -> Result<Option<Vec<u8>>, BufferError> {
        if !kiroku_common::is_sha256_hex(sha256) {
            return Ok(None);
        }
        if let Some(v) = self.inline_blob(sha256)? {
            return Ok(Some(v));
        }
        match std::fs::read(self.blob_path(sha256)) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(BufferError::Io {
                path: self.blob_path(sha256),
                source,
            }),
        }
    }
}
