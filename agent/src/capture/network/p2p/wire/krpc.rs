//! DHT KRPC messages (BEP 5): one bencoded dictionary per UDP datagram
//! with a transaction id `t` (a byte string) and a type `y`: "q" (a query:
//! method name `q`, arguments `a` with the sender's 20-byte `id`), "r" (a
//! response: `r` with the responder's 20-byte `id`) or "e" (an error: `e`
//! a list [code, message]).
//!
//! A response can be longer than the inspection filter's snap length (a
//! `get_peers` answer with many values). Its keys are sorted, so the cut
//! lands inside `r` before `t` and `y` are seen; such a payload is taken
//! as a response when it is cut (`truncated`) and what is there is a valid
//! bencode prefix `d1:rd2:id20:<20 bytes>`: specific enough not to occur
//! by chance.

use super::InfoHash;
use super::bencode::{self, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The query's method ("ping", "find_node", "get_peers",
    /// "announce_peer", ...), or "response" / "error".
    pub method: String,
    /// The `info_hash` argument of get_peers / announce_peer.
    pub info_hash: Option<InfoHash>,
}

/// A KRPC message at the start of `data` (one datagram's payload).
pub fn message(data: &[u8], truncated: bool) -> Option<Message> {
    if data.first() != Some(&b'd') {
        return None;
    }
    match bencode::parse(data) {
        Ok((v, used)) if used == data.len() => complete(&v),
        Ok(_) => None,
        Err(bencode::Error::Truncated) if truncated => cut_response(data),
        Err(_) => None,
    }
}

fn complete(v: &Value<'_>) -> Option<Message> {
    let t = v.get(b"t")?.bytes()?;
    if t.is_empty() || t.len() > 16 {
        return None;
    }
    let node_id = |d: &Value<'_>| d.get(b"id").and_then(Value::bytes).map(<[u8]>::len) == Some(20);
    match v.get(b"y")?.bytes()? {
        b"q" => {
            let method = v.get(b"q")?.bytes()?;
            let args = v.get(b"a")?;
            if !node_id(args)
                || method.is_empty()
                || !method.iter().all(|b| b.is_ascii_lowercase() || *b == b'_')
            {
                return None;
            }
            let info_hash = args
                .get(b"info_hash")
                .and_then(Value::bytes)
                .and_then(|h| h.try_into().ok());
            Some(Message {
                method: String::from_utf8_lossy(method).into_owned(),
                info_hash,
            })
        }
        b"r" => node_id(v.get(b"r")?).then(|| Message {
            method: "response".into(),
            info_hash: None,
        }),
        b"e" => match v.get(b"e")? {
            Value::List(l) if matches!(l.first(), Some(Value::Int(_))) => Some(Message {
                method: "error".into(),
                info_hash: None,
            }),
            _ => None,
        },
        _ => None,
    }
}

fn cut_response(data: &[u8]) -> Option<Message> {
    // The prefix must be valid bencode as far as it goes.
    bencode::dict_prefix(data).ok()?;
    let rest = data.strip_prefix(b"d1:rd2:id20:")?;
    (rest.len() >= 20).then(|| Message {
        method: "response".into(),
        info_hash: None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::hex;
    use super::*;

    /// The examples of BEP 5, byte for byte.
    const BEP5: &[(&[u8], &str)] = &[
        (b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe", "ping"),
        (b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re", "response"),
        (
            b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz123456e1:q9:find_node1:t2:aa1:y1:qe",
            "find_node",
        ),
        (
            b"d1:rd2:id20:0123456789abcdefghij5:nodes9:def456...e1:t2:aa1:y1:re",
            "response",
        ),
        (
            b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz123456e1:q9:get_peers1:t2:aa1:y1:qe",
            "get_peers",
        ),
        (
            b"d1:rd2:id20:abcdefghij01234567895:token8:aoeusnth6:valuesl6:axje.u6:idhtnmee1:t2:aa1:y1:re",
            "response",
        ),
        (
            b"d1:rd2:id20:abcdefghij01234567895:nodes9:def456...5:token8:aoeusnthe1:t2:aa1:y1:re",
            "response",
        ),
        (
            b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz1234564:porti6881e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe",
            "announce_peer",
        ),
        (b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee", "error"),
    ];

    #[test]
    fn bep5_examples() {
        for (bytes, method) in BEP5 {
            let m = message(bytes, false)
                .unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(bytes)));
            assert_eq!(m.method, *method);
            if matches!(*method, "get_peers" | "announce_peer") {
                let h = m.info_hash.expect("info_hash");
                assert_eq!(hex(&h), hex(b"mnopqrstuvwxyz123456"));
            } else {
                assert_eq!(m.info_hash, None);
            }
        }
    }

    #[test]
    fn cut_response_is_taken_only_when_the_filter_cut_it() {
        let long = b"d1:rd2:id20:abcdefghij01234567895:token8:aoeusnth6:valuesl6:axje.u6:idhtn";
        assert_eq!(message(long, false), None);
        assert_eq!(
            message(long, true).map(|m| m.method),
            Some("response".into())
        );
        // A cut query is not taken: its method comes after the arguments.
        assert_eq!(
            message(b"d1:ad2:id20:abcdefghij0123456789e1:q4:pi", true),
            None
        );
    }

    #[test]
    fn not_krpc() {
        for bad in [
            &b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:y1:qe"[..], // no t
            b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:xe", // y unknown
            b"d1:ad2:id3:abce1:q4:ping1:t2:aa1:y1:qe",                 // id not 20 bytes
            b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:reXX",      // trailing bytes
            b"d1:t2:aa1:y1:ee",                                        // error without e
            b"d8:announce35:http://tracker.example:6969/announcee",    // a .torrent start
            b"dog",
            b"",
        ] {
            assert_eq!(
                message(bad, false),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
            assert_eq!(message(bad, true), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
