//! Removable drives from what Windows says about drive letters:
//! `GetLogicalDrives` (a bit per letter), `GetDriveTypeW` per root
//! (`DRIVE_REMOVABLE` is USB mass storage and card readers) and
//! `GetVolumeInformationW` (label, serial number, file system; fails while
//! a reader has no medium). The calls are behind [`DriveApi`] (the real
//! one is `sys::Win32Drives`) so the decisions are tested over recorded
//! API results on any system: Wine cannot fake a USB stick.

/// `GetDriveTypeW` results (winbase.h).
pub const DRIVE_REMOVABLE: u32 = 2;
#[cfg(test)]
pub const DRIVE_FIXED: u32 = 3;
#[cfg(test)]
pub const DRIVE_REMOTE: u32 = 4;
#[cfg(test)]
pub const DRIVE_CDROM: u32 = 5;

/// What `GetVolumeInformationW` returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    pub label: String,
    pub serial: u32,
    pub fs: String,
}

/// The Windows calls drive detection needs.
pub trait DriveApi {
    /// `GetLogicalDrives`: bit 0 is `A:`.
    fn logical_drives(&self) -> u32;
    /// `GetDriveTypeW("E:\\")`.
    fn drive_type(&self, root: &str) -> u32;
    /// `GetVolumeInformationW("E:\\")`; None when it fails (no medium).
    fn volume(&self, root: &str) -> Option<VolumeInfo>;
}

/// A removable drive with a medium in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drive {
    /// `E:\`.
    pub root: String,
    pub label: String,
    pub serial: u32,
    pub fs: String,
}

impl Drive {
    /// The record's `device`: the drive and its volume serial number as
    /// `vol` prints it (`E: serial 1A2B-3C4D`), which tells two sticks
    /// given the same letter apart.
    pub fn device(&self) -> String {
        format!(
            "{} serial {}",
            self.root.trim_end_matches('\\'),
            serial_text(self.serial)
        )
    }
}

/// A volume serial number as Windows prints it: `1A2B-3C4D`.
pub fn serial_text(serial: u32) -> String {
    format!("{:04X}-{:04X}", serial >> 16, serial & 0xFFFF)
}

/// The removable drives that hold a medium now, by letter.
pub fn removable_drives(api: &impl DriveApi) -> Vec<Drive> {
    let mask = api.logical_drives();
    (0..26u8)
        .filter(|i| mask & (1 << i) != 0)
        .map(|i| format!("{}:\\", char::from(b'A' + i)))
        .filter(|root| api.drive_type(root) == DRIVE_REMOVABLE)
        .filter_map(|root| {
            let v = api.volume(&root)?;
            Some(Drive {
                root,
                label: v.label,
                serial: v.serial,
                fs: v.fs,
            })
        })
        .collect()
}

/// What changed between two polls: drives gone, then drives that
/// appeared. A different medium under the same letter (another serial)
/// is the old one gone and the new one appeared.
pub fn changes(old: &[Drive], new: &[Drive]) -> (Vec<Drive>, Vec<Drive>) {
    let same = |a: &Drive, b: &Drive| a.root == b.root && a.serial == b.serial;
    let gone = old
        .iter()
        .filter(|o| !new.iter().any(|n| same(o, n)))
        .cloned()
        .collect();
    let appeared = new
        .iter()
        .filter(|n| !old.iter().any(|o| same(o, n)))
        .cloned()
        .collect();
    (gone, appeared)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recorded answers: (root, drive type, volume information).
    struct Recorded(Vec<(&'static str, u32, Option<VolumeInfo>)>);

    impl DriveApi for Recorded {
        fn logical_drives(&self) -> u32 {
            self.0
                .iter()
                .fold(0, |m, (r, _, _)| m | 1 << (r.as_bytes()[0] - b'A'))
        }
        fn drive_type(&self, root: &str) -> u32 {
            self.0
                .iter()
                .find(|(r, _, _)| *r == root)
                .map_or(0, |(_, t, _)| *t)
        }
        fn volume(&self, root: &str) -> Option<VolumeInfo> {
            self.0
                .iter()
                .find(|(r, _, _)| *r == root)
                .and_then(|(_, _, v)| v.clone())
        }
    }

    fn vol(label: &str, serial: u32) -> Option<VolumeInfo> {
        Some(VolumeInfo {
            label: label.into(),
            serial,
            fs: "FAT32".into(),
        })
    }

    fn drive(root: &str, label: &str, serial: u32) -> Drive {
        Drive {
            root: root.into(),
            label: label.into(),
            serial,
            fs: "FAT32".into(),
        }
    }

    #[test]
    fn detection() {
        // (name, API answers, removable drives found)
        let cases = vec![
            (
                "a PC with a fixed disk, a DVD drive and a network share",
                Recorded(vec![
                    ("C:\\", DRIVE_FIXED, vol("Windows", 1)),
                    ("D:\\", DRIVE_CDROM, vol("DVD", 2)),
                    ("Z:\\", DRIVE_REMOTE, vol("share", 3)),
                ]),
                vec![],
            ),
            (
                "a USB stick and an empty card reader slot",
                Recorded(vec![
                    ("C:\\", DRIVE_FIXED, vol("Windows", 1)),
                    ("E:\\", DRIVE_REMOVABLE, vol("USB_STICK", 0x1a2b_3c4d)),
                    ("F:\\", DRIVE_REMOVABLE, None),
                ]),
                vec![drive("E:\\", "USB_STICK", 0x1a2b_3c4d)],
            ),
            (
                "an unlabelled stick on a late letter",
                Recorded(vec![("X:\\", DRIVE_REMOVABLE, vol("", 7))]),
                vec![drive("X:\\", "", 7)],
            ),
        ];
        for (name, api, want) in cases {
            assert_eq!(removable_drives(&api), want, "{name}");
        }
    }

    #[test]
    fn polling_changes() {
        let e1 = drive("E:\\", "A", 1);
        let e2 = drive("E:\\", "B", 2);
        let f = drive("F:\\", "C", 3);
        // (name, before, after, gone, appeared)
        let cases = vec![
            (
                "nothing",
                vec![e1.clone()],
                vec![e1.clone()],
                vec![],
                vec![],
            ),
            (
                "plugged in",
                vec![],
                vec![e1.clone()],
                vec![],
                vec![e1.clone()],
            ),
            (
                "pulled out",
                vec![e1.clone(), f.clone()],
                vec![f.clone()],
                vec![e1.clone()],
                vec![],
            ),
            (
                "another stick under the same letter",
                vec![e1.clone()],
                vec![e2.clone()],
                vec![e1.clone()],
                vec![e2.clone()],
            ),
        ];
        for (name, old, new, gone, appeared) in cases {
            assert_eq!(changes(&old, &new), (gone, appeared), "{name}");
        }
    }

    #[test]
    fn serials_print_as_vol_does() {
        assert_eq!(serial_text(0x1a2b_3c4d), "1A2B-3C4D");
        assert_eq!(serial_text(7), "0000-0007");
        assert_eq!(
            drive("E:\\", "", 0xdead_beef).device(),
            "E: serial DEAD-BEEF"
        );
    }
}
