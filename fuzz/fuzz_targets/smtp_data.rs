//! Message data: the DATA reader must never end anywhere but at CRLF.CRLF,
//! must give the same result however the input is split, and what it
//! accepts as clean must survive dot-stuffing and reading back unchanged
//! with no way for the content to end the data early (smuggling).
#![no_main]

use kiroku_agent::capture::smtp::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let read = |cap: usize| async move {
            let mut r = tokio::io::BufReader::with_capacity(cap, data);
            wire::read_data(&mut r, 1 << 20)
                .await
                .ok()
                .map(|d| (d.bytes, d.flaws, d.size))
        };
        let a = read(1).await;
        let b = read(3).await;
        let c = read(4096).await;
        assert_eq!(a, b);
        assert_eq!(b, c);
        let Some((content, flaws, _)) = c else { return };
        if flaws.any() {
            return;
        }
        // Clean content: CRLF line ends only.
        assert!(!content.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'));
        let mut stuffed = Vec::new();
        wire::write_data(&mut stuffed, &content)
            .await
            .expect("write");
        // The only end-of-data in the stuffed form is its last line.
        let end = if stuffed.starts_with(b".\r\n") {
            0
        } else {
            stuffed.len() - 5
        };
        let first_end = if stuffed.starts_with(b".\r\n") {
            Some(0)
        } else {
            stuffed.windows(5).position(|w| w == b"\r\n.\r\n")
        };
        assert_eq!(first_end, Some(end), "content could end the data early");
        let mut r = stuffed.as_slice();
        let back = wire::read_data(&mut r, 1 << 20).await.expect("read back");
        assert!(!back.flaws.any());
        assert_eq!(back.bytes, content);
        assert!(r.is_empty());
    });
});
