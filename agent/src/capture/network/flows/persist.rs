//! What a restarted agent needs to continue the flows an earlier run
//! recorded: per `flow_id`, the totals of its last record, in the
//! buffer's keyed state [`STATE`], written in the same transaction as the
//! records (`Buffer::append_batch_with`), removed with the flow's close.
//! A record is in the buffer if and only if its totals are here, so a
//! kill -9 neither repeats an `open` nor loses a delta.
//!
//! A coalesced flow (counted in summaries, no records of its own) is here
//! too, `coalesced`, with the totals the summaries written so far
//! counted: saved in the same transaction as those summaries, removed
//! when it ends. A restarted agent adds only what came after them to its
//! summaries, instead of counting the flow again from zero.

use std::collections::HashMap;

use super::super::platform::Counters;

/// The keyed state's name (key: the flow_id, UTF-8).
pub const STATE: &str = "network_flows";

/// One flow as last recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Saved {
    pub totals: Counters,
    pub start_ms: i64,
    /// A listening socket (no counters).
    pub listening: bool,
    /// Counted in summaries (`totals`: what the written ones counted).
    pub coalesced: bool,
}

/// The length of a value before `coalesced` was added (still read).
const LEN_V1: usize = 4 * 8 + 8 + 1;
const LEN: usize = LEN_V1 + 1;

impl Saved {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(LEN);
        for n in [
            self.totals.bytes_out,
            self.totals.bytes_in,
            self.totals.packets_out,
            self.totals.packets_in,
        ] {
            v.extend_from_slice(&n.to_le_bytes());
        }
        v.extend_from_slice(&self.start_ms.to_le_bytes());
        v.push(u8::from(self.listening));
        v.push(u8::from(self.coalesced));
        v
    }

    /// None for a value this version does not understand (it is dropped:
    /// that flow gets an `open` again).
    pub fn decode(b: &[u8]) -> Option<Saved> {
        if b.len() != LEN && b.len() != LEN_V1 {
            return None;
        }
        let n = |i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(
                b.get(i * 8..i * 8 + 8)?.try_into().ok()?,
            ))
        };
        Some(Saved {
            totals: Counters {
                bytes_out: n(0)?,
                bytes_in: n(1)?,
                packets_out: n(2)?,
                packets_in: n(3)?,
            },
            start_ms: n(4)? as i64,
            listening: b.get(40) == Some(&1),
            coalesced: b.get(41) == Some(&1),
        })
    }
}

/// A change to the keyed state that goes with a record: set (open,
/// update, listen_open) or remove (close, listen_close).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateOp {
    pub flow_id: String,
    pub value: Option<Vec<u8>>,
}

/// Reads the whole state (at start): flow_id → saved.
pub fn load(state: &crate::buffer::KeyedState) -> HashMap<String, Saved> {
    let mut out = HashMap::new();
    let keys = match state.keys_with_prefix(b"") {
        Ok(k) => k,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the network flows recorded by the previous run; flows still open get an `open` record again");
            return out;
        }
    };
    for k in keys {
        if k.first() == Some(&0) {
            // Reserved (UNWRITTEN_KEY), not a flow.
            continue;
        }
        let Ok(Some(v)) = state.get(&k) else { continue };
        match (String::from_utf8(k.clone()), Saved::decode(&v)) {
            (Ok(id), Some(s)) => {
                out.insert(id, s);
            }
            _ => {
                let _ = state.remove(&k);
            }
        }
    }
    out
}

/// [`Unwritten`]'s key in the flows' keyed state [`STATE`] (a flow_id
/// never starts with NUL), so it changes in the same transaction as the
/// records.
pub const UNWRITTEN_KEY: &[u8] = b"\0unwritten_summaries";

/// Flows counted in summaries not yet written (a summary is written at its
/// interval's end, or when the capture stops): kept in the buffer while
/// there are any (refreshed at most once a second, removed with the
/// records that write them), so a run that ends
/// without writing them (kill -9, a crash, power loss) leaves a trace, and
/// the next run records their loss as a gap instead of losing them
/// silently.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unwritten {
    /// The earliest summary's start and the last time this was refreshed.
    pub first_ms: i64,
    pub last_ms: i64,
    /// Flows counted in them (those coalesced within the last second
    /// before the end may be missing).
    pub flows: u64,
}

impl Unwritten {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(24);
        v.extend_from_slice(&self.first_ms.to_le_bytes());
        v.extend_from_slice(&self.last_ms.to_le_bytes());
        v.extend_from_slice(&self.flows.to_le_bytes());
        v
    }

    pub fn decode(b: &[u8]) -> Option<Unwritten> {
        let n = |i: usize| -> Option<[u8; 8]> { b.get(i * 8..i * 8 + 8)?.try_into().ok() };
        (b.len() == 24).then_some(())?;
        Some(Unwritten {
            first_ms: i64::from_le_bytes(n(0)?),
            last_ms: i64::from_le_bytes(n(1)?),
            flows: u64::from_le_bytes(n(2)?),
        })
    }

    /// The gap record a restarted agent writes for them.
    pub fn gap(&self) -> kiroku_proto::GapEvent {
        kiroku_proto::GapEvent {
            source: "network".into(),
            reason: "summaries_lost".into(),
            count: self.flows,
            first_ms: self.first_ms,
            last_ms: self.last_ms,
            detail: format!(
                "{} counted in summaries between {} and {} (agent clock) were not recorded: the previous run of the agent ended without writing its summaries (killed, crashed or the machine lost power); their flows, peers and bytes are lost, except for the flows still open now, which are counted again from the last summary written",
                if self.flows == 0 {
                    "the later bytes of longer network flows".to_owned()
                } else {
                    format!(
                        "{} or more network flows (and the later bytes of longer ones)",
                        self.flows
                    )
                },
                kiroku_common::rfc3339_ms(self.first_ms),
                kiroku_common::rfc3339_ms(self.last_ms)
            ),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwritten_round_trips() {
        let u = Unwritten {
            first_ms: 1_765_000_000_000,
            last_ms: 1_765_000_059_000,
            flows: 412,
        };
        assert_eq!(Unwritten::decode(&u.encode()), Some(u));
        assert_eq!(Unwritten::decode(&[0; 23]), None);
        let g = u.gap();
        assert_eq!((g.reason.as_str(), g.count), ("summaries_lost", 412));
        assert!(g.detail.contains("412 or more"), "{}", g.detail);
    }

    #[test]
    fn saved_round_trips() {
        let s = Saved {
            totals: Counters {
                bytes_out: 1 << 40,
                bytes_in: 7,
                packets_out: 3,
                packets_in: 2,
            },
            start_ms: 1_765_000_000_123,
            listening: false,
            coalesced: false,
        };
        assert_eq!(Saved::decode(&s.encode()), Some(s));
        let c = Saved {
            coalesced: true,
            ..s
        };
        assert_eq!(Saved::decode(&c.encode()), Some(c));
        // A value written before `coalesced` existed.
        assert_eq!(Saved::decode(&s.encode()[..LEN_V1]), Some(s));
        let l = Saved {
            listening: true,
            ..Default::default()
        };
        assert_eq!(Saved::decode(&l.encode()), Some(l));
        assert_eq!(Saved::decode(&[1, 2, 3]), None);
    }
}
