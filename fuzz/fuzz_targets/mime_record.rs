//! MIME → record on arbitrary bytes: never panics, hashes the raw input,
//! and the record is the same whether the message is read in memory or
//! streamed from a file (differential), and the common MIME walker gives
//! the same parts, decoded bodies and warnings whatever the read chunking.
#![no_main]

use std::io::Read;

use kiroku_agent::capture::smtp::record::{self, Envelope};
use kiroku_common::mime;
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

/// A reader that hands out `n` bytes at a time.
struct Trickle<'a> {
    data: &'a [u8],
    n: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.n.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Every leaf's decoded body, by index, and the walk.
fn walk(r: impl std::io::BufRead) -> (mime::Walk, Vec<Vec<u8>>) {
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    let walk = mime::extract_leaf(
        r,
        |_| true,
        |p, chunk| {
            if bodies.len() <= p.index {
                bodies.resize(p.index + 1, Vec::new());
            }
            bodies[p.index].extend_from_slice(chunk);
        },
    )
    .expect("reading from memory cannot fail");
    (walk, bodies)
}

fuzz_target!(|data: &[u8]| {
    let env = Envelope {
        esmtp: true,
        mail_from: "fuzz@example.com".into(),
        ..Default::default()
    };
    let a = record::build(&env, data);
    assert_eq!(a.raw_sha256, hex::encode(Sha256::digest(data)));
    assert_eq!(a.message_size, data.len() as u64);
    let dir = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("tempdir");
    let path = dir.path().join("m");
    std::fs::write(&path, data).expect("write");
    let b = record::build_streamed(&env, &path, data.len() as u64, &a.raw_sha256);
    assert_eq!(a, b);

    // The walker itself: whole input vs small reads of a size the input
    // picks, through a small buffer.
    let whole = walk(data);
    let n = usize::from(data.first().copied().unwrap_or(1) % 13) + 1;
    let cap = usize::from(data.last().copied().unwrap_or(1) % 31) + 1;
    let trickled = walk(std::io::BufReader::with_capacity(cap, Trickle { data, n }));
    assert_eq!(whole, trickled);
    for (info, end) in &whole.0.parts {
        if end.decoded {
            let body = whole.1.get(info.index).map(Vec::as_slice).unwrap_or_default();
            assert_eq!(end.size, body.len() as u64);
            assert_eq!(end.sha256, hex::encode(Sha256::digest(body)));
        }
    }
});
