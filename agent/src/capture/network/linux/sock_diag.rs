//! sock_diag (NETLINK_SOCK_DIAG): full dumps of TCP and UDP sockets with
//! `tcp_info`, and the destroyed-socket multicast groups (what `ss -E`
//! shows; joining them needs CAP_NET_ADMIN).

use std::io;

use crate::capture::network::platform::SocketTable;

/// Opens the netlink sockets for dumps and destroy notifications.
pub fn open() -> io::Result<Box<dyn SocketTable>> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "sock_diag capture is not built yet",
    ))
}
