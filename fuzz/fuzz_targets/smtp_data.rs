//! Message data: `wire::read_data` / `DataReader` on arbitrary bytes, read
//! in 1-, 3- and 4096-byte pieces, with a small and a large size limit, in
//! both `smtp.bare_line_endings` modes (reject, normalise), forwarding
//! chunks through a `Stuffer` the way the session relays them.
//!
//! Invariants (S = the input with a virtual CRLF in front, since DATA
//! content starts at a line start):
//!
//! 1. The data ends exactly after the first `CRLF.CRLF` in S and at no
//!    other place: `Ok` iff S contains one, and nothing after it is
//!    consumed (pipelined commands stay in the reader). Bare CR, bare LF and
//!    NUL never end the data, in either mode.
//! 2. The result agrees with a plain byte-at-a-time reading of RFC 5321
//!    (dot-unstuffing, CRLF line ends; bare CR / bare LF / NUL flagged
//!    separately; when normalising, a bare CR or LF is content as CRLF)
//!    and is the same however the input is split. Where the data ends and
//!    the flaws do not depend on the mode.
//! 3. The size limit: `size` counts all content, `bytes` is its first
//!    `limit` bytes, `too_big` iff `size > limit`.
//! 4. Content that is not refused (no flaw; when normalising, no NUL) has
//!    CR and LF only as CRLF, no NUL, and is empty or ends with CRLF. (It
//!    MAY contain `CRLF.CRLF`: a stuffed `..` line, or a "." line made by
//!    normalising, is the content line `.`.)
//! 5. What the relay forwards upstream before the end (chunks while not
//!    refused, dot-stuffed) never contains an end-of-data, so a refused or
//!    oversized message cut off midway can never be completed by the
//!    client's bytes; for an accepted message, forwarded bytes + finish equal
//!    `write_data(content)`, whose only end-of-data is its last line, and
//!    reading that back gives the content unchanged and consumes all of it.
#![no_main]

use kiroku_agent::capture::smtp::wire::{self, BareLineEndings, DataFlaws, DataReader, Stuffer};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq)]
struct Got {
    bytes: Vec<u8>,
    size: u64,
    too_big: bool,
    flaws: DataFlaws,
    consumed: usize,
}

/// Position just after the first end-of-data in `data` (start counts as a
/// line start), if any.
fn first_end(data: &[u8]) -> Option<usize> {
    if data.starts_with(b".\r\n") {
        return Some(3);
    }
    data.windows(5)
        .position(|w| w == b"\r\n.\r\n")
        .map(|i| i + 5)
}

/// No NUL; CR and LF only as CRLF.
fn crlf_only(b: &[u8]) -> bool {
    !b.contains(&0)
        && b.iter().enumerate().all(|(i, &c)| match c {
            b'\r' => b.get(i + 1) == Some(&b'\n'),
            b'\n' => i > 0 && b[i - 1] == b'\r',
            _ => true,
        })
}

/// RFC 5321 DATA read byte by byte: (content, flaws, consumed).
fn reference(input: &[u8], mode: BareLineEndings) -> Option<(Vec<u8>, DataFlaws, usize)> {
    let (mut out, mut fl, mut at_start) = (Vec::new(), DataFlaws::default(), true);
    let mut i = 0;
    while i < input.len() {
        if at_start && input[i..].starts_with(b".\r\n") {
            return Some((out, fl, i + 3));
        }
        if at_start && input[i] == b'.' {
            i += 1;
            at_start = false;
            continue;
        }
        at_start = false;
        let b = input[i];
        match b {
            b'\r' if input.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 2;
                at_start = true;
                continue;
            }
            // A CR at the very end may still be followed by LF.
            b'\r' if i + 1 == input.len() => return None,
            b'\r' => fl.bare_cr = true,
            b'\n' => fl.bare_lf = true,
            0 => fl.nul = true,
            _ => {}
        }
        match (b, mode) {
            // Normalised: a line end in the content, not in the framing (the
            // next byte is no line start).
            (b'\r' | b'\n', BareLineEndings::Normalise) => out.extend_from_slice(b"\r\n"),
            _ => out.push(b),
        }
        i += 1;
    }
    None
}

/// Reads like the session does; returns the result and what was forwarded.
async fn read(
    data: &[u8],
    cap: usize,
    limit: u64,
    mode: BareLineEndings,
) -> (Option<Got>, Vec<u8>, Stuffer) {
    let mut r = tokio::io::BufReader::with_capacity(cap, data);
    let mut d = DataReader::new(limit, mode);
    let mut bytes = Vec::new();
    let mut fwd = Vec::new();
    let mut stuffer = Stuffer::default();
    loop {
        let chunk = match d.next(&mut r).await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(wire::WireError::Closed) => return (None, fwd, stuffer),
            Err(e) => panic!("unexpected error on in-memory input: {e}"),
        };
        bytes.extend_from_slice(&chunk);
        if chunk.is_empty() || d.too_big() || d.refused() {
            continue;
        }
        stuffer.write(&mut fwd, &chunk).await.expect("write");
    }
    let consumed = data.len() - r.get_ref().len() - r.buffer().len();
    let got = Got {
        bytes,
        size: d.size(),
        too_big: d.too_big(),
        flaws: d.flaws(),
        consumed,
    };
    (Some(got), fwd, stuffer)
}

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
        for mode in [BareLineEndings::Reject, BareLineEndings::Normalise] {
            check(data, mode).await;
        }
        // 2: the mode changes the content only, never the framing.
        let r = reference(data, BareLineEndings::Reject);
        let n = reference(data, BareLineEndings::Normalise);
        assert_eq!(
            r.map(|r| (r.1, r.2)),
            n.map(|n| (n.1, n.2)),
            "framing depends on the mode"
        );
    });
});

async fn check(data: &[u8], mode: BareLineEndings) {
    let want = reference(data, mode);
    // 1: ends at the first CRLF.CRLF, and only there.
    assert_eq!(
        want.as_ref().map(|w| w.2),
        first_end(data),
        "reference disagrees with first CRLF.CRLF"
    );
    let small = (data.len() / 3) as u64;
    let mut full: Option<Got> = None;
    for limit in [1 << 20, small] {
        let mut first: Option<Option<Got>> = None;
        for cap in [1, 3, 4096] {
            let (got, fwd, mut stuffer) = read(data, cap, limit, mode).await;
            // 5: no end-of-data in what went upstream before the end.
            assert_eq!(first_end(&fwd), None, "forwarded data ends early");
            assert!(crlf_only(&fwd), "bare CR, LF or NUL forwarded");
            // 2: reference, whatever the split.
            let Some(g) = got else {
                assert!(want.is_none(), "no end found but the reference has one");
                continue;
            };
            let (ref_bytes, ref_flaws, ref_consumed) = want.clone().expect("reference end");
            assert_eq!(g.flaws, ref_flaws, "flaws (cap {cap})");
            assert_eq!(g.consumed, ref_consumed, "consumed (cap {cap})");
            // 3: the limit.
            assert_eq!(g.size, ref_bytes.len() as u64);
            assert_eq!(g.too_big, g.size > limit);
            let keep = ref_bytes.len().min(limit as usize);
            assert_eq!(
                g.bytes,
                ref_bytes[..keep],
                "content (cap {cap}, limit {limit})"
            );
            if !g.flaws.refused(mode) && !g.too_big {
                // 5: the relayed form is exactly write_data(content).
                let mut relayed = fwd.clone();
                stuffer.finish(&mut relayed).await.expect("finish");
                let mut whole = Vec::new();
                wire::write_data(&mut whole, &g.bytes).await.expect("write");
                assert_eq!(relayed, whole, "chunked relay differs from write_data");
            }
            match &first {
                None => first = Some(Some(g)),
                Some(f) => assert_eq!(f.as_ref(), Some(&g), "split changes the result"),
            }
        }
        if limit == 1 << 20 {
            full = first.flatten();
        }
    }
    let Some(g) = full else { return };
    if g.flaws.refused(mode) {
        return;
    }
    // 4: accepted content.
    let c = &g.bytes;
    assert!(crlf_only(c), "bare CR, LF or NUL in accepted content");
    assert!(c.is_empty() || c.ends_with(b"\r\n"));
    // 5: the stuffed form ends only at its last line; a strict reader (the
    // upstream) reads it back unchanged and flawless.
    let mut stuffed = Vec::new();
    wire::write_data(&mut stuffed, c).await.expect("write");
    assert_eq!(
        first_end(&stuffed),
        Some(stuffed.len()),
        "content could end the data early"
    );
    let mut r = stuffed.as_slice();
    let back = wire::read_data(&mut r, 1 << 20, BareLineEndings::Reject)
        .await
        .expect("read back");
    assert!(!back.flaws.any());
    assert_eq!(&back.bytes, c);
    assert!(r.is_empty());
}
