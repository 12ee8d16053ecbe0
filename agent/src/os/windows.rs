//! [`super`] on Windows: `std::os::windows` and Win32 through windows-sys.
#![allow(unsafe_code)]

use std::fs::{File, Metadata};
use std::os::windows::fs::FileExt;
use std::os::windows::io::AsRawHandle;
use std::path::Path;

use windows_sys::Win32::Storage::FileSystem::{
    BY_HANDLE_FILE_INFORMATION, GetDiskFreeSpaceExW, GetFileInformationByHandle,
};

use super::FileId;

/// The identity of an open file: volume serial number and file index.
pub fn file_id(file: &File) -> std::io::Result<FileId> {
    let mut info: BY_HANDLE_FILE_INFORMATION = unsafe { std::mem::zeroed() };
    // SAFETY: the handle is the open file's own for the duration of the
    // call; `info` is a valid, writable BY_HANDLE_FILE_INFORMATION.
    let ok = unsafe { GetFileInformationByHandle(file.as_raw_handle() as _, &mut info) };
    if ok == 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(FileId {
        dev: u64::from(info.dwVolumeSerialNumber),
        ino: (u64::from(info.nFileIndexHigh) << 32) | u64::from(info.nFileIndexLow),
    })
}

/// The identity of the file at `path` (opened for reading to ask).
pub fn path_id(path: &Path) -> std::io::Result<FileId> {
    file_id(&File::open(path)?)
}

/// Reads at `offset` (`seek_read`: it moves the handle's cursor, which no
/// caller relies on).
pub fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    file.seek_read(buf, offset)
}

/// The volume of a file or directory: not told by `Metadata` on Windows,
/// so every directory counts as on the same one (the catch-up scan then
/// also enters volumes mounted into a folder, which are rare on PCs).
pub fn device_of(_m: &Metadata) -> Option<u64> {
    None
}

/// Free bytes for the agent's account on the volume of `dir`.
pub fn free_space(dir: &Path) -> Option<u64> {
    use std::os::windows::ffi::OsStrExt;
    let wide: Vec<u16> = dir.as_os_str().encode_wide().chain(Some(0)).collect();
    let mut free: u64 = 0;
    // SAFETY: `wide` is a NUL-terminated UTF-16 path alive for the call;
    // the out pointer is a valid u64, the two others may be null.
    let ok = unsafe {
        GetDiskFreeSpaceExW(
            wide.as_ptr(),
            &mut free,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    (ok != 0).then_some(free)
}

/// The configuration reload signal: Windows has no SIGHUP; the file is
/// polled every second (and the service's parameter-change control may
/// trigger a reload). Never installed.
pub struct Hangup;

impl Hangup {
    pub fn install() -> std::io::Result<Hangup> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "no SIGHUP on Windows",
        ))
    }

    pub async fn recv(&mut self) -> Option<()> {
        None
    }
}

// Wide strings for Win32 calls (issue 22, lane host: the service and host
// identity use them; one home rather than one copy per module).

/// `s` as a NUL-terminated UTF-16 string for a `PCWSTR` argument.
pub fn wide(s: impl AsRef<std::ffi::OsStr>) -> Vec<u16> {
    use std::os::windows::ffi::OsStrExt;
    s.as_ref().encode_wide().chain(Some(0)).collect()
}

/// The UTF-16 text in `buf` up to its first NUL (all of it without one),
/// lossily as UTF-8.
pub fn from_wide(buf: &[u16]) -> String {
    let end = buf.iter().position(|&c| c == 0).unwrap_or(buf.len());
    String::from_utf16_lossy(&buf[..end])
}

// Issue 22 (relay lane): durable directory entries.
/// Makes the entries of `dir` (a file just created or renamed in it)
/// durable. A directory opens as a file only with
/// `FILE_FLAG_BACKUP_SEMANTICS` (a plain `File::open` is "Access denied",
/// which made every spooled mail over 64 KiB refused with a 451), and
/// `FlushFileBuffers` on it needs write access; NTFS then commits the
/// directory's metadata. File systems that refuse a directory handle for
/// writing or flushing it (FAT/exFAT, some redirectors; Wine maps the
/// flush to fsync of the Linux directory) keep the entry with the file's
/// own flush, so those refusals are not errors; any other error is.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::windows::fs::OpenOptionsExt;
    use windows_sys::Win32::Foundation::{ERROR_ACCESS_DENIED, ERROR_INVALID_FUNCTION};
    use windows_sys::Win32::Storage::FileSystem::FILE_FLAG_BACKUP_SEMANTICS;
    let refused = |e: &std::io::Error| matches!(e.raw_os_error(), Some(c) if c == ERROR_ACCESS_DENIED as i32 || c == ERROR_INVALID_FUNCTION as i32);
    let d = match std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(FILE_FLAG_BACKUP_SEMANTICS)
        .open(dir)
    {
        Ok(d) => d,
        Err(e) if refused(&e) && dir.is_dir() => return Ok(()),
        Err(e) => return Err(e),
    };
    match d.sync_all() {
        Err(e) if refused(&e) => Ok(()),
        r => r,
    }
}
