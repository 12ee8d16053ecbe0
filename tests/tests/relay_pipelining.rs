//! RFC 2920 pipelining through the relay. A client's pipelined MAIL/RCPT/
//! DATA group goes to the upstream in one write only when the upstream
//! offered PIPELINING; otherwise each command waits for its reply. Either
//! way the client gets every reply in order and each recipient is recorded
//! with its own reply.
//!
//! The upstream here is a minimal SMTP server written for the test (a
//! thread on a loopback port) because the point is what arrives on its
//! socket: for each command line it notes whether more input had already
//! arrived with it, which in lock-step cannot happen (the relay sends the
//! next command only after reading this one's reply). The same grouping
//! against a real Postfix is in `mta_postfix.rs`.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiroku_proto::{Outcome, SearchRequest};
use kiroku_tests::{Env, Mode, Talk, email, free_port};

/// Does the test upstream offer PIPELINING?
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Offer {
    Pipelining,
    LockStepOnly,
}

/// Each command the test upstream received, and whether more input was
/// already waiting behind it when it was read.
type Seen = Arc<Mutex<Vec<(String, bool)>>>;

/// Serves connections on `listener` until the test ends: refuses
/// `MAIL FROM:<refused@...>` and `RCPT TO:<nobody@...>` with 550, closes
/// the connection at `RCPT TO:<drop@...>`, answers RCPT without MAIL and
/// DATA without an accepted recipient with 503 (as a real server does to
/// the rest of a pipelined group), accepts everything else.
fn upstream(listener: TcpListener, offer: Offer, seen: Seen) {
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let seen = seen.clone();
            std::thread::spawn(move || {
                let _ = serve(stream, offer, &seen);
            });
        }
    });
}

fn serve(stream: TcpStream, offer: Offer, seen: &Seen) -> std::io::Result<()> {
    let mut w = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    w.write_all(b"220 test-upstream ESMTP\r\n")?;
    // The transaction: MAIL accepted, recipients accepted.
    let (mut mail, mut rcpts) = (false, 0);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_owned();
        let upper = cmd.to_ascii_uppercase();
        seen.lock()
            .expect("seen")
            .push((cmd.clone(), !r.buffer().is_empty()));
        let reply: &[u8] = if upper.starts_with("EHLO") {
            match offer {
                Offer::Pipelining => b"250-test-upstream\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
                Offer::LockStepOnly => b"250-test-upstream\r\n250 8BITMIME\r\n",
            }
        } else if upper.starts_with("MAIL FROM:<REFUSED@") {
            b"550 5.7.1 sender refused\r\n"
        } else if upper.starts_with("MAIL") {
            (mail, rcpts) = (true, 0);
            b"250 2.1.0 Ok\r\n"
        } else if upper.starts_with("RCPT TO:<DROP@") {
            return Ok(());
        } else if upper.starts_with("RCPT") && !mail {
            b"503 5.5.1 need MAIL\r\n"
        } else if upper.starts_with("RCPT TO:<NOBODY@") {
            b"550 5.1.1 no such user\r\n"
        } else if upper.starts_with("RCPT") {
            rcpts += 1;
            b"250 2.1.5 Ok\r\n"
        } else if upper == "DATA" && rcpts == 0 {
            b"503 5.5.1 need RCPT\r\n"
        } else if upper == "DATA" {
            (mail, rcpts) = (false, 0);
            w.write_all(b"354 go ahead\r\n")?;
            loop {
                let mut l = String::new();
                if r.read_line(&mut l)? == 0 {
                    return Ok(());
                }
                if l == ".\r\n" {
                    break;
                }
            }
            b"250 2.0.0 Ok: queued as T1\r\n"
        } else if upper == "QUIT" {
            w.write_all(b"221 bye\r\n")?;
            return Ok(());
        } else {
            b"250 2.0.0 Ok\r\n"
        };
        w.write_all(reply)?;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_groups_go_upstream_in_one_write_only_when_offered() -> anyhow::Result<()> {
    let env = Env::new()?;
    let _collector = env.start_collector()?;
    for offer in [Offer::Pipelining, Offer::LockStepOnly] {
        let listener = kiroku_tests::bind_local()?;
        let port = listener.local_addr()?.port();
        let seen: Seen = Arc::default();
        upstream(listener, offer, seen.clone());
        let smtp = free_port();
        let name = format!("pc-pipe-{offer:?}").to_lowercase();
        let _agent = env.start_agent(&name, smtp, &Mode::Relay(port))?;

        let (mut t, _) = Talk::connect(smtp)?;
        let (code, ehlo) = t.cmd("EHLO client.test")?;
        assert_eq!(code, 250);
        assert!(ehlo.contains("PIPELINING"), "{ehlo}");
        let subject = format!("pipe-{offer:?}");
        // One write: the envelope with a refused recipient in the middle,
        // DATA last (RFC 2920); the message after the 354.
        t.send(
            b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<nobody@example.org>\r\nRCPT TO:<c@example.org>\r\nDATA\r\n",
        )?;
        let mut codes = Vec::new();
        for _ in 0..5 {
            codes.push(t.reply()?.0);
        }
        assert_eq!(codes, [250, 250, 550, 250, 354], "{offer:?}");
        t.send(format!("Subject: {subject}\r\n\r\nbody\r\n.\r\n").as_bytes())?;
        assert_eq!(t.reply()?.0, 250);
        assert_eq!(t.cmd("QUIT")?.0, 221);

        let seen = seen.lock().expect("seen").clone();
        let followed = |verb: &str| {
            seen.iter()
                .find(|(c, _)| c.to_ascii_uppercase().starts_with(verb))
                .map(|(_, more)| *more)
                .unwrap_or_else(|| panic!("{verb} not relayed: {seen:?}"))
        };
        let ehlo_followed = followed("EHLO");
        assert!(!ehlo_followed, "EHLO is never pipelined: {seen:?}");
        match offer {
            Offer::Pipelining => assert!(
                followed("MAIL") && !followed("DATA"),
                "MAIL, RCPTs and DATA in one write, DATA last: {seen:?}"
            ),
            Offer::LockStepOnly => assert!(
                seen.iter().all(|(_, more)| !more),
                "an upstream without PIPELINING never gets pipelined input: {seen:?}"
            ),
        }
        let ev = env
            .wait_for(
                SearchRequest {
                    subject: subject.clone(),
                    ..Default::default()
                },
                1,
                Duration::from_secs(30),
            )
            .await?;
        let m = email(&ev[0]);
        assert_eq!(m.outcome, Outcome::Delivered as i32);
        let rcpt: Vec<(&str, u32)> = m
            .rcpt_to
            .iter()
            .map(|r| (r.address.as_str(), r.reply_code))
            .collect();
        assert_eq!(
            rcpt,
            [
                ("b@example.org", 250),
                ("nobody@example.org", 550),
                ("c@example.org", 250)
            ],
            "{offer:?}"
        );
    }
    Ok(())
}

/// What goes wrong inside a pipelined group reaches the client reply by
/// reply: a refused MAIL makes the upstream refuse the rest (503s, passed
/// on verbatim, no DATA phase, the transaction recorded as rejected at
/// MAIL); an upstream that drops the connection part-way leaves the
/// commands it did not answer with a temporary failure, and the next
/// transaction reconnects.
#[tokio::test(flavor = "multi_thread")]
async fn refusals_and_failures_inside_a_pipelined_group() -> anyhow::Result<()> {
    let env = Env::new()?;
    let _collector = env.start_collector()?;
    let listener = kiroku_tests::bind_local()?;
    let port = listener.local_addr()?.port();
    let seen: Seen = Arc::default();
    upstream(listener, Offer::Pipelining, seen.clone());
    let smtp = free_port();
    let _agent = env.start_agent("pc-pipe-fail", smtp, &Mode::Relay(port))?;

    let (mut t, _) = Talk::connect(smtp)?;
    assert_eq!(t.cmd("EHLO client.test")?.0, 250);
    t.send(b"MAIL FROM:<refused@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")?;
    let mut replies = Vec::new();
    for _ in 0..3 {
        replies.push(t.reply()?);
    }
    let codes: Vec<u16> = replies.iter().map(|r| r.0).collect();
    assert_eq!(codes, [550, 503, 503], "{replies:?}");
    assert!(replies[0].1.contains("sender refused"), "{replies:?}");
    assert!(replies[2].1.contains("need RCPT"), "verbatim: {replies:?}");
    // The session goes on: no DATA phase was entered.
    assert_eq!(t.cmd("NOOP")?.0, 250);

    // The upstream drops the connection at the second recipient.
    t.send(
        b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<drop@example.org>\r\nDATA\r\n",
    )?;
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(t.reply()?.0);
    }
    assert_eq!(codes[..2], [250, 250], "{codes:?}");
    assert!(
        codes[2..].iter().all(|c| (400..500).contains(c)),
        "unanswered commands fail temporarily: {codes:?}"
    );
    assert_eq!(t.cmd("RSET")?.0, 250, "reconnected to the upstream");
    // And the next transaction goes through on the new connection.
    t.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<c@example.org>\r\nDATA\r\n")?;
    let mut codes = Vec::new();
    for _ in 0..3 {
        codes.push(t.reply()?.0);
    }
    assert_eq!(codes, [250, 250, 354]);
    t.send(b"Subject: after-drop\r\n\r\nbody\r\n.\r\n")?;
    assert_eq!(t.reply()?.0, 250);
    assert_eq!(t.cmd("QUIT")?.0, 221);

    let refused = env
        .wait_for(
            SearchRequest {
                sender: "refused@example.com".into(),
                ..Default::default()
            },
            1,
            Duration::from_secs(30),
        )
        .await?;
    let m = email(&refused[0]);
    assert_eq!(m.outcome, Outcome::Rejected as i32);
    assert_eq!(m.ended_at, "MAIL");
    assert_eq!(m.reply_code, 550);
    env.wait_for(
        SearchRequest {
            subject: "after-drop".into(),
            outcome: "delivered".into(),
            ..Default::default()
        },
        1,
        Duration::from_secs(30),
    )
    .await?;
    Ok(())
}
