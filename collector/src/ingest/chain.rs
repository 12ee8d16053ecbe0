//! The agent stream hash chains checked on ingest (issue 18). Each event
//! an agent records carries `prev_hash`, the SHA-256 of the previous
//! event of its buffer stream as recorded; the agent reports the newest
//! (seq, hash) in its status. The collector keeps per stream the last
//! stored event's hash and the reported head ([`ChainState`], in the
//! metadata next to the high-water mark) and reports what does not fit as
//! [`Finding`]s, which ingest stores as integrity records:
//!
//! - sequence numbers skipped → `removed` (unless the agent restarted its
//!   chain and said why: `agent_reported_loss`, not tampering);
//! - a `prev_hash` that is not the stored predecessor's hash → `altered`;
//! - an event without `prev_hash` in a chained stream → `unchained`;
//! - a resend under a stored sequence number with other bytes →
//!   `conflict` (an identical resend is the normal at-least-once case);
//! - a reported head that the event stored (or later shipped) under its
//!   number does not hash to → `head_mismatch`.
//!
//! Only events sent as recorded (`Batch.recorded`) are checked: an older
//! agent's re-encoded events have no chain.

pub use crate::store::meta::ChainState;

/// A break in a stream's chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub what: &'static str,
    pub first_seq: u64,
    pub last_seq: u64,
    pub expected: Option<[u8; 32]>,
    pub got: Option<[u8; 32]>,
    pub detail: String,
    pub tampering: bool,
}

fn short(h: &[u8; 32]) -> String {
    hex::encode(&h[..8])
}

/// Checks a newly stored event of the stream (`seq`, its `prev_hash` and
/// `chain_restart`, the SHA-256 of its recorded bytes; `recorded`: sent as
/// recorded, so chained) against `state`, and advances `state` past it.
pub fn check_fresh(
    state: &mut ChainState,
    stream: &str,
    seq: u64,
    prev_hash: &[u8],
    chain_restart: &str,
    sha: [u8; 32],
    recorded: bool,
) -> Vec<Finding> {
    let mut found = Vec::new();
    if recorded {
        check_link(state, stream, seq, prev_hash, chain_restart, &mut found);
        if let Some((pseq, phash)) = state.pending {
            // A restarted chain is already reported as the agent's loss.
            if pseq == seq && phash != sha && chain_restart.is_empty() {
                found.push(Finding {
                    what: "head_mismatch",
                    first_seq: seq,
                    last_seq: seq,
                    expected: Some(phash),
                    got: Some(sha),
                    detail: format!(
                        "stream {stream}: the agent reported its chain head at seq {seq} as {}…, but the event it shipped under {seq} hashes to {}…: the event was altered on the agent after the head was reported; compare with the agent host's buffer",
                        short(&phash),
                        short(&sha)
                    ),
                    tampering: true,
                });
            }
            // A restart means the agent lost events: a head it reported
            // before may name a number it has since given to another
            // event, so the old claim is dropped rather than held against it.
            if seq >= pseq || !chain_restart.is_empty() {
                state.pending = None;
            }
        }
    }
    state.chained = recorded && (state.chained || !prev_hash.is_empty());
    state.seq = seq;
    state.hash = recorded.then_some(sha);
    found
}

fn check_link(
    state: &ChainState,
    stream: &str,
    seq: u64,
    prev_hash: &[u8],
    chain_restart: &str,
    found: &mut Vec<Finding>,
) {
    let skipped = state.seq > 0 && seq > state.seq + 1;
    if !chain_restart.is_empty() {
        let (first, last) = if skipped {
            (state.seq + 1, seq - 1)
        } else {
            (seq, seq)
        };
        found.push(Finding {
            what: "agent_reported_loss",
            first_seq: first,
            last_seq: last,
            expected: None,
            got: None,
            detail: format!(
                "stream {stream}: the agent started its chain again at seq {seq} and said why: {chain_restart}{}",
                if skipped {
                    format!(" (seq {first}–{last} are lost)")
                } else {
                    String::new()
                }
            ),
            tampering: false,
        });
        return;
    }
    if skipped {
        found.push(Finding {
            what: "removed",
            first_seq: state.seq + 1,
            last_seq: seq - 1,
            expected: None,
            got: None,
            detail: format!(
                "stream {stream}: sequence numbers {}–{} never arrived (the last stored is {}, the next received {seq}) and the agent reported no loss: events were removed before shipping; check the agent host",
                state.seq + 1,
                seq - 1,
                state.seq
            ),
            tampering: true,
        });
        return;
    }
    if state.seq == 0 || seq != state.seq + 1 {
        // The stream's first stored event (nothing to link to).
        return;
    }
    let prev = state.seq;
    match (prev_hash.is_empty(), state.hash) {
        (true, _) if state.chained => found.push(Finding {
            what: "unchained",
            first_seq: seq,
            last_seq: seq,
            expected: state.hash,
            got: None,
            detail: format!(
                "stream {stream}: event {seq} carries no prev_hash although the stream is chained and the agent reported no restart: it was written outside the agent's buffer, or the buffer was replaced; check the agent host"
            ),
            tampering: true,
        }),
        (false, Some(h)) if h.as_slice() != prev_hash => {
            let named = <[u8; 32]>::try_from(prev_hash).ok();
            found.push(Finding {
                what: "altered",
                first_seq: prev,
                last_seq: seq,
                expected: named,
                got: Some(h),
                detail: format!(
                    "stream {stream}: event {seq} names {} as the hash of event {prev}, but the stored event {prev} hashes to {}…: one of them was altered on the agent before shipping; check the agent host",
                    named.map_or_else(|| hex::encode(prev_hash), |n| format!("{}…", short(&n))),
                    short(&h)
                ),
                tampering: true,
            });
        }
        _ => {}
    }
}

/// A resend of stored event `seq` whose recorded bytes hash to `sha`;
/// `stored`: the stored event's hash, when it was stored as recorded.
pub fn check_resend(
    stream: &str,
    seq: u64,
    sha: [u8; 32],
    stored: Option<[u8; 32]>,
) -> Option<Finding> {
    let stored = stored.filter(|s| *s != sha)?;
    Some(Finding {
        what: "conflict",
        first_seq: seq,
        last_seq: seq,
        expected: Some(stored),
        got: Some(sha),
        detail: format!(
            "stream {stream}: a different event was sent under sequence number {seq}, already stored with SHA-256 {}… (received {}…); the stored event is kept, the other one dropped; check the agent host",
            short(&stored),
            short(&sha)
        ),
        tampering: true,
    })
}

/// Conflicts of consecutive sequence numbers as one finding each run (a
/// batch sent again with other content under numbers already stored is
/// one break, not one per event); the hashes named are the first's.
pub fn merge_conflicts(stream: &str, conflicts: Vec<Finding>) -> Vec<Finding> {
    let mut out: Vec<Finding> = Vec::new();
    for f in conflicts {
        match out.last_mut() {
            Some(last) if last.last_seq + 1 == f.first_seq => last.last_seq = f.last_seq,
            _ => out.push(f),
        }
    }
    for f in out.iter_mut().filter(|f| f.first_seq != f.last_seq) {
        f.detail = format!(
            "stream {stream}: different events were sent under sequence numbers {}–{}, already stored (the first stored with SHA-256 {}…, received {}…); the stored events are kept, the others dropped; check the agent host",
            f.first_seq,
            f.last_seq,
            f.expected.as_ref().map(short).unwrap_or_default(),
            f.got.as_ref().map(short).unwrap_or_default()
        );
    }
    out
}

/// A head the agent reported (`seq`, `hash`): checked at once against
/// the stored event (`stored_hash(seq)`, when it is stored as recorded),
/// or kept in `state` until that event arrives.
pub fn check_head(
    state: &mut ChainState,
    stream: &str,
    seq: u64,
    hash: [u8; 32],
    stored_hash: impl FnOnce(u64) -> Option<[u8; 32]>,
) -> Option<Finding> {
    if seq == 0 {
        return None;
    }
    if seq > state.seq {
        state.pending = Some((seq, hash));
        return None;
    }
    // An agent's durable head only goes back after it lost data (a cut
    // sled log): a head it reported earlier above this one is stale.
    state.pending = None;
    let stored = if seq == state.seq {
        state.hash
    } else {
        stored_hash(seq)
    };
    let got = stored.filter(|s| *s != hash)?;
    Some(Finding {
        what: "head_mismatch",
        first_seq: seq,
        last_seq: seq,
        expected: Some(hash),
        got: Some(got),
        detail: format!(
            "stream {stream}: the agent reports its chain head at seq {seq} as {}…, but the stored event {seq} hashes to {}…: the agent's buffer no longer holds what it shipped; check the agent host",
            short(&hash),
            short(&got)
        ),
        tampering: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(b: u8) -> [u8; 32] {
        [b; 32]
    }

    /// An event as (seq, prev_hash byte, chain_restart, sha byte).
    type Ev = (u64, Option<u8>, &'static str, u8);
    /// A finding as (what, first seq, last seq).
    type Found = (&'static str, u64, u64);

    /// Feeds `events` to a fresh stream and returns what was found.
    fn run(events: &[Ev]) -> Vec<Found> {
        let mut st = ChainState::default();
        let mut out = Vec::new();
        for (seq, prev, restart, sha) in events {
            let prev = prev.map(|p| h(p).to_vec()).unwrap_or_default();
            for f in check_fresh(&mut st, "s", *seq, &prev, restart, h(*sha), true) {
                out.push((f.what, f.first_seq, f.last_seq));
            }
        }
        out
    }

    #[test]
    fn breaks_in_a_chain_are_named() {
        let cases: &[(&str, &[Ev], &[Found])] = &[
            (
                "intact",
                &[(1, None, "", 1), (2, Some(1), "", 2), (3, Some(2), "", 3)],
                &[],
            ),
            (
                "skipped",
                &[(1, None, "", 1), (2, Some(1), "", 2), (5, Some(4), "", 5)],
                &[("removed", 3, 4)],
            ),
            (
                "altered",
                &[(1, None, "", 1), (2, Some(9), "", 2)],
                &[("altered", 1, 2)],
            ),
            (
                "unchained",
                &[(1, None, "", 1), (2, Some(1), "", 2), (3, None, "", 3)],
                &[("unchained", 3, 3)],
            ),
            ("never chained", &[(1, None, "", 1), (2, None, "", 2)], &[]),
            (
                "restart after a loss",
                &[
                    (1, None, "", 1),
                    (4, None, "buffer damaged", 4),
                    (5, Some(4), "", 5),
                ],
                &[("agent_reported_loss", 2, 3)],
            ),
            (
                "restart in place",
                &[(1, None, "", 1), (2, None, "buffer damaged", 2)],
                &[("agent_reported_loss", 2, 2)],
            ),
            (
                "first event not seq 1",
                &[(7, Some(6), "", 7), (8, Some(7), "", 8)],
                &[],
            ),
        ];
        for (name, events, want) in cases {
            assert_eq!(run(events), *want, "{name}");
        }
    }

    #[test]
    fn older_agents_events_are_not_checked_and_end_the_known_hash() {
        let mut st = ChainState::default();
        assert!(check_fresh(&mut st, "s", 1, &[], "", h(1), false).is_empty());
        assert!(check_fresh(&mut st, "s", 3, &[], "", h(3), false).is_empty());
        assert_eq!((st.seq, st.hash, st.chained), (3, None, false));
        // The first recorded event after them links to nothing known.
        assert!(check_fresh(&mut st, "s", 4, &h(3), "", h(4), true).is_empty());
        assert_eq!((st.hash, st.chained), (Some(h(4)), true));
    }

    #[test]
    fn a_resend_conflicts_only_with_other_bytes() {
        assert_eq!(check_resend("s", 3, h(3), Some(h(3))), None);
        assert_eq!(check_resend("s", 3, h(3), None), None);
        let f = check_resend("s", 3, h(4), Some(h(3))).expect("conflict");
        assert_eq!(
            (f.what, f.first_seq, f.expected, f.got),
            ("conflict", 3, Some(h(3)), Some(h(4)))
        );
        // A run of them is one finding; a gap starts another.
        let all = [3u8, 4, 5, 8]
            .into_iter()
            .filter_map(|n| check_resend("s", u64::from(n), h(n + 100), Some(h(n))))
            .collect();
        let merged: Vec<_> = merge_conflicts("s", all)
            .into_iter()
            .map(|f| (f.first_seq, f.last_seq))
            .collect();
        assert_eq!(merged, [(3, 5), (8, 8)]);
    }

    /// An agent that lost data reports a lower head, or restarts its
    /// chain: a head it reported before for a number not stored yet is
    /// stale (that number may go to another event) and must not be held
    /// against the event that later gets it.
    #[test]
    fn a_stale_pending_head_is_dropped_after_the_agent_lost_data() {
        let mut st = ChainState::default();
        check_fresh(&mut st, "s", 1, &[], "", h(1), true);
        check_fresh(&mut st, "s", 2, &h(1), "", h(2), true);
        assert_eq!(check_head(&mut st, "s", 5, h(5), |_| None), None);
        assert_eq!(st.pending, Some((5, h(5))));
        // The agent's log was cut back: it now reports head 2.
        assert_eq!(check_head(&mut st, "s", 2, h(2), |_| None), None);
        assert_eq!(st.pending, None);
        // Or it restarts its chain (its loss is reported as such).
        check_head(&mut st, "s", 5, h(5), |_| None);
        let f = check_fresh(&mut st, "s", 3, &[], "buffer moved aside", h(3), true);
        assert_eq!(st.pending, None);
        assert!(f.iter().all(|f| !f.tampering));
        for (seq, prev, sha) in [(4, 3, 4), (5, 4, 8)] {
            assert!(check_fresh(&mut st, "s", seq, &h(prev), "", h(sha), true).is_empty());
        }
    }

    #[test]
    fn heads_are_checked_at_once_or_when_their_event_arrives() {
        let mut st = ChainState::default();
        check_fresh(&mut st, "s", 1, &[], "", h(1), true);
        check_fresh(&mut st, "s", 2, &h(1), "", h(2), true);
        // Stored: checked at once (the newest from the state, older ones
        // by lookup).
        assert_eq!(check_head(&mut st, "s", 2, h(2), |_| None), None);
        let f = check_head(&mut st, "s", 2, h(7), |_| None).expect("mismatch");
        assert_eq!((f.what, f.first_seq), ("head_mismatch", 2));
        assert!(check_head(&mut st, "s", 1, h(9), |n| (n == 1).then_some(h(1))).is_some());
        assert!(check_head(&mut st, "s", 1, h(1), |n| (n == 1).then_some(h(1))).is_none());
        assert!(
            check_head(&mut st, "s", 1, h(1), |_| None).is_none(),
            "unknown: not reported"
        );
        // Not stored yet: kept, checked when seq 4 arrives.
        assert_eq!(check_head(&mut st, "s", 4, h(4), |_| None), None);
        assert!(check_fresh(&mut st, "s", 3, &h(2), "", h(3), true).is_empty());
        assert_eq!(st.pending, Some((4, h(4))));
        let f = check_fresh(&mut st, "s", 4, &h(3), "", h(5), true);
        assert_eq!(
            f.iter().map(|f| f.what).collect::<Vec<_>>(),
            ["head_mismatch"]
        );
        assert_eq!(st.pending, None);
        // An identical one is no finding.
        check_head(&mut st, "s", 5, h(5), |_| None);
        assert!(check_fresh(&mut st, "s", 5, &h(5), "", h(5), true).is_empty());
    }
}
