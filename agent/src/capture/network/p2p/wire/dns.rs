//! The address answers of a DNS response (RFC 1035, AAAA RFC 3596): for
//! each A / AAAA record, the address and the name the client asked for
//! (the question's name, so a CNAME chain maps the final addresses to what
//! the process looked up). Names may be compressed (pointers); pointer
//! loops and overlong names are refused. Only responses (QR set) with
//! RCODE 0 and one question are read.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;
const MAX_ANSWERS: usize = 32;

/// (address, name asked) for each address record of the response.
pub fn answers(msg: &[u8]) -> Vec<(IpAddr, String)> {
    parse(msg).unwrap_or_default()
}

fn parse(msg: &[u8]) -> Option<Vec<(IpAddr, String)>> {
    let header = msg.get(..12)?;
    let flags = u16::from_be_bytes([header[2], header[3]]);
    let qr = flags & 0x8000 != 0;
    let rcode = flags & 0x000f;
    let qdcount = u16::from_be_bytes([header[4], header[5]]);
    let ancount = u16::from_be_bytes([header[6], header[7]]);
    if !qr || rcode != 0 || qdcount != 1 || ancount == 0 {
        return None;
    }
    let (asked, mut pos) = name(msg, 12)?;
    pos += 4; // qtype, qclass
    let mut out = Vec::new();
    for _ in 0..ancount.min(MAX_ANSWERS as u16) {
        let (_, after) = name(msg, pos)?;
        let fixed = msg.get(after..after + 10)?;
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let class = u16::from_be_bytes([fixed[2], fixed[3]]);
        let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let rdata = msg.get(after + 10..after + 10 + rdlen)?;
        pos = after + 10 + rdlen;
        let ip = match (rtype, class, rdata.len()) {
            (TYPE_A, CLASS_IN, 4) => {
                IpAddr::V4(Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]))
            }
            (TYPE_AAAA, CLASS_IN, 16) => {
                let mut a = [0u8; 16];
                a.copy_from_slice(rdata);
                IpAddr::V6(Ipv6Addr::from(a))
            }
            _ => continue,
        };
        out.push((ip, asked.clone()));
    }
    Some(out)
}

/// The (lower-case, dotted) name at `pos` and the position after it in the
/// record (after the first pointer when compressed).
fn name(msg: &[u8], mut pos: usize) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = *msg.get(pos)?;
        match len {
            0 => {
                return Some((out, end.unwrap_or(pos + 1)));
            }
            l if l & 0xc0 == 0xc0 => {
                let lo = *msg.get(pos + 1)?;
                end.get_or_insert(pos + 2);
                jumps += 1;
                if jumps > 16 {
                    return None;
                }
                pos = usize::from(u16::from_be_bytes([l & 0x3f, lo]));
            }
            l if l & 0xc0 == 0 => {
                let label = msg.get(pos + 1..pos + 1 + usize::from(l))?;
                if !label
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
                {
                    return None;
                }
                if !out.is_empty() {
                    out.push('.');
                }
                out.extend(label.iter().map(|b| b.to_ascii_lowercase() as char));
                if out.len() > 253 {
                    return None;
                }
                pos += 1 + usize::from(l);
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_answers() {
        let a = answers(include_bytes!("../testdata/dns-a-deb.debian.org.bin"));
        assert_eq!(
            a,
            vec![(
                "203.0.113.80".parse().expect("test data"),
                "deb.debian.org".to_owned()
            )]
        );
        assert!(answers(include_bytes!("../testdata/dns-aaaa-empty.bin")).is_empty());
        assert!(answers(include_bytes!("../testdata/dns-nxdomain.bin")).is_empty());
    }

    /// A response built as a resolver sends it: question, a CNAME, then an
    /// A and an AAAA for the canonical name (compressed).
    #[test]
    fn cname_chain_maps_to_the_name_asked() {
        let mut m = vec![0xab, 0xcd, 0x81, 0x80, 0, 1, 0, 3, 0, 0, 0, 0];
        m.extend_from_slice(b"\x03www\x07Example\x03org\x00\x00\x01\x00\x01");
        // CNAME www.example.org -> cdn.example.net
        m.extend_from_slice(b"\xc0\x0c\x00\x05\x00\x01\x00\x00\x00\x3c\x00\x11");
        let cname_at = m.len();
        m.extend_from_slice(b"\x03cdn\x07example\x03net\x00");
        let ptr = [0xc0, cname_at as u8];
        m.extend_from_slice(&ptr);
        m.extend_from_slice(b"\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\xc0\x00\x02\x07");
        m.extend_from_slice(&ptr);
        m.extend_from_slice(b"\x00\x1c\x00\x01\x00\x00\x00\x3c\x00\x10");
        m.extend_from_slice(
            &"2001:db8::7"
                .parse::<Ipv6Addr>()
                .expect("test data")
                .octets(),
        );
        let a = answers(&m);
        assert_eq!(
            a,
            vec![
                (
                    "192.0.2.7".parse().expect("test data"),
                    "www.example.org".to_owned()
                ),
                (
                    "2001:db8::7".parse().expect("test data"),
                    "www.example.org".to_owned()
                ),
            ]
        );
        // Cut anywhere: never a panic, at most the complete records.
        for cut in 0..m.len() {
            assert!(answers(&m[..cut]).len() <= 2);
        }
    }

    #[test]
    fn refused() {
        let real = include_bytes!("../testdata/dns-a-deb.debian.org.bin");
        let mut query = real.to_vec();
        query[2] &= 0x7f; // QR clear: a query
        assert!(answers(&query).is_empty());
        // A pointer to itself.
        let mut lp = vec![
            0, 1, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1,
        ];
        lp.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4]);
        assert!(answers(&lp).is_empty());
    }
}
