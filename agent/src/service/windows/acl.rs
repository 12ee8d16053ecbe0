//! The ACL of `%ProgramData%\Kiroku` ([`super::super::KIROKU_DIR_SDDL`]):
//! the SDDL string converted by ConvertStringSecurityDescriptorToSecurity
//! DescriptorW, its DACL set with SetNamedSecurityInfoW as protected (not
//! inheriting ProgramData's "Users may read"), so the files below inherit
//! it. Directly over windows-sys rather than the `windows-acl` crate: two
//! calls, and that crate is unmaintained.
#![allow(unsafe_code)]

use std::path::Path;

use windows_sys::Win32::Foundation::{LocalFree, WIN32_ERROR};
use windows_sys::Win32::Security::Authorization::{
    ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1, SE_FILE_OBJECT,
    SetNamedSecurityInfoW,
};
use windows_sys::Win32::Security::{
    ACL, DACL_SECURITY_INFORMATION, GetSecurityDescriptorDacl, PROTECTED_DACL_SECURITY_INFORMATION,
    PSECURITY_DESCRIPTOR,
};

use crate::os::wide;

/// Replaces the DACL of `dir` with SYSTEM + Administrators full control,
/// inherited below, not inheriting from the parent.
pub fn restrict_to_system_and_admins(dir: &Path) -> std::io::Result<()> {
    let sddl = wide(super::super::KIROKU_DIR_SDDL);
    let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: `sddl` is NUL-terminated and alive for the call; `sd` is a
    // valid out pointer; the size out pointer may be null.
    let ok = unsafe {
        ConvertStringSecurityDescriptorToSecurityDescriptorW(
            sddl.as_ptr(),
            SDDL_REVISION_1,
            &mut sd,
            std::ptr::null_mut(),
        )
    };
    if ok == 0 {
        return Err(std::io::Error::last_os_error());
    }
    let result = set_dacl_from(sd, dir);
    // SAFETY: `sd` was allocated by the conversion above (LocalAlloc) and
    // is not used after this.
    unsafe { LocalFree(sd) };
    result
}

fn set_dacl_from(sd: PSECURITY_DESCRIPTOR, dir: &Path) -> std::io::Result<()> {
    let (mut present, mut defaulted) = (0, 0);
    let mut dacl: *mut ACL = std::ptr::null_mut();
    // SAFETY: `sd` is a valid self-relative descriptor from the conversion;
    // the out pointers are valid locals. `dacl` points into `sd`.
    let ok = unsafe { GetSecurityDescriptorDacl(sd, &mut present, &mut dacl, &mut defaulted) };
    if ok == 0 {
        return Err(std::io::Error::last_os_error());
    }
    if present == 0 || dacl.is_null() {
        return Err(std::io::Error::other("the SDDL string has no DACL"));
    }
    let path = wide(dir);
    // SAFETY: `path` is NUL-terminated and alive; `dacl` is valid while
    // `sd` lives (the caller frees it after); owner, group and SACL are not
    // changed (null).
    let err: WIN32_ERROR = unsafe {
        SetNamedSecurityInfoW(
            path.as_ptr(),
            SE_FILE_OBJECT,
            DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            dacl,
            std::ptr::null(),
        )
    };
    match err {
        0 => Ok(()),
        e => Err(std::io::Error::from_raw_os_error(e as i32)),
    }
}
