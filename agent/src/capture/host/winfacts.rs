//! The Windows host facts as the record states them: pure functions over
//! what the Win32 calls answered (in `windows`), so they are tested on any
//! OS, from values read on real Windows 10/11 PCs.
// Used by the Windows build; the Linux build compiles them for the tests.
#![cfg_attr(not(windows), allow(dead_code))]

/// The OS version from `HKLM\SOFTWARE\Microsoft\Windows NT\CurrentVersion`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsVersion {
    /// `ProductName`: "Windows 10 Pro" (also on Windows 11, see [`OsVersion::os`]).
    pub product_name: String,
    /// `DisplayVersion` ("23H2"), else `ReleaseId` ("2009") on older builds.
    pub display_version: String,
    /// `CurrentMajorVersionNumber`, `CurrentMinorVersionNumber`.
    pub major: u32,
    pub minor: u32,
    /// `CurrentBuildNumber` (text in the registry), `UBR` (the patch level).
    pub build: u32,
    pub ubr: u32,
}

/// `major.minor` from the `CurrentVersion` text ("6.1" on Windows 7, where
/// the CurrentMajor/MinorVersionNumber values do not exist; Windows 10 and
/// later keep "6.3" there for old programs, so the numbers win when set).
pub fn nt_version(major: Option<u32>, minor: Option<u32>, current_version: &str) -> (u32, u32) {
    if let Some(major) = major {
        return (major, minor.unwrap_or(0));
    }
    let mut parts = current_version.trim().split('.').map(|p| p.parse().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor),
        _ => (10, 0),
    }
}

/// A MAC address as sysinfo and the Linux agent write it: `aa:bb:…`;
/// "00:00:00:00:00:00" for an adapter without one (loopback), as sysinfo.
pub fn mac(bytes: &[u8]) -> String {
    let bytes = if bytes.is_empty() {
        &[0u8; 6][..]
    } else {
        bytes
    };
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The address in a Winsock `SOCKADDR` of `len` bytes: SOCKADDR_IN
/// (family 2, address at 4..8) or SOCKADDR_IN6 (family 23, address at
/// 8..24); the family is little-endian (host order), the address bytes in
/// network order.
pub fn sockaddr_ip(raw: &[u8]) -> Option<std::net::IpAddr> {
    let family = u16::from_le_bytes([*raw.first()?, *raw.get(1)?]);
    match family {
        2 => {
            let a: [u8; 4] = raw.get(4..8)?.try_into().ok()?;
            Some(std::net::Ipv4Addr::from(a).into())
        }
        23 => {
            let a: [u8; 16] = raw.get(8..24)?.try_into().ok()?;
            Some(std::net::Ipv6Addr::from(a).into())
        }
        _ => None,
    }
}

/// Windows 11 is Windows NT build 22000 and later.
const FIRST_WINDOWS_11_BUILD: u32 = 22_000;

impl OsVersion {
    /// "Windows 11 Pro 23H2 (build 22631.4602)". Windows 11 still says
    /// "Windows 10" in `ProductName`; the build number tells them apart.
    pub fn os(&self) -> String {
        let mut name = if self.product_name.trim().is_empty() {
            format!("Windows {}.{}", self.major, self.minor)
        } else {
            self.product_name.trim().to_owned()
        };
        if self.build >= FIRST_WINDOWS_11_BUILD && name.starts_with("Windows 10") {
            name.replace_range(.."Windows 10".len(), "Windows 11");
        }
        if !self.display_version.trim().is_empty() {
            name = format!("{name} {}", self.display_version.trim());
        }
        if self.build > 0 {
            name = format!("{name} (build {})", self.build_text());
        }
        name
    }

    /// The NT version: "10.0.22631.4602".
    pub fn kernel(&self) -> String {
        format!("{}.{}.{}", self.major, self.minor, self.build_text())
    }

    fn build_text(&self) -> String {
        if self.ubr > 0 {
            format!("{}.{}", self.build, self.ubr)
        } else {
            self.build.to_string()
        }
    }
}

/// How the PC is joined (NetGetJoinInformation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Join {
    /// An Active Directory domain (its NetBIOS name, `CORP`).
    Domain(String),
    /// A workgroup (`WORKGROUP`): not a domain.
    Workgroup(String),
    /// Not joined, or the call failed.
    None,
}

/// The record's domain: the configured one, else the DNS domain of the
/// PC (`corp.example.co.jp`, GetComputerNameExW ComputerNameDnsDomain),
/// else the AD domain's NetBIOS name; a workgroup is no domain.
pub fn domain(configured: Option<&str>, dns_domain: &str, join: &Join) -> String {
    if let Some(d) = configured {
        return d.to_owned();
    }
    if !dns_domain.trim().is_empty() {
        return dns_domain.trim().to_owned();
    }
    match join {
        Join::Domain(name) => name.trim().to_owned(),
        Join::Workgroup(_) | Join::None => String::new(),
    }
}

/// The fully qualified name: Windows' own (ComputerNameDnsFullyQualified)
/// when it has one and no other domain was configured, else host.domain.
pub fn fqdn(host: &str, windows_fqdn: &str, domain: &str) -> String {
    let windows_fqdn = windows_fqdn.trim();
    if !windows_fqdn.is_empty() && windows_fqdn.contains('.') {
        let own_domain = windows_fqdn.split_once('.').map_or("", |(_, d)| d);
        if domain.is_empty() || own_domain.eq_ignore_ascii_case(domain) {
            return windows_fqdn.to_owned();
        }
    }
    if domain.is_empty() {
        host.to_owned()
    } else {
        format!("{host}.{domain}")
    }
}

/// A session's account as people write it: `CORP\alice`, or `alice` for
/// an account without a domain; `None` for a session without a user (the
/// services session 0, the console's logon screen).
pub fn account(domain: &str, user: &str) -> Option<String> {
    let (domain, user) = (domain.trim(), user.trim());
    if user.is_empty() {
        return None;
    }
    Some(if domain.is_empty() {
        user.to_owned()
    } else {
        format!("{domain}\\{user}")
    })
}

/// The logged-in users: each account once, sorted (case-insensitively
/// equal names are one Windows account).
pub fn users(sessions: impl IntoIterator<Item = (String, String)>) -> Vec<String> {
    let mut users: Vec<String> = sessions
        .into_iter()
        .filter_map(|(d, u)| account(&d, &u))
        .collect();
    users.sort_by_key(|u| u.to_lowercase());
    users.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
    users
}

/// The record's time zone: the IANA name (jiff maps Windows' zone key to
/// it with CLDR's windowsZones table: "Tokyo Standard Time" →
/// "Asia/Tokyo"), else Windows' own key name, which still names the zone,
/// else what jiff said (an offset, "UTC+09:00").
pub fn zone(jiff_name: &str, windows_key: &str) -> String {
    if kiroku_common::zone::lookup(jiff_name).is_ok() {
        return jiff_name.to_owned();
    }
    if !windows_key.trim().is_empty() {
        return windows_key.trim().to_owned();
    }
    jiff_name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(product: &str, display: &str, build: u32, ubr: u32) -> OsVersion {
        OsVersion {
            product_name: product.into(),
            display_version: display.into(),
            major: 10,
            minor: 0,
            build,
            ubr,
        }
    }

    #[test]
    fn os_names_and_kernel_versions() {
        for (version, os, kernel) in [
            // Windows 11 23H2: the registry still says "Windows 10 Pro".
            (
                v("Windows 10 Pro", "23H2", 22631, 4602),
                "Windows 11 Pro 23H2 (build 22631.4602)",
                "10.0.22631.4602",
            ),
            (
                v("Windows 10 Enterprise", "22H2", 19045, 5247),
                "Windows 10 Enterprise 22H2 (build 19045.5247)",
                "10.0.19045.5247",
            ),
            // A product name that already says 11 is left alone.
            (
                v("Windows 11 Home", "24H2", 26100, 0),
                "Windows 11 Home 24H2 (build 26100)",
                "10.0.26100",
            ),
            // Wine 8's registry: no DisplayVersion, no UBR.
            (
                v("Microsoft Windows 10", "", 19043, 0),
                "Microsoft Windows 10 (build 19043)",
                "10.0.19043",
            ),
            (v("", "", 0, 0), "Windows 10.0", "10.0.0"),
        ] {
            assert_eq!(version.os(), os, "{version:?}");
            assert_eq!(version.kernel(), kernel, "{version:?}");
        }
    }

    #[test]
    fn nt_versions() {
        assert_eq!(nt_version(Some(10), Some(0), "6.3"), (10, 0));
        assert_eq!(nt_version(None, None, "6.1"), (6, 1)); // Windows 7 (Wine 8's default)
        assert_eq!(nt_version(None, None, ""), (10, 0));
    }

    #[test]
    fn macs_and_socket_addresses() {
        assert_eq!(mac(&[0, 0x1b, 0x21, 0xaa, 0xbb, 0x0c]), "00:1b:21:aa:bb:0c");
        assert_eq!(mac(&[]), "00:00:00:00:00:00");
        let mut v4 = [0u8; 16];
        v4[..2].copy_from_slice(&2u16.to_le_bytes());
        v4[2..4].copy_from_slice(&25u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[192, 168, 1, 20]);
        assert_eq!(sockaddr_ip(&v4), Some("192.168.1.20".parse().expect("ip")));
        let mut v6 = [0u8; 28];
        v6[..2].copy_from_slice(&23u16.to_le_bytes());
        v6[8..24].copy_from_slice(
            &"fe80::1"
                .parse::<std::net::Ipv6Addr>()
                .expect("ip")
                .octets(),
        );
        assert_eq!(sockaddr_ip(&v6), Some("fe80::1".parse().expect("ip")));
        // Truncated or another family: nothing.
        assert_eq!(sockaddr_ip(&v4[..6]), None);
        assert_eq!(sockaddr_ip(&v6[..20]), None);
        assert_eq!(sockaddr_ip(&[17, 0, 0, 0]), None);
        assert_eq!(sockaddr_ip(&[]), None);
    }

    #[test]
    fn domain_prefers_config_then_dns_then_ad() {
        let ad = Join::Domain("CORP".into());
        let wg = Join::Workgroup("WORKGROUP".into());
        for (configured, dns, join, want) in [
            (Some("set.example"), "corp.example", &ad, "set.example"),
            (None, "corp.example.co.jp", &ad, "corp.example.co.jp"),
            (None, "", &ad, "CORP"),
            (None, "", &wg, ""),
            (None, " ", &Join::None, ""),
        ] {
            assert_eq!(domain(configured, dns, join), want);
        }
    }

    #[test]
    fn fqdn_from_windows_or_composed() {
        for (host, win, domain, want) in [
            (
                "pc-001",
                "pc-001.corp.example",
                "corp.example",
                "pc-001.corp.example",
            ),
            ("pc-001", "pc-001.corp.example", "", "pc-001.corp.example"),
            // A configured domain other than Windows' wins.
            (
                "pc-001",
                "pc-001.corp.example",
                "other.example",
                "pc-001.other.example",
            ),
            ("pc-001", "pc-001", "CORP", "pc-001.CORP"),
            ("pc-001", "", "", "pc-001"),
        ] {
            assert_eq!(fqdn(host, win, domain), want, "{host} {win} {domain}");
        }
    }

    #[test]
    fn accounts_and_users() {
        assert_eq!(account("CORP", "alice").as_deref(), Some("CORP\\alice"));
        assert_eq!(account("", "alice").as_deref(), Some("alice"));
        assert_eq!(account("CORP", ""), None);
        let sessions = [
            ("", ""),                // session 0: services
            ("CORP", "bob"),         // console
            ("CORP", "alice"),       // remote desktop
            ("corp", "Alice"),       // the same account, twice
            ("PC-001", "localuser"), // a local account
        ]
        .map(|(d, u)| (d.to_owned(), u.to_owned()));
        assert_eq!(
            users(sessions),
            ["CORP\\alice", "CORP\\bob", "PC-001\\localuser"]
        );
    }

    #[test]
    fn zone_is_iana_else_the_windows_name() {
        assert_eq!(zone("Asia/Tokyo", "Tokyo Standard Time"), "Asia/Tokyo");
        assert_eq!(zone("UTC", "UTC"), "UTC");
        assert_eq!(
            zone("UTC+09:00", "Tokyo Standard Time"),
            "Tokyo Standard Time"
        );
        assert_eq!(zone("UTC+09:00", ""), "UTC+09:00");
        assert_eq!(zone("", ""), "");
    }
}
