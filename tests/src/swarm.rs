//! A real BitTorrent swarm for the P2P detection tests (issue 21):
//! Debian's `opentracker` as the tracker, torrents made by `mktorrent`,
//! `aria2c` (aria2 1.36) as seeder, leechers and monitored client, each in
//! its own namespace of a [`Lab`].
//!
//! Determinism: DHT (v4 and v6), local peer discovery and peer exchange are
//! off in every client, so the only way to find peers is the tracker (whose
//! whitelist holds exactly the test's torrents), and every peer is one of
//! the lab's. Uploads are capped so a 24 MB transfer takes several seconds
//! and the monitored client downloads from several peers at once.
//!
//! Encryption: aria2 with `--bt-require-crypto=false` (its default, pinned)
//! opens connections with the plain BitTorrent handshake (checked with a
//! packet capture while writing this: `\x13BitTorrent protocol` + the
//! info_hash in clear on every connection); with `--bt-require-crypto=true
//! --bt-force-encryption=true` every connection is MSE/PE encrypted (no
//! plain handshake in the capture) and a peer refuses the legacy
//! handshake. The tracker announce stays plain HTTP in both.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use rand::RngCore;
use sha2::Digest;

use crate::Proc;
use crate::netns::Lab;

/// The port every client listens on (each in its own namespace).
pub const BT_PORT: u16 = 6881;
/// The tracker's HTTP port.
pub const TRACKER_PORT: u16 = 6969;

/// The programs the swarm needs, when one is missing.
pub fn missing_tools() -> Option<String> {
    let missing: Vec<&str> = [
        ("/usr/bin/opentracker", "opentracker"),
        ("/usr/bin/mktorrent", "mktorrent"),
        ("/usr/bin/aria2c", "aria2"),
    ]
    .iter()
    .filter(|(p, _)| !Path::new(p).exists())
    .map(|(_, pkg)| *pkg)
    .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "Debian packages missing: {} (scripts/test.sh installs them)",
            missing.join(" ")
        )
    })
}

/// A file shared by a torrent.
#[derive(Debug, Clone)]
pub struct Torrent {
    /// The `.torrent` metainfo file.
    pub path: PathBuf,
    /// The shared file's name (inside each client's download directory).
    pub name: String,
    /// The complete file (the seeder's copy).
    pub file: PathBuf,
    pub size: u64,
    /// SHA-256 of the file, hex.
    pub sha256: String,
    /// SHA-1 of the bencoded `info` dictionary, hex lower case: what the
    /// handshake and the tracker announce carry.
    pub info_hash: String,
}

/// Writes `size` random bytes to `dir/seed/name` and makes a torrent of it
/// announcing to `announce`; `source` (mktorrent `-s`) makes the info_hash
/// differ between torrents of the same name.
pub fn make_torrent(
    dir: &Path,
    name: &str,
    size: usize,
    announce: &str,
    source: &str,
) -> anyhow::Result<Torrent> {
    let seed_dir = dir.join("seed");
    std::fs::create_dir_all(&seed_dir)?;
    let file = seed_dir.join(name);
    let mut f = std::fs::File::create(&file)?;
    let mut hash = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len());
        rand::rng().fill_bytes(&mut buf[..n]);
        f.write_all(&buf[..n])?;
        hash.update(&buf[..n]);
        left -= n;
    }
    f.sync_all()?;
    let path = dir.join(format!("{name}.torrent"));
    let o = Command::new("mktorrent")
        .args(["-a", announce, "-s", source, "-n", name, "-l", "18", "-o"])
        .arg(&path)
        .arg(&file)
        .output()
        .context("running mktorrent")?;
    anyhow::ensure!(
        o.status.success(),
        "mktorrent: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let info_hash = info_hash(&std::fs::read(&path)?)?;
    Ok(Torrent {
        path,
        name: name.to_owned(),
        file,
        size: size as u64,
        sha256: hex::encode(hash.finalize()),
        info_hash,
    })
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut hash = sha2::Sha256::new();
    std::io::copy(&mut f, &mut hash)?;
    Ok(hex::encode(hash.finalize()))
}

/// The info_hash of a metainfo file: SHA-1 of the bytes of the top-level
/// dictionary's `info` value, found by walking the bencoding.
pub fn info_hash(torrent: &[u8]) -> anyhow::Result<String> {
    /// The end (exclusive) of the bencoded value starting at `i`.
    fn skip(b: &[u8], i: usize) -> anyhow::Result<usize> {
        match b.get(i) {
            Some(b'i') => {
                let e = b[i..]
                    .iter()
                    .position(|&c| c == b'e')
                    .context("unterminated integer")?;
                Ok(i + e + 1)
            }
            Some(b'l') | Some(b'd') => {
                let mut j = i + 1;
                while b.get(j) != Some(&b'e') {
                    anyhow::ensure!(j < b.len(), "unterminated list or dictionary");
                    j = skip(b, j)?;
                }
                Ok(j + 1)
            }
            Some(c) if c.is_ascii_digit() => {
                let colon = b[i..]
                    .iter()
                    .position(|&c| c == b':')
                    .context("string without ':'")?;
                let len: usize = std::str::from_utf8(&b[i..i + colon])?.parse()?;
                let end = i + colon + 1 + len;
                anyhow::ensure!(end <= b.len(), "string past the end");
                Ok(end)
            }
            _ => bail!("not bencoding at byte {i}"),
        }
    }
    anyhow::ensure!(torrent.first() == Some(&b'd'), "not a bencoded dictionary");
    let mut i = 1;
    while torrent.get(i) != Some(&b'e') {
        let key_end = skip(torrent, i)?;
        let key = &torrent[i..key_end];
        let value_end = skip(torrent, key_end)?;
        if key == b"4:info" {
            let digest = <sha1::Sha1 as sha1::Digest>::digest(&torrent[key_end..value_end]);
            return Ok(hex::encode(&digest[..]));
        }
        i = value_end;
    }
    bail!("no info dictionary in the torrent")
}

/// Starts opentracker in `ns` on `ip`:[`TRACKER_PORT`] (TCP and UDP),
/// chrooted to `dir`, with a whitelist of exactly `hashes` (Debian builds
/// it in whitelist mode: an unlisted torrent is refused).
pub fn start_tracker(
    lab: &Lab,
    ns: &str,
    ip: Ipv4Addr,
    dir: &Path,
    hashes: &[&str],
) -> anyhow::Result<Proc> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    // It drops to "nobody" after the chroot and reads the whitelist then.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    std::fs::write(dir.join("whitelist"), format!("{}\n", hashes.join("\n")))?;
    let conf = dir.join("opentracker.conf");
    std::fs::write(&conf, "access.whitelist ./whitelist\n")?;
    let port = TRACKER_PORT.to_string();
    let mut cmd = Command::new("opentracker");
    cmd.args(["-i", &ip.to_string(), "-p", &port, "-P", &port, "-d"])
        .arg(dir)
        .arg("-f")
        .arg(&conf);
    let log = dir.with_extension("log");
    let mut p = lab.spawn(ns, "opentracker", &cmd, &log)?;
    lab.wait_port(ns, SocketAddr::from((ip, TRACKER_PORT)), &mut p)?;
    Ok(p)
}

/// Protocol encryption of every client of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crypto {
    /// Plain BitTorrent handshake (aria2's default, pinned).
    Off,
    /// MSE/PE only: the legacy handshake is neither sent nor accepted.
    Required,
}

/// An aria2c command for `torrent` downloading into (or seeding from)
/// `dir`. `seed`: keep seeding after completion (until killed), else exit
/// when the download is complete.
pub fn aria2c(torrent: &Torrent, dir: &Path, crypto: Crypto, seed: bool) -> Command {
    let mut c = Command::new("aria2c");
    c.args([
        "--no-conf",
        "--enable-dht=false",
        "--enable-dht6=false",
        "--bt-enable-lpd=false",
        "--enable-peer-exchange=false",
        "--summary-interval=0",
        "--console-log-level=notice",
        "--file-allocation=none",
        "--bt-tracker-interval=5",
        "--max-overall-upload-limit=3M",
    ])
    .arg(format!("--listen-port={BT_PORT}"))
    // Exits with the test process, whatever happens to the guards.
    .arg(format!("--stop-with-process={}", std::process::id()))
    .arg("--dir")
    .arg(dir);
    match crypto {
        Crypto::Off => c.arg("--bt-require-crypto=false"),
        Crypto::Required => c.args(["--bt-require-crypto=true", "--bt-force-encryption=true"]),
    };
    if seed {
        // 0.0: seed whatever the ratio, until killed.
        c.arg("--seed-ratio=0.0");
    } else {
        c.arg("--seed-time=0");
    }
    if dir.join(&torrent.name).exists() {
        // The seeder's complete copy: no need to hash it again.
        c.arg("--bt-seed-unverified=true");
    }
    c.arg(&torrent.path);
    c
}

/// Starts a seeder in `ns` sharing `torrent`'s file (copied into `dir`).
pub fn start_seeder(
    lab: &Lab,
    ns: &str,
    torrent: &Torrent,
    dir: &Path,
    crypto: Crypto,
) -> anyhow::Result<Proc> {
    std::fs::create_dir_all(dir)?;
    std::fs::copy(&torrent.file, dir.join(&torrent.name))?;
    lab.spawn(
        ns,
        &format!("seeder in {ns}"),
        &aria2c(torrent, dir, crypto, true),
        &dir.with_extension("log"),
    )
}

/// Starts a client in `ns` downloading `torrent` into `dir`; it seeds on
/// after completion when `seed`, else exits.
pub fn start_leecher(
    lab: &Lab,
    ns: &str,
    torrent: &Torrent,
    dir: &Path,
    crypto: Crypto,
    seed: bool,
) -> anyhow::Result<Proc> {
    std::fs::create_dir_all(dir)?;
    lab.spawn(
        ns,
        &format!("leecher in {ns}"),
        &aria2c(torrent, dir, crypto, seed),
        &dir.with_extension("log"),
    )
}
