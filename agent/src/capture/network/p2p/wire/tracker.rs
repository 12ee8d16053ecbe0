//! Tracker requests. HTTP (BEP 3, scrape BEP 48): a request line
//! `GET <path>?<query> HTTP/1.x` whose path's last segment starts with
//! "announce" or "scrape" ("/announce", "/announce.php",
//! "/<passkey>/announce") and whose query has `info_hash=` decoding to
//! exactly 20 bytes. UDP (BEP 15): the 16-byte `connect` request, the only
//! one with fixed bytes (the protocol id 0x41727101980 and action 0);
//! later requests start with a random connection id.

use std::net::SocketAddr;

use super::InfoHash;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    pub info_hash: InfoHash,
    /// "host:port/path" (from the Host header, else `dst`).
    pub tracker: String,
    pub scrape: bool,
}

/// An HTTP announce or scrape at the start of `data`, sent to `dst`.
pub fn http(data: &[u8], dst: &SocketAddr) -> Option<Announce> {
    let rest = data.strip_prefix(b"GET /")?;
    // The target ends at the space before "HTTP/"; a payload cut short by
    // the filter may end inside the query, which is fine as long as the
    // info_hash parameter is complete.
    let end = rest
        .iter()
        .position(|&b| b == b' ' || b == b'\r' || b == b'\n');
    let target = &rest[..end.unwrap_or(rest.len())];
    let q = target.iter().position(|&b| b == b'?')?;
    let (path, query) = (&target[..q], &target[q + 1..]);
    let last = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
    let scrape = last.starts_with(b"scrape");
    if !last.starts_with(b"announce") && !scrape {
        return None;
    }
    let info_hash = query_info_hash(query)?;
    let host = end
        .and_then(|e| header(&rest[e..], b"host"))
        .map(|h| h.to_owned())
        .unwrap_or_else(|| dst.to_string());
    // Only the host and the last path segment: a private tracker's path
    // carries the user's passkey (`/<passkey>/announce`), a credential
    // that must not end up in records, the index or alerts.
    let last = String::from_utf8_lossy(last);
    Some(Announce {
        info_hash,
        tracker: format!("{host}/{last}"),
        scrape,
    })
}

/// The `info_hash` parameter of a query, percent-decoded: exactly 20
/// bytes (a value cut by the filter decodes to fewer and is not taken).
fn query_info_hash(query: &[u8]) -> Option<InfoHash> {
    let v = query
        .split(|&b| b == b'&')
        .find_map(|p| p.strip_prefix(b"info_hash="))?;
    percent_decode(v)?.try_into().ok()
}

fn percent_decode(v: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(20);
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%' {
            let hi = hex_val(*v.get(i + 1)?)?;
            let lo = hex_val(*v.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(v[i]);
            i += 1;
        }
        if out.len() > 20 {
            return None;
        }
    }
    Some(out)
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// The value of header `name` (lower case) in `head` (the bytes after the
/// request target), when its line is complete.
fn header<'a>(head: &'a [u8], name: &[u8]) -> Option<&'a str> {
    let text = std::str::from_utf8(head).ok().or_else(|| {
        // A cut payload may end inside a UTF-8 sequence: use the valid
        // prefix.
        let valid = std::str::from_utf8(head).err()?.valid_up_to();
        std::str::from_utf8(&head[..valid]).ok()
    })?;
    // The piece after the last CRLF is a line the filter may have cut:
    // only complete lines count.
    let complete = text.rfind("\r\n").map_or("", |end| &text[..end]);
    let mut lines = complete.split("\r\n").skip(1);
    lines.find_map(|line| {
        let (k, v) = line.split_once(':')?;
        let v = v.trim();
        (k.as_bytes().eq_ignore_ascii_case(name)
            && !v.is_empty()
            && v.bytes().all(|b| b.is_ascii_graphic()))
        .then_some(v)
    })
}

/// BEP 15 `connect`: protocol id, action 0, a transaction id.
pub fn udp_connect(data: &[u8]) -> bool {
    const MAGIC: [u8; 8] = 0x0417_2710_1980u64.to_be_bytes();
    data.len() == 16 && data[..8] == MAGIC && data[8..12] == [0, 0, 0, 0]
}

#[cfg(test)]
mod tests {
    use super::super::hex;
    use super::*;

    fn dst() -> SocketAddr {
        "127.0.0.1:16969".parse().expect("test data")
    }

    #[test]
    fn aria2_announce() {
        let data = include_bytes!("../testdata/aria2-announce.bin");
        let a = http(data, &dst()).expect("recognised");
        assert_eq!(
            hex(&a.info_hash),
            "69ed8add630dbc8adf72a3f528dc1a03ac8739b2"
        );
        assert_eq!(a.tracker, "127.0.0.1:16969/announce");
        assert!(!a.scrape);
        // Cut by the filter after the info_hash, before the Host header:
        // the tracker is the destination.
        // Cut inside the Host header's value: the destination, not a
        // wrong port (seen with a real client whose tracker port had five
        // digits).
        let host_at = data
            .windows(6)
            .position(|w| w == b"Host: ")
            .expect("a Host header");
        let cut = http(
            &data[..host_at + 16],
            &"127.0.0.1:16969".parse().expect("test data"),
        )
        .expect("cut");
        assert_eq!(cut.tracker, "127.0.0.1:16969/announce");
        let cut = http(
            &data[..host_at + 14],
            &"10.0.0.9:16969".parse().expect("test data"),
        )
        .expect("cut");
        assert_eq!(cut.tracker, "10.0.0.9:16969/announce");
        let a = http(&data[..120], &"10.0.0.9:6969".parse().expect("test data")).expect("cut");
        assert_eq!(
            hex(&a.info_hash),
            "69ed8add630dbc8adf72a3f528dc1a03ac8739b2"
        );
        assert_eq!(a.tracker, "10.0.0.9:6969/announce");
    }

    #[test]
    fn table() {
        let h20 = "%12%34%56%78%9a%bc%de%f0%12%34%56%78%9a%bc%de%f0%12%34%56%78";
        let cases: Vec<(String, Option<(&str, bool)>)> = vec![
            (
                format!("GET /scrape?info_hash={h20} HTTP/1.1\r\nHost: t.example:80\r\n\r\n"),
                Some(("t.example:80/scrape", true)),
            ),
            (
                format!(
                    "GET /abcdef/announce.php?peer_id=x&info_hash={h20}&port=1 HTTP/1.0\r\n\r\n"
                ),
                Some(("127.0.0.1:16969/announce.php", false)), // the passkey path is left out
            ),
            // Literal (unescaped) bytes count as themselves.
            (
                "GET /announce?info_hash=AAAAAAAAAAAAAAAAAAAA HTTP/1.1\r\n".into(),
                Some(("127.0.0.1:16969/announce", false)),
            ),
            // Not a tracker: ordinary requests, wrong lengths, other verbs.
            ("GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n".into(), None),
            (format!("GET /search?info_hash={h20} HTTP/1.1\r\n"), None),
            ("GET /announce?info_hash=%12%34 HTTP/1.1\r\n".into(), None),
            (
                format!("GET /announce?info_hash={h20}%00 HTTP/1.1\r\n"),
                None,
            ),
            ("GET /announce?peer_id=abc HTTP/1.1\r\n".into(), None),
            (format!("POST /announce?info_hash={h20} HTTP/1.1\r\n"), None),
            ("GET /announce?info_hash=%1 HTTP/1.1\r\n".into(), None),
            // The info_hash cut by the filter: not complete, not taken.
            (
                "GET /announce?info_hash=%12%34%56%78%9a%bc%de%f0%12%34%56".into(),
                None,
            ),
        ];
        for (req, want) in cases {
            let got = http(req.as_bytes(), &dst());
            assert_eq!(
                got.as_ref().map(|a| (a.tracker.as_str(), a.scrape)),
                want,
                "{req:?}"
            );
        }
    }

    #[test]
    fn udp_tracker_connect() {
        let mut c = 0x0417_2710_1980u64.to_be_bytes().to_vec();
        c.extend_from_slice(&[0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef]);
        assert!(udp_connect(&c));
        let mut announce = c.clone();
        announce[11] = 1;
        assert!(!udp_connect(&announce));
        assert!(!udp_connect(&c[..15]));
        assert!(!udp_connect(&[0u8; 16]));
    }
}
