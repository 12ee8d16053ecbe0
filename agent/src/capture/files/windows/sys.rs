//! Win32 for file capture, and only here (the rest of the crate denies
//! `unsafe_code`): a directory's change notifications
//! (`ReadDirectoryChangesW`, overlapped, recursive) and the drive
//! questions of [`super::drives::DriveApi`].
#![allow(unsafe_code)]

use std::fs::File;
use std::os::windows::ffi::OsStrExt;
use std::os::windows::fs::OpenOptionsExt;
use std::os::windows::io::AsRawHandle;
use std::path::Path;
use std::time::Duration;

use windows_sys::Win32::Foundation::{
    CloseHandle, ERROR_IO_INCOMPLETE, ERROR_IO_PENDING, GetLastError, HANDLE, WAIT_OBJECT_0,
};
use windows_sys::Win32::Storage::FileSystem::{
    FILE_FLAG_BACKUP_SEMANTICS, FILE_FLAG_OVERLAPPED, FILE_LIST_DIRECTORY,
    FILE_NOTIFY_CHANGE_CREATION, FILE_NOTIFY_CHANGE_DIR_NAME, FILE_NOTIFY_CHANGE_FILE_NAME,
    FILE_NOTIFY_CHANGE_LAST_WRITE, FILE_NOTIFY_CHANGE_SIZE, FILE_SHARE_DELETE, FILE_SHARE_READ,
    FILE_SHARE_WRITE, GetDriveTypeW, GetLogicalDrives, GetVolumeInformationW,
    ReadDirectoryChangesW,
};
use windows_sys::Win32::System::Diagnostics::Debug::{
    SEM_FAILCRITICALERRORS, SEM_NOOPENFILEERRORBOX, SetThreadErrorMode,
};
use windows_sys::Win32::System::IO::{CancelIoEx, GetOverlappedResult, OVERLAPPED};
use windows_sys::Win32::System::Threading::{CreateEventW, ResetEvent, WaitForMultipleObjects};

use super::drives::{DriveApi, VolumeInfo};
use super::notify::{self, Completion};

/// What the directory's change buffer holds (64 KiB: the most a network
/// share accepts).
const BUF_DWORDS: usize = 16 * 1024;

const FILTER: u32 = FILE_NOTIFY_CHANGE_FILE_NAME
    | FILE_NOTIFY_CHANGE_DIR_NAME
    | FILE_NOTIFY_CHANGE_LAST_WRITE
    | FILE_NOTIFY_CHANGE_SIZE
    | FILE_NOTIFY_CHANGE_CREATION;

/// What a completed read brought.
pub enum Taken {
    /// The records (`notify::decode`).
    Changes(Vec<u8>),
    /// The system's buffer overflowed (`ERROR_NOTIFY_ENUM_DIR`, or a read
    /// that returned nothing): changes were dropped.
    Overflow,
    /// The watch failed (the directory went away, access was lost): no
    /// more changes come from it.
    Lost(std::io::Error),
}

/// A recursive watch of one directory tree with one read in flight.
pub struct DirWatch {
    dir: File,
    event: OwnedEvent,
    /// Where the system writes: boxed so their addresses stay put while a
    /// read is in flight (also when the `DirWatch` moves).
    ov: Box<OVERLAPPED>,
    buf: Box<[u32]>,
    pending: bool,
}

// SAFETY: the handles and buffers are owned by this value; Win32 handles
// may be used from any thread, and only the owning thread touches them.
unsafe impl Send for DirWatch {}

struct OwnedEvent(HANDLE);

// SAFETY: as above: an owned event handle.
unsafe impl Send for OwnedEvent {}

impl Drop for OwnedEvent {
    fn drop(&mut self) {
        // SAFETY: the handle came from CreateEventW and is closed once.
        unsafe { CloseHandle(self.0) };
    }
}

impl DirWatch {
    /// Opens `dir` for listing (sharing everything, so the user can still
    /// rename or delete it) and starts the first read.
    pub fn open(dir: &Path) -> std::io::Result<DirWatch> {
        let file = std::fs::OpenOptions::new()
            .access_mode(FILE_LIST_DIRECTORY)
            .share_mode(FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE)
            .custom_flags(FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OVERLAPPED)
            .open(dir)?;
        if !file.metadata()?.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                format!("{} is not a directory", dir.display()),
            ));
        }
        // SAFETY: no attributes, manual reset, not signalled, no name.
        let event = unsafe { CreateEventW(std::ptr::null(), 1, 0, std::ptr::null()) };
        if event.is_null() {
            return Err(std::io::Error::last_os_error());
        }
        let event = OwnedEvent(event);
        // SAFETY: OVERLAPPED is plain data; all-zero is its initial state.
        let mut ov: Box<OVERLAPPED> = Box::new(unsafe { std::mem::zeroed() });
        ov.hEvent = event.0;
        let mut w = DirWatch {
            dir: file,
            event,
            ov,
            buf: vec![0u32; BUF_DWORDS].into_boxed_slice(),
            pending: false,
        };
        w.arm()?;
        Ok(w)
    }

    /// The event signalled when a read completes.
    pub fn handle(&self) -> HANDLE {
        self.event.0
    }

    fn arm(&mut self) -> std::io::Result<()> {
        // SAFETY: the event belongs to this watch.
        unsafe { ResetEvent(self.event.0) };
        // SAFETY: the directory handle is open; buffer and OVERLAPPED are
        // boxed and owned by `self`, which does not free them before the
        // read completes or is cancelled (Drop waits for it); the length
        // is the buffer's in bytes, DWORD-aligned as required.
        let ok = unsafe {
            ReadDirectoryChangesW(
                self.dir.as_raw_handle() as HANDLE,
                self.buf.as_mut_ptr().cast(),
                (self.buf.len() * 4) as u32,
                1,
                FILTER,
                std::ptr::null_mut(),
                &mut *self.ov,
                None,
            )
        };
        if ok == 0 {
            // SAFETY: reads the calling thread's last error.
            let code = unsafe { GetLastError() };
            if code != ERROR_IO_PENDING {
                return Err(std::io::Error::from_raw_os_error(code as i32));
            }
        }
        self.pending = true;
        Ok(())
    }

    /// Collects the completed read (call when [`DirWatch::handle`] is
    /// signalled) and starts the next one.
    pub fn take(&mut self) -> Taken {
        let mut n: u32 = 0;
        // SAFETY: the OVERLAPPED is the one of the read in flight on this
        // handle; no waiting (the event is signalled).
        let ok = unsafe {
            GetOverlappedResult(self.dir.as_raw_handle() as HANDLE, &*self.ov, &mut n, 0)
        };
        let result = if ok == 0 {
            // SAFETY: reads the calling thread's last error.
            let code = unsafe { GetLastError() };
            if code == ERROR_IO_INCOMPLETE {
                return Taken::Changes(Vec::new());
            }
            Err(code)
        } else {
            Ok((n as usize).min(self.buf.len() * 4))
        };
        self.pending = false;
        let taken = match notify::completion(result) {
            Completion::Overflow => Taken::Overflow,
            Completion::Lost(code) => {
                return Taken::Lost(std::io::Error::from_raw_os_error(code as i32));
            }
            Completion::Changes(bytes) => {
                let words = &self.buf[..bytes.div_ceil(4)];
                let mut out: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
                out.truncate(bytes);
                Taken::Changes(out)
            }
        };
        match self.arm() {
            Ok(()) => taken,
            Err(e) => Taken::Lost(e),
        }
    }
}

impl Drop for DirWatch {
    fn drop(&mut self) {
        if !self.pending {
            return;
        }
        let h = self.dir.as_raw_handle() as HANDLE;
        let mut n = 0u32;
        // SAFETY: cancels this handle's read and waits until the system
        // no longer uses the buffer and OVERLAPPED, before they are freed.
        unsafe {
            CancelIoEx(h, &*self.ov);
            GetOverlappedResult(h, &*self.ov, &mut n, 1);
        }
    }
}

/// Waits until one of `handles` is signalled or `timeout` passes; the
/// index of the signalled one. More than 64 handles (the system's limit
/// per wait) are waited on in turns.
pub fn wait_any(handles: &[HANDLE], timeout: Duration) -> Option<usize> {
    const MAX: usize = 64;
    let ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
    if handles.is_empty() {
        std::thread::sleep(timeout);
        return None;
    }
    let chunks: Vec<&[HANDLE]> = handles.chunks(MAX).collect();
    let single = chunks.len() == 1;
    for (c, chunk) in chunks.iter().enumerate() {
        let wait = if single { ms } else { 0 };
        // SAFETY: the handles are events owned by live `DirWatch`es; the
        // count is at most 64.
        let r = unsafe { WaitForMultipleObjects(chunk.len() as u32, chunk.as_ptr(), 0, wait) };
        // WAIT_OBJECT_0 + n: handle n; anything else (timeout, failure,
        // abandoned) is no change.
        let n = r.wrapping_sub(WAIT_OBJECT_0) as usize;
        if n < chunk.len() {
            return Some(c * MAX + n);
        }
    }
    if !single {
        std::thread::sleep(timeout.min(Duration::from_millis(50)));
    }
    None
}

/// No "insert a disk" dialogs on this thread when a drive without a
/// medium is asked about.
pub fn quiet_drive_errors() {
    // SAFETY: sets this thread's error mode; the old mode is not needed.
    unsafe {
        SetThreadErrorMode(
            SEM_FAILCRITICALERRORS | SEM_NOOPENFILEERRORBOX,
            std::ptr::null_mut(),
        )
    };
}

/// The drive questions answered by Windows.
pub struct Win32Drives;

fn wide(s: &str) -> Vec<u16> {
    std::ffi::OsStr::new(s)
        .encode_wide()
        .chain(Some(0))
        .collect()
}

fn from_wide(b: &[u16]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf16_lossy(&b[..end])
}

impl DriveApi for Win32Drives {
    fn logical_drives(&self) -> u32 {
        // SAFETY: no arguments.
        unsafe { GetLogicalDrives() }
    }

    fn drive_type(&self, root: &str) -> u32 {
        let root = wide(root);
        // SAFETY: a NUL-terminated UTF-16 string alive for the call.
        unsafe { GetDriveTypeW(root.as_ptr()) }
    }

    fn volume(&self, root: &str) -> Option<VolumeInfo> {
        let root = wide(root);
        let mut label = [0u16; 261];
        let mut fs = [0u16; 261];
        let mut serial = 0u32;
        // SAFETY: the root is NUL-terminated; the buffers are writable
        // with the lengths given; the unneeded outputs are null.
        let ok = unsafe {
            GetVolumeInformationW(
                root.as_ptr(),
                label.as_mut_ptr(),
                label.len() as u32,
                &mut serial,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                fs.as_mut_ptr(),
                fs.len() as u32,
            )
        };
        (ok != 0).then(|| VolumeInfo {
            label: from_wide(&label),
            serial,
            fs: from_wide(&fs),
        })
    }
}
