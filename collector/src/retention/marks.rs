//! Expired events in their grace period (meta tree `retention_marks`):
//! marked by a maintenance run, purged by a later one once
//! `purge_after_ms` has passed, restored by `kiroku purge undo`.
//!
//! An event restored by undo is exempt from marking (meta tree
//! `retention_exempt`, event id → until) for the policy's `undo_exempt`
//! (default 30 days): long enough for the admin to correct the policy that
//! expired it, after which the policy in force decides again.
//!
//! Values: `marked_at_ms` (i64 BE) | `purge_after_ms` (i64 BE) | rule
//! (UTF-8); exemptions: until (i64 BE). Written without a flush of their
//! own: a mark lost in a crash is made again by the next run (with a new
//! grace period, so later, never earlier), an unmark lost in a crash is
//! caught again by the hold or undo check before the purge.

use anyhow::Context;

use crate::store::meta::MetaStore;

/// One marked event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    pub event_id: String,
    pub marked_at_ms: i64,
    pub purge_after_ms: i64,
    /// The rule that expired it (goes into the tombstone's reason).
    pub rule: String,
}

impl Mark {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(16 + self.rule.len());
        v.extend_from_slice(&self.marked_at_ms.to_be_bytes());
        v.extend_from_slice(&self.purge_after_ms.to_be_bytes());
        v.extend_from_slice(self.rule.as_bytes());
        v
    }

    fn decode(event_id: &[u8], v: &[u8]) -> Option<Mark> {
        if v.len() < 16 {
            return None;
        }
        Some(Mark {
            event_id: String::from_utf8_lossy(event_id).into_owned(),
            marked_at_ms: i64::from_be_bytes(v[..8].try_into().ok()?),
            purge_after_ms: i64::from_be_bytes(v[8..16].try_into().ok()?),
            rule: String::from_utf8_lossy(&v[16..]).into_owned(),
        })
    }

    /// Whether its grace period is over at `now_ms`.
    pub fn due(&self, now_ms: i64) -> bool {
        self.purge_after_ms <= now_ms
    }
}

/// The marks and undo exemptions.
#[derive(Clone)]
pub struct Marks {
    marks: sled::Tree,
    exempt: sled::Tree,
}

pub const MARKS_TREE: &str = "retention_marks";
pub const EXEMPT_TREE: &str = "retention_exempt";

fn sled_err(e: sled::Error) -> anyhow::Error {
    anyhow::Error::new(e).context("the retention marks in the collector's meta store")
}

impl Marks {
    pub fn open(meta: &MetaStore) -> anyhow::Result<Marks> {
        Ok(Marks {
            marks: meta
                .tree(MARKS_TREE)
                .context("opening the retention marks")?,
            exempt: meta
                .tree(EXEMPT_TREE)
                .context("opening the retention marks")?,
        })
    }

    pub fn mark(&self, m: &Mark) -> anyhow::Result<()> {
        self.marks
            .insert(m.event_id.as_bytes(), m.encode())
            .map_err(sled_err)?;
        Ok(())
    }

    /// Removes the mark of `event_id`; the mark it had, if any.
    pub fn unmark(&self, event_id: &str) -> anyhow::Result<Option<Mark>> {
        Ok(self
            .marks
            .remove(event_id.as_bytes())
            .map_err(sled_err)?
            .and_then(|v| Mark::decode(event_id.as_bytes(), &v)))
    }

    pub fn get(&self, event_id: &str) -> anyhow::Result<Option<Mark>> {
        Ok(self
            .marks
            .get(event_id.as_bytes())
            .map_err(sled_err)?
            .and_then(|v| Mark::decode(event_id.as_bytes(), &v)))
    }

    /// Marked events whose grace period is over at `now_ms` (a scan of the
    /// marks: at most one per expired event, and each is gone once purged).
    pub fn due(&self, now_ms: i64) -> anyhow::Result<Vec<Mark>> {
        let mut out = Vec::new();
        for kv in self.marks.iter() {
            let (k, v) = kv.map_err(sled_err)?;
            if let Some(m) = Mark::decode(&k, &v)
                && m.due(now_ms)
            {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// Events marked (in their grace period or due).
    pub fn count(&self) -> usize {
        self.marks.len()
    }

    /// Every mark, for the plan and status: (marked, of which due at `now_ms`).
    pub fn counts(&self, now_ms: i64) -> anyhow::Result<(u64, u64)> {
        let (mut all, mut due) = (0, 0);
        for kv in self.marks.iter() {
            let (k, v) = kv.map_err(sled_err)?;
            all += 1;
            if Mark::decode(&k, &v).is_some_and(|m| m.due(now_ms)) {
                due += 1;
            }
        }
        Ok((all, due))
    }

    /// Exempts `event_id` from marking until `until_ms` (after an undo).
    pub fn exempt(&self, event_id: &str, until_ms: i64) -> anyhow::Result<()> {
        self.exempt
            .insert(event_id.as_bytes(), &until_ms.to_be_bytes())
            .map_err(sled_err)?;
        Ok(())
    }

    /// Whether `event_id` is exempt at `now_ms`; an expired exemption is
    /// removed.
    pub fn is_exempt(&self, event_id: &str, now_ms: i64) -> anyhow::Result<bool> {
        let Some(v) = self.exempt.get(event_id.as_bytes()).map_err(sled_err)? else {
            return Ok(false);
        };
        let until = v
            .as_ref()
            .try_into()
            .map(i64::from_be_bytes)
            .unwrap_or(i64::MIN);
        if until > now_ms {
            return Ok(true);
        }
        self.exempt.remove(event_id.as_bytes()).map_err(sled_err)?;
        Ok(false)
    }

    /// Forgets the mark and exemption of a purged event.
    pub fn forget(&self, event_id: &str) -> anyhow::Result<()> {
        self.marks.remove(event_id.as_bytes()).map_err(sled_err)?;
        self.exempt.remove(event_id.as_bytes()).map_err(sled_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_unmark_due_exempt() {
        let dir = tempfile::tempdir().expect("marks");
        let meta = MetaStore::open(dir.path()).expect("marks");
        let marks = Marks::open(&meta).expect("marks");
        let m = |id: &str, after| Mark {
            event_id: id.into(),
            marked_at_ms: 100,
            purge_after_ms: after,
            rule: "kind email 7y".into(),
        };
        marks.mark(&m("a/s/1", 1_000)).expect("marks");
        marks.mark(&m("a/s/2", 5_000)).expect("marks");
        assert_eq!(marks.count(), 2);
        assert_eq!(marks.get("a/s/1").expect("marks"), Some(m("a/s/1", 1_000)));
        let due: Vec<String> = marks
            .due(2_000)
            .expect("marks")
            .into_iter()
            .map(|m| m.event_id)
            .collect();
        assert_eq!(due, vec!["a/s/1".to_string()]);
        assert_eq!(marks.counts(2_000).expect("marks"), (2, 1));
        assert_eq!(
            marks.unmark("a/s/1").expect("marks"),
            Some(m("a/s/1", 1_000))
        );
        assert_eq!(marks.unmark("a/s/1").expect("marks"), None);
        marks.exempt("a/s/1", 3_000).expect("marks");
        assert!(marks.is_exempt("a/s/1", 2_999).expect("marks"));
        assert!(!marks.is_exempt("a/s/1", 3_000).expect("marks"));
        assert!(
            !marks.is_exempt("a/s/1", 0).expect("marks"),
            "expired exemptions are removed"
        );
        marks.forget("a/s/2").expect("marks");
        assert_eq!(marks.count(), 0);
    }
}
