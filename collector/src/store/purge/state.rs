//! What a purge has promised and not finished yet, in the metadata (meta
//! trees `purge_pending` and `purge_state`), so that a purge cut short by
//! a crash is finished by the next purge or at open (idempotent steps).
//!
//! - `purge_pending`: journal leaf (u64 BE) of a record to replace by a
//!   stub → its segment, the SHA-256 of its payload, its tombstone's leaf
//!   once appended, the event's id and recorded SHA-256, the reason and
//!   who purged (what the tombstone says).
//! - `purge_state`: `intent_from` (the journal's end before the tombstones
//!   were appended: where to look for them after a crash), `audit` (the
//!   admin audit entry still to write), `blob/<sha>` (blobs to remove once
//!   nothing live names them), `rewrite/<segment>` (a segment being
//!   rewritten: where each checkpoint position in it is, by leaf).

use crate::store::journal::Position;
use crate::store::meta::{MetaError, MetaStore};

/// One journal record promised to a stub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    pub leaf: u64,
    pub segment: u64,
    pub entry_sha256: [u8; 32],
    /// The tombstone's own leaf, once it is in the journal.
    pub tombstone: Option<u64>,
    pub recorded_sha256: Vec<u8>,
    pub event_id: String,
    pub reason: String,
    pub by: String,
    /// The record's bytes on disk (what its stub frees, roughly).
    pub bytes: u64,
    /// The raw message blob the record's event names (empty: none); the
    /// blob is not removed while a record naming it is not a stub yet.
    pub blob: String,
    /// The event is out of the index already.
    pub index_done: bool,
}

/// A checkpoint ledger position inside a segment being rewritten, by
/// what does not move: the leaf of the record that ends there (or, for a
/// position before any entry, its offset).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Anchor {
    pub checkpoint: u64,
    /// The record's `end` (else its `start`).
    pub end: bool,
    pub at: AnchorAt,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnchorAt {
    /// Just after the record of this leaf.
    AfterLeaf(u64),
    /// This offset (before any stub: it does not move).
    Offset(u64),
}

/// The admin audit entry a purge still has to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditDue {
    pub identity: String,
    pub call: String,
    pub detail: String,
}

pub struct State {
    pending: sled::Tree,
    state: sled::Tree,
}

const NONE: u64 = u64::MAX;

fn put_str(v: &mut Vec<u8>, s: &[u8]) {
    v.extend_from_slice(&(s.len() as u32).to_be_bytes());
    v.extend_from_slice(s);
}

fn take<'a>(v: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (a, b) = (v.get(..n)?, v.get(n..)?);
    *v = b;
    Some(a)
}

fn take_u64(v: &mut &[u8]) -> Option<u64> {
    take(v, 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
}

fn take_str(v: &mut &[u8]) -> Option<Vec<u8>> {
    let n = u32::from_be_bytes(take(v, 4)?.try_into().ok()?) as usize;
    take(v, n).map(<[u8]>::to_vec)
}

fn text(b: Vec<u8>) -> String {
    String::from_utf8_lossy(&b).into_owned()
}

impl Pending {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&self.segment.to_be_bytes());
        v.extend_from_slice(&self.entry_sha256);
        v.extend_from_slice(&self.tombstone.unwrap_or(NONE).to_be_bytes());
        put_str(&mut v, &self.recorded_sha256);
        put_str(&mut v, self.event_id.as_bytes());
        put_str(&mut v, self.reason.as_bytes());
        put_str(&mut v, self.by.as_bytes());
        v.extend_from_slice(&self.bytes.to_be_bytes());
        put_str(&mut v, self.blob.as_bytes());
        v.push(u8::from(self.index_done));
        v
    }

    fn decode(leaf: u64, mut v: &[u8]) -> Option<Pending> {
        let segment = take_u64(&mut v)?;
        let entry_sha256 = take(&mut v, 32)?.try_into().ok()?;
        let t = take_u64(&mut v)?;
        Some(Pending {
            leaf,
            segment,
            entry_sha256,
            tombstone: (t != NONE).then_some(t),
            recorded_sha256: take_str(&mut v)?,
            event_id: text(take_str(&mut v)?),
            reason: text(take_str(&mut v)?),
            by: text(take_str(&mut v)?),
            bytes: take_u64(&mut v)?,
            blob: text(take_str(&mut v)?),
            index_done: take(&mut v, 1)?[0] == 1,
        })
    }
}

impl State {
    pub fn open(meta: &MetaStore) -> Result<State, MetaError> {
        Ok(State {
            pending: meta.tree("purge_pending")?,
            state: meta.tree("purge_state")?,
        })
    }

    fn err(e: sled::Error) -> anyhow::Error {
        anyhow::anyhow!(
            "the purge's records in the metadata (meta/, trees purge_pending and purge_state): {e}"
        )
    }

    pub fn put(&self, p: &Pending) -> anyhow::Result<()> {
        self.pending
            .insert(p.leaf.to_be_bytes(), p.encode())
            .map_err(Self::err)?;
        Ok(())
    }

    pub fn remove(&self, leaf: u64) -> anyhow::Result<()> {
        self.pending.remove(leaf.to_be_bytes()).map_err(Self::err)?;
        Ok(())
    }

    pub fn has(&self, leaf: u64) -> anyhow::Result<bool> {
        self.pending
            .contains_key(leaf.to_be_bytes())
            .map_err(Self::err)
    }

    /// Every pending record, by leaf.
    pub fn all(&self) -> anyhow::Result<Vec<Pending>> {
        let mut out = Vec::new();
        for kv in self.pending.iter() {
            let (k, v) = kv.map_err(Self::err)?;
            let leaf = <[u8; 8]>::try_from(k.as_ref()).map(u64::from_be_bytes);
            match leaf.ok().and_then(|l| Pending::decode(l, &v)) {
                Some(p) => out.push(p),
                None => anyhow::bail!(
                    "a pending purge record in the metadata (tree purge_pending) does not decode; the metadata is damaged: run `kiroku-collector repair`"
                ),
            }
        }
        Ok(out)
    }

    pub fn set_intent_from(&self, at: Option<Position>) -> anyhow::Result<()> {
        match at {
            Some(p) => {
                let mut v = p.segment.to_be_bytes().to_vec();
                v.extend_from_slice(&p.offset.to_be_bytes());
                self.state.insert("intent_from", v).map_err(Self::err)?;
            }
            None => {
                self.state.remove("intent_from").map_err(Self::err)?;
            }
        }
        Ok(())
    }

    pub fn intent_from(&self) -> anyhow::Result<Option<Position>> {
        let v = self.state.get("intent_from").map_err(Self::err)?;
        Ok(v.and_then(|v| {
            let mut s = v.as_ref();
            Some(Position {
                segment: take_u64(&mut s)?,
                offset: take_u64(&mut s)?,
            })
        }))
    }

    pub fn set_audit(&self, a: Option<&AuditDue>) -> anyhow::Result<()> {
        match a {
            Some(a) => {
                let mut v = Vec::new();
                put_str(&mut v, a.identity.as_bytes());
                put_str(&mut v, a.call.as_bytes());
                put_str(&mut v, a.detail.as_bytes());
                self.state.insert("audit", v).map_err(Self::err)?;
            }
            None => {
                self.state.remove("audit").map_err(Self::err)?;
            }
        }
        Ok(())
    }

    pub fn audit(&self) -> anyhow::Result<Option<AuditDue>> {
        let v = self.state.get("audit").map_err(Self::err)?;
        Ok(v.and_then(|v| {
            let mut s = v.as_ref();
            Some(AuditDue {
                identity: text(take_str(&mut s)?),
                call: text(take_str(&mut s)?),
                detail: text(take_str(&mut s)?),
            })
        }))
    }

    pub fn add_blob(&self, sha: &str) -> anyhow::Result<()> {
        self.state
            .insert(format!("blob/{sha}"), &[])
            .map_err(Self::err)?;
        Ok(())
    }

    pub fn remove_blob(&self, sha: &str) -> anyhow::Result<()> {
        self.state
            .remove(format!("blob/{sha}"))
            .map_err(Self::err)?;
        Ok(())
    }

    pub fn blobs(&self) -> anyhow::Result<Vec<String>> {
        let mut out = Vec::new();
        for kv in self.state.scan_prefix("blob/") {
            let (k, _) = kv.map_err(Self::err)?;
            out.push(String::from_utf8_lossy(&k[5..]).into_owned());
        }
        Ok(out)
    }

    pub fn set_rewrite(&self, segment: u64, anchors: &[Anchor]) -> anyhow::Result<()> {
        let mut v = Vec::with_capacity(anchors.len() * 18);
        for a in anchors {
            v.extend_from_slice(&a.checkpoint.to_be_bytes());
            let (kind, n) = match a.at {
                AnchorAt::AfterLeaf(l) => (0u8, l),
                AnchorAt::Offset(o) => (1u8, o),
            };
            v.push(u8::from(a.end));
            v.push(kind);
            v.extend_from_slice(&n.to_be_bytes());
        }
        let mut k = b"rewrite/".to_vec();
        k.extend_from_slice(&segment.to_be_bytes());
        self.state.insert(k, v).map_err(Self::err)?;
        Ok(())
    }

    pub fn clear_rewrite(&self, segment: u64) -> anyhow::Result<()> {
        let mut k = b"rewrite/".to_vec();
        k.extend_from_slice(&segment.to_be_bytes());
        self.state.remove(k).map_err(Self::err)?;
        Ok(())
    }

    /// Segments whose rewrite may not have finished, with their anchors.
    pub fn rewrites(&self) -> anyhow::Result<Vec<(u64, Vec<Anchor>)>> {
        let mut out = Vec::new();
        for kv in self.state.scan_prefix("rewrite/") {
            let (k, v) = kv.map_err(Self::err)?;
            let mut ks = &k[8..];
            let Some(segment) = take_u64(&mut ks) else {
                continue;
            };
            let mut anchors = Vec::new();
            for c in v.chunks_exact(18) {
                let checkpoint = u64::from_be_bytes(c[..8].try_into().unwrap_or_default());
                let n = u64::from_be_bytes(c[10..18].try_into().unwrap_or_default());
                anchors.push(Anchor {
                    checkpoint,
                    end: c[8] == 1,
                    at: if c[9] == 0 {
                        AnchorAt::AfterLeaf(n)
                    } else {
                        AnchorAt::Offset(n)
                    },
                });
            }
            out.push((segment, anchors));
        }
        Ok(out)
    }
}
