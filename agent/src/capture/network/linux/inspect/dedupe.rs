//! One packet, one `Packet`. A socket on all interfaces sees a packet once
//! per device it crosses: on a host with a bridge (a hypervisor's `br0`
//! and its physical port), a bond and its slaves, or a VRF and its
//! members, the host's own traffic shows twice — which would count UDP
//! bytes twice and every sign twice. (Loopback's second copy is dropped by
//! the filter itself.)
//!
//! The copies are identical from the network header on (stacked devices
//! are layer 2; only a router changes the TTL, which is left out here), so
//! a packet read on one device whose headers — IP header without TTL /
//! hop limit and checksum, plus the first 16 bytes of the TCP or UDP
//! header: ports, sequence and acknowledgement numbers, UDP length and
//! checksum — match a packet read on *another* device in the last
//! [`WINDOW`] is a copy. The device matters: headers can repeat on one
//! device (datagrams of one length from an unconnected socket have IPv4 ID
//! 0, and with checksum offload the UDP checksum field of an outgoing
//! packet holds only the pseudo-header's sum), and those are all kept.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

pub const WINDOW: Duration = Duration::from_millis(50);
/// Fingerprints remembered at most (a burst beyond it is not deduplicated
/// further back than this many packets).
const MAX: usize = 8192;

#[derive(Default)]
pub struct Dedupe {
    order: VecDeque<(Instant, u64)>,
    /// Fingerprint → the device it was first read on.
    seen: HashMap<u64, usize>,
}

impl Dedupe {
    /// Whether `data` (a packet from its network header, read on device
    /// `ifindex`) is a copy of one read on another device in the last
    /// [`WINDOW`]; remembers it otherwise.
    pub fn copy(&mut self, data: &[u8], ifindex: usize, now: Instant) -> bool {
        while let Some(&(at, f)) = self.order.front() {
            if now.saturating_duration_since(at) <= WINDOW && self.order.len() < MAX {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&f);
        }
        let Some(f) = fingerprint(data) else {
            return false;
        };
        match self.seen.get(&f) {
            Some(&first) => first != ifindex,
            None => {
                self.seen.insert(f, ifindex);
                self.order.push_back((now, f));
                false
            }
        }
    }
}

/// A hash of the headers that stay the same on every device a packet
/// crosses.
fn fingerprint(data: &[u8]) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let l4 = match data.first()? >> 4 {
        4 => {
            let ihl = usize::from(data[0] & 0x0f) * 4;
            let ip = data.get(..ihl.max(20))?;
            ip[..8].hash(&mut h); // version .. fragment offset
            ip[9].hash(&mut h); // protocol (TTL at 8, checksum at 10..12 left out)
            ip[12..].hash(&mut h); // addresses, options
            ihl.max(20)
        }
        6 => {
            let ip = data.get(..40)?;
            ip[..7].hash(&mut h); // hop limit at 7 left out
            ip[8..].hash(&mut h);
            40
        }
        _ => return None,
    };
    let end = data.len().min(l4 + 16);
    data.get(l4..end)?.hash(&mut h);
    Some(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp_v4(id: u16, ttl: u8, sport: u16) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 31];
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&[0x40, 0, ttl, 17, 0xab, 0xcd, 10, 0, 0, 5, 10, 0, 0, 9]);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&[0x1a, 0xe1, 0, 11, 0x12, 0x34, b'a', b'b', b'c']);
        p
    }

    #[test]
    fn copies_on_other_devices_within_the_window_are_dropped() {
        const BR0: usize = 5;
        const PORT: usize = 2;
        let t0 = Instant::now();
        let mut d = Dedupe::default();
        let p = udp_v4(0, 64, 6881);
        assert!(!d.copy(&p, BR0, t0), "the first one is kept");
        assert!(
            d.copy(&p, PORT, t0 + Duration::from_millis(1)),
            "br0 then its port"
        );
        // The same headers again on br0: a datagram of its own (ID 0, the
        // offloaded checksum), kept; its copy on the port is not.
        assert!(!d.copy(&p, BR0, t0 + Duration::from_millis(2)));
        assert!(d.copy(&p, PORT, t0 + Duration::from_millis(2)));
        // The copy a router forwards (TTL - 1) is the same packet too.
        let mut routed = p.clone();
        routed[8] = 63;
        routed[10] = 0x99;
        assert!(d.copy(&routed, 3, t0 + Duration::from_millis(3)));
        // Another datagram: a different source port, or a different IP ID.
        assert!(!d.copy(&udp_v4(0, 64, 6882), PORT, t0 + Duration::from_millis(3)));
        assert!(!d.copy(&udp_v4(7, 64, 6881), PORT, t0 + Duration::from_millis(3)));
        // Later than the window: a new packet wherever it is read.
        assert!(!d.copy(&p, PORT, t0 + WINDOW + Duration::from_millis(10)));
        // Not IP: never called a copy.
        assert!(!d.copy(b"\x00\x01", BR0, t0));
        assert!(!d.copy(b"\x00\x01", PORT, t0));
    }

    #[test]
    fn bounded() {
        let t0 = Instant::now();
        let mut d = Dedupe::default();
        for i in 0..(2 * MAX) as u16 {
            d.copy(&udp_v4(i, 64, 1000), 2, t0);
        }
        assert!(d.order.len() <= MAX && d.seen.len() <= MAX);
    }
}
