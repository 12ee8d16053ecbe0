//! AUTH through the relay against a scripted upstream: each attempt one
//! `AuthEvent`, with the claimed user and never the secret.

use kiroku_proto::{AuthEvent, Event, event::Kind};

use super::super::tests::{Harness, Script, scripted_upstream};
use crate::capture::smtp::auth::b64;

const SECRET: &str = "Tr0ub4dor-secret";

fn auth(e: &Event) -> &AuthEvent {
    match &e.kind {
        Some(Kind::Auth(a)) => a,
        other => panic!("not an AUTH record: {other:?}"),
    }
}

/// An upstream that offers AUTH and answers it with `verdict`; LOGIN's
/// user-name line (`login_user`, base64) gets the password prompt.
fn upstream_script(verdict: &str, login_user: &str) -> Script {
    // The scripted upstream answers by a line's first word, upper-cased:
    // a base64 line is its own "verb".
    let user_line: &'static str = Box::leak(b64(login_user).to_ascii_uppercase().into_boxed_str());
    let pass_line: &'static str = Box::leak(b64(SECRET).to_ascii_uppercase().into_boxed_str());
    Script::default()
        .with(
            "EHLO",
            "250-up.test\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME",
        )
        .with("AUTH", verdict)
        .with(user_line, "334 UGFzc3dvcmQ6")
        .with(pass_line, verdict)
}

#[tokio::test]
async fn each_attempt_recorded_with_user_and_never_the_secret() {
    let (up, _) =
        scripted_upstream(upstream_script("535 5.7.8 authentication failed", "bob")).await;
    let h = Harness::start(Some(up)).await;
    let mut c = h.client().await;
    c.reply().await;
    c.cmd("EHLO client.test").await;
    let plain = b64(&format!("\0alice\0{SECRET}"));
    assert_eq!(c.cmd(&format!("AUTH PLAIN {plain}")).await.0, 535);
    // LOGIN: the user name line, then the password line.
    assert_eq!(c.cmd("AUTH LOGIN").await.0, 535);
    let recs = h.records(2).await;
    assert_eq!(recs.len(), 2);
    let a = auth(&recs[0]);
    assert_eq!(
        (a.mechanism.as_str(), a.claimed_user.as_str()),
        ("PLAIN", "alice")
    );
    assert!(!a.success);
    assert_eq!(a.reply_code, 535);
    assert!(a.reply.contains("authentication failed"), "{}", a.reply);
    assert_eq!(a.client_ip, "127.0.0.1");
    assert_eq!(a.upstream, up.to_string());
    // The whole record, encoded, holds neither the password nor the
    // base64 SASL message.
    let bytes = format!("{:?}", recs[0]);
    assert!(
        !bytes.contains(SECRET) && !bytes.contains(&plain),
        "{bytes}"
    );
}

#[tokio::test]
async fn success_then_a_refused_second_attempt() {
    let (up, _) = scripted_upstream(upstream_script("235 2.7.0 ok", "carol")).await;
    let h = Harness::start(Some(up)).await;
    let mut c = h.client().await;
    c.reply().await;
    c.cmd("EHLO client.test").await;
    let plain = b64(&format!("\0carol\0{SECRET}"));
    assert_eq!(c.cmd(&format!("AUTH PLAIN {plain}")).await.0, 235);
    // Already authenticated: refused by the relay itself, recorded too.
    assert_eq!(c.cmd(&format!("AUTH PLAIN {plain}")).await.0, 503);
    let recs = h.records(2).await;
    let (ok, again) = (auth(&recs[0]), auth(&recs[1]));
    assert_eq!((ok.claimed_user.as_str(), ok.success), ("carol", true));
    assert_eq!(ok.reply_code, 235);
    assert_eq!(
        (again.claimed_user.as_str(), again.success),
        ("carol", false)
    );
    assert_eq!(again.reply_code, 503);
    assert!(!format!("{recs:?}").contains(SECRET));
}

#[tokio::test]
async fn login_user_line_only() {
    // The upstream prompts for the user name, then the password.
    let script = upstream_script("535 5.7.8 no", "dave").with("AUTH", "334 VXNlcm5hbWU6");
    let (up, seen) = scripted_upstream(script).await;
    let h = Harness::start(Some(up)).await;
    let mut c = h.client().await;
    c.reply().await;
    c.cmd("EHLO client.test").await;
    assert_eq!(c.cmd("AUTH LOGIN").await.0, 334);
    assert_eq!(c.cmd(&b64("dave")).await.0, 334);
    assert_eq!(c.cmd(&b64(SECRET)).await.0, 535);
    let recs = h.records(1).await;
    let a = auth(&recs[0]);
    assert_eq!(
        (a.mechanism.as_str(), a.claimed_user.as_str()),
        ("LOGIN", "dave")
    );
    assert!(!a.success);
    // The password went to the upstream, and only there.
    assert!(seen.lock().expect("lock").contains(&b64(SECRET)));
    assert!(!format!("{:?}", recs[0]).contains(&b64(SECRET)));
}
