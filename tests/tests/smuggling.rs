//! SMTP smuggling (CVE-2023-51764/51765/51766): every published end-of-data
//! variant is sent through the agent to a real upstream (aiosmtpd). The
//! relay must never let a second message through: flawed messages are
//! refused (554 5.6.0), recorded as aborted, and nothing reaches the
//! upstream.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use kiroku_proto::{Outcome, SearchRequest};
use kiroku_tests::{Env, Mode, Upstream, email, free_port};

/// Reads one (possibly multi-line) reply; returns its code.
fn reply(r: &mut impl BufRead) -> anyhow::Result<u16> {
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            anyhow::bail!("connection closed");
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0));
        }
    }
}

/// One transaction whose DATA contains `ending` followed by a smuggled
/// transaction, then the real CRLF.CRLF. Returns the reply to the data.
fn attempt(port: u16, n: usize, ending: &[u8]) -> anyhow::Result<u16> {
    let s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    assert_eq!(reply(&mut r)?, 220);
    for (cmd, want) in [
        ("EHLO attacker.test\r\n", 250),
        (&*format!("MAIL FROM:<attacker{n}@example.com>\r\n"), 250),
        ("RCPT TO:<victim@example.org>\r\n", 250),
        ("DATA\r\n", 354),
    ] {
        w.write_all(cmd.as_bytes())?;
        assert_eq!(reply(&mut r)?, want, "{cmd}");
    }
    let mut data =
        format!("From: attacker{n}@example.com\r\nSubject: smuggle {n}\r\n\r\nfirst").into_bytes();
    data.extend_from_slice(ending);
    data.extend_from_slice(
        b"MAIL FROM:<ceo@example.com>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nFrom: ceo@example.com\r\nSubject: SMUGGLED\r\n\r\nwire the money\r\n.\r\n",
    );
    // The real end, in case the relay did not treat the variant as one.
    data.extend_from_slice(b"\r\n.\r\n");
    w.write_all(&data)?;
    let code = reply(&mut r)?;
    let _ = w.write_all(b"QUIT\r\n");
    Ok(code)
}

#[tokio::test(flavor = "multi_thread")]
async fn no_end_of_data_variant_smuggles_a_second_message() -> anyhow::Result<()> {
    let env = Env::new()?;
    let _collector = env.start_collector()?;
    let upstream = Upstream::start(&env)?;
    let smtp = free_port();
    let mut agent = env.start_agent("pc-s", smtp, &Mode::Relay(upstream.port))?;
    let variants: &[&[u8]] = &[
        b"\n.\n",
        b"\r.\r",
        b"\r.\n",
        b"\n.\r",
        b"\n.\r\n",
        b"\r\n.\n",
        b"\r.\r\n",
        b"\r\n.\r",
        b"\r\n\x00.\r\n",
        b"\r\r\n",
    ];
    for (n, v) in variants.iter().enumerate() {
        let code = attempt(smtp, n, v)?;
        assert_eq!(code, 554, "variant {v:?} must be refused");
    }
    let got = upstream.messages();
    assert!(
        got.is_empty(),
        "nothing may reach the upstream, got {} messages",
        got.len()
    );
    // Each attempt is on record, marked aborted.
    let events = env
        .wait_for(
            SearchRequest {
                subject: "smuggle".into(),
                ..Default::default()
            },
            variants.len(),
            Duration::from_secs(30),
        )
        .await?;
    assert_eq!(events.len(), variants.len());
    assert!(
        events
            .iter()
            .all(|e| email(e).outcome == Outcome::Aborted as i32 && email(e).reply_code == 554)
    );

    // A clean message with commands pipelined right after its end is two
    // honest transactions, both delivered.
    let s = TcpStream::connect(("127.0.0.1", smtp))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    assert_eq!(reply(&mut r)?, 220);
    w.write_all(b"EHLO client.test\r\n")?;
    assert_eq!(reply(&mut r)?, 250);
    w.write_all(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")?;
    assert_eq!(
        (reply(&mut r)?, reply(&mut r)?, reply(&mut r)?),
        (250, 250, 354)
    );
    w.write_all(b"Subject: one\r\n\r\nx\r\n.\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<c@example.org>\r\nDATA\r\n")?;
    assert_eq!(
        (
            reply(&mut r)?,
            reply(&mut r)?,
            reply(&mut r)?,
            reply(&mut r)?
        ),
        (250, 250, 250, 354)
    );
    w.write_all(b"Subject: two\r\n\r\ny\r\n.\r\nQUIT\r\n")?;
    assert_eq!((reply(&mut r)?, reply(&mut r)?), (250, 221));
    let got = upstream.messages();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0, b"Subject: one\r\n\r\nx\r\n");
    assert_eq!(got[1].0, b"Subject: two\r\n\r\ny\r\n");
    assert!(agent.is_running());
    Ok(())
}
