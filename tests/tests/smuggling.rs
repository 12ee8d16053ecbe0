//! SMTP smuggling (CVE-2023-51764/51765/51766): every published end-of-data
//! variant is sent through the agent to a real upstream (aiosmtpd; Postfix
//! too where it can run). The relay must never let a second message
//! through. By default flawed messages are refused (554 5.6.0), recorded
//! as aborted, and nothing reaches the upstream; with
//! `bare_line_endings = "normalise"` each is one message, delivered with
//! clean CRLF lines and the smuggled text inside its body, and recorded as
//! normalised.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use kiroku_proto::{Event, Outcome, SearchRequest};
use kiroku_tests::mta::{LOCAL_DOMAIN, Postfix};
use kiroku_tests::{Env, Mode, Talk, Upstream, email, free_port};

/// The published end-of-data variants; the NUL one is refused in both
/// modes.
const VARIANTS: &[&[u8]] = &[
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

const NORMALISE: &str = "bare_line_endings = \"normalise\"\n";
const VICTIM: &str = "victim@example.org";

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

/// One transaction to `rcpt` whose DATA contains `ending` followed by a
/// smuggled transaction, then the real CRLF.CRLF. Returns the reply to the
/// data.
fn attempt(port: u16, n: usize, ending: &[u8], rcpt: &str) -> anyhow::Result<u16> {
    let s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    assert_eq!(reply(&mut r)?, 220);
    for (cmd, want) in [
        ("EHLO attacker.test\r\n", 250),
        (&*format!("MAIL FROM:<attacker{n}@example.com>\r\n"), 250),
        (&*format!("RCPT TO:<{rcpt}>\r\n"), 250),
        ("DATA\r\n", 354),
    ] {
        w.write_all(cmd.as_bytes())?;
        assert_eq!(reply(&mut r)?, want, "{cmd}");
    }
    let mut data =
        format!("From: attacker{n}@example.com\r\nSubject: smuggle {n}\r\n\r\nfirst").into_bytes();
    data.extend_from_slice(ending);
    data.extend_from_slice(
        format!("MAIL FROM:<ceo@example.com>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\nFrom: ceo@example.com\r\nSubject: SMUGGLED\r\n\r\nwire the money\r\n.\r\n").as_bytes(),
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
    let variants = VARIANTS;
    for (n, v) in variants.iter().enumerate() {
        let code = attempt(smtp, n, v, VICTIM)?;
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

fn has_nul(v: &[u8]) -> bool {
    v.contains(&0)
}

/// CR and LF only as CRLF, no NUL.
fn crlf_only(b: &[u8]) -> bool {
    !b.contains(&0)
        && b.iter().enumerate().all(|(i, &c)| match c {
            b'\r' => b.get(i + 1) == Some(&b'\n'),
            b'\n' => i > 0 && b[i - 1] == b'\r',
            _ => true,
        })
}

/// What every normalised attempt must look like as one message: its own
/// headers, then the smuggled transaction as body text.
fn is_one_message_with_the_smuggled_text(raw: &[u8]) -> bool {
    let text = String::from_utf8_lossy(raw);
    text.starts_with("From: attacker")
        && text.contains("MAIL FROM:<ceo@example.com>")
        && text.contains("Subject: SMUGGLED")
        && text.contains("wire the money")
}

/// Records of the attempts, one per variant, checked: the NUL one refused
/// and unmarked, every other delivered and marked normalised. Returns
/// (subject, record) of the delivered ones.
async fn normalised_records(env: &Env) -> anyhow::Result<Vec<(String, Event)>> {
    let events = env
        .wait_for(
            SearchRequest {
                subject: "smuggle".into(),
                ..Default::default()
            },
            VARIANTS.len(),
            Duration::from_secs(30),
        )
        .await?;
    assert_eq!(events.len(), VARIANTS.len());
    let mut delivered = Vec::new();
    for e in events {
        let m = email(&e);
        let n: usize = m
            .subject
            .trim_start_matches("smuggle ")
            .parse()
            .expect("subject smuggle <n>");
        let v = VARIANTS[n];
        if has_nul(v) {
            assert_eq!(m.outcome, Outcome::Aborted as i32, "{v:?}");
            assert_eq!(m.reply_code, 554, "{v:?}");
            continue;
        }
        assert_eq!(m.outcome, Outcome::Delivered as i32, "{v:?}: {m:?}");
        assert!(!m.line_endings_normalised.is_empty(), "{v:?} not marked");
        assert!(
            e.tags.iter().any(|t| t == "normalised-line-endings"),
            "{v:?}: tags {:?}",
            e.tags
        );
        assert_eq!(m.rcpt_to.len(), 1, "{v:?}: one recipient, the real one");
        delivered.push((m.subject.clone(), e));
    }
    assert_eq!(delivered.len(), VARIANTS.len() - 1);
    Ok(delivered)
}

#[tokio::test(flavor = "multi_thread")]
async fn normalising_relay_delivers_each_variant_as_one_clean_message() -> anyhow::Result<()> {
    let env = Env::new()?;
    let _collector = env.start_collector()?;
    let upstream = Upstream::start(&env)?;
    let smtp = free_port();
    let mut agent =
        env.start_agent_in_smtp("pc-n", smtp, &Mode::Relay(upstream.port), NORMALISE)?;
    for (n, v) in VARIANTS.iter().enumerate() {
        let code = attempt(smtp, n, v, VICTIM)?;
        let want = if has_nul(v) { 554 } else { 250 };
        assert_eq!(code, want, "variant {v:?}");
    }
    // Exactly one message per attempt reached the upstream, from the
    // attacker to the victim, with clean CRLF lines (aiosmtpd keeps the line
    // endings it received) and the smuggled transaction inside its body.
    let got = upstream.messages();
    assert_eq!(got.len(), VARIANTS.len() - 1, "one message per attempt");
    for (raw, envelope) in &got {
        let text = String::from_utf8_lossy(raw);
        assert!(crlf_only(raw), "bare CR/LF reached the upstream: {text:?}");
        assert!(is_one_message_with_the_smuggled_text(raw), "{text:?}");
        assert_eq!(
            envelope["rcpt_tos"],
            serde_json::json!([VICTIM]),
            "{text:?}"
        );
        let from = envelope["mail_from"].as_str().unwrap_or_default();
        assert!(from.starts_with("attacker"), "{from}");
    }
    // The record is marked, and its raw message is exactly what went
    // upstream (not the client's bytes).
    for (subject, e) in normalised_records(&env).await? {
        let sent = got
            .iter()
            .find(|(raw, _)| {
                String::from_utf8_lossy(raw).contains(&format!("Subject: {subject}\r\n"))
            })
            .map(|(raw, _)| raw.clone())
            .unwrap_or_default();
        assert_eq!(env.raw(&e.event_id).await?, sent, "{subject}");
    }
    // Commands are not DATA: a command line with a bare LF still gets 421.
    let (mut t, (code, _)) = Talk::connect(smtp)?;
    assert_eq!(code, 220);
    t.send(b"NOOP\n")?;
    assert_eq!(t.reply()?.0, 421);
    assert!(agent.is_running());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn normalising_relay_in_front_of_postfix_refusing_bare_lf() -> anyhow::Result<()> {
    kiroku_tests::need_peer!(Postfix);
    let env = Env::new()?;
    // Postfix itself refuses any line ending in a bare LF (550), so an
    // attempt it accepts carried none.
    let pf = Postfix::start_refusing_bare_lf(&env)?;
    let _collector = env.start_collector()?;
    let smtp = free_port();
    let mut agent = env.start_agent_in_smtp("pc-np", smtp, &Mode::Relay(pf.port), NORMALISE)?;
    let rcpt = format!("victim@{LOCAL_DOMAIN}");
    for (n, v) in VARIANTS.iter().enumerate() {
        let code = attempt(smtp, n, v, &rcpt)?;
        let want = if has_nul(v) { 554 } else { 250 };
        assert_eq!(code, want, "variant {v:?}\n{}", pf.log());
    }
    // Each delivered record names the message Postfix queued; it holds the
    // smuggled transaction as body.
    for (subject, e) in normalised_records(&env).await? {
        let m = email(&e);
        assert!(!m.upstream_queue_id.is_empty(), "{subject}: {m:?}");
        let queued = pf.queued(&m.upstream_queue_id)?;
        let body = queued.split_once("\n\n").map_or("", |(_, b)| b);
        for want in [
            "MAIL FROM:<ceo@example.com>",
            "Subject: SMUGGLED",
            "wire the money",
        ] {
            assert!(
                body.contains(want),
                "{subject}: {want:?} not in the body: {queued}"
            );
        }
    }
    // No second message: Postfix holds one per delivered attempt, each
    // from its attacker, none from the smuggled sender.
    let queue = pf.queue()?;
    assert_eq!(queue.len(), VARIANTS.len() - 1, "{queue:?}");
    for q in &queue {
        let sender = q["sender"].as_str().unwrap_or_default();
        assert!(sender.starts_with("attacker"), "{q}");
    }
    assert!(!pf.log().contains("bare <LF>"), "{}", pf.log());
    assert!(agent.is_running());
    Ok(())
}

/// A bare CR inside a command line is refused (500) and never reaches the
/// upstream, where a server that takes CR as a line end would see a second
/// command; an HTTP request on the SMTP port is answered and closed
/// (issue 15, low findings).
#[tokio::test(flavor = "multi_thread")]
async fn bare_cr_commands_and_http_requests_are_refused() -> anyhow::Result<()> {
    let env = Env::new()?;
    let _collector = env.start_collector()?;
    let upstream = Upstream::start(&env)?;
    let smtp = free_port();
    let _agent = env.start_agent("pc-cr", smtp, &Mode::Relay(upstream.port))?;

    let (mut t, _) = Talk::connect(smtp)?;
    assert_eq!(t.cmd("EHLO client.test")?.0, 250);
    assert_eq!(t.cmd("MAIL FROM:<a@example.com>")?.0, 250);
    for line in [
        format!("RCPT TO:<b@example.org>\rRCPT TO:<{VICTIM}>"),
        format!("NOOP\rRCPT TO:<{VICTIM}>"),
        format!("RCPT TO:<{VICTIM}>\r"),
    ] {
        let (code, text) = t.cmd(&line)?;
        assert_eq!(code, 500, "{line:?}: {text}");
        assert!(text.contains("Bare CR"), "{line:?}: {text}");
    }
    // The session goes on cleanly after the refusals.
    assert_eq!(t.cmd("RCPT TO:<c@example.org>")?.0, 250);
    assert_eq!(t.cmd("DATA")?.0, 354);
    assert_eq!(t.cmd("Subject: after bare CR\r\n\r\nok\r\n.")?.0, 250);
    let got = upstream.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].1["rcpt_tos"],
        serde_json::json!(["c@example.org"]),
        "only the clean recipient reached the upstream"
    );

    for request in [
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "POST /submit HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n",
        "CONNECT smtp.example.com:25 HTTP/1.1\r\n\r\n",
    ] {
        let (mut t, _) = Talk::connect(smtp)?;
        t.send(request.as_bytes())?;
        let (code, text) = t.reply()?;
        assert!((500..600).contains(&code), "{request:?}: {text}");
        assert!(t.closed(), "{request:?}: connection closed");
    }
    Ok(())
}
