//! Disks for the tests: a tmpfs mounted as a stand-in volume, and filling
//! it to the last block.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted for a test (a stand-in removable volume); unmounted on
/// drop, also when the test fails. Needs root.
pub struct TmpfsMount(PathBuf);

impl TmpfsMount {
    pub fn mount(at: &Path) -> anyhow::Result<TmpfsMount> {
        Self::mount_sized(at, "8m")
    }

    /// Mounts a tmpfs of `size` (`mount -o size=`, e.g. "64m").
    pub fn mount_sized(at: &Path, size: &str) -> anyhow::Result<TmpfsMount> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "kiroku-test"])
            .arg(at)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "mount tmpfs on {}: {}",
            at.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(TmpfsMount(at.to_owned()))
    }

    /// Unmounts now; true when it worked.
    pub fn unmount(&mut self) -> bool {
        Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        if !self.unmount() {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Bytes available to unprivileged writers in the file system of `path`.
pub fn available(path: &Path) -> anyhow::Result<u64> {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("df {}: {text}", path.display()))
}

/// Fills the file system of `dir` with `ballast` files until `leave`
/// bytes are available (0: full, to the last block).
pub fn fill_disk(dir: &Path, leave: u64) -> anyhow::Result<()> {
    // Only ever a test tmpfs: never the machine's own disk by mistake.
    let fstype = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(dir)
        .output()?;
    let fstype = String::from_utf8_lossy(&fstype.stdout).trim().to_owned();
    anyhow::ensure!(
        fstype == "tmpfs",
        "refusing to fill {}: it is on {fstype:?}, not a test tmpfs",
        dir.display()
    );
    let path = dir.join("ballast");
    let avail = available(dir)?;
    let size = avail.saturating_sub(leave);
    let st = Command::new("fallocate")
        .args(["-l", &size.to_string()])
        .arg(&path)
        .status()?;
    anyhow::ensure!(st.success(), "fallocate {size} bytes at {}", path.display());
    if leave == 0 {
        // Whatever fallocate left (rounding): take it too.
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=4096"])
            .arg(format!("of={}", dir.join("ballast2").display()))
            .output();
    }
    Ok(())
}

/// Removes what [`fill_disk`] wrote in `dir`.
pub fn unfill_disk(dir: &Path) {
    for f in ["ballast", "ballast2"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
}
