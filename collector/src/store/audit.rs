//! The audit log: every investigator query, appended to `audit.log` in the
//! data directory as one JSON line (sequence number, time, caller
//! identity, call, filter, result count), fsynced before the query is
//! answered. Each line carries the SHA-256 of the previous line's hash and
//! its own content, so editing, inserting or removing a line breaks the
//! chain; the newest (sequence, hash) is also kept in the metadata store,
//! so cutting lines off the end shows too. Readable through
//! `Query.Audit`, by admins only. An attacker with write access to both
//! the file and the metadata can still rewrite history: export the head
//! hash (`kiroku audit`) to somewhere else to anchor it.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use kiroku_proto::AuditEntry;
use sha2::{Digest, Sha256};

/// Hash of the (empty) chain before the first entry.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, thiserror::Error)]
#[error("audit log {path}: {message}")]
pub struct AuditError {
    pub path: PathBuf,
    pub message: String,
}

struct Head {
    file: std::fs::File,
    seq: u64,
    hash: String,
}

pub struct AuditLog {
    path: PathBuf,
    head: Mutex<Head>,
}

/// What a verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub entries: u64,
    pub head_hash: String,
    /// Empty when the chain is intact; else where and how it breaks.
    pub problem: String,
}

/// The hash of an entry: over the previous hash and every field but
/// `hash` itself, in a fixed order.
pub fn entry_hash(e: &AuditEntry) -> String {
    let mut h = Sha256::new();
    for part in [
        e.prev_hash.as_str(),
        &e.seq.to_string(),
        &e.at_ms.to_string(),
        &e.identity,
        &e.call,
        &e.filter,
        &e.results.to_string(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

fn to_json(e: &AuditEntry) -> String {
    serde_json::json!({
        "seq": e.seq, "at_ms": e.at_ms, "identity": e.identity, "call": e.call,
        "filter": e.filter, "results": e.results, "prev_hash": e.prev_hash, "hash": e.hash,
    })
    .to_string()
}

fn from_json(line: &str) -> Option<AuditEntry> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    Some(AuditEntry {
        seq: v["seq"].as_u64()?,
        at_ms: v["at_ms"].as_i64()?,
        identity: v["identity"].as_str()?.to_owned(),
        call: v["call"].as_str()?.to_owned(),
        filter: v["filter"].as_str()?.to_owned(),
        results: v["results"].as_u64()?,
        prev_hash: v["prev_hash"].as_str()?.to_owned(),
        hash: v["hash"].as_str()?.to_owned(),
    })
}

impl AuditLog {
    /// Opens the log, continuing its chain. A torn last line (a crash in
    /// the middle of a write) is cut off, with a warning.
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        let err = |message: String| AuditError {
            path: path.to_owned(),
            message,
        };
        let (mut seq, mut hash, mut good_len) = (0u64, GENESIS.to_owned(), 0u64);
        if let Ok(f) = std::fs::File::open(path) {
            let mut r = std::io::BufReader::new(f);
            let mut line = String::new();
            loop {
                line.clear();
                let n = r.read_line(&mut line).map_err(|e| err(e.to_string()))?;
                if n == 0 || !line.ends_with('\n') {
                    break;
                }
                match from_json(line.trim_end()) {
                    Some(e) => {
                        seq = e.seq;
                        hash = e.hash;
                        good_len += n as u64;
                    }
                    None => break,
                }
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| err(format!("cannot open for appending: {e}")))?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len > good_len {
            tracing::warn!(path = %path.display(), bytes = len - good_len, "audit log ends in a torn or unreadable line (a crash while writing?); it is cut off");
            file.set_len(good_len)
                .map_err(|e| err(format!("cannot cut the torn line: {e}")))?;
        }
        Ok(AuditLog {
            path: path.to_owned(),
            head: Mutex::new(Head { file, seq, hash }),
        })
    }

    /// Appends one entry, durable on return; returns it.
    pub fn record(
        &self,
        identity: &str,
        call: &str,
        filter: &str,
        results: u64,
    ) -> Result<AuditEntry, AuditError> {
        let mut head = self.head.lock().unwrap_or_else(|p| p.into_inner());
        let mut e = AuditEntry {
            seq: head.seq + 1,
            at_ms: kiroku_common::now_ms(),
            identity: identity.to_owned(),
            call: call.to_owned(),
            filter: filter.to_owned(),
            results,
            prev_hash: head.hash.clone(),
            hash: String::new(),
        };
        e.hash = entry_hash(&e);
        let line = format!("{}\n", to_json(&e));
        let err = |message: String| AuditError {
            path: self.path.clone(),
            message,
        };
        head.file
            .write_all(line.as_bytes())
            .and_then(|()| head.file.sync_data())
            .map_err(|e| err(e.to_string()))?;
        head.seq = e.seq;
        head.hash = e.hash.clone();
        Ok(e)
    }

    /// The newest (sequence number, hash).
    pub fn head(&self) -> (u64, String) {
        let head = self.head.lock().unwrap_or_else(|p| p.into_inner());
        (head.seq, head.hash.clone())
    }

    /// Reads the whole log, checking the chain (and that it ends at
    /// `expected_head` when given); returns the entries with `at_ms >=
    /// from_ms`, newest last, at most `limit` of the newest.
    pub fn read(
        &self,
        from_ms: i64,
        limit: usize,
        expected_head: Option<(u64, &str)>,
    ) -> Result<(Vec<AuditEntry>, Verdict), AuditError> {
        let err = |message: String| AuditError {
            path: self.path.clone(),
            message,
        };
        let f = std::fs::File::open(&self.path).map_err(|e| err(e.to_string()))?;
        let mut out = std::collections::VecDeque::new();
        let (mut prev, mut seq, mut problem) = (GENESIS.to_owned(), 0u64, String::new());
        for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
            let line = line.map_err(|e| err(e.to_string()))?;
            let Some(e) = from_json(&line) else {
                problem = format!("line {} is not an audit entry", i + 1);
                break;
            };
            if problem.is_empty() {
                if e.seq != seq + 1 {
                    problem = format!("line {}: sequence {} follows {seq}", i + 1, e.seq);
                } else if e.prev_hash != prev {
                    problem = format!(
                        "line {} (seq {}): does not follow the previous entry (a line was changed, inserted or removed before it)",
                        i + 1,
                        e.seq
                    );
                } else if entry_hash(&e) != e.hash {
                    problem = format!(
                        "line {} (seq {}): content does not match its hash (the entry was edited)",
                        i + 1,
                        e.seq
                    );
                }
            }
            prev = e.hash.clone();
            seq = e.seq;
            if e.at_ms >= from_ms {
                out.push_back(e);
                if out.len() > limit.max(1) {
                    out.pop_front();
                }
            }
        }
        if problem.is_empty()
            && let Some((want_seq, want_hash)) = expected_head
            && (want_seq != seq || want_hash != prev)
        {
            problem = format!(
                "the log ends at seq {seq} but the collector last wrote seq {want_seq} (lines were cut off the end, or the file was replaced)"
            );
        }
        Ok((
            out.into(),
            Verdict {
                entries: seq,
                head_hash: prev,
                problem,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_detects_edits_insertions_and_truncation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path).expect("open");
        for i in 0..5 {
            log.record("investigator/inv", "Search", &format!("f{i}"), i)
                .expect("record");
        }
        let head = log.head();
        let (entries, v) = log.read(0, 100, Some((head.0, &head.1))).expect("read");
        assert_eq!((entries.len(), v.entries, v.problem.as_str()), (5, 5, ""));
        drop(log);
        // Reopened, the chain continues.
        let log = AuditLog::open(&path).expect("reopen");
        log.record("admin/boss", "Audit", "", 5).expect("record");
        let head = log.head();
        assert_eq!(head.0, 6);
        let text = std::fs::read_to_string(&path).expect("read");

        // An edited result count.
        std::fs::write(&path, text.replacen("\"results\":2", "\"results\":0", 1)).expect("w");
        let (_, v) = log.read(0, 100, Some((head.0, &head.1))).expect("read");
        assert!(v.problem.contains("edited"), "{v:?}");
        // A removed line.
        let lines: Vec<&str> = text.lines().collect();
        let without: String = lines
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 2)
            .map(|(_, l)| format!("{l}\n"))
            .collect();
        std::fs::write(&path, without).expect("w");
        let (_, v) = log.read(0, 100, Some((head.0, &head.1))).expect("read");
        assert!(!v.problem.is_empty(), "{v:?}");
        // The last line cut off: only the head kept elsewhere shows it.
        let cut: String = lines[..5].iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&path, cut).expect("w");
        let (_, v) = log.read(0, 100, None).expect("read");
        assert_eq!(v.problem, "", "a prefix is a valid chain by itself");
        let (_, v) = log.read(0, 100, Some((head.0, &head.1))).expect("read");
        assert!(v.problem.contains("cut off"), "{v:?}");
    }

    #[test]
    fn a_torn_last_line_is_cut_and_the_chain_goes_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path).expect("open");
        log.record("a", "Search", "", 1).expect("record");
        drop(log);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        f.write_all(b"{\"seq\":2,\"at_ms\"").expect("w");
        drop(f);
        let log = AuditLog::open(&path).expect("reopen");
        let e = log.record("a", "Search", "", 2).expect("record");
        assert_eq!(e.seq, 2);
        let (entries, v) = log.read(0, 10, None).expect("read");
        assert_eq!((entries.len(), v.problem.as_str()), (2, ""));
    }
}
