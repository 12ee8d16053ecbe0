//! Collector metadata in sled: per-(agent, stream) high-water sequence
//! numbers (the exactly-once guarantee) and, next to them, the stream's
//! hash chain state (issue 18: the last stored event's hash, the head the
//! agent last reported), and known hosts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kiroku_proto::HostInfo;
use prost::Message;

#[derive(Debug, thiserror::Error)]
#[error("collector metadata {path}: {source}")]
pub struct MetaError {
    path: PathBuf,
    source: sled::Error,
}

/// What the collector knows of a stream's hash chain (`ingest/chain.rs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChainState {
    /// The newest stored event's sequence number.
    pub seq: u64,
    /// The SHA-256 of its recorded bytes, when the agent sent them as
    /// recorded (none for an older agent's re-encoded event).
    pub hash: Option<[u8; 32]>,
    /// An event of the stream carried a `prev_hash`: from then on one
    /// without is reported.
    pub chained: bool,
    /// The head the agent reported for a sequence number not stored yet:
    /// checked when that event arrives.
    pub pending: Option<(u64, [u8; 32])>,
}

impl ChainState {
    const LEN: usize = 8 + 1 + 32 + 8 + 32;

    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(Self::LEN);
        v.extend_from_slice(&self.seq.to_be_bytes());
        let flags = u8::from(self.hash.is_some())
            | u8::from(self.chained) << 1
            | u8::from(self.pending.is_some()) << 2;
        v.push(flags);
        v.extend_from_slice(&self.hash.unwrap_or_default());
        let (pseq, phash) = self.pending.unwrap_or_default();
        v.extend_from_slice(&pseq.to_be_bytes());
        v.extend_from_slice(&phash);
        v
    }

    fn decode(v: &[u8]) -> Option<ChainState> {
        if v.len() != Self::LEN {
            return None;
        }
        let u64_at = |at: usize| v[at..at + 8].try_into().ok().map(u64::from_be_bytes);
        let hash_at = |at: usize| <[u8; 32]>::try_from(&v[at..at + 32]).ok();
        let flags = v[8];
        Some(ChainState {
            seq: u64_at(0)?,
            hash: if flags & 1 != 0 { hash_at(9) } else { None },
            chained: flags & 2 != 0,
            pending: if flags & 4 != 0 {
                Some((u64_at(41)?, hash_at(49)?))
            } else {
                None
            },
        })
    }
}

/// Cheap to clone: every clone is a handle on the same database (the
/// audit log keeps one to note its head after each entry).
#[derive(Clone)]
pub struct MetaStore {
    /// Open Ship streams per agent (not persisted: a restart has none).
    live: Arc<Mutex<HashMap<String, usize>>>,
    path: PathBuf,
    db: sled::Db,
    streams: sled::Tree,
    /// Per stream: [`ChainState`] (same keys as `streams`).
    chains: sled::Tree,
    hosts: sled::Tree,
    /// Which identity uploaded which blob (`MetaStore::note_uploader`).
    uploaders: sled::Tree,
    /// The first I/O error sled reported. sled does not recover from one
    /// in-process (every later call returns it, even after space is back).
    failed: Arc<Mutex<Option<String>>>,
}

impl MetaStore {
    pub fn open(path: &Path) -> Result<MetaStore, MetaError> {
        let err = |source| MetaError {
            path: path.to_owned(),
            source,
        };
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(64 * 1024 * 1024)
            .open()
            .map_err(err)?;
        Ok(MetaStore {
            live: Arc::default(),
            path: path.to_owned(),
            streams: db.open_tree("streams").map_err(err)?,
            chains: db.open_tree("chains").map_err(err)?,
            hosts: db.open_tree("hosts").map_err(err)?,
            uploaders: db.open_tree(BLOB_UPLOADERS).map_err(err)?,
            db,
            failed: Arc::default(),
        })
    }

    fn err(&self, source: sled::Error) -> MetaError {
        if matches!(source, sled::Error::Io(_)) {
            let mut f = self.failed.lock().unwrap_or_else(|p| p.into_inner());
            if f.is_none() {
                *f = Some(source.to_string());
            }
        }
        MetaError {
            path: self.path.clone(),
            source,
        }
    }

    fn stream_key(agent_id: &str, stream_id: &str) -> Vec<u8> {
        format!("{agent_id}\0{stream_id}").into_bytes()
    }

    /// Highest sequence number of the stream stored durably (0 = none).
    pub fn stored_seq(&self, agent_id: &str, stream_id: &str) -> Result<u64, MetaError> {
        Ok(self
            .streams
            .get(Self::stream_key(agent_id, stream_id))
            .map_err(|e| self.err(e))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0))
    }

    pub fn set_stored_seq(
        &self,
        agent_id: &str,
        stream_id: &str,
        seq: u64,
    ) -> Result<(), MetaError> {
        self.streams
            .insert(Self::stream_key(agent_id, stream_id), &seq.to_be_bytes())
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The stream's hash chain state (default: nothing known, e.g. a
    /// stream stored before issue 18).
    pub fn chain(&self, agent_id: &str, stream_id: &str) -> Result<ChainState, MetaError> {
        Ok(self
            .chains
            .get(Self::stream_key(agent_id, stream_id))
            .map_err(|e| self.err(e))?
            .and_then(|v| ChainState::decode(&v))
            .unwrap_or_default())
    }

    /// Stored with the high-water marks (made durable by [`MetaStore::flush`]).
    pub fn set_chain(
        &self,
        agent_id: &str,
        stream_id: &str,
        state: &ChainState,
    ) -> Result<(), MetaError> {
        self.chains
            .insert(Self::stream_key(agent_id, stream_id), state.encode())
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The head of every agent stream whose last stored event's hash is
    /// known (for checkpoints): agent, stream, seq, SHA-256.
    pub fn stream_heads(&self) -> Result<Vec<kiroku_proto::StreamHead>, MetaError> {
        let mut heads = Vec::new();
        for kv in self.chains.iter() {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            let key = String::from_utf8_lossy(&k);
            let (Some((agent, stream)), Some(state)) =
                (key.split_once('\0'), ChainState::decode(&v))
            else {
                continue;
            };
            if let Some(h) = state.hash {
                heads.push(kiroku_proto::StreamHead {
                    agent_id: agent.to_owned(),
                    stream_id: stream.to_owned(),
                    seq: state.seq,
                    sha256: h.to_vec(),
                });
            }
        }
        Ok(heads)
    }

    pub fn host(&self, agent_id: &str) -> Result<Option<HostInfo>, MetaError> {
        Ok(self
            .hosts
            .get(agent_id.as_bytes())
            .map_err(|e| self.err(e))?
            .and_then(|v| HostInfo::decode(v.as_ref()).ok()))
    }

    pub fn put_host(&self, info: &HostInfo) -> Result<(), MetaError> {
        self.hosts
            .insert(info.agent_id.as_bytes(), info.encode_to_vec())
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Known hosts, `connected` set for those with an open Ship stream.
    pub fn hosts(&self) -> Result<Vec<HostInfo>, MetaError> {
        let live = self.live.lock().map(|l| l.clone()).unwrap_or_default();
        self.hosts
            .iter()
            .values()
            .map(|v| {
                v.map_err(|e| self.err(e)).map(|v| {
                    let mut h = HostInfo::decode(v.as_ref()).unwrap_or_default();
                    h.connected = live.get(&h.agent_id).is_some_and(|n| *n > 0);
                    h
                })
            })
            .collect()
    }

    /// Marks `agent_id` connected until the guard is dropped.
    pub fn connected(&self, agent_id: &str) -> Connected {
        if let Ok(mut l) = self.live.lock() {
            *l.entry(agent_id.to_owned()).or_default() += 1;
        }
        Connected {
            live: self.live.clone(),
            agent_id: agent_id.to_owned(),
        }
    }

    /// A tree of its own for another component (alerts), flushed with the
    /// rest by [`MetaStore::flush`].
    pub fn tree(&self, name: &str) -> Result<sled::Tree, MetaError> {
        self.db.open_tree(name).map_err(|e| self.err(e))
    }

    /// Notes that `uploader` (an identity, `role/name`) sent the blob
    /// `sha`. Not flushed by itself: a note lost in a crash only makes
    /// that agent upload the blob once more.
    pub fn note_uploader(&self, uploader: &str, sha: &str) -> Result<(), MetaError> {
        self.uploaders
            .insert(uploader_key(uploader, sha), &[])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Whether `uploader` sent the blob `sha` (see [`MetaStore::note_uploader`]).
    pub fn uploaded_by(&self, uploader: &str, sha: &str) -> Result<bool, MetaError> {
        self.uploaders
            .contains_key(uploader_key(uploader, sha))
            .map_err(|e| self.err(e))
    }

    /// Notes that blob `sha` was claimed at `now_ms` (an agent was told the
    /// collector holds it, or uploaded it): a purge spares a blob claimed
    /// in the last day (`store/purge.rs`). Not flushed by itself.
    pub fn claim_blob(&self, sha: &str, now_ms: i64) -> Result<(), MetaError> {
        self.db
            .open_tree(BLOB_CLAIMS)
            .and_then(|t| t.insert(sha.as_bytes(), &now_ms.to_be_bytes()))
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// When blob `sha` was last claimed ([`MetaStore::claim_blob`]).
    pub fn blob_claimed_ms(&self, sha: &str) -> Result<Option<i64>, MetaError> {
        let v = self
            .db
            .open_tree(BLOB_CLAIMS)
            .and_then(|t| t.get(sha.as_bytes()))
            .map_err(|e| self.err(e))?;
        Ok(v.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok().map(i64::from_be_bytes)))
    }

    /// Forgets the claims of a removed blob.
    pub fn unclaim_blob(&self, sha: &str) -> Result<(), MetaError> {
        self.db
            .open_tree(BLOB_CLAIMS)
            .and_then(|t| t.remove(sha.as_bytes()))
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Remembers the audit log's newest (sequence, hash).
    pub fn set_audit_head(&self, seq: u64, hash: &str) -> Result<(), MetaError> {
        let mut v = seq.to_be_bytes().to_vec();
        v.extend_from_slice(hash.as_bytes());
        self.db.insert(b"audit_head", v).map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The SHA-256 (hex) of the certificate `agent_id` last connected
    /// with, noted by [`MetaStore::note_agent_cert`].
    pub fn agent_cert(&self, agent_id: &str) -> Result<Option<String>, MetaError> {
        Ok(self
            .db
            .get(format!("agent_cert\0{agent_id}"))
            .map_err(|e| self.err(e))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub fn note_agent_cert(&self, agent_id: &str, sha256: &str) -> Result<(), MetaError> {
        self.db
            .insert(format!("agent_cert\0{agent_id}"), sha256.as_bytes())
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The audit log's newest (sequence, hash) as last written.
    pub fn audit_head(&self) -> Result<Option<(u64, String)>, MetaError> {
        Ok(self
            .db
            .get(b"audit_head")
            .map_err(|e| self.err(e))?
            .and_then(|v| {
                let seq = u64::from_be_bytes(v.get(..8)?.try_into().ok()?);
                Some((seq, String::from_utf8_lossy(&v[8..]).into_owned()))
            }))
    }

    /// fsync.
    /// The I/O error that broke this store, if one did: sled refuses
    /// every later write, so the process must restart to go on.
    pub fn failed(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn flush(&self) -> Result<(), MetaError> {
        self.db.flush().map_err(|e| self.err(e))?;
        Ok(())
    }
}

/// Tree of (uploader, blob) pairs: an agent is told only about blobs it
/// uploaded itself, so `MissingBlobs`, `PutBlob` and the Ack cannot tell
/// it whether some other host's content is stored.
const BLOB_UPLOADERS: &str = "blob_uploaders";
/// Blob hash → when an agent last claimed it (ms, i64 BE).
const BLOB_CLAIMS: &str = "blob_claims";

fn uploader_key(uploader: &str, sha: &str) -> Vec<u8> {
    let mut k = uploader.as_bytes().to_vec();
    k.push(b'\n');
    k.extend_from_slice(sha.as_bytes());
    k
}

/// An open Ship stream; see [`MetaStore::connected`].
pub struct Connected {
    live: Arc<Mutex<HashMap<String, usize>>>,
    agent_id: String,
}

impl Drop for Connected {
    fn drop(&mut self) {
        if let Ok(mut l) = self.live.lock()
            && let Some(n) = l.get_mut(&self.agent_id)
        {
            *n = n.saturating_sub(1);
        }
    }
}
