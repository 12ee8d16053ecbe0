//! Bulk loader for the query benchmark (issue 6, part 3): writes a real
//! collector data directory (blobs, journal, index, meta) with synthetic but
//! realistic events, through the collector's own store code — the same
//! `BlobStore::put`, `Journal::append`, `EventIndex::add` / `commit`,
//! high-water marks and host records the committer uses, in its order — in
//! large batches instead of over gRPC, so that 11
//! million events load in minutes rather than hours.
//!
//! It is an example of the collector crate (not a test binary) because it
//! links the store's internals, which `tests/` must not (ARCHITECTURE.md);
//! `tests/src/bin/kiroku-bench-query.rs` runs it as a program and then
//! queries a real `kiroku-collector` over gRPC.
//!
//! The data: `--users` people, each with a PC (agent) and an address at one
//! of two internal domains; mail to colleagues (mostly the same
//! department) and to external contacts (Zipf-distributed domains and
//! people), subjects and bodies drawn Zipf-like from a vocabulary, a quarter
//! of mails with attachments whose hashes repeat (a shared pool of popular
//! files), a raw message blob per mail (one of `--big-raw-mb`); file events
//! (create, modify, delete, rename, copies to removable media naming their
//! source) in home directories; everything spread over `--days` days up to
//! `--end-ms`, in time order as agents would ship it.
//!
//! Resumable: each batch of `--batch` events is committed (blobs, index,
//! high-water marks, progress) before the next; a run with the same
//! arguments continues after the last committed batch. Generation is
//! deterministic per batch, so a resumed load writes what an uninterrupted
//! one would have. `bench-manifest.json` in the data directory says what
//! was loaded (counts, time range, sample addresses and words, the big
//! message's event id, load rate) for the query benchmark.
//!
//! usage: cargo run --release -p kiroku-collector --example bulk_load -- \
//!          --dir /work/bench-data/q-1m --mails 1000000 --files 10000000

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use kiroku_collector::store::Store;
use kiroku_proto::{
    Attachment, EmailEvent, Event, FileEvent, HostIdentity, HostInfo, Interface, Outcome,
    Recipient, event::Kind,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DAY_MS: i64 = 86_400_000;
const STREAM: &str = "s1";
/// Meta tree and key of the loader's progress (batches committed).
const PROGRESS_TREE: &str = "bulk_load";
const PROGRESS_KEY: &[u8] = b"batches_done";
const MANIFEST: &str = "bench-manifest.json";

#[derive(Parser, Clone)]
#[command(about = "Write a collector data directory with synthetic events")]
struct Args {
    /// Collector data directory to create or continue.
    #[arg(long)]
    dir: PathBuf,
    /// Mail events.
    #[arg(long, default_value_t = 10_000)]
    mails: u64,
    /// File events.
    #[arg(long, default_value_t = 100_000)]
    files: u64,
    /// People (one PC each).
    #[arg(long, default_value_t = 2_000)]
    users: u32,
    /// Days the events span, ending at --end-ms.
    #[arg(long, default_value_t = 90)]
    days: i64,
    /// End of the time range (ms since the epoch); default: the start of
    /// the current UTC day, recorded in the manifest for resumed runs.
    #[arg(long)]
    end_ms: Option<i64>,
    /// Events per commit (journal append and index commit).
    #[arg(long, default_value_t = 250_000)]
    batch: u64,
    /// Size of the one large raw message (MB) for GetRaw; 0 for none.
    #[arg(long, default_value_t = 10)]
    big_raw_mb: u64,
    /// Store a raw message blob for every mail (else only the big one).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    raw_blobs: bool,
    /// Threads writing blobs (each blob costs two fsyncs).
    #[arg(long, default_value_t = 16)]
    blob_threads: usize,
    /// Stop before a batch when the disk has less than this free (GB).
    #[arg(long, default_value_t = 2)]
    min_free_gb: u64,
    /// Seed of the generator.
    #[arg(long, default_value_t = 6)]
    seed: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.mails + args.files == 0 || args.users == 0 || args.batch == 0 || args.days <= 0 {
        bail!("--mails + --files, --users, --batch and --days must be positive");
    }
    let manifest_path = args.dir.join(MANIFEST);
    let end_ms = match (args.end_ms, read_manifest_end(&manifest_path)?) {
        (Some(e), _) => e,
        (None, Some(e)) => e,
        (None, None) => kiroku_common::now_ms() / DAY_MS * DAY_MS,
    };
    let store = Store::open(&args.dir)
        .with_context(|| format!("opening the data directory {}", args.dir.display()))?;
    // Stop (resumably) rather than fill the disk: the journal, the index
    // and the blobs of 11 million events take tens of GB.
    store.disk.set_min_free(args.min_free_gb * 1_000_000_000);
    let progress = store.meta.tree(PROGRESS_TREE)?;
    let world = World::new(&args, end_ms);
    let total = args.mails + args.files;
    let batches = total.div_ceil(args.batch);
    let done = progress
        .get(PROGRESS_KEY)
        .context("reading the loader's progress from meta")?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0);
    if done > 0 {
        eprintln!("resuming after {done} of {batches} batches");
    }
    let mut seqs: HashMap<usize, u64> = HashMap::new();
    let started = Instant::now();
    let mut loaded = 0u64;
    let mut raw_bytes = 0u64;
    let mut big_raw_event = None;
    for b in done..batches {
        let lo = b * args.batch;
        let hi = (lo + args.batch).min(total);
        let mut batch = world.batch(b, lo, hi, &store, &mut seqs)?;
        if b == 0 && args.big_raw_mb > 0 {
            let (ev, raw) = world.big_mail(args.big_raw_mb, &store, &mut seqs)?;
            big_raw_event = Some(ev.event_id.clone());
            batch.events.push(ev);
            batch.raws.push(raw);
        }
        raw_bytes += batch.raws.iter().map(|r| r.len() as u64).sum::<u64>();
        // The committer's order: blobs (durable), the journal record (the
        // copy of record, synced), the index commit, then high-water marks
        // and hosts. Blobs are written by many threads while this one
        // indexes: their cost is fsyncs (file and directory), waiting
        // rather than CPU.
        store.disk.check(0).map_err(anyhow::Error::msg)?;
        // As ingest: each event indexed with its journal leaf (the end of
        // the journal held until the append).
        let mut journal = store.journal.writer();
        let stored: Vec<_> = batch
            .events
            .iter()
            .map(kiroku_collector::store::journal::entry::reencoded)
            .collect();
        let provenance: Vec<_> = stored
            .iter()
            .enumerate()
            .map(|(i, s)| {
                kiroku_collector::store::journal::entry::provenance(
                    s,
                    Some(journal.next_leaf() + i as u64),
                )
            })
            .collect();
        std::thread::scope(|s| -> anyhow::Result<()> {
            let per = batch.raws.len().div_ceil(args.blob_threads.max(1)).max(1);
            let writers: Vec<_> = batch
                .raws
                .chunks(per)
                .map(|part| {
                    let blobs = &store.blobs;
                    s.spawn(move || -> anyhow::Result<()> {
                        for raw in part {
                            let sha = kiroku_common::sha256_hex(raw);
                            blobs.put(&sha, raw)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            store.index.add_recorded(&batch.events, &provenance)?;
            for w in writers {
                w.join()
                    .map_err(|_| anyhow::anyhow!("a blob writer thread panicked"))??;
            }
            Ok(())
        })?;
        journal.append_stored(stored)?;
        drop(journal);
        store.index.commit()?;
        for (agent, seq) in &seqs {
            store
                .meta
                .set_stored_seq(&world.users[*agent].host, STREAM, *seq)?;
        }
        // Host records, as the committer keeps them (events stored = the
        // stream's high-water mark: every agent's sequence starts at 1).
        for (agent, seq) in &seqs {
            store.meta.put_host(&HostInfo {
                agent_id: world.users[*agent].host.clone(),
                host: Some(world.host_identity(*agent)),
                last_seen_ms: end_ms,
                events_stored: *seq,
                clock_offset_known: true,
                ..Default::default()
            })?;
        }
        progress.insert(PROGRESS_KEY, &(b + 1).to_be_bytes())?;
        store.meta.flush()?;
        loaded += batch.events.len() as u64;
        let secs = started.elapsed().as_secs_f64();
        let rate = loaded as f64 / secs;
        let left = (total - hi) as f64 / rate;
        eprintln!(
            "batch {}/{batches}: {hi} of {total} events, {rate:.0} events/s, {:.0} s elapsed, ~{left:.0} s left",
            b + 1,
            secs
        );
    }
    store.meta.flush()?;
    let secs = started.elapsed().as_secs_f64();
    let mut m = read_manifest(&manifest_path)?.unwrap_or_else(|| serde_json::json!({}));
    m["mails"] = args.mails.into();
    m["files"] = args.files.into();
    m["users"] = args.users.into();
    m["from_ms"] = (end_ms - args.days * DAY_MS).into();
    m["to_ms"] = end_ms.into();
    m["seed"] = args.seed.into();
    m["indexed_docs"] = store.index.count().into();
    if let Some(id) = big_raw_event {
        m["big_raw_event_id"] = id.into();
        m["big_raw_mb"] = args.big_raw_mb.into();
    }
    m["addresses"] = world.sample_addresses().into();
    m["words"] = serde_json::json!({
        "common": world.vocab[..20].to_vec(),
        "mid": world.vocab[200..260].to_vec(),
        "rare": world.vocab[5000..5060].to_vec(),
    });
    if loaded > 0 {
        let runs = m["load_runs"].as_array().cloned().unwrap_or_default();
        let mut runs = runs;
        runs.push(serde_json::json!({
            "events": loaded,
            "seconds": secs,
            "events_per_s": loaded as f64 / secs,
            "raw_bytes": raw_bytes,
            "batch": args.batch,
        }));
        m["load_runs"] = runs.into();
    }
    let text = serde_json::to_string_pretty(&m)?;
    std::fs::write(&manifest_path, text)
        .with_context(|| format!("writing {}", manifest_path.display()))?;
    eprintln!(
        "loaded {loaded} events in {secs:.1} s ({:.0} events/s); index holds {} documents; manifest {}",
        loaded as f64 / secs.max(1e-9),
        store.index.count(),
        manifest_path.display()
    );
    Ok(())
}

fn read_manifest(path: &Path) -> anyhow::Result<Option<serde_json::Value>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(
            serde_json::from_slice(&b).with_context(|| format!("parsing {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn read_manifest_end(path: &Path) -> anyhow::Result<Option<i64>> {
    Ok(read_manifest(path)?.and_then(|m| m["to_ms"].as_i64()))
}

/// Zipf-like sampling over `n` ranks: weight 1 / (rank + 1)^s.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Zipf {
        let mut acc = 0.0;
        let cumulative = (0..n)
            .map(|k| {
                acc += 1.0 / ((k + 1) as f64).powf(s);
                acc
            })
            .collect();
        Zipf { cumulative }
    }

    fn sample(&self, rng: &mut StdRng) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let x = rng.random::<f64>() * total;
        self.cumulative
            .partition_point(|c| *c < x)
            .min(self.cumulative.len() - 1)
    }
}

struct User {
    login: String,
    address: String,
    host: String,
    uid: i64,
}

struct World {
    users: Vec<User>,
    vocab: Vec<String>,
    words: Zipf,
    externals: Vec<String>,
    external_pick: Zipf,
    /// Popular content: attachments and files that many people share.
    shared_hashes: Vec<String>,
    shared_pick: Zipf,
    args: Args,
    end_ms: i64,
}

/// One batch: events and the raw messages to store for them.
struct Batch {
    events: Vec<Event>,
    raws: Vec<Vec<u8>>,
}

const FIRST: [&str; 50] = [
    "aiko", "akira", "alice", "amir", "ana", "ben", "carla", "chen", "daisuke", "dana", "david",
    "elena", "emma", "eric", "fatima", "felix", "grace", "hana", "haruto", "ivan", "jin", "john",
    "julia", "kenji", "kim", "laura", "li", "lucas", "maria", "mei", "miguel", "nina", "noah",
    "olga", "omar", "paul", "priya", "ren", "rosa", "ryo", "sara", "sato", "sofia", "tom", "wei",
    "yui", "yuki", "zoe", "mark", "ines",
];
const LAST: [&str; 40] = [
    "tanaka",
    "suzuki",
    "takahashi",
    "watanabe",
    "ito",
    "yamamoto",
    "nakamura",
    "kobayashi",
    "kato",
    "yoshida",
    "smith",
    "johnson",
    "brown",
    "garcia",
    "miller",
    "davis",
    "martin",
    "lopez",
    "wilson",
    "anderson",
    "thomas",
    "moore",
    "jackson",
    "lee",
    "white",
    "harris",
    "clark",
    "lewis",
    "walker",
    "young",
    "king",
    "wright",
    "scott",
    "green",
    "baker",
    "adams",
    "nelson",
    "hill",
    "campbell",
    "mitchell",
];
const BUSINESS: &[&str] = &[
    "report",
    "meeting",
    "budget",
    "project",
    "update",
    "review",
    "plan",
    "schedule",
    "invoice",
    "contract",
    "proposal",
    "quarterly",
    "sales",
    "client",
    "customer",
    "order",
    "delivery",
    "design",
    "draft",
    "final",
    "approval",
    "request",
    "team",
    "status",
    "minutes",
    "agenda",
    "forecast",
    "revenue",
    "cost",
    "price",
    "quote",
    "estimate",
    "shipment",
    "release",
    "version",
    "document",
    "summary",
    "analysis",
    "data",
    "results",
    "figures",
    "presentation",
    "slides",
    "training",
    "policy",
    "security",
    "audit",
    "compliance",
    "legal",
    "hr",
    "payroll",
    "expense",
    "travel",
    "hotel",
    "flight",
    "visit",
    "call",
    "follow",
    "question",
    "answer",
    "issue",
    "problem",
    "fix",
    "support",
    "ticket",
    "server",
    "network",
    "backup",
    "license",
    "renewal",
    "partner",
    "supplier",
    "vendor",
    "purchase",
    "inventory",
    "stock",
    "market",
    "campaign",
    "launch",
    "product",
    "feature",
    "roadmap",
    "strategy",
    "target",
    "goal",
    "performance",
    "evaluation",
    "interview",
    "candidate",
    "offer",
    "office",
    "tokyo",
    "osaka",
    "london",
    "singapore",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "weekly",
    "monthly",
    "annual",
    "confidential",
    "internal",
    "urgent",
    "reminder",
    "thanks",
    "please",
    "attached",
    "see",
    "regarding",
    "new",
    "next",
    "week",
    "today",
    "tomorrow",
    "signed",
    "invoice2026",
    "specification",
    "prototype",
];
const SYLLABLES: [&str; 24] = [
    "ka", "ri", "to", "mo", "shi", "na", "ra", "te", "lo", "ven", "sa", "ku", "mi", "do", "ne",
    "ba", "zu", "po", "el", "an", "or", "is", "um", "ex",
];
const EXT_DOMAINS: [&str; 24] = [
    "gmail.com",
    "outlook.com",
    "yahoo.co.jp",
    "icloud.com",
    "proton.me",
    "docomo.ne.jp",
    "hotmail.com",
    "gmx.de",
    "mail.ru",
    "qq.com",
    "naver.com",
    "web.de",
    "partner-logistics.co.jp",
    "acme-supplies.com",
    "globex.com",
    "initech.co.jp",
    "umbrella-pharma.com",
    "hooli.io",
    "stark-industries.com",
    "wayne-enterprises.com",
    "contoso.com",
    "fabrikam.co.jp",
    "northwind.jp",
    "tailspin.co.uk",
];
const DIRS: [&str; 8] = [
    "Documents",
    "Downloads",
    "Desktop",
    "Documents/Finance",
    "Documents/HR",
    "Projects/apollo",
    "Projects/hermes",
    "Projects/zephyr",
];
const EXTS: [&str; 9] = [
    "pdf", "docx", "xlsx", "pptx", "txt", "csv", "zip", "png", "eml",
];

fn hex32(rng: &mut StdRng) -> String {
    let b: [u8; 32] = rng.random();
    hex::encode(b)
}

impl World {
    fn new(args: &Args, end_ms: i64) -> World {
        let mut rng = StdRng::seed_from_u64(args.seed);
        let users = (0..args.users as usize)
            .map(|i| {
                let first = FIRST[i % FIRST.len()];
                let last = LAST[(i / FIRST.len()) % LAST.len()];
                let generation = i / (FIRST.len() * LAST.len());
                let login = if generation == 0 {
                    format!("{first}.{last}")
                } else {
                    format!("{first}.{last}{generation}")
                };
                let domain = if i % 5 == 4 {
                    "corp-jp.example"
                } else {
                    "corp.example"
                };
                User {
                    address: format!("{login}@{domain}"),
                    host: format!("pc-{i:05}"),
                    uid: 1000 + i as i64,
                    login,
                }
            })
            .collect();
        let mut vocab: Vec<String> = BUSINESS.iter().map(|w| (*w).to_owned()).collect();
        let mut k = 0usize;
        while vocab.len() < 20_000 {
            let n = SYLLABLES.len();
            let w = format!(
                "{}{}{}",
                SYLLABLES[k % n],
                SYLLABLES[(k / n) % n],
                SYLLABLES[(k / (n * n)) % n]
            );
            vocab.push(if k >= n * n * n { format!("{w}{k}") } else { w });
            k += 1;
        }
        let externals = (0..50_000)
            .map(|i| {
                let d = EXT_DOMAINS[i % EXT_DOMAINS.len()];
                let f = FIRST[rng.random_range(0..FIRST.len())];
                format!("{f}{i}@{d}")
            })
            .collect();
        let shared_hashes = (0..5_000).map(|_| hex32(&mut rng)).collect();
        World {
            users,
            vocab,
            words: Zipf::new(20_000, 1.0),
            externals,
            external_pick: Zipf::new(50_000, 1.05),
            shared_hashes,
            shared_pick: Zipf::new(5_000, 1.0),
            args: args.clone(),
            end_ms,
        }
    }

    fn host_identity(&self, i: usize) -> HostIdentity {
        let u = &self.users[i];
        HostIdentity {
            hostname: u.host.clone(),
            fqdn: format!("{}.corp.example", u.host),
            domain: "CORP".into(),
            os: "Ubuntu 24.04.1 LTS".into(),
            kernel: "6.8.0-45-generic".into(),
            machine_id: format!("{:032x}", i as u128 * 0x9e37_79b9_7f4a_7c15),
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: format!(
                    "52:54:00:{:02x}:{:02x}:{:02x}",
                    i >> 16 & 255,
                    i >> 8 & 255,
                    i & 255
                ),
                ips: vec![format!(
                    "10.{}.{}.{}",
                    20 + i / 65_536,
                    (i / 256) % 256,
                    i % 256
                )],
            }],
            agent_version: "0.1.0".into(),
            logged_in_users: vec![u.login.clone()],
            // Empty, as from agents before the field: the benchmark's data
            // stay the same bytes across versions.
            time_zone: String::new(),
        }
    }

    fn text(&self, rng: &mut StdRng, words: usize) -> String {
        let mut s = String::new();
        for j in 0..words {
            if j > 0 {
                s.push(' ');
            }
            s.push_str(&self.vocab[self.words.sample(rng)]);
        }
        s
    }

    /// Addresses that certainly occur: users and the most frequent
    /// external contacts, for the benchmark's queries.
    fn sample_addresses(&self) -> Vec<String> {
        let step = (self.users.len() / 200).max(1);
        let mut v: Vec<String> = self
            .users
            .iter()
            .step_by(step)
            .map(|u| u.address.clone())
            .collect();
        v.extend(self.externals[..100].iter().cloned());
        v
    }

    fn next_seq(
        &self,
        store: &Store,
        seqs: &mut HashMap<usize, u64>,
        user: usize,
    ) -> anyhow::Result<u64> {
        let seq = match seqs.get(&user) {
            Some(s) => *s,
            None => store.meta.stored_seq(&self.users[user].host, STREAM)?,
        } + 1;
        seqs.insert(user, seq);
        Ok(seq)
    }

    fn envelope(
        &self,
        store: &Store,
        seqs: &mut HashMap<usize, u64>,
        user: usize,
        at: i64,
        rng: &mut StdRng,
        kind: Kind,
    ) -> anyhow::Result<Event> {
        let u = &self.users[user];
        let seq = self.next_seq(store, seqs, user)?;
        let offset = rng.random_range(-40..40);
        Ok(Event {
            event_id: format!("{}/{STREAM}/{seq}", u.host),
            agent_id: u.host.clone(),
            stream_id: STREAM.into(),
            seq,
            observed_at_ms: at + offset,
            received_at_ms: at + rng.random_range(200..1500),
            clock_offset_ms: offset,
            clock_offset_known: true,
            host: Some(self.host_identity(user)),
            user: u.login.clone(),
            custom: [("department".to_owned(), format!("dept-{}", user / 50))]
                .into_iter()
                .collect(),
            kind: Some(kind),
            ..Default::default()
        })
    }

    /// Events [lo, hi) of the whole load, batch `b` (its own seed).
    fn batch(
        &self,
        b: u64,
        lo: u64,
        hi: u64,
        store: &Store,
        seqs: &mut HashMap<usize, u64>,
    ) -> anyhow::Result<Batch> {
        let mut rng = StdRng::seed_from_u64(self.args.seed ^ (b + 1).wrapping_mul(0x9e37_79b9));
        let total = self.args.mails + self.args.files;
        let span = self.args.days * DAY_MS;
        let start = self.end_ms - span;
        let mut out = Batch {
            events: Vec::with_capacity((hi - lo) as usize),
            raws: Vec::new(),
        };
        for i in lo..hi {
            let at = start + (i as i128 * span as i128 / total as i128) as i64;
            let user = rng.random_range(0..self.users.len());
            // Exactly `mails` mails, spread evenly among the files.
            let is_mail = (i + 1) * self.args.mails / total > i * self.args.mails / total;
            if is_mail {
                let (m, raw) = self.mail(&mut rng, user, at);
                out.events
                    .push(self.envelope(store, seqs, user, at, &mut rng, Kind::Email(m))?);
                if let Some(raw) = raw {
                    out.raws.push(raw);
                }
            } else {
                let f = self.file(&mut rng, user, at);
                out.events
                    .push(self.envelope(store, seqs, user, at, &mut rng, Kind::File(f))?);
            }
        }
        Ok(out)
    }

    fn recipient(&self, rng: &mut StdRng, user: usize) -> String {
        let r: f64 = rng.random();
        if r < 0.45 {
            // Same department (50 people).
            let dept = user / 50 * 50;
            let j = (dept + rng.random_range(0..50)).min(self.users.len() - 1);
            self.users[j].address.clone()
        } else if r < 0.6 {
            self.users[rng.random_range(0..self.users.len())]
                .address
                .clone()
        } else {
            self.externals[self.external_pick.sample(rng)].clone()
        }
    }

    fn mail(&self, rng: &mut StdRng, user: usize, at: i64) -> (EmailEvent, Option<Vec<u8>>) {
        let u = &self.users[user];
        let n = 1 + (rng.random::<f64>().powi(3) * 4.0) as usize;
        let mut rcpts: Vec<String> = (0..n).map(|_| self.recipient(rng, user)).collect();
        rcpts.dedup();
        let subject = {
            let n = rng.random_range(3..9);
            let s = self.text(rng, n);
            if rng.random_bool(0.2) {
                format!("Re: {s}")
            } else {
                s
            }
        };
        let body = {
            let n = rng.random_range(20..160);
            self.text(rng, n)
        };
        let attachments: Vec<Attachment> = if rng.random_bool(0.25) {
            (0..rng.random_range(1..4))
                .map(|_| {
                    let sha = if rng.random_bool(0.3) {
                        self.shared_hashes[self.shared_pick.sample(rng)].clone()
                    } else {
                        hex32(rng)
                    };
                    let ext = EXTS[rng.random_range(0..EXTS.len())];
                    let name = {
                        let n = rng.random_range(1..4);
                        self.text(rng, n).replace(' ', "_")
                    };
                    Attachment {
                        filename: format!("{name}.{ext}"),
                        content_type: "application/octet-stream".into(),
                        size: rng.random_range(2_000..3_000_000),
                        sha256: sha,
                        inline: false,
                        ..Default::default()
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        let outcome = match rng.random_range(0..100) {
            0..=96 => Outcome::Delivered,
            97..=98 => Outcome::Rejected,
            _ => Outcome::Unknown,
        };
        let code = if outcome == Outcome::Rejected {
            550
        } else {
            250
        };
        let raw = self.args.raw_blobs.then(|| {
            let mut r = format!(
                "From: {}\r\nTo: {}\r\nSubject: {subject}\r\nDate: {at}\r\nMessage-ID: <{}@corp.example>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
                u.address,
                rcpts.join(", "),
                hex32(rng),
            );
            for line in body.as_bytes().chunks(76) {
                r.push_str(&String::from_utf8_lossy(line));
                r.push_str("\r\n");
            }
            r.into_bytes()
        });
        let message_size = raw.as_ref().map(|r| r.len() as u64).unwrap_or(0)
            + attachments.iter().map(|a| a.size * 4 / 3).sum::<u64>();
        let m = EmailEvent {
            operation: "send".into(),
            direction: "outbound".into(),
            protocol: "ESMTP".into(),
            helo: format!("{}.corp.example", u.host),
            mail_from: u.address.clone(),
            rcpt_to: rcpts
                .iter()
                .map(|a| Recipient {
                    address: a.clone(),
                    params: String::new(),
                    reply_code: code,
                    reply: format!("{code} 2.1.5 Ok"),
                })
                .collect(),
            from: vec![u.address.clone()],
            to: rcpts.clone(),
            subject,
            sent_at_ms: at,
            message_id: format!("<{at}.{user}@corp.example>"),
            body_text: body,
            attachment_count: attachments.len() as u32,
            attachments,
            message_size,
            recipient_count: rcpts.len() as u32,
            client_ip: "127.0.0.1".into(),
            application: "thunderbird".into(),
            outcome: outcome as i32,
            reply_code: code,
            upstream_reply: format!("{code} 2.0.0 Ok: queued as {:X}", at),
            upstream: "smtp.corp.example:25".into(),
            raw_sha256: raw
                .as_ref()
                .map(|r| kiroku_common::sha256_hex(r))
                .unwrap_or_default(),
            ..Default::default()
        };
        (m, raw)
    }

    fn file(&self, rng: &mut StdRng, user: usize, at: i64) -> FileEvent {
        let u = &self.users[user];
        let dir = DIRS[rng.random_range(0..DIRS.len())];
        let name = {
            let n = rng.random_range(1..4);
            self.text(rng, n).replace(' ', "_")
        };
        let ext = EXTS[rng.random_range(0..EXTS.len())];
        let path = format!("/home/{}/{dir}/{name}.{ext}", u.login);
        let sha = |rng: &mut StdRng| {
            if rng.random_bool(0.3) {
                self.shared_hashes[self.shared_pick.sample(rng)].clone()
            } else {
                hex32(rng)
            }
        };
        let mut f = FileEvent {
            size: rng.random_range(100..20_000_000),
            mtime_ms: at,
            volume: "/".into(),
            device: "/dev/nvme0n1p2".into(),
            uid: u.uid,
            mechanism: "fanotify".into(),
            process: "soffice.bin".into(),
            coalesced: rng.random_range(1..4),
            ..Default::default()
        };
        match rng.random_range(0..1000) {
            0..=249 => {
                f.operation = "create".into();
                f.sha256 = sha(rng);
                f.path = path;
            }
            250..=699 => {
                f.operation = "modify".into();
                f.sha256 = sha(rng);
                f.path = path;
            }
            700..=799 => {
                f.operation = "delete".into();
                f.path = path;
            }
            800..=984 => {
                f.operation = "rename".into();
                let n = rng.random_range(1..3);
                f.old_path = path;
                f.path = format!(
                    "/home/{}/{dir}/{}.{ext}",
                    u.login,
                    self.text(rng, n).replace(' ', "_")
                );
            }
            _ => {
                let label = format!("USB-{:04X}", rng.random_range(0..4096));
                f.operation = "copy_to_removable".into();
                f.volume = format!("/media/{}/{label}", u.login);
                f.volume_label = label;
                f.device = "/dev/sdb1".into();
                f.removable = true;
                f.sha256 = sha(rng);
                f.path = format!("{}/{name}.{ext}", f.volume);
                f.source_path = path;
            }
        }
        f
    }

    /// One mail with a raw message of `mb` MB (a base64 attachment).
    fn big_mail(
        &self,
        mb: u64,
        store: &Store,
        seqs: &mut HashMap<usize, u64>,
    ) -> anyhow::Result<(Event, Vec<u8>)> {
        use base64::Engine as _;
        let mut rng = StdRng::seed_from_u64(self.args.seed ^ 0xb16);
        let user = 0;
        let u = &self.users[user];
        let at = self.end_ms - self.args.days * DAY_MS + 1;
        let target = (mb * 1_000_000) as usize;
        let mut content = vec![0u8; target * 3 / 4];
        rng.fill(&mut content[..]);
        let att_sha = kiroku_common::sha256_hex(&content);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&content);
        let mut raw = format!(
            "From: {}\r\nTo: archive@partner-logistics.co.jp\r\nSubject: bigraw archive\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"archive.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n",
            u.address
        )
        .into_bytes();
        for line in b64.as_bytes().chunks(76) {
            raw.extend_from_slice(line);
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(b"--b--\r\n");
        let m = EmailEvent {
            operation: "send".into(),
            direction: "outbound".into(),
            protocol: "ESMTP".into(),
            mail_from: u.address.clone(),
            rcpt_to: vec![Recipient {
                address: "archive@partner-logistics.co.jp".into(),
                reply_code: 250,
                ..Default::default()
            }],
            to: vec!["archive@partner-logistics.co.jp".into()],
            subject: "bigraw archive".into(),
            body_text: "see attached".into(),
            attachment_count: 1,
            attachments: vec![Attachment {
                filename: "archive.bin".into(),
                content_type: "application/octet-stream".into(),
                size: content.len() as u64,
                sha256: att_sha,
                inline: false,
                ..Default::default()
            }],
            message_size: raw.len() as u64,
            recipient_count: 1,
            outcome: Outcome::Delivered as i32,
            reply_code: 250,
            raw_sha256: kiroku_common::sha256_hex(&raw),
            ..Default::default()
        };
        let ev = self.envelope(store, seqs, user, at, &mut rng, Kind::Email(m))?;
        Ok((ev, raw))
    }
}
