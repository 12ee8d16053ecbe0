//! [`super`] on Windows: the facts from Win32 (GetComputerNameExW,
//! NetGetJoinInformation, the registry, WTSEnumerateSessionsW,
//! GetDynamicTimeZoneInformation, GetUserNameW), turned into the record's
//! text by [`super::winfacts`].
#![allow(unsafe_code)]

use kiroku_proto::HostIdentity;
use windows_sys::Win32::Foundation::ERROR_MORE_DATA;
use windows_sys::Win32::NetworkManagement::NetManagement::{
    NETSETUP_JOIN_STATUS, NetApiBufferFree, NetGetJoinInformation, NetSetupDomainName,
    NetSetupWorkgroupName,
};
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
        interfaces: super::interfaces(),
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
    OsVersion {
        product_name: text("ProductName"),
        display_version: display,
        // Before Windows 10 these two are absent: CurrentVersion "6.3".
        major: registry_dword(CURRENT_VERSION, "CurrentMajorVersionNumber").unwrap_or(10),
        minor: number("CurrentMinorVersionNumber"),
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
