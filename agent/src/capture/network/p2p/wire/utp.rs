//! The uTP v1 header (BEP 29): 20 bytes — type (high nibble, 0 ST_DATA,
//! 1 ST_FIN, 2 ST_STATE, 3 ST_RESET, 4 ST_SYN) and version 1 (low nibble),
//! the first extension's type, connection id, two timestamps, window,
//! seq_nr, ack_nr — then a chain of extensions (next type, length, data).
//!
//! Four bits and a byte are not much: any datagram starting 0x01 0x00 looks
//! like ST_DATA. So this is a weak sign on its own; the detector counts it
//! only on a process whose uTP-looking packets go to many peers. What is
//! checked here: the version, a known type, a known extension chain that
//! fits the packet, and no payload on the types that carry none (STATE,
//! RESET, SYN).

pub const ST_DATA: u8 = 0;
pub const ST_FIN: u8 = 1;
pub const ST_STATE: u8 = 2;
pub const ST_RESET: u8 = 3;
pub const ST_SYN: u8 = 4;

const HEADER: usize = 20;

/// The packet type when `data` starts with a plausible uTP header.
pub fn header(data: &[u8], truncated: bool) -> Option<u8> {
    if data.len() < HEADER || data[0] & 0x0f != 1 {
        return None;
    }
    let kind = data[0] >> 4;
    if kind > ST_SYN {
        return None;
    }
    // Extensions: 1 selective ack (a bitmask, a multiple of 4 bytes),
    // 2 extension bits (8 bytes), 3 close reason (libtorrent, 4 bytes).
    let mut ext = data[1];
    let mut pos = HEADER;
    let mut hops = 0;
    while ext != 0 {
        hops += 1;
        if hops > 4 {
            return None;
        }
        let (Some(&next), Some(&len)) = (data.get(pos), data.get(pos + 1)) else {
            return truncated.then_some(kind);
        };
        let ok = match ext {
            1 => len >= 4 && len % 4 == 0,
            2 => len == 8,
            3 => len == 4,
            _ => false,
        };
        if !ok {
            return None;
        }
        ext = next;
        pos += 2 + usize::from(len);
    }
    if pos > data.len() && !truncated {
        return None;
    }
    let payload = data.len().saturating_sub(pos);
    if matches!(kind, ST_STATE | ST_RESET | ST_SYN) && payload > 0 {
        return None;
    }
    Some(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header as BEP 29 lays it out.
    fn utp(kind: u8, ext: u8, conn: u16, seq: u16, ack: u16) -> Vec<u8> {
        let mut p = vec![kind << 4 | 1, ext];
        p.extend_from_slice(&conn.to_be_bytes());
        p.extend_from_slice(&0x1234_5678u32.to_be_bytes()); // timestamp
        p.extend_from_slice(&0u32.to_be_bytes()); // timestamp difference
        p.extend_from_slice(&0x0010_0000u32.to_be_bytes()); // window
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ack.to_be_bytes());
        p
    }

    #[test]
    fn table() {
        let syn = utp(ST_SYN, 0, 0x3a2b, 1, 0);
        let state = utp(ST_STATE, 0, 0x3a2b, 7, 1);
        let mut data = utp(ST_DATA, 0, 0x3a2c, 2, 7);
        data.extend_from_slice(b"\x00\x00\x00\x05\x02\x00\x00\x00\x01");
        let mut sack = utp(ST_STATE, 1, 0x3a2c, 8, 3);
        sack.extend_from_slice(&[0, 4, 0xff, 0, 0, 0]);
        let mut bits = utp(ST_SYN, 2, 1, 1, 0);
        bits.extend_from_slice(&[0, 8, 0, 0, 0, 0, 0, 0, 0, 0]);
        let mut fin = utp(ST_FIN, 0, 9, 9, 9);
        fin.push(0);
        let cases: Vec<(&str, Vec<u8>, bool, Option<u8>)> = vec![
            ("syn", syn.clone(), false, Some(ST_SYN)),
            ("state", state.clone(), false, Some(ST_STATE)),
            ("data", data.clone(), false, Some(ST_DATA)),
            ("selective ack", sack.clone(), false, Some(ST_STATE)),
            ("extension bits", bits.clone(), false, Some(ST_SYN)),
            ("fin", fin, false, Some(ST_FIN)),
            ("reset", utp(ST_RESET, 0, 1, 1, 1), false, Some(ST_RESET)),
            ("short", syn[..19].to_vec(), false, None),
            ("version 2", { let mut v = syn.clone(); v[0] = 0x42; v }, false, None),
            ("type 5", { let mut v = syn.clone(); v[0] = 0x51; v }, false, None),
            ("unknown extension", { let mut v = syn.clone(); v[1] = 9; v.extend_from_slice(&[0, 4, 0, 0, 0, 0]); v }, false, None),
            ("sack of 3 bytes", { let mut v = utp(ST_STATE, 1, 1, 1, 1); v.extend_from_slice(&[0, 3, 0, 0, 0]); v }, false, None),
            ("extension past the end", { let mut v = utp(ST_STATE, 1, 1, 1, 1); v.extend_from_slice(&[0, 8, 0]); v }, false, None),
            ("syn with payload", { let mut v = syn.clone(); v.extend_from_slice(b"hello"); v }, false, None),
            ("state with payload", { let mut v = state; v.push(1); v }, false, None),
            ("dns query", b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01".to_vec(), false, None),
            // A QUIC short-header packet whose first byte happens to be 0x41
            // carries a payload: not a SYN.
            ("quic 0x41", { let mut v = vec![0x41, 0x00]; v.extend_from_slice(&[0x5a; 60]); v }, false, None),
        ];
        for (name, bytes, truncated, want) in cases {
            assert_eq!(header(&bytes, truncated), want, "{name}");
        }
    }
}
