//! Wire recognisers: what the first bytes of one packet's payload are, for
//! the P2P detector and the names module. Each recogniser is strict (a
//! match needs the protocol's fixed bytes *and* sane fields), works on a
//! payload possibly cut short by the inspection filter (`truncated`), and
//! keeps nothing: it returns the few facts the detector records
//! (an info_hash, a tracker, a DHT method, DNS answers) and the bytes are
//! dropped by the caller.
//!
//! - [`bittorrent`]: the handshake `\x13BitTorrent protocol` + reserved +
//!   info_hash + peer id (BEP 3);
//! - [`tracker`]: an HTTP `GET …/announce?info_hash=…` or `/scrape?` (BEP 3,
//!   BEP 48) and the UDP tracker `connect` request (BEP 15);
//! - [`krpc`]: DHT KRPC messages, bencoded dictionaries with `t` and `y`
//!   (BEP 5), over a small bencode reader ([`bencode`]);
//! - [`utp`]: the uTP v1 header (BEP 29);
//! - [`dns`]: the A / AAAA answers of a DNS response (RFC 1035).

pub mod bencode;
pub mod bittorrent;
pub mod dns;
pub mod krpc;
pub mod tracker;
pub mod utp;

use std::net::IpAddr;

use super::super::platform::{Packet, Protocol};

/// A 20-byte BitTorrent info_hash.
pub type InfoHash = [u8; 20];

/// What a payload was recognised as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wire {
    /// A BitTorrent handshake (either direction).
    Handshake { info_hash: InfoHash },
    /// An HTTP tracker request; `tracker` is "host:port/path" (the Host
    /// header when the filter let it through, else the packet's
    /// destination).
    Announce {
        info_hash: InfoHash,
        tracker: String,
        scrape: bool,
    },
    /// A UDP tracker `connect` request (BEP 15: the protocol id
    /// 0x41727101980, action 0).
    UdpTrackerConnect,
    /// A DHT KRPC message: `method` is the query name ("ping",
    /// "get_peers", ...), "response" or "error".
    Krpc {
        method: String,
        info_hash: Option<InfoHash>,
    },
    /// A uTP packet; `kind` is its type (0 data .. 4 syn).
    Utp { kind: u8 },
    /// A DNS response's address records: (address, the name asked).
    Dns(Vec<(IpAddr, String)>),
}

/// Recognises one inspected packet's payload.
pub fn recognise(p: &Packet) -> Option<Wire> {
    let truncated = (p.payload.len() as u64) < u64::from(p.wire_len);
    let data = p.payload.as_slice();
    match p.at.protocol {
        Protocol::Tcp => {
            if let Some(info_hash) = bittorrent::handshake(data) {
                return Some(Wire::Handshake { info_hash });
            }
            let dst = p.at.dst;
            tracker::http(data, &dst).map(|a| Wire::Announce {
                info_hash: a.info_hash,
                tracker: a.tracker,
                scrape: a.scrape,
            })
        }
        Protocol::Udp => {
            if p.at.src.port() == 53 {
                let answers = dns::answers(data);
                return (!answers.is_empty()).then_some(Wire::Dns(answers));
            }
            if let Some(m) = krpc::message(data, truncated) {
                return Some(Wire::Krpc {
                    method: m.method,
                    info_hash: m.info_hash,
                });
            }
            if tracker::udp_connect(data) {
                return Some(Wire::UdpTrackerConnect);
            }
            utp::header(data, truncated).map(|kind| Wire::Utp { kind })
        }
    }
}

/// Lower-case hex of an info_hash.
pub fn hex(h: &InfoHash) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(40);
    for b in h {
        let _ = write!(s, "{b:02x}");
    }
    s
}
