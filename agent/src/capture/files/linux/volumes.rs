//! Mounted volumes: `/proc/self/mountinfo` parsed into a table, which
//! volume a path lies on, and whether a volume is removable media.
//!
//! A volume is removable when its block device says so
//! (`/sys/dev/block/<maj:min>` → `removable` = 1, for a partition that of
//! its disk), when the device hangs off USB (its sysfs path contains
//! `/usb`), or when it is mounted under one of the configured removable
//! roots (`/media`, `/run/media`). Sysfs and `/dev/disk/by-label` are read
//! under a root directory so the tests can build a fake one.

use std::path::{Path, PathBuf};

/// One line of mountinfo, with what we derived about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub mount_id: u32,
    pub mount_point: PathBuf,
    pub fstype: String,
    /// The mount source: `/dev/sdb1`, `tmpfs`, `server:/export`.
    pub source: String,
    pub major: u32,
    pub minor: u32,
    pub removable: bool,
    /// Why it counts as removable ("device removable", "usb", "under /media").
    pub removable_reason: String,
    pub label: String,
}

/// Decodes mountinfo's octal escapes (`\040` is a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `/proc/self/mountinfo` (see proc(5)). Lines that do not parse are
/// skipped: a kernel that adds fields must not stop file capture.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Mount> {
    let (left, right) = line.split_once(" - ")?;
    let mut l = left.split(' ');
    let mount_id = l.next()?.parse().ok()?;
    let _parent = l.next()?;
    let (major, minor) = l.next()?.split_once(':')?;
    let _root = l.next()?;
    let mount_point = PathBuf::from(unescape(l.next()?));
    let mut r = right.split(' ');
    let fstype = r.next()?.to_owned();
    let source = unescape(r.next()?);
    Some(Mount {
        mount_id,
        mount_point,
        fstype,
        source,
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
        removable: false,
        removable_reason: String::new(),
        label: String::new(),
    })
}

/// Where sysfs and /dev live (`/` in production).
#[derive(Debug, Clone)]
pub struct System {
    pub root: PathBuf,
}

impl Default for System {
    fn default() -> Self {
        System {
            root: PathBuf::from("/"),
        }
    }
}

impl System {
    fn under(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }

    /// "device removable", "usb" or None, from sysfs.
    pub fn device_removable(&self, major: u32, minor: u32) -> Option<&'static str> {
        if major == 0 {
            // Anonymous devices (tmpfs, proc, overlay...) have no block device.
            return None;
        }
        let link = self.under(&format!("/sys/dev/block/{major}:{minor}"));
        let dev = std::fs::canonicalize(&link).ok()?;
        // A partition's own directory has no `removable`; its disk's has.
        let flag_of = |d: &Path| {
            std::fs::read_to_string(d.join("removable"))
                .ok()
                .map(|v| v.trim() == "1")
        };
        let removable = flag_of(&dev)
            .or_else(|| dev.parent().and_then(flag_of))
            .unwrap_or(false);
        if removable {
            return Some("device removable");
        }
        if dev.to_string_lossy().contains("/usb") {
            return Some("usb");
        }
        None
    }

    /// The label of a block device from `/dev/disk/by-label` (its names
    /// escape unusual bytes as `\xNN`).
    pub fn label_of(&self, source: &str) -> String {
        if !source.starts_with("/dev/") {
            return String::new();
        }
        let Ok(dev) = std::fs::canonicalize(self.under(source)) else {
            return String::new();
        };
        let Ok(dir) = std::fs::read_dir(self.under("/dev/disk/by-label")) else {
            return String::new();
        };
        for e in dir.flatten() {
            if std::fs::canonicalize(e.path()).is_ok_and(|t| t == dev) {
                return unescape_hex(&e.file_name().to_string_lossy());
            }
        }
        String::new()
    }

    /// Reads and classifies the mount table.
    pub fn mounts(&self, text: &str, removable_roots: &[PathBuf]) -> Vec<Mount> {
        let mut mounts = parse_mountinfo(text);
        for m in &mut mounts {
            classify(self, m, removable_roots);
        }
        mounts
    }
}

fn unescape_hex(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && b.get(i + 1) == Some(&b'x')
            && let Some(v) = s
                .get(i + 2..i + 4)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn classify(sys: &System, m: &mut Mount, removable_roots: &[PathBuf]) {
    if let Some(root) = removable_roots
        .iter()
        .find(|r| m.mount_point.starts_with(r) && m.mount_point != **r)
    {
        m.removable = true;
        m.removable_reason = format!("under {}", root.display());
    } else if let Some(why) = sys.device_removable(m.major, m.minor) {
        m.removable = true;
        m.removable_reason = why.to_owned();
    }
    if m.removable {
        m.label = sys.label_of(&m.source);
    }
}

/// The mount a path lies on: the longest mount point that is a prefix.
pub fn volume_of<'a>(mounts: &'a [Mount], path: &Path) -> Option<&'a Mount> {
    mounts
        .iter()
        .filter(|m| path.starts_with(&m.mount_point))
        .max_by_key(|m| (m.mount_point.components().count(), m.mount_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
35 22 0:31 / /tmp rw,nosuid shared:2 - tmpfs tmpfs rw
40 22 8:17 / /media/alice/MY\\040STICK rw,nosuid,nodev shared:5 - vfat /dev/sdb1 rw,uid=1000
41 22 8:33 / /mnt/backup rw master:7 - ext4 /dev/sdc1 rw
42 35 0:39 / /tmp/kiroku/media/usb1 rw,relatime - tmpfs kiroku-test rw,size=1024k
garbage line without separator
";

    fn fake_sys() -> (tempfile::TempDir, System) {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let mk = |p: &str| {
            let p = root.join(p);
            std::fs::create_dir_all(&p).expect("mkdir");
            p
        };
        // sda: fixed SATA disk; sdb: removable flag; sdc: fixed, but on USB.
        let sda = mk("sys/devices/pci0000:00/ata1/host0/block/sda");
        std::fs::write(sda.join("removable"), "0\n").expect("write");
        mk("sys/devices/pci0000:00/ata1/host0/block/sda/sda1");
        let sdb = mk("sys/devices/pci0000:00/card0/block/sdb");
        std::fs::write(sdb.join("removable"), "1\n").expect("write");
        mk("sys/devices/pci0000:00/card0/block/sdb/sdb1");
        let sdc = mk("sys/devices/pci0000:00/usb2/2-1/host6/block/sdc");
        std::fs::write(sdc.join("removable"), "0\n").expect("write");
        mk("sys/devices/pci0000:00/usb2/2-1/host6/block/sdc/sdc1");
        let blk = mk("sys/dev/block");
        for (n, target) in [
            ("8:1", "../../devices/pci0000:00/ata1/host0/block/sda/sda1"),
            ("8:17", "../../devices/pci0000:00/card0/block/sdb/sdb1"),
            (
                "8:33",
                "../../devices/pci0000:00/usb2/2-1/host6/block/sdc/sdc1",
            ),
        ] {
            std::os::unix::fs::symlink(target, blk.join(n)).expect("symlink");
        }
        let dev = mk("dev");
        std::fs::write(dev.join("sdb1"), "").expect("write");
        let by_label = mk("dev/disk/by-label");
        std::os::unix::fs::symlink("../../sdb1", by_label.join("MY\\x20STICK")).expect("symlink");
        let sys = System {
            root: root.to_owned(),
        };
        (dir, sys)
    }

    #[test]
    fn mountinfo_lines_parse_with_escapes() {
        let m = parse_mountinfo(MOUNTINFO);
        assert_eq!(m.len(), 5, "the garbage line is skipped");
        assert_eq!(m[2].mount_point, Path::new("/media/alice/MY STICK"));
        assert_eq!((m[2].major, m[2].minor), (8, 17));
        assert_eq!(m[2].fstype, "vfat");
        assert_eq!(m[2].source, "/dev/sdb1");
        assert_eq!(m[4].source, "kiroku-test");
    }

    #[test]
    fn removable_detection() {
        let (_dir, sys) = fake_sys();
        let roots = vec![PathBuf::from("/tmp/kiroku/media")];
        let mounts = sys.mounts(MOUNTINFO, &roots);
        let by_point = |p: &str| {
            mounts
                .iter()
                .find(|m| m.mount_point == Path::new(p))
                .expect("mount")
        };
        // Table: mount point → (removable, reason, label).
        let cases = [
            ("/", false, "", ""),
            ("/tmp", false, "", ""),
            (
                "/media/alice/MY STICK",
                true,
                "device removable",
                "MY STICK",
            ),
            ("/mnt/backup", true, "usb", ""),
            (
                "/tmp/kiroku/media/usb1",
                true,
                "under /tmp/kiroku/media",
                "",
            ),
        ];
        for (point, removable, reason, label) in cases {
            let m = by_point(point);
            assert_eq!(
                (m.removable, m.removable_reason.as_str(), m.label.as_str()),
                (removable, reason, label),
                "{point}"
            );
        }
    }

    #[test]
    fn a_path_lies_on_the_longest_matching_mount() {
        let mounts = parse_mountinfo(MOUNTINFO);
        let v = |p: &str| {
            volume_of(&mounts, Path::new(p))
                .map(|m| m.mount_point.display().to_string())
                .unwrap_or_default()
        };
        assert_eq!(v("/tmp/kiroku/media/usb1/a.txt"), "/tmp/kiroku/media/usb1");
        assert_eq!(v("/tmp/kiroku/media/usb10/a.txt"), "/tmp");
        assert_eq!(v("/home/alice/a.txt"), "/");
    }
}
