//! What a restarted agent needs to continue the flows an earlier run
//! recorded: per `flow_id`, the totals of its last record, in the
//! buffer's keyed state [`STATE`], written in the same transaction as the
//! records (`Buffer::append_batch_with`), removed with the flow's close.
//! A record is in the buffer if and only if its totals are here, so a
//! kill -9 neither repeats an `open` nor loses a delta.

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
}

const LEN: usize = 4 * 8 + 8 + 1;

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
        v
    }

    /// None for a value this version does not understand (it is dropped:
    /// that flow gets an `open` again).
    pub fn decode(b: &[u8]) -> Option<Saved> {
        if b.len() != LEN {
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

#[cfg(test)]
mod tests {
    use super::*;

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
        };
        assert_eq!(Saved::decode(&s.encode()), Some(s));
        let l = Saved {
            listening: true,
            ..Default::default()
        };
        assert_eq!(Saved::decode(&l.encode()), Some(l));
        assert_eq!(Saved::decode(&[1, 2, 3]), None);
    }
}
