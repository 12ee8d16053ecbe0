//! Keyed state: a capture source's own small key → value memory kept in
//! the buffer's database (file capture's last known state of each file,
//! its hash memory), named by a tree name. Every operation goes through
//! the buffer, so the state follows the buffer when it reopens its
//! database or moves to a fresh generation, and no sled type leaves this
//! module. Written without the buffer's fsync guarantees (sled flushes
//! within a second), except together with a record
//! ([`Buffer::append_with`]), where both are durable together.

use std::sync::Arc;

use sled::transaction::{
    ConflictableTransactionError, TransactionError, TransactionalTree, UnabortableTransactionError,
};

use super::{Buffer, BufferError};

/// A sled transaction's closure result inside the buffer.
pub(super) type SledTx<T> = Result<T, ConflictableTransactionError<String>>;

/// An error inside a keyed-state transaction ([`StateTx`]); propagate it
/// with `?`.
#[derive(Debug)]
pub struct TxError(pub(super) ConflictableTransactionError<String>);

impl From<UnabortableTransactionError> for TxError {
    fn from(e: UnabortableTransactionError) -> TxError {
        TxError(e.into())
    }
}

impl TxError {
    /// Aborts the transaction: nothing it wrote is kept, and the call
    /// fails with a `Corrupt` error carrying `message`.
    pub fn abort(message: impl Into<String>) -> TxError {
        TxError(ConflictableTransactionError::Abort(message.into()))
    }
}

/// The result of a closure run inside a keyed-state transaction.
pub type TxResult<T> = Result<T, TxError>;

/// A keyed state's view inside a transaction with a record.
pub struct StateTx<'a>(pub(super) &'a TransactionalTree);

impl StateTx<'_> {
    pub fn get(&self, key: impl AsRef<[u8]>) -> TxResult<Option<Vec<u8>>> {
        Ok(self.0.get(key.as_ref())?.map(|v| v.to_vec()))
    }

    /// Sets `key`; returns the previous value.
    pub fn insert(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> TxResult<Option<Vec<u8>>> {
        Ok(self
            .0
            .insert(key.as_ref(), value.as_ref())?
            .map(|v| v.to_vec()))
    }

    /// Removes `key`; returns the value it had.
    pub fn remove(&self, key: impl AsRef<[u8]>) -> TxResult<Option<Vec<u8>>> {
        Ok(self.0.remove(key.as_ref())?.map(|v| v.to_vec()))
    }
}

/// One capture source's keyed state (see the module documentation).
#[derive(Clone)]
pub struct KeyedState {
    buffer: Arc<Buffer>,
    name: String,
}

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

impl Buffer {
    /// The keyed state named `name` (a tree of the buffer's database other
    /// than the buffer's own).
    pub fn keyed_state(self: &Arc<Self>, name: &str) -> KeyedState {
        KeyedState {
            buffer: self.clone(),
            name: name.to_owned(),
        }
    }

    pub(super) fn tx_err(&self, e: TransactionError<String>) -> BufferError {
        match e {
            TransactionError::Storage(source) => self.sled_err(source),
            TransactionError::Abort(message) => BufferError::Corrupt {
                path: self.dir.clone(),
                key: "transaction".into(),
                message,
            },
        }
    }
}

impl KeyedState {
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// Runs `f` on this state's tree in the current generation.
    fn tree<T>(&self, f: impl FnOnce(&sled::Tree) -> sled::Result<T>) -> Result<T, BufferError> {
        let b = &self.buffer;
        b.with_store(|s| {
            let tree = s.db.open_tree(&self.name).map_err(|e| b.sled_err(e))?;
            f(&tree).map_err(|e| b.sled_err(e))
        })
    }

    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, BufferError> {
        self.tree(|t| Ok(t.get(key.as_ref())?.map(|v| v.to_vec())))
    }

    pub fn contains_key(&self, key: impl AsRef<[u8]>) -> Result<bool, BufferError> {
        self.tree(|t| t.contains_key(key.as_ref()))
    }

    /// Sets `key`; returns the previous value.
    pub fn insert(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<Option<Vec<u8>>, BufferError> {
        self.tree(|t| Ok(t.insert(key.as_ref(), value.as_ref())?.map(|v| v.to_vec())))
    }

    /// Sets `key` only if it has no value; returns whether it did.
    pub fn insert_new(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<bool, BufferError> {
        self.tree(|t| {
            Ok(
                t.compare_and_swap(key.as_ref(), None::<&[u8]>, Some(value.as_ref()))?
                    .is_ok(),
            )
        })
    }

    /// Removes `key`; returns the value it had.
    pub fn remove(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, BufferError> {
        self.tree(|t| Ok(t.remove(key.as_ref())?.map(|v| v.to_vec())))
    }

    /// Number of keys (0 while the buffer is closed).
    pub fn len(&self) -> usize {
        self.tree(|t| Ok(t.len())).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entry with the highest key.
    pub fn last(&self) -> Result<Option<Entry>, BufferError> {
        self.tree(|t| Ok(t.last()?.map(|(k, v)| (k.to_vec(), v.to_vec()))))
    }

    /// Removes and returns the entry with the lowest key.
    pub fn pop_min(&self) -> Result<Option<Entry>, BufferError> {
        self.tree(|t| Ok(t.pop_min()?.map(|(k, v)| (k.to_vec(), v.to_vec()))))
    }

    /// Every key starting with `prefix`, in order.
    pub fn keys_with_prefix(&self, prefix: impl AsRef<[u8]>) -> Result<Vec<Vec<u8>>, BufferError> {
        self.tree(|t| {
            t.scan_prefix(prefix.as_ref())
                .keys()
                .map(|k| k.map(|k| k.to_vec()))
                .collect()
        })
    }
}
