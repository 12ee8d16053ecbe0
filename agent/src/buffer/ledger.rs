//! The ledger: positions (durable, acknowledged) and what the buffer
//! holds, in bytes, which is what `buffer.max_bytes` bounds.
//!
//! The bytes are counted from the records themselves — the encoded events
//! in `queue` and `inflight`, the inline raw messages in `smallblobs` and
//! the referenced files in `blobs/` — kept up to date by every write and
//! acknowledgement and recounted whenever a database is opened, so a
//! restart finds the same figure. sled's file sizes are never used: they
//! do not shrink when records are removed, and a bound on them stayed
//! "full" after the collector had drained the buffer.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sled::Transactional;

use super::keyed::SledTx;
use super::store::Store;
use super::{Buffer, BufferError, NEXT_SEQ, raw_sha, read_u64};

/// Backlog figures for logs, the collector (`Status`) and the hosts view.
#[derive(Debug, Clone, Default)]
pub struct Backlog {
    pub queued: usize,
    pub inflight: usize,
    /// What the buffer holds, in bytes (the figure `max_bytes` bounds).
    pub bytes: u64,
    /// Why new records are refused, if they are (see [`Buffer::problem`]).
    pub problem: Option<String>,
}

/// Byte counts by kind of record, and the positions.
pub(super) struct Ledger {
    queued: AtomicU64,
    inflight: AtomicU64,
    inline: AtomicU64,
    files: AtomicU64,
    /// Highest sequence number known to be on disk. The shipper never reads
    /// past it: an event shipped before it is durable here could, after a
    /// crash, come back under another sequence number and be mistaken for
    /// a duplicate of what the collector already stored.
    pub durable_seq: AtomicU64,
    /// Highest sequence number the collector acknowledged (this process).
    pub acked_seq: AtomicU64,
    /// The durable sequence number last written to the side file.
    seq_mark: AtomicU64,
    seq_file: PathBuf,
}

/// A change of the byte counts, applied after its transaction committed
/// (sled may run a transaction's closure more than once).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Delta {
    pub queued: i64,
    pub inflight: i64,
    pub inline: i64,
    pub files: i64,
}

fn add(counter: &AtomicU64, d: i64) {
    if d >= 0 {
        counter.fetch_add(d as u64, Ordering::Relaxed);
    } else {
        let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            Some(v.saturating_sub(d.unsigned_abs()))
        });
    }
}

/// The side file: `KIROKU-SEQ1 <stream_id> <highest durable seq>`. sled
/// treats a damaged spot in its log as the end of the log and silently
/// drops everything after it; this file, written at most once a second
/// from the durable sequence number, is how such a loss is noticed (and
/// sequence numbers are never reused after it).
const SEQ_MAGIC: &str = "KIROKU-SEQ1";

fn read_seq_file(path: &Path) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut it = text.split_whitespace();
    (it.next()? == SEQ_MAGIC).then_some(())?;
    let stream = it.next()?.to_owned();
    let seq = it.next()?.parse().ok()?;
    Some((stream, seq))
}

impl Ledger {
    pub fn new(seq_file: PathBuf) -> Ledger {
        Ledger {
            queued: AtomicU64::new(0),
            inflight: AtomicU64::new(0),
            inline: AtomicU64::new(0),
            files: AtomicU64::new(0),
            durable_seq: AtomicU64::new(0),
            acked_seq: AtomicU64::new(0),
            seq_mark: AtomicU64::new(0),
            seq_file,
        }
    }

    /// What the buffer holds, in bytes.
    pub fn bytes(&self) -> u64 {
        [&self.queued, &self.inflight, &self.inline, &self.files]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    pub fn apply(&self, d: Delta) {
        add(&self.queued, d.queued);
        add(&self.inflight, d.inflight);
        add(&self.inline, d.inline);
        add(&self.files, d.files);
    }

    /// Counts what an opened database holds (and the blob files it
    /// references), and sets the durable position to its last queued event.
    pub fn recount(&self, store: &Store, blob_dir: &Path) -> Result<(), BufferError> {
        let err = |source| BufferError::Sled {
            path: store.path.clone(),
            source,
        };
        let sum = |tree: &sled::Tree| -> Result<u64, BufferError> {
            let mut n = 0;
            for kv in tree.iter() {
                n += kv.map_err(err)?.1.len() as u64;
            }
            Ok(n)
        };
        self.queued.store(sum(&store.queue)?, Ordering::Relaxed);
        self.inflight
            .store(sum(&store.inflight)?, Ordering::Relaxed);
        self.inline
            .store(sum(&store.smallblobs)?, Ordering::Relaxed);
        let mut files = 0;
        for k in store.blobrefs.iter().keys() {
            let k = k.map_err(err)?;
            if let Ok(m) = blob_dir
                .join(String::from_utf8_lossy(&k).as_ref())
                .metadata()
            {
                files += m.len();
            }
        }
        self.files.store(files, Ordering::Relaxed);
        let last = store
            .queue
            .last()
            .map_err(err)?
            .map(|(k, _)| read_u64(Some(&k)))
            .unwrap_or(0);
        self.durable_seq.fetch_max(last, Ordering::SeqCst);
        Ok(())
    }

    /// The stream the side file was written for.
    pub fn side_file_stream(&self) -> Option<String> {
        read_seq_file(&self.seq_file).map(|(stream, _)| stream)
    }

    /// Free bytes for an unprivileged writer on the file system of `dir`.
    pub fn free_space(&self, dir: &Path) -> Option<u64> {
        crate::os::free_space(dir)
    }

    /// Compares sled's next sequence number with the side file. If sled's
    /// log ends before a number that was already durable, records after a
    /// damaged spot were dropped: say so, and continue numbering after the
    /// lost ones so none is ever reused (the collector would take a reused
    /// number for a duplicate).
    pub fn check_sequence(
        &self,
        store: &Store,
        stream_id: &str,
    ) -> Result<Option<String>, BufferError> {
        let err = |source| BufferError::Sled {
            path: store.path.clone(),
            source,
        };
        let next = read_u64(store.meta.get(NEXT_SEQ).map_err(err)?.as_deref()).max(1);
        self.seq_mark.fetch_max(next - 1, Ordering::SeqCst);
        let Some((stream, mark)) = read_seq_file(&self.seq_file) else {
            return Ok(None);
        };
        if stream != stream_id || mark < next {
            return Ok(None);
        }
        let msg = format!(
            "agent buffer {} is damaged: sled's log ends before sequence number {mark}, which was durable; events {next}..={mark} that were not yet acknowledged by the collector are lost. The buffer keeps working and numbering continues at {}; check the disk",
            store.path.display(),
            mark + 1
        );
        tracing::error!("{msg}");
        store
            .meta
            .insert(NEXT_SEQ, &(mark + 1).to_be_bytes())
            .map_err(err)?;
        store.db.flush().map_err(err)?;
        self.seq_mark.fetch_max(mark, Ordering::SeqCst);
        Ok(Some(msg))
    }

    /// Writes the durable sequence number to the side file if it moved.
    pub fn persist_seq(&self, stream_id: &str) {
        let seq = self.durable_seq.load(Ordering::SeqCst);
        if seq <= self.seq_mark.load(Ordering::SeqCst) || stream_id.is_empty() {
            return;
        }
        match super::store::replace_durably(
            &self.seq_file,
            &format!("{SEQ_MAGIC} {stream_id} {seq}"),
        ) {
            Ok(()) => {
                self.seq_mark.fetch_max(seq, Ordering::SeqCst);
            }
            Err(e) => {
                tracing::warn!(path = %self.seq_file.display(), error = %e, "cannot write the buffer's sequence file")
            }
        }
    }
}

impl Buffer {
    pub(super) fn persist_seq(&self) {
        if self.stream_confirmed.load(Ordering::SeqCst) {
            self.ledger.persist_seq(&self.stream_id());
        }
    }

    /// Refuses a new record when the buffer holds `max_bytes` (its bound)
    /// or the file system is below `min_free_bytes`, or sled refuses
    /// writes. One record may overshoot the bound.
    pub(super) fn check_space(&self) -> Result<(), BufferError> {
        self.writable()?;
        let used = self.ledger.bytes();
        if used >= self.limits.max_bytes {
            return Err(BufferError::Full {
                used,
                max: self.limits.max_bytes,
            });
        }
        if self.limits.min_free_bytes > 0
            && let Some(free) = self.ledger.free_space(&self.dir)
            && free < self.limits.min_free_bytes
        {
            return Err(BufferError::DiskFull {
                path: self.dir.clone(),
                free,
                reserve: self.limits.min_free_bytes,
            });
        }
        Ok(())
    }

    /// Whether the buffer is at its bound (`max_bytes`): new records are
    /// then refused with [`BufferError::Full`].
    pub fn is_full(&self) -> bool {
        matches!(self.check_space(), Err(BufferError::Full { .. }))
    }

    /// What the buffer holds, in bytes (the figure `max_bytes` bounds).
    pub fn held_bytes(&self) -> u64 {
        self.ledger.bytes()
    }

    pub fn backlog(&self) -> Backlog {
        let (queued, inflight) = self
            .with_store(|s| Ok((s.queue.len(), s.inflight.len())))
            .unwrap_or((0, 0));
        Backlog {
            queued,
            inflight,
            bytes: self.ledger.bytes(),
            problem: self.problem(),
        }
    }

    /// Drops every queued event up to and including `seq`: the collector has
    /// stored them durably. Blobs no longer referenced go with them.
    /// [`Buffer::ack`] of a position the collector gave for `stream`, the
    /// stream the shipper said Hello with. Refused when the buffer has
    /// since been reopened on a database of another stream (its sequence
    /// numbers are not the collector's positions for that stream); the
    /// shipper then reconnects under the new one.
    pub async fn ack_stream(
        self: &Arc<Self>,
        stream: &str,
        seq: u64,
    ) -> Result<usize, BufferError> {
        let current = self.stream_id();
        if current != stream {
            return Err(BufferError::Unavailable {
                path: self.dir().to_owned(),
                why: format!(
                    "the buffer now holds stream {current}, not {stream} that this session ships; reconnecting"
                ),
            });
        }
        self.ack(seq).await
    }

    pub async fn ack(self: &Arc<Self>, seq: u64) -> Result<usize, BufferError> {
        let epoch = self.reopens.load(Ordering::SeqCst);
        let this = self.clone();
        let removed = self.blocking(move || this.ack_blocking(seq)).await?;
        if removed > 0 {
            self.flush(epoch).await?;
        }
        self.ledger.acked_seq.fetch_max(seq, Ordering::SeqCst);
        Ok(removed)
    }

    fn ack_blocking(&self, seq: u64) -> Result<usize, BufferError> {
        let keys: Vec<sled::IVec> = self.with_store(|s| {
            s.queue
                .range(..=seq.to_be_bytes())
                .keys()
                .collect::<Result<_, _>>()
                .map_err(|e| self.sled_err(e))
        })?;
        let mut removed = 0;
        for k in keys {
            let _guard = self.blob_lock.lock().unwrap_or_else(|p| p.into_inner());
            let done = self.with_store(|s| {
                let Some(v) = s.queue.get(&k).map_err(|e| self.sled_err(e))? else {
                    return Ok(None);
                };
                let event = self.decode(&v, "queue")?;
                let sha = raw_sha(&event);
                // (inline bytes freed, whether the blob is unreferenced)
                let (inline, unreferenced) = (&s.queue, &s.blobrefs, &s.smallblobs)
                    .transaction(|(queue, blobrefs, smallblobs)| -> SledTx<(u64, bool)> {
                        queue.remove(&k)?;
                        let Some(sha) = &sha else {
                            return Ok((0, false));
                        };
                        let refs = read_u64(blobrefs.get(sha.as_bytes())?.as_deref());
                        if refs <= 1 {
                            blobrefs.remove(sha.as_bytes())?;
                            // Inline content goes with its last reference.
                            return Ok(match smallblobs.remove(sha.as_bytes())? {
                                Some(v) => (v.len() as u64, false),
                                None => (0, true),
                            });
                        }
                        blobrefs.insert(sha.as_bytes(), &(refs - 1).to_be_bytes())?;
                        Ok((0, false))
                    })
                    .map_err(|e| self.tx_err(e))?;
                Ok(Some((v.len() as i64, inline as i64, unreferenced, sha)))
            })?;
            let Some((queued, inline, unreferenced, sha)) = done else {
                continue;
            };
            let mut delta = super::ledger::Delta {
                queued: -queued,
                inline: -inline,
                ..Default::default()
            };
            // Deleting before the sled flush is safe: the collector has this
            // event (and its blob) durably, so it is never shipped again.
            if let (true, Some(sha)) = (unreferenced, &sha) {
                let path = self.blob_path(sha);
                let len = path.metadata().map(|m| m.len()).unwrap_or(0);
                if std::fs::remove_file(&path).is_ok() {
                    delta.files = -(len as i64);
                }
            }
            self.ledger.apply(delta);
            removed += 1;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Buffer;
    use kiroku_proto::{EmailEvent, Event, event::Kind};

    fn mail(raw: &[u8]) -> Event {
        Event {
            kind: Some(Kind::Email(EmailEvent {
                raw_sha256: kiroku_common::sha256_hex(raw),
                subject: "s".repeat(500),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    /// The bound counts what is held and clears as soon as it is
    /// acknowledged, however large sled's files have grown; a reopen
    /// recounts the same figure.
    #[tokio::test]
    async fn the_bound_is_on_what_is_held_and_clears_on_ack() {
        let dir = tempfile::tempdir().expect("tempdir");
        let max = 400_000;
        let b = Buffer::open(dir.path(), max, 1 << 20).expect("open");
        let mut accepted = 0u64;
        for i in 0..1000u32 {
            let raw = vec![b'a' + (i % 26) as u8; 20_000 + i as usize];
            match b.append(&mail(&raw), Some(raw[..].into())).await {
                Ok(_) => accepted += 1,
                Err(e) => {
                    assert!(matches!(e, super::BufferError::Full { .. }), "{e}");
                    break;
                }
            }
        }
        assert!((15..40).contains(&accepted), "accepted {accepted}");
        assert!(b.is_full());
        let held = b.held_bytes();
        assert!(held >= max, "held {held}");
        drop(b);
        let b = Buffer::open(dir.path(), max, 1 << 20).expect("reopen");
        assert_eq!(b.held_bytes(), held, "recounted at open");
        assert!(b.is_full(), "still full after a restart, before the drain");
        b.ack(accepted).await.expect("ack");
        assert_eq!(b.held_bytes(), 0);
        assert!(!b.is_full(), "the bound clears with the acknowledgement");
        b.append(&mail(b"again"), Some(b"again"[..].into()))
            .await
            .expect("accepted again");
        drop(b);
        let b = Buffer::open(dir.path(), max, 1 << 20).expect("reopen");
        assert!(!b.is_full(), "and after a restart");
        assert!(b.held_bytes() > 0 && b.held_bytes() < 10_000);
    }

    #[tokio::test]
    async fn shared_content_is_counted_once_and_freed_with_its_last_reference() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = Buffer::open(dir.path(), u64::MAX, 1 << 20).expect("open");
        let big = vec![b'x'; super::super::INLINE_MAX + 10];
        b.append(&mail(&big), Some(big[..].into()))
            .await
            .expect("a");
        let one = b.held_bytes();
        b.append(&mail(&big), Some(big[..].into()))
            .await
            .expect("b");
        let two = b.held_bytes();
        assert!(
            two - one < 2_000,
            "the file is counted once ({one} → {two})"
        );
        b.ack(1).await.expect("ack");
        assert!(b.held_bytes() >= big.len() as u64, "still referenced");
        b.ack(2).await.expect("ack");
        assert_eq!(b.held_bytes(), 0);
    }
}
