//! Issue 18, item 5: `kiroku verify` finds every alteration of a stored
//! collector's data directory by someone with write access to it, names it
//! precisely, and reports nothing else; an intact store — also after the
//! agent and the collector were killed with SIGKILL — verifies clean.
//!
//! One store is made once (events shipped as an agent records them, with
//! their stream chain, raw messages, queries in the audit log, signed
//! checkpoints); each case copies it, alters the copy with the collector
//! stopped (the journal through the `journal_edit` tool, which frames
//! records as the collector does and can recompute their CRC), starts the
//! collector on it and runs `kiroku verify`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiroku_proto::ingest_client::IngestClient;
use kiroku_proto::{
    Batch, BlobChunk, EmailEvent, Event, Hello, JournalEntry, RecordedEvent, SearchRequest,
    ShipRequest, SignedCheckpoint, event::Kind, journal_entry::Entry, ship_request, ship_response,
};
use kiroku_tests::journal_edit::{self, Record};
use kiroku_tests::{Env, Mode, free_port, send_mail};
use prost::Message;
use sha2::{Digest, Sha256};

const EVENTS: u64 = 8;

/// Runs `kiroku` as the admin; returns (exit code, stdout, stderr).
fn admin_cli(env: &Env, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
    env.cli_as("admin-boss", args)
}

/// What `kiroku verify --json` said: exit code and findings.
struct Verdict {
    code: i32,
    findings: Vec<serde_json::Value>,
    text: String,
}

fn verify(env: &Env) -> anyhow::Result<Verdict> {
    let (code, out, err) = admin_cli(env, &["verify", "--json"])?;
    let mut findings = Vec::new();
    let mut summary = false;
    for l in out.lines() {
        let v: serde_json::Value = serde_json::from_str(l)?;
        if v.get("what").is_some() {
            findings.push(v);
        } else if v.get("alterations").is_some() {
            summary = true;
        }
    }
    anyhow::ensure!(summary, "no summary: exit {code}\n{out}\n{err}");
    Ok(Verdict {
        code,
        findings,
        text: format!("{out}\n{err}"),
    })
}

/// The collector's config for these tests: signed checkpoints every 2 s.
fn checkpoint_config(env: &Env) -> String {
    let pki = env.pki();
    format!(
        "[checkpoint]\ninterval = \"2s\"\nsigning_cert = {:?}\nsigning_key = {:?}\n",
        pki.join("signer-localhost.pem"),
        pki.join("signer-localhost.key")
    )
}

async fn put_blob(env: &Env, agent: &str, data: &[u8]) -> anyhow::Result<String> {
    let sha = kiroku_common::sha256_hex(data);
    let (cert, key) = env.identity("agent", agent)?;
    IngestClient::new(env.channel(Some((&cert, &key)), None).await?)
        .put_blob(tokio_stream::iter(vec![BlobChunk {
            sha256: sha.clone(),
            size: data.len() as u64,
            data: data.to_vec(),
        }]))
        .await?;
    Ok(sha)
}

/// Ships `EVENTS` mails as agent `pc1` records them: encoded once, each
/// naming the SHA-256 of the one before (`prev_hash`), sent as recorded.
/// The first two have raw messages. Returns the raw hashes.
async fn ship_chained(env: &Env) -> anyhow::Result<Vec<String>> {
    let raws: Vec<Vec<u8>> = (0..2)
        .map(|i| {
            format!("From: a@corp.example\r\nSubject: seed {i}\r\n\r\nbody {i}\r\n").into_bytes()
        })
        .collect();
    let mut shas = Vec::new();
    for r in &raws {
        shas.push(put_blob(env, "pc1", r).await?);
    }
    let mut prev: Vec<u8> = Vec::new();
    let mut recorded = Vec::new();
    for seq in 1..=EVENTS {
        let e = Event {
            stream_id: "s".into(),
            seq,
            observed_at_ms: kiroku_common::now_ms(),
            prev_hash: prev.clone(),
            kind: Some(Kind::Email(EmailEvent {
                subject: format!("seed {}", seq - 1),
                raw_sha256: shas.get(seq as usize - 1).cloned().unwrap_or_default(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let bytes = e.encode_to_vec();
        prev = Sha256::digest(&bytes).to_vec();
        recorded.push(RecordedEvent {
            event: bytes,
            raw_not_kept: String::new(),
        });
    }
    let (cert, key) = env.identity("agent", "pc1")?;
    let msgs = vec![
        ShipRequest {
            msg: Some(ship_request::Msg::Hello(Hello {
                stream_id: "s".into(),
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
    let mut resp = IngestClient::new(env.channel(Some((&cert, &key)), None).await?)
        .ship(tokio_stream::iter(msgs))
        .await?
        .into_inner();
    while let Some(m) = resp.message().await? {
        if let Some(ship_response::Msg::Ack(a)) = m.msg {
            anyhow::ensure!(u64::from(a.stored) == EVENTS, "stored {}: {a:?}", a.stored);
            return Ok(shas);
        }
    }
    anyhow::bail!("Ship ended without an Ack")
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dest = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dest)?;
        } else {
            std::fs::copy(e.path(), &dest)?;
        }
    }
    Ok(())
}

fn checkpoint_files(data: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data.join("checkpoints"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "ckp"))
        .collect();
    v.sort();
    Ok(v)
}

/// The journal records of events, with the event id each holds.
fn event_records(records: &[Record]) -> Vec<(usize, String)> {
    records
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let e = JournalEntry::decode(r.payload.as_slice()).ok()?;
            match e.entry {
                Some(Entry::Event(s)) => Some((i, s.additions?.event_id)),
                _ => None,
            }
        })
        .collect()
}

/// One way of altering the store, and what verify must say about it:
/// the finding's `what`, and text its `where`/`event_id`/`detail` name.
struct Case {
    name: &'static str,
    what: &'static str,
    names: Vec<String>,
}

/// Alters the copy of the store in `data` for `case`; returns the case
/// with what verify must name.
fn alter(case: &str, data: &Path, env: &Env) -> anyhow::Result<Case> {
    let seg = journal_edit::newest_segment(data)?;
    let records = journal_edit::read(&seg)?;
    let events = event_records(&records);
    anyhow::ensure!(events.len() as u64 >= EVENTS, "{events:?}");
    // The fourth event ("seed 3"), in the middle of the journal.
    let (i3, id3) = events[3].clone();
    let (i4, id4) = events[4].clone();
    let keep =
        |fix: bool| -> Vec<(Record, bool)> { records.iter().cloned().map(|r| (r, fix)).collect() };
    let c = |name, what, names: Vec<String>| Case { name, what, names };
    Ok(match case {
        "journal byte, CRC kept" => {
            let mut rs = keep(false);
            journal_edit::replace(&mut rs[i3].0.payload, b"seed 3", b"PWND 3")?;
            journal_edit::write(&seg, &rs)?;
            c(
                "journal byte, CRC kept",
                "altered",
                vec![id3, format!("@ {}", records[i3].offset), "checksum".into()],
            )
        }
        "journal byte, CRC recomputed" => {
            let mut rs = keep(false);
            journal_edit::replace(&mut rs[i3].0.payload, b"seed 3", b"PWND 3")?;
            rs[i3].1 = true;
            journal_edit::write(&seg, &rs)?;
            c(
                "journal byte, CRC recomputed",
                "altered",
                vec![id3, format!("@ {}", records[i3].offset)],
            )
        }
        "record removed" => {
            let mut rs = keep(false);
            let leaf = JournalEntry::decode(rs[i3].0.payload.as_slice())?.leaf;
            rs.remove(i3);
            journal_edit::write(&seg, &rs)?;
            c(
                "record removed",
                "missing",
                vec![format!("leaf {leaf} "), id3],
            )
        }
        "records swapped" => {
            let mut rs = keep(false);
            rs.swap(i3, i4);
            journal_edit::write(&seg, &rs)?;
            c("records swapped", "reordered", vec![id3, id4])
        }
        "record inserted" => {
            // A copy of the first event's record, after the fourth.
            let mut rs = keep(false);
            let copy = rs[events[0].0].clone();
            rs.insert(i4, copy);
            journal_edit::write(&seg, &rs)?;
            c("record inserted", "inserted", vec![events[0].1.clone()])
        }
        "blob replaced" => {
            // Another valid blob (the second raw message) under the
            // first's name: it decompresses without error.
            let sha0 = raw_sha(data, 0)?;
            let sha1 = raw_sha(data, 1)?;
            std::fs::copy(blob_file(data, &sha1), blob_file(data, &sha0))?;
            c(
                "blob replaced",
                "blob_altered",
                vec![sha0, events[0].1.clone()],
            )
        }
        "audit entry edited" => {
            let path = data.join("audit.log");
            let text = std::fs::read_to_string(&path)?;
            let edited = text.replacen("needle-2", "needle-X", 1);
            anyhow::ensure!(edited != text, "no needle-2 in the audit log");
            std::fs::write(&path, edited)?;
            let line = line_of(&text, "needle-2");
            c(
                "audit entry edited",
                "audit_altered",
                vec![format!("line {line}"), "edited".into()],
            )
        }
        "audit entry removed" => {
            let path = data.join("audit.log");
            let text = std::fs::read_to_string(&path)?;
            let line = line_of(&text, "needle-2");
            let kept: String = text
                .lines()
                .enumerate()
                .filter(|(i, _)| i + 1 != line)
                .map(|(_, l)| format!("{l}\n"))
                .collect();
            std::fs::write(&path, kept)?;
            c(
                "audit entry removed",
                "audit_altered",
                vec![format!("line {line}"), "missing".into()],
            )
        }
        "checkpoint forged" => {
            // Its content changed (another Merkle root), the signature kept.
            let files = checkpoint_files(data)?;
            let f = &files[0];
            let mut signed = SignedCheckpoint::decode(std::fs::read(f)?.as_slice())?;
            let mut ckp = kiroku_proto::Checkpoint::decode(signed.checkpoint.as_slice())?;
            ckp.merkle_root = vec![7; 32];
            signed.checkpoint = ckp.encode_to_vec();
            std::fs::write(f, signed.encode_to_vec())?;
            c(
                "checkpoint forged",
                "bad_signature",
                vec![format!("checkpoint {}", ckp.number)],
            )
        }
        "checkpoint signature flipped" => {
            let files = checkpoint_files(data)?;
            let f = &files[0];
            let mut signed = SignedCheckpoint::decode(std::fs::read(f)?.as_slice())?;
            let n = signed.signature.len();
            signed.signature[n - 5] ^= 0x01;
            let ckp = kiroku_proto::Checkpoint::decode(signed.checkpoint.as_slice())?;
            std::fs::write(f, signed.encode_to_vec())?;
            c(
                "checkpoint signature flipped",
                "bad_signature",
                vec![format!("checkpoint {}", ckp.number)],
            )
        }
        "checkpoint by a foreign signer" => {
            // Signed, but the certificate put in is one another CA issued.
            let other = env.path().join("other-pki");
            let o = other.to_string_lossy().into_owned();
            env.kiroku(&["certs", "init", "--dir", &o])?;
            env.kiroku(&[
                "certs",
                "issue",
                "--dir",
                &o,
                "--role",
                "signer",
                "--name",
                "localhost",
            ])?;
            let pem = std::fs::read_to_string(other.join("signer-localhost.pem"))?;
            let der = pem_der(&pem)?;
            let files = checkpoint_files(data)?;
            let f = &files[0];
            let mut signed = SignedCheckpoint::decode(std::fs::read(f)?.as_slice())?;
            signed.signer_cert_der = der;
            let ckp = kiroku_proto::Checkpoint::decode(signed.checkpoint.as_slice())?;
            std::fs::write(f, signed.encode_to_vec())?;
            c(
                "checkpoint by a foreign signer",
                "unknown_signer",
                vec![format!("checkpoint {}", ckp.number)],
            )
        }
        other => anyhow::bail!("no case {other}"),
    })
}

fn pem_der(pem: &str) -> anyhow::Result<Vec<u8>> {
    use base64::Engine;
    let b64: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    Ok(base64::engine::general_purpose::STANDARD.decode(b64)?)
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map_or(0, |i| i + 1)
}

fn blob_file(data: &Path, sha: &str) -> PathBuf {
    data.join("blobs")
        .join(&sha[..2])
        .join(&sha[2..4])
        .join(format!("{sha}.zst"))
}

/// The raw hash of mail `n` ("seed n") as the store's journal names it.
fn raw_sha(data: &Path, n: usize) -> anyhow::Result<String> {
    let seg = journal_edit::newest_segment(data)?;
    for r in journal_edit::read(&seg)? {
        let Ok(e) = JournalEntry::decode(r.payload.as_slice()) else {
            continue;
        };
        if let Some(Entry::Event(s)) = e.entry
            && let Ok(ev) = Event::decode(s.recorded.as_slice())
            && let Some(Kind::Email(m)) = ev.kind
            && m.subject == format!("seed {n}")
        {
            return Ok(m.raw_sha256);
        }
    }
    anyhow::bail!("no mail seed {n}")
}

const CASES: &[&str] = &[
    "journal byte, CRC kept",
    "journal byte, CRC recomputed",
    "record removed",
    "records swapped",
    "record inserted",
    "blob replaced",
    "audit entry edited",
    "audit entry removed",
    "checkpoint forged",
    "checkpoint signature flipped",
    "checkpoint by a foreign signer",
];

#[tokio::test(flavor = "multi_thread")]
async fn every_alteration_is_found_and_named_and_nothing_else() -> anyhow::Result<()> {
    let env = Env::new()?;
    env.issue("signer", "localhost", &[])?;
    let cfg = checkpoint_config(&env);
    let mut collector = env.start_collector_with(&cfg)?;
    ship_chained(&env).await?;
    let mut q = env.investigator().await?;
    for i in 0..4 {
        q.search(SearchRequest {
            subject: format!("needle-{i}"),
            ..Default::default()
        })
        .await?;
    }
    // A checkpoint covers every event (the writer runs every 2 s).
    let data = env.path().join("collector");
    let deadline = Instant::now() + Duration::from_secs(20);
    while checkpoint_files(&data)
        .map(|f| f.is_empty())
        .unwrap_or(true)
    {
        anyhow::ensure!(Instant::now() < deadline, "no checkpoint written");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let intact = verify(&env)?;
    assert_eq!(
        (intact.code, intact.findings.len()),
        (0, 0),
        "the intact store verifies clean: {}",
        intact.text
    );
    collector.terminate();
    let template = env.path().join("template");
    copy_dir(&data, &template)?;

    let mut failures = Vec::new();
    for case in CASES {
        std::fs::remove_dir_all(&data)?;
        copy_dir(&template, &data)?;
        let want = alter(case, &data, &env)?;
        let mut collector = env.start_collector_with(&cfg)?;
        let v = verify(&env)?;
        collector.terminate();
        let named = |f: &serde_json::Value| {
            let all = format!("{} {} {}", f["where"], f["event_id"], f["detail"]);
            want.names.iter().all(|n| all.contains(n.as_str()))
        };
        let ok = v.code != 0
            && v.findings.len() == 1
            && v.findings[0]["what"] == want.what
            && v.findings[0]["alteration"] == true
            && named(&v.findings[0]);
        if !ok {
            failures.push(format!(
                "{}: want one {} naming {:?}, got exit {} and {:#?}\n{}",
                want.name, want.what, want.names, v.code, v.findings, v.text
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    Ok(())
}

fn mail(tag: &str, n: usize) -> Vec<u8> {
    format!(
        "From: load@example.com\r\nTo: sink@example.org\r\nSubject: {tag} {n}\r\nMessage-ID: <{tag}-{n}@example.com>\r\n\r\nbody {n}\r\n"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_after_sigkill_of_either_side_verifies_clean() -> anyhow::Result<()> {
    let env = Env::new()?;
    env.issue("signer", "localhost", &[])?;
    let cfg = checkpoint_config(&env);
    let mut collector = env.start_collector_with(&cfg)?;
    let smtp = free_port();
    let mut agent = env.start_agent("pc-k", smtp, &Mode::CaptureOnly)?;
    let n = 24;
    for i in 0..n {
        let sent = send_mail(
            smtp,
            "load@example.com",
            &["sink@example.org"],
            &mail("kill", i),
        )?;
        assert_eq!(sent.code, 250, "{sent:?}");
        if i == n / 3 {
            collector.kill9();
            collector = env.start_collector_with(&cfg)?;
        }
        if i == 2 * n / 3 {
            agent.kill9();
            agent = env.start_agent("pc-k", smtp, &Mode::CaptureOnly)?;
        }
    }
    env.wait_for(
        SearchRequest {
            subject: "kill".into(),
            ..Default::default()
        },
        n,
        Duration::from_secs(60),
    )
    .await?;
    // Once more, with a checkpoint written after the restart.
    collector.kill9();
    let _collector = env.start_collector_with(&cfg)?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Verified while mail keeps arriving: what is stored during the run is
    // no false alarm either.
    let sender = std::thread::spawn(move || -> anyhow::Result<()> {
        for i in 0..20 {
            let sent = send_mail(
                smtp,
                "load@example.com",
                &["sink@example.org"],
                &mail("during", i),
            )?;
            anyhow::ensure!(sent.code == 250, "{sent:?}");
        }
        Ok(())
    });
    let v = verify(&env)?;
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("the sender panicked"))??;
    let alterations: Vec<_> = v
        .findings
        .iter()
        .filter(|f| f["alteration"] == true)
        .collect();
    assert!(
        v.code == 0 && alterations.is_empty(),
        "no false alarms: exit {}, {alterations:#?}\n{}",
        v.code,
        v.text
    );
    drop(agent);
    Ok(())
}
