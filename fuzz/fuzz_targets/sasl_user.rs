//! The user a client claims in its first SASL message (`auth::claimed_user`),
//! for every relayed mechanism, two ways:
//!
//! - raw: the fuzz input as the client's line, for each mechanism (and an
//!   unknown one and a lower-case spelling, which must claim nothing);
//! - structured: the input split at 0xFF bytes into authzid, authcid and
//!   secret, encoded as each mechanism's message, which must give back the
//!   user and never depend on the secret.
//!
//! Checked: no panic; a claimed user is non-empty, trimmed, free of control
//! characters; surrounding ASCII whitespace on the line changes nothing.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kiroku_agent::capture::smtp::auth::{self, RELAYED_MECHANISMS, claimed_user};
use libfuzzer_sys::fuzz_target;

fn check_user(u: &Option<String>) {
    if let Some(u) = u {
        assert!(!u.is_empty(), "empty user claimed");
        assert_eq!(u.trim(), u, "untrimmed user {u:?}");
        assert!(!u.chars().any(char::is_control), "control char in {u:?}");
    }
}

/// What a user name must come back as: read as UTF-8 (invalid sequences
/// replaced), trimmed; `None` when that is empty or has control characters.
fn expected(user: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(user);
    let t = s.trim();
    (!t.is_empty() && !t.chars().any(char::is_control)).then(|| t.to_owned())
}

fn b64(bytes: &[u8]) -> Vec<u8> {
    STANDARD.encode(bytes).into_bytes()
}

fn plain(authzid: &[u8], authcid: &[u8], secret: &[u8]) -> Vec<u8> {
    b64(&[authzid, b"\0", authcid, b"\0", secret].concat())
}

fn xoauth2(user: &[u8], token: &[u8]) -> Vec<u8> {
    b64(&[b"user=", user, b"\x01auth=Bearer ", token, b"\x01\x01"].concat())
}

fuzz_target!(|data: &[u8]| {
    // Raw line, every mechanism.
    for mech in RELAYED_MECHANISMS {
        let u = claimed_user(mech, data);
        check_user(&u);
        let padded = [b" \t", data, b" \t"].concat();
        assert_eq!(
            claimed_user(mech, &padded),
            u,
            "{mech}: padding changed the user"
        );
    }
    assert_eq!(claimed_user("CRAM-MD5", data), None);
    assert_eq!(claimed_user("plain", data), None);

    // Structured: authzid 0xFF authcid 0xFF secret.
    let mut f = data.splitn(3, |&b| b == 0xFF);
    let (authzid, authcid, secret) = (
        f.next().unwrap_or_default(),
        f.next().unwrap_or_default(),
        f.next().unwrap_or_default(),
    );
    let other_secret = [secret, b"x"].concat();

    // PLAIN: authzid NUL authcid NUL secret.
    if !authzid.contains(&0) && !authcid.contains(&0) {
        let u = claimed_user("PLAIN", &plain(authzid, authcid, secret));
        check_user(&u);
        assert_eq!(
            u,
            claimed_user("PLAIN", &plain(authzid, authcid, &other_secret)),
            "PLAIN: the claimed user depends on the secret"
        );
        if authzid.is_empty() || authzid == authcid {
            assert_eq!(u, expected(authcid), "PLAIN user");
        }
        // The agent's own login message reads back as its user.
        let (user, pw) = (
            String::from_utf8_lossy(authcid),
            String::from_utf8_lossy(secret),
        );
        assert_eq!(
            claimed_user("PLAIN", auth::plain_response(&user, &pw).as_bytes()),
            expected(authcid),
            "the agent's own PLAIN login"
        );
    }

    // LOGIN: the first continuation is the user name.
    let u = claimed_user("LOGIN", &b64(authcid));
    check_user(&u);
    assert_eq!(u, expected(authcid), "LOGIN user");

    // XOAUTH2: user=U ^A auth=Bearer T ^A ^A.
    if !authcid.contains(&1) {
        let u = claimed_user("XOAUTH2", &xoauth2(authcid, secret));
        check_user(&u);
        assert_eq!(u, expected(authcid), "XOAUTH2 user");
        assert_eq!(
            u,
            claimed_user("XOAUTH2", &xoauth2(authcid, &other_secret)),
            "XOAUTH2: the claimed user depends on the token"
        );
    }
});
