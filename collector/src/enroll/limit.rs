//! The enrollment listener's brake on guessing: an address whose
//! enrollments were refused [`EnrollConfig::max_refusals_per_ip`] times
//! within ten minutes is turned away (`RESOURCE_EXHAUSTED`, not audited,
//! logged) until the window passes. Tokens are 128 random bits, so this
//! is about noise in the audit log and CPU, not about the odds.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const WINDOW: Duration = Duration::from_secs(600);
/// Addresses remembered at most (the oldest windows are dropped first).
const MAX_ADDRESSES: usize = 10_000;

pub struct Refusals {
    max: u32,
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Refusals {
    pub fn new(max: u32) -> Refusals {
        Refusals {
            max: max.max(1),
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (Instant, u32)>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `ip` may try now.
    pub fn allowed(&self, ip: IpAddr, now: Instant) -> bool {
        match self.lock().get(&ip) {
            Some((start, n)) => now.duration_since(*start) >= WINDOW || *n < self.max,
            None => true,
        }
    }

    /// Counts a refusal of `ip`.
    pub fn refused(&self, ip: IpAddr, now: Instant) {
        let mut m = self.lock();
        if m.len() >= MAX_ADDRESSES && !m.contains_key(&ip) {
            m.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
            if m.len() >= MAX_ADDRESSES {
                m.clear();
            }
        }
        let e = m.entry(ip).or_insert((now, 0));
        if now.duration_since(e.0) >= WINDOW {
            *e = (now, 0);
        }
        e.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_turned_away_after_max_refusals_until_the_window_passes() {
        let r = Refusals::new(3);
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(r.allowed(a, t0), "attempt {i}");
            r.refused(a, t0);
        }
        assert!(!r.allowed(a, t0 + Duration::from_secs(1)));
        assert!(r.allowed(b, t0), "another address is not affected");
        assert!(r.allowed(a, t0 + WINDOW));
        r.refused(a, t0 + WINDOW);
        assert!(
            r.allowed(a, t0 + WINDOW),
            "a new window starts at one refusal"
        );
    }
}
