//! A message far over the in-memory parse limit streams through the relay:
//! the upstream gets it byte-identical, the record (built by the streaming
//! MIME scan) names the attachment with the hash of its decoded content,
//! and the collector returns the raw message intact.

use std::time::Duration;

use base64::Engine;
use kiroku_proto::{Outcome, SearchRequest};
use kiroku_tests::{Env, Mode, Upstream, email, free_port, send_mail};
use sha2::{Digest, Sha256};

#[tokio::test(flavor = "multi_thread")]
async fn a_20_mb_attachment_streams_through_and_is_recorded() -> anyhow::Result<()> {
    let env = Env::new()?;
    let up = Upstream::start_with(&env, &["--max-size", "67108864"])?;
    let _collector = env.start_collector()?;
    let smtp = free_port();
    let _agent = env.start_agent("pc-big", smtp, &Mode::Relay(up.port))?;

    let payload: Vec<u8> = (0..15_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&payload);
    let mut raw = b"From: big@example.com\r\nTo: sink@example.org\r\nSubject: big attachment\r\n\
        MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"BIG\"\r\n\r\n\
        --BIG\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nsee attached\r\n\
        --BIG\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\
        Content-Disposition: attachment; filename=\"dump.bin\"\r\n\r\n"
        .to_vec();
    for line in b64.as_bytes().chunks(76) {
        raw.extend_from_slice(line);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"--BIG--\r\n");
    assert!(raw.len() > 20_000_000);

    let sent = send_mail(smtp, "big@example.com", &["sink@example.org"], &raw)?;
    assert_eq!(sent.code, 250, "{sent:?}");
    let got = up.messages();
    assert_eq!(got.len(), 1);
    assert!(
        got[0].0 == raw,
        "upstream copy differs ({} vs {} bytes)",
        got[0].0.len(),
        raw.len()
    );

    let ev = env
        .wait_for(
            SearchRequest {
                subject: "big".into(),
                ..Default::default()
            },
            1,
            Duration::from_secs(60),
        )
        .await?;
    let m = email(&ev[0]);
    assert_eq!(m.outcome, Outcome::Delivered as i32);
    assert_eq!(m.message_size, raw.len() as u64);
    assert_eq!(m.raw_sha256, hex::encode(Sha256::digest(&raw)));
    assert_eq!(m.body_text.trim(), "see attached");
    assert_eq!(m.attachments.len(), 1, "{:?}", m.parse_warnings);
    let a = &m.attachments[0];
    assert_eq!(a.filename, "dump.bin");
    assert_eq!(a.size, payload.len() as u64);
    assert_eq!(a.sha256, hex::encode(Sha256::digest(&payload)));
    assert!(
        env.raw(&ev[0].event_id).await? == raw,
        "collector raw differs"
    );
    Ok(())
}
