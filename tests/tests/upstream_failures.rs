//! The upstream refuses, is unreachable, or dies mid-session: the client
//! gets a clear reply (the upstream's own, or a 4xx so it retries later)
//! and every transaction that started is recorded as an attempt.

use std::process::Command;
use std::time::Duration;

use kiroku_proto::{Outcome, SearchRequest};
use kiroku_tests::{Env, Mode, Proc, Talk, Upstream, data_dir, email, free_port};

#[tokio::test(flavor = "multi_thread")]
async fn refusing_unreachable_and_dying_upstreams() -> anyhow::Result<()> {
    let env = Env::new()?;
    let _collector = env.start_collector()?;

    // Refusing: its 554 greeting reaches the client verbatim.
    let port = free_port();
    let mut refuser = Proc::spawn(
        "refusing smtp",
        Command::new("python3")
            .arg(data_dir().join("refusing_smtp.py"))
            .arg(port.to_string()),
        &env.path().join("refusing.log"),
    )?;
    refuser.wait_port(port)?;
    let smtp = free_port();
    let _a = env.start_agent("pc-refused", smtp, &Mode::Relay(port))?;
    let (mut t, (code, text)) = Talk::connect(smtp)?;
    assert_eq!(code, 554, "{text}");
    assert!(text.contains("not accepting mail from you"), "{text}");
    assert!(t.closed());

    // Unreachable: 421 so the client retries later.
    let dead = free_port();
    let smtp2 = free_port();
    let _b = env.start_agent("pc-unreachable", smtp2, &Mode::Relay(dead))?;
    let (mut t, (code, text)) = Talk::connect(smtp2)?;
    assert_eq!(code, 421, "{text}");
    assert!(text.contains("4.4.1"), "{text}");
    assert!(t.closed());

    // Dies mid-session: the next command gets 451 4.4.1, and both the open
    // transaction and the next attempt are recorded.
    let mut up = Upstream::start(&env)?;
    let smtp3 = free_port();
    let _c = env.start_agent("pc-dying", smtp3, &Mode::Relay(up.port))?;
    let (mut t, _) = Talk::connect(smtp3)?;
    assert_eq!(t.cmd("EHLO desk.example")?.0, 250);
    assert_eq!(t.cmd("MAIL FROM:<first@example.com>")?.0, 250);
    up.kill();
    let (code, text) = t.cmd("RCPT TO:<x@example.org>")?;
    assert_eq!(code, 451, "{text}");
    assert_eq!(t.cmd("RSET")?.0, 451, "upstream still gone");
    let (code, text) = t.cmd("MAIL FROM:<second@example.com>")?;
    assert_eq!(code, 451, "{text}");
    t.cmd("QUIT")?;

    let first = env
        .wait_for(
            SearchRequest {
                sender: "first@example.com".into(),
                ..Default::default()
            },
            1,
            Duration::from_secs(30),
        )
        .await?;
    let m = email(&first[0]);
    assert_eq!(m.outcome, Outcome::Aborted as i32);
    assert_eq!(m.ended_at, "RSET");
    assert_eq!(m.rcpt_to[0].reply_code, 451);
    let second = env
        .wait_for(
            SearchRequest {
                sender: "second@example.com".into(),
                ..Default::default()
            },
            1,
            Duration::from_secs(30),
        )
        .await?;
    let m = email(&second[0]);
    assert_eq!(m.outcome, Outcome::Rejected as i32);
    assert_eq!((m.ended_at.as_str(), m.reply_code), ("MAIL", 451));
    Ok(())
}
