//! This host's addresses, so that the inspector passes on only packets
//! this host sent or received. The filter already drops what the kernel
//! marks PACKET_OTHERHOST, but a frame a bridge forwards between two other
//! hosts (VMs or namespaces on a host bridge) is also *transmitted* on the
//! egress bridge port and read there as PACKET_OUTGOING: without this check
//! its BitTorrent handshake would be credited to a local process listening
//! on the same port.
//!
//! A packet is this host's when its local side (source if outgoing, else
//! destination) is one of the interfaces' addresses (getifaddrs), a
//! loopback address, or — received — a multicast / broadcast group. The
//! list is read again when an address is not in it (at most once a
//! second: an address just added is found), and every `REFRESH`.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::capture::network::platform::Packet;

/// Longest use of the list before reading it again.
const REFRESH: Duration = Duration::from_secs(30);
/// Shortest time between two reads caused by unknown addresses.
const MIN_REREAD: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct LocalAddrs {
    addrs: HashSet<IpAddr>,
    read_at: Option<Instant>,
    /// getifaddrs failed: every packet passes (the check is an
    /// improvement, not a condition of inspection).
    failing: bool,
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl LocalAddrs {
    /// A list with these addresses (tests).
    #[cfg(test)]
    pub fn fixed(addrs: &[IpAddr], now: Instant) -> LocalAddrs {
        LocalAddrs {
            addrs: addrs.iter().copied().map(canonical).collect(),
            read_at: Some(now),
            failing: false,
        }
    }

    fn read(&mut self, now: Instant) {
        self.read_at = Some(now);
        match nix::ifaddrs::getifaddrs() {
            Ok(list) => {
                self.failing = false;
                self.addrs = list
                    .filter_map(|a| {
                        let s = a.address?;
                        if let Some(v4) = s.as_sockaddr_in() {
                            Some(IpAddr::V4(v4.ip()))
                        } else {
                            s.as_sockaddr_in6().map(|v6| canonical(IpAddr::V6(v6.ip())))
                        }
                    })
                    .collect();
            }
            Err(e) => {
                if !self.failing {
                    tracing::warn!(error = %e, "network inspection: cannot list this host's addresses (getifaddrs); packets forwarded between other hosts are not told apart");
                }
                self.failing = true;
            }
        }
    }

    /// Whether `ip` is one of this host's addresses (reads the list again
    /// when it is not, at most once a second).
    fn is_local(&mut self, ip: IpAddr, now: Instant) -> bool {
        let ip = canonical(ip);
        if ip.is_loopback() {
            return true;
        }
        let stale = self
            .read_at
            .is_none_or(|at| now.duration_since(at) >= REFRESH);
        if stale {
            self.read(now);
        }
        if self.failing || self.addrs.contains(&ip) {
            return true;
        }
        if self
            .read_at
            .is_some_and(|at| now.duration_since(at) >= MIN_REREAD)
        {
            self.read(now);
            return self.failing || self.addrs.contains(&ip);
        }
        false
    }

    /// Whether this host sent or received `p`.
    pub fn mine(&mut self, p: &Packet, now: Instant) -> bool {
        if p.outgoing {
            self.is_local(p.at.src.ip(), now)
        } else {
            let dst = canonical(p.at.dst.ip());
            let group = dst.is_multicast() || dst == IpAddr::V4(std::net::Ipv4Addr::BROADCAST);
            group || self.is_local(dst, now)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::network::platform::{Endpoints, Protocol};

    fn pkt(src: &str, dst: &str, outgoing: bool) -> Packet {
        Packet {
            at: Endpoints {
                protocol: Protocol::Tcp,
                src: src.parse().expect("test address"),
                dst: dst.parse().expect("test address"),
            },
            wire_len: 68,
            outgoing,
            payload: Vec::new(),
        }
    }

    #[test]
    fn only_this_hosts_packets() {
        let now = Instant::now();
        let host: IpAddr = "10.77.0.1".parse().expect("test address");
        let mut l = LocalAddrs::fixed(&[host], now);
        let cases = [
            // (src, dst, outgoing, mine)
            ("10.77.0.1:40000", "10.77.0.5:6881", true, true),
            ("10.77.0.5:6881", "10.77.0.1:40000", false, true),
            // Bridged between two peers: transmitted on the egress port.
            ("10.77.0.5:40000", "10.77.0.6:6881", true, false),
            ("10.77.0.5:40000", "10.77.0.6:6881", false, false),
            ("127.0.0.1:1", "127.0.0.1:2", false, true),
            (
                "[::ffff:10.77.0.5]:6881",
                "[::ffff:10.77.0.1]:4000",
                false,
                true,
            ),
            ("10.77.0.5:5353", "224.0.0.251:5353", false, true),
        ];
        for (src, dst, outgoing, want) in cases {
            assert_eq!(
                l.mine(&pkt(src, dst, outgoing), now),
                want,
                "{src} -> {dst} outgoing {outgoing}"
            );
        }
    }
}
