//! Code shared by the agent, the collector and the CLI: PKI and roles
//! (`pki`), TLS configuration for tonic (`tls`), TOML config loading
//! (`config`), the mail notions every crate shares (`mail`: corrected
//! time, accepted recipients, internal domains), what search filter values
//! mean (`search`), hashing and time helpers, logging set-up. The event model
//! itself is the protobuf in `kiroku-proto`; this crate adds the behaviour
//! around it.

pub mod config;
pub mod mail;
pub mod mime;
pub mod os;
pub mod pki;
pub mod quote;
pub mod search;
pub mod tls;
pub mod vocabulary;
pub mod zone;

pub use kiroku_proto as proto;

use sha2::{Digest, Sha256};

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// True when `s` looks like a lower-case hex SHA-256 digest.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Milliseconds since the Unix epoch on this host's clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A Unix time in milliseconds as RFC 3339 UTC (`2026-11-23T10:15:02.123Z`);
/// the number itself when out of range.
pub fn rfc3339_ms(ms: i64) -> String {
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// An alert as JSON: the webhook body and `kiroku alerts --json` alike.
pub fn alert_json(a: &kiroku_proto::Alert) -> serde_json::Value {
    serde_json::json!({
        "rule": a.rule,
        "kind": a.kind,
        "event_id": a.event_id,
        "fired_at_ms": a.fired_at_ms,
        "severity": alert_severity(a),
        "summary": a.summary,
        "body": a.body,
        "event": a.event,
    })
}

/// An alert's severity: `info`, `warning` or `critical`; a rule's alert
/// (none set) is a `warning`.
pub fn alert_severity(a: &kiroku_proto::Alert) -> &str {
    if a.severity.is_empty() {
        "warning"
    } else {
        &a.severity
    }
}

/// Version string reported by every Kiroku binary.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub use os::shutdown_signal;

/// Host part of an endpoint such as `https://host:port/…` or
/// `https://[::1]:7443`: the name to verify in the server's certificate.
pub fn endpoint_host(endpoint: &str) -> String {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let hostport = rest.split('/').next().unwrap_or(rest);
    if let Some(v6) = hostport.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6).to_owned();
    }
    hostport
        .rsplit_once(':')
        .map_or(hostport, |(h, _)| h)
        .to_owned()
}

/// Initialises `tracing` to stderr. `RUST_LOG` overrides `default_filter`.
pub fn init_logging(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_host_cases() {
        for (ep, host) in [
            ("https://127.0.0.1:7443", "127.0.0.1"),
            ("https://collector.example:7443/", "collector.example"),
            ("https://[::1]:7443", "::1"),
            ("collector", "collector"),
        ] {
            assert_eq!(endpoint_host(ep), host, "{ep}");
        }
    }

    #[test]
    fn sha256_of_known_input() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(is_sha256_hex(&sha256_hex(b"")));
        assert!(!is_sha256_hex("ABC"));
    }
}
