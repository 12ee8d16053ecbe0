//! The fixed words of network and P2P records (issue 21): what the agent
//! writes in `NetworkEvent` / `P2pEvent` and what the collector and the CLI
//! accept in the search filters 50–59 (`--protocol`, `--net-direction`,
//! `--net-phase`, `--p2p-reason`, `--info-hash`). Each checker returns the
//! value as the index holds it (trimmed, lower case) or a message naming
//! the value and the valid ones; the caller names the flag or field.

use crate::quote::quote;

/// `NetworkEvent.protocol`.
pub const PROTOCOLS: [&str; 2] = ["tcp", "udp"];

/// `NetworkEvent.direction`.
pub const DIRECTIONS: [&str; 4] = ["outbound", "inbound", "listening", "unknown"];

/// `NetworkEvent.phase`.
pub const NETWORK_PHASES: [&str; 6] = [
    "open",
    "update",
    "close",
    "listen_open",
    "listen_close",
    "summary",
];

/// `P2pEvent.phase`.
pub const P2P_PHASES: [&str; 3] = ["detected", "update", "ended"];

/// `P2pReason.code`.
pub const P2P_REASONS: [&str; 6] = [
    "known_client",
    "many_peers",
    "dht",
    "utp",
    "tracker_announce",
    "bt_handshake",
];

/// Every phase `--net-phase` accepts: a network record's or a P2P
/// episode's ("update" is both).
pub fn phases() -> Vec<&'static str> {
    let mut v: Vec<&str> = NETWORK_PHASES.to_vec();
    v.extend(P2P_PHASES.iter().filter(|p| !NETWORK_PHASES.contains(p)));
    v
}

fn one_of(what: &str, v: &str, valid: &[&str]) -> Result<String, String> {
    let k = v.trim().to_lowercase();
    if valid.contains(&k.as_str()) {
        Ok(k)
    } else {
        Err(format!(
            "unknown {what} {}: use one of {}",
            quote(&k),
            valid.join(", ")
        ))
    }
}

pub fn protocol(v: &str) -> Result<String, String> {
    one_of("protocol", v, &PROTOCOLS)
}

pub fn direction(v: &str) -> Result<String, String> {
    one_of("direction", v, &DIRECTIONS)
}

pub fn phase(v: &str) -> Result<String, String> {
    one_of("phase", v, &phases())
}

pub fn p2p_reason(v: &str) -> Result<String, String> {
    one_of("P2P reason", v, &P2P_REASONS)
}

/// A BitTorrent info_hash as recorded: 40 hex digits (v1, SHA-1) or 64
/// (v2, SHA-256), lower case.
pub fn info_hash(v: &str) -> Result<String, String> {
    let h = v.trim().to_lowercase();
    if matches!(h.len(), 40 | 64) && h.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(h)
    } else {
        Err(format!(
            "{} is not an info_hash: write its 40 hex digits (BitTorrent v1) or 64 (v2)",
            quote(v)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_normalised_or_refused_with_the_valid_ones() {
        type Check = fn(&str) -> Result<String, String>;
        let cases: [(Check, &str, Result<&str, &str>); 10] = [
            (protocol, " TCP ", Ok("tcp")),
            (protocol, "icmp", Err("tcp, udp")),
            (direction, "Inbound", Ok("inbound")),
            (
                direction,
                "in",
                Err("outbound, inbound, listening, unknown"),
            ),
            (phase, "listen_open", Ok("listen_open")),
            (phase, "detected", Ok("detected")),
            (phase, "opened", Err("summary, detected, ended")),
            (p2p_reason, "DHT", Ok("dht")),
            (p2p_reason, "torrent", Err("bt_handshake")),
            (info_hash, &"AB".repeat(20), Ok(&"ab".repeat(20))),
        ];
        for (check, v, want) in cases {
            match (check(v), want) {
                (Ok(got), Ok(w)) => assert_eq!(got, w, "{v:?}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "{v:?}: {e}"),
                (got, want) => panic!("{v:?}: {got:?}, want {want:?}"),
            }
        }
        for bad in ["ab", &"g".repeat(40), &"a".repeat(41), ""] {
            assert!(info_hash(bad).is_err(), "{bad:?}");
        }
        assert!(info_hash(&"0f".repeat(32)).is_ok());
        assert_eq!(phases().iter().filter(|p| **p == "update").count(), 1);
    }
}
