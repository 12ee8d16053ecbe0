//! Host identity: who and where this agent runs (hostname, domain, OS,
//! interfaces with MAC and IP addresses, logged-in users, time zone), read
//! at start and re-read every minute, each change recorded.
//!
//! The facts come from each OS behind the same functions ([`snapshot`],
//! [`logged_in_users`], [`own_user`], [`user_name`]): `linux` reads
//! `/etc`, `/run` and `/proc`; `windows` asks Win32 (GetComputerNameExW,
//! NetGetJoinInformation, the registry's CurrentVersion and MachineGuid,
//! WTSEnumerateSessionsW, the dynamic time zone, GetAdaptersAddresses).
//! Linux's interfaces come from sysinfo (which lists none under Wine, so
//! Windows walks the adapters itself). `winfacts` turns the Windows
//! answers into the record's text; it is pure, so its tests run on any OS.

use kiroku_proto::{HostIdentity, Interface};

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as platform;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as platform;
mod winfacts;

pub use platform::{logged_in_users, own_user, user_name};

/// Reads the host's identity now. `domain_override` comes from the config.
pub fn snapshot(domain_override: Option<&str>) -> HostIdentity {
    platform::snapshot(domain_override)
}

/// The network interfaces with their MAC and IP addresses from sysinfo
/// (netlink on Linux; on Windows the fallback of `windows`' own
/// GetAdaptersAddresses walk), sorted by name.
fn sysinfo_interfaces() -> Vec<Interface> {
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
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
        })
        .collect();
    interfaces.sort_by(|a, b| a.name.cmp(&b.name));
    interfaces
}

/// What differs between two identities, for the change record ("" = same).
pub fn changes(old: &HostIdentity, new: &HostIdentity) -> String {
    let mut what = Vec::new();
    let fields: [(&str, bool); 10] = [
        ("hostname", old.hostname != new.hostname),
        ("fqdn", old.fqdn != new.fqdn),
        ("domain", old.domain != new.domain),
        ("os", old.os != new.os),
        ("kernel", old.kernel != new.kernel),
        ("machine_id", old.machine_id != new.machine_id),
        ("interfaces", old.interfaces != new.interfaces),
        ("agent_version", old.agent_version != new.agent_version),
        (
            "logged_in_users",
            old.logged_in_users != new.logged_in_users,
        ),
        ("time_zone", old.time_zone != new.time_zone),
    ];
    for (name, differs) in fields {
        if differs {
            what.push(name);
        }
    }
    what.join(", ")
}

/// Records the identity at start, then re-reads it every `every` and
/// records each change (a `HostEvent`), so the collector keeps the history.
/// The shared context carries the newest identity for later events.
pub async fn watch(
    ctx: std::sync::Arc<crate::capture::context::CaptureContext>,
    buffer: std::sync::Arc<crate::buffer::Buffer>,
    domain_override: Option<String>,
    every: std::time::Duration,
) {
    let record = |reason: String, identity: HostIdentity| {
        let event = ctx.event(
            String::new(),
            kiroku_proto::event::Kind::HostChange(kiroku_proto::HostEvent {
                reason,
                identity: Some(identity),
            }),
        );
        let buffer = buffer.clone();
        async move {
            if let Err(e) = buffer.append(&event, None).await {
                tracing::error!(error = %e, "cannot record the host identity");
            }
        }
    };
    // A buffer that could not be opened at start (a full disk) takes the
    // start record once it opens, rather than losing it.
    buffer.opened().await;
    // A buffer found damaged at open says so in the start record, so the
    // loss is on the collector's record too, not only in the agent's log.
    let start = match buffer.damage() {
        Some(d) => format!("start; {d}"),
        None => "start".into(),
    };
    record(start, (*ctx.host()).clone()).await;
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let domain = domain_override.clone();
        let Ok(now) = tokio::task::spawn_blocking(move || snapshot(domain.as_deref())).await else {
            continue;
        };
        let what = changes(&ctx.host(), &now);
        if what.is_empty() {
            continue;
        }
        tracing::info!(changed = %what, "host identity changed");
        ctx.set_host(now.clone());
        record(format!("changed: {what}"), now).await;
    }
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
        // This machine's zone (UTC, Europe/Berlin, …) is looked up like
        // any IANA name.
        assert!(
            kiroku_common::zone::lookup(&h.time_zone).is_ok() || h.time_zone.starts_with("UTC"),
            "{:?}",
            h.time_zone
        );
    }

    #[test]
    fn changes_name_the_fields_that_differ() {
        let a = super::snapshot(None);
        let mut b = a.clone();
        assert_eq!(super::changes(&a, &b), "");
        b.logged_in_users.push("mallory".into());
        b.time_zone = "Asia/Tokyo".into();
        b.interfaces.clear();
        assert_eq!(
            super::changes(&a, &b),
            "interfaces, logged_in_users, time_zone"
        );
    }
}
