//! AUTH exchanges relayed as opaque lines against aiosmtpd (which, unlike
//! our Postfix, speaks XOAUTH2): initial response and continuation forms,
//! the XOAUTH2 error continuation, mechanisms we do not relay, and the
//! authenticated user in the record. Cancel with `*` is checked against
//! Postfix in mta_postfix.rs (aiosmtpd answers a cancel twice).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use kiroku_proto::{Outcome, SearchRequest};
use kiroku_tests::{Env, Mode, Talk, Upstream, email, free_port};

fn xoauth2(user: &str, token: &str) -> String {
    B64.encode(format!("user={user}\x01auth=Bearer {token}\x01\x01"))
}

#[tokio::test(flavor = "multi_thread")]
async fn xoauth2_plain_and_login_pass_through_with_every_continuation_form() -> anyhow::Result<()> {
    let env = Env::new()?;
    let up = Upstream::start_with(&env, &["--auth"])?;
    let _collector = env.start_collector()?;
    let smtp = free_port();
    // aiosmtpd speaks plain text only: the operator says so explicitly,
    // otherwise no AUTH would be passed through (see the Postfix tests).
    let _agent = env.start_agent_in_smtp(
        "pc-oauth",
        smtp,
        &Mode::Relay(up.port),
        "upstream_tls = \"off\"\n",
    )?;

    let (mut t, _) = Talk::connect(smtp)?;
    let (_, ehlo) = t.cmd("EHLO desk.example")?;
    let auth_line = ehlo
        .lines()
        .find(|l| l[4..].starts_with("AUTH"))
        .unwrap_or_default()
        .to_owned();
    for m in ["PLAIN", "LOGIN", "XOAUTH2"] {
        assert!(auth_line.contains(m), "{ehlo}");
    }

    // Not relayed: the record could not say who logged in.
    assert_eq!(t.cmd("AUTH CRAM-MD5")?.0, 504);

    // XOAUTH2 with a bad token: the upstream's error continuation (334 +
    // base64 JSON) reaches the client verbatim; the client's empty line
    // goes back; the final 535 follows.
    let (code, text) = t.cmd(&format!(
        "AUTH XOAUTH2 {}",
        xoauth2("carol@example.com", "stale")
    ))?;
    assert_eq!(code, 334, "{text}");
    let challenge = B64.decode(text[4..].trim())?;
    assert!(String::from_utf8_lossy(&challenge).contains("\"status\": \"401\""));
    let (code, text) = t.cmd("")?;
    assert_eq!(code, 535, "{text}");
    // Still in step with the upstream.
    assert_eq!(t.cmd("NOOP")?.0, 250);

    // XOAUTH2 without an initial response: empty 334, then the token.
    assert_eq!(t.cmd("AUTH XOAUTH2")?.0, 334);
    let (code, text) = t.cmd(&xoauth2("carol@example.com", "good-token"))?;
    assert_eq!(code, 235, "{text}");
    assert_eq!(t.cmd("AUTH PLAIN")?.0, 503, "already authenticated");
    assert_eq!(
        t.cmd("MAIL FROM:<carol@example.com> BODY=8BITMIME SIZE=40")?
            .0,
        250
    );
    assert_eq!(t.cmd("RCPT TO:<dan@example.org>")?.0, 250);
    assert_eq!(t.cmd("DATA")?.0, 354);
    t.send(b"Subject: oauth mail\r\n\r\nhi\r\n.\r\n")?;
    assert_eq!(t.reply()?.0, 250);
    t.cmd("QUIT")?;

    // LOGIN in the continuation form, on a new connection.
    let (mut t, _) = Talk::connect(smtp)?;
    t.cmd("EHLO desk.example")?;
    assert_eq!(t.cmd("AUTH LOGIN")?.0, 334);
    assert_eq!(t.cmd(&B64.encode("alice"))?.0, 334);
    assert_eq!(t.cmd(&B64.encode("s3cret"))?.0, 235);
    assert_eq!(t.cmd("MAIL FROM:<alice@example.com>")?.0, 250);
    assert_eq!(t.cmd("RCPT TO:<dan@example.org>")?.0, 250);
    assert_eq!(t.cmd("DATA")?.0, 354);
    t.send(b"Subject: login mail\r\n\r\nhi\r\n.\r\n")?;
    assert_eq!(t.reply()?.0, 250);
    t.cmd("QUIT")?;

    for (subject, user, mech) in [
        ("oauth mail", "carol@example.com", "XOAUTH2"),
        ("login mail", "alice", "LOGIN"),
    ] {
        let ev = env
            .wait_for(
                SearchRequest {
                    subject: subject.into(),
                    ..Default::default()
                },
                1,
                Duration::from_secs(30),
            )
            .await?;
        let m = email(&ev[0]);
        assert_eq!(m.outcome, Outcome::Delivered as i32);
        assert_eq!(
            (m.auth_user.as_str(), m.auth_mechanism.as_str()),
            (user, mech)
        );
        // `--user` finds mail by the SMTP login too.
        let by_user = env
            .wait_for(
                SearchRequest {
                    user: user.into(),
                    subject: subject.into(),
                    ..Default::default()
                },
                1,
                Duration::from_secs(5),
            )
            .await?;
        assert_eq!(by_user.len(), 1);
    }
    let got = up.messages();
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[0].1["login"], "carol@example.com",
        "upstream saw the login"
    );
    assert_eq!(
        got[0].1["mail_options"],
        serde_json::json!(["BODY=8BITMIME", "SIZE=40"]),
        "MAIL parameters passed verbatim"
    );
    assert_eq!(got[1].1["login"], "alice");
    let log = std::fs::read_to_string(env.path().join("agent-pc-oauth.log"))?;
    for secret in ["good-token", "stale", "s3cret", &B64.encode("s3cret")] {
        assert!(!log.contains(secret), "secret {secret:?} in the agent log");
    }
    Ok(())
}
