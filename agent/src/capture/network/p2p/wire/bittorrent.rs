//! The BitTorrent handshake (BEP 3): the length byte 19, the string
//! "BitTorrent protocol", 8 reserved (extension) bytes, the 20-byte
//! info_hash and the 20-byte peer id. The peer id may come in a later
//! segment (some clients send it after the peer's handshake), so 48 bytes
//! are enough to recognise the handshake and read its info_hash.

use super::InfoHash;

const PSTR: &[u8; 20] = b"\x13BitTorrent protocol";

/// The info_hash of a handshake at the start of `data`.
pub fn handshake(data: &[u8]) -> Option<InfoHash> {
    if data.len() < 48 || !data.starts_with(PSTR) {
        return None;
    }
    let mut h = [0u8; 20];
    h.copy_from_slice(&data[28..48]);
    Some(h)
}

#[cfg(test)]
mod tests {
    use super::super::hex;
    use super::*;

    #[test]
    fn aria2_handshake_gives_the_torrent_info_hash() {
        let data = include_bytes!("../testdata/aria2-handshake.bin");
        let h = handshake(data).expect("recognised");
        assert_eq!(hex(&h), "69ed8add630dbc8adf72a3f528dc1a03ac8739b2");
        // Without the peer id (a client that sends it later).
        assert_eq!(handshake(&data[..48]), Some(h));
    }

    #[test]
    fn not_a_handshake() {
        let data = include_bytes!("../testdata/aria2-handshake.bin");
        for bad in [
            &data[..47],                                            // cut before the hash's end
            &include_bytes!("../testdata/aria2-mse-start.bin")[..], // encrypted (MSE)
            b"\x13BitTorrent protocoX\0\0\0\0\0\0\0\0aaaaaaaaaaaaaaaaaaaa".as_slice(),
            b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n\0\0\0\0\0\0\0\0\0\0\0\0".as_slice(),
            b"",
        ] {
            assert_eq!(handshake(bad), None, "{bad:?}");
        }
    }
}
