//! One filtered packet, as the socket returns it (from the network header,
//! cut at the filter's snap length), turned into a [`Packet`]: endpoints
//! from the IP and TCP/UDP headers, the payload's length on the wire from
//! the IP length fields (the filter's cut does not change them), and the
//! payload bytes that came through. Anything that does not parse (it
//! passed the filter, so it should) is skipped, never trusted.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::capture::network::platform::{Endpoints, Packet, Protocol};

/// Parses `data`; `outgoing` from the packet type of the sender address.
pub fn parse(data: &[u8], outgoing: bool) -> Option<Packet> {
    let version = data.first()? >> 4;
    let (src, dst, proto, l4, ip_len) = match version {
        4 => {
            let ihl = usize::from(data[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([*data.get(2)?, *data.get(3)?]));
            let src = Ipv4Addr::from(<[u8; 4]>::try_from(data.get(12..16)?).ok()?);
            let dst = Ipv4Addr::from(<[u8; 4]>::try_from(data.get(16..20)?).ok()?);
            (
                IpAddr::V4(src),
                IpAddr::V4(dst),
                *data.get(9)?,
                ihl.max(20),
                total,
            )
        }
        6 => {
            let payload = usize::from(u16::from_be_bytes([*data.get(4)?, *data.get(5)?]));
            let src = Ipv6Addr::from(<[u8; 16]>::try_from(data.get(8..24)?).ok()?);
            let dst = Ipv6Addr::from(<[u8; 16]>::try_from(data.get(24..40)?).ok()?);
            (
                IpAddr::V6(src),
                IpAddr::V6(dst),
                *data.get(6)?,
                40,
                payload + 40,
            )
        }
        _ => return None,
    };
    let ports = data.get(l4..l4 + 4)?;
    let sport = u16::from_be_bytes([ports[0], ports[1]]);
    let dport = u16::from_be_bytes([ports[2], ports[3]]);
    let (protocol, off) = match proto {
        6 => (Protocol::Tcp, l4 + usize::from(data.get(l4 + 12)? >> 4) * 4),
        17 => (Protocol::Udp, l4 + 8),
        _ => return None,
    };
    let wire_len = ip_len.checked_sub(off)?;
    let end = data.len().min(off + wire_len);
    let payload = data.get(off..end).unwrap_or_default().to_vec();
    Some(Packet {
        at: Endpoints {
            protocol,
            src: SocketAddr::new(src, sport),
            dst: SocketAddr::new(dst, dport),
        },
        wire_len: u32::try_from(wire_len).ok()?,
        outgoing,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_tcp_cut_by_the_filter() {
        // 20-byte IP header (total 1500), 32-byte TCP header, payload cut.
        let mut p = vec![
            0x45, 0, 0x05, 0xdc, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 5, 10, 0, 0, 9,
        ];
        p.extend_from_slice(&[0x9c, 0x40, 0x1a, 0xe1, 0, 0, 0, 1, 0, 0, 0, 0, 0x80, 0x18]);
        p.resize(52, 0);
        p.extend_from_slice(b"\x13BitTorrent protocol");
        let pk = parse(&p, true).expect("parses");
        assert_eq!(pk.at.protocol, Protocol::Tcp);
        assert_eq!(pk.at.src, "10.0.0.5:40000".parse().expect("addr"));
        assert_eq!(pk.at.dst, "10.0.0.9:6881".parse().expect("addr"));
        assert_eq!(pk.wire_len, 1500 - 52);
        assert_eq!(pk.payload, b"\x13BitTorrent protocol");
        assert!(pk.outgoing);
    }

    #[test]
    fn ipv6_udp_header_only() {
        let mut p = vec![0x60, 0, 0, 0, 0, 108, 17, 64];
        p.extend_from_slice(&[0xfd; 15]);
        p.push(1);
        p.extend_from_slice(&[0xfd; 15]);
        p.push(2);
        p.extend_from_slice(&[0x1a, 0xe1, 0x1a, 0xe2, 0, 108, 0, 0]);
        let pk = parse(&p, false).expect("parses");
        assert_eq!(pk.at.protocol, Protocol::Udp);
        assert_eq!(pk.at.src.port(), 6881);
        assert_eq!(
            pk.at.dst.to_string(),
            "[fdfd:fdfd:fdfd:fdfd:fdfd:fdfd:fdfd:fd02]:6882"
        );
        assert_eq!(pk.wire_len, 100);
        assert!(pk.payload.is_empty());
    }

    #[test]
    fn garbage_is_skipped() {
        for bad in [
            &b""[..],
            b"\x45\x00",
            b"\x70aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            &[0x45; 30],
        ] {
            let _ = parse(bad, false); // never panics
        }
        // An IP length shorter than the headers.
        let mut p = vec![
            0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2,
        ];
        p.extend_from_slice(&[0, 53, 0, 53, 0, 8, 0, 0]);
        assert!(parse(&p, false).is_none());
    }
}
