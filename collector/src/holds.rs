//! Legal holds (issue 19): a case's search filter whose events and blobs
//! are never purged while the hold is in force.
//!
//! Holds live in the meta tree `holds`: `hold/<n as u64 BE>` → the
//! prost-encoded [`Hold`] (id `h-<n>`), `next_id` → the next n (u64 BE).
//! A hold is created by an investigator or an admin (case name, reason and
//! a search filter required) and released only by an admin; a released
//! hold is kept (with who released it, when and why) so `kiroku hold list
//! --all` shows the history. Every change is flushed before it is
//! answered and is in the audit log (`holds/rpc.rs`), which is written
//! first.
//!
//! What a hold covers is decided when it is asked, not when it is
//! created: its filter is run against the index ([`Holds::held_set`]), so
//! an event that arrives later and matches is held too. Its blobs are
//! protected by the store's purge, which removes a blob only when no live
//! event names it (a held event stays live).
//!
//! Invariant: a purger takes [`Holds::purge_guard`], checks that its
//! [`HeldSet`] is still current ([`Holds::is_current`]) and purges under
//! it; a create or release waits for that purge, so no event a hold
//! covered when it was created is purged after it was answered.

pub mod rpc;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard};

use anyhow::Context;
use kiroku_proto::{Hold, SearchRequest};
use prost::Message;

/// The events under a hold at one moment: every hold's filter run against
/// the index. A maintenance pass takes one before it purges and takes a
/// new one whenever [`HeldSet::generation`] is no longer current (a hold
/// was created while it ran).
#[derive(Clone, Debug, Default)]
pub struct HeldSet {
    pub ids: HashSet<String>,
    /// Holds in force when it was taken.
    pub holds: usize,
    /// The holds' generation it was taken at (bumped by every create and
    /// release).
    pub generation: u64,
}

impl HeldSet {
    pub fn is_held(&self, event_id: &str) -> bool {
        self.ids.contains(event_id)
    }
}

const HOLD_PREFIX: &[u8] = b"hold/";
const NEXT_ID: &[u8] = b"next_id";

/// Why a release did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("no hold has the id or case name {0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyReleased(String),
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// The holds (meta tree `holds`).
pub struct Holds {
    tree: sled::Tree,
    generation: AtomicU64,
    /// Exclusive for a create or release, shared for a purge (see the
    /// module documentation).
    change: RwLock<()>,
}

impl Holds {
    pub fn open(meta: &crate::store::meta::MetaStore) -> anyhow::Result<Holds> {
        Ok(Holds {
            tree: meta.tree("holds")?,
            generation: AtomicU64::new(0),
            change: RwLock::new(()),
        })
    }

    /// Bumped by every create and release.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Whether `set` was taken after the last create or release.
    pub fn is_current(&self, set: &HeldSet) -> bool {
        set.generation == self.generation()
    }

    /// Held by a purge from the check that its [`HeldSet`] is current to
    /// the end of the purge: holds are not created or released meanwhile.
    /// Keep it short (one purge call); take a new set when
    /// [`Holds::is_current`] says no.
    pub fn purge_guard(&self) -> RwLockReadGuard<'_, ()> {
        self.change.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Held by `kiroku purge undo` while it unmarks: no purge (which
    /// holds [`Holds::purge_guard`]) runs meanwhile, so an event reported
    /// restored is never purged by a step that read its mark before.
    pub fn undo_guard(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        self.change.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The events held now (see [`HeldSet`]). Fails, rather than answering
    /// less, when a hold's filter cannot be run (for example while the
    /// index is rebuilt for a new schema): nothing may be purged then.
    pub fn held_set(&self, store: &crate::store::Store) -> anyhow::Result<HeldSet> {
        // The generation first: a change while the filters run makes the
        // set stale, never silently incomplete.
        let generation = self.generation();
        let holds = self.in_force()?;
        let mut ids = HashSet::new();
        for h in &holds {
            let filter = h.filter.clone().unwrap_or_default();
            store
                .index
                .each_matching_id(&filter, |id| {
                    ids.insert(id);
                })
                .with_context(|| {
                    format!(
                        "finding the events of hold {} (case {})",
                        h.id,
                        kiroku_common::quote::quote(&h.case_name)
                    )
                })?;
        }
        Ok(HeldSet {
            ids,
            holds: holds.len(),
            generation,
        })
    }

    /// Every hold, oldest first (released ones too).
    pub fn all(&self) -> anyhow::Result<Vec<Hold>> {
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(HOLD_PREFIX) {
            let (k, v) = kv.context("reading the meta tree `holds`")?;
            let h = Hold::decode(v.as_ref()).with_context(|| {
                format!(
                    "meta tree `holds`: entry {} does not decode",
                    String::from_utf8_lossy(&k)
                )
            })?;
            out.push(h);
        }
        Ok(out)
    }

    /// The holds in force, oldest first.
    pub fn in_force(&self) -> anyhow::Result<Vec<Hold>> {
        Ok(self
            .all()?
            .into_iter()
            .filter(|h| h.released_at_ms == 0)
            .collect())
    }

    /// Creates a hold: `audit` is called with it (id assigned) before it is
    /// stored and must make it durable in the audit log; an audit failure
    /// stores nothing. Durable on return.
    pub fn create(
        &self,
        case_name: &str,
        reason: &str,
        filter: SearchRequest,
        created_by: &str,
        audit: impl FnOnce(&Hold) -> anyhow::Result<()>,
    ) -> anyhow::Result<Hold> {
        let _w = self.change.write().unwrap_or_else(|p| p.into_inner());
        let n = self.next_id()?;
        let hold = Hold {
            id: format!("h-{n}"),
            case_name: case_name.to_owned(),
            reason: reason.to_owned(),
            filter: Some(stored_filter(filter)),
            created_by: created_by.to_owned(),
            created_at_ms: crate::clock::now_ms(),
            ..Default::default()
        };
        audit(&hold)?;
        self.put(n, &hold)?;
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(hold)
    }

    /// Releases the hold `id_or_case` names (a hold id, or every hold in
    /// force of that case): `audit` is called with those it is about to
    /// release and must make that durable first. Durable on return.
    pub fn release(
        &self,
        id_or_case: &str,
        reason: &str,
        released_by: &str,
        audit: impl FnOnce(&[Hold]) -> anyhow::Result<()>,
    ) -> Result<Vec<Hold>, ReleaseError> {
        let _w = self.change.write().unwrap_or_else(|p| p.into_inner());
        let all = self.all()?;
        let by_id: Vec<&Hold> = all.iter().filter(|h| h.id == id_or_case).collect();
        let named: Vec<&Hold> = if by_id.is_empty() {
            all.iter().filter(|h| h.case_name == id_or_case).collect()
        } else {
            by_id
        };
        if named.is_empty() {
            return Err(ReleaseError::NotFound(kiroku_common::quote::quote(
                id_or_case,
            )));
        }
        let mut todo: Vec<Hold> = named
            .iter()
            .filter(|h| h.released_at_ms == 0)
            .map(|h| (*h).clone())
            .collect();
        if todo.is_empty() {
            let h = named[0];
            return Err(ReleaseError::AlreadyReleased(format!(
                "{} {} was already released by {} ({})",
                if named.len() > 1 {
                    "every hold of case"
                } else {
                    "hold"
                },
                kiroku_common::quote::quote(id_or_case),
                h.released_by,
                kiroku_common::quote::quote(&h.release_reason)
            )));
        }
        let at = crate::clock::now_ms();
        for h in &mut todo {
            h.released_by = released_by.to_owned();
            h.released_at_ms = at.max(1);
            h.release_reason = reason.to_owned();
        }
        audit(&todo)?;
        for h in &todo {
            self.put(number(&h.id)?, h)?;
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(todo)
    }

    fn next_id(&self) -> anyhow::Result<u64> {
        let n = self
            .tree
            .get(NEXT_ID)
            .context("reading the meta tree `holds`")?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(1, u64::from_be_bytes);
        self.tree
            .insert(NEXT_ID, &(n + 1).to_be_bytes())
            .context("writing the meta tree `holds`")?;
        Ok(n)
    }

    fn put(&self, n: u64, h: &Hold) -> anyhow::Result<()> {
        let mut key = HOLD_PREFIX.to_vec();
        key.extend_from_slice(&n.to_be_bytes());
        self.tree
            .insert(key, h.encode_to_vec())
            .context("writing the meta tree `holds`")?;
        self.tree
            .flush()
            .context("flushing the meta tree `holds`")?;
        Ok(())
    }
}

/// n of a hold id `h-<n>`.
fn number(id: &str) -> anyhow::Result<u64> {
    id.strip_prefix("h-")
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("meta tree `holds`: hold id {id:?} is not h-<n>"))
}

/// A hold's filter as kept: only what selects events (no page, no order).
pub fn stored_filter(mut f: SearchRequest) -> SearchRequest {
    f.page_size = 0;
    f.page_token.clear();
    f.ascending = false;
    f
}

/// Whether `f` selects anything less than every event (a hold must name
/// what it holds).
pub fn filter_is_empty(f: &SearchRequest) -> bool {
    let mut f = stored_filter(f.clone());
    // Corrected time changes what a time range means, not what is selected
    // without one.
    f.corrected_time = false;
    f == SearchRequest::default()
}

/// The filter as the audit log and the CLI show it: the fields set, as
/// JSON (`{"user":"alice","from_ms":1700000000000}`).
pub fn describe_filter(f: &SearchRequest) -> String {
    let v = serde_json::to_value(stored_filter(f.clone())).unwrap_or_default();
    let set: serde_json::Map<String, serde_json::Value> = v
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| match v {
            serde_json::Value::String(s) => !s.is_empty(),
            serde_json::Value::Bool(b) => *b,
            serde_json::Value::Number(n) => n.as_f64() != Some(0.0),
            serde_json::Value::Null => false,
            _ => true,
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    serde_json::Value::Object(set).to_string()
}

#[cfg(test)]
mod tests;
