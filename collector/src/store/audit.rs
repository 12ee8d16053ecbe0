//! The audit log: every investigator query, appended to `audit.log` in the
//! data directory as one JSON line (sequence number, time, caller
//! identity, call, filter, result count), fsynced before the query is
//! answered. Each line carries the SHA-256 of the previous line's hash and
//! its own content, so editing, inserting or removing a line breaks the
//! chain; the newest (sequence, hash) is also kept in the metadata store
//! (written under the same lock as the line, so it trails the file by at
//! most the one entry being written when the collector stopped), so
//! cutting lines off the end shows too. Readable through `Query.Audit`, by
//! admins only. An attacker with write access to both the file and the
//! metadata can still rewrite history: export the head hash (`kiroku
//! audit`) to somewhere else to anchor it.
//!
//! Damage is evidence, so nothing is ever cut from the log except a torn
//! final write: bytes after the last newline, when the head kept in the
//! metadata shows that the entry before them is the last one the collector
//! completed (a crash in the middle of appending; that query was never
//! answered). Anything else the check at open finds — a line that is not
//! an entry, a broken link, entries cut off the end — is logged as an
//! error, kept, and written into the log itself as an entry of its own
//! (call [`TAMPER_CALL`], identity `collector`), and the collector goes on
//! serving: new entries link to the last line as it is (`chain.rs`) and
//! continue the numbering past the head the metadata kept, so a cut-off
//! tail stays visible as a gap. `kiroku audit` reports every break, and
//! the entries recording them, for as long as the log is kept.
//!
//! Two kinds of entries share the one chain (issue 18): `query` (an
//! investigator's call; entries written before issue 18 have no kind and
//! count as queries) and `admin` (an administrative action: a rules, CRL
//! or TLS reload with the file's SHA-256, a repair, a re-analysis, a
//! verify or an export, an index rebuild starting or switching over, a
//! new agent identity or a signer certificate seen), written with
//! [`AuditLog::append_admin`]; its `detail` says what changed. The hash
//! covers `kind` and `detail` only when one of them is set, so the entries
//! written before they existed keep verifying unchanged.

mod chain;

use std::io::{BufRead, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use kiroku_proto::AuditEntry;
use sha2::{Digest, Sha256};

pub use chain::{Problem, describe};

/// Hash of the (empty) chain before the first entry.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The call of an entry in which the collector records damage it found in
/// this log at start.
pub const TAMPER_CALL: &str = "AuditLogDamaged";

/// The identity of entries the collector writes itself.
pub const COLLECTOR_IDENTITY: &str = "collector";

/// `AuditEntry.kind` of an investigator's call (empty in older entries).
pub const KIND_QUERY: &str = "query";

/// `AuditEntry.kind` of an administrative action.
pub const KIND_ADMIN: &str = "admin";

/// The calls of admin entries, one name per action, so `kiroku audit
/// --kind admin` reads the same whoever wrote them.
pub mod admin_call {
    /// The alert rules file was (re)loaded; detail: path and SHA-256.
    pub const RULES_RELOAD: &str = "RulesReload";
    /// The certificate revocation list changed; detail: path and SHA-256.
    pub const CRL_RELOAD: &str = "CrlReload";
    /// The TLS certificate or key was reloaded; detail: paths and SHA-256.
    pub const TLS_RELOAD: &str = "TlsReload";
    /// The configuration was (re)loaded; detail: path and SHA-256.
    pub const CONFIG_RELOAD: &str = "ConfigReload";
    /// A legal hold was created, or its creation refused; detail: id,
    /// case, reason, filter, events covered (`holds/rpc.rs`).
    pub const HOLD_CREATE: &str = "HoldCreate";
    /// A legal hold was released, or its release refused (investigators
    /// may not); detail: id, case, reason, filter.
    pub const HOLD_RELEASE: &str = "HoldRelease";
    /// `kiroku-collector repair` ran (offline); detail: options and outcome.
    pub const REPAIR: &str = "Repair";
    /// `kiroku-collector reanalyse` ran; detail: what was queued.
    pub const REANALYSE: &str = "Reanalyse";
    /// `kiroku verify` ran; detail: the range and the outcome.
    pub const VERIFY: &str = "Verify";
    /// A case bundle was exported; detail: case name, filter, events.
    pub const EXPORT: &str = "ExportCase";
    /// A background index rebuild started; detail: the schema versions.
    pub const INDEX_REBUILD_START: &str = "IndexRebuildStart";
    /// The rebuilt index replaced the old one; detail: versions, events.
    pub const INDEX_REBUILD_SWITCH: &str = "IndexRebuildSwitch";
    /// An agent identity connected for the first time; detail: its
    /// stream, host and the certificate's SHA-256.
    pub const AGENT_IDENTITY_SEEN: &str = "AgentIdentitySeen";
    /// A known agent identity connected with another certificate than
    /// before (reissued); detail: both SHA-256s.
    pub const AGENT_CERT_CHANGED: &str = "AgentCertificateChanged";
    /// A checkpoint signing certificate was loaded; detail: its subject
    /// and SHA-256.
    pub const SIGNER_CERT_LOADED: &str = "SignerCertLoaded";
    /// The retention policy purged events (identity `collector`); detail:
    /// how many, the tombstones' leaves (`tombstones at leaves A-B`), the
    /// reasons, the first event ids (`store/purge.rs`).
    pub const RETENTION: &str = "Retention";
    /// An admin erased events on request; detail as for [`RETENTION`].
    pub const ERASURE: &str = "Erasure";
    /// The retention policy file was (re)loaded, refused, or a shortening
    /// it waited for took effect; detail: path, SHA-256, what changed.
    pub const RETENTION_POLICY: &str = "RetentionPolicy";
    /// `kiroku purge undo` restored marked events; detail: filter, reason,
    /// how many.
    pub const RETENTION_UNDO: &str = "RetentionUndo";
    /// An agent was retired (`kiroku agents retire`), or a retirement was
    /// refused; detail: the agent, its certificate's serial and SHA-256,
    /// the revocation list, the reason.
    pub const RETIRE_AGENT: &str = "RetireAgent";
    /// A retired agent connected again with a new certificate (issued
    /// anew): it is active again; detail: both certificates' SHA-256.
    pub const AGENT_RETURNED: &str = "AgentReturned";
    /// Enrollment tokens were created (`kiroku certs enroll-token`), or
    /// their creation refused; detail: batch, count, group, expiry (never
    /// the tokens).
    pub const ENROLL_TOKENS: &str = "EnrollTokens";
    /// Unused enrollment tokens were revoked (`kiroku certs
    /// revoke-enroll-tokens`), or a revocation refused; detail: the batch or
    /// the tokens' references, how many, the reason.
    pub const REVOKE_ENROLL_TOKENS: &str = "RevokeEnrollTokens";
    /// An agent enrolled with a token, or an enrollment was refused;
    /// detail: agent id, computer name, address, group, the certificate's
    /// serial and SHA-256, the token's batch and hash prefix.
    pub const ENROLL: &str = "Enroll";
    /// An enrolled agent renewed its certificate over mTLS, or a renewal
    /// was refused; detail: serials and SHA-256s, validity.
    pub const RENEW_AGENT_CERT: &str = "RenewAgentCert";
}

/// A file as admin entries name it: its path and the SHA-256 of its
/// content, or why it could not be read.
pub fn file_digest(path: &Path) -> String {
    let read = std::fs::File::open(path).and_then(|mut f| {
        let mut h = Sha256::new();
        std::io::copy(&mut f, &mut h)?;
        Ok(hex::encode(h.finalize()))
    });
    match read {
        Ok(sha) => format!("{} sha256 {sha}", path.display()),
        Err(e) => format!("{} unreadable ({e})", path.display()),
    }
}

/// Who runs an offline command (`repair`, `reanalyse`) on this host, as
/// admin entries name them: `local/<user>`, with the user `sudo` was run
/// by when there is one. The environment can lie; these commands need
/// write access to the data directory anyway, and the entry records that
/// they ran, whoever it was.
pub fn local_identity() -> String {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let user = var("USER")
        .or_else(|| var("LOGNAME"))
        .unwrap_or_else(|| "unknown".to_owned());
    match var("SUDO_USER") {
        Some(by) => format!("local/{user} (sudo by {by})"),
        None => format!("local/{user}"),
    }
}

/// Called with the new (sequence, hash) after each entry, under the log's
/// lock: the collector keeps the head in its metadata store.
pub type HeadKeeper = Box<dyn Fn(u64, &str) -> Result<(), String> + Send + Sync>;

/// A filter longer than this is stored cut, with its length and SHA-256.
pub const MAX_FILTER_BYTES: usize = 4096;

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
    /// Bytes of the file that hold complete lines.
    len: u64,
}

pub struct AuditLog {
    path: PathBuf,
    head: Mutex<Head>,
    /// Notes the head after [`AuditLog::append_admin`] (see
    /// [`AuditLog::keep_head_with`]).
    keeper: std::sync::OnceLock<HeadKeeper>,
}

/// What a verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Entries in the log.
    pub entries: u64,
    /// The link of the last line: what the next entry will follow.
    pub head_hash: String,
    /// Empty when the chain is intact; else where and how it breaks.
    pub problem: String,
    pub problems: Vec<Problem>,
}

/// What [`AuditLog::open`] found, for the caller to record and log.
#[derive(Debug, Default)]
pub struct Opened {
    /// Breaks not recorded in the log before: the caller records them
    /// ([`AuditLog::record`] with [`TAMPER_CALL`]).
    pub new_problems: Vec<Problem>,
    /// Breaks an earlier start already recorded.
    pub known_problems: usize,
    /// Bytes of a torn final write that were cut off.
    pub torn_bytes: u64,
}

/// The hash of an entry: over the previous hash and every field but
/// `hash` itself, in a fixed order, each prefixed with its length. `kind`
/// and `detail` are covered when either is set; entries from before they
/// existed have neither, and hash as they always did. Clearing both in a
/// newer entry changes what is hashed, so it shows as an edit.
pub fn entry_hash(e: &AuditEntry) -> String {
    let mut h = Sha256::new();
    let (seq, at, results) = (
        e.seq.to_string(),
        e.at_ms.to_string(),
        e.results.to_string(),
    );
    let mut parts = vec![
        e.prev_hash.as_str(),
        &seq,
        &at,
        &e.identity,
        &e.call,
        &e.filter,
        &results,
    ];
    if !e.kind.is_empty() || !e.detail.is_empty() {
        parts.extend([e.kind.as_str(), &e.detail]);
    }
    for part in parts {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// True when the entry is of `kind` as `AuditRequest.kind` asks: empty
/// matches all, and an entry without a kind (older) is a query.
pub fn is_kind(e: &AuditEntry, kind: &str) -> bool {
    kind.is_empty() || e.kind == kind || (kind == KIND_QUERY && e.kind.is_empty())
}

/// A filter as the log stores it: whole up to [`MAX_FILTER_BYTES`], else
/// its beginning, its length and the SHA-256 of all of it (so a filter seen
/// elsewhere can still be matched to the entry).
pub fn bounded_filter(filter: &str) -> String {
    if filter.len() <= MAX_FILTER_BYTES {
        return filter.to_owned();
    }
    let mut cut = MAX_FILTER_BYTES;
    while !filter.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(
        "{}… [{} bytes in all, sha256 {}]",
        &filter[..cut],
        filter.len(),
        kiroku_common::sha256_hex(filter.as_bytes())
    )
}

fn to_json(e: &AuditEntry) -> String {
    let mut v = serde_json::json!({
        "seq": e.seq, "at_ms": e.at_ms, "identity": e.identity, "call": e.call,
        "filter": e.filter, "results": e.results, "prev_hash": e.prev_hash, "hash": e.hash,
    });
    // Written only when set, so an entry without them reads back as it
    // was written and hashes the same.
    if !e.kind.is_empty() || !e.detail.is_empty() {
        v["kind"] = e.kind.clone().into();
        v["detail"] = e.detail.clone().into();
    }
    v.to_string()
}

/// One line of the log as an entry (None: not an entry). Case bundles
/// carry lines verbatim and are checked with this.
pub fn parse_line(line: &[u8]) -> Option<AuditEntry> {
    from_json(std::str::from_utf8(line).ok()?)
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
        // Absent in entries from before issue 18; a value of another type
        // is an edit the hash shows, so it reads as empty.
        kind: v["kind"].as_str().unwrap_or_default().to_owned(),
        detail: v["detail"].as_str().unwrap_or_default().to_owned(),
        hash: v["hash"].as_str()?.to_owned(),
    })
}

/// Which entries a read keeps: `at_ms >= from_ms`, of `kind` (empty:
/// all, see [`is_kind`]), at most `limit` of the newest.
#[derive(Debug, Clone, Copy)]
struct Keep<'a> {
    from_ms: i64,
    limit: usize,
    kind: &'a str,
}

const KEEP_NONE: Keep<'static> = Keep {
    from_ms: 0,
    limit: 0,
    kind: "",
};

/// Reads the complete lines of `r` (up to `len` bytes) through `chain`,
/// keeping the entries `keep` asks for. Returns the entries and the bytes
/// after the last newline.
fn read_lines(
    r: impl Read,
    len: u64,
    chain: &mut chain::Chain,
    keep: Keep<'_>,
) -> std::io::Result<(Vec<AuditEntry>, Vec<u8>)> {
    let Keep {
        from_ms,
        limit,
        kind,
    } = keep;
    let mut r = std::io::BufReader::new(r.take(len));
    let mut out = std::collections::VecDeque::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Ok((out.into(), Vec::new()));
        }
        if line.last() != Some(&b'\n') {
            return Ok((out.into(), line));
        }
        line.pop();
        if let Some(e) = chain.push(&line)
            && e.at_ms >= from_ms
            && limit > 0
            && is_kind(&e, kind)
        {
            out.push_back(e);
            if out.len() > limit {
                out.pop_front();
            }
        }
    }
}

/// Checks the log file at `path` without changing it (for `repair` and
/// tests): every line, and that it ends at `expected_head` when given,
/// allowing the head to trail by one entry (a stop between writing an
/// entry and noting it). A torn final write is reported as such.
pub fn verify_file(
    path: &Path,
    expected_head: Option<(u64, String)>,
) -> Result<Verdict, AuditError> {
    let err = |message: String| AuditError {
        path: path.to_owned(),
        message,
    };
    let mut chain = chain::Chain::new(expected_head);
    let tail = match std::fs::File::open(path) {
        Ok(f) => {
            read_lines(f, u64::MAX, &mut chain, KEEP_NONE)
                .map_err(|e| err(e.to_string()))?
                .1
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(err(e.to_string())),
    };
    let lines = chain.lines();
    let (mut problems, entries, head_hash) = chain.finish(1);
    if !tail.is_empty() {
        problems.push(Problem {
            line: lines + 1,
            what: format!(
                "the log ends in {} bytes without a newline (a torn last write, which the collector cuts at its next start if nothing else is wrong, or an edit)",
                tail.len()
            ),
            recorded: false,
        });
    }
    Ok(Verdict {
        entries,
        head_hash,
        problem: chain::describe(&problems),
        problems,
    })
}

impl AuditLog {
    /// Opens the log, checking its whole chain and that it ends at
    /// `expected_head` (the head the metadata kept; None when it kept
    /// none), and continues it. Only a torn final write is cut (see the
    /// module documentation); every other problem is returned in
    /// [`Opened`] for the caller to log and record, and the log is kept as
    /// it is.
    pub fn open(
        path: &Path,
        expected_head: Option<(u64, String)>,
    ) -> Result<(AuditLog, Opened), AuditError> {
        let err = |message: String| AuditError {
            path: path.to_owned(),
            message,
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(|e| err(format!("cannot open for appending: {e}")))?;
        let mut chain = chain::Chain::new(expected_head.clone());
        file.rewind().map_err(|e| err(e.to_string()))?;
        let (_, tail) = read_lines(&mut file, u64::MAX, &mut chain, KEEP_NONE)
            .map_err(|e| err(format!("cannot read: {e}")))?;
        let len = file.metadata().map_err(|e| err(e.to_string()))?.len();
        let mut opened = Opened::default();
        let complete = len - tail.len() as u64;
        // A torn final write follows the last entry the collector
        // completed: the kept head is the last entry (or, when the
        // metadata keeps none, nothing says otherwise).
        let torn = !tail.is_empty() && head_is_last(&chain, &expected_head);
        if torn {
            tracing::warn!(path = %path.display(), bytes = tail.len(), "the audit log ends in a torn write (the collector stopped while appending; that query was not answered); it is cut off");
            file.set_len(complete)
                .and_then(|()| file.sync_data())
                .map_err(|e| err(format!("cannot cut the torn write: {e}")))?;
            opened.torn_bytes = tail.len() as u64;
        } else if !tail.is_empty() {
            // Kept as a line of its own: the next entry starts on a new
            // line and links to it.
            chain.push(&tail);
            file.write_all(b"\n")
                .and_then(|()| file.sync_data())
                .map_err(|e| err(format!("cannot end the last line: {e}")))?;
        }
        let last_recorded = chain.last_recorded;
        let (seq, hash) = (chain.next_seq() - 1, chain.link().to_owned());
        let (problems, _, _) = chain.finish(1);
        for p in problems {
            if p.recorded || p.line <= last_recorded {
                opened.known_problems += usize::from(!p.recorded);
            } else {
                opened.new_problems.push(p);
            }
        }
        let len = file.metadata().map_err(|e| err(e.to_string()))?.len();
        Ok((
            AuditLog {
                path: path.to_owned(),
                head: Mutex::new(Head {
                    file,
                    seq,
                    hash,
                    len,
                }),
                keeper: std::sync::OnceLock::new(),
            },
            opened,
        ))
    }

    /// Has [`AuditLog::append_admin`] note each new head with `keeper`
    /// (the store sets it to its metadata when it opens). Once only; a
    /// second keeper is ignored.
    pub fn keep_head_with(&self, keeper: HeadKeeper) {
        let _ = self.keeper.set(keeper);
    }

    /// Appends one investigator query (kind `query`), durable on return,
    /// and runs `keep_head` with the new (sequence, hash) before anyone
    /// else can append, so the head kept elsewhere never goes backwards.
    /// Returns the entry.
    pub fn record(
        &self,
        identity: &str,
        call: &str,
        filter: &str,
        results: u64,
        keep_head: impl FnOnce(u64, &str) -> Result<(), String>,
    ) -> Result<AuditEntry, AuditError> {
        let e = AuditEntry {
            identity: identity.to_owned(),
            call: call.to_owned(),
            filter: bounded_filter(filter),
            results,
            kind: KIND_QUERY.to_owned(),
            ..Default::default()
        };
        self.append(e, keep_head)
    }

    /// Appends one administrative action (kind `admin`): `identity` is who
    /// did it (`admin/alice`, or `collector` for what the collector does on
    /// its own, such as a rules file reloaded on a change), `call` one of
    /// [`admin_call`], `detail` what changed (with a file's SHA-256 where a
    /// file is concerned). Durable on return; the head is noted by the
    /// keeper given to [`AuditLog::keep_head_with`], if any.
    pub fn append_admin(
        &self,
        identity: &str,
        call: &str,
        detail: &str,
    ) -> Result<AuditEntry, AuditError> {
        tracing::info!(target: "audit", identity, call, detail = %bounded_filter(detail), "admin");
        let e = AuditEntry {
            identity: identity.to_owned(),
            call: call.to_owned(),
            detail: bounded_filter(detail),
            kind: KIND_ADMIN.to_owned(),
            ..Default::default()
        };
        self.append(e, |seq, hash| match self.keeper.get() {
            Some(k) => k(seq, hash),
            None => Ok(()),
        })
    }

    /// Numbers, links and hashes `e`, appends it (durable on return), then
    /// runs `keep_head` under the lock.
    fn append(
        &self,
        mut e: AuditEntry,
        keep_head: impl FnOnce(u64, &str) -> Result<(), String>,
    ) -> Result<AuditEntry, AuditError> {
        let mut head = self.head.lock().unwrap_or_else(|p| p.into_inner());
        e.seq = head.seq + 1;
        e.at_ms = kiroku_common::now_ms();
        e.prev_hash = head.hash.clone();
        e.hash = entry_hash(&e);
        let line = format!("{}\n", to_json(&e));
        let err = |message: String| AuditError {
            path: self.path.clone(),
            message,
        };
        let before = head.len;
        if let Err(error) = head
            .file
            .write_all(line.as_bytes())
            .and_then(|()| head.file.sync_data())
        {
            // Take back a partial line (a full disk), so the next entry
            // starts clean; if that fails too, the next start finds a
            // torn write after the last entry and cuts it.
            let _ = head.file.set_len(before);
            return Err(err(error.to_string()));
        }
        head.seq = e.seq;
        head.hash = e.hash.clone();
        head.len = before + line.len() as u64;
        keep_head(e.seq, &e.hash).map_err(err)?;
        Ok(e)
    }

    /// The hash of the entry numbered `seq` as the log holds it (the
    /// first such line), if any: what a checkpoint's audit head is
    /// checked against.
    pub fn hash_at(&self, seq: u64) -> Result<Option<String>, AuditError> {
        let err = |message: String| AuditError {
            path: self.path.clone(),
            message,
        };
        let len = self.head.lock().unwrap_or_else(|p| p.into_inner()).len;
        let f = std::fs::File::open(&self.path).map_err(|e| err(e.to_string()))?;
        let mut r = std::io::BufReader::new(f.take(len));
        let mut line = Vec::new();
        loop {
            line.clear();
            if r.read_until(b'\n', &mut line)
                .map_err(|e| err(e.to_string()))?
                == 0
            {
                return Ok(None);
            }
            if let Some(e) = std::str::from_utf8(line.trim_ascii_end())
                .ok()
                .and_then(from_json)
                && e.seq == seq
            {
                return Ok(Some(e.hash));
            }
        }
    }

    /// The newest (sequence number, hash).
    pub fn head(&self) -> (u64, String) {
        let head = self.head.lock().unwrap_or_else(|p| p.into_inner());
        (head.seq, head.hash.clone())
    }

    /// Calls `f` with each line that is an entry, as stored (without its
    /// newline), and the entry, in log order, up to and including the
    /// entry numbered `last_seq` (a case export takes its lines verbatim).
    /// Reads what was complete when called; appends go on meanwhile.
    pub fn each_line_until(
        &self,
        last_seq: u64,
        mut f: impl FnMut(&[u8], &AuditEntry),
    ) -> std::io::Result<()> {
        let len = self.head.lock().unwrap_or_else(|p| p.into_inner()).len;
        let mut r = std::io::BufReader::new(std::fs::File::open(&self.path)?.take(len));
        let mut line = Vec::new();
        loop {
            line.clear();
            if r.read_until(b'\n', &mut line)? == 0 || line.pop() != Some(b'\n') {
                return Ok(());
            }
            if let Some(e) = parse_line(&line) {
                f(&line, &e);
                if e.seq >= last_seq {
                    return Ok(());
                }
            }
        }
    }

    /// Reads the whole log as the collector has written it so far,
    /// checking the chain and that it ends at the head the collector
    /// holds; `kept_head` (called under the log's lock, so no entry slips
    /// in between) is the head the metadata keeps, which must be the same.
    /// Returns the entries with `at_ms >= from_ms` of `kind` (empty: all;
    /// see [`is_kind`]), newest last, at most `limit` of the newest.
    pub fn read(
        &self,
        from_ms: i64,
        limit: usize,
        kind: &str,
        kept_head: impl FnOnce() -> Option<(u64, String)>,
    ) -> Result<(Vec<AuditEntry>, Verdict), AuditError> {
        let err = |message: String| AuditError {
            path: self.path.clone(),
            message,
        };
        let (len, seq, hash, kept) = {
            let head = self.head.lock().unwrap_or_else(|p| p.into_inner());
            (head.len, head.seq, head.hash.clone(), kept_head())
        };
        let f = std::fs::File::open(&self.path).map_err(|e| err(e.to_string()))?;
        // Only an empty log has no head to end at.
        let expect = (seq > 0).then(|| (seq, hash.clone()));
        let mut chain = chain::Chain::new(expect);
        let keep = Keep {
            from_ms,
            limit: limit.max(1),
            kind,
        };
        let (entries, tail) =
            read_lines(f, len, &mut chain, keep).map_err(|e| err(e.to_string()))?;
        let lines = chain.lines();
        let (mut problems, total, head_hash) = chain.finish(0);
        if !tail.is_empty() || std::fs::metadata(&self.path).is_ok_and(|m| m.len() < len) {
            problems.push(Problem {
                line: lines + 1,
                what: "the file is shorter than the collector wrote it: it was cut or replaced"
                    .into(),
                recorded: false,
            });
        }
        if seq > 0 && kept.as_ref() != Some(&(seq, hash.clone())) {
            problems.push(Problem {
                line: lines + 1,
                what: format!(
                    "the head kept in the metadata ({}) is not the collector's (seq {seq}): the metadata was changed or restored",
                    kept.map_or("none".to_owned(), |(s, _)| format!("seq {s}"))
                ),
                recorded: false,
            });
        }
        Ok((
            entries,
            Verdict {
                entries: total,
                head_hash,
                problem: chain::describe(&problems),
                problems,
            },
        ))
    }
}

/// True when the head kept elsewhere is the last entry read (or none is
/// kept): what a torn write after it requires.
fn head_is_last(chain: &chain::Chain, expected: &Option<(u64, String)>) -> bool {
    match expected {
        None => true,
        Some((seq, hash)) => chain.link() == hash && chain.next_seq() == seq + 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_head(_: u64, _: &str) -> Result<(), String> {
        Ok(())
    }

    /// Opens the log as the store does, recording new damage in it.
    fn open(path: &Path, head: Option<(u64, String)>) -> (AuditLog, Opened) {
        let (log, opened) = AuditLog::open(path, head).expect("open");
        if !opened.new_problems.is_empty() {
            let what = describe(&opened.new_problems);
            log.record(COLLECTOR_IDENTITY, TAMPER_CALL, &what, 0, no_head)
                .expect("record damage");
        }
        (log, opened)
    }

    fn fill(path: &Path, n: u64) -> (u64, String) {
        let (log, _) = open(path, None);
        for i in 0..n {
            log.record("investigator/inv", "Search", &format!("f{i}"), i, no_head)
                .expect("record");
        }
        log.head()
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .expect("read")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn write_lines(path: &Path, lines: &[String]) {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(path, text).expect("write");
    }

    #[test]
    fn the_chain_detects_edits_insertions_and_truncation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let head = fill(&path, 5);
        let v = verify_file(&path, Some(head.clone())).expect("verify");
        assert_eq!((v.entries, v.problem.as_str()), (5, ""));
        let text = std::fs::read_to_string(&path).expect("read");

        // An edited result count.
        std::fs::write(&path, text.replacen("\"results\":2", "\"results\":0", 1)).expect("w");
        let v = verify_file(&path, Some(head.clone())).expect("verify");
        assert!(v.problem.contains("edited"), "{v:?}");
        // A removed line.
        let mut without = lines(&path);
        without.remove(2);
        write_lines(&path, &without);
        let v = verify_file(&path, Some(head.clone())).expect("verify");
        assert!(v.problem.contains("line 3"), "{v:?}");
        // The last line cut off: only the head kept elsewhere shows it.
        std::fs::write(&path, &text).expect("w");
        let mut cut = lines(&path);
        cut.pop();
        write_lines(&path, &cut);
        assert_eq!(verify_file(&path, None).expect("verify").problem, "");
        let v = verify_file(&path, Some(head)).expect("verify");
        assert!(v.problem.contains("cut off"), "{v:?}");
    }

    #[test]
    fn only_a_torn_write_after_the_last_entry_is_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let head = fill(&path, 1);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        f.write_all(b"{\"seq\":2,\"at_ms\"").expect("w");
        drop(f);
        let (log, opened) = open(&path, Some(head));
        assert!(
            opened.torn_bytes > 0 && opened.new_problems.is_empty(),
            "{opened:?}"
        );
        let e = log.record("a", "Search", "", 2, no_head).expect("record");
        assert_eq!(e.seq, 2);
        let (entries, v) = {
            let h = log.head();
            log.read(0, 10, "", move || Some(h))
        }
        .expect("read");
        assert_eq!((entries.len(), v.problem.as_str()), (2, ""));
    }

    #[test]
    fn a_line_edited_into_garbage_mid_file_is_kept_recorded_and_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let head = fill(&path, 10);
        let mut l = lines(&path);
        l[3] = l[3].replacen('{', "[", 1);
        write_lines(&path, &l);
        let (log, opened) = open(&path, Some(head));
        assert_eq!(opened.torn_bytes, 0);
        assert!(
            opened
                .new_problems
                .iter()
                .any(|p| p.what.contains("line 4")),
            "{opened:?}"
        );
        log.record("a", "Search", "after", 1, no_head)
            .expect("record");
        let after = lines(&path);
        assert_eq!(
            after.len(),
            12,
            "nothing cut: 10 lines, the record of the damage, one more"
        );
        assert_eq!(after[3], l[3], "the damaged line is kept");
        let (entries, v) = {
            let h = log.head();
            log.read(0, 100, "", move || Some(h))
        }
        .expect("read");
        assert_eq!(entries.len(), 11);
        assert!(v.problem.contains("line 4 is not an audit entry"), "{v:?}");
        assert!(v.problem.contains("collector found"), "{v:?}");
        assert!(
            !v.problem.contains("line 12"),
            "the entries after the damage chain correctly: {v:?}"
        );
        // A second start finds nothing new to record.
        let head = log.head();
        drop(log);
        let (_, opened) = open(&path, Some(head));
        assert!(opened.new_problems.is_empty(), "{opened:?}");
        assert!(opened.known_problems > 0);
    }

    #[test]
    fn a_tail_removed_cleanly_is_found_at_open_and_leaves_a_gap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let head = fill(&path, 10);
        let mut l = lines(&path);
        l.truncate(6);
        write_lines(&path, &l);
        let (log, opened) = open(&path, Some(head));
        assert!(
            opened
                .new_problems
                .iter()
                .any(|p| p.what.contains("cut off")),
            "{opened:?}"
        );
        assert_eq!(
            lines(&path).len(),
            7,
            "the damage is recorded, nothing else changes"
        );
        assert_eq!(log.head().0, 11, "numbering continues past the kept head");
        let (_, v) = {
            let h = log.head();
            log.read(0, 100, "", move || Some(h))
        }
        .expect("read");
        assert!(v.problem.contains("4 entries missing"), "{v:?}");
    }

    #[test]
    fn admin_entries_chain_with_queries_and_old_entries_keep_verifying() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        // A line as a collector before issue 18 wrote it: no kind, no
        // detail, hashed over the seven fields alone (the pinned value was
        // computed independently, with Python's hashlib over the same
        // length-prefixed fields).
        let mut old = AuditEntry {
            seq: 1,
            at_ms: 1_700_000_000_000,
            identity: "investigator/inv".into(),
            call: "Search".into(),
            filter: "subject:seed".into(),
            results: 3,
            prev_hash: GENESIS.into(),
            ..Default::default()
        };
        old.hash = entry_hash(&old);
        assert_eq!(
            old.hash, "d04fbb034b90edbfcc936e5d0dd77db05dc99745ef8aa128d710747d5e60ea1a",
            "the hash of an entry without kind and detail must never change"
        );
        let line = to_json(&old);
        assert!(!line.contains("kind"), "{line}");
        std::fs::write(&path, format!("{line}\n")).expect("write");
        let (log, opened) = open(&path, Some((1, old.hash.clone())));
        assert!(opened.new_problems.is_empty(), "{opened:?}");
        let keeps = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let k = keeps.clone();
        log.keep_head_with(Box::new(move |seq, hash| {
            k.lock().expect("lock").push((seq, hash.to_owned()));
            Ok(())
        }));
        let a = log
            .append_admin(
                "admin/root",
                admin_call::RULES_RELOAD,
                "rules /etc/kiroku/rules.toml sha256 ab12",
            )
            .expect("admin");
        let q = log
            .record("investigator/inv", "GetRaw", "id", 1, no_head)
            .expect("query");
        assert_eq!(
            (a.seq, a.kind.as_str(), q.kind.as_str()),
            (2, "admin", "query")
        );
        assert_eq!(
            keeps.lock().expect("lock").as_slice(),
            &[(2, a.hash.clone())],
            "append_admin notes its head with the keeper"
        );
        let head = log.head();
        let read = |kind: &str| {
            let h = head.clone();
            log.read(0, 100, kind, move || Some(h)).expect("read")
        };
        let (all, v) = read("");
        assert_eq!((all.len(), v.problem.as_str()), (3, ""));
        let (admins, _) = read("admin");
        assert_eq!(admins.len(), 1);
        assert_eq!(admins[0].detail, "rules /etc/kiroku/rules.toml sha256 ab12");
        let (queries, v) = read("query");
        assert_eq!(
            queries.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [1, 3],
            "an entry without a kind is a query"
        );
        assert_eq!(v.entries, 3, "the total counts the whole log");
        drop(log);

        // Editing an admin entry's detail, or clearing its kind and detail
        // (which would make it hash like an old entry), breaks the chain.
        let text = std::fs::read_to_string(&path).expect("read");
        for edited in [
            text.replace("sha256 ab12", "sha256 cd34"),
            text.replace(",\"kind\":\"admin\"", "").replace(
                ",\"detail\":\"rules /etc/kiroku/rules.toml sha256 ab12\"",
                "",
            ),
        ] {
            assert_ne!(edited, text);
            std::fs::write(&path, &edited).expect("w");
            let v = verify_file(&path, Some(head.clone())).expect("verify");
            assert!(
                v.problem.contains("line 2 (seq 2)") && v.problem.contains("edited"),
                "{v:?}"
            );
        }
    }

    #[test]
    fn long_filters_are_bounded_and_hashed() {
        let f = "x".repeat(100_000);
        let b = bounded_filter(&f);
        assert!(b.len() < MAX_FILTER_BYTES + 200, "{}", b.len());
        assert!(b.contains("100000 bytes") && b.contains(&kiroku_common::sha256_hex(f.as_bytes())));
        assert_eq!(bounded_filter("short"), "short");
        let multi = "é".repeat(5000);
        assert!(bounded_filter(&multi).starts_with('é'));
    }
}
