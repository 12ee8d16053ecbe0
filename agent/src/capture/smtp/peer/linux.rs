//! [`super::lookup`] on Linux: the uid owning the client socket from
//! /proc/net/tcp{,6} and, when we may read it, the process through
//! /proc/<pid>/fd; best effort.

use std::net::SocketAddr;

use super::LocalPeer;

/// Looks up the owner of the TCP socket `client` → `server` on this host
/// (the caller decides which clients are on this host: `smtp.local_clients`).
pub fn lookup(client: SocketAddr, server: SocketAddr) -> Option<LocalPeer> {
    let (uid, inode) = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .find_map(|f| find_socket(&std::fs::read_to_string(f).ok()?, client, server))?;
    let mut peer = LocalPeer {
        uid: Some(uid),
        user: crate::capture::host::user_name(uid),
        ..Default::default()
    };
    if let Some(pid) = find_pid(inode) {
        peer.pid = Some(pid);
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        peer.application = super::application(&comm, &exe, pid);
    }
    Some(peer)
}

/// Finds (uid, inode) of the socket whose local end is `client` and remote
/// end is `server` in a /proc/net/tcp table.
fn find_socket(table: &str, client: SocketAddr, server: SocketAddr) -> Option<(u32, u64)> {
    let (want_local, want_remote) = (proc_addr(client), proc_addr(server));
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (local, remote) = (*f.get(1)?, *f.get(2)?);
        if !local.eq_ignore_ascii_case(&want_local) || !remote.eq_ignore_ascii_case(&want_remote) {
            return None;
        }
        Some((f.get(7)?.parse().ok()?, f.get(9)?.parse().ok()?))
    })
}

/// Address as written in /proc/net/tcp: hex of the in-memory (little-endian
/// per 32-bit word) address, colon, hex port.
fn proc_addr(a: SocketAddr) -> String {
    let ip = match a {
        SocketAddr::V4(v4) => {
            let o = v4.ip().octets();
            format!("{:02X}{:02X}{:02X}{:02X}", o[3], o[2], o[1], o[0])
        }
        SocketAddr::V6(v6) => v6
            .ip()
            .octets()
            .chunks(4)
            .map(|w| format!("{:02X}{:02X}{:02X}{:02X}", w[3], w[2], w[1], w[0]))
            .collect(),
    };
    format!("{ip}:{:04X}", a.port())
}

fn find_pid(inode: u64) -> Option<u32> {
    if inode == 0 {
        return None;
    }
    let target = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str()) {
                return Some(pid);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_our_own_loopback_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let server = listener.local_addr().expect("addr");
        let client = std::net::TcpStream::connect(server).expect("connect");
        let (_conn, client_addr) = listener.accept().expect("accept");
        let peer = lookup(client_addr, server).expect("found");
        assert_eq!(peer.pid, Some(std::process::id()));
        assert!(!peer.user.is_empty());
        drop(client);
    }

    #[test]
    fn proc_address_format() {
        assert_eq!(
            proc_addr("127.0.0.1:2525".parse().expect("addr")),
            "0100007F:09DD"
        );
    }
}
