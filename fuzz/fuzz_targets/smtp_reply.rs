//! Upstream replies: the multi-line reply parser, then the EHLO capability
//! and queue-id readers on whatever parses.
#![no_main]

use kiroku_agent::capture::smtp::{upstream, wire};
use libfuzzer_sys::fuzz_target;

/// One current-thread runtime for all runs (in-memory readers never wait).
fn rt() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    rt().block_on(async {
        let mut r = tokio::io::BufReader::with_capacity(5, data);
        for _ in 0..64 {
            match wire::read_reply(&mut r).await {
                Ok(reply) => {
                    assert!((0..=999).contains(&reply.code));
                    assert!(!reply.lines.is_empty() && reply.lines.len() <= 101);
                    // Re-encoding gives back a reply that parses the same.
                    let wire_form = reply.to_wire();
                    let mut again = wire_form.as_slice();
                    let back = wire::read_reply(&mut again).await.expect("re-parse");
                    assert_eq!(back, reply);
                    let caps = upstream::Caps::parse(&reply);
                    let _ = caps.auth_mechanisms();
                    let _ = caps.get("SIZE");
                    let id = upstream::queue_id(&reply);
                    assert!(
                        id.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                    );
                }
                Err(wire::WireError::Closed) | Err(wire::WireError::Io(_)) => break,
                Err(_) => {}
            }
        }
    });
});
