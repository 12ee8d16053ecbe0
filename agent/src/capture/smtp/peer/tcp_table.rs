//! Decoding the IP Helper's TCP tables with owning PIDs
//! (`GetExtendedTcpTable` with `TCP_TABLE_OWNER_PID_ALL`), pure so that it
//! is tested on every platform: `MIB_TCPTABLE_OWNER_PID` (AF_INET) and
//! `MIB_TCP6TABLE_OWNER_PID` (AF_INET6) as the bytes the API wrote.
//!
//! Layout (little-endian `DWORD`s, x86-64 and ARM64 Windows): a count,
//! then the rows. IPv4 row, 24 bytes: state, local address, local port,
//! remote address, remote port, owning PID. IPv6 row, 56 bytes: local
//! address (16), local scope id, local port, remote address (16), remote
//! scope id, remote port, state, owning PID. Addresses are in network
//! byte order as stored (the bytes are the octets); ports are in network
//! byte order in the low 16 bits of their `DWORD` (the first two bytes,
//! big-endian; the upper two are garbage the API does not clear).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// One connection of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub pid: u32,
}

const V4_ROW: usize = 24;
const V6_ROW: usize = 56;

fn dword(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn port(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn octets<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at + N)?.try_into().ok()
}

/// The rows of a `MIB_TCPTABLE_OWNER_PID` (a count beyond the buffer
/// yields the rows that are there).
pub fn decode_v4(buf: &[u8]) -> Vec<Row> {
    rows(buf, V4_ROW, |r| {
        let ip = |at| octets::<4>(r, at).map(|o| IpAddr::V4(Ipv4Addr::from(o)));
        Some(Row {
            local: SocketAddr::new(ip(4)?, port(r, 8)?),
            remote: SocketAddr::new(ip(12)?, port(r, 16)?),
            pid: dword(r, 20)?,
        })
    })
}

/// The rows of a `MIB_TCP6TABLE_OWNER_PID` (scope ids are not kept: a
/// loopback connection has none).
pub fn decode_v6(buf: &[u8]) -> Vec<Row> {
    rows(buf, V6_ROW, |r| {
        let ip = |at| octets::<16>(r, at).map(|o| IpAddr::V6(Ipv6Addr::from(o)));
        Some(Row {
            local: SocketAddr::new(ip(0)?, port(r, 20)?),
            remote: SocketAddr::new(ip(24)?, port(r, 44)?),
            pid: dword(r, 52)?,
        })
    })
}

fn rows(buf: &[u8], size: usize, row: impl Fn(&[u8]) -> Option<Row>) -> Vec<Row> {
    let n = dword(buf, 0).unwrap_or(0) as usize;
    buf.get(4..)
        .unwrap_or_default()
        .chunks_exact(size)
        .take(n)
        .filter_map(row)
        .collect()
}

/// `a` with an IPv4-mapped IPv6 address (`::ffff:127.0.0.1`, what a
/// dual-stack listener sees) as the IPv4 address the client's socket has.
pub fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// The PID owning the client end of `client` → `server`: the row whose
/// local end is the client and remote end the server (the agent's own
/// accepted socket is the reverse). PID 0 (the idle process, or Wine's
/// "not a Windows process") is not an owner.
pub fn owning_pid(rows: &[Row], client: SocketAddr, server: SocketAddr) -> Option<u32> {
    let (client, server) = (canonical(client), canonical(server));
    rows.iter()
        .find(|r| canonical(r.local) == client && canonical(r.remote) == server)
        .map(|r| r.pid)
        .filter(|pid| *pid != 0)
}

/// The account of a token's user as Windows writes it: `DOMAIN\user`, or
/// `user` alone when there is no domain.
pub fn account(domain: &str, name: &str) -> String {
    if domain.is_empty() {
        name.to_owned()
    } else {
        format!("{domain}\\{name}")
    }
}

/// The file name of a Windows image path (`C:\…\OUTLOOK.EXE` →
/// `OUTLOOK.EXE`).
pub fn image_name(path: &str) -> &str {
    path.rsplit(['\\', '/']).next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port's DWORD as the API writes it: network byte order in the low
    /// 16 bits, junk above.
    fn port_dword(p: u16) -> [u8; 4] {
        let [hi, lo] = p.to_be_bytes();
        [hi, lo, 0xAB, 0xCD]
    }

    /// (local address, local port, remote address, remote port, pid).
    type V4 = ([u8; 4], u16, [u8; 4], u16, u32);
    type V6 = (Ipv6Addr, u16, Ipv6Addr, u16, u32);

    fn v4_table(rows: &[V4]) -> Vec<u8> {
        let mut b = (rows.len() as u32).to_le_bytes().to_vec();
        for (la, lp, ra, rp, pid) in rows {
            b.extend_from_slice(&5u32.to_le_bytes()); // MIB_TCP_STATE_ESTAB
            b.extend_from_slice(la);
            b.extend_from_slice(&port_dword(*lp));
            b.extend_from_slice(ra);
            b.extend_from_slice(&port_dword(*rp));
            b.extend_from_slice(&pid.to_le_bytes());
        }
        b
    }

    fn v6_table(rows: &[V6]) -> Vec<u8> {
        let mut b = (rows.len() as u32).to_le_bytes().to_vec();
        for (la, lp, ra, rp, pid) in rows {
            b.extend_from_slice(&la.octets());
            b.extend_from_slice(&0u32.to_le_bytes());
            b.extend_from_slice(&port_dword(*lp));
            b.extend_from_slice(&ra.octets());
            b.extend_from_slice(&7u32.to_le_bytes());
            b.extend_from_slice(&port_dword(*rp));
            b.extend_from_slice(&5u32.to_le_bytes());
            b.extend_from_slice(&pid.to_le_bytes());
        }
        b
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    #[test]
    fn decodes_ipv4_rows_with_network_order_addresses_and_ports() {
        let t = v4_table(&[
            ([127, 0, 0, 1], 2525, [0, 0, 0, 0], 0, 4242),
            ([127, 0, 0, 1], 50123, [127, 0, 0, 1], 2525, 1234),
            ([10, 1, 2, 3], 443, [192, 168, 0, 9], 61000, 99),
        ]);
        assert_eq!(
            decode_v4(&t),
            vec![
                Row {
                    local: sa("127.0.0.1:2525"),
                    remote: sa("0.0.0.0:0"),
                    pid: 4242
                },
                Row {
                    local: sa("127.0.0.1:50123"),
                    remote: sa("127.0.0.1:2525"),
                    pid: 1234
                },
                Row {
                    local: sa("10.1.2.3:443"),
                    remote: sa("192.168.0.9:61000"),
                    pid: 99
                },
            ]
        );
    }

    #[test]
    fn decodes_ipv6_rows() {
        let lo = Ipv6Addr::LOCALHOST;
        let t = v6_table(&[(lo, 51000, lo, 587, 77)]);
        assert_eq!(
            decode_v6(&t),
            vec![Row {
                local: sa("[::1]:51000"),
                remote: sa("[::1]:587"),
                pid: 77
            }]
        );
    }

    #[test]
    fn short_or_lying_buffers_yield_what_is_there() {
        let mut t = v4_table(&[
            ([127, 0, 0, 1], 1, [127, 0, 0, 1], 2, 3),
            ([127, 0, 0, 1], 4, [127, 0, 0, 1], 5, 6),
        ]);
        // The count says 9 rows; two are there, the second cut short.
        t[..4].copy_from_slice(&9u32.to_le_bytes());
        t.truncate(4 + V4_ROW + 10);
        assert_eq!(decode_v4(&t).len(), 1);
        assert!(decode_v4(&[]).is_empty());
        assert!(decode_v6(&[1, 0]).is_empty());
        // A count below the rows present wins.
        let mut t = v4_table(&[
            ([127, 0, 0, 1], 1, [127, 0, 0, 1], 2, 3),
            ([127, 0, 0, 1], 4, [127, 0, 0, 1], 5, 6),
        ]);
        t[..4].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(decode_v4(&t).len(), 1);
    }

    #[test]
    fn the_owner_is_the_client_end_not_the_agents_accepted_socket() {
        let rows = decode_v4(&v4_table(&[
            // The agent's listener and its accepted socket (server end).
            ([127, 0, 0, 1], 2525, [0, 0, 0, 0], 0, 500),
            ([127, 0, 0, 1], 2525, [127, 0, 0, 1], 50123, 500),
            // The client's socket.
            ([127, 0, 0, 1], 50123, [127, 0, 0, 1], 2525, 1234),
            // A client not known to Windows (Wine: a Linux process).
            ([127, 0, 0, 1], 50999, [127, 0, 0, 1], 2525, 0),
        ]));
        let server = sa("127.0.0.1:2525");
        for (client, want) in [
            ("127.0.0.1:50123", Some(1234)),
            // A dual-stack listener sees the client as IPv4-mapped.
            ("[::ffff:127.0.0.1]:50123", Some(1234)),
            ("127.0.0.1:50999", None),
            ("127.0.0.1:40000", None),
        ] {
            assert_eq!(owning_pid(&rows, sa(client), server), want, "{client}");
        }
        assert_eq!(
            owning_pid(&rows, sa("127.0.0.1:50123"), sa("[::ffff:127.0.0.1]:2525")),
            Some(1234)
        );
    }

    #[test]
    fn accounts_and_image_names() {
        assert_eq!(account("CONTOSO", "hanako"), "CONTOSO\\hanako");
        assert_eq!(account("", "hanako"), "hanako");
        for (path, name) in [
            (
                r"C:\Program Files\Microsoft Office\root\Office16\OUTLOOK.EXE",
                "OUTLOOK.EXE",
            ),
            (r"Z:\tmp\x\smtpclient.exe", "smtpclient.exe"),
            ("thunderbird.exe", "thunderbird.exe"),
            ("", ""),
        ] {
            assert_eq!(image_name(path), name, "{path}");
        }
    }
}
