//! Names for remote addresses (`NetworkEvent.remote_name`, `name_source`):
//! the name a process looked up, from the DNS answers `network.inspect`
//! sees (`dns_answer`), else the reverse DNS name (`reverse`).
//!
//! Invariant: [`Names::name`] never waits. Reverse lookups run on one
//! worker thread of their own, at most `reverse_dns_per_sec` a second, fed
//! through a bounded queue (a full queue drops the request; the address is
//! asked again at a later flow); their results, found or not, are cached
//! (found: an hour; not found: ten minutes) so an address is looked up
//! about once an hour however many flows it has. A flow recorded before
//! its reverse name is known goes without it.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

/// How long a name from a DNS answer stands for its address.
const ANSWER_KEEP_MS: i64 = 3_600_000;
const REVERSE_KEEP_MS: i64 = 3_600_000;
const REVERSE_MISS_KEEP_MS: i64 = 600_000;
/// Addresses remembered at most, per source.
const MAX_ENTRIES: usize = 50_000;
/// Reverse lookups waiting at most.
const QUEUE: usize = 256;

pub const SOURCE_ANSWER: &str = "dns_answer";
pub const SOURCE_REVERSE: &str = "reverse";

struct Entry {
    name: Option<String>,
    until_ms: i64,
}

pub struct Names {
    answers: HashMap<IpAddr, Entry>,
    reverse: Option<Reverse>,
}

struct Reverse {
    cache: HashMap<IpAddr, Entry>,
    asked: HashSet<IpAddr>,
    requests: SyncSender<IpAddr>,
    results: Receiver<(IpAddr, Option<String>)>,
}

impl Names {
    /// `reverse_per_sec` = 0 or `reverse` false: DNS answers only.
    pub fn new(reverse: bool, reverse_per_sec: u32) -> std::io::Result<Names> {
        let reverse = if reverse && reverse_per_sec > 0 {
            Some(Reverse::start(reverse_per_sec)?)
        } else {
            None
        };
        Ok(Names {
            answers: HashMap::new(),
            reverse,
        })
    }

    /// DNS answers seen by inspection: (address, the name looked up).
    pub fn dns_answers(&mut self, answers: &[(IpAddr, String)], now_ms: i64) {
        for (ip, name) in answers {
            if self.answers.len() >= MAX_ENTRIES && !self.answers.contains_key(ip) {
                evict(&mut self.answers, now_ms);
            }
            self.answers.insert(
                *ip,
                Entry {
                    name: Some(name.clone()),
                    until_ms: now_ms + ANSWER_KEEP_MS,
                },
            );
        }
    }

    /// A name for `ip` and its source ("dns_answer" / "reverse"), as far
    /// as known now; queues a reverse lookup when none is.
    pub fn name(&mut self, ip: IpAddr, now_ms: i64) -> Option<(String, &'static str)> {
        if let Some(Entry {
            name: Some(n),
            until_ms,
        }) = self.answers.get(&ip)
            && *until_ms >= now_ms
        {
            return Some((n.clone(), SOURCE_ANSWER));
        }
        let r = self.reverse.as_mut()?;
        r.collect(now_ms);
        match r.cache.get(&ip) {
            Some(e) if e.until_ms >= now_ms => e.name.clone().map(|n| (n, SOURCE_REVERSE)),
            _ => {
                r.ask(ip);
                None
            }
        }
    }
}

/// Makes room: drops what expired, else an arbitrary tenth.
fn evict(map: &mut HashMap<IpAddr, Entry>, now_ms: i64) {
    map.retain(|_, e| e.until_ms >= now_ms);
    if map.len() >= MAX_ENTRIES {
        let drop: Vec<IpAddr> = map.keys().take(MAX_ENTRIES / 10).copied().collect();
        for ip in drop {
            map.remove(&ip);
        }
    }
}

impl Reverse {
    fn start(per_sec: u32) -> std::io::Result<Reverse> {
        let (requests, rx) = mpsc::sync_channel::<IpAddr>(QUEUE);
        let (tx, results) = mpsc::channel();
        std::thread::Builder::new()
            .name("kiroku-rdns".into())
            .spawn(move || {
                let mut bucket = Bucket::new(per_sec, Instant::now());
                // Ends when the `Names` is dropped (the queue closes).
                while let Ok(ip) = rx.recv() {
                    if let Some(wait) = bucket.wait(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    bucket.take(Instant::now());
                    let name = dns_lookup::lookup_addr(&ip)
                        .ok()
                        .filter(|n| *n != ip.to_string());
                    if tx.send((ip, name)).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Reverse {
            cache: HashMap::new(),
            asked: HashSet::new(),
            requests,
            results,
        })
    }

    fn collect(&mut self, now_ms: i64) {
        while let Ok((ip, name)) = self.results.try_recv() {
            self.asked.remove(&ip);
            if self.cache.len() >= MAX_ENTRIES && !self.cache.contains_key(&ip) {
                evict(&mut self.cache, now_ms);
            }
            let keep = if name.is_some() {
                REVERSE_KEEP_MS
            } else {
                REVERSE_MISS_KEEP_MS
            };
            self.cache.insert(
                ip,
                Entry {
                    name,
                    until_ms: now_ms + keep,
                },
            );
        }
    }

    fn ask(&mut self, ip: IpAddr) {
        if ip.is_unspecified() || ip.is_multicast() || self.asked.contains(&ip) {
            return;
        }
        match self.requests.try_send(ip) {
            Ok(()) => {
                self.asked.insert(ip);
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {}
        }
    }
}

/// A token bucket: `per_sec` lookups a second, bursts of `per_sec`.
struct Bucket {
    per_sec: u32,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(per_sec: u32, now: Instant) -> Bucket {
        Bucket {
            per_sec: per_sec.max(1),
            tokens: f64::from(per_sec.max(1)),
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let cap = f64::from(self.per_sec);
        let gained = now.saturating_duration_since(self.at).as_secs_f64() * cap;
        self.tokens = (self.tokens + gained).min(cap);
        self.at = now;
    }

    /// How long to wait before the next lookup (None: now).
    fn wait(&mut self, now: Instant) -> Option<Duration> {
        self.refill(now);
        (self.tokens < 1.0)
            .then(|| Duration::from_secs_f64((1.0 - self.tokens) / f64::from(self.per_sec)))
    }

    fn take(&mut self, now: Instant) {
        self.refill(now);
        self.tokens = (self.tokens - 1.0).max(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_answers_name_the_addresses_that_follow() {
        let mut n = Names::new(false, 0).expect("names");
        let ip: IpAddr = "203.0.113.80".parse().expect("ip");
        assert_eq!(n.name(ip, 0), None);
        // What the recogniser returns for the captured answer.
        let answers = crate::capture::network::p2p::wire::dns::answers(include_bytes!(
            "p2p/testdata/dns-a-deb.debian.org.bin"
        ));
        n.dns_answers(&answers, 1000);
        assert_eq!(
            n.name(ip, 2000),
            Some(("deb.debian.org".into(), SOURCE_ANSWER))
        );
        // A later answer for the same address replaces it; an hour on it
        // is forgotten.
        n.dns_answers(&[(ip, "mirror.example".into())], 3000);
        assert_eq!(n.name(ip, 4000).map(|x| x.0), Some("mirror.example".into()));
        assert_eq!(n.name(ip, 3000 + ANSWER_KEEP_MS + 1), None);
    }

    /// A real lookup through the system resolver (127.0.0.1 is in
    /// /etc/hosts): the first ask returns at once without a name, a later
    /// one has it, from the cache.
    #[test]
    fn reverse_lookup_never_waits_and_is_cached() {
        let mut n = Names::new(true, 10).expect("names");
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let t = Instant::now();
        assert_eq!(n.name(ip, 0), None);
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "name() waited {:?}",
            t.elapsed()
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let got = loop {
            if let Some(x) = n.name(ip, 1) {
                break x;
            }
            assert!(Instant::now() < deadline, "no reverse name for 127.0.0.1");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(got.1, SOURCE_REVERSE);
        assert!(!got.0.is_empty());
        // Cached: no second request goes out.
        assert!(n.reverse.as_ref().is_some_and(|r| r.asked.is_empty()));
        assert_eq!(n.name(ip, 2), Some(got));
    }

    #[test]
    fn bucket_paces_lookups() {
        let t0 = Instant::now();
        let mut b = Bucket::new(2, t0);
        for _ in 0..2 {
            assert_eq!(b.wait(t0), None);
            b.take(t0);
        }
        let w = b.wait(t0).expect("must wait");
        assert!((w.as_secs_f64() - 0.5).abs() < 1e-6, "{w:?}");
        assert_eq!(b.wait(t0 + Duration::from_millis(500)), None);
        b.take(t0 + Duration::from_millis(500));
        assert!(b.wait(t0 + Duration::from_millis(600)).is_some());
        // A long pause refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        b.take(later);
        b.take(later);
        assert!(b.wait(later).is_some());
    }
}
