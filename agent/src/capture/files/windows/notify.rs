//! `ReadDirectoryChangesW`'s buffer decoded: a chain of
//! `FILE_NOTIFY_INFORMATION` records (`NextEntryOffset`, `Action`,
//! `FileNameLength` in bytes, then the name in UTF-16, relative to the
//! watched directory, `\`-separated), each DWORD-aligned. Pure, so it is
//! tested on any system.

/// `FILE_ACTION_*` (winnt.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `FILE_ACTION_ADDED` (1): created, or moved in from outside.
    Added,
    /// `FILE_ACTION_REMOVED` (2): deleted, or moved out.
    Removed,
    /// `FILE_ACTION_MODIFIED` (3): written, or its attributes/times changed.
    Modified,
    /// `FILE_ACTION_RENAMED_OLD_NAME` (4): the first half of a rename.
    RenamedOld,
    /// `FILE_ACTION_RENAMED_NEW_NAME` (5): its second half, next in order.
    RenamedNew,
}

impl Action {
    fn from_raw(v: u32) -> Option<Action> {
        Some(match v {
            1 => Action::Added,
            2 => Action::Removed,
            3 => Action::Modified,
            4 => Action::RenamedOld,
            5 => Action::RenamedNew,
            _ => return None,
        })
    }
}

/// What a completed read means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// Records to decode (this many bytes).
    Changes(usize),
    /// The system dropped changes: `ERROR_NOTIFY_ENUM_DIR`, or success
    /// with nothing returned (the documented overflow signal).
    Overflow,
    /// The watch failed with this Win32 error; no more changes come.
    Lost(u32),
}

/// `ERROR_NOTIFY_ENUM_DIR` (winerror.h).
pub const ERROR_NOTIFY_ENUM_DIR: u32 = 1022;

/// Classifies a read's result: `Ok(bytes)` or `Err(GetLastError())`.
pub fn completion(result: Result<usize, u32>) -> Completion {
    match result {
        Ok(0) | Err(ERROR_NOTIFY_ENUM_DIR) => Completion::Overflow,
        Ok(n) => Completion::Changes(n),
        Err(code) => Completion::Lost(code),
    }
}

/// One change: what happened to `name` (relative to the watched root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub action: Action,
    pub name: String,
}

/// The header before each name: three little-endian DWORDs.
const HEADER: usize = 12;

/// Decodes the records in `buf` (the bytes the read returned). A record
/// that runs past the end, or an action this code does not know, ends or
/// skips decoding rather than failing: what was decoded is returned with
/// the count of records that were not.
pub fn decode(buf: &[u8]) -> (Vec<Notice>, usize) {
    let mut out = Vec::new();
    let mut bad = 0;
    let mut at = 0usize;
    let dword = |i: usize| -> Option<u32> {
        buf.get(i..i + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    loop {
        let (Some(next), Some(action), Some(len)) = (dword(at), dword(at + 4), dword(at + 8))
        else {
            if at < buf.len() {
                bad += 1;
            }
            break;
        };
        let start = at + HEADER;
        let end = start.saturating_add(len as usize);
        match (buf.get(start..end), Action::from_raw(action)) {
            (Some(bytes), Some(action)) if len % 2 == 0 => {
                let units: Vec<u16> = bytes
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect();
                out.push(Notice {
                    action,
                    name: String::from_utf16_lossy(&units),
                });
            }
            _ => bad += 1,
        }
        if next == 0 {
            break;
        }
        // Forward only, and never past the buffer.
        match at.checked_add(next as usize) {
            Some(n) if n > at && n < buf.len() => at = n,
            _ => {
                bad += 1;
                break;
            }
        }
    }
    (out, bad)
}

#[cfg(test)]
pub(crate) fn encode(records: &[(u32, &str)]) -> Vec<u8> {
    let mut buf = Vec::new();
    for (i, (action, name)) in records.iter().enumerate() {
        let units: Vec<u16> = name.encode_utf16().collect();
        let len = units.len() * 2;
        let size = (HEADER + len).div_ceil(4) * 4;
        let next = if i + 1 == records.len() { 0 } else { size };
        buf.extend_from_slice(&(next as u32).to_le_bytes());
        buf.extend_from_slice(&action.to_le_bytes());
        buf.extend_from_slice(&(len as u32).to_le_bytes());
        for u in units {
            buf.extend_from_slice(&u.to_le_bytes());
        }
        buf.resize(buf.len().div_ceil(4) * 4, 0);
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_is_told_apart() {
        // (read result, meaning)
        let cases = [
            (Ok(120), Completion::Changes(120)),
            (Ok(0), Completion::Overflow),
            (Err(1022), Completion::Overflow),
            (Err(5), Completion::Lost(5)), // access denied: directory gone
            (Err(995), Completion::Lost(995)), // aborted: cancelled
        ];
        for (r, want) in cases {
            assert_eq!(completion(r), want, "{r:?}");
        }
    }

    #[test]
    fn decodes_chains() {
        let n = |action, name: &str| Notice {
            action,
            name: name.to_owned(),
        };
        // (name, buffer, notices, undecoded)
        let cases: Vec<(&str, Vec<u8>, Vec<Notice>, usize)> = vec![
            (
                "empty (the overflow case is handled before)",
                vec![],
                vec![],
                0,
            ),
            (
                "one create, odd-length name padded",
                encode(&[(1, "a.txt")]),
                vec![n(Action::Added, "a.txt")],
                0,
            ),
            (
                "a rename pair in order, nested, Japanese name",
                encode(&[(4, "sub\\old.docx"), (5, "sub\\報告書.docx"), (3, "b")]),
                vec![
                    n(Action::RenamedOld, "sub\\old.docx"),
                    n(Action::RenamedNew, "sub\\報告書.docx"),
                    n(Action::Modified, "b"),
                ],
                0,
            ),
            (
                "an unknown action is skipped, the rest kept",
                encode(&[(9, "x"), (2, "gone")]),
                vec![n(Action::Removed, "gone")],
                1,
            ),
            (
                "truncated name",
                {
                    let mut b = encode(&[(1, "abcdef")]);
                    b.truncate(16);
                    b
                },
                vec![],
                1,
            ),
            (
                "an offset pointing back is not followed",
                {
                    let mut b = encode(&[(1, "a"), (1, "b")]);
                    b[0..4].copy_from_slice(&0u32.wrapping_sub(4).to_le_bytes());
                    b
                },
                vec![n(Action::Added, "a")],
                1,
            ),
            ("a header cut short", vec![1, 0, 0], vec![], 1),
        ];
        for (name, buf, want, bad) in cases {
            assert_eq!(decode(&buf), (want, bad), "{name}");
        }
    }
}
