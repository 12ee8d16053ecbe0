//! The ProgramData folder as Windows knows it (SHGetKnownFolderPath,
//! FOLDERID_ProgramData), not from the `ProgramData` environment variable:
//! a service's environment need not carry it as the console's does (under
//! Wine the service sees `C:\users\Public`).
#![allow(unsafe_code)]

use windows_sys::Win32::System::Com::CoTaskMemFree;
use windows_sys::Win32::UI::Shell::{FOLDERID_ProgramData, KF_FLAG_DEFAULT, SHGetKnownFolderPath};

/// `C:\ProgramData` on a standard install; `None` if Windows cannot say.
pub fn program_data() -> Option<String> {
    let mut path: windows_sys::core::PWSTR = std::ptr::null_mut();
    // SAFETY: a valid folder id; default flags; null token = this user;
    // `path` is a valid out pointer, freed with CoTaskMemFree (also on
    // failure, as documented).
    let hr = unsafe {
        SHGetKnownFolderPath(
            &FOLDERID_ProgramData,
            KF_FLAG_DEFAULT as u32,
            std::ptr::null_mut(),
            &mut path,
        )
    };
    let text = if hr >= 0 && !path.is_null() {
        let mut len = 0;
        // SAFETY: on success `path` is a NUL-terminated UTF-16 string.
        while unsafe { *path.add(len) } != 0 {
            len += 1;
        }
        // SAFETY: `len` u16s before the NUL, as just counted.
        Some(String::from_utf16_lossy(unsafe {
            std::slice::from_raw_parts(path, len)
        }))
    } else {
        None
    };
    // SAFETY: allocated by SHGetKnownFolderPath (or null); not used after.
    unsafe { CoTaskMemFree(path.cast()) };
    text.filter(|t| !t.is_empty())
}
