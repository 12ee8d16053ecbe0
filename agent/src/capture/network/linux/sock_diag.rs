//! sock_diag (NETLINK_SOCK_DIAG): full dumps of TCP and UDP sockets with
//! `tcp_info`, and the destroyed-socket multicast groups (what `ss -E`
//! shows).
//!
//! Privileges, as measured on Linux 6.18 (not as assumed): dumps need
//! none (every user's sockets, with `tcp_info`), and joining the destroy
//! groups needs none either — sock_diag's netlink table allows
//! non-root multicast receivers (checked as uid nobody with no
//! capabilities, and by `without_cap_net_admin_only_the_forced_buffer_fails`).
//! CAP_NET_ADMIN only lets the notification buffer be forced past
//! `net.core.rmem_max` (SO_RCVBUFFORCE). A kernel that refuses the bind
//! is handled: no notifications, and `limits()` says why.
//!
//! Two netlink sockets: one for dump requests, one bound to the four
//! destroy groups, so a dump's answers never interleave with
//! notifications. A destroy notification is the socket's `inet_diag_msg`
//! taken as the kernel frees it, with its final `tcp_info`; the kernel
//! leaves uid and inode zero in it (`inet_diag_handler_get_info`), so
//! [`SockDiag::closed`] fills them by cookie from the last two dumps when the
//! socket was in it (inode 0 then means "never dumped": uid unknown).
//!
//! Measured (`measure_tests.rs`, debug build, 2 shared cores, Linux
//! 6.18): a dump of 1,000 sockets takes ~20 ms, of 10,000 ~91 ms
//! (9 µs/socket; `ss -tuinaH` took 219 ms for the same table). A queued
//! TCP notification costs ~1,280 bytes of receive buffer: the kernel's
//! default buffer (rmem_default 212,992) holds 166 of them — 5,000 closed
//! connections unread lost 9,834 of their 10,000 notifications, each one
//! counted — while the default 16 MiB forced buffer (32 MiB granted)
//! held all 10,000. Read continuously, 42,000–121,000 notifications/s
//! are taken in; the test's generator (~750 connections/s, 1,500
//! notifications/s on this box) lost none with either buffer. Loss thus
//! comes from the reader stalling: at 1,000 connections/s the default
//! buffer overflows after ~80 ms, the 32 MiB one after ~13 s (without
//! CAP_NET_ADMIN: rmem_max, 4 MiB here → 8 MiB granted, ~3 s).
//!
//! Overflow: notifications go through the socket's receive queue; when it
//! is full the kernel drops them, counts each in the socket's `sk_drops`
//! and makes the next `recv` fail with ENOBUFS once. The exact number
//! dropped is read from the `Drops` column of `/proc/self/net/netlink`
//! for our socket's inode (1 per ENOBUFS if that file cannot be read).

use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant};

use rustix::net::sockopt;

use super::diag_msg::{
    self, AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP, SOCK_DIAG_BY_FAMILY, TCP_STATES, UDP_STATES,
};
use super::netlink::{self, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR};
use crate::capture::network::platform::{Lost, Socket, SocketTable};

/// SKNLGRP_INET_TCP_DESTROY = 1, INET_UDP_DESTROY = 2,
/// INET6_TCP_DESTROY = 3, INET6_UDP_DESTROY = 4: group g is bit g - 1.
const DESTROY_GROUPS: u32 = 0b1111;

/// The notification receive buffer asked for by default: 16 MiB holds
/// about 30,000 TCP notifications (~550 bytes of skb each) between two
/// reads. With CAP_NET_ADMIN it is forced past `net.core.rmem_max`.
pub const DEFAULT_RCVBUF: usize = 16 << 20;

const CAP_NET_ADMIN: u32 = 12;

/// Longest wait for the next part of a dump's answer.
const DUMP_TIMEOUT: Duration = Duration::from_secs(5);

/// How the table is opened (the tests use small buffers to measure).
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// SO_RCVBUF(FORCE) of the notification socket; None keeps the
    /// kernel's default (`net.core.rmem_default`).
    pub rcvbuf: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rcvbuf: Some(DEFAULT_RCVBUF),
        }
    }
}

pub struct SockDiag {
    dump: netlink::Socket,
    events: Option<Events>,
    /// Why there are no destroy notifications (the bind error).
    events_error: Option<String>,
    seq: u32,
    buf: Vec<u8>,
    /// cookie → (uid, inode) of the last dump, for notifications.
    known: HashMap<u64, (u32, u64)>,
    /// The same for sockets of the dump before that are not in the last
    /// one: their notification may be read only after the next dump.
    previous: HashMap<u64, (u32, u64)>,
}

struct Events {
    sock: netlink::Socket,
    /// Our socket's inode, its row in /proc/self/net/netlink.
    inode: u64,
    /// `sk_drops` when last read.
    drops: u64,
    /// What the kernel granted (it doubles the asked value).
    rcvbuf: usize,
    forced: bool,
    /// When `sk_drops` was last read with the queue drained.
    drops_checked: Instant,
}

/// How often a drained queue's drop count is read: the kernel reports
/// ENOBUFS once per overflow episode, so drops after that report and
/// before the queue drains would otherwise wait for the next episode.
const DROPS_CHECK_EVERY: Duration = Duration::from_millis(250);

/// Opens the netlink sockets for dumps and destroy notifications.
pub fn open() -> io::Result<Box<dyn SocketTable>> {
    Ok(Box::new(SockDiag::open(Options::default())?))
}

impl SockDiag {
    pub fn open(opts: Options) -> io::Result<SockDiag> {
        let dump = netlink::Socket::open(0).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("opening a NETLINK_SOCK_DIAG socket failed: {e} (is this Linux with sock_diag / inet_diag built?)"),
            )
        })?;
        // A dump the kernel never finishes must not hang the runner.
        sockopt::set_socket_timeout(dump.fd(), sockopt::Timeout::Recv, Some(DUMP_TIMEOUT))?;
        let (events, events_error) = match Events::open(opts) {
            Ok(ev) => (Some(ev), None),
            Err(e) => (None, Some(e.to_string())),
        };
        Ok(SockDiag {
            dump,
            events,
            events_error,
            seq: 0,
            buf: vec![0u8; 256 << 10],
            known: HashMap::new(),
            previous: HashMap::new(),
        })
    }

    /// Whether destroy notifications are being received.
    pub fn notifies(&self) -> bool {
        self.events.is_some()
    }

    /// The notification socket's receive buffer as granted, and whether
    /// it was forced past `net.core.rmem_max`.
    pub fn rcvbuf(&self) -> Option<(usize, bool)> {
        self.events.as_ref().map(|e| (e.rcvbuf, e.forced))
    }

    fn dump_one(
        &mut self,
        family: u8,
        protocol: u8,
        states: u32,
        out: &mut Vec<Socket>,
    ) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let body = diag_msg::dump_request(family, protocol, states);
        let req = netlink::request(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, &body);
        self.dump.send(&req)?;
        loop {
            let n = self.dump.recv(&mut self.buf, false)?.unwrap_or(0);
            for m in netlink::messages(&self.buf[..n]) {
                if m.seq != seq {
                    continue; // the tail of an earlier, abandoned dump
                }
                match m.kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => match netlink::error_code(m.payload) {
                        0 => {} // an acknowledgement
                        code => return Err(io::Error::from_raw_os_error(-code)),
                    },
                    SOCK_DIAG_BY_FAMILY => {
                        if let Some(s) = diag_msg::parse(m.payload, Some(protocol)) {
                            out.push(s);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

impl Events {
    fn open(opts: Options) -> io::Result<Events> {
        let sock = netlink::Socket::open(DESTROY_GROUPS).map_err(|e| {
            let why = if has_cap(CAP_NET_ADMIN) == Some(false) {
                "the agent lacks CAP_NET_ADMIN (CapEff in /proc/self/status)"
            } else {
                "the kernel refused"
            };
            io::Error::new(
                e.kind(),
                format!("joining the sock_diag destroy groups failed: {e}: {why}"),
            )
        })?;
        let mut forced = false;
        if let Some(size) = opts.rcvbuf {
            forced = sockopt::set_socket_recv_buffer_size_force(sock.fd(), size).is_ok();
            if !forced {
                // Capped at net.core.rmem_max; not fatal.
                let _ = sockopt::set_socket_recv_buffer_size(sock.fd(), size);
            }
        }
        let rcvbuf = sockopt::socket_recv_buffer_size(sock.fd()).unwrap_or(0);
        let inode = rustix::fs::fstat(sock.fd())
            .map(|st| st.st_ino)
            .unwrap_or(0);
        let drops = netlink_drops(inode).unwrap_or(0);
        Ok(Events {
            sock,
            inode,
            drops,
            rcvbuf,
            forced,
            drops_checked: Instant::now(),
        })
    }

    /// Drops counted by the kernel since the last look, read when the
    /// queue is drained (at most every `DROPS_CHECK_EVERY`).
    fn dropped_quietly(&mut self) -> u64 {
        if self.drops_checked.elapsed() < DROPS_CHECK_EVERY {
            return 0;
        }
        self.drops_checked = Instant::now();
        self.drops_since_last().unwrap_or(0)
    }

    /// The drops since the last look (at least 1: an ENOBUFS happened).
    fn overflowed(&mut self) -> u64 {
        self.drops_since_last().unwrap_or(1).max(1)
    }

    /// `sk_drops` now minus when last read; None when it cannot be read.
    fn drops_since_last(&mut self) -> Option<u64> {
        let now = netlink_drops(self.inode)?;
        let lost = now.saturating_sub(self.drops);
        self.drops = now;
        Some(lost)
    }
}

impl SocketTable for SockDiag {
    fn dump(&mut self) -> io::Result<Vec<Socket>> {
        let mut out = Vec::with_capacity(self.known.len() + 16);
        for family in [AF_INET, AF_INET6] {
            self.dump_one(family, IPPROTO_TCP, TCP_STATES, &mut out)
                .and_then(|()| self.dump_one(family, IPPROTO_UDP, UDP_STATES, &mut out))
                .map_err(|e| io::Error::new(e.kind(), format!("sock_diag dump failed: {e}")))?;
        }
        let known: HashMap<_, _> = out.iter().map(|s| (s.cookie, (s.uid, s.inode))).collect();
        let mut previous = std::mem::replace(&mut self.known, known);
        previous.retain(|cookie, _| !self.known.contains_key(cookie));
        self.previous = previous;
        Ok(out)
    }

    fn closed(&mut self, wait: Duration, out: &mut Vec<Socket>) -> io::Result<Lost> {
        let mut lost = Lost::default();
        let Some(ev) = self.events.as_mut() else {
            std::thread::sleep(wait);
            return Ok(lost);
        };
        let deadline = Instant::now() + wait;
        let mut got_any = false;
        loop {
            match ev.sock.recv(&mut self.buf, true) {
                Ok(Some(n)) => {
                    got_any = true;
                    for m in netlink::messages(&self.buf[..n]) {
                        if m.kind != SOCK_DIAG_BY_FAMILY {
                            continue;
                        }
                        if let Some(mut s) = diag_msg::parse(m.payload, None) {
                            let dumped = self.known.remove(&s.cookie);
                            if let Some((uid, inode)) =
                                dumped.or_else(|| self.previous.remove(&s.cookie))
                            {
                                if s.inode == 0 {
                                    s.inode = inode;
                                }
                                if s.uid == 0 {
                                    s.uid = uid;
                                }
                            }
                            out.push(s);
                        }
                    }
                }
                Ok(None) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if got_any || left.is_zero() || !ev.sock.readable(left)? {
                        lost.overflows += ev.dropped_quietly();
                        return Ok(lost);
                    }
                }
                Err(e) if netlink::is_enobufs(&e) => {
                    got_any = true;
                    lost.overflows += ev.overflowed();
                }
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("reading sock_diag destroy notifications failed: {e}"),
                    ));
                }
            }
        }
    }

    fn limits(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(why) = &self.events_error {
            out.push(format!(
                "no destroy notifications ({why}): connections opened and closed between two dumps are missed, and a closed connection's final counters are those of the last dump; grant CAP_NET_ADMIN (the packaged unit does)"
            ));
        }
        if let Some(ev) = &self.events
            && !ev.forced
        {
            out.push(format!(
                "the destroy-notification buffer is {} bytes (net.core.rmem_max caps it without CAP_NET_ADMIN): bursts of closes beyond it are lost and reported as gaps",
                ev.rcvbuf
            ));
        }
        out.push(
            "UDP sockets have no byte or packet counters through sock_diag (counted only from inspected packets when network.inspect is on)".into(),
        );
        out.push(
            "only the agent's network namespace is seen: containers with their own namespace are not".into(),
        );
        out
    }
}

/// The `Drops` column of our row (by inode) in /proc/self/net/netlink.
fn netlink_drops(inode: u64) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/net/netlink").ok()?;
    drops_of(&text, inode)
}

/// `sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode`.
fn drops_of(text: &str, inode: u64) -> Option<u64> {
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let ino: u64 = f.get(9)?.parse().ok()?;
        if ino == inode {
            f.get(8)?.parse().ok()
        } else {
            None
        }
    })
}

/// Whether capability `bit` is in this process's effective set (None when
/// /proc/self/status cannot be read).
pub fn has_cap(bit: u32) -> Option<bool> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    cap_in(&status, "CapEff:", bit)
}

fn cap_in(status: &str, field: &str, bit: u32) -> Option<bool> {
    let hex = status.lines().find_map(|l| l.strip_prefix(field))?.trim();
    let set = u64::from_str_radix(hex, 16).ok()?;
    Some(set & (1u64 << bit) != 0)
}

#[cfg(test)]
#[path = "sock_diag_tests.rs"]
mod tests;
