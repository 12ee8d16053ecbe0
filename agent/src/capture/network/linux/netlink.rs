//! A raw `NETLINK_SOCK_DIAG` socket and the framing of netlink messages
//! (`nlmsghdr`, `nlattr`), parsed by hand from byte slices.
//!
//! Why by hand rather than `netlink-packet-sock-diag` + `netlink-sys`
//! (rust-netlink): sock_diag needs four fixed structs (`nlmsghdr`,
//! `inet_diag_req_v2`, `inet_diag_msg`, the `tcp_info` fields we read) and
//! the attribute walk — about 150 lines of checked slice reads with no
//! `unsafe` (the workspace denies it; rustix does the syscalls). The
//! rust-netlink crates pull five more crates (netlink-packet-core/-utils,
//! bitflags 1, lazy_static, anyhow in their API), their `TcpInfo` stops
//! before `tcpi_bytes_sent` (kernel 4.19), so the outgoing byte count would
//! have had to be parsed by hand anyway, and the destroy groups would still
//! be a raw bind. Every read here is bounds-checked: a short or malformed
//! message is skipped or an error, never a panic.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::io::Errno;
use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::{
    AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType, bind, recv, sendto, socket_with,
};

pub const NLMSG_HDRLEN: usize = 16;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_DUMP: u16 = 0x300;

/// One netlink message: its type and payload (after the header).
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub kind: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

/// The messages of one `recv` buffer. A truncated trailing message ends
/// the iteration (the kernel never splits a message across datagrams).
pub fn messages(buf: &[u8]) -> impl Iterator<Item = Message<'_>> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        let len = u32_at(rest, 0)? as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return None;
        }
        let m = Message {
            kind: u16_at(rest, 4)?,
            seq: u32_at(rest, 8)?,
            payload: &rest[NLMSG_HDRLEN..len],
        };
        rest = rest.get(align4(len)..).unwrap_or(&[]);
        Some(m)
    })
}

/// The attributes (`nlattr`: length, type, value) in `buf`.
pub fn attributes(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        let len = u16_at(rest, 0)? as usize;
        if len < 4 || len > rest.len() {
            return None;
        }
        // The top bits of the type are flags (NLA_F_NESTED, ...).
        let kind = u16_at(rest, 2)? & 0x3fff;
        let value = &rest[4..len];
        rest = rest.get(align4(len)..).unwrap_or(&[]);
        Some((kind, value))
    })
}

/// The errno of an `NLMSG_ERROR` payload (0 = an acknowledgement).
pub fn error_code(payload: &[u8]) -> i32 {
    u32_at(payload, 0).map_or(0, |v| v as i32)
}

/// A request message: header + `body`.
pub fn request(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDRLEN + body.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's 0
    m.extend_from_slice(body);
    m
}

pub fn align4(n: usize) -> usize {
    (n + 3) & !3
}

pub fn u8_at(b: &[u8], at: usize) -> Option<u8> {
    b.get(at).copied()
}

pub fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

pub fn be16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

pub fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

pub fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// A `NETLINK_SOCK_DIAG` socket.
pub struct Socket {
    fd: OwnedFd,
}

impl Socket {
    /// A socket bound to the multicast `groups` (a bit mask: group `g` is
    /// bit `g - 1`; 0 for a socket that only sends requests).
    pub fn open(groups: u32) -> io::Result<Socket> {
        let fd = socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            SocketFlags::CLOEXEC,
            Some(netlink::SOCK_DIAG),
        )?;
        bind(&fd, &SocketAddrNetlink::new(0, groups))?;
        Ok(Socket { fd })
    }

    pub fn fd(&self) -> impl AsFd + '_ {
        &self.fd
    }

    pub fn send(&self, msg: &[u8]) -> io::Result<()> {
        let kernel = SocketAddrNetlink::new(0, 0);
        loop {
            match sendto(&self.fd, msg, SendFlags::empty(), &kernel) {
                Ok(_) => return Ok(()),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// One datagram into `buf` (blocking unless `nonblocking`); `Ok(None)`
    /// when nonblocking and nothing is queued. ENOBUFS comes back as an
    /// error of kind `Other` with raw errno ENOBUFS.
    pub fn recv(&self, buf: &mut [u8], nonblocking: bool) -> io::Result<Option<usize>> {
        let flags = if nonblocking {
            RecvFlags::DONTWAIT
        } else {
            RecvFlags::empty()
        };
        loop {
            match recv(&self.fd, &mut *buf, flags) {
                Ok((n, _)) => return Ok(Some(n)),
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) if nonblocking => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Waits up to `wait` for something to read; true when there is.
    pub fn readable(&self, wait: Duration) -> io::Result<bool> {
        let ts = Timespec {
            tv_sec: wait.as_secs() as i64,
            tv_nsec: i64::from(wait.subsec_nanos()),
        };
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        loop {
            match poll(&mut fds, Some(&ts)) {
                Ok(n) => return Ok(n > 0),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

pub fn is_enobufs(e: &io::Error) -> bool {
    e.raw_os_error() == Some(Errno::NOBUFS.raw_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_walk_aligned_and_stop_on_truncation() {
        let mut buf = request(20, 2, 7, &[1, 2, 3]); // len 19, padded to 20
        buf.resize(20, 0);
        buf.extend(request(NLMSG_DONE, 2, 8, &[0, 0, 0, 0]));
        buf.extend(request(20, 2, 9, &[9; 8])[..10].iter()); // truncated
        let got: Vec<_> = messages(&buf)
            .map(|m| (m.kind, m.seq, m.payload.len()))
            .collect();
        assert_eq!(got, vec![(20, 7, 3), (NLMSG_DONE, 8, 4)]);
    }

    #[test]
    fn messages_reject_lengths_below_the_header() {
        let mut buf = request(20, 0, 1, &[]);
        buf[0..4].copy_from_slice(&3u32.to_ne_bytes());
        assert_eq!(messages(&buf).count(), 0);
        assert_eq!(messages(&[]).count(), 0);
    }

    #[test]
    fn attributes_walk_padding_and_mask_flags() {
        let mut b = Vec::new();
        b.extend_from_slice(&5u16.to_ne_bytes());
        b.extend_from_slice(&(0x8000u16 | 10).to_ne_bytes());
        b.extend_from_slice(&[6, 0, 0, 0]); // value 6 + 3 padding
        b.extend_from_slice(&8u16.to_ne_bytes());
        b.extend_from_slice(&2u16.to_ne_bytes());
        b.extend_from_slice(&[1, 2, 3, 4]);
        b.extend_from_slice(&200u16.to_ne_bytes()); // longer than the rest
        b.extend_from_slice(&3u16.to_ne_bytes());
        let got: Vec<_> = attributes(&b).collect();
        assert_eq!(got, vec![(10, &[6u8][..]), (2, &[1u8, 2, 3, 4][..])]);
    }

    #[test]
    fn readers_are_bounds_checked() {
        assert_eq!(u64_at(&[0; 7], 0), None);
        assert_eq!(u32_at(&[0; 8], 5), None);
        assert_eq!(be16_at(&[1, 2], 0), Some(0x0102));
        assert_eq!(u8_at(&[], 0), None);
    }
}
