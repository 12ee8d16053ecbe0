//! Enrollment tokens and enrolled names, in the meta tree `enroll`:
//! `token\0<SHA-256 of the token>` → a JSON [`TokenRecord`] (the token
//! itself is never stored: only its hash), `agent\0<agent id>` → a JSON
//! [`Enrolled`]. A token is used up, and a name taken, in one sled
//! transaction, so two enrollments racing for one token or one name
//! cannot both win. Used and expired tokens stay (a reuse is then refused
//! saying by whom it was used); `kiroku` has no listing of them yet.

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
        if !rec.used_by.is_empty() {
            return Ok(Err(Refusal::Used {
                by: rec.used_by.clone(),
                at: when(rec.used_ms),
            }));
        }
        if now_ms >= rec.expires_ms {
            return Ok(Err(Refusal::Expired {
                at: when(rec.expires_ms),
            }));
        }
        Ok(Ok(rec))
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
            if !rec.used_by.is_empty() {
                return abort(Refusal::Used {
                    by: rec.used_by.clone(),
                    at: when(rec.used_ms),
                });
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
        let rec = match self.tree.get(tk.as_bytes())? {
            Some(v) => {
                let mut rec: TokenRecord = serde_json::from_slice(&v)?;
                rec.used_by.clear();
                rec.used_ms = 0;
                rec.key_sha.clear();
                rec.chain_pem.clear();
                rec.not_after_ms = 0;
                Some(serde_json::to_vec(&rec)?)
            }
            None => None,
        };
        (&self.tree, agents)
            .transaction(|(tx, atx)| {
                if let Some(rec) = &rec {
                    tx.insert(tk.as_bytes(), rec.clone())?;
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
}
