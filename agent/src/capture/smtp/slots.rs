//! Connection slots (`smtp.max_connections`) and who gives one up when
//! they run out.
//!
//! Refusing new clients while every slot is held is how a few thousand
//! idle connections used to lock the company's mail out: the attacker only
//! had to connect and say nothing. So a full house does not refuse; it
//! takes the slot of a connection that does nothing and gives it to the
//! newcomer. Each session says what it is doing (see [`Activity`]); when a
//! client arrives and no slot is free, the victim is chosen by
//! [`victim`], in this order:
//!
//! 1. the connection that has waited longest for a command **with no
//!    transaction open** (before MAIL, or between transactions): cutting it
//!    loses nothing, the client gets `421` and may reconnect;
//! 2. otherwise, the connection that has made no progress for the longest
//!    time, among those **stalled** in a transaction: waiting for the next
//!    command of a transaction for [`STALLED_AFTER`] or more, or in DATA
//!    with no byte for [`STALLED_AFTER`], or slower than
//!    `smtp.data_min_rate_bytes_per_sec` on average after
//!    [`STALLED_AFTER`] (it would be cut by the rate limit anyway). Its
//!    transaction is recorded as abandoned and nothing goes upstream.
//!
//! A connection on which the relay itself is working (talking to the
//! upstream, writing the buffer, a TLS handshake's reply) is never
//! chosen, nor is one that is receiving data at a reasonable rate: only
//! when every slot is busy like that does a newcomer get `421`.
//!
//! Why this keeps the normal cases working: a host MTA or a mail client
//! sends its next command within milliseconds of the previous reply, so
//! it is almost never the longest-idle connection; an attacker's idle
//! connections always are. Loopback is not privileged: the host's MTA
//! connects from 127.0.0.1, but so can any local process, so ranking is by
//! behaviour alone. An attacker who reconnects as fast as it is evicted
//! only churns its own connections; a transaction in progress is never cut
//! for it unless it stalls.
//!
//! While a victim closes (it is told at once and sends its `421`), the
//! newcomer already holds a slot, so the count may pass `max_connections`
//! for a moment; it never passes twice that.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// No progress for this long while slots are short marks a connection in
/// a transaction as stalled (see the module doc). A real client answers
/// within milliseconds; ten seconds leaves room for a slow network.
pub const STALLED_AFTER: Duration = Duration::from_secs(10);

/// What a session is doing, as far as eviction is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// The relay is working (upstream, buffer, a reply): never evicted.
    Busy = 0,
    /// Waiting for a command, no transaction open.
    Idle = 1,
    /// Waiting for a command inside a transaction (after MAIL).
    InTransaction = 2,
    /// Reading message data.
    Data = 3,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            1 => Phase::Idle,
            2 => Phase::InTransaction,
            3 => Phase::Data,
            _ => Phase::Busy,
        }
    }
}

/// A session's published state, read by [`Slots::admit`] of other
/// connections.
#[derive(Debug)]
pub struct Activity {
    phase: AtomicU8,
    /// When the phase began (ms since the slots' epoch).
    since_ms: AtomicU64,
    /// Last progress in DATA (ms since the epoch).
    progress_ms: AtomicU64,
    /// Message bytes received in DATA so far.
    data_bytes: AtomicU64,
    evicted: AtomicBool,
    notify: Notify,
}

/// What [`victim`] looks at for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub phase: Phase,
    /// Time in the phase.
    pub in_phase: Duration,
    /// Time since the last progress in DATA (= `in_phase` otherwise).
    pub no_progress: Duration,
    pub data_bytes: u64,
}

/// Picks the connection to evict (see the module doc), or none.
/// `min_rate` is `smtp.data_min_rate_bytes_per_sec` (0: off).
pub fn victim<K: Copy>(conns: impl Iterator<Item = (K, Snapshot)>, min_rate: u64) -> Option<K> {
    let mut idle: Option<(K, Duration)> = None;
    let mut stalled: Option<(K, Duration)> = None;
    for (k, s) in conns {
        let (slot, key) = match s.phase {
            Phase::Busy => continue,
            Phase::Idle => (&mut idle, s.in_phase),
            Phase::InTransaction if s.in_phase >= STALLED_AFTER => (&mut stalled, s.in_phase),
            Phase::InTransaction => continue,
            Phase::Data => {
                let slow = min_rate > 0
                    && s.in_phase >= STALLED_AFTER
                    && (s.data_bytes as f64) < min_rate as f64 * s.in_phase.as_secs_f64();
                if s.no_progress >= STALLED_AFTER || slow {
                    (&mut stalled, s.no_progress)
                } else {
                    continue;
                }
            }
        };
        if slot.is_none_or(|(_, best)| key > best) {
            *slot = Some((k, key));
        }
    }
    idle.or(stalled).map(|(k, _)| k)
}

/// The slots of one SMTP listener set.
#[derive(Debug)]
pub struct Slots {
    max: usize,
    min_rate: u64,
    epoch: Instant,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    live: HashMap<u64, Arc<Activity>>,
    /// Connections told to go that have not gone yet.
    evicting: usize,
}

/// A held slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    id: u64,
    slots: Arc<Slots>,
    activity: Arc<Activity>,
}

/// What [`Slots::admit`] decided for a new connection.
#[derive(Debug)]
pub enum Admission {
    /// A free slot.
    Free(Slot),
    /// A slot taken from a connection that did nothing (it is being told
    /// to go).
    Evicted(Slot),
    /// Every slot is doing real work: the newcomer gets `421`.
    Full,
}

impl Slots {
    pub fn new(max: usize, min_rate: u64) -> Arc<Slots> {
        Arc::new(Slots {
            max: max.max(1),
            min_rate,
            epoch: Instant::now(),
            inner: Mutex::new(Inner::default()),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A slot for a new connection: a free one, else one taken from the
    /// connection [`victim`] picks, else none.
    pub fn admit(self: &Arc<Self>) -> Admission {
        let now = self.now_ms();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let held = inner.live.len() - inner.evicting;
        let evicted = if held < self.max {
            false
        } else if inner.live.len() >= self.max * 2 {
            return Admission::Full;
        } else {
            let ms = |v: u64| Duration::from_millis(now.saturating_sub(v));
            let conns = inner
                .live
                .iter()
                .filter(|(_, a)| !a.evicted.load(Ordering::Relaxed))
                .map(|(id, a)| {
                    let snap = Snapshot {
                        phase: Phase::from_u8(a.phase.load(Ordering::Relaxed)),
                        in_phase: ms(a.since_ms.load(Ordering::Relaxed)),
                        no_progress: ms(a.progress_ms.load(Ordering::Relaxed)),
                        data_bytes: a.data_bytes.load(Ordering::Relaxed),
                    };
                    (*id, snap)
                });
            let Some(id) = victim(conns, self.min_rate) else {
                return Admission::Full;
            };
            if let Some(a) = inner.live.get(&id) {
                a.evicted.store(true, Ordering::Relaxed);
                a.notify.notify_one();
            }
            inner.evicting += 1;
            true
        };
        let activity = Arc::new(Activity {
            phase: AtomicU8::new(Phase::Busy as u8),
            since_ms: AtomicU64::new(now),
            progress_ms: AtomicU64::new(now),
            data_bytes: AtomicU64::new(0),
            evicted: AtomicBool::new(false),
            notify: Notify::new(),
        });
        let id = inner.next;
        inner.next += 1;
        inner.live.insert(id, activity.clone());
        let slot = Slot {
            id,
            slots: self.clone(),
            activity,
        };
        if evicted {
            Admission::Evicted(slot)
        } else {
            Admission::Free(slot)
        }
    }
}

impl Slot {
    /// Publishes what the session is doing now.
    pub fn set(&self, phase: Phase) {
        let now = self.slots.now_ms();
        let a = &self.activity;
        if phase == Phase::Data {
            a.data_bytes.store(0, Ordering::Relaxed);
            a.progress_ms.store(now, Ordering::Relaxed);
        }
        a.since_ms.store(now, Ordering::Relaxed);
        a.phase.store(phase as u8, Ordering::Relaxed);
    }

    /// Message data received so far (DATA).
    pub fn data_progress(&self, bytes: u64) {
        let a = &self.activity;
        a.data_bytes.store(bytes, Ordering::Relaxed);
        a.progress_ms.store(self.slots.now_ms(), Ordering::Relaxed);
    }

    /// Resolves once this connection has been chosen to make room for a
    /// newcomer (at once if it already was).
    pub async fn evicted(&self) {
        if self.activity.evicted.load(Ordering::Relaxed) {
            return;
        }
        self.activity.notify.notified().await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self.slots.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.live.remove(&self.id).is_some() && self.activity.evicted.load(Ordering::Relaxed) {
            inner.evicting = inner.evicting.saturating_sub(1);
        }
    }
}

/// Counts evictions and refusals so that a flood of connections makes one
/// log line a minute, not one per connection.
#[derive(Debug, Default)]
pub struct PressureLog {
    evicted: u64,
    refused: u64,
    last: Option<Instant>,
}

impl PressureLog {
    /// How often the counts are reported while slots are short.
    const EVERY: Duration = Duration::from_secs(60);

    /// Counts `admission`; returns the counts (evicted, refused) since the
    /// last report when one is due (the first at once).
    pub fn note(&mut self, admission: &Admission) -> Option<(u64, u64)> {
        match admission {
            Admission::Free(_) => return None,
            Admission::Evicted(_) => self.evicted += 1,
            Admission::Full => self.refused += 1,
        }
        if self.last.is_some_and(|t| t.elapsed() < Self::EVERY) {
            return None;
        }
        self.last = Some(Instant::now());
        let counts = (self.evicted, self.refused);
        (self.evicted, self.refused) = (0, 0);
        Some(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(phase: Phase, in_phase: u64, no_progress: u64, data_bytes: u64) -> Snapshot {
        Snapshot {
            phase,
            in_phase: Duration::from_secs(in_phase),
            no_progress: Duration::from_secs(no_progress),
            data_bytes,
        }
    }

    #[test]
    fn who_makes_room() {
        use Phase::*;
        // (connections, min rate, expected victim)
        let cases: &[(&[Snapshot], u64, Option<usize>)] = &[
            (&[], 500, None),
            // Busy connections are never cut, however long.
            (&[s(Busy, 900, 900, 0)], 500, None),
            // The longest-idle connection without a transaction goes first,
            // even before a long-stalled transaction.
            (
                &[
                    s(Idle, 1, 1, 0),
                    s(Idle, 5, 5, 0),
                    s(InTransaction, 60, 60, 0),
                ],
                500,
                Some(1),
            ),
            // An idle connection goes even when it just arrived.
            (&[s(Busy, 50, 50, 0), s(Idle, 0, 0, 0)], 500, Some(1)),
            // A transaction waiting briefly for its next command is kept;
            // one that stalled is cut.
            (&[s(InTransaction, 2, 2, 0)], 500, None),
            (
                &[s(InTransaction, 2, 2, 0), s(InTransaction, 11, 11, 0)],
                500,
                Some(1),
            ),
            // DATA at a good rate is kept, a DATA trickle is cut, as is DATA
            // that has sent nothing for a while; with the rate limit off
            // only the silent one.
            (&[s(Data, 30, 0, 1_000_000)], 500, None),
            (
                &[s(Data, 30, 0, 1_000_000), s(Data, 30, 2, 100)],
                500,
                Some(1),
            ),
            (&[s(Data, 30, 2, 100)], 0, None),
            (&[s(Data, 30, 20, 100)], 0, Some(0)),
            // Young DATA is not judged on its rate yet.
            (&[s(Data, 3, 0, 10)], 500, None),
            // Among stalled ones, the longest without progress goes first.
            (
                &[s(Data, 40, 12, 0), s(InTransaction, 30, 30, 0)],
                500,
                Some(1),
            ),
        ];
        for (i, (conns, rate, want)) in cases.iter().enumerate() {
            let got = victim(conns.iter().copied().enumerate(), *rate);
            assert_eq!(got, *want, "case {i}: {conns:?}");
        }
    }

    #[test]
    fn pressure_is_reported_once_a_minute() {
        let slots = Slots::new(1, 0);
        let mut log = PressureLog::default();
        let free = slots.admit();
        assert_eq!(log.note(&free), None, "a free slot is not pressure");
        assert_eq!(
            log.note(&Admission::Full),
            Some((0, 1)),
            "the first at once"
        );
        assert_eq!(log.note(&Admission::Full), None);
        assert_eq!(log.note(&Admission::Full), None);
        log.last = Instant::now().checked_sub(PressureLog::EVERY);
        assert_eq!(log.note(&Admission::Full), Some((0, 3)), "then counted");
    }

    #[tokio::test]
    async fn a_full_house_evicts_the_idle_and_refuses_when_all_work() {
        let slots = Slots::new(2, 500);
        let Admission::Free(a) = slots.admit() else {
            panic!("first slot is free")
        };
        let Admission::Free(b) = slots.admit() else {
            panic!("second slot is free")
        };
        // Both busy: no room.
        assert!(matches!(slots.admit(), Admission::Full));
        a.set(Phase::Idle);
        let Admission::Evicted(c) = slots.admit() else {
            panic!("the idle connection makes room")
        };
        // The victim learns it at once, also if it starts waiting later.
        tokio::time::timeout(Duration::from_secs(1), a.evicted())
            .await
            .expect("victim told");
        // Until the victim goes, it does not count and cannot be picked
        // twice; the others are busy.
        assert!(matches!(slots.admit(), Admission::Full));
        drop(a);
        assert!(matches!(slots.admit(), Admission::Full));
        drop(b);
        let Admission::Free(_d) = slots.admit() else {
            panic!("a slot freed by a departure is free")
        };
        drop(c);
    }
}
