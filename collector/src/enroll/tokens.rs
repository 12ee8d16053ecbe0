//! Enrollment tokens and enrolled names, in the meta tree `enroll`:
//! `token\0<SHA-256 of the token>` → a JSON [`TokenRecord`] (the token
//! itself is never stored: only its hash), `agent\0<agent id>` → a JSON
//! [`Enrolled`]. A token is used up, and a name taken, in one sled
//! transaction, so two enrollments racing for one token or one name
//! cannot both win. Used, expired and revoked tokens stay (a reuse is then
//! refused saying by whom it was used, or why it was revoked); `kiroku
//! certs enroll-tokens` lists them ([`Tokens::list`]) and `kiroku certs
//! revoke-enroll-tokens` revokes unused ones ([`Tokens::revoke`]).

use serde::{Deserialize, Serialize};

const TREE: &str = "enroll";
/// What `kiroku certs enroll-token` prints before the random part.
pub const TOKEN_PREFIX: &str = "ket1-";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRecord {
    pub group: String,
    pub expires_ms: i64,
    pub created_ms: i64,
    pub created_by: String,
    pub batch: String,
    pub note: String,
    /// The agent id it enrolled; empty while unused.
    pub used_by: String,
    pub used_ms: i64,
    /// SHA-256 of the enrolled key (the CSR's public key) and the chain
    /// returned: the same request again (a lost response) gets the same
    /// chain.
    #[serde(default)]
    pub key_sha: String,
    #[serde(default)]
    pub chain_pem: String,
    #[serde(default)]
    pub not_after_ms: i64,
    /// When, by whom and why it was revoked (0: not revoked). Only an
    /// unused token is revoked.
    #[serde(default)]
    pub revoked_ms: i64,
    #[serde(default)]
    pub revoked_by: String,
    #[serde(default)]
    pub revoke_reason: String,
}

/// Where a token stands at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Unused,
    Used,
    Expired,
    Revoked,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Unused => "unused",
            State::Used => "used",
            State::Expired => "expired",
            State::Revoked => "revoked",
        }
    }
}

impl TokenRecord {
    pub fn state(&self, now_ms: i64) -> State {
        if !self.used_by.is_empty() {
            State::Used
        } else if self.revoked_ms != 0 {
            State::Revoked
        } else if now_ms >= self.expires_ms {
            State::Expired
        } else {
            State::Unused
        }
    }

    /// Why it does not enroll now; None when it may.
    fn refusal(&self, now_ms: i64) -> Option<Refusal> {
        match self.state(now_ms) {
            State::Unused => None,
            State::Used => Some(Refusal::Used {
                by: self.used_by.clone(),
                at: when(self.used_ms),
            }),
            State::Revoked => Some(Refusal::Revoked {
                at: when(self.revoked_ms),
                reason: self.revoke_reason.clone(),
            }),
            State::Expired => Some(Refusal::Expired {
                at: when(self.expires_ms),
            }),
        }
    }
}

/// A token as listed: its reference (the first 12 hex digits of its
/// SHA-256) and its record.
pub struct Listed {
    pub token_ref: String,
    pub rec: TokenRecord,
}

/// What [`Tokens::revoke`] did: how many it revoked, and a line for each
/// token it did not.
#[derive(Debug, Default)]
pub struct Revoked {
    pub revoked: Vec<String>,
    pub not_revoked: Vec<String>,
}

/// Which tokens to revoke.
pub enum Which<'a> {
    /// Every unused token of a batch.
    Batch(&'a str),
    /// Tokens, or their references (12 to 64 hex digits of the SHA-256).
    Tokens(&'a [String]),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Enrolled {
    pub at_ms: i64,
    pub serial: String,
    pub batch: String,
}

/// Why a token does not enroll.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("unknown enrollment token (mistyped, or from another collector): ask for a new one")]
    Unknown,
    #[error(
        "this enrollment token was used already (it enrolled agent {by}, {at}): each token enrolls one agent, once; ask for a new one"
    )]
    Used { by: String, at: String },
    #[error(
        "this enrollment token expired {at}: ask for a new one (`kiroku certs enroll-token --expires ...`)"
    )]
    Expired { at: String },
    #[error("this enrollment token was revoked {at} ({reason}): ask for a new one")]
    Revoked { at: String, reason: String },
    #[error(
        "agent id {0:?} is already enrolled (or known) at this collector: another computer with the same name? Rename this computer or set `[collector] enroll_name` on it, or retire the old agent first (`kiroku agents retire {0} --reason ...`); the token was not used up"
    )]
    NameTaken(String),
}

pub struct Tokens {
    tree: sled::Tree,
}

fn token_key(token: &str) -> String {
    format!(
        "token\0{}",
        kiroku_common::sha256_hex(token.trim().as_bytes())
    )
}

fn agent_key(name: &str) -> String {
    format!("agent\0{name}")
}

/// Why a used token (reference `r`) is not revoked, and what to do.
fn used(r: &str, rec: &TokenRecord) -> String {
    format!(
        "{r}: used already, by agent {} ({}): retire the agent to revoke its certificate (`kiroku agents retire {} --reason ...`)",
        rec.used_by,
        when(rec.used_ms),
        rec.used_by
    )
}

/// A token as named in a message: its reference when it is a token (the
/// token itself is a secret and never logged), else as given.
fn token_label(t: &str) -> String {
    if t.starts_with(TOKEN_PREFIX) {
        format!("token {}", token_ref(t))
    } else {
        t.to_owned()
    }
}

/// A short, safe-to-log reference to a token: the first 12 hex digits of
/// its SHA-256.
pub fn token_ref(token: &str) -> String {
    kiroku_common::sha256_hex(token.trim().as_bytes())[..12].to_owned()
}

pub fn when(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.round(jiff::Unit::Second).unwrap_or(t).to_string())
        .unwrap_or_else(|_| format!("{ms} ms"))
}

impl Tokens {
    pub fn open(meta: &crate::store::meta::MetaStore) -> anyhow::Result<Tokens> {
        Ok(Tokens {
            tree: meta.tree(TREE)?,
        })
    }

    /// Creates `count` tokens; returns them and the batch id.
    pub fn create(
        &self,
        group: &str,
        count: u32,
        expires_ms: i64,
        created_by: &str,
        note: &str,
        now_ms: i64,
    ) -> anyhow::Result<(Vec<String>, String)> {
        let batch = hex::encode(rand::random::<[u8; 6]>());
        let mut tokens = Vec::with_capacity(count as usize);
        let mut b = sled::Batch::default();
        for _ in 0..count {
            let token = format!("{TOKEN_PREFIX}{}", hex::encode(rand::random::<[u8; 16]>()));
            let rec = TokenRecord {
                group: group.to_owned(),
                expires_ms,
                created_ms: now_ms,
                created_by: created_by.to_owned(),
                batch: batch.clone(),
                note: note.to_owned(),
                used_by: String::new(),
                used_ms: 0,
                key_sha: String::new(),
                chain_pem: String::new(),
                not_after_ms: 0,
                revoked_ms: 0,
                revoked_by: String::new(),
                revoke_reason: String::new(),
            };
            b.insert(token_key(&token).as_bytes(), serde_json::to_vec(&rec)?);
            tokens.push(token);
        }
        self.tree.apply_batch(b)?;
        self.tree.flush()?;
        Ok((tokens, batch))
    }

    /// The token's record when it may enroll now.
    pub fn check(&self, token: &str, now_ms: i64) -> anyhow::Result<Result<TokenRecord, Refusal>> {
        let Some(v) = self.tree.get(token_key(token))? else {
            return Ok(Err(Refusal::Unknown));
        };
        let rec: TokenRecord = serde_json::from_slice(&v)?;
        Ok(match rec.refusal(now_ms) {
            Some(r) => Err(r),
            None => Ok(rec),
        })
    }

    /// The chain (and its notAfter) a used token returned, when `name`
    /// and the key (`key_sha`) are the ones it enrolled: the same
    /// enrollment asked again after its response was lost.
    pub fn repeated(
        &self,
        token: &str,
        name: &str,
        key_sha: &str,
    ) -> anyhow::Result<Option<(String, i64)>> {
        let Some(v) = self.tree.get(token_key(token))? else {
            return Ok(None);
        };
        let rec: TokenRecord = serde_json::from_slice(&v)?;
        Ok((rec.used_by == name
            && !rec.key_sha.is_empty()
            && rec.key_sha == key_sha
            && !rec.chain_pem.is_empty())
        .then_some((rec.chain_pem, rec.not_after_ms)))
    }

    /// Whether an agent id was enrolled here.
    pub fn enrolled(&self, name: &str) -> anyhow::Result<Option<Enrolled>> {
        Ok(match self.tree.get(agent_key(name))? {
            Some(v) => Some(serde_json::from_slice(&v)?),
            None => None,
        })
    }

    /// Uses up `token` for `name` and records the name as enrolled, in one
    /// transaction: refused when the token was used meanwhile, or when the
    /// name's record is no longer `seen_name` (another enrollment took it).
    ///
    /// `retired`: the name's retired marker in the `agents` tree
    /// (`agents`, key and value as read before) — a retired name taken
    /// again is made active in the same transaction (the marker removed),
    /// so the new certificate is not refused at its first connection; the
    /// commit is refused when the marker changed meanwhile.
    #[allow(clippy::too_many_arguments)]
    pub fn commit(
        &self,
        token: &str,
        name: &str,
        seen_name: Option<&Enrolled>,
        enrolled: &Enrolled,
        now_ms: i64,
        agents: &sled::Tree,
        retired: Option<(&str, &str)>,
        issued: (&str, &str, i64),
    ) -> anyhow::Result<Result<(), Refusal>> {
        use sled::Transactional;
        use sled::transaction::{ConflictableTransactionError, TransactionError};
        let (tk, ak) = (token_key(token), agent_key(name));
        let seen = seen_name.map(serde_json::to_vec).transpose()?;
        let new_agent = serde_json::to_vec(enrolled)?;
        let r = (&self.tree, agents).transaction(|(tx, atx)| {
            let abort = |r: Refusal| Err(ConflictableTransactionError::Abort(r));
            let Some(v) = tx.get(tk.as_bytes())? else {
                return abort(Refusal::Unknown);
            };
            let Ok(mut rec) = serde_json::from_slice::<TokenRecord>(&v) else {
                return abort(Refusal::Unknown);
            };
            // Used or revoked meanwhile (expiry was checked before the
            // certificate was made: a token that expired since is honoured).
            if let Some(r) = rec.refusal(i64::MIN) {
                return abort(r);
            }
            let current = tx.get(ak.as_bytes())?;
            if current.as_deref() != seen.as_deref() {
                return abort(Refusal::NameTaken(name.to_owned()));
            }
            rec.used_by = name.to_owned();
            rec.used_ms = now_ms;
            rec.key_sha = issued.0.to_owned();
            rec.chain_pem = issued.1.to_owned();
            rec.not_after_ms = issued.2;
            let Ok(v) = serde_json::to_vec(&rec) else {
                return abort(Refusal::Unknown);
            };
            if let Some((rk, was)) = retired {
                if atx.get(rk.as_bytes())?.as_deref() != Some(was.as_bytes()) {
                    return abort(Refusal::NameTaken(name.to_owned()));
                }
                atx.remove(rk.as_bytes())?;
            }
            tx.insert(tk.as_bytes(), v)?;
            tx.insert(ak.as_bytes(), new_agent.clone())?;
            Ok(())
        });
        match r {
            Ok(()) => {
                self.tree.flush()?;
                agents.flush()?;
                Ok(Ok(()))
            }
            Err(TransactionError::Abort(refusal)) => Ok(Err(refusal)),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }

    /// Undoes a [`Tokens::commit`] whose certificate was not handed out
    /// (its audit entry could not be written): the token is unused again,
    /// the name's record is `seen_name` again and its retired marker, if
    /// one was removed, is back — so the agent's retry enrolls.
    pub fn release(
        &self,
        token: &str,
        name: &str,
        seen_name: Option<&Enrolled>,
        agents: &sled::Tree,
        retired: Option<(&str, &str)>,
    ) -> anyhow::Result<()> {
        use sled::Transactional;
        use sled::transaction::ConflictableTransactionError;
        let (tk, ak) = (token_key(token), agent_key(name));
        let seen = seen_name.map(serde_json::to_vec).transpose()?;
        (&self.tree, agents)
            .transaction(|(tx, atx)| {
                // Read and written in the transaction: a revocation that
                // landed meanwhile (it marks a used token too) is kept.
                if let Some(v) = tx.get(tk.as_bytes())?
                    && let Ok(mut rec) = serde_json::from_slice::<TokenRecord>(&v)
                    && rec.used_by == name
                {
                    rec.used_by.clear();
                    rec.used_ms = 0;
                    rec.key_sha.clear();
                    rec.chain_pem.clear();
                    rec.not_after_ms = 0;
                    if let Ok(v) = serde_json::to_vec(&rec) {
                        tx.insert(tk.as_bytes(), v)?;
                    }
                }
                match &seen {
                    Some(v) => tx.insert(ak.as_bytes(), v.clone())?,
                    None => tx.remove(ak.as_bytes())?,
                };
                if let Some((rk, sha)) = retired {
                    atx.insert(rk.as_bytes(), sha.as_bytes())?;
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e| anyhow::anyhow!("undoing the enrollment of {name}: {e:?}"))?;
        self.tree.flush()?;
        agents.flush()?;
        Ok(())
    }

    /// Every token (of `batch` when given), oldest batch first.
    pub fn list(&self, batch: Option<&str>) -> anyhow::Result<Vec<Listed>> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(b"token\0") {
            let (k, v) = item?;
            let rec: TokenRecord = serde_json::from_slice(&v).map_err(|e| {
                anyhow::anyhow!(
                    "enrollment token record {} does not read: {e}",
                    String::from_utf8_lossy(&k).replace('\0', "/")
                )
            })?;
            if batch.is_some_and(|b| b != rec.batch) {
                continue;
            }
            let hash = String::from_utf8_lossy(&k["token\0".len()..]).into_owned();
            out.push(Listed {
                token_ref: hash.chars().take(12).collect(),
                rec,
            });
        }
        out.sort_by(|a, b| {
            (a.rec.created_ms, &a.rec.batch, &a.token_ref).cmp(&(
                b.rec.created_ms,
                &b.rec.batch,
                &b.token_ref,
            ))
        });
        Ok(out)
    }

    /// The keys of the tokens `which` names, with a line for each it names
    /// but that is not here.
    fn keys_of(&self, which: &Which) -> anyhow::Result<(Vec<sled::IVec>, Vec<String>)> {
        let (mut keys, mut missing) = (Vec::new(), Vec::new());
        match which {
            Which::Batch(batch) => {
                for item in self.tree.scan_prefix(b"token\0") {
                    let (k, v) = item?;
                    if serde_json::from_slice::<TokenRecord>(&v).is_ok_and(|r| r.batch == *batch) {
                        keys.push(k);
                    }
                }
                if keys.is_empty() {
                    missing.push(format!("batch {batch}: no such batch of tokens"));
                }
            }
            Which::Tokens(tokens) => {
                for t in tokens.iter() {
                    let t = t.trim();
                    let found: Vec<sled::IVec> = if t.starts_with(TOKEN_PREFIX) {
                        self.tree
                            .get(token_key(t))?
                            .map(|_| sled::IVec::from(token_key(t).as_bytes()))
                            .into_iter()
                            .collect()
                    } else if (12..=64).contains(&t.len())
                        && t.bytes().all(|b| b.is_ascii_hexdigit())
                    {
                        let prefix = format!("token\0{}", t.to_ascii_lowercase());
                        self.tree
                            .scan_prefix(prefix.as_bytes())
                            .keys()
                            .collect::<Result<_, _>>()?
                    } else {
                        missing.push(format!(
                            "{t}: neither a token ({TOKEN_PREFIX}...) nor a token reference (12 to 64 hex digits, as `kiroku certs enroll-tokens --batch` shows)"
                        ));
                        continue;
                    };
                    match found.len() {
                        0 => missing.push(format!("{}: unknown token", token_label(t))),
                        1 => keys.extend(found),
                        n => missing.push(format!(
                            "{t}: {n} tokens start with this reference: give more of it"
                        )),
                    }
                }
            }
        }
        Ok((keys, missing))
    }

    /// Revokes the unused tokens `which` names: they no longer enroll.
    /// Each is changed only if it is still what was read (a token used by
    /// an enrollment meanwhile stays used).
    pub fn revoke(
        &self,
        which: &Which,
        by: &str,
        reason: &str,
        now_ms: i64,
    ) -> anyhow::Result<Revoked> {
        let (keys, mut not_revoked) = self.keys_of(which)?;
        let mut revoked = Vec::new();
        for k in keys {
            let r = String::from_utf8_lossy(&k["token\0".len()..])
                .chars()
                .take(12)
                .collect::<String>();
            // One token's failure is told with it; the others go on (those
            // revoked before it stay revoked, and are reported so).
            match self.revoke_one(&k, &r, by, reason, now_ms) {
                Ok(Ok(())) => revoked.push(r),
                Ok(Err(why)) => not_revoked.push(why),
                Err(e) => not_revoked.push(format!("{r}: not revoked: {e:#}")),
            }
        }
        if let Err(e) = self.tree.flush() {
            tracing::warn!(error = %e, "enrollment tokens revoked, but their flush to disk failed; sled flushes them again shortly");
        }
        Ok(Revoked {
            revoked,
            not_revoked,
        })
    }

    /// Revokes the token at `k` (reference `r`) if it is unused: Ok(Ok)
    /// when revoked, Ok(Err(why not)) when it was not.
    fn revoke_one(
        &self,
        k: &sled::IVec,
        r: &str,
        by: &str,
        reason: &str,
        now_ms: i64,
    ) -> anyhow::Result<Result<(), String>> {
        loop {
            let Some(old) = self.tree.get(k)? else {
                return Ok(Err(format!("{r}: unknown token")));
            };
            let mut rec: TokenRecord = serde_json::from_slice(&old)?;
            // A used token is marked all the same (it still lists as used):
            // should its enrollment be undone (`release`, when the audit
            // entry cannot be written), it stays withdrawn.
            let not_revoked = match rec.state(now_ms) {
                State::Used if rec.revoked_ms != 0 => return Ok(Err(used(r, &rec))),
                State::Used => Some(used(r, &rec)),
                State::Revoked => {
                    return Ok(Err(format!(
                        "{r}: revoked already ({}, {})",
                        when(rec.revoked_ms),
                        rec.revoke_reason
                    )));
                }
                // An expired token is revoked too: the list then says it
                // was withdrawn, not merely left to lapse.
                State::Unused | State::Expired => None,
            };
            rec.revoked_ms = now_ms;
            rec.revoked_by = by.to_owned();
            rec.revoke_reason = reason.to_owned();
            let new = serde_json::to_vec(&rec)?;
            // Lost to a concurrent change (an enrollment): read it again.
            if self
                .tree
                .compare_and_swap(k, Some(&old), Some(new))?
                .is_ok()
            {
                return Ok(not_revoked.map_or(Ok(()), Err));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, crate::store::meta::MetaStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta = crate::store::meta::MetaStore::open(&dir.path().join("meta")).expect("meta");
        (dir, meta)
    }

    fn enrolled(serial: &str) -> Enrolled {
        Enrolled {
            at_ms: 1,
            serial: serial.into(),
            batch: "b".into(),
        }
    }

    #[test]
    fn a_token_enrolls_once_before_it_expires_and_only_its_hash_is_kept() {
        let (_d, meta) = store();
        let t = Tokens::open(&meta).expect("open");
        let agents = meta.tree("agents").expect("agents tree");
        let (tokens, batch) = t
            .create("sales", 2, 10_000, "admin/boss", "", 1_000)
            .expect("create");
        assert_eq!(tokens.len(), 2);
        assert_ne!(tokens[0], tokens[1]);
        for (k, v) in t.tree.iter().map(|r| r.expect("read")) {
            for tok in &tokens {
                assert!(!String::from_utf8_lossy(&k).contains(tok.as_str()));
                assert!(!String::from_utf8_lossy(&v).contains(tok.as_str()));
            }
        }
        let rec = t.check(&tokens[0], 2_000).expect("check").expect("valid");
        assert_eq!(
            (rec.group.as_str(), rec.batch.as_str()),
            ("sales", batch.as_str())
        );
        assert!(matches!(
            t.check("ket1-nope", 2_000).expect("check"),
            Err(Refusal::Unknown)
        ));
        assert!(matches!(
            t.check(&tokens[1], 10_000).expect("check"),
            Err(Refusal::Expired { .. })
        ));

        t.commit(
            &tokens[0],
            "pc-1",
            None,
            &enrolled("01"),
            2_000,
            &agents,
            None,
            ("k1", "chain-1", 9),
        )
        .expect("commit")
        .expect("enrolled");
        assert!(matches!(
            t.check(&tokens[0], 2_001).expect("check"),
            Err(Refusal::Used { ref by, .. }) if by == "pc-1"
        ));
        // The same name and key again (a lost response): the same chain;
        // another key or name: nothing.
        assert_eq!(
            t.repeated(&tokens[0], "pc-1", "k1").expect("read"),
            Some(("chain-1".into(), 9))
        );
        assert_eq!(t.repeated(&tokens[0], "pc-1", "kx").expect("read"), None);
        assert_eq!(t.repeated(&tokens[0], "pc-2", "k1").expect("read"), None);
        // Used again (a race lost at commit): refused there too.
        assert!(matches!(
            t.commit(
                &tokens[0],
                "pc-2",
                None,
                &enrolled("02"),
                2_002,
                &agents,
                None,
                ("k2", "c", 9)
            )
            .expect("commit"),
            Err(Refusal::Used { .. })
        ));
        // The name was taken meanwhile: refused, and the token stays unused.
        assert!(matches!(
            t.commit(
                &tokens[1],
                "pc-1",
                None,
                &enrolled("03"),
                2_003,
                &agents,
                None,
                ("k3", "c", 9)
            )
            .expect("commit"),
            Err(Refusal::NameTaken(_))
        ));
        assert!(t.check(&tokens[1], 2_004).expect("check").is_ok());
        // A name whose record is what was seen (a retired agent's) is
        // reused, and its retired marker removed in the same transaction;
        // refused when the marker changed meanwhile.
        let seen = t.enrolled("pc-1").expect("read").expect("enrolled");
        agents.insert("retired\0pc-1", "sha-b").expect("mark");
        assert!(matches!(
            t.commit(
                &tokens[1],
                "pc-1",
                Some(&seen),
                &enrolled("04"),
                2_005,
                &agents,
                Some(("retired\0pc-1", "sha-a")),
                ("k4", "c", 9)
            )
            .expect("commit"),
            Err(Refusal::NameTaken(_))
        ));
        assert!(agents.contains_key("retired\0pc-1").expect("read"));
        t.commit(
            &tokens[1],
            "pc-1",
            Some(&seen),
            &enrolled("04"),
            2_005,
            &agents,
            Some(("retired\0pc-1", "sha-b")),
            ("k4", "c", 9),
        )
        .expect("commit")
        .expect("re-enrolled");
        assert_eq!(
            t.enrolled("pc-1").expect("read").map(|e| e.serial),
            Some("04".into())
        );
        assert!(
            !agents.contains_key("retired\0pc-1").expect("read"),
            "the retired marker is gone with the token"
        );
        // Released (the audit entry could not be written): as before.
        t.release(
            &tokens[1],
            "pc-1",
            Some(&seen),
            &agents,
            Some(("retired\0pc-1", "sha-b")),
        )
        .expect("release");
        assert!(t.check(&tokens[1], 2_006).expect("check").is_ok());
        assert_eq!(
            t.enrolled("pc-1").expect("read").map(|e| e.serial),
            Some("01".into())
        );
        assert_eq!(
            agents.get("retired\0pc-1").expect("read").as_deref(),
            Some(&b"sha-b"[..])
        );
    }

    #[test]
    fn revoked_tokens_do_not_enroll_and_the_list_tells_each_state() {
        let (_d, meta) = store();
        let t = Tokens::open(&meta).expect("open");
        let agents = meta.tree("agents").expect("agents tree");
        let (a, batch_a) = t
            .create("sales", 3, 10_000, "admin/boss", "", 1_000)
            .expect("create");
        let (b, batch_b) = t
            .create("", 2, 10_000, "admin/boss", "", 1_100)
            .expect("create");
        t.commit(
            &a[0],
            "pc-1",
            None,
            &enrolled("01"),
            2_000,
            &agents,
            None,
            ("k", "c", 9),
        )
        .expect("commit")
        .expect("enrolled");

        // A batch: the used token stays used, the others are revoked.
        let done = t
            .revoke(&Which::Batch(&batch_a), "admin/boss", "laptop lost", 3_000)
            .expect("revoke");
        assert_eq!(done.revoked.len(), 2, "{done:?}");
        assert_eq!(done.not_revoked.len(), 1, "{done:?}");
        assert!(
            done.not_revoked[0].contains("used already, by agent pc-1"),
            "{done:?}"
        );
        // Marked all the same: were that enrollment undone (its audit entry
        // not written), the token would stay withdrawn.
        t.release(&a[0], "pc-1", None, &agents, None)
            .expect("release");
        assert!(matches!(
            t.check(&a[0], 3_000).expect("check"),
            Err(Refusal::Revoked { .. })
        ));
        assert!(matches!(
            t.check(&a[1], 3_001).expect("check"),
            Err(Refusal::Revoked { ref reason, .. }) if reason == "laptop lost"
        ));
        // Revoked after the check but before the commit: refused there too.
        assert!(matches!(
            t.commit(
                &a[2],
                "pc-2",
                None,
                &enrolled("02"),
                3_002,
                &agents,
                None,
                ("k", "c", 9)
            )
            .expect("commit"),
            Err(Refusal::Revoked { .. })
        ));

        // Single tokens, by token and by reference; unknown and malformed
        // ones are reported, not revoked.
        let named = vec![
            b[0].clone(),
            token_ref(&b[1]),
            "ket1-0000".to_owned(),
            "xyz".to_owned(),
            token_ref(&a[1]),
        ];
        let done = t
            .revoke(&Which::Tokens(&named), "admin/boss", "typo", 4_000)
            .expect("revoke");
        assert_eq!(done.revoked, vec![token_ref(&b[0]), token_ref(&b[1])]);
        assert_eq!(done.not_revoked.len(), 3, "{done:?}");
        assert!(done.not_revoked[0].contains("unknown token"), "{done:?}");
        assert!(
            !done.not_revoked[0].contains("ket1-0000"),
            "a token is never echoed"
        );
        assert!(done.not_revoked[1].contains("neither a token"), "{done:?}");
        assert!(done.not_revoked[2].contains("revoked already"), "{done:?}");
        assert!(
            t.revoke(&Which::Batch("nope"), "a", "r", 1)
                .expect("revoke")
                .not_revoked[0]
                .contains("no such batch")
        );

        // The list: oldest batch first, each token's state.
        let all = t.list(None).expect("list");
        assert_eq!(all.len(), 5);
        assert_eq!(all[0].rec.batch, batch_a);
        // (The used one was released above, so it lists as revoked too.)
        let states: Vec<&str> = all.iter().map(|l| l.rec.state(5_000).name()).collect();
        assert_eq!(states, ["revoked"; 5], "{states:?}");
        let only_b = t.list(Some(&batch_b)).expect("list");
        assert_eq!(only_b.len(), 2);
        assert!(only_b.iter().all(|l| l.rec.revoke_reason == "typo"));
        assert_eq!(only_b[0].token_ref.len(), 12);
        // An unused token past its expiry is listed as expired.
        let (c, batch_c) = t
            .create("", 1, 6_000, "admin/boss", "", 5_000)
            .expect("create");
        let l = t.list(Some(&batch_c)).expect("list");
        assert_eq!(l[0].rec.state(6_000), State::Expired);
        assert!(matches!(
            t.check(&c[0], 6_000).expect("check"),
            Err(Refusal::Expired { .. })
        ));
    }
}
