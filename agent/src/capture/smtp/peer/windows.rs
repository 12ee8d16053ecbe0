//! [`super::lookup`] on Windows: the owning PID of the client's socket from
//! the IP Helper's TCP tables (`GetExtendedTcpTable` /
//! `TCP_TABLE_OWNER_PID_ALL`, IPv4 then IPv6; decoded by
//! [`super::tcp_table`]), the process image (`QueryFullProcessImageNameW`)
//! and the user of its token (`OpenProcessToken` + `GetTokenInformation
//! (TokenUser)` + `LookupAccountSidW` → `DOMAIN\user`). The uid stays
//! None: the user is carried by `LocalPeer::user`. Opening another user's
//! process and its token needs the agent to run as a service
//! (LocalSystem) or an administrator; without that the application is
//! still named when the image can be read, and the user is empty.
#![allow(unsafe_code)]

use std::net::SocketAddr;

use windows_sys::Win32::Foundation::{CloseHandle, ERROR_INSUFFICIENT_BUFFER, HANDLE, NO_ERROR};
use windows_sys::Win32::NetworkManagement::IpHelper::{
    GetExtendedTcpTable, TCP_TABLE_OWNER_PID_ALL,
};
use windows_sys::Win32::Security::{
    GetTokenInformation, LookupAccountSidW, PSID, SID_NAME_USE, TOKEN_QUERY, TOKEN_USER, TokenUser,
};
use windows_sys::Win32::System::Threading::{
    OpenProcess, OpenProcessToken, PROCESS_NAME_WIN32, PROCESS_QUERY_LIMITED_INFORMATION,
    QueryFullProcessImageNameW,
};

use super::LocalPeer;
use super::tcp_table::{self, Row};

/// `AF_INET` / `AF_INET6` (ws2def.h), as `GetExtendedTcpTable` takes them.
const AF_INET: u32 = 2;
const AF_INET6: u32 = 23;

/// A table larger than this is not read (a busy server has tens of
/// thousands of connections, 56 bytes each).
const MAX_TABLE: u32 = 64 << 20;

pub fn lookup(client: SocketAddr, server: SocketAddr) -> Option<LocalPeer> {
    let rows: Vec<Row> = if tcp_table::canonical(client).is_ipv4() {
        tcp_table::decode_v4(&tcp_table_bytes(AF_INET)?)
    } else {
        tcp_table::decode_v6(&tcp_table_bytes(AF_INET6)?)
    };
    let pid = tcp_table::owning_pid(&rows, client, server)?;
    let process = Process::open(pid);
    let path = process
        .as_ref()
        .and_then(Process::image)
        .unwrap_or_default();
    let user = process.as_ref().and_then(Process::user).unwrap_or_default();
    let name = tcp_table::image_name(&path).to_owned();
    Some(LocalPeer {
        uid: None,
        user,
        pid: Some(pid),
        application: super::application(&name, &path, pid),
    })
}

/// The raw `MIB_TCP(6)TABLE_OWNER_PID` for `af`; None when the API fails.
fn tcp_table_bytes(af: u32) -> Option<Vec<u8>> {
    let mut size: u32 = 0;
    // The table can grow between the size query and the read: retry.
    for _ in 0..4 {
        // u32 words: the rows are DWORD-aligned.
        let mut buf = vec![0u32; (size as usize).div_ceil(4)];
        let ptr = if buf.is_empty() {
            std::ptr::null_mut()
        } else {
            buf.as_mut_ptr().cast()
        };
        // SAFETY: `ptr` is null with `size` 0 (a size query) or points to
        // `buf`, which is writable for at least `size` bytes and
        // DWORD-aligned; the API writes at most `size` bytes and updates
        // `size`, a valid local.
        let r = unsafe { GetExtendedTcpTable(ptr, &mut size, 0, af, TCP_TABLE_OWNER_PID_ALL, 0) };
        match r {
            NO_ERROR => return Some(buf.iter().flat_map(|w| w.to_ne_bytes()).collect()),
            ERROR_INSUFFICIENT_BUFFER if size > 0 && size <= MAX_TABLE => {
                // Room for a few more rows that may appear meanwhile.
                size += 16 * 56;
            }
            _ => return None,
        }
    }
    None
}

/// An open process handle, closed on drop.
struct Process(HANDLE);

/// A token handle, closed on drop.
struct Token(HANDLE);

impl Drop for Process {
    fn drop(&mut self) {
        // SAFETY: the handle was returned by OpenProcess and is closed once.
        unsafe { CloseHandle(self.0) };
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        // SAFETY: the handle was returned by OpenProcessToken and is closed
        // once.
        unsafe { CloseHandle(self.0) };
    }
}

impl Process {
    fn open(pid: u32) -> Option<Process> {
        // SAFETY: plain call; a null handle means failure.
        let h = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
        (!h.is_null()).then_some(Process(h))
    }

    /// The full Win32 path of the process's executable.
    fn image(&self) -> Option<String> {
        let mut buf = vec![0u16; 32 * 1024];
        let mut len = buf.len() as u32;
        // SAFETY: `buf` is writable for `len` UTF-16 units; the API sets
        // `len` to the units written (without the NUL).
        let ok = unsafe {
            QueryFullProcessImageNameW(self.0, PROCESS_NAME_WIN32, buf.as_mut_ptr(), &mut len)
        };
        (ok != 0).then(|| String::from_utf16_lossy(buf.get(..len as usize).unwrap_or_default()))
    }

    /// `DOMAIN\user` of the process's token.
    fn user(&self) -> Option<String> {
        let mut tok: HANDLE = std::ptr::null_mut();
        // SAFETY: `self.0` is an open process handle; `tok` is a valid
        // out-pointer.
        if unsafe { OpenProcessToken(self.0, TOKEN_QUERY, &mut tok) } == 0 {
            return None;
        }
        let tok = Token(tok);
        let mut need: u32 = 0;
        // SAFETY: a size query: null buffer of length 0, `need` is a valid
        // out-pointer.
        unsafe { GetTokenInformation(tok.0, TokenUser, std::ptr::null_mut(), 0, &mut need) };
        if need == 0 || need > 64 * 1024 {
            return None;
        }
        // u64 words: TOKEN_USER holds a pointer.
        let mut buf = vec![0u64; (need as usize).div_ceil(8)];
        // SAFETY: `buf` is writable for `need` bytes and 8-aligned.
        let ok = unsafe {
            GetTokenInformation(tok.0, TokenUser, buf.as_mut_ptr().cast(), need, &mut need)
        };
        if ok == 0 {
            return None;
        }
        // SAFETY: on success the buffer starts with a TOKEN_USER whose SID
        // points inside the same buffer, alive until the end of this
        // function.
        let sid = unsafe { (*buf.as_ptr().cast::<TOKEN_USER>()).User.Sid };
        account_of(sid)
    }
}

/// The account name of `sid` as `DOMAIN\user`.
fn account_of(sid: PSID) -> Option<String> {
    let (mut name, mut domain) = (vec![0u16; 256], vec![0u16; 256]);
    for _ in 0..2 {
        let (mut nlen, mut dlen) = (name.len() as u32, domain.len() as u32);
        let mut kind: SID_NAME_USE = 0;
        // SAFETY: `sid` is a valid SID (see the caller); `name` and
        // `domain` are writable for `nlen`/`dlen` UTF-16 units; the API
        // sets them to the units written (without the NUL) or, when too
        // small, to the units needed.
        let ok = unsafe {
            LookupAccountSidW(
                std::ptr::null(),
                sid,
                name.as_mut_ptr(),
                &mut nlen,
                domain.as_mut_ptr(),
                &mut dlen,
                &mut kind,
            )
        };
        if ok != 0 {
            let s = |v: &[u16], n: u32| {
                String::from_utf16_lossy(v.get(..n as usize).unwrap_or_default())
            };
            return Some(tcp_table::account(&s(&domain, dlen), &s(&name, nlen)));
        }
        if nlen as usize <= name.len() && dlen as usize <= domain.len() {
            return None;
        }
        name.resize((nlen as usize).max(name.len()), 0);
        domain.resize((dlen as usize).max(domain.len()), 0);
    }
    None
}
