//! `network.inspect`: an `AF_PACKET` socket with a classic BPF filter that
//! passes only the first bytes of the packets that can start a flow's
//! conversation (needs CAP_NET_RAW). The program and why a stateless filter
//! is enough: [`filter`]; turning what it passes into [`Packet`]s:
//! [`packet`]. Only `Packet`s leave this module; their bytes are
//! recognised by the P2P detector and dropped, never stored.
//!
//! The socket: `AF_PACKET`, `SOCK_DGRAM` (the kernel strips the link
//! header, so the filter reads IP headers on any link: Ethernet, lo, tun,
//! WireGuard), protocol ETH_P_ALL, not bound to an interface: every
//! interface of the agent's network namespace. Containers in other
//! namespaces are not seen (the same limit as sock_diag).
//!
//! Safe crate route (the workspace denies `unsafe_code`): socket2 creates
//! the socket (`Domain::PACKET`) and attaches the filter
//! (`Socket::attach_filter`, SO_ATTACH_FILTER, behind its "all" feature);
//! nix receives with `recvmsg` because it hands back the sender's
//! `sockaddr_ll` as a typed `LinkAddr` (its packet type tells an outgoing
//! packet from an incoming one) and parses the SO_RXQ_OVFL control message
//! (the socket's drop counter). Neither socket2 (a `SockAddr` only gives
//! IP addresses out without unsafe) nor rustix (no packet addresses)
//! does both.
//!
//! Other hosts' packets: the filter drops PACKET_OTHERHOST; a frame a
//! bridge forwards between two other hosts, read as PACKET_OUTGOING on the
//! egress port, is dropped here because neither address is this host's
//! ([`local`]).
//!
//! Copies: a packet crossing stacked devices (a bridge and its port, a
//! bond and its slave) is read once per device; [`dedupe`] keeps one.
//!
//! Loss: when the agent reads slower than packets pass, the kernel drops
//! them from the full receive queue (4 MiB asked; SO_RCVBUFFORCE tried for
//! more) and counts them; the count comes back with the next packet
//! received (SO_RXQ_OVFL) and is returned as `Lost.overflows`.

pub mod dedupe;
pub mod filter;
pub mod local;
pub mod packet;

use std::io::{self, IoSliceMut};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{self as nixsock, ControlMessageOwned, LinkAddr, MsgFlags, sockopt};
use socket2::{Domain, Protocol, SockFilter, Socket, Type};

use crate::capture::network::platform::{Lost, Packet, PacketInspector};

/// ETH_P_ALL in network byte order, as `socket(2)` wants it.
const ETH_P_ALL: i32 = 0x0003u16.to_be() as i32;
/// Receive queue asked for.
const RCVBUF: usize = 4 << 20;
/// Packets read per call at most (the caller comes back at once).
const MAX_BATCH: usize = 4096;
/// Read buffer: the largest snap (headers + DNS) fits.
const BUF: usize = 1024;

pub fn open() -> io::Result<Box<dyn PacketInspector>> {
    Ok(Box::new(AfPacket::open()?))
}

/// The inspection socket.
pub struct AfPacket {
    sock: Socket,
    buf: Vec<u8>,
    cmsg: Vec<u8>,
    /// The kernel's drop counter when last reported.
    drops: u32,
    /// Copies of one packet seen on stacked devices (bridge and port).
    dedupe: dedupe::Dedupe,
    /// This host's addresses: packets forwarded between other hosts are
    /// dropped.
    local: local::LocalAddrs,
}

impl AfPacket {
    pub fn open() -> io::Result<AfPacket> {
        let sock = Socket::new(Domain::PACKET, Type::DGRAM, Some(Protocol::from(ETH_P_ALL))).map_err(|e| {
            let hint = if e.kind() == io::ErrorKind::PermissionDenied {
                ": the agent needs CAP_NET_RAW for network.inspect (the packaged unit grants it)"
            } else {
                ""
            };
            io::Error::new(e.kind(), format!("packet inspection socket (AF_PACKET): {e}{hint}"))
        })?;
        let program: Vec<SockFilter> = filter::program()?
            .iter()
            .map(|i| SockFilter::new(i.code, i.jt, i.jf, i.k))
            .collect();
        sock.attach_filter(&program).map_err(|e| {
            io::Error::new(e.kind(), format!("attaching the inspection filter: {e}"))
        })?;
        sock.set_nonblocking(true)?;
        // A larger queue absorbs bursts; forcing past rmem_max needs
        // CAP_NET_ADMIN, which the agent may not have: then the default
        // maximum stands.
        if nixsock::setsockopt(&sock, sockopt::RcvBufForce, &RCVBUF).is_err() {
            let _ = sock.set_recv_buffer_size(RCVBUF);
        }
        nixsock::setsockopt(&sock, sockopt::RxqOvfl, &1)
            .map_err(|e| io::Error::other(format!("SO_RXQ_OVFL on the inspection socket: {e}")))?;
        let mut me = AfPacket {
            sock,
            buf: vec![0; BUF],
            cmsg: nix::cmsg_space!(u32),
            drops: 0,
            dedupe: dedupe::Dedupe::default(),
            local: local::LocalAddrs::default(),
        };
        // Packets queued between socket() and the filter's attachment were
        // not filtered: drop them.
        let mut discard = Vec::new();
        me.drain(&mut discard, MAX_BATCH)?;
        Ok(me)
    }

    /// Reads what is queued (at most `max`), without waiting.
    fn drain(&mut self, out: &mut Vec<Packet>, max: usize) -> io::Result<()> {
        let fd = self.sock.as_raw_fd();
        for _ in 0..max {
            let (bytes, outgoing, ifindex, drops) = {
                let mut iov = [IoSliceMut::new(&mut self.buf)];
                let r = match nixsock::recvmsg::<LinkAddr>(
                    fd,
                    &mut iov,
                    Some(&mut self.cmsg),
                    MsgFlags::MSG_DONTWAIT,
                ) {
                    Ok(r) => r,
                    Err(Errno::EAGAIN) => return Ok(()),
                    Err(Errno::EINTR) => continue,
                    Err(e) => {
                        return Err(io::Error::other(format!(
                            "reading the inspection socket: {e}"
                        )));
                    }
                };
                let outgoing =
                    r.address.map(|a| u32::from(a.pkttype())) == Some(filter::PACKET_OUTGOING);
                let ifindex = r.address.map_or(0, |a| a.ifindex());
                let drops = r.cmsgs().ok().and_then(|mut c| {
                    c.find_map(|m| match m {
                        ControlMessageOwned::RxqOvfl(n) => Some(n),
                        _ => None,
                    })
                });
                (r.bytes, outgoing, ifindex, drops)
            };
            if let Some(d) = drops {
                self.drops = self.drops.max(d);
            }
            let data = &self.buf[..bytes.min(BUF)];
            if self.dedupe.copy(data, ifindex, Instant::now()) {
                continue;
            }
            if let Some(p) = packet::parse(data, outgoing)
                && self.local.mine(&p, Instant::now())
            {
                out.push(p);
            }
        }
        Ok(())
    }
}

impl PacketInspector for AfPacket {
    fn packets(&mut self, wait: Duration, out: &mut Vec<Packet>) -> io::Result<Lost> {
        let before = self.drops;
        let ts = rustix::event::Timespec::try_from(wait).unwrap_or(rustix::event::Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        });
        let mut fds = [rustix::event::PollFd::new(
            &self.sock,
            rustix::event::PollFlags::IN,
        )];
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                return Err(io::Error::other(format!(
                    "waiting on the inspection socket: {e}"
                )));
            }
        }
        self.drain(out, MAX_BATCH)?;
        Ok(Lost {
            overflows: u64::from(self.drops.wrapping_sub(before)),
        })
    }
}

#[cfg(test)]
mod tests;
