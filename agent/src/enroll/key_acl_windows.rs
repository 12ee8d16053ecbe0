//! The agent's private key on Windows: created with an explicit,
//! protected DACL (no inherited entries) that gives full access to
//! SYSTEM, the Administrators group and the account that creates it —
//! nobody else. The creating account is in it because the agent may be
//! run by hand by a non-elevated account (a test, a trial): it must read
//! its own key at the next start; as the service it is SYSTEM, already
//! there. Without this the file would inherit its directory's ACL, and a
//! key under a directory readable by Users would be readable by them.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::windows::ffi::OsStrExt;
use std::os::windows::io::FromRawHandle;
use std::path::Path;

use windows_sys::Win32::Foundation::{
    CloseHandle, GENERIC_READ, GENERIC_WRITE, HANDLE, INVALID_HANDLE_VALUE, LocalFree,
};
use windows_sys::Win32::Security::Authorization::{
    ConvertSidToStringSidW, ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
};
use windows_sys::Win32::Security::{
    GetTokenInformation, PSECURITY_DESCRIPTOR, SECURITY_ATTRIBUTES, TOKEN_QUERY, TOKEN_USER,
    TokenUser,
};
use windows_sys::Win32::Storage::FileSystem::{CREATE_NEW, CreateFileW, FILE_ATTRIBUTE_NORMAL};
use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};

/// The SID (string form) of the account this process runs as.
fn current_user_sid() -> std::io::Result<String> {
    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: GetCurrentProcess returns a pseudo handle that needs no
    // closing; `token` is a valid out pointer.
    if unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) } == 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut buf = vec![0u64; 64]; // 512 bytes, 8-aligned: a TOKEN_USER and its SID
    let mut len = 0u32;
    // SAFETY: `token` is open with TOKEN_QUERY; `buf` is writable for the
    // length given; `len` is a valid out pointer.
    let ok = unsafe {
        GetTokenInformation(
            token,
            TokenUser,
            buf.as_mut_ptr().cast(),
            (buf.len() * 8) as u32,
            &mut len,
        )
    };
    let err = std::io::Error::last_os_error();
    // SAFETY: `token` was opened above and is closed once.
    unsafe { CloseHandle(token) };
    if ok == 0 {
        return Err(err);
    }
    // SAFETY: on success the buffer starts with a TOKEN_USER whose SID
    // pointer points into the same buffer, alive until the end of this
    // function.
    let sid = unsafe { (*buf.as_ptr().cast::<TOKEN_USER>()).User.Sid };
    let mut s: windows_sys::core::PWSTR = std::ptr::null_mut();
    // SAFETY: `sid` is a valid SID (above); `s` is a valid out pointer.
    if unsafe { ConvertSidToStringSidW(sid, &mut s) } == 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: on success `s` is a NUL-terminated wide string allocated by
    // LocalAlloc, read here and freed once.
    let out = unsafe {
        let n = (0..).take_while(|&i| *s.add(i) != 0).count();
        let v = String::from_utf16_lossy(std::slice::from_raw_parts(s, n));
        LocalFree(s.cast());
        v
    };
    Ok(out)
}

/// Creates `path` (which must not exist) with the protected DACL of
/// [`super::files::key_sddl`], for writing.
pub fn create_new_private(path: &Path) -> std::io::Result<File> {
    let sddl = super::files::key_sddl(current_user_sid().ok().as_deref());
    let wide: Vec<u16> = std::ffi::OsStr::new(&sddl)
        .encode_wide()
        .chain(Some(0))
        .collect();
    let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: `wide` is NUL-terminated and outlives the call; `sd` is a
    // valid out pointer; the size is optional.
    let ok = unsafe {
        ConvertStringSecurityDescriptorToSecurityDescriptorW(
            wide.as_ptr(),
            SDDL_REVISION_1,
            &mut sd,
            std::ptr::null_mut(),
        )
    };
    if ok == 0 {
        return Err(std::io::Error::last_os_error());
    }
    let sa = SECURITY_ATTRIBUTES {
        nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
        lpSecurityDescriptor: sd,
        bInheritHandle: 0,
    };
    let name: Vec<u16> = path.as_os_str().encode_wide().chain(Some(0)).collect();
    // SAFETY: `name` is NUL-terminated and `sa` (with its descriptor)
    // valid for the call; CREATE_NEW fails on an existing file or link
    // instead of opening it; no template handle.
    let h = unsafe {
        CreateFileW(
            name.as_ptr(),
            GENERIC_READ | GENERIC_WRITE,
            0,
            &sa,
            CREATE_NEW,
            FILE_ATTRIBUTE_NORMAL,
            std::ptr::null_mut(),
        )
    };
    let err = std::io::Error::last_os_error();
    // SAFETY: `sd` was allocated by the conversion above (LocalAlloc) and
    // is no longer used: the file (if created) has its own copy.
    unsafe { LocalFree(sd) };
    if h == INVALID_HANDLE_VALUE {
        return Err(err);
    }
    // SAFETY: `h` is a file handle just opened here, owned by nobody
    // else; the File closes it.
    Ok(unsafe { File::from_raw_handle(h) })
}
