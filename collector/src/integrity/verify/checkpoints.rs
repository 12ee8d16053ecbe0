//! Checkpoints against the CA and the journal: each `checkpoints/<n>.ckp`
//! must be signed by a signer certificate the CA issued, follow the one
//! before it (`number`, `prev_sha256`, `first_leaf`), be marked in the
//! journal by a `CheckpointMark` carrying its hash, and match what the
//! journal holds: the Merkle root of its leaves and the hash of the last
//! one, recomputed. The newest checkpoint's stream heads must be the
//! journalled events' recorded hashes, and its audit head an entry of the
//! audit log. Problems of one checkpoint are reported as one finding.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use kiroku_proto::{Checkpoint, CheckpointMark, Event, SignedCheckpoint};
use prost::Message;

use super::{Findings, hex8, where_at};
use crate::integrity::check;
use crate::integrity::merkle::TreeBuilder;
use crate::store::Store;
use crate::store::journal::Position;

/// A checkpoint this old (ms) must be covered by the journal; a newer one
/// may have been written after the journal head verify started from.
const SETTLED_MS: i64 = 60_000;

struct Loaded {
    path: PathBuf,
    ckp: Checkpoint,
    /// SHA-256 of the signed `Checkpoint` bytes (what marks and the next
    /// checkpoint's `prev_sha256` name).
    sha: [u8; 32],
    /// The most specific finding word for it, and the problems found.
    what: Option<&'static str>,
    problems: Vec<String>,
    tree: TreeBuilder,
    last_hash: Option<[u8; 32]>,
}

impl Loaded {
    /// Notes a problem; the finding is reported under the most specific
    /// word among them (a signature's, then `missing`, then `altered`).
    fn problem(&mut self, what: &'static str, p: String) {
        let rank = |w: &str| match w {
            "altered" => 0,
            "missing" => 1,
            _ => 2,
        };
        if self.what.is_none_or(|cur| rank(what) > rank(cur)) {
            self.what = Some(what);
        }
        self.problems.push(p);
    }

    fn end(&self) -> u64 {
        self.ckp.first_leaf.saturating_add(self.ckp.leaves)
    }
}

#[derive(Default)]
pub struct Checkpoints {
    /// Sorted by number.
    list: Vec<Loaded>,
    /// Files that did not decode: (path, why).
    unreadable: Vec<(PathBuf, String)>,
    /// Unsigned checkpoints: (number, reason).
    unsigned: Vec<(u64, String)>,
    marks: HashMap<u64, ([u8; 32], u64, Position)>,
    /// The newest checkpoint's stream heads: (agent, stream, seq) → hash,
    /// and what the journal had for them.
    heads: HashMap<(String, String, u64), Vec<u8>>,
    /// Recorded SHA-256s of purged events (their tombstones): a head
    /// among them is accounted for.
    purged_heads: std::collections::HashSet<Vec<u8>>,
    found: HashMap<(String, String, u64), [u8; 32]>,
    /// Highest leaf seen in the journal.
    top_leaf: Option<u64>,
}

fn sha256(b: &[u8]) -> [u8; 32] {
    crate::store::journal::entry::sha256(b)
}

/// Reads every checkpoint file in `dir` and checks what needs no journal.
pub fn load(
    dir: &Path,
    ca_pem: Option<&[u8]>,
    tsa_ca: Option<&[u8]>,
) -> anyhow::Result<Checkpoints> {
    let mut c = Checkpoints::default();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(c),
        Err(e) => anyhow::bail!("reading {}: {e}", dir.display()),
    };
    let mut paths: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "ckp"))
        .collect();
    paths.sort();
    for path in paths {
        let signed = match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| SignedCheckpoint::decode(b.as_slice()).map_err(|e| e.to_string()))
        {
            Ok(s) => s,
            Err(e) => {
                c.unreadable.push((path, e));
                continue;
            }
        };
        let ckp = match Checkpoint::decode(signed.checkpoint.as_slice()) {
            Ok(k) => k,
            Err(e) => {
                c.unreadable
                    .push((path, format!("the signed checkpoint does not decode: {e}")));
                continue;
            }
        };
        let mut l = Loaded {
            sha: sha256(&signed.checkpoint),
            path: path.clone(),
            ckp,
            what: None,
            problems: Vec::new(),
            tree: TreeBuilder::default(),
            last_hash: None,
        };
        let named: Option<u64> = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse().ok());
        if named != Some(l.ckp.number) {
            l.problem(
                "altered",
                format!(
                    "the file is named for another number than the {} it holds",
                    l.ckp.number
                ),
            );
        }
        if let Some(ca) = ca_pem {
            match check::check_checkpoint(&signed, ca, tsa_ca) {
                Ok(_) => {}
                Err(check::Problem::Unsigned { reason, .. }) => {
                    c.unsigned.push((l.ckp.number, reason));
                }
                Err(p) => l.problem(p.finding(), p.to_string()),
            }
        } else if signed.signature.is_empty() {
            c.unsigned
                .push((l.ckp.number, signed.unsigned_reason.clone()));
        }
        c.list.push(l);
    }
    c.list.sort_by_key(|l| l.ckp.number);
    // The chain of checkpoints.
    for i in 0..c.list.len() {
        let (before, rest) = c.list.split_at_mut(i);
        let l = &mut rest[0];
        match before.last() {
            None => {
                if l.ckp.number != 1
                    && !l.ckp.prev_sha256.is_empty()
                    && l.ckp.prev_sha256 != [0; 32]
                {
                    l.problem(
                        "missing",
                        format!("checkpoints 1–{} before it are missing", l.ckp.number - 1),
                    );
                }
            }
            Some(p) => {
                if l.ckp.number != p.ckp.number + 1 {
                    l.problem(
                        "missing",
                        format!(
                            "checkpoints {}–{} between it and {} are missing",
                            p.ckp.number + 1,
                            l.ckp.number.saturating_sub(1),
                            p.ckp.number
                        ),
                    );
                } else if l.ckp.prev_sha256 != p.sha {
                    l.problem(
                        "altered",
                        format!(
                            "it names {}… as checkpoint {}, which hashes to {}…",
                            hex8(&l.ckp.prev_sha256),
                            p.ckp.number,
                            hex8(&p.sha)
                        ),
                    );
                }
                if l.ckp.number == p.ckp.number + 1 && l.ckp.first_leaf != p.end() {
                    l.problem(
                        "altered",
                        format!(
                            "it starts at leaf {}, but checkpoint {} ended at {}",
                            l.ckp.first_leaf,
                            p.ckp.number,
                            p.end()
                        ),
                    );
                }
            }
        }
    }
    if let Some(newest) = c.list.last() {
        for h in &newest.ckp.streams {
            c.heads.insert(
                (h.agent_id.clone(), h.stream_id.clone(), h.seq),
                h.sha256.clone(),
            );
        }
    }
    Ok(c)
}

impl Checkpoints {
    /// One journal entry, in file order.
    /// One journal entry: `leaf_hash` its Merkle leaf hash, `hash` the
    /// SHA-256 of its payload (a purged entry's stub keeps both).
    pub fn leaf(&mut self, leaf: u64, leaf_hash: [u8; 32], hash: [u8; 32]) {
        self.top_leaf = Some(self.top_leaf.map_or(leaf, |t| t.max(leaf)));
        let i = self.list.partition_point(|l| l.end() <= leaf);
        if let Some(l) = self.list.get_mut(i)
            && l.ckp.first_leaf <= leaf
            && leaf < l.end()
        {
            l.tree.push(leaf_hash);
            if leaf + 1 == l.end() {
                l.last_hash = Some(hash);
            }
        }
    }

    pub fn mark(&mut self, m: &CheckpointMark, leaf: u64, at: Position) {
        let sha = <[u8; 32]>::try_from(m.checkpoint_sha256.as_slice()).unwrap_or([0; 32]);
        self.marks.insert(m.number, (sha, leaf, at));
    }

    /// A journalled event, for the newest checkpoint's stream heads.
    pub fn stream_event(&mut self, e: &Event, recorded_sha: [u8; 32]) {
        if self.heads.is_empty() {
            return;
        }
        let key = (e.agent_id.clone(), e.stream_id.clone(), e.seq);
        if self.heads.contains_key(&key) {
            self.found.insert(key, recorded_sha);
        }
    }

    /// A purged event's recorded SHA-256 (its tombstone): a stream head
    /// the newest checkpoint names with that hash is accounted for.
    pub fn stream_purged(&mut self, recorded_sha: &[u8]) {
        if self.heads.is_empty() {
            return;
        }
        self.purged_heads.insert(recorded_sha.to_vec());
    }

    /// (audit seq, audit head, checkpoint number) of the newest checkpoint.
    pub fn newest_audit_head(&self) -> Option<(u64, String, u64)> {
        self.list
            .last()
            .map(|l| (l.ckp.audit_seq, l.ckp.audit_head.clone(), l.ckp.number))
    }

    /// Checks against the journal read; reports; returns how many
    /// checkpoints there are.
    pub fn finish(&mut self, store: &Store, f: &mut Findings) -> anyhow::Result<u64> {
        let now = kiroku_common::now_ms();
        let journal_leaves = self.top_leaf.map_or(0, |t| t + 1);
        let newest = self.list.last().map(|l| l.ckp.number);
        for (path, why) in &self.unreadable {
            f.add(
                "altered",
                format!("checkpoint {}", path.display()),
                "",
                format!("the checkpoint file cannot be read: {why}"),
                true,
            );
        }
        for (n, reason) in &self.unsigned {
            f.add(
                "unsigned",
                format!("checkpoint {n}"),
                "",
                format!(
                    "checkpoint {n} is not signed ({}): it proves nothing against someone who can write the data directory",
                    if reason.is_empty() { "no reason given" } else { reason }
                ),
                false,
            );
        }
        let heads = std::mem::take(&mut self.heads);
        let found = std::mem::take(&mut self.found);
        let purged = std::mem::take(&mut self.purged_heads);
        for l in &mut self.list {
            let n = l.ckp.number;
            let settled = now - l.ckp.at_ms > SETTLED_MS;
            if l.end() > journal_leaves {
                if settled {
                    l.problem(
                        "missing",
                        format!(
                            "it covers leaves {}–{}, but the journal ends at leaf {}: entries were cut off its end",
                            l.ckp.first_leaf,
                            l.end().saturating_sub(1),
                            journal_leaves.saturating_sub(1)
                        ),
                    );
                }
                // Written after this verify began: checked next time.
            } else if !f.any_flagged(l.ckp.first_leaf, l.end().saturating_sub(1)) {
                if l.tree.leaves() != l.ckp.leaves || l.tree.root().as_slice() != l.ckp.merkle_root
                {
                    l.problem(
                        "altered",
                        format!(
                            "the Merkle root of leaves {}–{} as the journal holds them is not the signed one: an entry in that range was changed with the chain recomputed",
                            l.ckp.first_leaf,
                            l.end().saturating_sub(1)
                        ),
                    );
                } else if l.ckp.leaves > 0
                    && l.last_hash.map(|h| h.to_vec()) != Some(l.ckp.journal_head.clone())
                {
                    l.problem(
                        "altered",
                        format!("its journal head is not the hash of leaf {}", l.end() - 1),
                    );
                }
            }
            match self.marks.get(&n) {
                Some((sha, leaf, at)) if *sha != l.sha && !f.flagged.contains(leaf) => {
                    l.problem(
                        "altered",
                        format!(
                            "the journal marked checkpoint {n} at {} with hash {}…, the file hashes to {}… (the file was replaced or forged)",
                            where_at(*at),
                            hex8(sha),
                            hex8(&l.sha)
                        ),
                    );
                }
                Some(_) => {}
                // The newest one's mark may follow the head verify began at.
                None if Some(n) != newest || settled && journal_leaves > l.end() + 1 => {
                    l.problem(
                        "altered",
                        format!("no mark of checkpoint {n} in the journal: the file was not written by this collector, or its mark was removed"),
                    );
                }
                None => {}
            }
            if Some(n) == newest {
                for ((agent, stream, seq), want) in &heads {
                    match found.get(&(agent.clone(), stream.clone(), *seq)) {
                        Some(got) if got.as_slice() == want.as_slice() => {}
                        None if purged.contains(want) => {}
                        Some(got) => l.problem(
                            "altered",
                            format!(
                                "stream {agent}/{stream} head seq {seq}: signed {}…, the journalled event hashes to {}…",
                                hex8(want),
                                hex8(got)
                            ),
                        ),
                        None if settled => l.problem(
                            "missing",
                            format!("stream {agent}/{stream} head seq {seq} is not in the journal"),
                        ),
                        None => {}
                    }
                }
            }
        }
        for (n, (_, _, at)) in &self.marks {
            if !self.list.iter().any(|l| l.ckp.number == *n) {
                f.add(
                    "missing",
                    format!("checkpoint {n}"),
                    "",
                    format!(
                        "the journal marks checkpoint {n} at {}, but {} is missing",
                        where_at(*at),
                        store
                            .dir
                            .join("checkpoints")
                            .join(format!("{n:020}.ckp"))
                            .display()
                    ),
                    true,
                );
            }
        }
        for l in &self.list {
            if let Some(what) = l.what {
                f.add(
                    what,
                    format!("checkpoint {}", l.ckp.number),
                    "",
                    format!("{}: {}", l.path.display(), l.problems.join("; ")),
                    true,
                );
            }
        }
        Ok(self.list.len() as u64)
    }
}
