//! The checkpoint writer: every `[checkpoint] interval` (default 10 min),
//! and once more at a clean shutdown, when the journal has new leaves, the
//! collector writes checkpoint `n`:
//!
//! 1. the head of every agent stream (`MetaStore::stream_heads`) and of the
//!    audit log, read first, so every head's event is already in the
//!    journal read next;
//! 2. the RFC 6962 tree head over the journal leaves since checkpoint
//!    `n - 1` (`build.rs`: consecutive leaves up to the durable end taken
//!    now; a hole in the numbering ends the range before it);
//! 3. the encoded `Checkpoint`, signed with the signer key
//!    (`signing.rs`; without one the checkpoint says it is unsigned and
//!    the log says so loudly), time-stamped by the configured TSA
//!    (`tsa.rs`; a TSA that fails costs only the stamp, logged);
//! 4. `checkpoints/<20-digit n>.ckp` written durably, then a
//!    CheckpointMark appended to the journal (it orders checkpoints in the
//!    chain and is covered by checkpoint `n + 1`), then the record of the
//!    covered range in the metadata (`ledger.rs`) — a checkpoint exists
//!    once that record does; start-up finishes or sets aside one that a
//!    crash cut short;
//! 5. published to the Ship streams, which send it to their agents once in
//!    `Ack.checkpoint`, so a copy of every head exists outside the
//!    collector.
//!
//! An idle collector writes no checkpoint: the only leaf since the last
//! one being that checkpoint's own mark does not count as new.

pub mod build;
pub mod ledger;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use kiroku_proto::journal_entry::Entry;
use kiroku_proto::{Checkpoint, CheckpointMark, SignedCheckpoint};
use prost::Message;
use serde::{Deserialize, Serialize};

use self::build::Unfinished;
use self::ledger::{Ledger, Record};
use super::signing::Signer;
use super::tsa::TsaClient;
use crate::store::Store;
use crate::store::journal::Position;

/// `[checkpoint]` in the collector's configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// How often a checkpoint is written when there is something new:
    /// `10m`, `1h`, `90s` (seconds are allowed; tests use `2s`).
    #[serde(default = "default_interval")]
    pub interval: String,
    /// The signer certificate (PEM, `kiroku certs issue --role signer
    /// --name <collector>`). Rotation: point this at a new certificate and
    /// restart; older checkpoints keep verifying with their own.
    #[serde(default)]
    pub signing_cert: Option<PathBuf>,
    /// Its key (PKCS#8 PEM, ECDSA P-256). Refused when group or others may
    /// read it. Without `signing_cert` and `signing_key` checkpoints are
    /// written unsigned, and the collector says so at start and at every
    /// checkpoint.
    #[serde(default)]
    pub signing_key: Option<PathBuf>,
    /// An RFC 3161 Time-Stamp Authority (HTTP POST URL) that stamps every
    /// checkpoint. Optional; needs `tsa_ca_cert`.
    #[serde(default)]
    pub tsa_url: Option<String>,
    /// The CA certificate (PEM) of that TSA: a token is checked against it
    /// before it is kept.
    #[serde(default)]
    pub tsa_ca_cert: Option<PathBuf>,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            interval: default_interval(),
            signing_cert: None,
            signing_key: None,
            tsa_url: None,
            tsa_ca_cert: None,
        }
    }
}

fn default_interval() -> String {
    "10m".into()
}

impl CheckpointConfig {
    /// `interval` as a duration (one second at least).
    pub fn interval(&self) -> Result<Duration, String> {
        let d: jiff::SignedDuration = self.interval.trim().parse().map_err(|e| {
            format!(
                "{:?} is not a duration ({e}); write e.g. \"10m\", \"1h\" or \"30s\"",
                self.interval
            )
        })?;
        let d = Duration::try_from(d).map_err(|_| "must be positive".to_owned())?;
        if d < Duration::from_secs(1) {
            return Err(format!("{:?} is shorter than one second", self.interval));
        }
        Ok(d)
    }

    /// Paths relative to the config file's directory, and the checks that
    /// need no file: the interval, and which keys go together.
    pub fn resolve(&mut self, config: &Path) -> Result<(), String> {
        let rel = |p: &mut Option<PathBuf>| {
            if let Some(x) = p {
                *x = kiroku_common::config::resolve_relative(config, x);
            }
        };
        rel(&mut self.signing_cert);
        rel(&mut self.signing_key);
        rel(&mut self.tsa_ca_cert);
        self.interval().map_err(|m| format!("`interval`: {m}"))?;
        if self.signing_cert.is_some() != self.signing_key.is_some() {
            return Err("`signing_cert` and `signing_key` go together: set both or neither".into());
        }
        if self.tsa_url.is_some() && self.tsa_ca_cert.is_none() {
            return Err(
                "`tsa_url` needs `tsa_ca_cert` (the TSA's CA certificate, to check its tokens)"
                    .into(),
            );
        }
        Ok(())
    }
}

/// The newest checkpoint's number and encoded SignedCheckpoint.
type Latest = Option<(u64, Arc<Vec<u8>>)>;

/// The newest checkpoint, for the Ship streams (`Ack.checkpoint`).
#[derive(Clone, Default)]
pub struct CheckpointFeed {
    latest: Arc<RwLock<Latest>>,
}

impl CheckpointFeed {
    fn publish(&self, number: u64, signed: &SignedCheckpoint) {
        let bytes = Arc::new(signed.encode_to_vec());
        *self.latest.write().unwrap_or_else(|p| p.into_inner()) = Some((number, bytes));
    }

    /// The newest encoded SignedCheckpoint when it is newer than `*sent`
    /// (then `*sent` becomes its number), else nothing: each Ship stream
    /// sends each checkpoint once.
    pub fn newer(&self, sent: &mut u64) -> Vec<u8> {
        let latest = self.latest.read().unwrap_or_else(|p| p.into_inner());
        match latest.as_ref() {
            Some((n, bytes)) if *n > *sent => {
                *sent = *n;
                bytes.as_ref().clone()
            }
            _ => Vec::new(),
        }
    }

    /// The newest checkpoint's number (0: none yet).
    pub fn number(&self) -> u64 {
        self.latest
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or(0, |(n, _)| *n)
    }
}

/// Where the next checkpoint starts.
#[derive(Clone, Copy, Debug)]
struct Next {
    number: u64,
    start: Position,
    first_leaf: u64,
    prev_sha256: [u8; 32],
    /// The leaf of the previous checkpoint's own mark.
    mark_leaf: Option<u64>,
}

impl Next {
    fn after(last: Option<&Record>) -> Next {
        match last {
            Some(r) => Next {
                number: r.number + 1,
                start: r.end,
                first_leaf: r.next_leaf(),
                prev_sha256: r.sha256,
                mark_leaf: Some(r.mark_leaf),
            },
            None => Next {
                number: 1,
                start: Position::default(),
                first_leaf: 0,
                prev_sha256: [0; 32],
                mark_leaf: None,
            },
        }
    }

    /// Whether leaves other than the previous checkpoint's own mark were
    /// appended since it.
    fn has_new(&self, next_leaf: u64) -> bool {
        let fresh = next_leaf.saturating_sub(self.first_leaf);
        match self.mark_leaf {
            Some(m) if m == self.first_leaf => fresh > 1,
            _ => fresh > 0,
        }
    }
}

/// The running writer (see [`CheckpointWriter::shutdown`]).
pub struct CheckpointWriter {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    /// The key checkpoints are signed with (case bundles use it too).
    signer: Option<Arc<Signer>>,
}

/// What one checkpoint is made with.
struct Writer {
    store: Arc<Store>,
    ledger: Ledger,
    signer: Option<Arc<Signer>>,
    tsa: Option<TsaClient>,
    collector: String,
    feed: CheckpointFeed,
    /// Each new checkpoint is announced on the alert webhook.
    alerting: Option<Arc<crate::alerts::Alerting>>,
}

impl CheckpointWriter {
    /// Loads the signing key (refusing a readable key or a certificate the
    /// CA did not issue), finishes a checkpoint a crash cut short, and
    /// starts the writer. `ca_pem`: the CA the collector trusts.
    pub async fn start(
        store: Arc<Store>,
        cfg: &CheckpointConfig,
        collector: &str,
        ca_pem: &[u8],
        alerting: Arc<crate::alerts::Alerting>,
    ) -> anyhow::Result<(CheckpointWriter, CheckpointFeed)> {
        let interval = cfg
            .interval()
            .map_err(|m| anyhow::anyhow!("[checkpoint] interval: {m}"))?;
        let signer = load_signer(cfg, ca_pem)?;
        let tsa = match (&cfg.tsa_url, &cfg.tsa_ca_cert) {
            (Some(url), Some(ca)) => {
                let pem = std::fs::read(ca)
                    .with_context(|| format!("[checkpoint] tsa_ca_cert {}", ca.display()))?;
                Some(TsaClient::new(url, pem)?)
            }
            _ => None,
        };
        let ledger = Ledger::open(&store.dir, &store.meta)?;
        let w = Arc::new(Writer {
            store,
            ledger,
            signer: signer.map(Arc::new),
            tsa,
            collector: collector.to_owned(),
            feed: CheckpointFeed::default(),
            alerting: Some(alerting),
        });
        let next = {
            let w = w.clone();
            tokio::task::spawn_blocking(move || w.open()).await??
        };
        let feed = w.feed.clone();
        let signer = w.signer.clone();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(w.run(interval, next, stopped));
        Ok((CheckpointWriter { stop, task, signer }, feed))
    }

    /// The signing key (None: checkpoints are unsigned), for case bundles
    /// (`QueryService::with_signer`).
    pub fn signer(&self) -> Option<Arc<Signer>> {
        self.signer.clone()
    }

    /// Writes a last checkpoint if there is anything new, and stops. Call
    /// once ingest has stopped appending.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

fn load_signer(cfg: &CheckpointConfig, ca_pem: &[u8]) -> anyhow::Result<Option<Signer>> {
    let (Some(cert), Some(key)) = (&cfg.signing_cert, &cfg.signing_key) else {
        tracing::warn!(
            "CHECKPOINTS ARE UNSIGNED: no [checkpoint] signing_cert/signing_key is configured, so checkpoints prove nothing against someone who can write the data directory; issue a key with `kiroku certs issue --role signer --name <collector>` and configure it"
        );
        return Ok(None);
    };
    let signer = Signer::load(cert, key).context("[checkpoint] signing key")?;
    signer.check_issued_by(ca_pem).map_err(|e| {
        anyhow::anyhow!(
            "[checkpoint] signing_cert {}: {e}; issue it from the collector's CA with `kiroku certs issue --role signer`",
            cert.display()
        )
    })?;
    tracing::info!(signer = %signer.identity(), cert = %cert.display(), "checkpoints are signed");
    Ok(Some(signer))
}

impl Writer {
    /// The state at start: a checkpoint a crash cut short is finished or
    /// set aside, and the newest one is published.
    fn open(&self) -> anyhow::Result<Next> {
        let last = self.ledger.last()?;
        let until = self.store.journal.head().end;
        for u in build::recover(&self.ledger, self.store.journal.dir(), last.as_ref(), until)? {
            match u {
                Unfinished::Completed(r) => {
                    tracing::warn!(
                        number = r.number,
                        "checkpoint finished at start (the collector stopped while writing it)"
                    );
                }
                Unfinished::SetAside(p) => {
                    tracing::warn!(file = %p.display(), "a checkpoint file without its journal mark was set aside (the collector stopped while writing it); it is written again");
                }
            }
        }
        self.store.meta.flush()?;
        let last = self.ledger.last()?;
        if let Some(r) = &last {
            match self.ledger.read(r.number) {
                Ok(s) => self.feed.publish(r.number, &s),
                Err(e) => tracing::error!(error = %e, "the newest checkpoint's file does not read"),
            }
        }
        Ok(Next::after(last.as_ref()))
    }

    async fn run(
        self: Arc<Self>,
        interval: Duration,
        mut next: Next,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let last = tokio::select! {
                _ = tick.tick() => false,
                _ = stop.wait_for(|s| *s) => true,
            };
            match self.clone().write_one(next).await {
                Ok((n, _)) => next = n,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), number = next.number, "writing a checkpoint failed; trying again at the next interval")
                }
            }
            if last {
                break;
            }
        }
    }

    /// Writes the next checkpoint if there is something new; returns where
    /// the one after starts and whether one was written.
    async fn write_one(self: Arc<Self>, next: Next) -> anyhow::Result<(Next, bool)> {
        // An earlier attempt that failed after writing the file (a full
        // disk at the journal mark, say) is finished or set aside first,
        // as at start.
        let next = if self.ledger.path(next.number).exists() {
            let w = self.clone();
            tokio::task::spawn_blocking(move || w.open()).await??
        } else {
            next
        };
        let w = self.clone();
        let Some((cp, range)) = tokio::task::spawn_blocking(move || w.build(next)).await?? else {
            return Ok((next, false));
        };
        let bytes = cp.encode_to_vec();
        let mut signed = SignedCheckpoint {
            checkpoint: bytes.clone(),
            ..Default::default()
        };
        match &self.signer {
            Some(s) => {
                signed.signature = s.sign(&bytes)?;
                signed.signer_cert_der = s.cert_der().to_vec();
            }
            None => {
                signed.unsigned_reason =
                    "the collector has no signing key ([checkpoint] signing_cert/signing_key)"
                        .into();
            }
        }
        if let Some(tsa) = &self.tsa {
            match tsa.stamp(&bytes).await {
                Ok((token, ts)) => {
                    tracing::debug!(number = cp.number, tsa = %ts.tsa, "checkpoint time-stamped");
                    signed.timestamp_token = token;
                }
                Err(e) => {
                    tracing::warn!(number = cp.number, error = %e, "checkpoint written without a time stamp")
                }
            }
        }
        let w = self.clone();
        let cp2 = cp.clone();
        let stamped = !signed.timestamp_token.is_empty();
        let record =
            tokio::task::spawn_blocking(move || w.store_one(&cp2, &signed, &range)).await??;
        self.announce(&cp, &record, stamped);
        if self.signer.is_some() {
            tracing::info!(
                number = cp.number, first_leaf = cp.first_leaf, leaves = cp.leaves,
                root = %hex::encode(&cp.merkle_root), streams = cp.streams.len(),
                "checkpoint written"
            );
        } else {
            tracing::warn!(
                number = cp.number, first_leaf = cp.first_leaf, leaves = cp.leaves,
                root = %hex::encode(&cp.merkle_root),
                "UNSIGNED checkpoint written (no [checkpoint] signing key): it proves nothing against someone who can write the data directory"
            );
        }
        Ok((Next::after(Some(&record)), true))
    }

    /// The new checkpoint on the alert webhook (rule and kind
    /// `checkpoint`), so its head is kept outside the collector.
    fn announce(&self, cp: &Checkpoint, record: &Record, stamped: bool) {
        let Some(alerting) = &self.alerting else {
            return;
        };
        let signer = self.signer.as_ref().map_or("UNSIGNED".to_owned(), |s| {
            format!("signed by {}", s.identity())
        });
        let summary = format!(
            "checkpoint {} of {}: leaves {}..{}, root {}, checkpoint sha256 {}, {signer}{}",
            cp.number,
            cp.collector,
            cp.first_leaf,
            cp.first_leaf.saturating_add(cp.leaves),
            hex::encode(&cp.merkle_root),
            hex::encode(record.sha256),
            if stamped { ", time-stamped" } else { "" }
        );
        alerting.announce(&kiroku_proto::Alert {
            rule: "checkpoint".into(),
            kind: "checkpoint".into(),
            event_id: String::new(),
            fired_at_ms: cp.at_ms,
            summary,
            event: None,
            ..Default::default()
        });
    }

    /// The checkpoint over what is new since `next`, if anything is.
    fn build(&self, next: Next) -> anyhow::Result<Option<(Checkpoint, build::Range)>> {
        // Heads first: each names an event the journal holds by the time
        // its end is read below.
        let streams = self.store.meta.stream_heads()?;
        let (audit_seq, audit_head) = self.store.audit.head();
        let head = self.store.journal.head();
        if !next.has_new(head.next_leaf) {
            return Ok(None);
        }
        // The start is the previous checkpoint's end as the ledger has it
        // now (a purge may have moved it since `next` was made); held
        // until the range is read.
        let layout = self.store.layout_read();
        let start = match next.number.checked_sub(1).filter(|n| *n > 0) {
            Some(prev) => self.ledger.get(prev)?.map_or(next.start, |r| r.end),
            None => next.start,
        };
        let mut range =
            build::read_range(self.store.journal.dir(), start, head.end, next.first_leaf)?;
        range.layout_generation = self.store.layout_generation();
        drop(layout);
        if let Some((from, to)) = range.missing_before {
            tracing::error!(
                from,
                to,
                "journal leaves are missing (damaged or removed) before this checkpoint; no checkpoint covers them (`kiroku verify` names them)"
            );
        }
        if let Some(at) = range.stopped_at_gap {
            tracing::error!(
                next = at,
                "the journal's leaf numbers have a hole; this checkpoint ends before it and the next begins after it (`kiroku verify` names it)"
            );
        }
        if range.leaves == 0 {
            return Ok(None);
        }
        let cp = Checkpoint {
            number: next.number,
            prev_sha256: next.prev_sha256.to_vec(),
            collector: self.collector.clone(),
            at_ms: kiroku_common::now_ms(),
            first_leaf: range.first_leaf,
            leaves: range.leaves,
            merkle_root: range.root.to_vec(),
            journal_head: range.last_hash.to_vec(),
            streams,
            audit_seq,
            audit_head,
        };
        Ok(Some((cp, range)))
    }

    /// File, journal mark, record — in that order (see the module
    /// documentation) — then published.
    fn store_one(
        &self,
        cp: &Checkpoint,
        signed: &SignedCheckpoint,
        range: &build::Range,
    ) -> anyhow::Result<Record> {
        self.ledger.write(cp.number, signed)?;
        // The range's positions, found again if a purge moved them since
        // it was read (the time stamp is awaited in between). Held until
        // the record is written.
        let layout = self.store.layout_read();
        let mut range = range.clone();
        if self.store.layout_generation() != range.layout_generation {
            if let Some(prev) = cp.number.checked_sub(1).filter(|n| *n > 0)
                && let Some(r) = self.ledger.get(prev)?
            {
                range.start = r.end;
            }
            let last = range.first_leaf + range.leaves - 1;
            let head = self.store.journal.head().end;
            range.end = build::end_after_leaf(self.store.journal.dir(), range.start, head, last)?
                .ok_or_else(|| {
                anyhow::anyhow!(
                    "checkpoint {}: leaf {last} is not in the journal any more",
                    cp.number
                )
            })?;
        }
        let sha256 = crate::store::journal::entry::sha256(&signed.checkpoint);
        let mark = Entry::Checkpoint(CheckpointMark {
            number: cp.number,
            checkpoint_sha256: sha256.to_vec(),
        });
        let leaves = self.store.journal.append_entries(vec![mark])?;
        let record = Record {
            number: cp.number,
            first_leaf: range.first_leaf,
            leaves: range.leaves,
            start: range.start,
            end: range.end,
            sha256,
            mark_leaf: leaves.first().copied().unwrap_or_default(),
        };
        self.ledger.put(&record)?;
        self.store.meta.flush()?;
        drop(layout);
        self.feed.publish(cp.number, signed);
        Ok(record)
    }
}

#[cfg(test)]
mod tests;
