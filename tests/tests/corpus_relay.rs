//! Every message of CPython's email test corpus (Debian package
//! libpython3.11-testsuite: 47 tricky real-world and malformed messages)
//! relayed through the agent: each delivered byte-identical, none crashes
//! the agent, each recorded once with the raw message intact, and the
//! record's subject and sender agree with Python's own `email` package
//! wherever that package reads them cleanly.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use kiroku_proto::{Outcome, SearchRequest};
use kiroku_tests::{Env, Mode, Upstream, data_dir, email, free_port, run_client};
use sha2::{Digest, Sha256};

const CORPUS: &str = "/usr/lib/python3.11/test/test_email/data";

#[tokio::test(flavor = "multi_thread")]
async fn cpython_email_corpus_relays_byte_identical_and_is_recorded() -> anyhow::Result<()> {
    if !std::path::Path::new(CORPUS).is_dir() {
        kiroku_tests::skip(
            "corpus_relay",
            "libpython3.11-testsuite not installed (.ci/run installs it)",
        );
        return Ok(());
    }
    let env = Env::new()?;
    let up = Upstream::start(&env)?;
    let _collector = env.start_collector()?;
    let smtp = free_port();
    let mut agent = env.start_agent("pc-corpus", smtp, &Mode::Relay(up.port))?;

    let (ok, out) = run_client(
        Command::new("python3")
            .arg(data_dir().join("corpus_relay.py"))
            .arg(smtp.to_string())
            .arg(CORPUS),
        None,
    )?;
    assert!(ok, "{out}");
    let sent: Vec<serde_json::Value> = serde_json::from_str(out.trim())?;
    assert!(sent.len() >= 40, "corpus has {} messages", sent.len());
    assert!(agent.is_running(), "agent survived the corpus");

    // Delivered byte-identical, in order.
    let got = up.messages();
    assert_eq!(got.len(), sent.len(), "every message delivered");
    for (s, (raw, _)) in sent.iter().zip(&got) {
        assert_eq!(s["code"], 250, "{s}");
        assert_eq!(
            hex::encode(Sha256::digest(raw)),
            s["sha256"].as_str().unwrap_or_default(),
            "{} changed on the way",
            s["file"]
        );
    }

    // Recorded once each, raw intact, fields as Python reads them.
    let events = env
        .wait_for(
            SearchRequest {
                agent_id: "pc-corpus".into(),
                ..Default::default()
            },
            sent.len(),
            Duration::from_secs(60),
        )
        .await?;
    assert_eq!(events.len(), sent.len());
    let by_sha: HashMap<String, &kiroku_proto::Event> = events
        .iter()
        .map(|e| (email(e).raw_sha256.clone(), e))
        .collect();
    let (mut subjects, mut senders) = (0, 0);
    for s in &sent {
        let sha = s["sha256"].as_str().unwrap_or_default();
        let ev = by_sha
            .get(sha)
            .unwrap_or_else(|| panic!("no record for {}", s["file"]));
        let m = email(ev);
        assert_eq!(m.outcome, Outcome::Delivered as i32, "{}", s["file"]);
        assert_eq!(m.message_size, s["size"].as_u64().unwrap_or(0));
        if let Some(subject) = s["subject"].as_str() {
            // Python unfolds and decodes like we do; compare where the
            // header is well-formed enough that both must agree.
            if !subject.contains('\u{fffd}') {
                // Unfolding may keep the folding tab or make it a space.
                let norm = |t: &str| t.split_whitespace().collect::<Vec<_>>().join(" ");
                assert_eq!(norm(&m.subject), norm(subject), "subject of {}", s["file"]);
                subjects += 1;
            }
        }
        if let Some(from) = s["from"].as_array()
            && !from.is_empty()
            && m.parse_warnings.iter().all(|w| !w.starts_with("From"))
        {
            let want: Vec<&str> = from.iter().filter_map(|v| v.as_str()).collect();
            assert_eq!(m.from, want, "From of {}", s["file"]);
            senders += 1;
        }
    }
    eprintln!("compared {subjects} subjects and {senders} senders with Python's email package");
    assert!(
        subjects >= 30 && senders >= 20,
        "sample too small: {subjects} subjects, {senders} senders"
    );
    // The raw message comes back intact from the collector for a sample.
    for e in events.iter().step_by(10) {
        let raw = env.raw(&e.event_id).await?;
        assert_eq!(hex::encode(Sha256::digest(&raw)), email(e).raw_sha256);
    }
    Ok(())
}
