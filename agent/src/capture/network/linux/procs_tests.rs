//! The /proc process table: parsers over real-looking texts, and owners of
//! real sockets (this test process's, and a child's running as another
//! user) found through sock_diag inodes.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use super::*;
use crate::capture::network::linux::sock_diag::{Options, SockDiag};
use crate::capture::network::platform::SocketTable;

#[test]
fn parsers() {
    assert_eq!(socket_inode("socket:[123456]"), Some(123456));
    for bad in [
        "pipe:[12]",
        "socket:[]",
        "socket:[x1]",
        "/dev/null",
        "socket:[12",
    ] {
        assert_eq!(socket_inode(bad), None, "{bad}");
    }
    assert_eq!(
        boot_time("cpu  1 2 3\nbtime 1796485852\nprocesses 9\n"),
        Some(1796485852)
    );
    assert_eq!(boot_time("cpu 1\n"), None);
    let stat = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 98765 1000 10 18446744073709551615";
    assert_eq!(start_ticks(stat), Some(98765));
    assert_eq!(start_ticks("4242 (short) S 1 2"), None);
    assert_eq!(start_ticks("no parenthesis"), None);
    assert_eq!(
        real_uid("Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t5\n"),
        Some(1000)
    );
    assert_eq!(real_uid("Name:\tx\n"), None);
    assert_eq!(
        cmdline(b"qbittorrent-nox\0--webui-port=8080\0"),
        "qbittorrent-nox --webui-port=8080"
    );
    assert_eq!(cmdline(b""), "");
    let long = "é".repeat(700); // 1,400 bytes, 2 per character
    let cut = cmdline(long.as_bytes());
    assert_eq!(cut.len(), CMDLINE_MAX);
    assert!(cut.chars().all(|c| c == 'é'));
    assert_eq!(cmdline(b"a\xffb\0"), "a\u{fffd}b");
}

fn inode_of(sockets: &[crate::capture::network::platform::Socket], port: u16) -> u64 {
    sockets
        .iter()
        .find(|s| s.local.port() == port && s.state == "listen")
        .map(|s| s.inode)
        .expect("the listener is in the dump")
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[test]
fn a_socket_of_this_process_resolves_to_its_pid() {
    let mut procs = Procs::open(Path::new("/proc"), Duration::from_secs(1)).expect("open /proc");
    let mut diag = SockDiag::open(Options::default()).expect("open sock_diag");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let inode = inode_of(
        &diag.dump().expect("dump"),
        listener.local_addr().expect("addr").port(),
    );
    let owners = procs.owners(&[inode, 0]);
    let o = owners.get(&inode).expect("owner found");
    assert_eq!(owners.len(), 1, "inode 0 has no owner");
    assert_eq!(o.pid, std::process::id());
    let comm = std::fs::read_to_string("/proc/self/comm").expect("comm");
    assert_eq!(o.name, comm.trim_end());
    let exe = std::env::current_exe().expect("exe");
    assert_eq!(o.exe, exe.to_string_lossy());
    assert!(
        o.cmdline.starts_with(&*exe.to_string_lossy()),
        "{}",
        o.cmdline
    );
    let euid = nix::unistd::getuid().as_raw();
    assert_eq!(o.uid, euid);
    assert_eq!(o.user, procs.user_name(euid));
    assert!(
        o.started_ms <= now_ms() + 1000 && o.started_ms > now_ms() - 3_600_000,
        "{}",
        o.started_ms
    );
    assert_eq!(procs.scans, 1);
    // Known inodes do not rescan.
    procs.owners(&[inode]);
    assert_eq!(procs.scans, 1);
}

/// A python process holding a listening socket as `nobody`; its port.
struct Foreign(Child);

impl Drop for Foreign {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn foreign_listener() -> Option<(Foreign, u16)> {
    let script = "import socket,sys,time\n\
        s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen()\n\
        print(s.getsockname()[1], flush=True); time.sleep(60)";
    let child = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            script,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    let mut child = Foreign(child);
    let mut line = String::new();
    BufReader::new(child.0.stdout.as_mut()?)
        .read_line(&mut line)
        .ok()?;
    Some((child, line.trim().parse().ok()?))
}

#[test]
fn a_socket_of_another_user_resolves_to_that_process_and_user() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: needs root to run a process as nobody and read its fds");
        return;
    }
    let Some((child, port)) = foreign_listener() else {
        eprintln!("SKIP: setpriv or /usr/bin/python3 missing");
        return;
    };
    let mut procs = Procs::open(Path::new("/proc"), Duration::from_secs(1)).expect("open /proc");
    let mut diag = SockDiag::open(Options::default()).expect("open sock_diag");
    let sockets = diag.dump().expect("dump");
    let inode = inode_of(&sockets, port);
    let s = sockets.iter().find(|s| s.inode == inode).expect("socket");
    assert_eq!(s.uid, 65534);
    let o = procs.owners(&[inode]).remove(&inode).expect("owner found");
    assert_eq!(o.pid, child.0.id());
    assert_eq!((o.uid, o.user.as_str()), (65534, "nobody"));
    assert!(o.name.starts_with("python3"), "{}", o.name);
    assert!(o.exe.contains("python3"), "{}", o.exe);
    assert!(
        o.cmdline.starts_with("/usr/bin/python3 -c import socket"),
        "{}",
        o.cmdline
    );
}

#[test]
fn unknown_inodes_rescan_at_most_once_per_interval() {
    let interval = Duration::from_millis(400);
    let mut procs = Procs::open(Path::new("/proc"), interval).expect("open /proc");
    let mut diag = SockDiag::open(Options::default()).expect("open sock_diag");
    let a = TcpListener::bind("127.0.0.1:0").expect("bind");
    let ia = inode_of(
        &diag.dump().expect("dump"),
        a.local_addr().expect("addr").port(),
    );
    assert!(procs.owners(&[ia]).contains_key(&ia));
    let b = TcpListener::bind("127.0.0.1:0").expect("bind");
    let ib = inode_of(
        &diag.dump().expect("dump"),
        b.local_addr().expect("addr").port(),
    );
    let first = procs.last_scan.expect("scanned");
    let got = procs.owners(&[ia, ib]);
    if first.elapsed() < interval {
        // Within the interval: no rescan, the new inode waits.
        assert_eq!(procs.scans, 1);
        assert!(got.contains_key(&ia) && !got.contains_key(&ib));
    }
    std::thread::sleep(interval);
    let got = procs.owners(&[ia, ib]);
    assert!(got.contains_key(&ib), "found after the interval");
    assert_eq!(got[&ib].pid, std::process::id());
    // An inode that no process holds (a closed socket) keeps no owner.
    let u = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = u.local_addr().expect("addr").port();
    let iu = diag
        .dump()
        .expect("dump")
        .iter()
        .find(|s| s.local.port() == port)
        .map(|s| s.inode)
        .expect("udp");
    drop(u);
    std::thread::sleep(interval);
    let scans = procs.scans;
    assert!(!procs.owners(&[iu]).contains_key(&iu));
    assert_eq!(procs.scans, scans + 1, "a new unknown inode scans once");
    std::thread::sleep(interval);
    assert!(!procs.owners(&[iu, ia]).contains_key(&iu));
    assert_eq!(procs.scans, scans + 1, "and never again for it");
}

#[test]
fn user_names_resolve_and_unknown_uids_are_empty() {
    let mut procs = Procs::open(Path::new("/proc"), Duration::from_secs(1)).expect("open /proc");
    assert_eq!(procs.user_name(0), "root");
    assert_eq!(procs.user_name(65534), "nobody");
    assert_eq!(procs.user_name(3_999_999_999), "");
}

#[test]
fn a_missing_proc_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Err(e) = Procs::open(dir.path(), Duration::from_secs(1)) else {
        panic!("opened a /proc without stat");
    };
    assert!(e.to_string().contains("stat"), "{e}");
}

#[test]
fn limits_name_the_missing_capabilities() {
    let root = "Name:\tx\nCapEff:\t000001ffffffffff\n";
    assert!(limits_for(root).is_empty());
    let no_ptrace = format!(
        "CapEff:\t{:016x}\n",
        0x1ff_ffff_ffffu64 & !(1 << CAP_SYS_PTRACE)
    );
    let l = limits_for(&no_ptrace).join(" ");
    assert!(l.contains("CAP_SYS_PTRACE") && !l.contains("DAC"), "{l}");
    let only_override = format!(
        "CapEff:\t{:016x}\n",
        (1u64 << CAP_DAC_OVERRIDE) | (1 << CAP_SYS_PTRACE)
    );
    assert!(limits_for(&only_override).is_empty());
    let l = limits_for("CapEff:\t0000000000000000\n").join(" ");
    assert!(l.contains("CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE"), "{l}");
    assert!(
        !limits_for("garbage").is_empty(),
        "unreadable: say what may be missing"
    );
}

/// Runs in a child started by the next test without CAP_SYS_PTRACE.
#[test]
#[ignore = "run by without_cap_sys_ptrace_other_users_sockets_have_no_owner"]
fn child_without_sys_ptrace() {
    if std::env::var_os("PROCS_CHILD_WITHOUT_SYS_PTRACE").is_none() {
        return;
    }
    let (_child, port) = foreign_listener().expect("nobody's python listener");
    let mut procs = Procs::open(Path::new("/proc"), Duration::from_secs(1)).expect("open /proc");
    let mut diag = SockDiag::open(Options::default()).expect("open sock_diag");
    let inode = inode_of(&diag.dump().expect("dump"), port);
    println!(
        "CHILD-FOUND {}",
        procs.owners(&[inode]).contains_key(&inode)
    );
    println!("CHILD-LIMITS {}", procs.limits().join(" | "));
}

#[test]
fn without_cap_sys_ptrace_other_users_sockets_have_no_owner() {
    if !nix::unistd::geteuid().is_root() || foreign_listener().is_none() {
        eprintln!("SKIP: needs root, setpriv and /usr/bin/python3");
        return;
    }
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new("setpriv")
        .arg("--bounding-set=-sys_ptrace")
        .arg(&exe)
        .args([
            "--exact",
            "capture::network::linux::procs::tests::child_without_sys_ptrace",
        ])
        .args(["--ignored", "--nocapture", "--test-threads=1"])
        .env("PROCS_CHILD_WITHOUT_SYS_PTRACE", "1")
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |p: &str| {
        stdout
            .lines()
            .find_map(|l| l.split_once(p))
            .map(|(_, v)| v.to_string())
    };
    assert_eq!(line("CHILD-FOUND ").as_deref(), Some("false"), "{stdout}");
    let limits = line("CHILD-LIMITS ").expect("limits");
    assert!(
        limits.contains("CAP_SYS_PTRACE") && !limits.contains("DAC"),
        "{limits}"
    );
}
