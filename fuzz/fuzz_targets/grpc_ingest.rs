//! The collector's Ingest requests as they come off the wire: the input is
//! decoded (prost) as a `ShipRequest`, a `MissingBlobsRequest` and a
//! `BlobChunk`, and a decoded request goes through what the collector does
//! with it before anything is stored: the Hello's `stream_id` check
//! (`ingest::valid_stream_id`), a Batch's admission (`ingest::admit_batch`:
//! identity from the certificate, stream, sequence number, kind, the
//! clock-skew tag), then the times computed from each admitted event
//! (`mail::corrected_ms`, `investigate::day`),
//! and a Status's clock offset against the threshold.
//!
//! Checked: no panic (an overflow is a panic here: debug assertions are
//! on); a decoded message re-encodes to one that decodes the same; an
//! admitted event carries the certificate's agent id, the stream, a
//! sequence number > 0, a kind, an event id `agent/stream/seq`, the
//! collector's receive time, and at most one `clock-skew` tag; a refused
//! batch is refused with InvalidArgument or PermissionDenied.
#![no_main]

use kiroku_collector::ingest::{CLOCK_SKEW_TAG, admit_batch, valid_stream_id};
use kiroku_collector::investigate::day;
use kiroku_common::mail::corrected_ms;
use kiroku_common::pki::{PeerIdentity, Role};
use kiroku_proto::{BlobChunk, MissingBlobsRequest, ShipRequest, ship_request};
use libfuzzer_sys::fuzz_target;
use prost::Message;

const NOW: i64 = 1_795_000_000_000;
const THRESHOLD_MS: i64 = 5_000;

fn roundtrip<M: Message + Default + PartialEq + std::fmt::Debug>(m: &M) {
    let again = M::decode(m.encode_to_vec().as_slice()).expect("re-encoded message decodes");
    assert_eq!(&again, m, "re-encoding changed the message");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = MissingBlobsRequest::decode(data) {
        roundtrip(&m);
        for s in &m.sha256 {
            let _ = kiroku_common::is_sha256_hex(s);
        }
    }
    if let Ok(c) = BlobChunk::decode(data) {
        roundtrip(&c);
    }
    let Ok(req) = ShipRequest::decode(data) else {
        return;
    };
    roundtrip(&req);
    let id = PeerIdentity {
        role: Role::Agent,
        name: "fuzz-agent".into(),
    };
    match req.msg {
        Some(ship_request::Msg::Hello(h)) => {
            if valid_stream_id(&h.stream_id) {
                assert!(!h.stream_id.is_empty() && h.stream_id.len() <= 64);
                assert!(!h.stream_id.contains(['/', '\\', '.', '\0']));
            }
        }
        Some(ship_request::Msg::Status(st)) => {
            // What the Ship stream does with a Status.
            let mut events = Vec::new();
            let _ = admit_batch(
                &mut events,
                &id,
                "s1",
                Some(st.clock_offset_ms),
                THRESHOLD_MS,
                NOW,
            );
            let _ = kiroku_collector::ingest::clock_flagged(st.clock_offset_ms, THRESHOLD_MS);
        }
        Some(ship_request::Msg::Batch(b)) => {
            let stream = b
                .events
                .first()
                .map(|e| e.stream_id.clone())
                .unwrap_or_default();
            let offset = b.events.first().map(|e| e.clock_offset_ms);
            let mut events = b.events;
            match admit_batch(&mut events, &id, &stream, offset, THRESHOLD_MS, NOW) {
                Ok(()) => {
                    for e in &events {
                        assert_eq!(e.agent_id, id.name);
                        assert_eq!(e.stream_id, stream);
                        assert!(e.seq > 0 && e.kind.is_some());
                        assert_eq!(e.event_id, format!("{}/{}/{}", id.name, stream, e.seq));
                        assert_eq!(e.received_at_ms, NOW);
                        assert!(e.tags.iter().filter(|t| *t == CLOCK_SKEW_TAG).count() <= 1);
                        let at = corrected_ms(e);
                        for off in [-840, 0, 540, 840] {
                            let d = day(at, off);
                            assert!(d == "?" || d.len() >= 10, "{d}");
                        }
                    }
                }
                Err(st) => assert!(
                    matches!(
                        st.code(),
                        tonic::Code::InvalidArgument | tonic::Code::PermissionDenied
                    ),
                    "{st:?}"
                ),
            }
        }
        _ => {}
    }
});
