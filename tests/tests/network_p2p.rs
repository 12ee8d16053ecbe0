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
use std::time::{Duration, Instant};

use std::collections::{BTreeMap, BTreeSet};

use kiroku_proto::{AlertsRequest, NetworkEvent, P2pEvent, SearchRequest, event::Kind};
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
/// file (checked by SHA-256).
fn run_swarm(
    lab: &Lab,
    env: &Env,
    torrent: &Torrent,
    crypto: Crypto,
    tag: &str,
) -> anyhow::Result<Run> {
    let from_ms = kiroku_common::now_ms();
    let rx0 = lab.rx_counters(&lab.hub, "br0")?;
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
    let to_ms = kiroku_common::now_ms();
    let rx1 = lab.rx_counters(&lab.hub, "br0")?;
    let log = client.log_text();
    let downloaded = aria2_downloaded(&log)
        .ok_or_else(|| anyhow::anyhow!("no uploaded/downloaded figure in aria2c's log:\n{log}"))?;
    // The leechers and the seeder go; their data with the env.
    drop(peers);
    Ok(Run {
        pid,
        from_ms,
        to_ms,
        downloaded,
        br0_rx: (rx1.0 - rx0.0, rx1.1 - rx0.1),
    })
}

/// `[network]` for the agent on the monitored host: capture and inspect
/// on. `min_peers`: the swarm gives the monitored client LEECHERS + 1 = 5
/// peers (all on port 6881, the client's local ports are ephemeral): 4
/// leaves room for one peer it never got to.
/// `quiet_secs`: an episode ends 15 s after the client's last sign, so
/// the test sees each run's `ended` record (the runs last ~10-20 s each).
/// `summary_secs`: the apt-like burst's connections beyond
/// `coalesce_after` are in a summary written within 5 s.
fn network_config() -> String {
    format!(
        "[network]\nenabled = true\ninspect = true\nsummary_secs = 5\n[network.p2p]\nmin_peers = {LEECHERS}\nwindow_secs = 120\nquiet_secs = 15\n"
    )
}

/// The collector's alert rules: one p2p rule (the alert kind of issue 21).
const RULE: &str = "p2p-file-sharing";

fn network(e: &kiroku_proto::Event) -> Option<&NetworkEvent> {
    match &e.kind {
        Some(Kind::Network(n)) => Some(n),
        _ => None,
    }
}

fn p2p(e: &kiroku_proto::Event) -> Option<&P2pEvent> {
    match &e.kind {
        Some(Kind::P2p(p)) => Some(p),
        _ => None,
    }
}

fn pid_of(p: Option<&kiroku_proto::ProcessRef>) -> u32 {
    p.map_or(0, |p| p.pid)
}

/// Every record of `kind` ("network", "p2p") stored so far.
async fn records(env: &Env, kind: &str) -> anyhow::Result<Vec<kiroku_proto::Event>> {
    env.search_all(SearchRequest {
        kind: kind.into(),
        ..Default::default()
    })
    .await
}

/// Polls until `check` returns Ok (for at most `within`); fails with its
/// last error.
async fn until<T, F, Fut>(within: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// What one swarm run did on the monitored host: the client's pid and
/// the time window it ran in (agent clock = this machine's clock).
struct Run {
    pid: u32,
    from_ms: i64,
    to_ms: i64,
    /// What the client says it downloaded (its closing "uploaded/
    /// downloaded=" line, rounded down to whole MiB above 10 MiB).
    downloaded: u64,
    /// The kernel's count of what the monitored host received on its
    /// bridge during the run: (bytes of frames, packets).
    br0_rx: (u64, u64),
}

/// aria2c's closing "Your share ratio was 0.2, uploaded/downloaded=
/// 3.6MiB/22MiB": the downloaded bytes (to its rounding: 0.1 unit).
fn aria2_downloaded(log: &str) -> Option<u64> {
    let tail = log.rsplit("uploaded/downloaded=").next()?;
    let word = tail.split_whitespace().next()?;
    let down = word.split('/').nth(1)?;
    let (num, unit) = down.split_at(down.find(|c: char| c.is_ascii_alphabetic())?);
    let mult = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((num.parse::<f64>().ok()? * mult) as u64)
}

/// The monitored client's flows in `run`, chosen without looking at the
/// recorded process: every flow on the monitored host to or from a
/// BitTorrent port ([`swarm::BT_PORT`], only the monitored client uses it
/// there) or the tracker, started during the run; waits (30 s) until all
/// are closed. Returns them by flow_id, and those never closed.
async fn closed_flows(
    env: &Env,
    run: &Run,
    tracker: &str,
) -> anyhow::Result<(BTreeMap<String, Vec<NetworkEvent>>, Vec<String>)> {
    let bt = u32::from(swarm::BT_PORT);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut flows: BTreeMap<String, Vec<NetworkEvent>> = BTreeMap::new();
        for e in records(env, "network").await? {
            if let Some(n) = network(&e).filter(|n| {
                (n.local_port == bt || n.remote_port == bt || n.remote_ip == tracker)
                    && n.start_ms >= run.from_ms
                    && n.start_ms <= run.to_ms
            }) {
                flows.entry(n.flow_id.clone()).or_default().push(n.clone());
            }
        }
        let open: Vec<String> = flows
            .iter()
            .filter(|(_, r)| {
                !r.iter().any(|n| {
                    n.phase == "close" || n.phase == "listen_close" || n.phase == "summary"
                })
            })
            .map(|(id, _)| id.clone())
            .collect();
        if (!flows.is_empty() && open.is_empty()) || Instant::now() > deadline {
            return Ok((flows, open));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Failed checks, collected so that one run reports every discrepancy.
#[derive(Default)]
struct Checks(Vec<String>);

impl Checks {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }
}

/// One line per record, for failure messages.
fn table(records: &[&NetworkEvent]) -> String {
    records
        .iter()
        .map(|n| {
            format!(
                "{} {} {}:{} -> {}:{} {} in {} (+{}) out {} (+{}) {} {}",
                n.flow_id,
                n.phase,
                n.local_ip,
                n.local_port,
                n.remote_ip,
                n.remote_port,
                n.direction,
                n.bytes_in,
                n.bytes_in_delta,
                n.bytes_out,
                n.bytes_out_delta,
                n.counters,
                n.attribution
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The monitored client's P2P records once its episode has `ended`.
async fn episode(env: &Env, pid: u32) -> anyhow::Result<Vec<P2pEvent>> {
    until(Duration::from_secs(45), || async {
        let got: Vec<P2pEvent> = records(env, "p2p")
            .await?
            .iter()
            .filter_map(p2p)
            .filter(|p| pid_of(p.process.as_ref()) == pid)
            .cloned()
            .collect();
        anyhow::ensure!(
            got.iter().any(|p| p.phase == "ended"),
            "no ended p2p record for pid {pid} yet: {got:#?}"
        );
        Ok(got)
    })
    .await
}

/// (episode_id, process pid) of every p2p alert the collector replays.
async fn p2p_alerts(env: &Env) -> anyhow::Result<Vec<(String, u32)>> {
    let mut q = env.investigator().await?;
    let mut s = q
        .alerts(AlertsRequest {
            from_ms: 1,
            follow: false,
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(a) = s.message().await? {
        if a.rule != RULE {
            continue;
        }
        anyhow::ensure!(a.kind == "p2p", "{a:?}");
        match a.event.as_ref().and_then(p2p) {
            Some(p) => out.push((p.episode_id.clone(), pid_of(p.process.as_ref()))),
            None => anyhow::bail!("a p2p alert on something else: {a:?}"),
        }
    }
    out.sort();
    Ok(out)
}

/// What one run must have left in the collector: the monitored client's
/// flows (process, peers, bytes) and its one P2P episode with `reasons`
/// (and not `absent`), `info_hash` among its info_hashes. Returns the
/// episode id (empty when there is none).
#[allow(clippy::too_many_arguments)]
async fn check_run(
    env: &Env,
    lab: &Lab,
    run: &Run,
    torrent: &Torrent,
    reasons: &[&str],
    absent: &[&str],
    c: &mut Checks,
) -> anyhow::Result<String> {
    let pid = run.pid;
    let tracker = lab.peer(TRACKER).ip.to_string();
    let (flows, open) = closed_flows(env, run, &tracker).await?;
    let all: Vec<&NetworkEvent> = flows.values().flatten().collect();
    c.check(!flows.is_empty(), || {
        format!("no flow of the monitored client (pid {pid}) recorded")
    });
    c.check(open.is_empty(), || {
        let recs: Vec<&NetworkEvent> = open.iter().filter_map(|id| flows.get(id)).flatten().collect();
        format!(
            "{} flows of the monitored client (pid {pid}, exited) have no close record 30 s later:\n{}",
            open.len(),
            table(&recs)
        )
    });
    // Every one of them is the monitored client's: process and attribution.
    let wrong: Vec<&NetworkEvent> = all
        .iter()
        .copied()
        .filter(|n| {
            let p = n.process.as_ref();
            pid_of(p) != pid
                || p.map(|p| p.name.as_str()) != Some("aria2c")
                || p.map(|p| p.exe.as_str()) != Some("/usr/bin/aria2c")
        })
        .collect();
    c.check(wrong.is_empty(), || {
        format!(
            "{} of the {} records of the monitored client (pid {pid}) do not name it:\n{}",
            wrong.len(),
            all.len(),
            table(&wrong)
        )
    });
    // The peers it talked BitTorrent with: the seeder and the leechers.
    let swarm_ips: BTreeSet<String> = (SEEDER..FIRST_LEECHER + LEECHERS)
        .map(|i| lab.peer(i).ip.to_string())
        .collect();
    let peers: BTreeSet<String> = all
        .iter()
        .filter(|n| swarm_ips.contains(&n.remote_ip))
        .map(|n| n.remote_ip.clone())
        .collect();
    c.check(peers.len() >= LEECHERS, || {
        format!("the monitored client's recorded peers {peers:?} (swarm: {swarm_ips:?})")
    });
    // Bytes: the deltas of all its records add up to what it received:
    // the file (at least 90% of it), and what the kernel counted on the
    // host's bridge (frames: TCP payload plus 66 bytes of headers a
    // packet), within 10%. aria2 can fetch blocks twice (endgame), so
    // what it receives can exceed the file: 24 MB came in as 27.5 MB.
    let size = torrent.size as f64;
    let (frames, packets) = run.br0_rx;
    let payload = frames.saturating_sub(packets * 66) as f64;
    let near = |b: u64| {
        let b = b as f64;
        b >= size * 0.9 && b >= payload * 0.9 && b <= payload * 1.1
    };
    let bytes_in: u64 = all.iter().map(|n| n.bytes_in_delta).sum();
    c.check(near(bytes_in), || {
        format!(
            "the monitored client's flows received {bytes_in} bytes; the file has {}, the host's bridge received {frames} bytes in {packets} frames (~{payload} of payload):\n{}",
            torrent.size,
            table(&all)
        )
    });
    let attributed: u64 = all
        .iter()
        .filter(|n| pid_of(n.process.as_ref()) == pid)
        .map(|n| n.bytes_in_delta)
        .sum();
    c.check(near(attributed), || {
        format!(
            "the flows recorded with the client's pid {pid} received {attributed} bytes; the file has {}, the bridge ~{payload} of payload",
            torrent.size
        )
    });
    eprintln!(
        "pid {pid}: file {} B, client counted {} B, bridge rx {frames} B in {packets} frames, recorded {bytes_in} B ({attributed} B under its pid)",
        torrent.size, run.downloaded
    );
    // Bytes come from the kernel's per-socket counters.
    for n in all
        .iter()
        .filter(|n| n.protocol == "tcp" && n.bytes_in_delta + n.bytes_out_delta > 0)
    {
        c.check(n.counters == "tcp_info", || format!("counters of {n:?}"));
    }

    let ep = match episode(env, pid).await {
        Ok(ep) => ep,
        Err(e) => {
            c.0.push(format!("no P2P episode of pid {pid}: {e:#}"));
            return Ok(String::new());
        }
    };
    let ids: BTreeSet<&str> = ep.iter().map(|p| p.episode_id.as_str()).collect();
    c.check(ids.len() == 1, || {
        format!("one episode for pid {pid}: {ep:#?}")
    });
    let phases: Vec<&str> = ep.iter().map(|p| p.phase.as_str()).collect();
    c.check(
        phases.iter().filter(|p| **p == "detected").count() == 1,
        || format!("one detected record for pid {pid}: {phases:?}"),
    );
    let fired: BTreeSet<&str> = ep
        .iter()
        .flat_map(|p| p.reasons.iter().map(|r| r.code.as_str()))
        .collect();
    for r in reasons {
        c.check(fired.contains(r), || {
            format!("reason {r} for pid {pid}; fired: {fired:?}\n{ep:#?}")
        });
    }
    for r in absent {
        c.check(!fired.contains(r), || {
            format!("reason {r} must not fire for pid {pid}: {ep:#?}")
        });
    }
    let hashes: BTreeSet<&str> = ep
        .iter()
        .flat_map(|p| p.info_hashes.iter().map(String::as_str))
        .collect();
    c.check(hashes.contains(torrent.info_hash.as_str()), || {
        format!(
            "info_hash {} in the episode of pid {pid}: {hashes:?}",
            torrent.info_hash
        )
    });
    if let Some(ended) = ep.iter().find(|p| p.phase == "ended") {
        c.check(ended.peers >= LEECHERS as u64, || {
            format!("peers of the ended episode: {ended:?}")
        });
        c.check((ended.bytes_in as f64) >= size * 0.9, || {
            format!("the ended episode's volume: {ended:?}")
        });
    }
    Ok(ids.into_iter().next().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn swarm_is_detected_with_encryption_off_and_required() -> anyhow::Result<()> {
    if let Some(why) = unavailable() {
        skip("swarm_is_detected_with_encryption_off_and_required", &why);
        return Ok(());
    }
    let started = Instant::now();
    let env = Env::new()?;
    std::fs::write(
        env.path().join("rules.toml"),
        format!("[[rule]]\nname = \"{RULE}\"\nkind = \"p2p\"\nseverity = \"critical\"\n"),
    )?;
    let _collector = env.start_collector_with("[alerts]\nrules = \"rules.toml\"\n")?;
    let mut lab = Lab::new(FIRST_LEECHER + LEECHERS - 1)?;
    let gateway = SocketAddr::from((lab.peer(GATEWAY).ip, env.grpc));
    let ns = lab.peer(GATEWAY).ns.clone();
    lab.forward(&ns, gateway, SocketAddr::from(([127, 0, 0, 1], env.grpc)))?;
    let smtp = SocketAddr::from((HUB_IP, free_port()));
    let agent = netns::start_agent(
        &lab,
        &env,
        &lab.hub,
        "vm-17",
        gateway,
        smtp,
        None,
        &network_config(),
    )?;
    agent
        .wait_log("recording network activity", Duration::from_secs(20))
        .await?;

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
    let plain_run = run_swarm(&lab, &env, &plain, Crypto::Off, "plain")?;
    eprintln!("plain run: {:?}", t.elapsed());
    let t = Instant::now();
    let crypt_run = run_swarm(&lab, &env, &crypt, Crypto::Required, "crypt")?;
    eprintln!("encrypted run: {:?}", t.elapsed());
    let (plain_pid, crypt_pid) = (plain_run.pid, crypt_run.pid);

    let mut c = Checks::default();
    // Encryption off: the handshake and the announce are both seen.
    let plain_ep = check_run(
        &env,
        &lab,
        &plain_run,
        &plain,
        &[
            "known_client",
            "many_peers",
            "tracker_announce",
            "bt_handshake",
        ],
        &[],
        &mut c,
    )
    .await?;
    // Encryption required: no plain handshake anywhere (that it does not
    // fire shows the run really was encrypted); the rest still fires, the
    // info_hash comes from the plain-HTTP announce.
    let crypt_ep = check_run(
        &env,
        &lab,
        &crypt_run,
        &crypt,
        &["known_client", "many_peers", "tracker_announce"],
        &["bt_handshake"],
        &mut c,
    )
    .await?;
    c.check(plain_ep != crypt_ep || plain_ep.is_empty(), || {
        format!("the two clients share episode {plain_ep}")
    });

    // The info_hash links the records: a search finds the episode by it.
    let linked = env
        .search_all(SearchRequest {
            kind: "p2p".into(),
            info_hash: plain.info_hash.clone(),
            ..Default::default()
        })
        .await?;
    c.check(
        !linked.is_empty()
            && linked
                .iter()
                .filter_map(p2p)
                .all(|p| p.episode_id == plain_ep),
        || {
            format!(
                "p2p records with info_hash {}: {linked:#?}",
                plain.info_hash
            )
        },
    );
    // Also on the flows (the handshake seen on them), plain run only.
    let flows_with_hash = env
        .search_all(SearchRequest {
            kind: "network".into(),
            info_hash: plain.info_hash.clone(),
            ..Default::default()
        })
        .await?;
    c.check(
        flows_with_hash
            .iter()
            .filter_map(network)
            .any(|n| pid_of(n.process.as_ref()) == plain_pid),
        || {
            format!(
                "no flow of the plain run's client carries info_hash {} ({} flows do)",
                plain.info_hash,
                flows_with_hash.len()
            )
        },
    );

    // The alert: once per process and episode, nothing else P2P.
    let alerts = until(Duration::from_secs(20), || async {
        let a = p2p_alerts(&env).await?;
        anyhow::ensure!(a.len() >= 2, "p2p alerts so far: {a:?}");
        Ok(a)
    })
    .await
    .unwrap_or_else(|e| {
        c.0.push(format!("{e:#}"));
        Vec::new()
    });
    let mut want = vec![(plain_ep, plain_pid), (crypt_ep, crypt_pid)];
    want.sort();
    c.check(alerts.is_empty() || alerts == want, || {
        format!("p2p alerts {alerts:?}, want one per episode {want:?}")
    });
    let others: Vec<P2pEvent> = records(&env, "p2p")
        .await?
        .iter()
        .filter_map(p2p)
        .filter(|p| ![plain_pid, crypt_pid].contains(&pid_of(p.process.as_ref())))
        .cloned()
        .collect();
    c.check(others.is_empty(), || {
        format!("P2P found for other processes: {others:#?}")
    });
    eprintln!("whole test: {:?}", started.elapsed());
    assert!(
        c.0.is_empty(),
        "{} checks failed:\n\n{}",
        c.0.len(),
        c.0.join("\n\n")
    );
    Ok(())
}

/// An HTTPS server (python3 http.server wrapped in TLS with a certificate
/// of the test's CA for `ip`) serving `root` on `ip`:443.
const HTTPS_SERVER: &str = r#"
import http.server, os, ssl, sys
ip, cert, key, root = sys.argv[1:5]
os.chdir(root)
srv = http.server.ThreadingHTTPServer((ip, 443), http.server.SimpleHTTPRequestHandler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"#;

/// What apt does when it fetches packages: one process, a burst of
/// connections (a new one per file here) to a couple of mirrors on port 80.
const APT_LIKE: &str = r#"
import http.client, sys
hosts = sys.argv[1:]
total = 0
for i in range(20):
    c = http.client.HTTPConnection(hosts[i % len(hosts)], 80, timeout=20)
    c.request("GET", "/pool/pkg%d.deb" % (i % 5))
    r = c.getresponse()
    assert r.status == 200, r.status
    total += len(r.read())
    c.close()
print(total)
"#;

/// An SMTP session through the agent (relay mode) from another host.
const SMTP_CLIENT: &str = r#"
import smtplib, sys
host, port = sys.argv[1], int(sys.argv[2])
with smtplib.SMTP(host, port, timeout=30) as s:
    s.sendmail("alice@corp.example", ["bob@corp.example"],
               b"From: alice@corp.example\r\nTo: bob@corp.example\r\nSubject: quarterly\r\n\r\nfigures attached\r\n")
print("sent")
"#;

/// Runs `cmd` in `ns` to its end (60 s at most); fails unless it succeeds.
fn run_in(lab: &Lab, ns: &str, cmd: &std::process::Command) -> anyhow::Result<String> {
    let (ok, out) = kiroku_tests::run_client(&mut lab.wrap(ns, cmd), None)?;
    anyhow::ensure!(ok, "{cmd:?} in {ns} failed: {out}");
    Ok(out)
}

fn python(script: &str) -> std::process::Command {
    let mut c = std::process::Command::new("python3");
    c.arg("-c").arg(script);
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn ordinary_traffic_is_not_taken_for_p2p() -> anyhow::Result<()> {
    if let Some(why) = netns::unavailable() {
        skip("ordinary_traffic_is_not_taken_for_p2p", &why);
        return Ok(());
    }
    let started = Instant::now();
    let env = Env::new()?;
    std::fs::write(
        env.path().join("rules.toml"),
        format!("[[rule]]\nname = \"{RULE}\"\nkind = \"p2p\"\nseverity = \"critical\"\n"),
    )?;
    let _collector = env.start_collector_with("[alerts]\nrules = \"rules.toml\"\n")?;
    // p1 HTTPS server (and the SMTP client), p2 and p3 HTTP mirrors, p4 the
    // SMTP upstream, p5 the collector gateway.
    let mut lab = Lab::new(5)?;
    let (web, mirror_a, mirror_b, mx) = (
        lab.peer(1).clone(),
        lab.peer(2).clone(),
        lab.peer(3).clone(),
        lab.peer(4).clone(),
    );
    let gateway = SocketAddr::from((lab.peer(5).ip, env.grpc));
    let ns = lab.peer(5).ns.clone();
    lab.forward(&ns, gateway, SocketAddr::from(([127, 0, 0, 1], env.grpc)))?;

    // The servers.
    let www = env.path().join("www");
    std::fs::create_dir_all(www.join("pool"))?;
    std::fs::write(www.join("big.bin"), vec![7u8; 2_000_000])?;
    for i in 0..5 {
        std::fs::write(www.join(format!("pool/pkg{i}.deb")), vec![i as u8; 200_000])?;
    }
    let (cert, key) = env.issue("collector", "web", &[&web.ip.to_string()])?;
    let mut servers = Vec::new();
    let mut https = python(HTTPS_SERVER);
    https.arg(web.ip.to_string()).arg(&cert).arg(&key).arg(&www);
    let mut p = lab.spawn(
        &web.ns,
        "https server",
        &https,
        &env.path().join("https.log"),
    )?;
    lab.wait_port(&web.ns, SocketAddr::from((web.ip, 443)), &mut p)?;
    servers.push(p);
    for m in [&mirror_a, &mirror_b] {
        let mut c = std::process::Command::new("python3");
        c.args([
            "-m",
            "http.server",
            "80",
            "--bind",
            &m.ip.to_string(),
            "--directory",
        ])
        .arg(&www);
        let mut p = lab.spawn(
            &m.ns,
            "mirror",
            &c,
            &env.path().join(format!("{}.log", m.ns)),
        )?;
        lab.wait_port(&m.ns, SocketAddr::from((m.ip, 80)), &mut p)?;
        servers.push(p);
    }
    let mut c = std::process::Command::new("python3");
    c.args(["-m", "aiosmtpd", "-n", "-c", "aiosmtpd.handlers.Sink", "-l"])
        .arg(format!("{}:25", mx.ip));
    let mut p = lab.spawn(&mx.ns, "smtp upstream", &c, &env.path().join("mx.log"))?;
    lab.wait_port(&mx.ns, SocketAddr::from((mx.ip, 25)), &mut p)?;
    servers.push(p);

    // The monitored host: the agent relays mail to the upstream.
    let smtp = SocketAddr::from((HUB_IP, free_port()));
    let agent = netns::start_agent(
        &lab,
        &env,
        &lab.hub,
        "vm-18",
        gateway,
        smtp,
        Some(SocketAddr::from((mx.ip, 25))),
        &network_config(),
    )?;
    agent
        .wait_log("recording network activity", Duration::from_secs(20))
        .await?;

    // curl to the HTTPS server (verified TLS), the apt-like burst, one SMTP
    // session relayed through the agent.
    let mut curl = std::process::Command::new("curl");
    curl.args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(env.pki().join("ca.pem"))
        .arg(format!("https://{}/big.bin", web.ip));
    let code = run_in(&lab, &lab.hub, &curl)?;
    assert_eq!(code.trim(), "200", "curl: {code}");
    let mut apt = python(APT_LIKE);
    apt.arg(mirror_a.ip.to_string())
        .arg(mirror_b.ip.to_string());
    let total = run_in(&lab, &lab.hub, &apt)?;
    assert_eq!(total.trim(), "4000000", "apt-like burst: {total}");
    let mut mail = python(SMTP_CLIENT);
    mail.arg(HUB_IP.to_string()).arg(smtp.port().to_string());
    run_in(&lab, &web.ns, &mail)?;

    // All of it was seen: the curl flow, the 20 connections (individual
    // records or summaries), the relay's connection to the upstream.
    let mirrors = [mirror_a.ip.to_string(), mirror_b.ip.to_string()];
    let seen = until(Duration::from_secs(30), || async {
        let net: Vec<NetworkEvent> = records(&env, "network")
            .await?
            .iter()
            .filter_map(network)
            .cloned()
            .collect();
        let https_flow = net
            .iter()
            .any(|n| n.remote_ip == web.ip.to_string() && n.remote_port == 443 && n.phase == "close");
        let mut flows = BTreeSet::new();
        let mut summarized = 0;
        for n in net
            .iter()
            .filter(|n| mirrors.contains(&n.remote_ip) && n.remote_port == 80)
        {
            if n.phase == "summary" {
                summarized += n.connections;
            } else if n.phase == "close" {
                flows.insert(n.flow_id.clone());
            }
        }
        let relay = net
            .iter()
            .any(|n| n.remote_ip == mx.ip.to_string() && n.remote_port == 25 && n.phase == "close");
        anyhow::ensure!(
            https_flow && flows.len() as u64 + summarized == 20 && relay,
            "https flow {https_flow}, apt-like connections {} + {summarized} summarized, relay {relay}",
            flows.len()
        );
        Ok(net)
    })
    .await?;
    // The agent's own gRPC stream is left out (exclude_collector).
    let grpc: Vec<&NetworkEvent> = seen
        .iter()
        .filter(|n| n.remote_port == u32::from(env.grpc))
        .collect();
    assert!(
        grpc.is_empty(),
        "the agent's own stream recorded: {grpc:#?}"
    );

    // A few detector ticks later: no P2P record, no alert.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let found: Vec<P2pEvent> = records(&env, "p2p")
        .await?
        .iter()
        .filter_map(p2p)
        .cloned()
        .collect();
    assert!(
        found.is_empty(),
        "ordinary traffic taken for P2P: {found:#?}"
    );
    assert!(p2p_alerts(&env).await?.is_empty());
    eprintln!("whole test: {:?}", started.elapsed());
    Ok(())
}
