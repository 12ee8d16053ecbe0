//! Client command lines: the strict line reader (CRLF only, no bare CR, no
//! NUL, length cap) on arbitrary bytes, read in odd-sized pieces, and the SASL user
//! extraction on every line read.
#![no_main]

use kiroku_agent::capture::smtp::{auth, wire};
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
        let mut r = tokio::io::BufReader::with_capacity(7, data);
        let mut total = 0;
        loop {
            match wire::read_line(&mut r, 512).await {
                Ok(line) => {
                    // Invariants: no CR/LF/NUL in a line, never longer than
                    // the cap plus nothing.
                    assert!(!line.contains(&b'\n') && !line.contains(&b'\r') && !line.contains(&0));
                    assert!(line.len() <= 512);
                    total += line.len() + 2;
                    assert!(total <= data.len());
                    for mech in auth::RELAYED_MECHANISMS {
                        if let Some(u) = auth::claimed_user(mech, &line) {
                            assert!(!u.is_empty() && !u.chars().any(char::is_control));
                        }
                    }
                }
                Err(wire::WireError::Closed) => break,
                Err(wire::WireError::Io(_)) => break,
                Err(_) => {}
            }
        }
    });
});
