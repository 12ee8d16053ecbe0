//! [`super`] on Windows: the facts from Win32 (GetComputerNameExW,
//! NetGetJoinInformation, the registry, WTSEnumerateSessionsW,
//! GetDynamicTimeZoneInformation, GetUserNameW, GetAdaptersAddresses), turned into the record's
//! text by [`super::winfacts`].
#![allow(unsafe_code)]

use kiroku_proto::{HostIdentity, Interface};
use windows_sys::Win32::Foundation::{ERROR_BUFFER_OVERFLOW, ERROR_MORE_DATA};
use windows_sys::Win32::NetworkManagement::IpHelper::{
    GAA_FLAG_SKIP_ANYCAST, GAA_FLAG_SKIP_DNS_SERVER, GAA_FLAG_SKIP_MULTICAST, GetAdaptersAddresses,
    IP_ADAPTER_ADDRESSES_LH,
};
use windows_sys::Win32::NetworkManagement::NetManagement::{
    NETSETUP_JOIN_STATUS, NetApiBufferFree, NetGetJoinInformation, NetSetupDomainName,
    NetSetupWorkgroupName,
};
use windows_sys::Win32::Networking::WinSock::AF_UNSPEC;
use windows_sys::Win32::System::Registry::{
    HKEY_LOCAL_MACHINE, RRF_RT_REG_DWORD, RRF_RT_REG_SZ, RRF_SUBKEY_WOW6464KEY, RegGetValueW,
};
use windows_sys::Win32::System::RemoteDesktop::{
    WTS_CURRENT_SERVER_HANDLE, WTS_INFO_CLASS, WTS_SESSION_INFOW, WTSActive, WTSDisconnected,
    WTSDomainName, WTSEnumerateSessionsW, WTSFreeMemory, WTSQuerySessionInformationW, WTSUserName,
};
use windows_sys::Win32::System::SystemInformation::{
    COMPUTER_NAME_FORMAT, ComputerNameDnsDomain, ComputerNameDnsFullyQualified,
    ComputerNameDnsHostname, GetComputerNameExW,
};
use windows_sys::Win32::System::Time::{
    DYNAMIC_TIME_ZONE_INFORMATION, GetDynamicTimeZoneInformation,
};
use windows_sys::Win32::System::WindowsProgramming::GetUserNameW;

use super::winfacts::{self, Join, OsVersion};
use crate::os::{from_wide, wide};

const CURRENT_VERSION: &str = "SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion";
const CRYPTOGRAPHY: &str = "SOFTWARE\\Microsoft\\Cryptography";

/// Reads the host's identity now. `domain_override` comes from the config.
pub fn snapshot(domain_override: Option<&str>) -> HostIdentity {
    let hostname = computer_name(ComputerNameDnsHostname)
        .filter(|h| !h.is_empty())
        .or_else(sysinfo::System::host_name)
        .unwrap_or_default();
    let dns_domain = computer_name(ComputerNameDnsDomain).unwrap_or_default();
    let domain = winfacts::domain(domain_override, &dns_domain, &join_information());
    let windows_fqdn = computer_name(ComputerNameDnsFullyQualified).unwrap_or_default();
    let version = os_version();
    HostIdentity {
        fqdn: winfacts::fqdn(&hostname, &windows_fqdn, &domain),
        hostname,
        domain,
        os: version.os(),
        kernel: version.kernel(),
        machine_id: registry_string(CRYPTOGRAPHY, "MachineGuid").unwrap_or_default(),
        interfaces: interfaces(),
        agent_version: kiroku_common::VERSION.to_owned(),
        logged_in_users: logged_in_users(),
        time_zone: winfacts::zone(&kiroku_common::zone::system_zone_name(), &zone_key()),
    }
}

/// The accounts of the active and disconnected sessions (console, remote
/// desktop), `DOMAIN\user`, sorted, each once.
pub fn logged_in_users() -> Vec<String> {
    let mut sessions: *mut WTS_SESSION_INFOW = std::ptr::null_mut();
    let mut count = 0u32;
    // SAFETY: the current server's handle; valid out pointers; the array is
    // freed with WTSFreeMemory below.
    let ok = unsafe {
        WTSEnumerateSessionsW(WTS_CURRENT_SERVER_HANDLE, 0, 1, &mut sessions, &mut count)
    };
    if ok == 0 || sessions.is_null() {
        return Vec::new();
    }
    // SAFETY: on success `sessions` points to `count` initialised entries,
    // alive until WTSFreeMemory.
    let list = unsafe { std::slice::from_raw_parts(sessions, count as usize) };
    let accounts: Vec<(String, String)> = list
        .iter()
        .filter(|s| s.State == WTSActive || s.State == WTSDisconnected)
        .map(|s| {
            (
                session_text(s.SessionId, WTSDomainName),
                session_text(s.SessionId, WTSUserName),
            )
        })
        .collect();
    // SAFETY: allocated by WTSEnumerateSessionsW; not used after this.
    unsafe { WTSFreeMemory(sessions.cast()) };
    winfacts::users(accounts)
}

/// The account this agent runs as (`SYSTEM` for the service).
pub fn own_user() -> String {
    let mut buf = [0u16; 257];
    let mut len = buf.len() as u32;
    // SAFETY: `buf` holds `len` u16s, the maximum user name (UNLEN) + NUL.
    let ok = unsafe { GetUserNameW(buf.as_mut_ptr(), &mut len) };
    if ok == 0 {
        return std::env::var("USERNAME").unwrap_or_default();
    }
    from_wide(&buf)
}

/// The adapters (GetAdaptersAddresses: friendly name, MAC, unicast IPv4
/// and IPv6 addresses), sorted by name; sysinfo's list if that fails.
fn interfaces() -> Vec<Interface> {
    let mut list = adapters().unwrap_or_default();
    if list.is_empty() {
        return super::sysinfo_interfaces();
    }
    list.sort_by(|a, b| a.name.cmp(&b.name));
    list
}

fn adapters() -> Option<Vec<Interface>> {
    let flags = GAA_FLAG_SKIP_ANYCAST | GAA_FLAG_SKIP_MULTICAST | GAA_FLAG_SKIP_DNS_SERVER;
    let mut size: u32 = 16 * 1024;
    // The list may grow between the size query and the call: retry.
    for _ in 0..4 {
        // u64 elements: the buffer is aligned for the structures in it.
        let mut buf = vec![0u64; size as usize / 8 + 1];
        // SAFETY: `buf` holds at least `size` bytes, suitably aligned; no
        // reserved pointer; `size` is a valid in/out pointer.
        let err = unsafe {
            GetAdaptersAddresses(
                u32::from(AF_UNSPEC),
                flags,
                std::ptr::null(),
                buf.as_mut_ptr().cast::<IP_ADAPTER_ADDRESSES_LH>(),
                &mut size,
            )
        };
        if err == ERROR_BUFFER_OVERFLOW {
            continue;
        }
        if err != 0 {
            return None;
        }
        let mut out = Vec::new();
        let mut at = buf.as_ptr().cast::<IP_ADAPTER_ADDRESSES_LH>();
        while !at.is_null() {
            // SAFETY: `at` is the first entry in `buf` or a `Next` link the
            // call wrote, pointing into `buf`, which lives until we return.
            let adapter = unsafe { &*at };
            out.push(adapter_interface(adapter));
            at = adapter.Next;
        }
        return Some(out);
    }
    None
}

fn adapter_interface(a: &IP_ADAPTER_ADDRESSES_LH) -> Interface {
    let name = if a.FriendlyName.is_null() {
        String::new()
    } else {
        // SAFETY: a non-null FriendlyName is a NUL-terminated string in
        // the adapters buffer.
        unsafe {
            from_wide(std::slice::from_raw_parts(
                a.FriendlyName,
                wide_len(a.FriendlyName),
            ))
        }
    };
    let len = (a.PhysicalAddressLength as usize).min(a.PhysicalAddress.len());
    let mut ips = std::collections::BTreeSet::new();
    let mut u = a.FirstUnicastAddress;
    while !u.is_null() {
        // SAFETY: a unicast entry in the adapters buffer (see `adapters`).
        let entry = unsafe { &*u };
        let sa = entry.Address;
        if !sa.lpSockaddr.is_null() && sa.iSockaddrLength > 0 {
            // SAFETY: the call wrote `iSockaddrLength` bytes at
            // `lpSockaddr`, inside the adapters buffer.
            let raw = unsafe {
                std::slice::from_raw_parts(sa.lpSockaddr.cast::<u8>(), sa.iSockaddrLength as usize)
            };
            if let Some(ip) = winfacts::sockaddr_ip(raw) {
                ips.insert(ip.to_string());
            }
        }
        u = entry.Next;
    }
    Interface {
        name,
        mac: winfacts::mac(&a.PhysicalAddress[..len]),
        ips: ips.into_iter().collect(),
    }
}

/// Windows has no numeric uids: the number as text (only the Linux peer
/// lookup and file watcher call this).
pub fn user_name(uid: u32) -> String {
    uid.to_string()
}

fn session_text(session: u32, class: WTS_INFO_CLASS) -> String {
    let mut buf: windows_sys::core::PWSTR = std::ptr::null_mut();
    let mut bytes = 0u32;
    // SAFETY: valid out pointers; the buffer is freed with WTSFreeMemory.
    let ok = unsafe {
        WTSQuerySessionInformationW(
            WTS_CURRENT_SERVER_HANDLE,
            session,
            class,
            &mut buf,
            &mut bytes,
        )
    };
    if ok == 0 || buf.is_null() {
        return String::new();
    }
    // SAFETY: on success `buf` holds `bytes` bytes of UTF-16 (with its NUL).
    let text = unsafe { std::slice::from_raw_parts(buf, bytes as usize / 2) };
    let text = from_wide(text);
    // SAFETY: allocated by WTSQuerySessionInformationW; not used after.
    unsafe { WTSFreeMemory(buf.cast()) };
    text
}

fn computer_name(format: COMPUTER_NAME_FORMAT) -> Option<String> {
    let mut len = 0u32;
    // SAFETY: a null buffer with size 0 asks for the size (ERROR_MORE_DATA).
    unsafe { GetComputerNameExW(format, std::ptr::null_mut(), &mut len) };
    let mut buf = vec![0u16; len as usize + 1];
    let mut len = buf.len() as u32;
    // SAFETY: `buf` holds `len` u16s.
    let ok = unsafe { GetComputerNameExW(format, buf.as_mut_ptr(), &mut len) };
    (ok != 0).then(|| from_wide(&buf))
}

fn join_information() -> Join {
    let mut name: windows_sys::core::PWSTR = std::ptr::null_mut();
    let mut status: NETSETUP_JOIN_STATUS = 0;
    // SAFETY: null = this computer; valid out pointers; the name buffer is
    // freed with NetApiBufferFree.
    let err = unsafe { NetGetJoinInformation(std::ptr::null(), &mut name, &mut status) };
    if err != 0 || name.is_null() {
        return Join::None;
    }
    // SAFETY: on success `name` is a NUL-terminated string.
    let text = unsafe { from_wide(std::slice::from_raw_parts(name, wide_len(name))) };
    // SAFETY: allocated by NetGetJoinInformation; not used after this.
    unsafe { NetApiBufferFree(name.cast()) };
    if status == NetSetupDomainName {
        Join::Domain(text)
    } else if status == NetSetupWorkgroupName {
        Join::Workgroup(text)
    } else {
        Join::None
    }
}

/// The length of a NUL-terminated UTF-16 string.
///
/// # Safety
/// `p` must point to a NUL-terminated UTF-16 string.
unsafe fn wide_len(p: *const u16) -> usize {
    let mut n = 0;
    // SAFETY: the caller promises a NUL before the end of the allocation.
    while unsafe { *p.add(n) } != 0 {
        n += 1;
    }
    n
}

fn os_version() -> OsVersion {
    let number = |v: &str| registry_dword(CURRENT_VERSION, v).unwrap_or(0);
    let text = |v: &str| registry_string(CURRENT_VERSION, v).unwrap_or_default();
    let display = registry_string(CURRENT_VERSION, "DisplayVersion")
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| text("ReleaseId"));
    let (major, minor) = winfacts::nt_version(
        registry_dword(CURRENT_VERSION, "CurrentMajorVersionNumber"),
        registry_dword(CURRENT_VERSION, "CurrentMinorVersionNumber"),
        &text("CurrentVersion"),
    );
    OsVersion {
        product_name: text("ProductName"),
        display_version: display,
        major,
        minor,
        build: text("CurrentBuildNumber").trim().parse().unwrap_or(0),
        ubr: number("UBR"),
    }
}

/// The key name of the zone set in Windows ("Tokyo Standard Time").
fn zone_key() -> String {
    // SAFETY: a plain-old-data struct; all zeros is a valid value.
    let mut info: DYNAMIC_TIME_ZONE_INFORMATION = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable DYNAMIC_TIME_ZONE_INFORMATION.
    let r = unsafe { GetDynamicTimeZoneInformation(&mut info) };
    if r == u32::MAX {
        return String::new();
    }
    from_wide(&info.TimeZoneKeyName)
}

/// A REG_SZ value under HKLM (the 64-bit view).
fn registry_string(key: &str, value: &str) -> Option<String> {
    let (key, value) = (wide(key), wide(value));
    let flags = RRF_RT_REG_SZ | RRF_SUBKEY_WOW6464KEY;
    let mut bytes = 0u32;
    // SAFETY: NUL-terminated names alive for the call; a null data pointer
    // asks for the size in bytes.
    let err = unsafe {
        RegGetValueW(
            HKEY_LOCAL_MACHINE,
            key.as_ptr(),
            value.as_ptr(),
            flags,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut bytes,
        )
    };
    if err != 0 && err != ERROR_MORE_DATA {
        return None;
    }
    let mut buf = vec![0u16; bytes as usize / 2 + 1];
    let mut bytes = (buf.len() * 2) as u32;
    // SAFETY: `buf` holds `bytes` bytes; names as above.
    let err = unsafe {
        RegGetValueW(
            HKEY_LOCAL_MACHINE,
            key.as_ptr(),
            value.as_ptr(),
            flags,
            std::ptr::null_mut(),
            buf.as_mut_ptr().cast(),
            &mut bytes,
        )
    };
    (err == 0).then(|| from_wide(&buf))
}

/// A REG_DWORD value under HKLM (the 64-bit view).
fn registry_dword(key: &str, value: &str) -> Option<u32> {
    let (key, value) = (wide(key), wide(value));
    let mut data = 0u32;
    let mut bytes = 4u32;
    // SAFETY: NUL-terminated names alive for the call; `data` is a valid
    // 4-byte buffer.
    let err = unsafe {
        RegGetValueW(
            HKEY_LOCAL_MACHINE,
            key.as_ptr(),
            value.as_ptr(),
            RRF_RT_REG_DWORD | RRF_SUBKEY_WOW6464KEY,
            std::ptr::null_mut(),
            (&mut data as *mut u32).cast(),
            &mut bytes,
        )
    };
    (err == 0).then_some(data)
}
