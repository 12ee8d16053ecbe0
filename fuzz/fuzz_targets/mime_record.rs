//! MIME → record on arbitrary bytes: never panics, hashes the raw input,
//! and the streaming scan used for large mail gives exactly the record the
//! in-memory parse gives (differential).
#![no_main]

use kiroku_agent::capture::smtp::record::{self, Envelope};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

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
});
