//! The chain of custody from an agent's buffer into the collector's
//! journal (issue 18): events arrive as the agent recorded them and are
//! journalled byte for byte, in a hash-chained journal; a break in an agent
//! stream's chain seen on the wire — a skipped sequence number, a different
//! event under a stored one, a prev_hash that does not link, a head the
//! agent reported that the event later shipped under its number does not
//! match — becomes exactly one integrity record naming the stream and the
//! sequence numbers, searchable with `kiroku search --kind integrity` and
//! alerted on; an identical batch sent again is the normal at-least-once
//! case and reported as nothing.
//!
//! The wire cases need a client that lies: a gRPC client holding an agent
//! certificate (a TCP fault proxy cannot see inside TLS).

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kiroku_proto::ingest_client::IngestClient;
use kiroku_proto::journal_entry::Entry;
use kiroku_proto::{
    Ack, Batch, EmailEvent, Event, Hello, JournalEntry, RecordedEvent, SearchRequest, ShipRequest,
    Status, event::Kind, ship_request, ship_response,
};
use kiroku_tests::{Env, Mode, free_port, send_mail};
use prost::Message;
use sha2::{Digest, Sha256};

fn sha(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// An agent stream as a test client builds it: each event chained to the
/// previous one's bytes, as the agent's buffer does.
struct Stream {
    name: &'static str,
    seq: u64,
    head: Option<[u8; 32]>,
}

impl Stream {
    fn new(name: &'static str) -> Stream {
        Stream {
            name,
            seq: 0,
            head: None,
        }
    }

    /// The next event's bytes, chained to the previous one.
    fn next(&mut self, subject: &str) -> (u64, Vec<u8>) {
        self.seq += 1;
        let bytes = event(self.name, self.seq, subject, self.head.map(|h| h.to_vec()));
        self.head = Some(sha(&bytes));
        (self.seq, bytes)
    }
}

fn event(stream: &str, seq: u64, subject: &str, prev: Option<Vec<u8>>) -> Vec<u8> {
    Event {
        stream_id: stream.into(),
        seq,
        observed_at_ms: kiroku_common::now_ms(),
        prev_hash: prev.unwrap_or_default(),
        kind: Some(Kind::Email(EmailEvent {
            subject: subject.into(),
            mail_from: "chain@example.com".into(),
            ..Default::default()
        })),
        ..Default::default()
    }
    .encode_to_vec()
}

fn batch(events: &[&Vec<u8>]) -> ShipRequest {
    ShipRequest {
        msg: Some(ship_request::Msg::Batch(Batch {
            recorded: events
                .iter()
                .map(|e| RecordedEvent {
                    event: (*e).clone(),
                    raw_not_kept: String::new(),
                })
                .collect(),
            ..Default::default()
        })),
    }
}

fn status(head_seq: u64, head: [u8; 32]) -> ShipRequest {
    ShipRequest {
        msg: Some(ship_request::Msg::Status(Status {
            chain_head_seq: head_seq,
            chain_head: head.to_vec(),
            ..Default::default()
        })),
    }
}

/// One Ship session as agent `agent` on `stream`: Hello, then `msgs`;
/// returns the Acks and whether the Welcome said the collector reads
/// recorded bytes.
async fn ship(
    env: &Env,
    agent: &str,
    stream: &str,
    msgs: Vec<ShipRequest>,
) -> anyhow::Result<(Vec<Ack>, bool)> {
    let (cert, key) = env.identity("agent", agent)?;
    let mut all = vec![ShipRequest {
        msg: Some(ship_request::Msg::Hello(Hello {
            stream_id: stream.into(),
            ..Default::default()
        })),
    }];
    all.extend(msgs);
    let ch = env.channel(Some((&cert, &key)), None).await?;
    let mut resp = IngestClient::new(ch)
        .ship(tokio_stream::iter(all))
        .await?
        .into_inner();
    let (mut acks, mut accepts) = (Vec::new(), false);
    while let Some(m) = resp.message().await? {
        match m.msg {
            Some(ship_response::Msg::Ack(a)) => acks.push(a),
            Some(ship_response::Msg::Welcome(w)) => accepts = w.accepts_recorded,
            _ => {}
        }
    }
    Ok((acks, accepts))
}

/// Runs the `kiroku` CLI as the investigator; returns stdout.
fn cli(env: &Env, args: &[&str]) -> anyhow::Result<String> {
    let cfg = env.path().join("kiroku-inv.toml");
    if !cfg.exists() {
        std::fs::write(
            &cfg,
            format!(
                "endpoint = \"https://127.0.0.1:{}\"\nserver_name = \"localhost\"\n[tls]\nca = \"pki/ca.pem\"\ncert = \"pki/investigator-inv.pem\"\nkey = \"pki/investigator-inv.key\"\n",
                env.grpc
            ),
        )?;
    }
    let out = Command::new(kiroku_tests::bin("kiroku"))
        .arg("--config")
        .arg(&cfg)
        .args(args)
        .current_dir(env.path())
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "kiroku {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// The integrity records `kiroku search --kind integrity --json` lists, as
/// (what, stream, first seq, last seq, tampering), oldest first.
/// An integrity record as (what, stream, first seq, last seq, tampering).
type Record = (String, String, u64, u64, bool);

fn integrity_records(env: &Env) -> anyhow::Result<Vec<Record>> {
    let out = cli(
        env,
        &["search", "--kind", "integrity", "--json", "--all", "--asc"],
    )?;
    let mut v = Vec::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let j: serde_json::Value = serde_json::from_str(line)?;
        let i = &j["integrity"];
        let num = |k: &str| {
            i[k].as_u64()
                .or_else(|| i[k].as_str().and_then(|s| s.parse().ok()))
                .unwrap_or(0)
        };
        v.push((
            i["what"].as_str().unwrap_or_default().to_owned(),
            i["stream_id"].as_str().unwrap_or_default().to_owned(),
            num("first_seq"),
            num("last_seq"),
            i["tampering"].as_bool().unwrap_or(false),
        ));
    }
    Ok(v)
}

/// Every record of the collector's journal, checking the framing (CRC),
/// the chain (each entry names its predecessor's SHA-256) and the leaf
/// numbering on the way; returns the recorded bytes of each stored event
/// by event id.
fn journal(dir: &Path) -> anyhow::Result<HashMap<String, Vec<Vec<u8>>>> {
    let mut segs: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segs.sort();
    let (mut prev, mut leaf) = ([0u8; 32], 0u64);
    let mut events: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    for seg in segs {
        let buf = std::fs::read(&seg)?;
        let mut at = 0;
        while at < buf.len() {
            // The collector is running: the last record may be half
            // written (an append in progress).
            if buf.len() < at + 12 {
                break;
            }
            anyhow::ensure!(
                &buf[at..at + 4] == b"KRJ2",
                "{} @ {at}: magic",
                seg.display()
            );
            let len = u32::from_le_bytes(buf[at + 4..at + 8].try_into()?) as usize;
            if buf.len() < at + 12 + len {
                break;
            }
            let crc = u32::from_le_bytes(buf[at + 8..at + 12].try_into()?);
            let payload = &buf[at + 12..at + 12 + len];
            anyhow::ensure!(crc32fast::hash(payload) == crc, "crc @ {at}");
            let e = JournalEntry::decode(payload)?;
            anyhow::ensure!(e.prev == prev, "{} @ {at}: chain broken", seg.display());
            anyhow::ensure!(
                e.leaf == leaf,
                "{} @ {at}: leaf {} != {leaf}",
                seg.display(),
                e.leaf
            );
            if let Some(Entry::Event(s)) = e.entry {
                let a = s.additions.unwrap_or_default();
                anyhow::ensure!(
                    a.recorded_sha256 == sha(&s.recorded).to_vec(),
                    "hash of {}",
                    a.event_id
                );
                events.entry(a.event_id).or_default().push(s.recorded);
            }
            prev = sha(payload);
            leaf += 1;
            at += 12 + len;
        }
    }
    Ok(events)
}

/// A field number no version of the proto has (a newer agent's field).
const FUTURE_FIELD: u32 = 1999;

#[tokio::test(flavor = "multi_thread")]
async fn chain_breaks_on_the_wire_are_integrity_records_and_identical_resends_are_not()
-> anyhow::Result<()> {
    let env = Env::new()?;
    std::fs::write(
        env.path().join("rules.toml"),
        "[[rule]]\nname = \"custody\"\nkind = \"integrity\"\n",
    )?;
    let _collector = env.start_collector_with("[alerts]\nrules = \"rules.toml\"\n")?;
    let mut s = Stream::new("chain1");
    let e1 = s.next("chain 1");
    let e2 = s.next("chain 2");
    let mut e3 = s.next("chain 3");
    // A newer agent's field: kept in the journal, whatever this collector
    // makes of it.
    prost::encoding::string::encode(FUTURE_FIELD, &"from the future".to_owned(), &mut e3.1);
    s.head = Some(sha(&e3.1));
    let first = batch(&[&e1.1, &e2.1, &e3.1]);
    let (acks, accepts) = ship(&env, "pc-chain", "chain1", vec![first.clone()]).await?;
    assert!(
        accepts,
        "the Welcome says the collector reads recorded bytes"
    );
    assert_eq!((acks[0].stored, acks[0].stored_seq), (3, 3), "{acks:?}");
    // The same batch again (its ack was lost, say): duplicates, nothing
    // reported.
    let (acks, _) = ship(&env, "pc-chain", "chain1", vec![first]).await?;
    assert_eq!((acks[0].stored, acks[0].duplicates), (0, 3), "{acks:?}");
    assert_eq!(
        integrity_records(&env)?,
        [],
        "an identical resend is normal"
    );

    // 1. A different event under stored seq 2.
    let forged2 = event("chain1", 2, "chain 2 forged", Some(sha(&e1.1).to_vec()));
    // 2. Seq 4 skipped: 5 follows 3 (its prev names the 4 never sent).
    let e4 = s.next("chain 4");
    let e5 = s.next("chain 5");
    // 3. Seq 6 names a predecessor that is not the stored 5.
    s.head = Some([0x5a; 32]);
    let e6 = s.next("chain 6");
    // 4. The agent reports its head at 8; the 8 it then ships differs.
    let e7 = s.next("chain 7");
    let promised = s.next("chain 8");
    s.seq -= 1;
    s.head = Some(sha(&e7.1));
    let e8 = s.next("chain 8 rewritten before shipping");
    let (acks, _) = ship(
        &env,
        "pc-chain",
        "chain1",
        vec![
            batch(&[&forged2]),
            batch(&[&e5.1]),
            batch(&[&e6.1]),
            status(8, sha(&promised.1)),
            batch(&[&e7.1, &e8.1]),
        ],
    )
    .await?;
    let stored: Vec<_> = acks.iter().map(|a| (a.stored, a.stored_seq)).collect();
    assert_eq!(stored, [(0, 3), (1, 5), (1, 6), (2, 8)], "{acks:?}");
    let _ = e4;
    let mut found = integrity_records(&env)?;
    found.sort_by_key(|r| r.2);
    let s1 = "chain1".to_owned();
    assert_eq!(
        found,
        [
            ("conflict".to_owned(), s1.clone(), 2, 2, true),
            ("removed".to_owned(), s1.clone(), 4, 4, true),
            ("altered".to_owned(), s1.clone(), 5, 6, true),
            ("head_mismatch".to_owned(), s1.clone(), 8, 8, true),
        ],
        "one record per break, naming stream and sequence numbers"
    );
    // A head that matches what is stored is nothing.
    let (_, _) = ship(&env, "pc-chain", "chain1", vec![status(7, sha(&e7.1))]).await?;
    assert_eq!(integrity_records(&env)?.len(), 4);
    // The records are readable and alerted on.
    let table = cli(&env, &["search", "--kind", "integrity"])?;
    assert!(
        table.contains("integrity: removed") && table.contains("stream chain1"),
        "{table}"
    );
    let alerts = cli(&env, &["alerts", "--json"])?;
    assert_eq!(alerts.lines().count(), 4, "{alerts}");
    assert!(alerts.contains("chain of custody broken"), "{alerts}");

    // The journal holds the agent's bytes, the future field included, in
    // an unbroken chain; the forged 2 was never stored.
    let j = journal(&env.path().join("collector/journal"))?;
    assert_eq!(j["pc-chain/chain1/3"], [e3.1], "byte for byte");
    assert_eq!(j["pc-chain/chain1/2"], [e2.1]);
    assert_eq!(j["pc-chain/chain1/8"], [e8.1]);
    assert_eq!(
        j.keys()
            .filter(|k| k.starts_with("pc-chain/integrity/"))
            .count(),
        4
    );
    // Search serves the merged view: the agent's fields, the collector's
    // identity.
    let ev = env
        .wait_for(
            SearchRequest {
                subject: "chain".into(),
                ..Default::default()
            },
            7,
            Duration::from_secs(10),
        )
        .await?;
    assert!(ev.iter().all(|e| e.agent_id == "pc-chain"));
    Ok(())
}

/// A real agent's events, through a kill -9 of the collector and one of
/// the agent (resends, in-flight recovery): all arrive as the agent's
/// buffer recorded them, chained, and no integrity record is raised — a
/// crash is no tampering.
#[tokio::test(flavor = "multi_thread")]
async fn a_real_agents_events_arrive_as_recorded_and_chained_through_crashes() -> anyhow::Result<()>
{
    let env = Env::new()?;
    let mut collector = env.start_collector()?;
    let smtp = free_port();
    let mut agent = env.start_agent("pc-real", smtp, &Mode::CaptureOnly)?;
    let n = 18;
    for i in 0..n {
        let raw = format!(
            "From: real@example.com\r\nTo: sink@example.org\r\nSubject: recorded {i}\r\nMessage-ID: <recorded-{i}@example.com>\r\n\r\nbody {i}\r\n"
        );
        let sent = send_mail(
            smtp,
            "real@example.com",
            &["sink@example.org"],
            raw.as_bytes(),
        )?;
        anyhow::ensure!(sent.code == 250, "{sent:?}");
        if i == n / 3 {
            collector.kill9();
            collector = env.start_collector()?;
        }
        if i == 2 * n / 3 {
            agent.kill9();
            agent = env.start_agent("pc-real", smtp, &Mode::CaptureOnly)?;
        }
    }
    let events = env
        .wait_for(
            SearchRequest {
                subject: "recorded".into(),
                ..Default::default()
            },
            n,
            Duration::from_secs(60),
        )
        .await?;
    assert_eq!(events.len(), n);
    // Every event the agent's buffer chained is in the journal as the
    // buffer holds it: each one's prev_hash is the SHA-256 of the bytes
    // journalled for its predecessor, which only holds if the bytes are
    // the agent's, unchanged.
    let j = journal(&env.path().join("collector/journal"))?;
    let mut mine: Vec<(u64, Event, Vec<u8>)> = j
        .iter()
        .filter(|(k, _)| k.starts_with("pc-real/"))
        .map(|(k, v)| {
            // Journalled twice after a crash: the same bytes.
            assert!(v.iter().all(|b| *b == v[0]), "{k} stored with other bytes");
            let bytes = v[0].clone();
            let e = Event::decode(bytes.as_slice()).expect("decodes");
            (e.seq, e, bytes)
        })
        .collect();
    mine.sort_by_key(|m| m.0);
    assert!(mine.len() >= n, "{} events of pc-real", mine.len());
    let mut linked = 0;
    for w in mine.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        if b.0 == a.0 + 1 && b.1.stream_id == a.1.stream_id {
            assert_eq!(
                b.1.prev_hash,
                sha(&a.2).to_vec(),
                "event {} names the bytes journalled for {}",
                b.0,
                a.0
            );
            linked += 1;
        }
    }
    assert!(linked >= n - 1, "{linked} links");
    assert_eq!(
        integrity_records(&env)?,
        [],
        "an intact stream reports nothing"
    );
    drop((agent, collector));
    Ok(())
}
