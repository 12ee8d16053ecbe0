//! `[network]`: what the network capture records and how much it may cost
//! (issue 21). Every key is optional; the section absent means off.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Record the host's network activity (off unless set; the packaged
    /// config and `kiroku quickstart` turn it on).
    #[serde(default)]
    pub enabled: bool,
    /// Milliseconds between two full socket dumps (sock_diag on Linux). A
    /// socket opened and closed between two dumps is still recorded from
    /// its destroy notification (TCP and UDP, with CAP_NET_ADMIN), but its
    /// process can only be inferred (see `NetworkEvent.attribution`).
    #[serde(default = "default_dump_interval_ms")]
    pub dump_interval_ms: u64,
    /// Seconds between two `update` records of a long-lived flow.
    #[serde(default = "default_update_secs")]
    pub update_secs: u64,
    /// Seconds of one coalescing interval: beyond `coalesce_after` flows of
    /// one process to one remote ip:port in an interval, the rest are one
    /// `summary` record per interval (count, bytes) instead of one record
    /// each.
    #[serde(default = "default_summary_secs")]
    pub summary_secs: u64,
    #[serde(default = "default_coalesce_after")]
    pub coalesce_after: u32,
    /// Records written per second at most (flows beyond it are coalesced
    /// into summaries; what even summaries cannot hold is a `gap` record).
    #[serde(default = "default_max_records_per_sec")]
    pub max_records_per_sec: u32,
    /// Flows tracked in memory at most; beyond it new flows are counted in
    /// a `gap` record (reason `flow_table_full`).
    #[serde(default = "default_max_flows")]
    pub max_flows: usize,
    /// Look up the reverse DNS name of remote addresses (cached, at most
    /// `reverse_dns_per_sec` lookups per second, never waited for).
    #[serde(default = "default_true")]
    pub reverse_dns: bool,
    #[serde(default = "default_reverse_dns_per_sec")]
    pub reverse_dns_per_sec: u32,
    /// Record loopback flows (127.0.0.0/8, ::1) too; off by default: they
    /// are the host talking to itself (the relay's own traffic included).
    #[serde(default)]
    pub loopback: bool,
    /// Leave out the agent's own connection to the collector (default on).
    #[serde(default = "default_true")]
    pub exclude_collector: bool,
    /// Flows not recorded: each entry's given conditions must all hold.
    #[serde(default)]
    pub exclude: Vec<Exclusion>,
    /// Read the first bytes of each flow (AF_PACKET with a classic BPF
    /// filter; needs CAP_NET_RAW) to recognise P2P protocols and DNS
    /// answers. Only those bytes are looked at, never stored.
    #[serde(default)]
    pub inspect: bool,
    #[serde(default)]
    pub p2p: P2pConfig,
}

/// One `[[network.exclude]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Exclusion {
    /// Remote address or network ("10.0.0.0/8", "2001:db8::/32").
    #[serde(default)]
    pub remote: Option<ipnet::IpNet>,
    /// Remote (or, for inbound and listening sockets, local) port.
    #[serde(default)]
    pub port: Option<u16>,
    /// Process name or executable path.
    #[serde(default)]
    pub process: Option<String>,
}

/// `[network.p2p]`: when a process counts as doing P2P.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct P2pConfig {
    /// Executable names of known P2P clients (matched case-insensitively
    /// against the process name and the executable's file name).
    #[serde(default = "default_clients")]
    pub clients: Vec<String>,
    /// Distinct remote peers (ip:port, both ports >= `high_port`) of one
    /// process within `window_secs` that make `many_peers` fire.
    #[serde(default = "default_min_peers")]
    pub min_peers: u32,
    #[serde(default = "default_high_port")]
    pub high_port: u16,
    #[serde(default = "default_window_secs")]
    pub window_secs: u64,
    /// Seconds without any P2P sign after which an episode is `ended`.
    #[serde(default = "default_quiet_secs")]
    pub quiet_secs: u64,
    /// Seconds between two `update` records of an episode in progress.
    #[serde(default = "default_p2p_update_secs")]
    pub update_secs: u64,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            enabled: false,
            dump_interval_ms: default_dump_interval_ms(),
            update_secs: default_update_secs(),
            summary_secs: default_summary_secs(),
            coalesce_after: default_coalesce_after(),
            max_records_per_sec: default_max_records_per_sec(),
            max_flows: default_max_flows(),
            reverse_dns: true,
            reverse_dns_per_sec: default_reverse_dns_per_sec(),
            loopback: false,
            exclude_collector: true,
            exclude: Vec::new(),
            inspect: false,
            p2p: P2pConfig::default(),
        }
    }
}

impl Default for P2pConfig {
    fn default() -> Self {
        P2pConfig {
            clients: default_clients(),
            min_peers: default_min_peers(),
            high_port: default_high_port(),
            window_secs: default_window_secs(),
            quiet_secs: default_quiet_secs(),
            update_secs: default_p2p_update_secs(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_dump_interval_ms() -> u64 {
    1000
}
fn default_update_secs() -> u64 {
    300
}
fn default_summary_secs() -> u64 {
    60
}
fn default_coalesce_after() -> u32 {
    5
}
fn default_max_records_per_sec() -> u32 {
    200
}
fn default_max_flows() -> usize {
    100_000
}
fn default_reverse_dns_per_sec() -> u32 {
    10
}
fn default_min_peers() -> u32 {
    10
}
fn default_high_port() -> u16 {
    1024
}
fn default_window_secs() -> u64 {
    300
}
fn default_quiet_secs() -> u64 {
    600
}
fn default_p2p_update_secs() -> u64 {
    600
}
fn default_clients() -> Vec<String> {
    [
        "qbittorrent",
        "qbittorrent-nox",
        "transmission-daemon",
        "transmission-cli",
        "transmission-gtk",
        "transmission-qt",
        "aria2c",
        "deluged",
        "deluge",
        "rtorrent",
        "ktorrent",
        "utorrent",
        "bittorrent",
        "biglybt",
        "vuze",
        "frostwire",
        "tixati",
        "webtorrent",
        "picotorrent",
        "amule",
        "amuled",
        "emule",
        "shareaza",
        "winny",
        "share",
        "perfectdark",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}
