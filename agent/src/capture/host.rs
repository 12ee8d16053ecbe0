//! Host identity: who and where this agent runs (hostname, domain, OS,
//! interfaces with MAC and IP addresses), and mapping of local uids to user
//! names for attributing captured activity.

use kiroku_proto::{HostIdentity, Interface};

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
    let networks = sysinfo::Networks::new_with_refreshed_list();
    let mut interfaces: Vec<Interface> = networks
        .list()
        .iter()
        .map(|(name, data)| Interface {
            name: name.clone(),
            mac: data.mac_address().to_string(),
            ips: data
                .ip_networks()
                .iter()
                .map(|n| n.addr.to_string())
                .collect(),
        })
        .collect();
    interfaces.sort_by(|a, b| a.name.cmp(&b.name));
    HostIdentity {
        hostname: short,
        fqdn,
        domain,
        os: sysinfo::System::long_os_version().unwrap_or_default(),
        kernel: sysinfo::System::kernel_version().unwrap_or_default(),
        machine_id: std::fs::read_to_string("/etc/machine-id")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
        interfaces,
        agent_version: kiroku_common::VERSION.to_owned(),
        logged_in_users: Vec::new(),
    }
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
    fn snapshot_has_a_hostname_and_loopback() {
        let h = super::snapshot(Some("example.test"));
        assert!(!h.hostname.is_empty());
        assert_eq!(h.domain, "example.test");
        assert!(
            h.interfaces
                .iter()
                .any(|i| i.ips.iter().any(|ip| ip == "127.0.0.1"))
        );
        assert_eq!(super::user_name(0), "root");
    }
}
