//! Which flows are not recorded: loopback (unless `network.loopback`), the
//! agent's own collector connection (`network.exclude_collector`) and the
//! `[[network.exclude]]` entries (each entry's given conditions must all
//! hold).

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use super::super::config::{Exclusion, NetworkConfig};
use super::super::platform::Socket;

/// The exclusion rules in force.
#[derive(Debug, Clone, Default)]
pub struct Excluder {
    loopback: bool,
    /// The collector endpoint's resolved addresses (ip, port).
    collector: Vec<SocketAddr>,
    rules: Vec<Exclusion>,
}

/// An address as compared: IPv4-mapped IPv6 (`::ffff:a.b.c.d`, what a
/// dual-stack socket shows for IPv4 peers) as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    canonical(ip).is_loopback()
}

impl Excluder {
    /// `collector` is the `collector.endpoint` setting ("https://host:port"
    /// or "host:port"), resolved now (the runner's thread: a blocking
    /// lookup is fine there). A name that does not resolve is logged and
    /// not excluded.
    pub fn new(cfg: &NetworkConfig, collector: &str) -> Excluder {
        let mut e = Excluder {
            loopback: cfg.loopback,
            collector: Vec::new(),
            rules: cfg.exclude.clone(),
        };
        if cfg.exclude_collector {
            e.collector = resolve_endpoint(collector);
            if e.collector.is_empty() {
                tracing::warn!(
                    endpoint = collector,
                    "network.exclude_collector: the collector endpoint does not resolve now; the agent's own connection to it may be recorded"
                );
            }
        }
        e
    }

    /// Rules without the collector lookup (tests).
    pub fn with(loopback: bool, collector: Vec<SocketAddr>, rules: Vec<Exclusion>) -> Excluder {
        Excluder {
            loopback,
            collector,
            rules,
        }
    }

    /// Whether the socket's flow is left out. `process` is its owner's
    /// (name, exe) when known; a `process` rule never matches an unknown
    /// owner.
    pub fn excluded(&self, s: &Socket, process: Option<(&str, &str)>) -> bool {
        if !self.loopback
            && (is_loopback(s.local.ip()) || s.remote.is_some_and(|r| is_loopback(r.ip())))
        {
            return true;
        }
        let same = |a: SocketAddr, b: SocketAddr| {
            a.port() == b.port() && canonical(a.ip()) == canonical(b.ip())
        };
        if let Some(r) = s.remote
            && self
                .collector
                .iter()
                .any(|c| same(*c, r) || same(*c, s.local))
        {
            return true;
        }
        self.rules.iter().any(|rule| matches(rule, s, process))
    }
}

fn matches(rule: &Exclusion, s: &Socket, process: Option<(&str, &str)>) -> bool {
    if rule.remote.is_none() && rule.port.is_none() && rule.process.is_none() {
        return false;
    }
    if let Some(net) = &rule.remote {
        match s.remote {
            Some(r) if net.contains(&canonical(r.ip())) || net.contains(&r.ip()) => {}
            _ => return false,
        }
    }
    if let Some(port) = rule.port {
        let remote = s.remote.map(|r| r.port());
        if remote != Some(port) && s.local.port() != port {
            return false;
        }
    }
    if let Some(p) = &rule.process {
        let Some((name, exe)) = process else {
            return false;
        };
        let file = exe.rsplit('/').next().unwrap_or(exe);
        if p != name && p != exe && p != file {
            return false;
        }
    }
    true
}

/// "https://collector.example:7443" → its addresses with port 7443.
pub fn resolve_endpoint(endpoint: &str) -> Vec<SocketAddr> {
    let rest = endpoint
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or(endpoint);
    let hostport = rest.split('/').next().unwrap_or(rest);
    let with_port = if hostport
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !hostport.ends_with(']')
    {
        hostport.to_owned()
    } else {
        format!("{hostport}:443")
    };
    with_port
        .to_socket_addrs()
        .map(|a| a.collect())
        .unwrap_or_default()
}

/// Validates `[[network.exclude]]` entries: an entry with no condition
/// would match nothing (or, read naively, everything).
pub fn validate(rules: &[Exclusion]) -> Result<(), (String, String)> {
    for (i, r) in rules.iter().enumerate() {
        if r.remote.is_none() && r.port.is_none() && r.process.is_none() {
            return Err((
                format!("network.exclude[{i}]"),
                "an entry needs at least one of `remote` (address or network), `port` or `process`"
                    .to_owned(),
            ));
        }
        if r.process.as_deref() == Some("") {
            return Err((
                format!("network.exclude[{i}].process"),
                "empty; give a process name or executable path".to_owned(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::super::platform::Protocol;
    use super::*;

    fn sock(local: &str, remote: Option<&str>) -> Socket {
        Socket {
            protocol: Protocol::Tcp,
            local: local.parse().expect("test value"),
            remote: remote.map(|r| r.parse().expect("test value")),
            state: "established",
            uid: 0,
            inode: 1,
            cookie: 1,
            counters: None,
        }
    }

    #[test]
    fn exclusions_table() {
        let rule = |remote: Option<&str>, port: Option<u16>, process: Option<&str>| Exclusion {
            remote: remote.map(|r| r.parse().expect("test value")),
            port,
            process: process.map(str::to_owned),
        };
        let e = Excluder::with(
            false,
            vec!["192.0.2.9:7443".parse().expect("test value")],
            vec![
                rule(Some("10.0.0.0/8"), Some(873), None),
                rule(None, None, Some("borg")),
            ],
        );
        let curl = Some(("curl", "/usr/bin/curl"));
        let borg = Some(("python3", "/usr/bin/borg"));
        type Case<'a> = (&'a str, Option<&'a str>, Option<(&'a str, &'a str)>, bool);
        let cases: &[Case] = &[
            ("127.0.0.1:5000", Some("127.0.0.1:80"), curl, true),
            ("[::1]:5000", Some("[::1]:80"), curl, true),
            (
                "[::ffff:127.0.0.1]:5000",
                Some("[::ffff:127.0.0.1]:80"),
                curl,
                true,
            ),
            ("127.0.0.1:25", None, None, true),
            ("10.1.1.1:5000", Some("192.0.2.9:7443"), None, true),
            (
                "[::ffff:10.1.1.1]:5000",
                Some("[::ffff:192.0.2.9]:7443"),
                None,
                true,
            ),
            ("10.1.1.1:5000", Some("192.0.2.9:7444"), None, false),
            ("10.1.1.1:5000", Some("10.2.2.2:873"), curl, true),
            ("10.1.1.1:5000", Some("10.2.2.2:874"), curl, false),
            ("10.1.1.1:5000", Some("11.2.2.2:873"), curl, false),
            ("10.1.1.1:5000", Some("198.51.100.1:443"), borg, true),
            ("10.1.1.1:5000", Some("198.51.100.1:443"), None, false),
            ("10.1.1.1:5000", Some("198.51.100.1:443"), curl, false),
        ];
        for (local, remote, process, want) in cases {
            assert_eq!(
                e.excluded(&sock(local, *remote), *process),
                *want,
                "{local} -> {remote:?} {process:?}"
            );
        }
        let lo = Excluder::with(true, vec![], vec![]);
        assert!(!lo.excluded(&sock("127.0.0.1:5000", Some("127.0.0.1:80")), curl));
    }

    #[test]
    fn endpoints_resolve_with_their_port() {
        assert_eq!(
            resolve_endpoint("https://127.0.0.1:7443"),
            vec!["127.0.0.1:7443".parse().expect("test value")]
        );
        assert_eq!(
            resolve_endpoint("[::1]:9000"),
            vec!["[::1]:9000".parse().expect("test value")]
        );
        assert_eq!(
            resolve_endpoint("https://127.0.0.1"),
            vec!["127.0.0.1:443".parse().expect("test value")]
        );
    }

    #[test]
    fn empty_rules_are_refused() {
        let empty = Exclusion {
            remote: None,
            port: None,
            process: None,
        };
        assert_eq!(
            validate(&[empty]).expect_err("test value").0,
            "network.exclude[0]"
        );
    }
}
