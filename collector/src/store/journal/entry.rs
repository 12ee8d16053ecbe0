//! Journal entries as the collector writes them (`KRJ2`) and the merged
//! view of a stored event: the agent's recorded bytes decoded, with what
//! the collector added set over them. The index, search, alerts, repair
//! and the index rebuild all see events through [`merged`], so the view
//! is computed in one place.

use kiroku_proto::event::Kind;
use kiroku_proto::journal_entry::Entry;
use kiroku_proto::{Additions, Event, JournalEntry, StoredEvent};
use prost::Message;
use sha2::{Digest, Sha256};

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Why a stored event has no merged view.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error("the recorded event (leaf {leaf:?}) does not decode: {source}")]
    Recorded {
        leaf: Option<u64>,
        source: prost::DecodeError,
    },
    #[error("a stored event without additions (leaf {0:?})")]
    NoAdditions(Option<u64>),
}

/// Sets what the collector adds over a decoded event: identity, receipt
/// time, the served tags and the shipper's raw-not-kept note. The fields
/// set here are exactly those `ingest::admit` and the alert rules change,
/// so the merged view of a stored event equals what ingest indexed.
pub fn apply_additions(e: &mut Event, a: &Additions) {
    e.event_id.clone_from(&a.event_id);
    e.agent_id.clone_from(&a.agent_id);
    e.received_at_ms = a.received_at_ms;
    e.tags.clone_from(&a.tags);
    // The group is the certificate's, never the agent's own say.
    e.agent_group.clone_from(&a.agent_group);
    if !a.raw_not_kept.is_empty()
        && let Some(Kind::Email(m)) = &mut e.kind
    {
        m.raw_not_kept.clone_from(&a.raw_not_kept);
    }
}

/// The merged view of a stored event (see the module documentation).
pub fn merged(s: &StoredEvent) -> Result<Event, EntryError> {
    merged_at(s, None)
}

pub(super) fn merged_at(s: &StoredEvent, leaf: Option<u64>) -> Result<Event, EntryError> {
    let a = s.additions.as_ref().ok_or(EntryError::NoAdditions(leaf))?;
    let mut e = Event::decode(s.recorded.as_slice())
        .map_err(|source| EntryError::Recorded { leaf, source })?;
    apply_additions(&mut e, a);
    Ok(e)
}

/// The additions of an admitted event `e` whose recorded bytes hash to
/// `recorded_sha256`.
pub fn additions_of(
    e: &Event,
    raw_not_kept: &str,
    recorded_sha256: [u8; 32],
    reencoded: bool,
) -> Additions {
    Additions {
        event_id: e.event_id.clone(),
        agent_id: e.agent_id.clone(),
        received_at_ms: e.received_at_ms,
        tags: e.tags.clone(),
        raw_not_kept: raw_not_kept.to_owned(),
        recorded_sha256: recorded_sha256.to_vec(),
        reencoded,
        agent_group: e.agent_group.clone(),
    }
}

/// A stored event for an event the collector has only decoded (an older
/// agent's `Batch.events`, an event the collector wrote itself, a record
/// of the old journal format): its bytes are the collector's encoding.
pub fn reencoded(e: &Event) -> StoredEvent {
    let recorded = e.encode_to_vec();
    let sha = sha256(&recorded);
    StoredEvent {
        additions: Some(additions_of(e, "", sha, true)),
        recorded,
    }
}

/// Where a merged event came from in the journal: the hash of the bytes
/// the agent recorded (the agent chain's hash of this event), its leaf
/// (none for a `KRJ1` record of an older collector) and whether the
/// collector re-encoded it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Provenance {
    pub recorded_sha256: [u8; 32],
    pub leaf: Option<u64>,
    pub reencoded: bool,
}

/// The provenance of a stored event at `leaf`.
pub fn provenance(s: &StoredEvent, leaf: Option<u64>) -> Provenance {
    let given = s
        .additions
        .as_ref()
        .and_then(|a| <[u8; 32]>::try_from(a.recorded_sha256.as_slice()).ok());
    Provenance {
        // The hash is recomputed when the additions lack it (never
        // trusted over the bytes it is of when both are there: `verify`
        // compares them).
        recorded_sha256: given.unwrap_or_else(|| sha256(&s.recorded)),
        leaf,
        reencoded: s.additions.as_ref().is_some_and(|a| a.reencoded),
    }
}

/// Encodes entry `entry` as leaf `leaf` after the entry hashing to `prev`.
pub fn encode_entry(prev: &[u8; 32], leaf: u64, entry: Entry) -> Vec<u8> {
    JournalEntry {
        prev: prev.to_vec(),
        leaf,
        entry: Some(entry),
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiroku_proto::EmailEvent;

    #[test]
    fn merged_view_sets_the_additions_over_the_agents_bytes() {
        let agent = Event {
            agent_id: String::new(),
            stream_id: "s".into(),
            seq: 7,
            tags: vec!["from-agent".into()],
            prev_hash: vec![1; 32],
            kind: Some(Kind::Email(EmailEvent {
                subject: "seed 0".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let recorded = agent.encode_to_vec();
        let mut admitted = agent.clone();
        admitted.agent_id = "pc1".into();
        admitted.event_id = "pc1/s/7".into();
        admitted.received_at_ms = 42;
        admitted.tags = vec!["agent:from-agent".into(), "clock-skew".into()];
        let sha = sha256(&recorded);
        let stored = StoredEvent {
            additions: Some(additions_of(&admitted, "lost on the agent", sha, false)),
            recorded: recorded.clone(),
        };
        let m = merged(&stored).expect("merged");
        let mut want = admitted.clone();
        if let Some(Kind::Email(e)) = &mut want.kind {
            e.raw_not_kept = "lost on the agent".into();
        }
        assert_eq!(m, want);
        let p = provenance(&stored, Some(3));
        assert_eq!(
            (p.recorded_sha256, p.leaf, p.reencoded),
            (sha, Some(3), false)
        );
        // The agent's bytes are never touched.
        assert_eq!(stored.recorded, recorded);
        let r = reencoded(&m);
        assert_eq!(merged(&r).expect("merged"), m);
        assert!(provenance(&r, None).reencoded);
        assert!(matches!(
            merged(&StoredEvent {
                recorded: vec![0xff],
                additions: Some(Additions::default())
            }),
            Err(EntryError::Recorded { .. })
        ));
    }
}
