//! A client that goes silent cannot hold a session: with the timeouts
//! shortened for the test, an idle client gets 421 and is disconnected, a
//! client that stops in the middle of DATA likewise, and its unfinished
//! transaction is recorded (aborted, ended by TIMEOUT) while nothing
//! reaches the upstream. A slow-loris that trickles one byte at a time
//! without ever ending the line is cut off too.

use std::time::{Duration, Instant};

use kiroku_proto::{Outcome, SearchRequest};
use kiroku_tests::{Env, Mode, Talk, Upstream, email, free_port};

#[tokio::test(flavor = "multi_thread")]
async fn silent_and_trickling_clients_are_cut_off_and_recorded() -> anyhow::Result<()> {
    let env = Env::new()?;
    let up = Upstream::start(&env)?;
    let _collector = env.start_collector()?;
    let smtp = free_port();
    let _agent = env.start_agent_in_smtp(
        "pc-stuck",
        smtp,
        &Mode::Relay(up.port),
        "command_timeout_secs = 1\ndata_block_timeout_secs = 1\n",
    )?;

    // Idle after the greeting.
    let (mut t, _) = Talk::connect(smtp)?;
    let started = Instant::now();
    let (code, text) = t.reply()?;
    assert_eq!(code, 421, "{text}");
    assert!(text.contains("4.4.2"), "{text}");
    assert!(t.closed());
    assert!(started.elapsed() < Duration::from_secs(30));

    // Stops in the middle of the message.
    let (mut t, _) = Talk::connect(smtp)?;
    t.cmd("EHLO desk.example")?;
    assert_eq!(t.cmd("MAIL FROM:<stuck@example.com>")?.0, 250);
    assert_eq!(t.cmd("RCPT TO:<x@example.org>")?.0, 250);
    assert_eq!(t.cmd("DATA")?.0, 354);
    t.send(b"Subject: never finished\r\n\r\nhalf a bo")?;
    let (code, text) = t.reply()?;
    assert_eq!(code, 421, "{text}");
    assert!(t.closed());

    // Slow-loris: a command line trickled a byte at a time, never ended.
    let (mut t, _) = Talk::connect(smtp)?;
    let trickle = std::thread::spawn(move || {
        for b in b"EHLO sloooooooooooooooooow".iter().cycle().take(40) {
            if t.send(&[*b]).is_err() {
                return (t, true);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        (t, false)
    });
    let (mut t, _) = trickle
        .join()
        .map_err(|_| anyhow::anyhow!("trickle thread"))?;
    let (code, _) = t.reply()?;
    assert_eq!(code, 421, "trickling client told to go");
    assert!(t.closed());

    assert!(up.messages().is_empty(), "nothing half-sent was delivered");
    let ev = env
        .wait_for(
            SearchRequest {
                sender: "stuck@example.com".into(),
                ..Default::default()
            },
            1,
            Duration::from_secs(30),
        )
        .await?;
    let m = email(&ev[0]);
    assert_eq!(m.outcome, Outcome::Aborted as i32);
    assert_eq!(m.ended_at, "TIMEOUT");
    Ok(())
}
