//! Signed checkpoints of the collector's journal, end to end with the real
//! collector: checkpoints appear every interval and verify against the CA
//! (with `kiroku checkpoint check`, and with `openssl` alone); a key
//! rotation leaves old and new checkpoints verifying while a signer from
//! another CA is refused at start and fails as a forgery; a checkpoint at
//! shutdown covers the last events; RFC 3161 time stamps from a local TSA
//! verify and a token for another hash does not; an unsigned collector
//! says so; `GetProof` gives a proof that leads to the signed root; agents
//! get the newest checkpoint in their Ack.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiroku_proto::ingest_client::IngestClient;
use kiroku_proto::journal_entry::Entry;
use kiroku_proto::{
    Ack, Batch, Checkpoint, EmailEvent, Event, GetEventRequest, Hello, InclusionProof,
    JournalEntry, RecordedEvent, ShipRequest, SignedCheckpoint, event::Kind, ship_request,
    ship_response,
};
use kiroku_tests::tsa::{Tsa, openssl_present, run};
use kiroku_tests::{Env, Proc, bin, skip};
use prost::Message;
use sha2::{Digest, Sha256};

/// `[checkpoint]` with `interval` and, when given, a signer.
fn checkpoint_toml(interval: &str, signer: Option<&(PathBuf, PathBuf)>, extra: &str) -> String {
    let mut s = format!("[checkpoint]\ninterval = {interval:?}\n");
    if let Some((cert, key)) = signer {
        s.push_str(&format!("signing_cert = {cert:?}\nsigning_key = {key:?}\n"));
    }
    s.push_str(extra);
    s
}

/// Ships `n` mails on `stream` from seq `first` as agent `a1` does from
/// issue 18 on: each event's bytes as recorded (`Batch.recorded`), chained
/// by `prev_hash` from seq 1 (the same events every time, so a later call
/// continues the chain). Returns the Ack.
async fn ship(env: &Env, stream: &str, first: u64, n: u64) -> anyhow::Result<Ack> {
    let (cert, key) = env.identity("agent", "a1")?;
    let mut prev = Vec::new();
    let mut recorded = Vec::new();
    for seq in 1..first + n {
        let bytes = Event {
            stream_id: stream.into(),
            seq,
            prev_hash: prev.clone(),
            kind: Some(Kind::Email(EmailEvent {
                subject: format!("checkpoint test {seq}"),
                ..Default::default()
            })),
            ..Default::default()
        }
        .encode_to_vec();
        prev = Sha256::digest(&bytes).to_vec();
        if seq >= first {
            recorded.push(RecordedEvent {
                event: bytes,
                raw_not_kept: String::new(),
            });
        }
    }
    let msgs = vec![
        ShipRequest {
            msg: Some(ship_request::Msg::Hello(Hello {
                stream_id: stream.into(),
                ..Default::default()
            })),
        },
        ShipRequest {
            msg: Some(ship_request::Msg::Batch(Batch {
                recorded,
                ..Default::default()
            })),
        },
    ];
    let ch = env.channel(Some((&cert, &key)), None).await?;
    let mut resp = IngestClient::new(ch)
        .ship(tokio_stream::iter(msgs))
        .await?
        .into_inner();
    while let Some(m) = resp.message().await? {
        if let Some(ship_response::Msg::Ack(a)) = m.msg {
            anyhow::ensure!(a.stored as u64 == n, "not all stored: {a:?}");
            return Ok(a);
        }
    }
    anyhow::bail!("Ship ended without an Ack")
}

fn ckp_dir(env: &Env) -> PathBuf {
    env.path().join("collector/checkpoints")
}

/// Checkpoint files, by number.
fn ckp_files(env: &Env) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(ckp_dir(env))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let p = e.path();
                    let n = p
                        .file_name()?
                        .to_str()?
                        .strip_suffix(".ckp")?
                        .parse()
                        .ok()?;
                    Some((n, p))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Waits for a checkpoint numbered above `after`.
async fn wait_checkpoint(env: &Env, after: u64, within: Duration) -> anyhow::Result<u64> {
    let deadline = Instant::now() + within;
    loop {
        // The file is in place before the collector has recorded it (proofs
        // and Acks use the record): wait for its log line too.
        if let Some((n, _)) = ckp_files(env).last()
            && *n > after
            && std::fs::read_to_string(env.path().join("collector.log"))
                .unwrap_or_default()
                .lines()
                .any(|l| l.contains("checkpoint written") && l.contains(&format!("number={n} ")))
        {
            return Ok(*n);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no checkpoint after {after} within {within:?}:\n{}",
            std::fs::read_to_string(env.path().join("collector.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn read_ckp(path: &Path) -> anyhow::Result<(SignedCheckpoint, Checkpoint)> {
    let s = SignedCheckpoint::decode(std::fs::read(path)?.as_slice())?;
    let c = Checkpoint::decode(s.checkpoint.as_slice())?;
    Ok((s, c))
}

/// `kiroku checkpoint check FILES --ca pki/ca.pem [--tsa-ca] --json`:
/// (exit code, one JSON value per file).
fn check(
    env: &Env,
    files: &[&Path],
    ca: &Path,
    tsa_ca: Option<&Path>,
) -> anyhow::Result<(i32, Vec<serde_json::Value>, String)> {
    let mut cmd = Command::new(bin("kiroku"));
    cmd.args(["checkpoint", "check", "--json", "--ca"]).arg(ca);
    if let Some(t) = tsa_ca {
        cmd.arg("--tsa-ca").arg(t);
    }
    let out = cmd.args(files).current_dir(env.path()).output()?;
    let values = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<Vec<serde_json::Value>, _>>()?;
    Ok((
        out.status.code().unwrap_or(-1),
        values,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// The signature checked by OpenSSL alone: the signer certificate chains
/// to the CA, and `openssl dgst -sha256 -verify` accepts the signature.
fn openssl_verifies(env: &Env, s: &SignedCheckpoint, work: &str) -> anyhow::Result<bool> {
    let d = env.path().join(work);
    std::fs::create_dir_all(&d)?;
    let (bin_, sig, der, pem, key) = (
        d.join("checkpoint.bin"),
        d.join("checkpoint.sig"),
        d.join("signer.der"),
        d.join("signer.pem"),
        d.join("signer.pub"),
    );
    std::fs::write(&bin_, &s.checkpoint)?;
    std::fs::write(&sig, &s.signature)?;
    std::fs::write(&der, &s.signer_cert_der)?;
    run(Command::new("openssl")
        .args(["x509", "-inform", "DER", "-in"])
        .arg(&der)
        .arg("-out")
        .arg(&pem))?;
    let chain = run(Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(env.pki().join("ca.pem"))
        .arg(&pem))
    .is_ok();
    run(Command::new("openssl")
        .args(["x509", "-pubkey", "-noout", "-in"])
        .arg(&pem)
        .arg("-out")
        .arg(&key))?;
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(&key)
        .arg("-signature")
        .arg(&sig)
        .arg(&bin_)
        .output()?;
    Ok(chain
        && out.status.success()
        && String::from_utf8_lossy(&out.stdout).contains("Verified OK"))
}

/// RFC 9162 section 2.1.3.2, written here again so the collector's own
/// Merkle code is not what checks it.
fn root_from_proof(entry: &[u8], index: u64, size: u64, path: &[Vec<u8>]) -> Option<Vec<u8>> {
    let h = |parts: &[&[u8]]| {
        let mut d = Sha256::new();
        for p in parts {
            d.update(p);
        }
        d.finalize().to_vec()
    };
    if index >= size {
        return None;
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = h(&[&[0u8], entry]);
    for p in path {
        if s_n == 0 {
            return None;
        }
        if f_n % 2 == 1 || f_n == s_n {
            r = h(&[&[1u8], p, &r]);
            while f_n % 2 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            r = h(&[&[1u8], &r, p]);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    (s_n == 0).then_some(r)
}

async fn get_proof(env: &Env, id: &str) -> anyhow::Result<InclusionProof> {
    Ok(env
        .investigator()
        .await?
        .get_proof(GetEventRequest {
            event_id: id.into(),
        })
        .await?
        .into_inner())
}

/// The proof of `id` leads to the root of its signed checkpoint, and its
/// entry is that event's.
fn proof_holds(env: &Env, id: &str, p: &InclusionProof) -> anyhow::Result<()> {
    anyhow::ensure!(p.checkpoint > 0, "no checkpoint covers {id}: {p:?}");
    let path = ckp_dir(env).join(format!("{:020}.ckp", p.checkpoint));
    let (_, cp) = read_ckp(&path)?;
    let root = root_from_proof(&p.entry, p.leaf - cp.first_leaf, cp.leaves, &p.path);
    anyhow::ensure!(
        root.as_deref() == Some(cp.merkle_root.as_slice()),
        "the proof of {id} does not lead to checkpoint {}'s root",
        cp.number
    );
    let entry = JournalEntry::decode(p.entry.as_slice())?;
    let Some(Entry::Event(stored)) = entry.entry else {
        anyhow::bail!("leaf {} is not an event", p.leaf);
    };
    let add = stored.additions.unwrap_or_default();
    anyhow::ensure!(add.event_id == id, "the proof's entry is {}", add.event_id);
    anyhow::ensure!(
        add.recorded_sha256 == Sha256::digest(&stored.recorded).to_vec(),
        "the entry's recorded hash does not match its bytes"
    );
    Ok(())
}

/// A tiny HTTP server that answers every POST 200 and keeps its JSON body
/// (the alert webhook's receiver).
fn webhook() -> anyhow::Result<(u16, Arc<Mutex<Vec<serde_json::Value>>>)> {
    let l = kiroku_tests::bind_local()?;
    let port = l.local_addr()?.port();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let b = bodies.clone();
    // The thread ends with the test process; it only ever accepts.
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let Ok(mut w) = s.try_clone() else { continue };
            let mut rd = BufReader::new(s);
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if rd.read_line(&mut line).unwrap_or(0) == 0 || line.trim_end().is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; len];
            if rd.read_exact(&mut body).is_ok()
                && let Ok(v) = serde_json::from_slice(&body)
                && let Ok(mut all) = b.lock()
            {
                all.push(v);
            }
            let _ = write!(
                w,
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    Ok((port, bodies))
}

fn have_peers(test: &str) -> bool {
    if !openssl_present() {
        skip(test, "openssl is not installed");
        return false;
    }
    true
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_checkpoints_rotate_and_prove_and_a_foreign_signer_fails() -> anyhow::Result<()> {
    if !have_peers("signed_checkpoints_rotate_and_prove_and_a_foreign_signer_fails") {
        return Ok(());
    }
    let env = Env::new()?;
    let old = env.issue("signer", "c1-2026", &[])?;

    // Checkpoints appear every interval once there is something new.
    let mut c = env.start_collector_with(&checkpoint_toml("1s", Some(&old), ""))?;
    c.wait_log("checkpoints are signed", Duration::from_secs(10))
        .await?;
    let ack = ship(&env, "s1", 1, 3).await?;
    assert!(ack.checkpoint.is_empty(), "no checkpoint exists yet");
    // The signer certificate signs; it never opens a connection.
    let as_signer = async {
        let ch = env.channel(Some((&old.0, &old.1)), None).await?;
        kiroku_proto::query_client::QueryClient::new(ch)
            .list_hosts(kiroku_proto::ListHostsRequest::default())
            .await?;
        anyhow::Ok(())
    };
    assert!(as_signer.await.is_err(), "a signer certificate was let in");
    let first = wait_checkpoint(&env, 0, Duration::from_secs(20)).await?;

    // The proof of an event leads to the signed root.
    let p = get_proof(&env, "a1/s1/2").await?;
    proof_holds(&env, "a1/s1/2", &p)?;
    // Sizes for BENCHMARKS.md (a signed checkpoint with one stream head).
    let file = ckp_dir(&env).join(format!("{:020}.ckp", p.checkpoint));
    eprintln!(
        "checkpoint file {} bytes; proof of a1/s1/2: {} path hashes, entry {} bytes, encoded {} bytes",
        std::fs::metadata(&file)?.len(),
        p.path.len(),
        p.entry.len(),
        p.encoded_len()
    );

    // An agent gets the newest checkpoint in its Ack, signed.
    let ack = ship(&env, "s1", 4, 1).await?;
    let sent = SignedCheckpoint::decode(ack.checkpoint.as_slice())?;
    let sent_cp = Checkpoint::decode(sent.checkpoint.as_slice())?;
    assert!(sent_cp.number >= first && !sent.signature.is_empty());
    let heads: Vec<(String, String, u64)> = sent_cp
        .streams
        .iter()
        .map(|h| (h.agent_id.clone(), h.stream_id.clone(), h.seq))
        .collect();
    assert!(
        heads
            .iter()
            .any(|(a, s, seq)| a == "a1" && s == "s1" && *seq >= 3),
        "{heads:?}"
    );
    wait_checkpoint(&env, sent_cp.number, Duration::from_secs(20)).await?;
    c.terminate();

    // Rotation: a new signer certificate; the collector starts with it and
    // writes a checkpoint at a clean shutdown (the interval is far off).
    let new = env.issue("signer", "c1-2027", &[])?;
    let before = ckp_files(&env).last().map_or(0, |(n, _)| *n);
    let mut c = env.start_collector_with(&checkpoint_toml("1h", Some(&new), ""))?;
    ship(&env, "s1", 5, 2).await?;
    c.terminate();
    let last = wait_checkpoint(&env, before, Duration::from_secs(5)).await?;
    assert!(
        c.log_text().contains("checkpoint written"),
        "{}",
        c.log_text()
    );

    // Old and new checkpoints all verify against the CA: with kiroku and
    // with openssl alone.
    let files = ckp_files(&env);
    let paths: Vec<&Path> = files.iter().map(|(_, p)| p.as_path()).collect();
    let (code, values, err) = check(&env, &paths, &env.pki().join("ca.pem"), None)?;
    assert_eq!(code, 0, "{values:?} {err}");
    let signers: std::collections::BTreeSet<String> = values
        .iter()
        .map(|v| v["signer"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        signers.into_iter().collect::<Vec<_>>(),
        ["signer/c1-2026", "signer/c1-2027"]
    );
    for (n, p) in &files {
        let (s, cp) = read_ckp(p)?;
        assert_eq!(cp.number, *n);
        assert!(openssl_verifies(&env, &s, "openssl")?, "checkpoint {n}");
    }
    // Checkpoints chain: each names its predecessor's hash; leaves follow
    // on without a gap.
    for w in files.windows(2) {
        let (a, ca) = read_ckp(&w[0].1)?;
        let (_, cb) = read_ckp(&w[1].1)?;
        assert_eq!(cb.prev_sha256, Sha256::digest(&a.checkpoint).to_vec());
        assert!(cb.first_leaf >= ca.first_leaf + ca.leaves);
    }

    // The checkpoint written at shutdown proves the events shipped before
    // it, after the restart.
    let c = env.start_collector_with(&checkpoint_toml("1h", Some(&new), ""))?;
    let p = get_proof(&env, "a1/s1/6").await?;
    assert_eq!(p.checkpoint, last);
    proof_holds(&env, "a1/s1/6", &p)?;
    drop(c);

    // A signer certificate from another CA: the collector refuses it at
    // start, naming the file, and a checkpoint re-signed with it is a
    // forgery the check names.
    let other = env.path().join("other-pki");
    env.kiroku(&["certs", "init", "--dir", other.to_str().unwrap_or_default()])?;
    env.kiroku(&[
        "certs",
        "issue",
        "--dir",
        other.to_str().unwrap_or_default(),
        "--role",
        "signer",
        "--name",
        "c1-2026",
    ])?;
    let rogue = (
        other.join("signer-c1-2026.pem"),
        other.join("signer-c1-2026.key"),
    );
    let e = env
        .start_collector_with(&checkpoint_toml("1s", Some(&rogue), ""))
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    assert!(
        e.contains("signing_cert") && e.contains("other-pki"),
        "a foreign signer was not refused: {e}"
    );
    let (s, _) = read_ckp(&files[0].1)?;
    let work = env.path().join("forge");
    std::fs::create_dir_all(&work)?;
    std::fs::write(work.join("cp.bin"), &s.checkpoint)?;
    run(Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(&rogue.1)
        .arg("-out")
        .arg(work.join("cp.sig"))
        .arg(work.join("cp.bin")))?;
    run(Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(&rogue.0)
        .arg("-out")
        .arg(work.join("rogue.der")))?;
    let forged = SignedCheckpoint {
        signature: std::fs::read(work.join("cp.sig"))?,
        signer_cert_der: std::fs::read(work.join("rogue.der"))?,
        ..s.clone()
    };
    let mut damaged = s.clone();
    let i = damaged.signature.len() / 2;
    damaged.signature[i] ^= 0x01;
    let cases = [
        ("forged.ckp", forged, "unknown_signer"),
        ("damaged.ckp", damaged, "bad_signature"),
    ];
    for (name, signed, want) in cases {
        let f = work.join(name);
        std::fs::write(&f, signed.encode_to_vec())?;
        let (code, values, _) = check(&env, &[&f], &env.pki().join("ca.pem"), None)?;
        assert_ne!(code, 0, "{name} passed");
        assert_eq!(values[0]["finding"], want, "{name}: {values:?}");
    }
    // Checked against the other CA, the genuine checkpoints fail too.
    let (code, _, _) = check(&env, &paths[..1], &other.join("ca.pem"), None)?;
    assert_ne!(code, 0);

    // A signing key others may read is refused at start, by name.
    std::fs::set_permissions(&new.1, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    let e = env
        .start_collector_with(&checkpoint_toml("1s", Some(&new), ""))
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    assert!(
        e.contains("signer-c1-2027.key") && e.contains("chmod 600"),
        "a readable key was not refused: {e}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn checkpoints_are_time_stamped_and_a_token_for_another_hash_fails() -> anyhow::Result<()> {
    if !have_peers("checkpoints_are_time_stamped_and_a_token_for_another_hash_fails") {
        return Ok(());
    }
    let env = Env::new()?;
    let tsa = Tsa::start(&env)?;
    let signer = env.issue("signer", "c1", &[])?;
    let extra = format!("tsa_url = {:?}\ntsa_ca_cert = {:?}\n", tsa.url(), tsa.ca());
    // Each checkpoint is announced on the alert webhook too.
    let (hook, bodies) = webhook()?;
    std::fs::write(env.path().join("rules.toml"), "")?;
    let alerts = format!(
        "[alerts]\nrules = \"rules.toml\"\n[alerts.webhook]\nurl = \"http://127.0.0.1:{hook}/hook\"\n"
    );
    let _c = env.start_collector_with(&format!(
        "{alerts}{}",
        checkpoint_toml("1s", Some(&signer), &extra)
    ))?;
    ship(&env, "s1", 1, 2).await?;
    let n = wait_checkpoint(&env, 0, Duration::from_secs(20)).await?;
    let path = ckp_dir(&env).join(format!("{n:020}.ckp"));
    let (s, cp) = read_ckp(&path)?;
    assert!(!s.timestamp_token.is_empty(), "no time stamp");
    eprintln!(
        "time-stamped checkpoint file {} bytes (token {} bytes)",
        std::fs::metadata(&path)?.len(),
        s.timestamp_token.len()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let announced = loop {
        let found = bodies.lock().ok().and_then(|b| {
            b.iter()
                .find(|v| v["rule"] == "checkpoint")
                .and_then(|v| v["summary"].as_str().map(str::to_owned))
        });
        if let Some(f) = found {
            break f;
        }
        anyhow::ensure!(Instant::now() < deadline, "no checkpoint on the webhook");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        announced.starts_with(&format!("checkpoint {n} of localhost"))
            && announced.contains(&hex::encode(&cp.merkle_root))
            && announced.contains(&hex::encode(Sha256::digest(&s.checkpoint)))
            && announced.contains("signed by signer/c1, time-stamped"),
        "{announced}"
    );

    // Kiroku's check, and OpenSSL's own `ts -verify`, accept the token.
    let ca = env.pki().join("ca.pem");
    let (code, values, err) = check(&env, &[&path], &ca, Some(&tsa.ca()))?;
    assert_eq!(code, 0, "{values:?} {err}");
    assert_eq!(values[0]["tsa"], "CN=Kiroku test TSA");
    let ts = values[0]["timestamp_ms"].as_i64().unwrap_or_default();
    assert!((ts - values[0]["at_ms"].as_i64().unwrap_or_default()).abs() < 60_000);
    let work = env.path().join("ts");
    std::fs::create_dir_all(&work)?;
    std::fs::write(work.join("cp.bin"), &s.checkpoint)?;
    std::fs::write(work.join("cp.tok"), &s.timestamp_token)?;
    run(Command::new("openssl")
        .args(["ts", "-verify", "-token_in", "-in"])
        .arg(work.join("cp.tok"))
        .arg("-data")
        .arg(work.join("cp.bin"))
        .arg("-CAfile")
        .arg(tsa.ca()))?;

    // A genuine token of the same TSA, for other bytes, fails.
    let other = tsa.token_for(b"some other checkpoint", &work)?;
    let swapped = SignedCheckpoint {
        timestamp_token: other,
        ..s.clone()
    };
    let f = work.join("swapped.ckp");
    std::fs::write(&f, swapped.encode_to_vec())?;
    let (code, values, _) = check(&env, &[&f], &ca, Some(&tsa.ca()))?;
    assert_ne!(code, 0);
    assert_eq!(values[0]["finding"], "bad_timestamp", "{values:?}");
    assert!(
        values[0]["problem"]
            .as_str()
            .unwrap_or_default()
            .contains("not these bytes"),
        "{values:?}"
    );
    // The good token checked against a CA that is not the TSA's fails.
    let (code, values, _) = check(&env, &[&path], &ca, Some(&ca))?;
    assert_ne!(code, 0);
    assert_eq!(values[0]["finding"], "bad_timestamp", "{values:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unsigned_collector_says_so_at_start_and_at_every_checkpoint() -> anyhow::Result<()> {
    let env = Env::new()?;
    let c: Proc = env.start_collector_with(&checkpoint_toml("1s", None, ""))?;
    c.wait_log("CHECKPOINTS ARE UNSIGNED", Duration::from_secs(10))
        .await?;
    ship(&env, "s1", 1, 1).await?;
    let n = wait_checkpoint(&env, 0, Duration::from_secs(20)).await?;
    c.wait_log("UNSIGNED checkpoint written", Duration::from_secs(10))
        .await?;
    let path = ckp_dir(&env).join(format!("{n:020}.ckp"));
    let (code, values, err) = check(&env, &[&path], &env.pki().join("ca.pem"), None)?;
    assert_ne!(code, 0, "an unsigned checkpoint passed: {values:?}");
    assert_eq!(values[0]["finding"], "unsigned", "{values:?} {err}");
    Ok(())
}
