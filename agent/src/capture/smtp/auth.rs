//! SMTP AUTH (RFC 4954) as the relay sees it: which mechanisms it passes
//! through, and the identity a client claims — taken from its first SASL
//! message so the record can say who sent the mail. Secrets are decoded
//! only transiently here and never stored, logged or recorded.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Mechanisms relayed between client and upstream. Others (CRAM-MD5,
/// SCRAM, ...) would hide the user name from the record or bind to the
/// channel, so they are refused with 504.
pub const RELAYED_MECHANISMS: &[&str] = &["PLAIN", "LOGIN", "XOAUTH2"];

/// The authentication identity in the client's first SASL message for
/// `mech` (the initial response, or the first continuation line). `None`
/// when it cannot be read (then the record says "unknown").
pub fn claimed_user(mech: &str, first: &[u8]) -> Option<String> {
    let decoded = STANDARD.decode(first.trim_ascii()).ok()?;
    let user = match mech {
        // authzid NUL authcid NUL passwd
        "PLAIN" => {
            let mut parts = decoded.split(|&b| b == 0);
            let authzid = parts.next()?;
            let authcid = parts.next()?;
            parts.next()?;
            // Compared as sent: invalid UTF-8 on both sides is the same
            // identity, not a proxy login.
            let same = authzid.is_empty() || authzid == authcid;
            let authcid = String::from_utf8_lossy(authcid).into_owned();
            if same {
                authcid
            } else {
                format!("{authcid} (as {})", String::from_utf8_lossy(authzid))
            }
        }
        "LOGIN" => String::from_utf8_lossy(&decoded).into_owned(),
        // "user=" user ^A "auth=Bearer " token ^A ^A
        "XOAUTH2" => decoded
            .split(|&b| b == 1)
            .find_map(|kv| kv.strip_prefix(b"user="))
            .map(|u| String::from_utf8_lossy(u).into_owned())?,
        _ => return None,
    };
    let user = user.trim().to_owned();
    (!user.is_empty() && !user.chars().any(char::is_control)).then_some(user)
}

/// The client's first SASL message for the agent's own credentials.
pub fn plain_response(user: &str, password: &str) -> String {
    STANDARD.encode(format!("\0{user}\0{password}"))
}

pub fn b64(s: &str) -> String {
    STANDARD.encode(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_from_each_mechanism() {
        let plain = b64("\0alice@example.com\0secret");
        assert_eq!(
            claimed_user("PLAIN", plain.as_bytes()).as_deref(),
            Some("alice@example.com")
        );
        let proxied = b64("boss\0alice\0secret");
        assert_eq!(
            claimed_user("PLAIN", proxied.as_bytes()).as_deref(),
            Some("alice (as boss)")
        );
        assert_eq!(
            claimed_user("LOGIN", b64("bob").as_bytes()).as_deref(),
            Some("bob")
        );
        let xo = b64("user=carol@example.com\x01auth=Bearer ya29.token\x01\x01");
        assert_eq!(
            claimed_user("XOAUTH2", xo.as_bytes()).as_deref(),
            Some("carol@example.com")
        );
    }

    #[test]
    fn garbage_claims_nothing() {
        assert_eq!(claimed_user("PLAIN", b"*"), None);
        assert_eq!(claimed_user("PLAIN", b"!!!"), None);
        assert_eq!(claimed_user("PLAIN", b64("nouser").as_bytes()), None);
        assert_eq!(claimed_user("LOGIN", b64("a\r\nb").as_bytes()), None);
        assert_eq!(claimed_user("CRAM-MD5", b64("x").as_bytes()), None);
        assert_eq!(
            claimed_user("XOAUTH2", b64("auth=Bearer x").as_bytes()),
            None
        );
    }

    /// fuzz/regressions/sasl_user/authzid-equals-authcid-invalid-utf8:
    /// authzid == authcid as bytes, but not UTF-8, was taken for a proxy
    /// login ("\u{fffd} (as \u{fffd})").
    #[test]
    fn same_non_utf8_authzid_is_no_proxy() {
        let b = STANDARD.encode(b"\xf2\0\xf2\0pw");
        assert_eq!(
            claimed_user("PLAIN", b.as_bytes()).as_deref(),
            Some("\u{fffd}")
        );
    }

    #[test]
    fn plain_response_round_trips() {
        let r = plain_response("svc", "pw");
        assert_eq!(claimed_user("PLAIN", r.as_bytes()).as_deref(), Some("svc"));
    }
}
