//! The Windows agent under Wine (issue 22): where the cross-built
//! `kiroku-agent.exe` is, one Wine prefix shared by the Windows tests, and
//! the test-harness-only `bcryptprimitives.dll` shim (Wine 8.0 lacks
//! `ProcessPrng`, which Rust's std for Windows imports; see
//! `tests/wine/processprng.c`).
//!
//! `scripts/test.sh` cross-builds the exe (`cargo build --target
//! x86_64-pc-windows-gnu -p kiroku-agent`) and installs Wine and mingw when
//! it may; when it could not, [`Wine::get`] returns the reason and the
//! tests count themselves as skipped with it, never as passed.
//!
//! Paths: Wine maps drive `Z:` to the Linux root, so a Linux path `/a/b`
//! is `Z:\a\b` for the Windows program ([`win_path`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The Windows target the agent is cross-built for.
pub const TARGET: &str = "x86_64-pc-windows-gnu";

/// Debian's 64-bit Wine loader.
const WINE64: &str = "/usr/lib/wine/wine64";

/// A ready Wine: the prefix, and a directory holding the agent exe with
/// the shim DLL next to it.
#[derive(Debug, Clone)]
pub struct Wine {
    /// `WINEPREFIX`, shared by every Windows test of this target dir.
    pub prefix: PathBuf,
    /// Where `kiroku-agent.exe` and `bcryptprimitives.dll` are.
    pub bin_dir: PathBuf,
}

impl Wine {
    /// The shared Wine, set up once per test process (the prefix once per
    /// target dir, under a lock, so parallel test binaries share it), or
    /// why it cannot run here — the caller skips with that reason.
    pub fn get() -> Result<&'static Wine, String> {
        static WINE: OnceLock<Result<Wine, String>> = OnceLock::new();
        WINE.get_or_init(setup).as_ref().map_err(Clone::clone)
    }

    /// The cross-built agent, next to the shim.
    pub fn agent_exe(&self) -> PathBuf {
        self.bin_dir.join("kiroku-agent.exe")
    }

    /// A command running the Windows program `exe` (a Linux path) under
    /// Wine, with the prefix set and Wine's own debug output off.
    pub fn command(&self, exe: &Path) -> Command {
        let mut c = Command::new(WINE64);
        c.arg(exe)
            .env("WINEPREFIX", &self.prefix)
            .env("WINEDEBUG", "-all")
            // No Wine dialogs (crash reports, Mono/Gecko installers).
            .env("WINEDLLOVERRIDES", "mscoree,mshtml=;winemenubuilder.exe=d");
        c
    }

    /// A command for a Windows program that is not the agent (a test's own
    /// client exe): copied next to the shim first, so it finds the DLL.
    pub fn program(&self, exe: &Path) -> std::io::Result<Command> {
        let name = exe
            .file_name()
            .ok_or_else(|| std::io::Error::other(format!("{} has no file name", exe.display())))?;
        let at = self.bin_dir.join(name);
        std::fs::copy(exe, &at)?;
        Ok(self.command(&at))
    }
}

/// `path` (a Linux path) as the Windows program sees it: `Z:\…`.
pub fn win_path(path: &Path) -> String {
    let abs = if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    format!("Z:{}", abs.display().to_string().replace('/', "\\"))
}

/// The target dir of this build (the test executable is in
/// `target/debug/deps/`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/debug/deps/<test> → target
    exe.ancestors()
        .nth(3)
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("target"))
}

fn setup() -> Result<Wine, String> {
    if !Path::new(WINE64).exists() {
        return Err(format!(
            "{WINE64} is missing: install Debian's wine64 (scripts/test.sh does as root)"
        ));
    }
    let target = target_dir();
    let exe = target.join(TARGET).join("debug").join("kiroku-agent.exe");
    if !exe.exists() {
        return Err(format!(
            "{} is missing: `rustup target add {TARGET}` and `cargo build --target {TARGET} -p kiroku-agent` (scripts/test.sh does)",
            exe.display()
        ));
    }
    let root = target.join("wine");
    let bin_dir = root.join("bin");
    std::fs::create_dir_all(&bin_dir).map_err(|e| format!("{}: {e}", bin_dir.display()))?;
    let lock = std::fs::File::create(root.join("lock")).map_err(|e| e.to_string())?;
    lock.lock()
        .map_err(|e| format!("locking {}: {e}", root.display()))?;
    let dll = bin_dir.join("bcryptprimitives.dll");
    if !dll.exists() {
        build_shim(&dll)?;
    }
    // A fresh copy per test process would race other processes using it:
    // copy only when the build is newer.
    let here = bin_dir.join("kiroku-agent.exe");
    let newer = match (std::fs::metadata(&exe), std::fs::metadata(&here)) {
        (Ok(a), Ok(b)) => a.modified().ok() > b.modified().ok() || a.len() != b.len(),
        _ => true,
    };
    if newer {
        let tmp = bin_dir.join("kiroku-agent.exe.new");
        std::fs::copy(&exe, &tmp).map_err(|e| format!("copying {}: {e}", exe.display()))?;
        std::fs::rename(&tmp, &here).map_err(|e| e.to_string())?;
    }
    let wine = Wine {
        prefix: root.join("prefix"),
        bin_dir,
    };
    if !wine.prefix.join("system.reg").exists() {
        // The first start creates the prefix (several seconds).
        let out = wine
            .command(&here)
            .arg("--version")
            .output()
            .map_err(|e| format!("running {WINE64}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "the agent exe does not start under Wine ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    Ok(wine)
}

/// Builds the ProcessPrng shim with mingw (test harness only; public for
/// the Windows agent benchmark's own Wine directory).
pub fn build_shim(dll: &Path) -> Result<(), String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("wine");
    let out = Command::new("x86_64-w64-mingw32-gcc")
        .args(["-shared", "-O2", "-o"])
        .arg(dll)
        .arg(src.join("processprng.c"))
        .arg(src.join("bcryptprimitives.def"))
        .arg("-ladvapi32")
        .output()
        .map_err(|e| {
            format!("x86_64-w64-mingw32-gcc: {e}: install Debian's gcc-mingw-w64-x86-64")
        })?;
    if !out.status.success() {
        return Err(format!(
            "building the ProcessPrng shim failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}
