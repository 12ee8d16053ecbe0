//! File-capture test helpers shared by `tests/tests/file_capture.rs`,
//! `file_capture_gaps.rs` and `windows_files.rs`: the file part of an
//! event, a search for one operation on a path, waiting for the one event
//! a search matches, a content's SHA-256, and waiting for an agent's log.

use std::time::{Duration, Instant};

use kiroku_proto::{Event, FileEvent, SearchRequest, event::Kind};
use sha2::{Digest, Sha256};

use crate::{Env, Proc};

/// The file part of an event (panics when it is not a file event).
pub fn file(e: &Event) -> &FileEvent {
    match &e.kind {
        Some(Kind::File(f)) => f,
        _ => panic!("event {} is not a file event: {e:?}", e.event_id),
    }
}

/// File events of `op` on `path` (the words of a path match).
pub fn req(op: &str, path: &str) -> SearchRequest {
    SearchRequest {
        kind: "file".into(),
        operation: op.into(),
        path: path.into(),
        ..Default::default()
    }
}

/// The one event matching `r`, waiting at most `within` for it.
pub async fn one_within(env: &Env, r: SearchRequest, within: Duration) -> anyhow::Result<Event> {
    let events = env.wait_for(r.clone(), 1, within).await?;
    anyhow::ensure!(
        events.len() == 1,
        "expected one event for {r:?}: {events:#?}"
    );
    Ok(events.into_iter().next().expect("one event"))
}

/// The SHA-256 of `data`, lower-case hex, as file records carry it.
pub fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Waits (at most `within`) until the agent's log says `what` `n` times;
/// fails at once when the agent died.
pub fn wait_log(agent: &mut Proc, what: &str, n: usize, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while agent.log_text().matches(what).count() < n {
        anyhow::ensure!(agent.is_running(), "agent died:\n{}", agent.log_text());
        anyhow::ensure!(
            Instant::now() < deadline,
            "the agent never logged {what:?}:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
