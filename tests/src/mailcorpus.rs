//! Relaying a corpus of raw messages through the real agent and reading the
//! records back: shared by `tests/corpus.rs` (CPython's email test data,
//! Japanese mail) and `tests/mime_recovery.rs` (issue 17's defect table,
//! evasion cases and public MIME corpora).

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kiroku_proto::query_client::QueryClient;
use kiroku_proto::{Event, GetRawRequest, Outcome, SearchRequest};
use serde_json::Value;
use tonic::transport::Channel;

use crate::{Env, Proc, Upstream, data_dir, email, run_client};

/// The envelope every corpus message is sent with.
pub const MAIL_FROM: &str = "corpus-sender@example.com";
pub const RCPT: &str = "corpus-sink@example.org";

/// The message as it goes on the wire: every line ending CRLF (bare LF and
/// bare CR become CRLF, as smtplib's own conversion does), ending in CRLF.
pub fn crlf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 16 + 2);
    let mut i = 0;
    while i < data.len() {
        match data[i] {
            b'\r' if data.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Runs a peer script from `tests/data` and parses the JSON it prints.
pub fn python(script: &str, args: &[String]) -> anyhow::Result<Value> {
    let (ok, out) = run_client(
        Command::new("python3")
            .arg(data_dir().join(script))
            .args(args),
        None,
    )?;
    anyhow::ensure!(ok, "{script} failed: {out}");
    serde_json::from_str(out.trim())
        .map_err(|e| anyhow::anyhow!("{script} printed no JSON ({e}): {out}"))
}

/// Writes `mails` (name, bytes) into `dir`; returns the paths in order.
/// Names may contain `/` (a corpus's sub-folders): they become files
/// with the `/` replaced, so every message keeps its own file.
pub fn write_all(dir: &Path, mails: &[(String, Vec<u8>)]) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let mut paths = Vec::new();
    for (name, raw) in mails {
        let p = dir.join(name.replace('/', "__"));
        std::fs::write(&p, raw)?;
        paths.push(p.to_string_lossy().into_owned());
    }
    Ok(paths)
}

/// Sends every file over one smtplib connection with the fixed envelope;
/// fails unless each is accepted with 250.
pub fn send_batch(port: u16, paths: &[String]) -> anyhow::Result<()> {
    let mut args = vec![port.to_string(), MAIL_FROM.into(), RCPT.into()];
    args.extend(paths.iter().cloned());
    let replies = python("send_batch.py", &args)?;
    let replies = replies.as_array().cloned().unwrap_or_default();
    anyhow::ensure!(replies.len() == paths.len(), "replies: {replies:?}");
    for r in &replies {
        anyhow::ensure!(r["code"] == 250, "not accepted: {r}");
    }
    Ok(())
}

/// The raw message of `event_id` from the collector, over one connection
/// for the whole test (Env::raw opens one per call).
pub async fn raw(q: &mut QueryClient<Channel>, event_id: &str) -> anyhow::Result<Vec<u8>> {
    let mut s = q
        .get_raw(GetRawRequest {
            event_id: event_id.into(),
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(c) = s.message().await? {
        out.extend_from_slice(&c.data);
    }
    Ok(out)
}

/// Checks common to every relayed batch: each message reached the
/// upstream byte-identical with the fixed envelope, was recorded exactly
/// once as delivered, and comes back byte-identical from the collector.
/// Returns the records in the order of `sent`.
pub async fn delivered_and_recorded(
    env: &Env,
    up: &Upstream,
    agent_id: &str,
    sent: &[(String, Vec<u8>)],
) -> anyhow::Result<Vec<Event>> {
    let got = up.messages();
    assert_eq!(got.len(), sent.len(), "every message reached the upstream");
    for ((name, raw), (recv, envelope)) in sent.iter().zip(&got) {
        assert!(
            recv == raw,
            "{name}: the upstream copy differs from what the client sent"
        );
        assert_eq!(envelope["mail_from"], MAIL_FROM, "{name}");
        assert_eq!(envelope["rcpt_tos"], serde_json::json!([RCPT]), "{name}");
    }

    let query = SearchRequest {
        agent_id: agent_id.into(),
        kind: "email".into(),
        ..Default::default()
    };
    // A bound, not a speed target: on a loaded CI machine (every test
    // binary's collectors, agents and document readers on two cores) a
    // CI run of 94bdb44 waited over 30 s for the first batch.
    let events = env
        .wait_for(query.clone(), sent.len(), Duration::from_secs(90))
        .await?;
    assert_eq!(events.len(), sent.len(), "one record per message");
    let mut by_sha: HashMap<&str, &Event> = HashMap::new();
    for e in &events {
        let prev = by_sha.insert(email(e).raw_sha256.as_str(), e);
        assert!(prev.is_none(), "two records of one message: {e:?}");
    }
    let mut q = env.investigator().await?;
    let mut ordered = Vec::new();
    for (name, bytes) in sent {
        let sha = kiroku_common::sha256_hex(bytes);
        let Some(&e) = by_sha.get(sha.as_str()) else {
            panic!("{name}: no record with its SHA-256 {sha}");
        };
        let m = email(e);
        assert_eq!(m.outcome, Outcome::Delivered as i32, "{name}");
        assert_eq!(m.reply_code, 250, "{name}");
        assert_eq!(m.ended_at, "END-OF-DATA", "{name}");
        assert_eq!(m.mail_from, MAIL_FROM, "{name}");
        assert_eq!(m.rcpt_to.len(), 1, "{name}");
        assert_eq!(m.rcpt_to[0].address, RCPT, "{name}");
        assert_eq!(m.message_size, bytes.len() as u64, "{name}");
        assert!(
            m.parse_warnings.iter().all(|w| !w.contains("panicked")),
            "{name}: {:?}",
            m.parse_warnings
        );
        assert!(
            raw(&mut q, &e.event_id).await? == *bytes,
            "{name}: the collector's raw copy differs from what was sent"
        );
        ordered.push(e.clone());
    }
    // Still one each once everything has settled.
    let again = q
        .search(SearchRequest {
            page_size: 1000,
            ..query
        })
        .await?
        .into_inner();
    assert_eq!(again.events.len(), sent.len(), "no late duplicates");
    Ok(ordered)
}

/// The agent is still running and never panicked.
pub fn assert_agent_healthy(agent: &mut Proc) {
    assert!(agent.is_running(), "agent died:\n{}", agent.log_text());
    let log = agent.log_text();
    assert!(!log.contains("panicked"), "agent panicked:\n{log}");
}
