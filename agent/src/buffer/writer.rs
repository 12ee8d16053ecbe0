//! The writer, for capture sources: spooling, recording before and after
//! an outcome, records with keyed state, notes, and the group commit that
//! makes them durable.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use kiroku_proto::Event;
use prost::Message;
use sled::Transactional;

use super::blobs::{Blob, Spool};
use super::chain;
use super::keyed::{KeyedState, SledTx, StateTx, TxResult};
use super::ledger::Delta;
use super::store::Store;
use super::{Buffer, BufferError, NEXT_SEQ, read_u64};

/// Handle of an event recorded before its outcome is known.
#[derive(Debug, PartialEq, Eq)]
pub struct InflightId(u64);

/// An outcome committed by [`Buffer::settle`], not yet on disk.
#[derive(Debug)]
#[must_use = "the outcome is not durable until `Buffer::make_durable` returns"]
pub struct Settled {
    seq: u64,
    epoch: u64,
}

/// When a [`Buffer::note`] must be on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Before `note` returns (one group-committed flush).
    Now,
    /// Within a second (sled's own flush), or with the next flush.
    Soon,
}

/// Notes live in `meta` under their own prefix, apart from the queue's
/// bookkeeping (`next_seq`, `stream_id`).
fn note_key(key: &str) -> String {
    format!("note/{key}")
}

impl Buffer {
    /// fsync everything written so far (the blob directory, then sled).
    /// Group commit: concurrent callers share flushes, so N sessions
    /// finishing together cost one round of fsyncs, not N. `epoch`: the
    /// reopen count when the caller's write began; a write made before a
    /// reopen may not be in the reopened database, so it is an error.
    pub(super) async fn flush(self: &Arc<Self>, epoch: u64) -> Result<(), BufferError> {
        // Every write of this caller happened before this ticket.
        let ticket = self.flush_tickets.fetch_add(1, Ordering::SeqCst) + 1;
        loop {
            if self.flushed_upto.load(Ordering::SeqCst) >= ticket {
                return self.same_epoch(epoch);
            }
            let done = self.flush_done.notified();
            let Ok(_leader) = self.flush_lock.try_lock() else {
                // Another caller is flushing; its flush may not cover our
                // ticket, so check again when it ends.
                done.await;
                continue;
            };
            // Writes of every ticket taken so far are complete: one flush
            // covers them all.
            let upto = self.flush_tickets.load(Ordering::SeqCst);
            let result = self.flush_now().await;
            if result.is_ok() {
                self.flushed_upto.fetch_max(upto, Ordering::SeqCst);
            }
            self.flush_done.notify_waiters();
            result?;
        }
    }

    fn same_epoch(&self, epoch: u64) -> Result<(), BufferError> {
        if self.reopens.load(Ordering::SeqCst) == epoch {
            return Ok(());
        }
        Err(BufferError::Unavailable {
            path: self.dir.clone(),
            why: "the buffer was reopened after a write error while this record was being written; it may not be on disk".into(),
        })
    }

    async fn flush_now(self: &Arc<Self>) -> Result<(), BufferError> {
        let dir = self
            .blob_dir_dirty
            .swap(false, Ordering::SeqCst)
            .then(|| self.blob_dir.clone());
        let this = self.clone();
        let r = self
            .blocking(move || {
                if let Some(dir) = &dir {
                    crate::os::sync_dir(dir).map_err(|source| BufferError::Io {
                        path: dir.clone(),
                        source,
                    })?;
                }
                this.with_store(|s| s.db.flush().map(|_| ()).map_err(|e| this.sled_err(e)))
            })
            .await;
        if matches!(r, Err(BufferError::Io { .. })) {
            self.blob_dir_dirty.store(true, Ordering::SeqCst);
        }
        r
    }

    /// Starts spooling a message to the blob directory. Refused when the
    /// buffer is full or cannot be written (one message may then
    /// overshoot the bound).
    pub async fn spool(&self) -> Result<Spool, BufferError> {
        self.check_space()?;
        let name = format!("{:016x}.spool", rand::random::<u64>());
        let path = self.blob_dir.join(name);
        Ok(Spool {
            mem: Vec::new(),
            inline_max: self.inline_max.load(Ordering::Relaxed) as usize,
            file: None,
            path,
            hasher: Default::default(),
            size: 0,
        })
    }

    /// Records `event` (and its raw blob, if any) durably *before* its
    /// outcome is known. Returns once it is on disk.
    pub async fn begin(
        self: &Arc<Self>,
        event: &Event,
        raw: Option<Blob>,
    ) -> Result<InflightId, BufferError> {
        self.check_space()?;
        let epoch = self.reopens.load(Ordering::SeqCst);
        let bytes = event.encode_to_vec();
        let this = self.clone();
        let task = move || -> Result<u64, BufferError> {
            let _guard = this.blob_lock.lock().unwrap_or_else(|p| p.into_inner());
            let mut delta = Delta {
                inflight: bytes.len() as i64,
                ..Default::default()
            };
            // (sha, content to store inline with the event)
            let (sha, inline): (Option<String>, Option<Arc<[u8]>>) = match raw {
                None => (None, None),
                Some(Blob::Bytes(raw)) => {
                    let sha = kiroku_common::sha256_hex(&raw);
                    if raw.len() as u64 <= this.inline_max.load(Ordering::Relaxed) {
                        (Some(sha), Some(raw))
                    } else {
                        delta.files = this.write_blob(&sha, &raw)? as i64;
                        (Some(sha), None)
                    }
                }
                Some(Blob::Spooled(mut sp)) => match sp.inline.take() {
                    Some(raw) => (Some(std::mem::take(&mut sp.sha256)), Some(raw)),
                    None => {
                        let (sha, added) = this.adopt_blob(sp)?;
                        delta.files = added as i64;
                        (Some(sha), None)
                    }
                },
            };
            let (id, inline_added) = this.with_store(|s| {
                let id = s.db.generate_id().map_err(|e| this.sled_err(e))?;
                let added = (&s.inflight, &s.blobrefs, &s.smallblobs)
                    .transaction(|(inflight, blobrefs, smallblobs)| -> SledTx<u64> {
                        let mut added = 0;
                        if let Some(sha) = &sha {
                            let refs = read_u64(blobrefs.get(sha.as_bytes())?.as_deref());
                            blobrefs.insert(sha.as_bytes(), &(refs + 1).to_be_bytes())?;
                            if let Some(raw) = &inline
                                && refs == 0
                            {
                                smallblobs.insert(sha.as_bytes(), raw.as_ref())?;
                                added = raw.len() as u64;
                            }
                        }
                        inflight.insert(&id.to_be_bytes(), bytes.as_slice())?;
                        Ok(added)
                    })
                    .map_err(|e| this.tx_err(e))?;
                Ok((id, added))
            })?;
            delta.inline = inline_added as i64;
            this.ledger.apply(delta);
            this.live_inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id);
            Ok(id)
        };
        let id = self.blocking(task).await?;
        if let Err(e) = self.flush(epoch).await {
            // Not durable: the session gives up on it; a reopen or the next
            // start recovers whatever reached the disk. A reopen that ran
            // between the write and this failure skipped it as live, so
            // it is recovered now if the buffer is open (else at the next
            // reopen): never stranded in `inflight` until a restart.
            self.forget_inflight(id);
            let this = self.clone();
            let _ = self
                .blocking(move || this.with_store(|s| this.recover_inflight(s)))
                .await;
            return Err(e);
        }
        Ok(InflightId(id))
    }

    fn forget_inflight(&self, id: u64) {
        self.live_inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// Completes an in-flight record with `update` (the outcome) and queues
    /// it for shipping under the next sequence number. Durable on return.
    pub async fn finish(
        self: &Arc<Self>,
        id: InflightId,
        update: impl FnOnce(&mut Event),
    ) -> Result<u64, BufferError> {
        let settled = self.settle(id, update)?;
        self.make_durable(settled).await
    }

    /// The first half of [`Buffer::finish`]: the outcome is committed (in
    /// memory; the shipper does not see it yet) but not flushed. A crash
    /// before [`Buffer::make_durable`] returns leaves the in-flight record,
    /// recovered with outcome `unknown` (at the next start, or when the
    /// buffer reopens after a write error). The relay uses it to send its
    /// reply while the flush runs.
    pub fn settle(
        &self,
        id: InflightId,
        update: impl FnOnce(&mut Event),
    ) -> Result<Settled, BufferError> {
        let epoch = self.reopens.load(Ordering::SeqCst);
        let key = id.0.to_be_bytes();
        let r = self.with_store(|s| {
            let Some(bytes) = s.inflight.get(key).map_err(|e| self.sled_err(e))? else {
                return Err(BufferError::Corrupt {
                    path: self.dir.clone(),
                    key: format!("inflight/{}", id.0),
                    message: "in-flight record vanished".into(),
                });
            };
            let mut event = self.decode(&bytes, &format!("inflight/{}", id.0))?;
            update(&mut event);
            self.move_to_queue(s, &key, bytes.len(), &event)
        });
        // Settled or not, the session is done with it.
        self.forget_inflight(id.0);
        Ok(Settled { seq: r?, epoch })
    }

    /// The second half of [`Buffer::finish`]: flushes (group commit) and
    /// hands the event to the shipper. Returns its sequence number.
    pub async fn make_durable(self: &Arc<Self>, settled: Settled) -> Result<u64, BufferError> {
        let Settled { seq, epoch } = settled;
        self.flush(epoch).await?;
        // One flush covers every transaction committed before it, and
        // sequence numbers are assigned in commit order.
        self.ledger.durable_seq.fetch_max(seq, Ordering::SeqCst);
        self.appended.notify_one();
        Ok(seq)
    }

    /// Records an event whose outcome is already known. Durable on return.
    pub async fn append(
        self: &Arc<Self>,
        event: &Event,
        raw: Option<Blob>,
    ) -> Result<u64, BufferError> {
        let id = self.begin(event, raw).await?;
        self.finish(id, |_| {}).await
    }

    /// Records `event` unless `decide` says not to, in one transaction with
    /// what `decide` writes to `state` (a capture source's keyed state,
    /// e.g. file capture's last known state of each file), so the record
    /// and that state are durable together or not at all. `decide` may run
    /// more than once (transaction retries) and must only touch `state`.
    /// Returns the sequence number (None: not recorded) and what `decide`
    /// returned. Durable on return.
    pub async fn append_with<T, F>(
        self: &Arc<Self>,
        event: Event,
        state: &KeyedState,
        decide: F,
    ) -> Result<(Option<u64>, T), BufferError>
    where
        T: Send + 'static,
        F: Fn(&StateTx<'_>) -> TxResult<(bool, T)> + Send + 'static,
    {
        self.check_space()?;
        let epoch = self.reopens.load(Ordering::SeqCst);
        let this = self.clone();
        let name = state.name().to_owned();
        let task = move || -> Result<(Option<(u64, usize)>, T), BufferError> {
            this.with_store(|s| {
                let aux = s.db.open_tree(&name).map_err(|e| this.sled_err(e))?;
                (&s.queue, &s.meta, &aux)
                    .transaction(|(queue, meta, aux)| {
                        let (record, t) = decide(&StateTx(aux)).map_err(|e| e.0)?;
                        if !record {
                            return Ok((None, t));
                        }
                        Ok((Some(this.queue_in_tx(queue, meta, &event)?), t))
                    })
                    .map_err(|e| this.tx_err(e))
            })
        };
        let (queued, t) = self.blocking(task).await?;
        let seq = queued.map(|(seq, len)| {
            self.ledger.apply(Delta {
                queued: len as i64,
                ..Default::default()
            });
            seq
        });
        if let Some(seq) = seq {
            self.make_durable(Settled { seq, epoch }).await?;
        }
        Ok((seq, t))
    }

    /// Like [`Buffer::append_with`] for several records at once (issue 20,
    /// the MTA log follower: a batch of log lines and the file position
    /// after them): all of `events` and what `decide` writes to `state`
    /// are durable together or not at all, in order, with one flush.
    /// Returns the last sequence number (None for an empty batch).
    pub async fn append_batch_with<F>(
        self: &Arc<Self>,
        events: Vec<Event>,
        state: &KeyedState,
        decide: F,
    ) -> Result<Option<u64>, BufferError>
    where
        F: Fn(&StateTx<'_>) -> TxResult<()> + Send + 'static,
    {
        self.check_space()?;
        let epoch = self.reopens.load(Ordering::SeqCst);
        let this = self.clone();
        let name = state.name().to_owned();
        let task = move || -> Result<(Option<u64>, usize), BufferError> {
            this.with_store(|s| {
                let aux = s.db.open_tree(&name).map_err(|e| this.sled_err(e))?;
                (&s.queue, &s.meta, &aux)
                    .transaction(|(queue, meta, aux)| {
                        decide(&StateTx(aux)).map_err(|e| e.0)?;
                        let mut last = None;
                        let mut bytes = 0;
                        for event in &events {
                            let (seq, len) = this.queue_in_tx(queue, meta, event)?;
                            last = Some(seq);
                            bytes += len;
                        }
                        Ok((last, bytes))
                    })
                    .map_err(|e| this.tx_err(e))
            })
        };
        let (last, bytes) = self.blocking(task).await?;
        self.ledger.apply(Delta {
            queued: bytes as i64,
            ..Default::default()
        });
        if let Some(seq) = last {
            self.make_durable(Settled { seq, epoch }).await?;
        }
        Ok(last)
    }

    /// Updates a small note kept in the `meta` tree under `key` (e.g. a
    /// pending gap record) with `update` (old value → new value), outside
    /// the bound: notes are how the agent remembers what it could not
    /// record. With [`Durability::Now`] it is on disk on return; with
    /// [`Durability::Soon`] sled writes it within a second.
    pub async fn note(
        self: &Arc<Self>,
        key: &str,
        durability: Durability,
        update: impl Fn(Option<&[u8]>) -> Vec<u8>,
    ) -> Result<(), BufferError> {
        self.writable()?;
        let epoch = self.reopens.load(Ordering::SeqCst);
        let key = note_key(key);
        self.with_store(|s| {
            s.meta
                .update_and_fetch(key.as_bytes(), |old| Some(update(old)))
                .map_err(|e| self.sled_err(e))
        })?;
        if durability == Durability::Now {
            self.flush(epoch).await?;
        }
        Ok(())
    }

    /// Turns the note under `key` into a queued event (`make` builds it
    /// from the note; None leaves the note) and removes the note, in one
    /// transaction. Refused with [`BufferError::Full`] while the buffer is
    /// at its bound. Returns the event's sequence number, None when there
    /// was no note. Durable on return.
    pub async fn take_note(
        self: &Arc<Self>,
        key: &str,
        make: impl Fn(&[u8]) -> Option<Event>,
    ) -> Result<Option<u64>, BufferError> {
        let key = note_key(key);
        let exists = self.with_store(|s| {
            s.meta
                .contains_key(key.as_bytes())
                .map_err(|e| self.sled_err(e))
        });
        if !exists? {
            return Ok(None);
        }
        self.check_space()?;
        let epoch = self.reopens.load(Ordering::SeqCst);
        let queued = self.with_store(|s| {
            (&s.queue, &s.meta)
                .transaction(|(queue, meta)| -> SledTx<Option<(u64, usize)>> {
                    let Some(note) = meta.get(key.as_bytes())? else {
                        return Ok(None);
                    };
                    let Some(event) = make(&note) else {
                        return Ok(None);
                    };
                    meta.remove(key.as_bytes())?;
                    Ok(Some(self.queue_in_tx(queue, meta, &event)?))
                })
                .map_err(|e| self.tx_err(e))
        })?;
        let Some((seq, len)) = queued else {
            return Ok(None);
        };
        self.ledger.apply(Delta {
            queued: len as i64,
            ..Default::default()
        });
        self.make_durable(Settled { seq, epoch }).await?;
        Ok(Some(seq))
    }

    /// Inside a transaction: queues `event` under the next sequence number,
    /// linked to the stream's hash chain (see `buffer/chain.rs`): its
    /// `prev_hash` (or `chain_restart`) is set here, with the number, so
    /// the queued bytes are final when durable. Every queued event passes
    /// here. Returns the number and the encoded size.
    fn queue_in_tx(
        &self,
        queue: &sled::transaction::TransactionalTree,
        meta: &sled::transaction::TransactionalTree,
        event: &Event,
    ) -> SledTx<(u64, usize)> {
        let seq = read_u64(meta.get(NEXT_SEQ)?.as_deref()).max(1);
        let (prev_hash, chain_restart) = chain::link_in_tx(queue, meta, seq)?;
        let mut e = event.clone();
        e.seq = seq;
        e.stream_id = self.stream_id();
        e.prev_hash = prev_hash;
        e.chain_restart = chain_restart;
        let bytes = e.encode_to_vec();
        queue.insert(&seq.to_be_bytes(), bytes.as_slice())?;
        meta.insert(NEXT_SEQ, &(seq + 1).to_be_bytes())?;
        chain::advance_in_tx(meta, seq, &bytes)?;
        Ok((seq, bytes.len()))
    }

    /// Moves an in-flight record (`old_len` bytes) to the queue.
    pub(super) fn move_to_queue(
        &self,
        s: &Store,
        inflight_key: &[u8],
        old_len: usize,
        event: &Event,
    ) -> Result<u64, BufferError> {
        let (seq, len) = (&s.queue, &s.inflight, &s.meta)
            .transaction(|(queue, inflight, meta)| -> SledTx<(u64, usize)> {
                let r = self.queue_in_tx(queue, meta, event)?;
                inflight.remove(inflight_key)?;
                Ok(r)
            })
            .map_err(|e| self.tx_err(e))?;
        self.ledger.apply(Delta {
            queued: len as i64,
            inflight: -(old_len as i64),
            ..Default::default()
        });
        Ok(seq)
    }

    /// Moves every in-flight record that no session will settle (left by a
    /// crash, or by a session whose write failed before a reopen) to the
    /// queue. Their outcome stays `unknown` (the proto default): we cannot
    /// know whether the upstream took the mail.
    pub(super) fn recover_inflight(&self, s: &Store) -> Result<(), BufferError> {
        let live = self
            .live_inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut n = 0;
        for item in s.inflight.iter() {
            let (k, v) = item.map_err(|e| self.sled_err(e))?;
            if live.contains(&read_u64(Some(&k))) {
                continue;
            }
            let event = self.decode(&v, "inflight")?;
            let seq = self.move_to_queue(s, &k, v.len(), &event)?;
            tracing::warn!(
                seq,
                "recovered a mail recorded before a crash or a write error; its delivery outcome is unknown"
            );
            n += 1;
        }
        if n > 0 {
            s.db.flush().map_err(|e| self.sled_err(e))?;
        }
        Ok(())
    }

    /// For tests: makes the buffer behave as after a write error sled
    /// reported (it refuses writes until reopened).
    #[cfg(test)]
    pub(super) fn inject_write_error(&self, why: &str) {
        *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.to_owned());
    }
}
