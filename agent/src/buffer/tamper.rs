//! TEST-ONLY: rewriting a queued event in place, as someone with root on
//! the agent host could while the agent is stopped. Compiled only with the
//! agent's `test-hooks` feature (see `src/test_hooks.rs`): the evidence
//! tests need a rewrite that goes through sled's own API (a raw byte edit
//! of sled's files trips sled's checksums, which tests something else),
//! and a production agent must never ship a way to rewrite its buffer.

use kiroku_proto::Event;
use prost::Message;

use super::{Buffer, BufferError};

impl Buffer {
    /// Decodes the queued event `seq`, lets `edit` change it, re-encodes it
    /// and writes it back under the same key, durably. The stream chain is
    /// deliberately NOT fixed: neither this event's `prev_hash`, nor the
    /// next event's, nor the head in `meta`. Returns the SHA-256 (hex) of
    /// the bytes before and after.
    pub fn rewrite_queued(
        &self,
        seq: u64,
        edit: impl FnOnce(&mut Event) -> Result<(), String>,
    ) -> Result<(String, String), BufferError> {
        let key = format!("queue/{seq}");
        self.with_store(|s| {
            let err = |e| self.sled_err(e);
            let Some(old) = s.queue.get(seq.to_be_bytes()).map_err(err)? else {
                return Err(BufferError::Corrupt {
                    path: self.dir.clone(),
                    key: key.clone(),
                    message: "no queued event under this sequence number (already shipped and acknowledged?)".into(),
                });
            };
            let mut event = self.decode(&old, &key)?;
            edit(&mut event).map_err(|message| BufferError::Corrupt {
                path: self.dir.clone(),
                key: key.clone(),
                message,
            })?;
            let new = event.encode_to_vec();
            s.queue
                .insert(seq.to_be_bytes(), new.as_slice())
                .map_err(err)?;
            s.db.flush().map_err(err)?;
            Ok((kiroku_common::sha256_hex(&old), kiroku_common::sha256_hex(&new)))
        })
    }
}
