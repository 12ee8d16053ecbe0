//! Errors to the Windows event log (Application log, source
//! `KirokuAgent`): RegisterEventSourceW + ReportEventW directly, rather than
//! the `eventlog` crate (which builds a message DLL with mc.exe, not
//! available to a mingw cross-build). The source is registered with the
//! message file of .NET Framework 4 that every Windows 10/11 has
//! (`EventLogMessages.dll`: each event id's text is "%1"), so Event Viewer
//! shows our text as is; without it (Wine) the text is still stored in the
//! event and shown after Windows' "description cannot be found" notice.
#![allow(unsafe_code)]

use anyhow::Context;
use windows_sys::Win32::Foundation::ERROR_FILE_NOT_FOUND;
use windows_sys::Win32::System::EventLog::{
    DeregisterEventSource, EVENTLOG_ERROR_TYPE, EVENTLOG_INFORMATION_TYPE, EVENTLOG_WARNING_TYPE,
    REPORT_EVENT_TYPE, RegisterEventSourceW, ReportEventW,
};
use windows_sys::Win32::System::Registry::{
    HKEY, HKEY_LOCAL_MACHINE, KEY_WRITE, REG_DWORD, REG_EXPAND_SZ, REG_OPTION_NON_VOLATILE,
    RegCloseKey, RegCreateKeyExW, RegDeleteTreeW, RegSetValueExW,
};

use super::super::SERVICE_NAME;
use crate::os::wide;

/// The Application log's sources live under this key.
const SOURCES: &str = "SYSTEM\\CurrentControlSet\\Services\\EventLog\\Application";
/// "%1" for every event id (.NET Framework 4, part of Windows 10/11).
const MESSAGE_FILE: &str =
    "%SystemRoot%\\Microsoft.NET\\Framework64\\v4.0.30319\\EventLogMessages.dll";

/// What an event is.
#[derive(Debug, Clone, Copy)]
pub enum Level {
    Error,
    Warning,
    Information,
}

impl Level {
    fn event_type(self) -> REPORT_EVENT_TYPE {
        match self {
            Level::Error => EVENTLOG_ERROR_TYPE,
            Level::Warning => EVENTLOG_WARNING_TYPE,
            Level::Information => EVENTLOG_INFORMATION_TYPE,
        }
    }

    /// Event ids: 1000 errors, 2000 warnings, 3000 information.
    fn event_id(self) -> u32 {
        match self {
            Level::Error => 1000,
            Level::Warning => 2000,
            Level::Information => 3000,
        }
    }
}

/// Writes `text` to the Application log. Best effort: a log that cannot
/// be written is not an error the agent can act on.
pub fn report(level: Level, text: &str) {
    let source = wide(SERVICE_NAME);
    // SAFETY: `source` is NUL-terminated and alive; null = this computer.
    let log = unsafe { RegisterEventSourceW(std::ptr::null(), source.as_ptr()) };
    if log.is_null() {
        return;
    }
    // ReportEventW limits one string to 31,839 characters.
    let text: String = text.chars().take(31_000).collect();
    let text = wide(text);
    let strings = [text.as_ptr()];
    // SAFETY: `log` is the handle just registered; `strings` holds one
    // NUL-terminated string alive for the call; no SID, no raw data.
    unsafe {
        ReportEventW(
            log,
            level.event_type(),
            0,
            level.event_id(),
            std::ptr::null_mut(),
            1,
            0,
            strings.as_ptr(),
            std::ptr::null(),
        );
        DeregisterEventSource(log);
    }
}

/// Registers the event source (at `service install`).
pub fn register_source() -> anyhow::Result<()> {
    let key = wide(format!("{SOURCES}\\{SERVICE_NAME}"));
    let mut hkey: HKEY = std::ptr::null_mut();
    // SAFETY: `key` is NUL-terminated and alive; `hkey` is a valid out
    // pointer; no class, default security, disposition not wanted.
    let err = unsafe {
        RegCreateKeyExW(
            HKEY_LOCAL_MACHINE,
            key.as_ptr(),
            0,
            std::ptr::null(),
            REG_OPTION_NON_VOLATILE,
            KEY_WRITE,
            std::ptr::null(),
            &mut hkey,
            std::ptr::null_mut(),
        )
    };
    if err != 0 {
        return Err(std::io::Error::from_raw_os_error(err as i32))
            .with_context(|| format!("creating HKLM\\{SOURCES}\\{SERVICE_NAME}"));
    }
    let file = wide(MESSAGE_FILE);
    let file_bytes: Vec<u8> = file.iter().flat_map(|c| c.to_le_bytes()).collect();
    let types: u32 = 7; // error | warning | information
    let name_file = wide("EventMessageFile");
    let name_types = wide("TypesSupported");
    // SAFETY: `hkey` is the open key; names and data are alive for the
    // calls, with their byte lengths.
    let errs = unsafe {
        [
            RegSetValueExW(
                hkey,
                name_file.as_ptr(),
                0,
                REG_EXPAND_SZ,
                file_bytes.as_ptr(),
                file_bytes.len() as u32,
            ),
            RegSetValueExW(
                hkey,
                name_types.as_ptr(),
                0,
                REG_DWORD,
                types.to_le_bytes().as_ptr(),
                4,
            ),
            RegCloseKey(hkey),
        ]
    };
    match errs.into_iter().find(|&e| e != 0) {
        None => Ok(()),
        Some(e) => Err(std::io::Error::from_raw_os_error(e as i32))
            .with_context(|| format!("writing HKLM\\{SOURCES}\\{SERVICE_NAME}")),
    }
}

/// Removes the event source (at `service uninstall`); the events stay.
pub fn unregister_source() -> anyhow::Result<()> {
    let key = wide(format!("{SOURCES}\\{SERVICE_NAME}"));
    // SAFETY: `key` is NUL-terminated and alive for the call.
    let err = unsafe { RegDeleteTreeW(HKEY_LOCAL_MACHINE, key.as_ptr()) };
    match err {
        0 | ERROR_FILE_NOT_FOUND => Ok(()),
        e => Err(std::io::Error::from_raw_os_error(e as i32)).with_context(|| {
            format!("removing the event log source HKLM\\{SOURCES}\\{SERVICE_NAME}")
        }),
    }
}
