//! The enrollment listener's brakes on an unauthenticated client:
//!
//! - an address whose enrollments were refused
//!   [`EnrollConfig::max_refusals_per_ip`] times within ten minutes is
//!   turned away (`RESOURCE_EXHAUSTED`, not audited, logged) until the
//!   window passes. Addresses are counted by bucket: an IPv4 address
//!   alone (/32), an IPv6 address by its /64 (one host can rotate through
//!   its /64 at will). At most [`MAX_ADDRESSES`] buckets are remembered;
//!   past that the oldest window is dropped (not everyone's);
//! - at most [`MAX_AUDITED`] refusals are audited one by one in a ten
//!   minute window, all addresses together; the rest are counted, and the
//!   count goes into the audit log as one summary entry when the next
//!   window opens (or at the next refusal after it).
//!
//! Tokens are 128 random bits, so this is about noise in the audit log
//! and CPU, not about the odds.
//!
//! [`EnrollConfig::max_refusals_per_ip`]: super::EnrollConfig

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::listener::budget::Budget;

pub const WINDOW: Duration = Duration::from_secs(600);
/// Address buckets remembered at most (the oldest windows dropped first).
const MAX_ADDRESSES: usize = 10_000;
/// Refusals audited one by one per window, all addresses together.
pub const MAX_AUDITED: u32 = 1_000;

pub struct Refusals {
    max: u32,
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    audited: Budget,
}

/// Whether a refusal is audited one by one (`this`), and how many of
/// earlier windows were not (`summary`: write a summary entry first).
pub type AuditNow = crate::listener::budget::Allowance;

/// The bucket an address is counted in: IPv4 (and IPv4-mapped IPv6) as
/// is, IPv6 by its /64.
pub fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
            }
        },
    }
}

impl Refusals {
    pub fn new(max: u32) -> Refusals {
        Refusals {
            max: max.max(1),
            seen: Mutex::new(HashMap::new()),
            audited: Budget::new(WINDOW, MAX_AUDITED),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (Instant, u32)>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `ip` may try now.
    pub fn allowed(&self, ip: IpAddr, now: Instant) -> bool {
        match self.lock().get(&bucket(ip)) {
            Some((start, n)) => now.duration_since(*start) >= WINDOW || *n < self.max,
            None => true,
        }
    }

    /// Counts a refusal of `ip`.
    pub fn refused(&self, ip: IpAddr, now: Instant) {
        let ip = bucket(ip);
        let mut m = self.lock();
        if m.len() >= MAX_ADDRESSES && !m.contains_key(&ip) {
            m.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
            if m.len() >= MAX_ADDRESSES {
                let oldest = m
                    .iter()
                    .min_by_key(|(_, (start, _))| *start)
                    .map(|(k, _)| *k);
                if let Some(k) = oldest {
                    m.remove(&k);
                }
            }
        }
        let e = m.entry(ip).or_insert((now, 0));
        if now.duration_since(e.0) >= WINDOW {
            *e = (now, 0);
        }
        e.1 += 1;
    }

    /// Whether the refusal happening `now` is audited one by one, and the
    /// summary of earlier ones that were not.
    pub fn audit_now(&self, now: Instant) -> AuditNow {
        self.audited.take(now)
    }
}

/// `s` cut to at most `max` bytes (at a character boundary), with "…"
/// when cut: what a client sent, for the audit log and the log.
pub fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
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

    #[test]
    fn ipv6_addresses_count_by_their_64() {
        let r = Refusals::new(2);
        let t0 = Instant::now();
        let a: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().expect("ip");
        let other: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        r.refused(a, t0);
        r.refused(b, t0);
        assert!(!r.allowed("2001:db8:1:2::99".parse().expect("ip"), t0));
        assert!(r.allowed(other, t0), "another /64");
        let m1: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert_eq!(bucket(m1), IpAddr::from([10, 0, 0, 1]));
        assert_ne!(
            bucket(IpAddr::from([10, 0, 0, 1])),
            bucket(IpAddr::from([10, 0, 0, 2])),
            "IPv4 by /32"
        );
    }

    #[test]
    fn a_full_table_drops_the_oldest_not_everyone() {
        let r = Refusals::new(1);
        let t0 = Instant::now();
        let first = IpAddr::from([192, 168, 0, 1]);
        r.refused(first, t0);
        for i in 0..MAX_ADDRESSES as u32 {
            r.refused(
                IpAddr::from((0x0a00_0000u32 + i).to_be_bytes()),
                t0 + Duration::from_secs(1),
            );
        }
        assert!(
            r.allowed(first, t0 + Duration::from_secs(2)),
            "the oldest dropped"
        );
        assert!(
            !r.allowed(IpAddr::from([10, 0, 0, 5]), t0 + Duration::from_secs(2)),
            "the others kept"
        );
    }

    #[test]
    fn audited_refusals_are_capped_per_window_with_a_summary() {
        let r = Refusals::new(1);
        let t0 = Instant::now();
        for _ in 0..MAX_AUDITED {
            assert_eq!(
                r.audit_now(t0),
                AuditNow {
                    this: true,
                    summary: 0
                }
            );
        }
        for _ in 0..5 {
            assert_eq!(
                r.audit_now(t0),
                AuditNow {
                    this: false,
                    summary: 0
                }
            );
        }
        assert_eq!(
            r.audit_now(t0 + WINDOW),
            AuditNow {
                this: true,
                summary: 5
            }
        );
        assert_eq!(
            r.audit_now(t0 + WINDOW),
            AuditNow {
                this: true,
                summary: 0
            }
        );
    }

    #[test]
    fn cut_keeps_characters_whole() {
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("abcd", 3), "abc…");
        assert_eq!(cut("営業", 4), "営…");
    }
}
