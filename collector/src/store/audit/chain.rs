//! Verifying the audit log's hash chain line by line, reporting every
//! break rather than stopping at the first, so one damaged line does not
//! hide what follows it and the entries written after a break can still be
//! checked.
//!
//! Each line links to the one before it through `prev_hash`: the `hash`
//! of the previous entry, or, when the previous line is not an entry at
//! all (edited into invalid JSON, say), the SHA-256 of that line's bytes.
//! The collector keeps appending after a damaged line that way, so the
//! entries after it are verifiable and the damaged line stays where it is,
//! as evidence.

use kiroku_proto::AuditEntry;
use sha2::{Digest, Sha256};

use super::{GENESIS, TAMPER_CALL, entry_hash, from_json};

/// At most this many problems are spelled out; the rest are counted.
const SHOWN_PROBLEMS: usize = 8;

/// One break in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line number; past the last line for the head check.
    pub line: u64,
    pub what: String,
    /// A break the collector itself found earlier and wrote into the log
    /// (an entry whose call is [`TAMPER_CALL`]).
    pub recorded: bool,
}

/// The hash-chain state while reading the log from its first line.
pub struct Chain {
    lines: u64,
    /// The link the next line must carry as `prev_hash`.
    link: String,
    /// Highest sequence number of an entry so far.
    seq: u64,
    /// Entries that parsed.
    pub entries: u64,
    problems: Vec<Problem>,
    /// The expected head (sequence, hash), and the line it was found on.
    expect: Option<(u64, String)>,
    head_line: Option<u64>,
    /// Line of the newest entry the collector wrote about a break.
    pub last_recorded: u64,
}

/// The link a line passes on to the next one.
fn link_of(line: &[u8], e: Option<&AuditEntry>) -> String {
    match e {
        Some(e) => e.hash.clone(),
        None => hex::encode(Sha256::digest(line)),
    }
}

impl Chain {
    /// A chain that must end at `expect` (sequence, hash) when given: the
    /// head the collector kept elsewhere.
    pub fn new(expect: Option<(u64, String)>) -> Chain {
        Chain {
            lines: 0,
            link: GENESIS.to_owned(),
            seq: 0,
            entries: 0,
            problems: Vec::new(),
            expect,
            head_line: None,
            last_recorded: 0,
        }
    }

    fn problem(&mut self, what: String) {
        self.problems.push(Problem {
            line: self.lines,
            what,
            recorded: false,
        });
    }

    /// Checks the next line (without its newline); returns its entry.
    pub fn push(&mut self, line: &[u8]) -> Option<AuditEntry> {
        self.lines += 1;
        let n = self.lines;
        let e = std::str::from_utf8(line).ok().and_then(from_json);
        let Some(e) = e else {
            self.problem(format!(
                "line {n} is not an audit entry (edited, or written by something else)"
            ));
            self.link = link_of(line, None);
            return None;
        };
        self.entries += 1;
        if e.seq != self.seq + 1 {
            let missing = e.seq.saturating_sub(self.seq + 1);
            self.problem(if e.seq > self.seq && missing > 0 {
                format!(
                    "line {n}: sequence {} follows {} ({missing} entries missing)",
                    e.seq, self.seq
                )
            } else {
                format!("line {n}: sequence {} follows {}", e.seq, self.seq)
            });
        }
        if e.prev_hash != self.link {
            self.problem(format!(
                "line {n} (seq {}): does not follow the line before it (a line was changed, inserted or removed before it)",
                e.seq
            ));
        }
        if entry_hash(&e) != e.hash {
            self.problem(format!(
                "line {n} (seq {}): content does not match its hash (the entry was edited)",
                e.seq
            ));
        }
        if e.call == TAMPER_CALL {
            self.problems.push(Problem {
                line: n,
                what: format!(
                    "line {n} (seq {}): at {} the collector found this log damaged: {}",
                    e.seq,
                    kiroku_common::rfc3339_ms(e.at_ms),
                    e.filter
                ),
                recorded: true,
            });
            self.last_recorded = n;
        }
        if self
            .expect
            .as_ref()
            .is_some_and(|(s, h)| *s == e.seq && *h == e.hash)
        {
            self.head_line = Some(n);
        }
        self.seq = self.seq.max(e.seq);
        self.link = e.hash.clone();
        Some(e)
    }

    /// The link a new entry must carry as `prev_hash`.
    pub fn link(&self) -> &str {
        &self.link
    }

    /// The sequence number for a new entry: past every entry in the log
    /// and past the head kept elsewhere, so entries cut off the end leave a
    /// visible gap in the numbering.
    pub fn next_seq(&self) -> u64 {
        let kept = self.expect.as_ref().map_or(0, |(s, _)| *s);
        self.seq.max(kept) + 1
    }

    /// Lines read so far.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Ends the check: every problem, the head check last. `lag` is how
    /// many entries the kept head may trail the log by (1 at open: the
    /// collector can stop between writing an entry and noting its head).
    pub fn finish(mut self, lag: u64) -> (Vec<Problem>, u64, String) {
        if let Some((seq, hash)) = self.expect.clone() {
            let end = self.lines + 1;
            match self.head_line {
                None => self.problems.push(Problem {
                    line: end,
                    what: format!(
                        "the log ends at seq {} but the collector last wrote seq {seq} (hash {}…): entries were cut off the end, or the file was replaced",
                        self.seq,
                        hash.get(..16).unwrap_or(&hash)
                    ),
                    recorded: false,
                }),
                Some(at) if self.lines - at > lag => self.problems.push(Problem {
                    line: end,
                    what: format!(
                        "{} lines follow line {at} (seq {seq}), the last entry the collector noted: they were added by something else",
                        self.lines - at
                    ),
                    recorded: false,
                }),
                Some(_) => {}
            }
        }
        (self.problems, self.entries, self.link)
    }
}

/// The problems as one sentence, the first few spelled out.
pub fn describe(problems: &[Problem]) -> String {
    let mut s: Vec<String> = problems
        .iter()
        .take(SHOWN_PROBLEMS)
        .map(|p| p.what.clone())
        .collect();
    if problems.len() > SHOWN_PROBLEMS {
        s.push(format!("and {} more", problems.len() - SHOWN_PROBLEMS));
    }
    s.join("; ")
}
