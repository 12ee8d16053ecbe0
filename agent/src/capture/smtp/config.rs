//! The SMTP capture's configuration (`[smtp]` in the agent's TOML file),
//! kept next to the component it configures. Every field is documented
//! here; `packaging/agent.example.toml` is a filled-in copy. Unknown keys
//! are refused; the checks that span sections (relay mode needs an
//! upstream, paths relative to the config file) are in `crate::config`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What the SMTP listener does with accepted mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SmtpMode {
    /// Relay every command to `upstream`, returning its replies.
    Relay,
    /// Accept, record, deliver nothing (sandboxes and demos).
    #[default]
    CaptureOnly,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// Listen addresses of the SMTP capture listener.
    #[serde(default = "default_listen")]
    pub listen: Vec<SocketAddr>,
    #[serde(default)]
    pub mode: SmtpMode,
    /// `host:port` of the upstream MTA (required in relay mode).
    #[serde(default)]
    pub upstream: Option<String>,
    /// Largest message accepted, in bytes (SIZE limit).
    #[serde(default = "default_max_message")]
    pub max_message_bytes: u64,
    /// Name used in our own greeting (capture-only mode).
    #[serde(default)]
    pub hostname: Option<String>,
    /// Most simultaneous client connections. When all are in use, a new
    /// client takes the slot of the connection idle longest with no
    /// transaction open, else of one stalled in a transaction; it is
    /// refused (421) only when every connection is doing real work.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// TLS towards the upstream: "off", "opportunistic" (STARTTLS when the
    /// upstream offers it; the certificate is checked and the result
    /// recorded but not enforced: RFC 7435), "required" (STARTTLS must
    /// succeed and the certificate must verify) or "implicit" (TLS from the
    /// first byte, port 465; verified).
    #[serde(default)]
    pub upstream_tls: UpstreamTls,
    /// PEM bundle of CAs that may sign the upstream's certificate (default:
    /// the system's roots).
    #[serde(default)]
    pub upstream_ca: Option<PathBuf>,
    /// Name to verify in the upstream's certificate (default: the host part
    /// of `upstream`).
    #[serde(default)]
    pub upstream_tls_name: Option<String>,
    /// Credentials the agent itself uses with a fixed smarthost. When set,
    /// clients are not offered AUTH; when absent, clients' AUTH exchanges
    /// pass through to the upstream.
    #[serde(default)]
    pub upstream_auth: Option<UpstreamAuth>,
    /// Certificate and key (PEM) offered to clients with STARTTLS. Without
    /// them STARTTLS is not advertised to clients.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Offer AUTH to clients on a connection that is neither TLS nor
    /// loopback (passwords would cross the network in clear). Default off.
    #[serde(default)]
    pub allow_plaintext_auth: bool,
    /// How long a client may stay silent when a command is due (RFC 5321
    /// 4.5.3.2: 5 minutes) before it gets 421 and is disconnected.
    #[serde(default = "default_command_timeout")]
    pub command_timeout_secs: u64,
    /// How long a client may stay silent in the middle of message data
    /// (RFC 5321 4.5.3.2 data block: 3 minutes).
    #[serde(default = "default_data_block_timeout")]
    pub data_block_timeout_secs: u64,
    /// Longest the whole of a message's data may take, however steadily it
    /// arrives (default 1800 s); the client then gets 421 and the
    /// transaction is recorded as abandoned, nothing delivered.
    #[serde(default = "default_data_timeout")]
    pub data_timeout_secs: u64,
    /// Slowest average rate accepted for message data, in bytes per second
    /// (default 500, Postfix's `smtpd_min_data_rate`; 0: off). A client
    /// gets `data_block_timeout_secs` for free and then must keep up this
    /// rate, so a trickle that stays just under the block timeout still
    /// ends: it gets 421 and its transaction is recorded as abandoned,
    /// nothing delivered. Also decides which DATA connections count as
    /// stalled when connection slots run out.
    #[serde(default = "default_data_min_rate")]
    pub data_min_rate_bytes_per_sec: u64,
    /// What happens to a bare CR or bare LF inside message data (commands
    /// must end in CRLF whatever this says): "reject" (default: the message
    /// is refused with 554 5.6.0 after end-of-data and nothing is delivered)
    /// or "normalise" (each becomes CRLF in what goes upstream and in the
    /// recorded message, which is then marked as normalised). Normalising
    /// changes the message, so it can break DKIM signatures; NUL is refused
    /// either way, and only the client's own `CRLF.CRLF` ends the data.
    #[serde(default)]
    pub bare_line_endings: BareLineEndings,
    /// Client addresses that are this host (addresses or networks, e.g.
    /// `["127.0.0.1", "::1"]`; default: every loopback address). For such
    /// a client the record's `user` is the owner of its socket (found in
    /// /proc); for any other, the client's SMTP AUTH login, or no user at
    /// all (the record says why: `user_source`), never the agent's own
    /// account, since the agent cannot know who sat at another machine.
    #[serde(
        default = "default_local_clients",
        deserialize_with = "local_clients",
        serialize_with = "local_clients_out"
    )]
    pub local_clients: Vec<ipnet::IpNet>,
    // --- relay incidents (issue 20) ---
    /// A relay incident (upstream unreachable, refusing, TLS failing, a
    /// client gone before MAIL...) is closed when it has not happened again
    /// for this long (default 120 s; at least 1 s). Upstream incidents also
    /// close as soon as the upstream answers a greeting and EHLO again.
    #[serde(default = "default_incident_quiet")]
    pub incident_quiet_secs: u64,
    /// While an incident lasts, a `still_open` record with the count so far
    /// is written this often (default 900 s = 15 min; at least 10 s).
    #[serde(default = "default_incident_still_open")]
    pub incident_still_open_secs: u64,
    /// How long the upstream may take to greet after the connection
    /// (RFC 5321 4.5.3.2: 5 minutes, the default; at least 2 s). A client
    /// waits this long for its own greeting, so a shorter wait tells it
    /// sooner that the upstream is stuck.
    #[serde(default = "default_upstream_greeting_timeout")]
    pub upstream_greeting_timeout_secs: u64,
}

fn default_incident_quiet() -> u64 {
    120
}
fn default_incident_still_open() -> u64 {
    900
}
fn default_upstream_greeting_timeout() -> u64 {
    300
}

fn default_local_clients() -> Vec<ipnet::IpNet> {
    ["127.0.0.0/8", "::1/128"]
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// `smtp.local_clients`: each entry an address or a network in CIDR
/// notation.
fn local_clients<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    let list: Vec<String> = Deserialize::deserialize(d)?;
    list.iter()
        .map(|v| {
            v.parse::<ipnet::IpNet>()
                .or_else(|_| v.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "{v:?} is not an IP address or network (write 127.0.0.1 or 10.0.0.0/8)"
                    ))
                })
        })
        .collect()
}

fn local_clients_out<S: serde::Serializer>(v: &[ipnet::IpNet], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(ToString::to_string))
}

impl SmtpConfig {
    /// Is a client at `ip` on this host (`local_clients`)? An IPv4 client
    /// of an IPv6 listener (`::ffff:127.0.0.1`) counts as its IPv4 address.
    pub fn is_local_client(&self, ip: std::net::IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.local_clients.iter().any(|n| n.contains(&ip))
    }
}

/// What DATA does with a bare CR or bare LF (`smtp.bare_line_endings`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum BareLineEndings {
    /// Refuse the message (RFC 5321 section 2.3.8).
    #[default]
    Reject,
    /// Convert each to CRLF and mark the record.
    #[serde(alias = "normalize")]
    Normalise,
}

/// How the relay protects its connection to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTls {
    Off,
    #[default]
    Opportunistic,
    Required,
    Implicit,
}

/// Agent-held smarthost credentials. The password is read from a file so
/// the config itself can be world-readable.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamAuth {
    pub username: String,
    pub password_file: PathBuf,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            listen: default_listen(),
            mode: SmtpMode::default(),
            upstream: None,
            max_message_bytes: default_max_message(),
            hostname: None,
            max_connections: default_max_connections(),
            upstream_tls: UpstreamTls::default(),
            upstream_ca: None,
            upstream_tls_name: None,
            upstream_auth: None,
            tls_cert: None,
            tls_key: None,
            allow_plaintext_auth: false,
            command_timeout_secs: default_command_timeout(),
            data_block_timeout_secs: default_data_block_timeout(),
            data_timeout_secs: default_data_timeout(),
            data_min_rate_bytes_per_sec: default_data_min_rate(),
            bare_line_endings: BareLineEndings::default(),
            local_clients: default_local_clients(),
            incident_quiet_secs: default_incident_quiet(),
            incident_still_open_secs: default_incident_still_open(),
            upstream_greeting_timeout_secs: default_upstream_greeting_timeout(),
        }
    }
}

fn default_listen() -> Vec<SocketAddr> {
    vec![SocketAddr::from(([127, 0, 0, 1], 2525))]
}
fn default_max_message() -> u64 {
    50 * 1024 * 1024
}
fn default_command_timeout() -> u64 {
    300
}
fn default_data_block_timeout() -> u64 {
    180
}
fn default_data_timeout() -> u64 {
    1800
}
fn default_data_min_rate() -> u64 {
    500
}
fn default_max_connections() -> usize {
    256
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_have_defaults_and_unknown_keys_are_refused() {
        let cfg: SmtpConfig = toml::from_str("").expect("empty [smtp]");
        assert_eq!(cfg.max_connections, 256);
        assert_eq!(cfg.data_block_timeout_secs, 180);
        assert_eq!(cfg.data_min_rate_bytes_per_sec, 500);
        assert_eq!(cfg.data_timeout_secs, 1800);
        let cfg: SmtpConfig = toml::from_str(
            "max_connections = 8\ndata_min_rate_bytes_per_sec = 0\ndata_timeout_secs = 60\n",
        )
        .expect("limits set");
        assert_eq!(
            (
                cfg.max_connections,
                cfg.data_min_rate_bytes_per_sec,
                cfg.data_timeout_secs
            ),
            (8, 0, 60)
        );
        let err = toml::from_str::<SmtpConfig>("data_min_rate = 10\n")
            .expect_err("a misspelt key is refused");
        assert!(err.to_string().contains("data_min_rate"), "{err}");
    }

    #[test]
    fn which_clients_are_this_host() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
        let default: SmtpConfig = toml::from_str("").expect("default");
        let only_one: SmtpConfig =
            toml::from_str("local_clients = [\"127.0.0.1\", \"10.9.0.0/16\"]\n").expect("list");
        for (client, by_default, by_list) in [
            ("127.0.0.1", true, true),
            ("127.0.0.2", true, false),
            ("::1", true, false),
            ("::ffff:127.0.0.1", true, true),
            ("10.9.3.4", false, true),
            ("192.0.2.1", false, false),
        ] {
            assert_eq!(default.is_local_client(ip(client)), by_default, "{client}");
            assert_eq!(only_one.is_local_client(ip(client)), by_list, "{client}");
        }
        let err = toml::from_str::<SmtpConfig>("local_clients = [\"localhost\"]\n")
            .expect_err("not an address");
        assert!(
            err.to_string()
                .contains("\"localhost\" is not an IP address"),
            "{err}"
        );
    }
}
