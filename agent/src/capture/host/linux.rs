//! [`super`] on Linux: the hostname from sysinfo, the domain from the name
//! or `/etc/resolv.conf`, `/etc/machine-id`, logged-in users from logind or
//! utmp, user names from `/etc/passwd`.

use kiroku_proto::HostIdentity;

/// Reads the host's identity now. `domain_override` comes from the config.
pub fn snapshot(domain_override: Option<&str>) -> HostIdentity {
    let hostname = sysinfo::System::host_name().unwrap_or_default();
    let domain = domain_override
        .map(str::to_owned)
        .or_else(|| hostname.split_once('.').map(|(_, d)| d.to_owned()))
        .or_else(resolv_conf_domain)
        .unwrap_or_default();
    let short = hostname.split('.').next().unwrap_or_default().to_owned();
    let fqdn = if domain.is_empty() || hostname.contains('.') {
        hostname.clone()
    } else {
        format!("{hostname}.{domain}")
    };
    HostIdentity {
        hostname: short,
        fqdn,
        domain,
        os: sysinfo::System::long_os_version().unwrap_or_default(),
        kernel: sysinfo::System::kernel_version().unwrap_or_default(),
        machine_id: std::fs::read_to_string("/etc/machine-id")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
        interfaces: super::sysinfo_interfaces(),
        agent_version: kiroku_common::VERSION.to_owned(),
        logged_in_users: logged_in_users(),
        // The zone the host's own programs (and logs) use: an investigator
        // comparing their times with ours needs it.
        time_zone: kiroku_common::zone::system_zone_name(),
    }
}

/// Users with a login session: systemd-logind's session files when logind
/// runs, else the utmp file. Sorted, each user once.
pub fn logged_in_users() -> Vec<String> {
    let mut users = logind_users(std::path::Path::new("/run/systemd/sessions"))
        .or_else(|| {
            ["/run/utmp", "/var/run/utmp"]
                .iter()
                .find_map(|p| std::fs::read(p).ok())
                .map(|b| utmp_users(&b))
        })
        .unwrap_or_default();
    users.sort();
    users.dedup();
    users
}

fn logind_users(dir: &std::path::Path) -> Option<Vec<String>> {
    let entries = std::fs::read_dir(dir).ok()?;
    let mut users = Vec::new();
    for entry in entries.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
                .map(str::to_owned)
        };
        // Sessions being torn down are not logged in any more.
        if field("STATE").as_deref() == Some("closing") {
            continue;
        }
        if let Some(u) = field("USER").filter(|u| !u.is_empty()) {
            users.push(u);
        }
    }
    Some(users)
}

/// glibc's `struct utmp` on 64-bit Linux: 384 bytes; `ut_type` (i16) at 0,
/// `ut_user` (32 bytes, NUL-padded) at 44. USER_PROCESS = 7.
const UTMP_RECORD: usize = 384;
const UTMP_USER: std::ops::Range<usize> = 44..76;
const USER_PROCESS: i16 = 7;

fn utmp_users(bytes: &[u8]) -> Vec<String> {
    bytes
        .chunks_exact(UTMP_RECORD)
        .filter(|r| i16::from_ne_bytes([r[0], r[1]]) == USER_PROCESS)
        .filter_map(|r| {
            let name = &r[UTMP_USER];
            let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            let name = String::from_utf8_lossy(&name[..end]).into_owned();
            (!name.is_empty()).then_some(name)
        })
        .collect()
}

fn resolv_conf_domain() -> Option<String> {
    let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        match w.next() {
            Some("domain") | Some("search") => w.next().map(str::to_owned),
            _ => None,
        }
    })
}

/// Name of local user `uid` from /etc/passwd, or the number as text.
pub fn user_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                let mut f = l.split(':');
                let name = f.next()?;
                let id: u32 = f.nth(1)?.parse().ok()?;
                (id == uid).then(|| name.to_owned())
            })
        })
        .unwrap_or_else(|| uid.to_string())
}

/// The user this agent process runs as.
pub fn own_user() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .map(user_name)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn root_is_uid_0() {
        assert_eq!(super::user_name(0), "root");
    }

    #[test]
    fn utmp_records_give_logged_in_users() {
        let mut bytes = vec![0u8; super::UTMP_RECORD * 3];
        let mut put = |i: usize, kind: i16, user: &str| {
            let r = &mut bytes[i * super::UTMP_RECORD..(i + 1) * super::UTMP_RECORD];
            r[..2].copy_from_slice(&kind.to_ne_bytes());
            r[44..44 + user.len()].copy_from_slice(user.as_bytes());
        };
        put(0, 7, "alice");
        put(1, 8, "gone"); // DEAD_PROCESS
        put(2, 7, "bob");
        assert_eq!(super::utmp_users(&bytes), ["alice", "bob"]);
        // A torn final record is ignored.
        assert_eq!(super::utmp_users(&bytes[..500]), ["alice"]);
    }

    #[test]
    fn logind_sessions_give_users_except_closing_ones() {
        let dir = tempfile::tempdir().expect("test setup");
        std::fs::write(
            dir.path().join("1"),
            "UID=1000\nUSER=alice\nACTIVE=1\nSTATE=active\n",
        )
        .expect("test setup");
        std::fs::write(dir.path().join("2"), "USER=carol\nSTATE=closing\n").expect("test setup");
        std::fs::write(dir.path().join("3"), "USER=bob\nSTATE=online\n").expect("test setup");
        let mut u = super::logind_users(dir.path()).expect("test setup");
        u.sort();
        assert_eq!(u, ["alice", "bob"]);
        assert!(super::logind_users(&dir.path().join("none")).is_none());
    }
}
