//! The operating system's part of network capture, behind three narrow
//! interfaces so the flow tracking, coalescing and P2P detection above
//! them are shared: [`SocketTable`] (every socket now, and the sockets
//! destroyed since the last look, with the kernel's counters),
//! [`ProcessTable`] (who owns a socket) and [`PacketInspector`] (the first
//! bytes of flows, for `network.inspect`). Linux implements them with
//! sock_diag netlink, `/proc` and `AF_PACKET` (`linux/`); a Windows
//! implementation (GetExtendedTcpTable / GetExtendedUdpTable owning PIDs,
//! ETW for closes, a raw socket or ETW packet capture) follows the same
//! traits (issue 22).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// The kernel's per-socket counters (TCP: `tcp_info`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Payload bytes sent, each once (`tcpi_bytes_sent` −
    /// `tcpi_bytes_retrans`), and received (`tcpi_bytes_received`). Linux
    /// counts a received FIN as one byte in `tcpi_bytes_received`: a
    /// gracefully closed connection's final `bytes_in` is the payload + 1.
    pub bytes_out: u64,
    pub bytes_in: u64,
    /// Segments out / in.
    pub packets_out: u64,
    pub packets_in: u64,
}

/// One socket as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Socket {
    pub protocol: Protocol,
    pub local: SocketAddr,
    /// None for a listening or unconnected socket.
    pub remote: Option<SocketAddr>,
    /// Lower-case state name: "established", "syn_sent", "listen",
    /// "close_wait", ... (UDP: "unconnected" / "established").
    pub state: &'static str,
    pub uid: u32,
    /// The socket's inode: the key to its owner. Linux destroy
    /// notifications carry neither inode nor uid; the Linux table fills
    /// both from its last dump (by cookie), so `inode == 0` in a closed
    /// socket means it was never dumped and its `uid` (0) is unknown.
    pub inode: u64,
    /// The kernel's socket cookie: unique per socket for the boot.
    pub cookie: u64,
    /// None when the kernel does not count for this socket (UDP).
    pub counters: Option<Counters>,
}

/// What a call to [`SocketTable::closed`] could not deliver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lost {
    /// Notifications the kernel dropped (the receive queue overflowed:
    /// ENOBUFS); their sockets are found missing at the next dump.
    pub overflows: u64,
}

pub trait SocketTable: Send {
    /// Every TCP and UDP socket of the network namespace now (IPv4 and
    /// IPv6), listening ones included.
    fn dump(&mut self) -> io::Result<Vec<Socket>>;
    /// Sockets destroyed since the last call, with their final counters;
    /// waits up to `wait` for the first one.
    fn closed(&mut self, wait: Duration, out: &mut Vec<Socket>) -> io::Result<Lost>;
    /// What this source cannot see here (missing privileges, a mechanism
    /// the kernel lacks), one sentence each, for the start log and status.
    fn limits(&self) -> Vec<String>;
}

/// A process that owns sockets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    pub name: String,
    pub exe: String,
    pub cmdline: String,
    pub uid: u32,
    pub user: String,
    pub started_ms: i64,
}

pub trait ProcessTable: Send {
    /// The owners of these socket inodes, as far as they can still be
    /// found (an inode not in the map has no process found now).
    fn owners(&mut self, inodes: &[u64]) -> std::collections::HashMap<u64, Owner>;
    /// The name of a user id ("" when it does not resolve).
    fn user_name(&mut self, uid: u32) -> String;
    /// What this table cannot find here (missing privileges), one
    /// sentence each, for the start log and status.
    fn limits(&self) -> Vec<String> {
        Vec::new()
    }
    /// Whether process `pid` still runs (for inferring owners: of the
    /// processes seen with a peer, the one still running). Unknown: true.
    fn alive(&mut self, _pid: u32) -> bool {
        true
    }
}

/// The endpoints of one packet, as seen on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoints {
    pub protocol: Protocol,
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

/// The start of one packet's payload (at most a few hundred bytes), never
/// kept beyond recognising what it is.
#[derive(Debug, Clone)]
pub struct Packet {
    pub at: Endpoints,
    /// The packet's payload length on the wire (not only what was read).
    pub wire_len: u32,
    /// Sent by this host. On loopback only the incoming copy of a packet
    /// is delivered (false): both endpoints are local, so match the
    /// packet's endpoints against the socket both ways.
    pub outgoing: bool,
    /// The payload's first bytes (Linux: at most the filter's snap length;
    /// empty for a datagram passed only to be counted).
    pub payload: Vec<u8>,
}

pub trait PacketInspector: Send {
    /// Packets the filter passed since the last call; waits up to `wait`
    /// for the first. `Lost.overflows` counts what the kernel dropped.
    fn packets(&mut self, wait: Duration, out: &mut Vec<Packet>) -> io::Result<Lost>;
}

/// This host's implementation.
#[cfg(target_os = "linux")]
pub use super::linux::{open_inspector, open_processes, open_sockets};
